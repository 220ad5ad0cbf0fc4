import { createMemoryState } from './memory-state.ts'
import { createRedisState } from './redis-state.ts'
import type { StateErrorReporter } from './state-error.ts'
import type { SharedState } from './types.ts'

/**
 * The SharedState the config asks for: Redis when `redis` is set (a cluster), else memory (one
 * process). Rejects when Redis cannot be reached, unless `waitForConnection` is false: then it
 * keeps connecting in the background and refuses (503) what needs Redis until it answers.
 */
export function openSharedState(
  redis: { url: string; prefix?: string } | undefined,
  options: { onError?: StateErrorReporter; waitForConnection?: boolean } = {},
): Promise<SharedState> {
  if (redis === undefined) return Promise.resolve(createMemoryState({ onError: options.onError }))
  return createRedisState({ ...redis, ...options })
}
