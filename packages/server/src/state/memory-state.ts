import { SharedStateError, type StateErrorReporter } from './state-error.ts'
import type { SharedState, Unsubscribe } from './types.ts'

export interface MemoryStateOptions {
  /**
   * Most claims remembered at once (default 1,000,000). Past it new claims are refused, never
   * made room for by forgetting a live one: a forgotten `jti` could be replayed.
   */
  maxClaims?: number
  /** Milliseconds since the epoch; tests pass a fake clock. */
  now?: () => number
  /** Receives what a subscriber throws (default: ignored). */
  onError?: StateErrorReporter
}

const defaultMaxClaims = 1_000_000
const sweepEveryMs = 10_000
// A table full of live claims can only be relieved by a sweep, and a sweep walks every entry; so
// when full, sweep at most this often, or an attacker holding the table full buys one O(n) walk
// per request.
const fullSweepEveryMs = 1_000

/** SharedState for a single gateway process: claims in a Map, pub/sub delivered in-process. */
export function createMemoryState(options: MemoryStateOptions = {}): SharedState {
  const maxClaims = options.maxClaims ?? defaultMaxClaims
  const now = options.now ?? Date.now
  const onError = options.onError ?? (() => {})
  const claims = new Map<string, number>()
  const channels = new Map<string, Set<(message: string) => void>>()
  let closed = false
  // A lower bound on every expiry in `claims`: until then a sweep cannot free anything.
  let earliestExpiry = Number.POSITIVE_INFINITY
  let lastFullSweep = Number.NEGATIVE_INFINITY

  function sweep(at: number): void {
    let earliest = Number.POSITIVE_INFINITY
    for (const [key, expiry] of claims) {
      if (expiry <= at) claims.delete(key)
      else if (expiry < earliest) earliest = expiry
    }
    earliestExpiry = earliest
  }

  const sweeper = setInterval(() => sweep(now()), sweepEveryMs)
  // Sweeping is housekeeping; it must not keep a process alive that is otherwise done.
  sweeper.unref()

  function refuseWhenClosed(): void {
    if (closed) throw new SharedStateError('state_closed', 'shared state is closed')
  }

  return {
    kind: 'memory',

    async claimOnce(key, ttlMs) {
      refuseWhenClosed()
      if (!(ttlMs > 0) || !Number.isFinite(ttlMs)) throw new RangeError(`ttlMs must be > 0, got ${ttlMs}`)
      const at = now()
      const expiry = claims.get(key)
      if (expiry !== undefined && expiry > at) return false
      if (expiry === undefined && claims.size >= maxClaims) {
        if (at >= earliestExpiry && at - lastFullSweep >= fullSweepEveryMs) {
          lastFullSweep = at
          sweep(at)
        }
        if (claims.size >= maxClaims) {
          throw new SharedStateError('state_full', `shared state holds ${maxClaims} live claims`)
        }
      }
      const until = at + ttlMs
      claims.set(key, until)
      if (until < earliestExpiry) earliestExpiry = until
      return true
    },

    async publish(channel, message) {
      refuseWhenClosed()
      const subscribers = channels.get(channel)
      if (subscribers === undefined) return
      // Who receives is decided now, so a later subscriber does not see an earlier message; who
      // unsubscribes before delivery is skipped, as the contract promises.
      const recipients = [...subscribers]
      setImmediate(() => {
        if (closed) return
        for (const onMessage of recipients) {
          if (!subscribers.has(onMessage)) continue
          try {
            onMessage(message)
          } catch (error) {
            onError(error, 'subscriber')
          }
        }
      })
    },

    subscribe(channel, onMessage) {
      refuseWhenClosed()
      // Wrapped so the same function subscribed twice is two subscriptions, like two listeners.
      const subscriber = (message: string): void => onMessage(message)
      let subscribers = channels.get(channel)
      if (subscribers === undefined) {
        subscribers = new Set()
        channels.set(channel, subscribers)
      }
      subscribers.add(subscriber)
      const unsubscribe: Unsubscribe = () => {
        const current = channels.get(channel)
        if (current === undefined || !current.delete(subscriber)) return
        if (current.size === 0) channels.delete(channel)
      }
      return unsubscribe
    },

    async ping() {
      return !closed
    },

    async close() {
      if (closed) return
      closed = true
      clearInterval(sweeper)
      claims.clear()
      channels.clear()
    },
  }
}
