/**
 * The typed request context that every pipeline stage reads and writes, and the first stage
 * that fills it: request id, W3C trace context and correlation id (DESIGN §4 stage 1).
 */
import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { CompiledChannel, CompiledConfig, CompiledRule } from '../config/compile.ts'
import type { RequestTrace } from '../observability/tracing.ts'
import type { AgentFacts } from '../policy/policy-set.ts'
import type { LimitVerdict } from '../ratelimit/limiter.ts'

/** Who made the request, as an authenticator proves it. */
export interface Principal {
  kind: 'agent' | 'user' | 'client-certificate'
  id: string
  roles: readonly string[]
  /** The verified token claims (agents) that `{{claim}}` header templates read. */
  claims?: Readonly<Record<string, unknown>>
  /** The agent record (agents): what policies select on. */
  agent?: AgentFacts
}

/** What the gateway knows about a request while it serves it. */
export interface RequestContext {
  /** The config version the request started on; it finishes on it even across a reload. */
  readonly config: CompiledConfig
  readonly startedAt: number
  readonly method: string
  readonly requestId: string
  /** True when the client supplied the request id we kept. */
  readonly requestIdFromClient: boolean
  readonly correlationId: string
  /**
   * The trace id and our span id; `traceparent` sent upstream names our span as the parent. With
   * tracing on, the span id becomes the upstream call's span once it starts, and the flags say
   * whether the trace is sampled.
   */
  readonly traceId: string
  spanId: string
  traceFlags: string
  /** The caller's span from a valid incoming `traceparent`; the request span's parent. */
  readonly parentSpanId: string | undefined
  /** The request's spans when tracing is on and the trace is sampled. */
  trace: RequestTrace | undefined
  readonly clientIp: string
  /** The normalised path (no query), set by the route stage. */
  path: string
  /** The raw query string including `?`, or ''. */
  query: string
  /** The route label for logs and metrics: a channel name or a built-in route template. */
  route: string
  channel: CompiledChannel | undefined
  rule: CompiledRule | undefined
  /** The channel-relative path ('' when the request named the prefix itself). */
  remainder: string
  /** Who is calling; undefined until an authenticator runs (or on public routes). */
  principal: Principal | undefined
  status: number
  upstreamMs: number | undefined
  errorCode: string | undefined
  /** The policy decision and its deciding rule, for the request log (agents only). */
  decision: string | undefined
  policyRule: string | undefined
  /** The tool call a tool route or the passthrough is serving, for its metrics (LLM usage too). */
  tool: ToolCallFacts | undefined
  /** The tightest rate limit the request passed, for the `RateLimit-*` headers (stage 4). */
  rateLimit: LimitVerdict | undefined
}

/** The tool and action of a tool call (names from the registry), and the LLM tokens it used. */
export interface ToolCallFacts {
  readonly name: string
  readonly action: string
  promptTokens: number
  completionTokens: number
}

/** Count LLM usage on the call's facts, for `runr_llm_tokens_total`. */
export function noteUsage(
  ctx: RequestContext,
  usage: { promptTokens: number; completionTokens: number },
): void {
  if (ctx.tool === undefined) return
  ctx.tool.promptTokens += usage.promptTokens
  ctx.tool.completionTokens += usage.completionTokens
}

/** Client-supplied ids are kept only when short and made of safe characters (DESIGN §18). */
const safeId = /^[A-Za-z0-9._~:@/+=-]{1,128}$/
const traceparentRe = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/

function headerValue(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name]
  return typeof value === 'string' ? value : undefined
}

/** 16 random hex digits for a span id: the UUID's first 8 and last 8 digits are all random. */
function newSpanId(): string {
  const uuid = randomUUID()
  return uuid.slice(0, 8) + uuid.slice(28)
}

/** Build the context for a new request on `config`. */
export function createContext(
  req: IncomingMessage,
  config: CompiledConfig,
  startedAt: number,
): RequestContext {
  const clientRequestId = headerValue(req, config.gateway.requestId.header)
  const requestIdFromClient = clientRequestId !== undefined && safeId.test(clientRequestId)
  const clientCorrelation = headerValue(req, 'x-correlation-id')

  // An invalid traceparent is replaced, never forwarded (W3C Trace Context §3.2.2.7); an
  // all-zero trace or parent id is invalid too.
  let traceId: string | undefined
  let parentSpanId: string | undefined
  let traceFlags = '01'
  const traceparent = headerValue(req, 'traceparent')
  if (traceparent !== undefined) {
    const m = traceparentRe.exec(traceparent)
    if (m !== null && !/^0+$/.test(m[1]!) && !/^0+$/.test(m[2]!)) {
      traceId = m[1]!
      parentSpanId = m[2]!
      traceFlags = m[3]!
    }
  }

  const requestId = requestIdFromClient ? clientRequestId : randomUUID()
  // A generated request id is random enough to name a new trace too (one UUID, not two).
  traceId ??= (requestIdFromClient ? randomUUID() : requestId).replaceAll('-', '')
  return {
    config,
    startedAt,
    method: req.method ?? 'GET',
    requestId,
    requestIdFromClient,
    correlationId:
      clientCorrelation !== undefined && safeId.test(clientCorrelation) ? clientCorrelation : requestId,
    traceId,
    spanId: newSpanId(),
    traceFlags,
    parentSpanId,
    trace: undefined,
    clientIp: req.socket.remoteAddress ?? '',
    path: '/',
    query: '',
    route: 'unmatched',
    channel: undefined,
    rule: undefined,
    remainder: '',
    principal: undefined,
    status: 0,
    upstreamMs: undefined,
    errorCode: undefined,
    decision: undefined,
    policyRule: undefined,
    rateLimit: undefined,
    tool: undefined,
  }
}

/** The request id header to echo on a response of `status`, or undefined (gateway.requestId.on). */
export function requestIdHeaderFor(ctx: RequestContext, status: number): string | undefined {
  const { header, on } = ctx.config.gateway.requestId
  if (on === 'always' || (on === 'error' && status >= 400)) return header
  return undefined
}

/** The value of a template placeholder for this request (header templates, DESIGN §8). */
export function contextValue(ctx: RequestContext, name: string): string | undefined {
  switch (name) {
    case 'requestId':
      return ctx.requestId
    case 'correlationId':
      return ctx.correlationId
    case 'channel':
      return ctx.channel?.name
    case 'ip':
      return ctx.clientIp
    case 'method':
      return ctx.method
    case 'path':
      return ctx.path
    case 'sub':
      return ctx.principal?.id
    default:
      return claimValue(ctx.principal?.claims, name)
  }
}

/** A claim by dotted path (`act.sub`); strings and numbers render, anything else leaves the header out. */
function claimValue(claims: Readonly<Record<string, unknown>> | undefined, name: string): string | undefined {
  let value: unknown = claims
  for (const part of name.split('.')) {
    if (value === null || typeof value !== 'object' || !Object.hasOwn(value, part)) return undefined
    value = (value as Record<string, unknown>)[part]
  }
  if (typeof value === 'string') return value
  if (typeof value === 'number' && Number.isFinite(value)) return String(value)
  return undefined
}
