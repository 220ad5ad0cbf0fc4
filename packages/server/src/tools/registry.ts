/** The built-in tools (DESIGN §6), by name. */
import { gmail } from './adapters/gmail.ts'
import { createHttpFetch } from './adapters/http-fetch.ts'
import { openai } from './adapters/openai.ts'
import { serpapi } from './adapters/serpapi.ts'
import type { ToolDefinition } from './types.ts'

export const builtinTools: ReadonlyMap<string, ToolDefinition> = new Map(
  [createHttpFetch(), serpapi, openai, gmail].map((tool) => [tool.name, tool]),
)
