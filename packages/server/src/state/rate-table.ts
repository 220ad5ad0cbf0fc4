/**
 * The memory state's GCRA table: one theoretical arrival time (TAT) per bucket and subject, in
 * nested maps so that a check builds no key string. The same arithmetic runs in Redis as a Lua
 * script (redis-state.ts); the contract suite holds both to the same answers.
 */
import { SharedStateError } from './state-error.ts'
import type { RateDecision, RateSpec } from './types.ts'

/**
 * Slack for the float arithmetic: a period of 1000 ms over 3 requests has an emission interval of
 * 333.33… ms, and three of them sum to 1000.0000000000001, which must still fit a window of 1000.
 */
export const rateSlackMs = 1e-6

interface Arrival {
  tat: number
}

export interface RateTable {
  check(bucket: string, subject: string, rate: RateSpec, now: number): RateDecision
  /** Forgets subjects whose TAT has passed: they are back to a full burst, same as absent. */
  sweep(now: number): void
  clear(): void
}

// Full of live subjects, the table can only be relieved by a sweep, which walks every entry: at
// most this often, so that an attacker holding it full does not buy one walk per request.
const fullSweepEveryMs = 1_000

/**
 * `max` bounds the subjects across all buckets. Full of live ones, a new subject is refused
 * (state_full) rather than another forgotten: forgetting one would hand it a fresh burst.
 */
export function createRateTable(max: number): RateTable {
  const buckets = new Map<string, Map<string, Arrival>>()
  let size = 0
  let lastFullSweep = Number.NEGATIVE_INFINITY

  function sweep(now: number): void {
    for (const [bucket, subjects] of buckets) {
      for (const [subject, arrival] of subjects) {
        if (arrival.tat <= now) {
          subjects.delete(subject)
          size--
        }
      }
      if (subjects.size === 0) buckets.delete(bucket)
    }
  }

  return {
    check(bucket, subject, rate, now) {
      let subjects = buckets.get(bucket)
      const arrival = subjects?.get(subject)
      const base = arrival !== undefined && arrival.tat > now ? arrival.tat : now
      const next = base + rate.emissionMs
      const used = next - now
      if (used > rate.windowMs + rateSlackMs) {
        return { allowed: false, remaining: 0, resetMs: base - now, retryAfterMs: used - rate.windowMs }
      }
      if (arrival !== undefined) {
        arrival.tat = next
      } else {
        if (size >= max) {
          if (now - lastFullSweep >= fullSweepEveryMs) {
            lastFullSweep = now
            sweep(now)
            subjects = buckets.get(bucket)
          }
          if (size >= max)
            throw new SharedStateError('state_full', `shared state holds ${max} live rate-limit subjects`)
        }
        if (subjects === undefined) {
          subjects = new Map()
          buckets.set(bucket, subjects)
        }
        subjects.set(subject, { tat: next })
        size++
      }
      return {
        allowed: true,
        remaining: Math.floor((rate.windowMs - used) / rate.emissionMs + rateSlackMs),
        resetMs: used,
        retryAfterMs: 0,
      }
    },
    sweep,
    clear() {
      buckets.clear()
      size = 0
    },
  }
}
