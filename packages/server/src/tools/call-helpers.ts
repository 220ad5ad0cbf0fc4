/**
 * What the tool routes and the OpenAI passthrough share about serving one call: the caller, the
 * tool's settings, the parameters' shape, the client going away, trace headers, parked answers.
 */
import type { IncomingMessage } from 'node:http'
import type { CompiledConfig } from '../config/compile.ts'
import { GatewayError } from '../errors/gateway-error.ts'
import type { Principal, RequestContext } from '../http/context.ts'
import type { JsonAnswer } from '../http/pipeline.ts'
import { type Authorized, parkedReply } from '../policy/enforcer.ts'
import { checkArgsShape } from '../policy/guards/args-shape.ts'
import type { AgentFacts } from '../policy/policy-set.ts'
import type { ToolDefinition, ToolSettings } from './types.ts'

/** Everything the routes share about one call, once the agent is known. */
export interface CallFacts {
  req: IncomingMessage
  ctx: RequestContext
  principal: Principal
  agent: AgentFacts
}

const maxArgsDepth = 32
const maxArgsNodes = 10_000

/** Settings of `tool` from the running config, defaults applied. */
export function toolSettings(config: CompiledConfig, tool: ToolDefinition): ToolSettings {
  const raw = (config.raw.tools as Record<string, Record<string, unknown> | undefined> | undefined)?.[
    tool.name
  ]
  const url = config.toolUrls.get(tool.name) ?? tool.defaultUrl
  const secret = typeof raw?.['secret'] === 'string' ? raw['secret'] : tool.defaultSecret
  const timeoutMs = raw?.['timeoutMs']
  return {
    url: url.replace(/\/+$/, ''),
    secret,
    timeoutMs: typeof timeoutMs === 'number' ? timeoutMs : 30_000,
    options: raw ?? {},
  }
}

/** The agent behind a principal; tools are for agents only. */
export function agentOf(principal: Principal): AgentFacts {
  if (principal.kind !== 'agent' || principal.agent === undefined)
    throw new GatewayError('forbidden', 'Tools are called by agents with an agent token.')
  return principal.agent
}

/** Parse a JSON object body; `what` names it in errors. */
export function parseJsonObject(body: Buffer, what: string): Record<string, unknown> {
  if (body.length === 0) return {}
  let parsed: unknown
  try {
    parsed = JSON.parse(body.toString('utf8'))
  } catch {
    throw new GatewayError('bad_request', `${what} is not valid JSON.`)
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new GatewayError('bad_request', `${what} must be a JSON object.`)
  return parsed as Record<string, unknown>
}

/** Refuse arguments too deep or too big for policy conditions to walk. */
export function checkShape(args: unknown): void {
  const shape = checkArgsShape(args, { maxDepth: maxArgsDepth, maxNodes: maxArgsNodes })
  if (!shape.ok) {
    throw new GatewayError(
      'bad_request',
      shape.reason === 'too_deep'
        ? `The parameters nest deeper than ${maxArgsDepth} levels.`
        : `The parameters hold more than ${maxArgsNodes} values.`,
      { details: { reason: shape.reason } },
    )
  }
}

/** The 202 answer of a call parked for approval. */
export function parkedAnswer(outcome: Extract<Authorized, { kind: 'parked' }>): JsonAnswer {
  return { status: 202, ...parkedReply(outcome.approval) }
}

/** Pass a stream through, and run `done` once it ends however it ends. */
export async function* detachAfter(
  stream: AsyncIterable<Uint8Array>,
  done: () => void,
): AsyncIterable<Uint8Array> {
  try {
    yield* stream
  } finally {
    done()
  }
}

/** The W3C trace context and correlation id sent upstream. */
export function traceHeadersOf(ctx: RequestContext): Record<string, string> {
  return {
    traceparent: `00-${ctx.traceId}-${ctx.spanId}-${ctx.traceFlags}`,
    'x-correlation-id': ctx.correlationId,
  }
}

/** A stream refused because a response filter applies (it could not redact a stream). */
export function streamFiltered(outcome: Extract<Authorized, { kind: 'proceed' }>): GatewayError {
  return new GatewayError(
    'policy_denied',
    'A response filter applies to this call: call it without streaming.',
    {
      details: { reason: 'stream_filtered', rule: outcome.rule?.id ?? null },
    },
  )
}
