/**
 * The OpenAI passthrough (DESIGN §6): `/v1/openai/*` answers like the OpenAI REST API, so an
 * unmodified OpenAI client pointed at `<gateway>/v1/openai` with an agent token as its API key
 * works through the gateway. Each endpoint is a policy target of the `openai` tool (`openai:chat`,
 * `openai:embeddings`, `openai:models`) whose CEL `args` is the request body, so a policy can pin
 * the `model`. The real key is injected, streams are relayed as they arrive, and the usage each
 * answer reports counts against the deciding rule's `quota.tokens`.
 *
 * The upstream's answers pass through with their status, OpenAI error bodies included, so the
 * client sees the reason; except 401 and 403, which mean the gateway's own key was refused and
 * whose text may quote it: those become `502 upstream_error`.
 */
import type { IncomingMessage } from 'node:http'
import { GatewayError } from '../errors/gateway-error.ts'
import { noteUsage, type Principal, type RequestContext } from '../http/context.ts'
import type { JsonAnswer, StreamAnswer } from '../http/pipeline.ts'
import { readBody } from '../http/read-body.ts'
import { decisionAttributes, inPhase } from '../observability/tracing.ts'
import type { Authorized } from '../policy/enforcer.ts'
import type { DecisionTarget } from '../policy/policy-set.ts'
import type { RateLimiter } from '../ratelimit/limiter.ts'
import { noResilience } from '../resilience/policy.ts'
import type { ResilientClient } from '../resilience/resilient-client.ts'
import { ClientGone } from './call-abort.ts'
import {
  agentOf,
  type CallFacts,
  checkShape,
  detachAfter,
  parkedAnswer,
  parseJsonObject,
  streamFiltered,
  toolSettings,
  traceHeadersOf,
} from './call-helpers.ts'
import { relayWithUsage, usageOf } from './sse-usage.ts'
import type { AgentRoute } from './tool-routes.ts'
import type { ToolDefinition, ToolSettings, UpstreamAnswer, UpstreamRequest } from './types.ts'

type Rule = Extract<Authorized, { kind: 'proceed' }>['rule']

export interface OpenAIPassthroughDeps {
  /** The `openai` tool: its settings (url, secret, timeout) serve the passthrough too. */
  tool: ToolDefinition
  client: ResilientClient
  /** The `openai` tool's rate limits apply to the passthrough too. */
  limiter?: RateLimiter | undefined
  authorize(
    facts: CallFacts,
    target: DecisionTarget,
    args: unknown,
    bytes: number,
  ): Authorized | Promise<Authorized>
  secretFor(settings: ToolSettings, toolName: string, agentId: string): Promise<string | undefined>
  recordTokens(rule: Rule, agentId: string, tokens: number): Promise<void>
  onError(err: unknown): void
}

interface Endpoint {
  method: 'GET' | 'POST'
  action: string
  /** The upstream path below the tool's url. */
  path: string
  /** The policy `args` of a GET (a POST's are its body). */
  args?: Record<string, unknown>
}

const prefix = '/v1/openai/'
const anyMethod = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']
// Statuses whose OpenAI error body reaches the client; 401/403 are about the gateway's key.
const refusedKey = new Set([401, 403])
// Headers of the upstream's answer an OpenAI client reads (pacing and retries).
const passedHeaders = ['retry-after', 'x-ratelimit-limit-requests', 'x-ratelimit-remaining-requests']

function endpointOf(rest: string): Endpoint | undefined {
  if (rest === 'chat/completions') return { method: 'POST', action: 'chat', path: '/v1/chat/completions' }
  if (rest === 'embeddings') return { method: 'POST', action: 'embeddings', path: '/v1/embeddings' }
  if (rest === 'models') return { method: 'GET', action: 'models', path: '/v1/models', args: {} }
  const model = /^models\/([^/]+)$/.exec(rest)
  if (model !== null) {
    let id: string
    try {
      id = decodeURIComponent(model[1]!)
    } catch {
      return undefined
    }
    return {
      method: 'GET',
      action: 'models',
      path: `/v1/models/${encodeURIComponent(id)}`,
      args: { model: id },
    }
  }
  return undefined
}

