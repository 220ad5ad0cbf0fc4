import { createMemoryState } from './memory-state.ts'
import type { StateErrorReporter } from './state-error.ts'
import type { SharedState } from './types.ts'

/**
 * The SharedState the config asks for: Redis when `redis` is set (a cluster), else memory (one
 * process). Rejects when Redis cannot be reached, unless `waitForConnection` is false: then it
 * keeps connecting in the background and refuses (503) what needs Redis until it answers.
 */
export async function openSharedState(
  redis: { url: string; prefix?: string } | undefined,
  options: {
    onError?: StateErrorReporter
    waitForConnection?: boolean
    /** The memory response cache's bounds (config `cache`); Redis is bounded by its maxmemory. */
    cache?: { maxEntries?: number; maxBytes?: number }
  } = {},
): Promise<SharedState> {
  if (redis === undefined) {
    return createMemoryState({
      onError: options.onError,
      maxCacheEntries: options.cache?.maxEntries,
      maxCacheBytes: options.cache?.maxBytes,
    })
  }
  // Loaded only for a cluster: ioredis costs ~2 MB of heap, and every full GC walks it.
  const { createRedisState } = await import('./redis-state.ts')
  return createRedisState({
    ...redis,
    onError: options.onError,
    waitForConnection: options.waitForConnection,
  })
}
