/** The built-in tools (DESIGN §6), by name. */
import { serpapi } from './adapters/serpapi.ts'
import type { ToolDefinition } from './types.ts'

export const builtinTools: ReadonlyMap<string, ToolDefinition> = new Map(
  [serpapi].map((tool) => [tool.name, tool]),
)
