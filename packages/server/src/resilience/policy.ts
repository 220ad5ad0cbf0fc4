/**
 * The compiled resilience settings of one system or tool (DESIGN §10): what the breaker, the
 * retry policy, the bulkhead and the timeouts of its calls are. Built once per config version by
 * `compileResilience`; the request path only reads them.
 */
import { durationMs } from '../config/duration.ts'
import type { RawDuration } from '../config/schema.ts'

export interface RetryPolicy {
  /** Retries after the first try (DESIGN §18). */
  readonly attempts: number
  /** Upstream statuses worth another try. */
  readonly on: ReadonlySet<number>
  /** Base of the exponential backoff: try n waits a random time in [0, min(maxBackoffMs, baseMs·2ⁿ)). */
  readonly baseMs: number
  readonly maxBackoffMs: number
  /** A `Retry-After` longer than this is not waited for: the answer goes back as it is. */
  readonly maxRetryAfterMs: number
  /** Retries may add at most this fraction of the calls (the retry budget). */
  readonly budget: number
}

export interface BreakerPolicy {
  /** `consecutive`: open after `failures` failures in a row; `rate`: open when the failure rate reaches `rate`. */
  readonly mode: 'consecutive' | 'rate'
  readonly failures: number
  readonly rate: number
  /** The rolling window the rate is measured over. */
  readonly windowMs: number
  /** Fewer calls than this in the window never open the breaker (rate mode). */
  readonly minCalls: number
  readonly openMs: number
  /** Trial calls let through while half-open; that many successes close the breaker. */
  readonly halfOpenProbes: number
}

export interface BulkheadPolicy {
  readonly maxConcurrent: number
  /** Calls that may wait for a slot; more are refused at once. */
  readonly maxQueue: number
  /** How long a queued call waits for a slot before it is refused. */
  readonly queueTimeoutMs: number
}

export interface ResiliencePolicy {
  /** Changes when any setting changes: a reload that keeps it keeps the breaker's state. */
  readonly signature: string
  readonly retry: RetryPolicy | undefined
  readonly breaker: BreakerPolicy | undefined
  readonly bulkhead: BulkheadPolicy | undefined
  /** Time to the upstream's response headers; undefined: the system's or tool's `timeoutMs`. */
  readonly headersTimeoutMs: number | undefined
  /** Deadline for the whole call, retries and backoff included; undefined: none. */
  readonly totalTimeoutMs: number | undefined
}

/** The config keys a system or a tool may set (config/schema.ts). */
export interface RawResilience {
  retry?: {
    attempts: number
    on?: number[]
    backoff?: RawDuration
    maxBackoff?: RawDuration
    maxRetryAfter?: RawDuration
    budget?: number
  }
  breaker?: {
    failures?: number
    rate?: number
    window?: RawDuration
    minCalls?: number
    openMs: RawDuration
    halfOpenProbes?: number
  }
  bulkhead?: { maxConcurrent: number; maxQueue?: number; queueTimeout?: RawDuration }
  headersTimeoutMs?: number
  totalTimeoutMs?: number
}

/** Defaults, written out once: the guide (docs/guides/resilience.md) quotes them. */
export const resilienceDefaults = {
  retryOn: [502, 503, 504],
  backoffMs: 100,
  maxBackoffMs: 2_000,
  maxRetryAfterMs: 10_000,
  budget: 0.2,
  breakerWindowMs: 30_000,
  breakerMinCalls: 20,
  halfOpenProbes: 1,
  maxQueue: 0,
  queueTimeoutMs: 1_000,
} as const

const none: ResiliencePolicy = Object.freeze({
  signature: '',
  retry: undefined,
  breaker: undefined,
  bulkhead: undefined,
  headersTimeoutMs: undefined,
  totalTimeoutMs: undefined,
})

/** Compile the resilience keys of one system or tool; `at` prefixes problem paths. */
export function compileResilience(
  raw: RawResilience,
  at: string,
  problems: Array<{ path: string; message: string }>,
): ResiliencePolicy {
  if (
    raw.retry === undefined &&
    raw.breaker === undefined &&
    raw.bulkhead === undefined &&
    raw.headersTimeoutMs === undefined &&
    raw.totalTimeoutMs === undefined
  )
    return none
  const d = resilienceDefaults
  let retry: RetryPolicy | undefined
  if (raw.retry !== undefined && raw.retry.attempts > 0) {
    const r = raw.retry
    const baseMs = r.backoff === undefined ? d.backoffMs : durationMs(r.backoff)
    const maxBackoffMs =
      r.maxBackoff === undefined ? Math.max(d.maxBackoffMs, baseMs) : durationMs(r.maxBackoff)
    if (maxBackoffMs < baseMs)
      problems.push({ path: `${at}.retry.maxBackoff`, message: 'must not be shorter than retry.backoff' })
    retry = Object.freeze({
      attempts: r.attempts,
      on: new Set(r.on ?? d.retryOn),
      baseMs,
      maxBackoffMs,
      maxRetryAfterMs: r.maxRetryAfter === undefined ? d.maxRetryAfterMs : durationMs(r.maxRetryAfter),
      budget: r.budget ?? d.budget,
    })
  }
  let breaker: BreakerPolicy | undefined
  if (raw.breaker !== undefined) {
    const b = raw.breaker
    if (b.failures === undefined && b.rate === undefined)
      problems.push({ path: `${at}.breaker`, message: 'set failures (consecutive) or rate (failure rate)' })
    if (b.failures !== undefined && b.rate !== undefined)
      problems.push({ path: `${at}.breaker`, message: 'set either failures or rate, not both' })
    const openMs = durationMs(b.openMs)
    if (openMs < 1) problems.push({ path: `${at}.breaker.openMs`, message: 'must be at least 1ms' })
    breaker = Object.freeze({
      mode: b.rate === undefined ? 'consecutive' : 'rate',
      failures: b.failures ?? 1,
      rate: b.rate ?? 1,
      windowMs: b.window === undefined ? d.breakerWindowMs : durationMs(b.window),
      minCalls: b.minCalls ?? d.breakerMinCalls,
      openMs,
      halfOpenProbes: b.halfOpenProbes ?? d.halfOpenProbes,
    })
  }
  let bulkhead: BulkheadPolicy | undefined
  if (raw.bulkhead !== undefined) {
    const q = raw.bulkhead
    bulkhead = Object.freeze({
      maxConcurrent: q.maxConcurrent,
      maxQueue: q.maxQueue ?? d.maxQueue,
      queueTimeoutMs: q.queueTimeout === undefined ? d.queueTimeoutMs : durationMs(q.queueTimeout),
    })
  }
  const policy = {
    retry,
    breaker,
    bulkhead,
    headersTimeoutMs: raw.headersTimeoutMs,
    totalTimeoutMs: raw.totalTimeoutMs,
  }
  return Object.freeze({
    signature: JSON.stringify(policy, (_k, v: unknown) => (v instanceof Set ? [...v] : v)),
    ...policy,
  })
}

/** The policy of a system or tool that sets none of the keys. */
export const noResilience: ResiliencePolicy = none
