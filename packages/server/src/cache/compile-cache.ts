/**
 * Compiles the response cache's settings (DESIGN §10): per tool and action (`tools.NAME.cacheTtl`,
 * `tools.NAME.cache`) and per channel path rule (`rules[].cache`), once per config version.
 */
import { durationMs } from '../config/duration.ts'
import type { ConfigProblem } from '../config/load.ts'
import type { RawConfig, RawDuration, RawRouteCache } from '../config/schema.ts'

/** How one route or tool action is cached. */
export interface CachePolicy {
  readonly ttlMs: number
  /** After the ttl, how long an entry may still answer when the upstream fails. */
  readonly staleMs: number
  /** One entry for every caller instead of one per principal. */
  readonly shared: boolean
}

export interface CompiledCache {
  /** Largest answer cached, bytes. */
  readonly maxEntryBytes: number
  /** Per tool name, per action name (undefined key: the tool's default), the cache policy. */
  readonly tools: ReadonlyMap<string, ToolCachePolicies>
}

export interface ToolCachePolicies {
  /** Actions not named in `cache.actions`: the tool's `cacheTtl`, or none. */
  readonly fallback: CachePolicy | undefined
  /** Actions named in `cache.actions` (a ttl of 0 turns one off: undefined). */
  readonly actions: ReadonlyMap<string, CachePolicy | undefined>
}

interface RawToolCache {
  cacheTtl?: RawDuration
  cache?: { actions?: Record<string, RawDuration>; shared?: boolean; staleIfError?: RawDuration }
}

/** The cache policy of `tool.action`, or undefined when it is not cached. */
export function toolCachePolicy(cache: CompiledCache, tool: string, action: string): CachePolicy | undefined {
  const policies = cache.tools.get(tool)
  if (policies === undefined) return undefined
  const own = policies.actions.get(action)
  return own !== undefined || policies.actions.has(action) ? own : policies.fallback
}

function policy(ttlMs: number, staleMs: number, shared: boolean): CachePolicy | undefined {
  return ttlMs > 0 ? Object.freeze({ ttlMs, staleMs, shared }) : undefined
}

/** A path rule's `cache`, or null when the rule does not cache. */
export function compileRouteCache(raw: RawRouteCache | undefined, at: string, problems: ConfigProblem[]) {
  if (raw === undefined) return null
  const ttlMs = durationMs(raw.ttl)
  if (ttlMs < 1) {
    problems.push({ path: `${at}.cache.ttl`, message: 'must be at least 1ms' })
    return null
  }
  return policy(
    ttlMs,
    raw.staleIfError === undefined ? 0 : durationMs(raw.staleIfError),
    raw.shared ?? false,
  )!
}

/** Compile the tools' cache settings and the gateway-wide bounds. */
export function compileCache(raw: RawConfig): CompiledCache {
  const tools = new Map<string, ToolCachePolicies>()
  for (const [name, block] of Object.entries(raw.tools ?? {})) {
    if (typeof block !== 'object' || block === null) continue
    const settings = block as RawToolCache
    const shared = settings.cache?.shared ?? false
    const staleMs = settings.cache?.staleIfError === undefined ? 0 : durationMs(settings.cache.staleIfError)
    const actions = new Map<string, CachePolicy | undefined>()
    for (const [action, ttl] of Object.entries(settings.cache?.actions ?? {}))
      actions.set(action, policy(durationMs(ttl), staleMs, shared))
    const fallback =
      settings.cacheTtl === undefined ? undefined : policy(durationMs(settings.cacheTtl), staleMs, shared)
    if (fallback !== undefined || actions.size > 0) tools.set(name, Object.freeze({ fallback, actions }))
  }
  return Object.freeze({ maxEntryBytes: raw.cache?.maxEntryBytes ?? 1024 * 1024, tools })
}
