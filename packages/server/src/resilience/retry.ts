/**
 * Retry timing and the retry budget (DESIGN §10). Backoff is exponential with full jitter (a
 * random wait in [0, min(cap, base·2ⁿ))), so clients that failed together do not return together.
 * An upstream's `Retry-After` (RFC 9110 §10.2.3) replaces the backoff when it is no longer than
 * the configured cap; a longer one ends the retries.
 */
import type { RetryPolicy } from './policy.ts'

/** Retries the budget holds in reserve, so a quiet upstream can still be retried. */
const reserve = 10

/**
 * A token bucket that keeps retries to a fraction of the calls: every first try adds `ratio` of a
 * token (up to the reserve), every retry takes one. Over any stretch of time retries stay below
 * `ratio` × calls + the reserve, so an upstream that fails every call sees at most `1 + ratio`
 * times its normal load, not `1 + attempts` times.
 */
export class RetryBudget {
  private tokens = reserve

  constructor(private ratio: number) {}

  /** A first try was made. */
  deposit(): void {
    this.tokens = Math.min(reserve, this.tokens + this.ratio)
  }

  /** Take a token for one retry; false when the budget is spent. */
  withdraw(): boolean {
    if (this.tokens < 1) return false
    this.tokens -= 1
    return true
  }

  /** Follow a reloaded policy's ratio without forgetting the balance. */
  setRatio(ratio: number): void {
    this.ratio = ratio
  }
}

/** The wait before retry number `retry` (1-based) with full jitter. */
export function backoffMs(policy: RetryPolicy, retry: number, random: () => number): number {
  const ceiling = Math.min(policy.maxBackoffMs, policy.baseMs * 2 ** (retry - 1))
  return Math.floor(random() * ceiling)
}

/**
 * A `Retry-After` value in milliseconds: delay-seconds or an HTTP date (RFC 9110 §10.2.3);
 * undefined when absent or unreadable.
 */
export function retryAfterMs(value: string | string[] | undefined, now: number): number | undefined {
  const text = Array.isArray(value) ? value[0] : value
  if (text === undefined || text === '') return undefined
  if (/^\d+$/.test(text)) return Number(text) * 1000
  const at = Date.parse(text)
  return Number.isNaN(at) ? undefined : Math.max(0, at - now)
}

/**
 * How long to wait before the next try, or undefined when the answer's `Retry-After` asks for
 * longer than the policy allows (the caller then returns what it has).
 */
export function nextDelayMs(
  policy: RetryPolicy,
  retry: number,
  retryAfter: string | string[] | undefined,
  random: () => number,
  now: number,
): number | undefined {
  const asked = retryAfterMs(retryAfter, now)
  if (asked === undefined) return backoffMs(policy, retry, random)
  return asked <= policy.maxRetryAfterMs ? asked : undefined
}

/** Something that can tell a waiting call its caller is gone (tools' CallAbort has this shape). */
export interface AbortSource {
  readonly aborted: boolean
  /** Run `fn` once on abort (at once when already aborted); returns an unsubscribe. */
  onAbort(fn: () => void): () => void
}

/** Resolve after `ms`, or reject with `gone()` as soon as `abort` fires. */
export function sleep(ms: number, abort: AbortSource | undefined, gone: () => Error): Promise<void> {
  if (abort?.aborted === true) return Promise.reject(gone())
  if (ms <= 0) return Promise.resolve()
  return new Promise((done, fail) => {
    let unsubscribe = (): void => {}
    const timer = setTimeout(() => {
      unsubscribe()
      done()
    }, ms)
    unsubscribe =
      abort?.onAbort(() => {
        clearTimeout(timer)
        fail(gone())
      }) ?? unsubscribe
  })
}
