/**
 * SharedState (DESIGN §14): short-lived state that every gateway instance must agree on, with a
 * memory implementation (one process) and a Redis one (a cluster), behind one contract suite
 * (state.contract.test.ts): replay claims, counters and quotas, GCRA rate limits, the response
 * cache's entries, and pub/sub.
 */

export type Unsubscribe = () => void

/** The answer to a quota check: whether it was admitted, and the count after it. */
export interface QuotaResult {
  allowed: boolean
  used: number
}

export interface QuotaOptions {
  /** Most the counter may reach. A non-negative integer. */
  limit: number
  /** What this call adds when admitted (default 1). A non-negative integer. */
  cost?: number
  /**
   * How long a counter created by this call lives. Later calls do not extend it: the caller puts
   * the window in the key (e.g. `agent:rule:<windowStart>`) and passes the time left in it.
   */
  ttlMs: number
}

/**
 * A GCRA rate (RFC-less but standard: the generic cell rate algorithm). One request is admitted
 * every `emissionMs` on average, and up to `windowMs / emissionMs` at once (the burst).
 */
export interface RateSpec {
  /** Milliseconds between requests at the steady rate: period / limit. */
  readonly emissionMs: number
  /** The burst tolerance as time: burst × emissionMs. At least emissionMs. */
  readonly windowMs: number
}

/** The answer to one rate-limit check. Times are milliseconds from now. */
export interface RateDecision {
  allowed: boolean
  /** Requests that would still be admitted right now after this one. */
  remaining: number
  /** Until the limit is back to its full burst (no request counted any more). */
  resetMs: number
  /** Refused: until one more request would be admitted. 0 when admitted. */
  retryAfterMs: number
}

export interface SharedState {
  readonly kind: 'memory' | 'redis'
  /**
   * Remember `key` for `ttlMs`; true the first time, false while it is remembered (replay
   * detection for assertion and DPoP `jti`s). Atomic across instances.
   */
  claimOnce(key: string, ttlMs: number): Promise<boolean>
  /**
   * Counts one more event under `key` and returns the count so far in its window: the window opens
   * at the key's first increment and lasts `windowMs`, then counting starts again from 1. Atomic
   * across instances (the loop guard: the same call N times per period).
   */
  increment(key: string, windowMs: number): Promise<number>
  /**
   * Adds `cost` to the quota counter `key` only when it stays within `limit`, atomically across
   * instances; a refusal adds nothing. Quota counters are apart from increment's.
   */
  consumeQuota(key: string, options: QuotaOptions): Promise<QuotaResult>
  /** Adds `amount` whatever the limit (usage known after the call, e.g. LLM tokens); returns the count. */
  addQuota(key: string, amount: number, ttlMs: number): Promise<number>
  /** The quota counter's count (0 when absent or expired). */
  getQuota(key: string): Promise<number>
  /**
   * One GCRA check of `subject` under the limit `bucket`: admits (and counts) the request when
   * the rate allows it, atomically across instances. The memory state answers synchronously, so
   * the request path pays no promise; Redis answers with one script call.
   */
  rateLimit(bucket: string, subject: string, rate: RateSpec): RateDecision | Promise<RateDecision>
  /** The cached bytes under `key`, or undefined when absent or expired. */
  cacheGet(key: string): Promise<Buffer | undefined>
  /**
   * Cache `value` under `key` for `ttlMs`. The memory state evicts least recently used entries
   * past its bounds (entries and bytes); Redis relies on its own maxmemory policy.
   */
  cacheSet(key: string, value: Buffer, ttlMs: number): Promise<void>
  /** Deliver `message` to every subscriber of `channel` on every instance, this one included. */
  publish(channel: string, message: string): Promise<void>
  /** Receive messages published on `channel` from now on. */
  subscribe(channel: string, onMessage: (message: string) => void): Unsubscribe
  /** True when the backing service answers (for /ready). */
  ping(): Promise<boolean>
  close(): Promise<void>
}
