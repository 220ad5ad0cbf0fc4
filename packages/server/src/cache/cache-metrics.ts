/**
 * The response cache's metrics (DESIGN §16), on the gateway's registry: lookups by what they
 * found, for tool calls and channel routes apart.
 */
import { Counter, type Registry } from 'prom-client'

export type CacheKind = 'tool' | 'channel'
/** hit: fresh; miss: called the upstream; stale: served after an upstream failure; bypass: no-cache. */
export type CacheResult = 'hit' | 'miss' | 'stale' | 'bypass'

export interface CacheMetrics {
  lookup(kind: CacheKind, result: CacheResult): void
}

export function createCacheMetrics(registry: Registry): CacheMetrics {
  const hits = new Counter({
    name: 'runr_cache_hits_total',
    help: 'Answers served from the response cache while fresh, by kind (tool, channel).',
    labelNames: ['kind'] as const,
    registers: [registry],
  })
  const lookups = new Counter({
    name: 'runr_cache_lookups_total',
    help: 'Response cache lookups by kind (tool, channel) and result (hit, miss, stale, bypass).',
    labelNames: ['kind', 'result'] as const,
    registers: [registry],
  })
  return {
    lookup(kind, result) {
      lookups.labels(kind, result).inc()
      if (result === 'hit') hits.labels(kind).inc()
    },
  }
}
