/**
 * SharedState (DESIGN §14): short-lived state that every gateway instance must agree on, with a
 * memory implementation (one process) and a Redis one (a cluster), behind one contract suite
 * (state.contract.test.ts). Later work adds rate-limit counters and cache invalidation here.
 */

export type Unsubscribe = () => void

export interface SharedState {
  readonly kind: 'memory' | 'redis'
  /**
   * Remember `key` for `ttlMs`; true the first time, false while it is remembered (replay
   * detection for assertion and DPoP `jti`s). Atomic across instances.
   */
  claimOnce(key: string, ttlMs: number): Promise<boolean>
  /** Deliver `message` to every subscriber of `channel` on every instance, this one included. */
  publish(channel: string, message: string): Promise<void>
  /** Receive messages published on `channel` from now on. */
  subscribe(channel: string, onMessage: (message: string) => void): Unsubscribe
  /** True when the backing service answers (for /ready). */
  ping(): Promise<boolean>
  close(): Promise<void>
}
