import { createMemoryState } from './memory-state.ts'
import { createRedisState } from './redis-state.ts'
import type { StateErrorReporter } from './state-error.ts'
import type { SharedState } from './types.ts'

/**
 * The SharedState the config asks for: Redis when `redis` is set (a cluster), else memory (one
 * process). Rejects when Redis cannot be reached, so a gateway never starts half-shared.
 */
export function openSharedState(
  redis: { url: string; prefix?: string } | undefined,
  options: { onError?: StateErrorReporter } = {},
): Promise<SharedState> {
  if (redis === undefined) return Promise.resolve(createMemoryState(options))
  return createRedisState({ ...redis, ...options })
}