function passed(answer: { headers: Record<string, string | string[] | undefined> }): Record<string, string> {
  const out: Record<string, string> = {}
  for (const name of passedHeaders) {
    const value = answer.headers[name]
    if (typeof value === 'string') out[name] = value
  }
  return out
}

/** Read the rest of a streamed body, bounded (an error answer to a streaming request). */
async function readAll(body: AsyncIterable<Uint8Array>, limit: number): Promise<string> {
  const chunks: Uint8Array[] = []
  let size = 0
  for await (const chunk of body) {
    size += chunk.length
    if (size > limit)
      throw new GatewayError('upstream_error', `The upstream answer is larger than ${limit} bytes.`)
    chunks.push(chunk)
  }
  return Buffer.concat(chunks, size).toString('utf8')
}

function jsonOf(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

/** The passthrough's routes: `route(path)` for any path under `prefix`. */
export function createOpenAIPassthrough(deps: OpenAIPassthroughDeps): {
  prefix: string
  route(path: string): AgentRoute
} {
  const toolName = deps.tool.name

  function meter(
    ctx: RequestContext,
    rule: Rule,
    agentId: string,
    usage: { promptTokens: number; completionTokens: number },
  ) {
    noteUsage(ctx, usage)
    return deps.recordTokens(rule, agentId, usage.promptTokens + usage.completionTokens)
  }

  /** A whole answer: refused key → 502, not JSON → 502, else passed on (metered, redacted). */
  async function answerJson(
    ctx: RequestContext,
    answer: Pick<UpstreamAnswer, 'status' | 'headers' | 'json'>,
    outcome: Extract<Authorized, { kind: 'proceed' }>,
    agentId: string,
  ): Promise<JsonAnswer> {
    if (refusedKey.has(answer.status)) {
      throw new GatewayError(
        'upstream_error',
        `The openai upstream refused the gateway's credential (${answer.status}).`,
        {
          details: { upstreamStatus: answer.status },
        },
      )
    }
    if (answer.json === undefined) {
      throw new GatewayError('upstream_error', 'The openai upstream did not answer JSON.', {
        details: { upstreamStatus: answer.status },
      })
    }
    let body: unknown = answer.json
    if (answer.status >= 200 && answer.status <= 299) {
      const usage = usageOf((body as { usage?: unknown } | null)?.usage)
      if (usage !== undefined) await meter(ctx, outcome.rule, agentId, usage)
      if (outcome.filter !== null) body = outcome.filter.apply(body).value
    }
    return { status: answer.status, body, headers: passed(answer) }
  }

  async function handle(
    req: IncomingMessage,
    ctx: RequestContext,
    principal: Principal,
    endpoint: Endpoint,
  ): Promise<JsonAnswer | StreamAnswer> {
    const agent = agentOf(principal)
    ctx.tool = { name: toolName, action: endpoint.action, promptTokens: 0, completionTokens: 0 }
    const limited = deps.limiter?.checkTool(ctx, req, toolName)
    if (limited !== undefined) await limited
    const facts: CallFacts = { req, ctx, principal, agent }
    let body: Record<string, unknown> | undefined
    let bytes = 0
    let raw: Buffer | undefined
    if (endpoint.method === 'POST') {
      raw = await readBody(req, ctx.config.gateway.bodyLimitBytes)
      bytes = raw.length
      body = parseJsonObject(raw, 'The request body')
      checkShape(body)
    }
    const target: DecisionTarget = { kind: 'tool', tool: toolName, action: endpoint.action }
    const args = body ?? endpoint.args ?? {}
    const authorized = inPhase(
      ctx.trace,
      'policy',
      () => deps.authorize(facts, target, args, bytes),
      decisionAttributes,
    )
    const outcome = authorized instanceof Promise ? await authorized : authorized
    if (outcome.kind === 'parked') return parkedAnswer(outcome)

    const settings = toolSettings(ctx.config, deps.tool)
    const secret = await deps.secretFor(settings, toolName, agent.id)
    const streaming = endpoint.action === 'chat' && body?.['stream'] === true
    if (streaming && outcome.filter !== null) throw streamFiltered(outcome)
    const asked = body?.['stream_options']
    const clientAskedUsage =
      typeof asked === 'object' &&
      asked !== null &&
      (asked as { include_usage?: unknown }).include_usage === true
    const request: UpstreamRequest = {
      method: endpoint.method,
      path: endpoint.path,
      headers: {
        authorization: `Bearer ${secret ?? ''}`,
        ...(raw === undefined ? {} : { 'content-type': 'application/json' }),
        ...(streaming ? { accept: 'text/event-stream' } : {}),
      },
    }
    if (streaming) {
      // The usage chunk is how a stream is metered: ask for it whatever the client asked.
      request.body = JSON.stringify({
        ...body,
        stream_options: {
          ...(typeof asked === 'object' && asked !== null ? asked : {}),
          include_usage: true,
        },
      })
    } else if (raw !== undefined) {
      request.body = raw.toString('utf8')
    }

    const closing = new ClientGone(req.socket)
    const calls = deps.client.forCall({
      tool: toolName,
      // Embeddings and model reads are safe to repeat; a chat completion bills again.
      idempotent: deps.tool.actions[endpoint.action]?.idempotent ?? endpoint.method === 'GET',
      policy: ctx.config.toolResilience.get(toolName) ?? noResilience,
    })
    // Before the trace headers: its id is the parent they name.
    const upstreamSpan = ctx.trace?.upstream(`tool ${toolName}.${endpoint.action}`, {
      'runr.tool': toolName,
      'runr.action': endpoint.action,
    })
    const trace = traceHeadersOf(ctx)
    const started = performance.now()
    let relaying = false
    try {
      if (!streaming) {
        const answer = await calls.call(settings, request, closing, trace)
        ctx.upstreamMs = performance.now() - started
        upstreamSpan?.end({ 'http.response.status_code': answer.status })
        return await answerJson(ctx, answer, outcome, agent.id)
      }
      const opened = await calls.open(settings, request, closing, trace)
      ctx.upstreamMs = performance.now() - started
      upstreamSpan?.end({ 'http.response.status_code': opened.status })
      const type = String(opened.headers['content-type'] ?? '').toLowerCase()
      if (opened.status < 200 || opened.status > 299 || !type.startsWith('text/event-stream')) {
        if (refusedKey.has(opened.status)) await opened.body[Symbol.asyncIterator]().return?.()
        const json = refusedKey.has(opened.status)
          ? undefined
          : jsonOf(await readAll(opened.body, 1024 * 1024))
        return await answerJson(
          ctx,
          { status: opened.status, headers: opened.headers, json },
          outcome,
          agent.id,
        )
      }
      relaying = true
      const stream = relayWithUsage(opened.body, {
        dropUsageChunk: !clientAskedUsage,
        onEnd: (usage) => {
          if (usage !== undefined)
            meter(ctx, outcome.rule, agent.id, usage).catch((err: unknown) => deps.onError(err))
        },
      })
      return {
        status: opened.status,
        headers: { 'content-type': 'text/event-stream; charset=utf-8', ...passed(opened) },
        stream: detachAfter(stream, closing.dispose),
      }
    } catch (err) {
      upstreamSpan?.end({ 'error.type': (err as { code?: string }).code ?? 'internal' }, true)
      throw err
    } finally {
      if (!relaying) closing.dispose()
    }
  }

  return {
    prefix,
    route(path) {
      const endpoint = endpointOf(path.slice(prefix.length))
      if (endpoint === undefined) {
        return {
          methods: anyMethod,
          label: '/v1/openai/*',
          handle: async () => {
            throw new GatewayError(
              'not_found',
              'The OpenAI passthrough serves chat/completions, embeddings and models.',
            )
          },
        }
      }
      return {
        methods: endpoint.method === 'GET' ? ['GET', 'HEAD'] : ['POST'],
        label: `/v1/openai/${endpoint.path.startsWith('/v1/models/') ? 'models/{id}' : endpoint.path.slice(4)}`,
        handle: (req, ctx, principal) => handle(req, ctx, principal, endpoint),
      }
    },
  }
}
