/**
 * When to try a call again and how long to wait first. Exponential backoff with full jitter
 * (a uniformly random wait up to the exponential cap) spreads the retries of many clients out
 * instead of having them stampede back together; a `Retry-After` from the gateway wins over it.
 */
import { type GatewayError, NetworkError } from './errors.ts'

/** Retry settings of a client. */
export interface RetryOptions {
  /** Retries after the first attempt (default 2; `retry.attempts` in DESIGN §18 counts the same way). */
  retries?: number
  /** The first backoff cap, doubled per retry (default 200 ms). */
  baseDelayMs?: number
  /** The largest backoff cap (default 5 s). */
  maxDelayMs?: number
  /**
   * The longest `Retry-After` honoured (default 30 s). A gateway asking for longer (a quota reset
   * an hour away) gets the error thrown at once rather than a stalled caller.
   */
  maxRetryAfterMs?: number
}

export type ResolvedRetry = Required<RetryOptions>

export function resolveRetry(options: RetryOptions | false | undefined): ResolvedRetry {
  const given = options === false ? { retries: 0 } : (options ?? {})
  const resolved = {
    retries: given.retries ?? 2,
    baseDelayMs: given.baseDelayMs ?? 200,
    maxDelayMs: given.maxDelayMs ?? 5000,
    maxRetryAfterMs: given.maxRetryAfterMs ?? 30_000,
  }
  for (const [name, value] of Object.entries(resolved)) {
    if (!Number.isFinite(value) || value < 0) throw new TypeError(`retry.${name} must be a number >= 0`)
  }
  return resolved
}

/** Full jitter: a wait in `[0, min(maxDelayMs, baseDelayMs × 2^retry))`; `retry` counts from 0. */
export function backoffDelay(
  retry: number,
  options: ResolvedRetry,
  random: () => number = Math.random,
): number {
  const cap = Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** retry)
  return Math.floor(random() * cap)
}

/**
 * The wait before retry number `retry` (from 0) after `error`, or undefined when it must not be
 * retried: network errors, 429 and 503 are retried (503 `tool_unavailable` is configuration and
 * is not), and 409 `idempotency_key_in_use`; everything else is an answer that will not change by
 * asking again.
 */
export function retryDelay(
  error: GatewayError,
  retry: number,
  options: ResolvedRetry,
  random: () => number = Math.random,
): number | undefined {
  if (retry >= options.retries) return undefined
  const transient =
    error instanceof NetworkError ||
    error.status === 429 ||
    (error.status === 503 && error.code !== 'tool_unavailable') ||
    // The first attempt (whose answer was lost) is still running under the same key.
    (error.status === 409 && error.details?.['reason'] === 'idempotency_key_in_use')
  if (!transient) return undefined
  if (error.retryAfter !== undefined) {
    const ms = error.retryAfter * 1000
    return ms > options.maxRetryAfterMs ? undefined : Math.ceil(ms)
  }
  return backoffDelay(retry, options, random)
}
