import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { openStore } from '../store/open-store.ts'
import type { Store } from '../store/types.ts'
import { createIdempotency } from './idempotency.ts'

describe('an idempotent first call longer than its lease', () => {
  let store: Store
  before(async () => {
    store = await openStore({ kind: 'sqlite', path: ':memory:' })
  })
  after(() => store.close())

  it('renews its claim while it runs, so a repeat waits for it instead of running the call again', async () => {
    // A 150 ms lease renewed every 50 ms, and a first call of 600 ms: four leases long.
    const idempotency = createIdempotency(store.idempotency, { leaseMs: 150 })
    let runs = 0
    const target = { principal: 'agent:a', key: 'k1', requestHash: 'h', ttlMs: 60_000, waitMs: 5_000 }
    const execute = async () => {
      runs++
      await new Promise((r) => setTimeout(r, 600))
      return { value: 'sent', answer: { status: 200, headers: {}, body: Buffer.from('sent') } }
    }
    const first = idempotency.run(target, execute, () => undefined)
    await new Promise((r) => setTimeout(r, 350))
    const repeat = await idempotency.run(target, execute, () => undefined)
    assert.deepEqual(await first, { replayed: false, value: 'sent' })
    assert.equal(repeat.replayed, true)
    assert.equal(runs, 1)
    idempotency.close()
  })
})
