/**
 * A bulkhead (DESIGN §10): at most `maxConcurrent` calls to one system or tool at a time, at most
 * `maxQueue` more waiting up to `queueTimeoutMs` for a slot, the rest refused at once with
 * `503 bulkhead_full`. One slow upstream then holds a bounded share of the gateway's sockets and
 * memory, and its callers learn quickly instead of piling up.
 */
import { GatewayError } from '../errors/gateway-error.ts'
import type { BulkheadPolicy } from './policy.ts'

interface Waiter {
  grant(): void
  timer: NodeJS.Timeout
}

export class Bulkhead {
  private active = 0
  private readonly queue: Waiter[] = []

  constructor(
    public policy: BulkheadPolicy,
    private readonly target: string,
  ) {}

  /** Calls holding a slot. */
  get inUse(): number {
    return this.active
  }

  /**
   * Take a slot: synchronously true when one is free, else a promise that settles when one frees
   * up, rejecting with `bulkhead_full` when the queue is full or the wait times out.
   */
  acquire(): true | Promise<void> {
    if (this.active < this.policy.maxConcurrent) {
      this.active++
      return true
    }
    if (this.queue.length >= this.policy.maxQueue) return Promise.reject(this.full('queue_full'))
    return new Promise((granted, refused) => {
      const waiter: Waiter = {
        grant: () => {
          clearTimeout(waiter.timer)
          granted()
        },
        timer: setTimeout(() => {
          const at = this.queue.indexOf(waiter)
          if (at >= 0) this.queue.splice(at, 1)
          refused(this.full('queue_timeout'))
        }, this.policy.queueTimeoutMs),
      }
      this.queue.push(waiter)
    })
  }

  /** Give a slot back; the longest waiter gets it. */
  release(): void {
    const next = this.queue.shift()
    if (next !== undefined) {
      next.grant()
      return
    }
    this.active--
  }

  private full(reason: 'queue_full' | 'queue_timeout'): GatewayError {
    return new GatewayError('bulkhead_full', undefined, {
      details: { target: this.target, reason, maxConcurrent: this.policy.maxConcurrent },
      headers: { 'retry-after': '1' },
    })
  }
}
