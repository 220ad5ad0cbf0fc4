import { LRUCache } from 'lru-cache'
import { checkCount, checkDuration } from './arguments.ts'
import { createExpiringTable } from './expiring-table.ts'
import { createRateTable } from './rate-table.ts'
import { SharedStateError, type StateErrorReporter } from './state-error.ts'
import type { SharedState, Unsubscribe } from './types.ts'

export interface MemoryStateOptions {
  /**
   * Most claims remembered at once (default 1,000,000). Past it new claims are refused, never
   * made room for by forgetting a live one: a forgotten `jti` could be replayed.
   */
  maxClaims?: number
  /**
   * Most counters (increments and quotas together) kept at once (default 1,000,000). Past it a new
   * counter is refused (state_full), never made room for by forgetting a live one, which would let
   * a quota or loop guard start over.
   */
  maxCounters?: number
  /**
   * Most rate-limit subjects (an agent, an IP… under one limit) kept at once (default 1,000,000).
   * Past it a new subject is refused (state_full; the limit's failOpen decides), never made room
   * for by forgetting a live one, which would hand it a fresh burst.
   */
  maxRateSubjects?: number
  /** Most response-cache entries (default 10,000); the least recently used goes first. */
  maxCacheEntries?: number
  /** Most response-cache bytes, keys included (default 64 MiB); the least recently used goes first. */
  maxCacheBytes?: number
  /** Milliseconds since the epoch; tests pass a fake clock. */
  now?: () => number
  /** Receives what a subscriber throws (default: ignored). */
  onError?: StateErrorReporter
}

const defaultMaxEntries = 1_000_000
const defaultMaxCacheEntries = 10_000
const defaultMaxCacheBytes = 64 * 1024 * 1024

interface CacheEntry {
  value: Buffer
  expiresAt: number
}
const sweepEveryMs = 10_000

/**
 * SharedState for a single gateway process: claims and counters in bounded Maps whose expired
 * entries are swept, pub/sub delivered in-process.
 */
export function createMemoryState(options: MemoryStateOptions = {}): SharedState {
  const now = options.now ?? Date.now
  const onError = options.onError ?? (() => {})
  const claims = createExpiringTable(options.maxClaims ?? defaultMaxEntries, 'claims')
  // Increments under `c:`, quotas under `q:`: one bound for both, two namespaces as in Redis.
  const counters = createExpiringTable(options.maxCounters ?? defaultMaxEntries, 'counters')
  const rates = createRateTable(options.maxRateSubjects ?? defaultMaxEntries)
  // A cache may forget whatever it likes (unlike claims and counters): LRU eviction is its bound.
  // Expiry is checked on read against `now`, so a fake clock drives it in tests.
  const cache = new LRUCache<string, CacheEntry>({
    max: options.maxCacheEntries ?? defaultMaxCacheEntries,
    maxSize: options.maxCacheBytes ?? defaultMaxCacheBytes,
    sizeCalculation: (entry, key) => entry.value.length + key.length + 64,
  })
  const channels = new Map<string, Set<(message: string) => void>>()
  let closed = false

  const sweeper = setInterval(() => {
    const at = now()
    claims.sweep(at)
    counters.sweep(at)
    rates.sweep(at)
  }, sweepEveryMs)
  // Sweeping is housekeeping; it must not keep a process alive that is otherwise done.
  sweeper.unref()

  function refuseWhenClosed(): void {
    if (closed) throw new SharedStateError('state_closed', 'shared state is closed')
  }

  return {
    kind: 'memory',

    async claimOnce(key, ttlMs) {
      refuseWhenClosed()
      checkDuration(ttlMs, 'ttlMs')
      const at = now()
      if (claims.live(key, at) !== undefined) return false
      claims.insert(key, 1, at + ttlMs, at)
      return true
    },

    async increment(key, windowMs) {
      refuseWhenClosed()
      checkDuration(windowMs, 'windowMs')
      const at = now()
      const entry = counters.live(`c:${key}`, at)
      if (entry !== undefined) return ++entry.value
      counters.insert(`c:${key}`, 1, at + windowMs, at)
      return 1
    },

    async consumeQuota(key, quota) {
      refuseWhenClosed()
      const limit = checkCount(quota.limit, 'limit')
      const cost = checkCount(quota.cost ?? 1, 'cost')
      checkDuration(quota.ttlMs, 'ttlMs')
      const at = now()
      const entry = counters.live(`q:${key}`, at)
      const used = entry?.value ?? 0
      if (used + cost > limit) return { allowed: false, used }
      if (cost === 0) return { allowed: true, used }
      if (entry === undefined) counters.insert(`q:${key}`, cost, at + quota.ttlMs, at)
      else entry.value += cost
      return { allowed: true, used: used + cost }
    },

    async addQuota(key, amount, ttlMs) {
      refuseWhenClosed()
      checkCount(amount, 'amount')
      checkDuration(ttlMs, 'ttlMs')
      const at = now()
      const entry = counters.live(`q:${key}`, at)
      if (entry !== undefined) {
        entry.value += amount
        return entry.value
      }
      if (amount === 0) return 0
      counters.insert(`q:${key}`, amount, at + ttlMs, at)
      return amount
    },

    async getQuota(key) {
      refuseWhenClosed()
      return counters.live(`q:${key}`, now())?.value ?? 0
    },

    rateLimit(bucket, subject, rate) {
      refuseWhenClosed()
      return rates.check(bucket, subject, rate, now())
    },

    async cacheGet(key) {
      refuseWhenClosed()
      const entry = cache.get(key)
      if (entry === undefined) return undefined
      if (entry.expiresAt > now()) return entry.value
      cache.delete(key)
      return undefined
    },

    async cacheSet(key, value, ttlMs) {
      refuseWhenClosed()
      checkDuration(ttlMs, 'ttlMs')
      cache.set(key, { value, expiresAt: now() + ttlMs })
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
      counters.clear()
      rates.clear()
      cache.clear()
      channels.clear()
    },
  }
}
