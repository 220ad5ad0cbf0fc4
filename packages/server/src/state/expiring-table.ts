import { SharedStateError } from './state-error.ts'

/** A value that lives until `expiresAt` (milliseconds since the epoch). */
export interface ExpiringEntry {
  value: number
  expiresAt: number
}

/**
 * One of the memory state's bounded tables (claims, counters). Full of live entries, it refuses a
 * new key rather than forget a live one: a forgotten claim allows a replay, a forgotten counter
 * lets a quota or a loop guard start over.
 */
export interface ExpiringTable {
  /** The entry under `key` unless it has expired by `at`; callers may change its value in place. */
  live(key: string, at: number): ExpiringEntry | undefined
  /**
   * Sets `key` (new, or replacing its expired entry). Throws state_full when the key is new and
   * the table holds its maximum of live entries.
   */
  insert(key: string, value: number, expiresAt: number, at: number): ExpiringEntry
  /** Forgets every entry expired at `at`. */
  sweep(at: number): void
  clear(): void
}

// A table full of live entries can only be relieved by a sweep, and a sweep walks every entry; so
// when full, sweep at most this often, or an attacker holding the table full buys one O(n) walk
// per request.
const fullSweepEveryMs = 1_000

/** `what` names the entries in the state_full message ("claims", "counters"). */
export function createExpiringTable(max: number, what: string): ExpiringTable {
  const entries = new Map<string, ExpiringEntry>()
  // A lower bound on every expiry in the table: until then a sweep cannot free anything.
  let earliestExpiry = Number.POSITIVE_INFINITY
  let lastFullSweep = Number.NEGATIVE_INFINITY

  function sweep(at: number): void {
    let earliest = Number.POSITIVE_INFINITY
    for (const [key, entry] of entries) {
      if (entry.expiresAt <= at) entries.delete(key)
      else if (entry.expiresAt < earliest) earliest = entry.expiresAt
    }
    earliestExpiry = earliest
  }

  return {
    live(key, at) {
      const entry = entries.get(key)
      return entry !== undefined && entry.expiresAt > at ? entry : undefined
    },
    insert(key, value, expiresAt, at) {
      if (!entries.has(key) && entries.size >= max) {
        if (at >= earliestExpiry && at - lastFullSweep >= fullSweepEveryMs) {
          lastFullSweep = at
          sweep(at)
        }
        if (entries.size >= max)
          throw new SharedStateError('state_full', `shared state holds ${max} live ${what}`)
      }
      const entry = { value, expiresAt }
      entries.set(key, entry)
      if (expiresAt < earliestExpiry) earliestExpiry = expiresAt
      return entry
    },
    sweep,
    clear() {
      entries.clear()
    },
  }
}
