import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { GatewayError } from '../errors/gateway-error.ts'
import { Bulkhead } from './bulkhead.ts'

describe('bulkhead', () => {
  it('admits maxConcurrent calls at once, queues maxQueue more and refuses the rest with bulkhead_full', async () => {
    const b = new Bulkhead({ maxConcurrent: 2, maxQueue: 1, queueTimeoutMs: 5_000 }, 'system:orders')
    assert.equal(b.acquire(), true)
    assert.equal(b.acquire(), true)
    const queued = b.acquire()
    assert.ok(queued instanceof Promise)
    const refused = b.acquire()
    await assert.rejects(refused as Promise<void>, (err: unknown) => {
      assert.ok(err instanceof GatewayError)
      assert.equal(err.code, 'bulkhead_full')
      assert.equal(err.status, 503)
      assert.deepEqual(err.details, { target: 'system:orders', reason: 'queue_full', maxConcurrent: 2 })
      return true
    })
    b.release()
    await queued
    assert.equal(b.inUse, 2, 'the released slot went to the waiter')
    b.release()
    b.release()
    assert.equal(b.inUse, 0)
  })

  it('refuses a queued call whose wait times out', async () => {
    const b = new Bulkhead({ maxConcurrent: 1, maxQueue: 5, queueTimeoutMs: 20 }, 'tool:serpapi')
    b.acquire()
    await assert.rejects(b.acquire() as Promise<void>, (err: unknown) => {
      assert.equal((err as GatewayError).details?.['reason'], 'queue_timeout')
      return true
    })
    b.release()
    assert.equal(b.acquire(), true, 'the timed-out waiter left the queue')
  })
})
