/**
 * A SharedState whose backing state can be replaced while the gateway runs, so a reload that
 * adds, changes or removes `redis:` takes effect without a restart. Subscriptions move to the new
 * state before the old one is closed. Claims and counters held by the old state are not carried
 * over: a replay that straddles the switch could pass once, and quota and repeat counts start
 * again, which is the price of not restarting.
 */
import type { SharedState, Unsubscribe } from './types.ts'

export interface SwitchableState extends SharedState {
  /** Move every subscription to `next`, make it current, and close the previous state. */
  switchTo(next: SharedState): Promise<void>
}

export function createSwitchableState(initial: SharedState): SwitchableState {
  let current = initial
  /** What callers subscribed, by channel; each channel has one subscription on `current`. */
  const handlers = new Map<string, Set<(message: string) => void>>()
  const inner = new Map<string, Unsubscribe>()

  const dispatch = (channel: string) => (message: string) => {
    for (const handler of [...(handlers.get(channel) ?? [])]) handler(message)
  }

  return {
    get kind() {
      return current.kind
    },
    claimOnce: (key, ttlMs) => current.claimOnce(key, ttlMs),
    increment: (key, windowMs) => current.increment(key, windowMs),
    consumeQuota: (key, options) => current.consumeQuota(key, options),
    addQuota: (key, amount, ttlMs) => current.addQuota(key, amount, ttlMs),
    getQuota: (key) => current.getQuota(key),
    rateLimit: (bucket, subject, rate) => current.rateLimit(bucket, subject, rate),
    cacheGet: (key) => current.cacheGet(key),
    cacheSet: (key, value, ttlMs) => current.cacheSet(key, value, ttlMs),
    publish: (channel, message) => current.publish(channel, message),
    ping: () => current.ping(),
    subscribe(channel, onMessage) {
      // Wrapped so the same function subscribed twice is two subscriptions.
      const handler = (message: string): void => onMessage(message)
      let set = handlers.get(channel)
      if (set === undefined) {
        set = new Set()
        handlers.set(channel, set)
        inner.set(channel, current.subscribe(channel, dispatch(channel)))
      }
      set.add(handler)
      return () => {
        const now = handlers.get(channel)
        if (now === undefined || !now.delete(handler) || now.size > 0) return
        handlers.delete(channel)
        inner.get(channel)?.()
        inner.delete(channel)
      }
    },
    async switchTo(next) {
      const previous = current
      for (const channel of handlers.keys()) {
        const old = inner.get(channel)
        inner.set(channel, next.subscribe(channel, dispatch(channel)))
        old?.()
      }
      current = next
      await previous.close()
    },
    close: () => current.close(),
  }
}
