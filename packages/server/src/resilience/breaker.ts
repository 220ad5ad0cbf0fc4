/**
 * A circuit breaker (DESIGN §10): closed lets calls through and counts failures; open refuses
 * them until `openMs` has passed; half-open lets `halfOpenProbes` trial calls through, and closes
 * once that many succeed or opens again on the first failure. Failures are network errors,
 * timeouts and 5xx answers (DESIGN §18); the caller decides what an outcome was.
 *
 * Time comes from `now()`, so tests drive it without sleeping. Open turns half-open lazily, on
 * the next call or read: no timer per breaker.
 */
import type { BreakerPolicy } from './policy.ts'

export type BreakerState = 'closed' | 'open' | 'half_open'

/** The gauge values of `runr_breaker_state`. */
export const breakerStateValue: Readonly<Record<BreakerState, number>> = { closed: 0, open: 1, half_open: 2 }

/** What `acquire` answers: a permit to call, or how long the breaker stays open. */
export type Admission = { ok: true; probe: boolean } | { ok: false; retryAfterMs: number }

/** Number of buckets the rolling window is cut into. */
const buckets = 10

export class CircuitBreaker {
  private mode: BreakerState = 'closed'
  private consecutive = 0
  private openedAt = 0
  private probesOut = 0
  private probesPassed = 0
  // Rolling window: calls and failures per bucket, the bucket index tied to time.
  private readonly calls = new Array<number>(buckets).fill(0)
  private readonly failed = new Array<number>(buckets).fill(0)
  private bucketAt = 0

  constructor(
    readonly policy: BreakerPolicy,
    private readonly now: () => number,
    /** Called on every change of state (logs, metrics). */
    private readonly onChange?: (state: BreakerState) => void,
  ) {}

  /** The state at this instant (an elapsed open period reads as half-open). */
  get state(): BreakerState {
    if (this.mode === 'open' && this.now() - this.openedAt >= this.policy.openMs) this.become('half_open')
    return this.mode
  }

  /** Ask to make one call. A probe permit must be settled with `success`, `failure` or `release`. */
  acquire(): Admission {
    const state = this.state
    if (state === 'closed') return { ok: true, probe: false }
    if (state === 'open') return { ok: false, retryAfterMs: this.openedAt + this.policy.openMs - this.now() }
    if (this.probesOut + this.probesPassed >= this.policy.halfOpenProbes)
      return { ok: false, retryAfterMs: Math.min(this.policy.openMs, 1000) }
    this.probesOut++
    return { ok: true, probe: true }
  }

  success(probe: boolean): void {
    if (probe) {
      if (this.mode !== 'half_open') return
      this.probesOut--
      this.probesPassed++
      if (this.probesPassed >= this.policy.halfOpenProbes) this.become('closed')
      return
    }
    this.consecutive = 0
    if (this.policy.mode === 'rate') this.count(false)
  }

  failure(probe: boolean): void {
    if (probe) {
      if (this.mode === 'half_open') this.open()
      return
    }
    if (this.mode !== 'closed') return
    this.consecutive++
    if (this.policy.mode === 'consecutive') {
      if (this.consecutive >= this.policy.failures) this.open()
      return
    }
    this.count(true)
    let calls = 0
    let failures = 0
    for (let i = 0; i < buckets; i++) {
      calls += this.calls[i]!
      failures += this.failed[i]!
    }
    if (calls >= this.policy.minCalls && failures / calls >= this.policy.rate) this.open()
  }

  /** Give back a probe permit whose call ended without telling anything (the client left). */
  release(probe: boolean): void {
    if (probe && this.mode === 'half_open') this.probesOut--
  }

  private count(failure: boolean): void {
    const width = this.policy.windowMs / buckets
    const now = Math.floor(this.now() / width)
    // Clear the buckets that fell out of the window since the last count.
    const stale = Math.min(buckets, now - this.bucketAt)
    for (let i = 1; i <= stale; i++) {
      const at = (this.bucketAt + i) % buckets
      this.calls[at] = 0
      this.failed[at] = 0
    }
    this.bucketAt = now
    const at = now % buckets
    this.calls[at]!++
    if (failure) this.failed[at]!++
  }

  private open(): void {
    this.openedAt = this.now()
    this.become('open')
  }

  private become(state: BreakerState): void {
    if (this.mode === state) return
    this.mode = state
    this.consecutive = 0
    this.probesOut = 0
    this.probesPassed = 0
    if (state !== 'open') {
      this.calls.fill(0)
      this.failed.fill(0)
    }
    this.onChange?.(state)
  }
}
