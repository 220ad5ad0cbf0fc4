/**
 * Stage 6 for tool calls: the response cache in front of an idempotent action's upstream call.
 * What is kept is the action's data before any response filter: filters are per agent (a policy
 * decision), so they run on every answer, cached or not, after the cache.
 */
import type { IncomingMessage } from 'node:http'
import { GatewayError } from '../errors/gateway-error.ts'
import type { RequestContext } from '../http/context.ts'
import type { JsonAnswer } from '../http/pipeline.ts'
import type { ResponseFilter } from '../policy/filters/response-filter.ts'
import { type CachePolicy, toolCachePolicy } from './compile-cache.ts'
import { type CacheProbe, cacheDirectives, type ResponseCache, type StoredAnswer } from './response-cache.ts'

/** A tool call the cache takes part in: what the lookup found, and whether to keep the answer. */
export interface ToolCacheCall {
  readonly probe: CacheProbe
  readonly policy: CachePolicy
  readonly noStore: boolean
}

/** Upstream failures a stale entry may answer for (stale-if-error; an open breaker included). */
const upstreamFailures = new Set(['upstream_error', 'upstream_timeout', 'circuit_open', 'bulkhead_full'])

export function isUpstreamFailure(err: unknown): boolean {
  return err instanceof GatewayError && upstreamFailures.has(err.code)
}

const nothing: Omit<CacheProbe, 'key'> = Object.freeze({ fresh: undefined, stale: undefined })

/**
 * Look the call up when the config caches `tool.action` and the action is idempotent and does not
 * stream; undefined when the cache takes no part. `Cache-Control: no-cache` skips the lookup.
 */
export function probeToolCache(
  cache: ResponseCache,
  req: IncomingMessage,
  ctx: RequestContext,
  call: {
    agentId: string
    tool: string
    action: string
    idempotent: boolean
    streams: boolean
    params: unknown
  },
): ToolCacheCall | undefined | Promise<ToolCacheCall | undefined> {
  // Synchronous when the call is not cached: most tool calls pay no promise for the cache.
  if (!call.idempotent || call.streams) return undefined
  const policy = toolCachePolicy(ctx.config.cache, call.tool, call.action)
  if (policy === undefined) return undefined
  return lookupToolCache(cache, req, call, policy)
}

async function lookupToolCache(
  cache: ResponseCache,
  req: IncomingMessage,
  call: { agentId: string; tool: string; action: string; params: unknown },
  policy: NonNullable<ReturnType<typeof toolCachePolicy>>,
): Promise<ToolCacheCall | undefined> {
  const directives = cacheDirectives(req)
  const key = cache.keyOf(
    `tool\n${call.tool}\n${call.action}`,
    policy.shared ? '*' : call.agentId,
    call.params,
  )
  if (directives.bypass) {
    cache.metrics.lookup('tool', 'bypass')
    return { probe: { key, ...nothing }, policy, noStore: directives.noStore }
  }
  const probe = await cache.lookup(key)
  cache.metrics.lookup('tool', probe.fresh !== undefined ? 'hit' : 'miss')
  return { probe, policy, noStore: false }
}

/** Keep a 2xx answer's data (before filters) for the next call. */
export function storeToolAnswer(
  cache: ResponseCache,
  call: ToolCacheCall,
  data: unknown,
  upstreamStatus: number,
): void {
  if (call.noStore || upstreamStatus < 200 || upstreamStatus > 299) return
  const body = Buffer.from(JSON.stringify(data ?? null), 'utf8')
  cache.store(
    call.probe.key,
    { status: upstreamStatus, headers: {}, body, storedAt: Date.now() },
    call.policy,
  )
}

/** The tool answer of a cached entry, filtered for this agent: `X-Cache` HIT or STALE. */
export function cachedToolAnswer(
  stored: StoredAnswer,
  result: 'HIT' | 'STALE',
  filter: ResponseFilter | null,
  call: { tool: string; action: string; correlationId: string; startedAt: number },
): JsonAnswer {
  const data = JSON.parse(stored.body.toString('utf8')) as unknown
  return {
    status: 200,
    headers: {
      'x-cache': result,
      age: String(Math.max(0, Math.floor((Date.now() - stored.storedAt) / 1000))),
    },
    body: {
      data: filter === null ? data : filter.apply(data).value,
      metadata: {
        tool: call.tool,
        action: call.action,
        correlationId: call.correlationId,
        cached: true,
        attempts: 0,
        upstreamStatus: stored.status,
        durationMs: Math.round((performance.now() - call.startedAt) * 1000) / 1000,
      },
    },
  }
}
