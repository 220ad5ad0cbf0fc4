import assert from 'node:assert/strict'
import { eachStore } from './test-helpers.ts'
import type { IdempotencyClaim } from './types.ts'

const t0 = 1_000_000
const claim = (over: Partial<IdempotencyClaim> = {}): IdempotencyClaim => ({
  principal: 'agent-1',
  key: 'order-42',
  requestHash: 'h1',
  owner: 'first',
  now: t0,
  expiresAt: t0 + 86_400_000,
  leaseUntil: t0 + 60_000,
  ...over,
})
const answer = {
  status: 201,
  headers: { 'content-type': 'application/json' },
  body: Buffer.from('{"id":7}\u0000\xff'),
}

eachStore('idempotency store', ['idempotency_keys'], ({ store, peer, behaves }) => {
  const keys = () => store().idempotency

  behaves('claims a free key once; a second claim finds it pending with the first hash', async () => {
    assert.deepEqual(await keys().begin(claim()), { outcome: 'claimed' })
    const second = await keys().begin(claim({ owner: 'second', requestHash: 'h2', now: t0 + 10 }))
    assert.equal(second.outcome, 'existing')
    assert.ok(second.outcome === 'existing')
    assert.equal(second.record.state, 'pending')
    assert.equal(second.record.requestHash, 'h1')
    assert.equal(second.record.owner, 'first')
    assert.equal(second.record.answer, null)
  })

  behaves('keeps the answer, bytes and headers exactly, for the owner only', async () => {
    await keys().begin(claim())
    assert.equal(await keys().complete('agent-1', 'order-42', 'someone-else', answer), false)
    assert.equal(await keys().complete('agent-1', 'order-42', 'first', answer), true)
    assert.equal(await keys().complete('agent-1', 'order-42', 'first', answer), false, 'only once')
    const found = await keys().get('agent-1', 'order-42', t0 + 1)
    assert.equal(found?.state, 'done')
    assert.deepEqual(found?.answer, answer)
  })

  behaves('keeps principals apart: the same key of another agent is another record', async () => {
    await keys().begin(claim())
    assert.deepEqual(await keys().begin(claim({ principal: 'agent-2', owner: 'other' })), {
      outcome: 'claimed',
    })
    assert.equal(await keys().get('agent-3', 'order-42', t0), undefined)
  })

  behaves('lets a released claim be claimed again', async () => {
    await keys().begin(claim())
    await keys().release('agent-1', 'order-42', 'not-the-owner')
    assert.equal((await keys().begin(claim({ owner: 'x' }))).outcome, 'existing')
    await keys().release('agent-1', 'order-42', 'first')
    assert.deepEqual(await keys().begin(claim({ owner: 'again' })), { outcome: 'claimed' })
  })

  behaves(
    'takes over a pending claim whose lease lapsed, and the old owner can no longer complete',
    async () => {
      await keys().begin(claim())
      const later = t0 + 60_000
      assert.deepEqual(await keys().begin(claim({ owner: 'rescuer', now: later, requestHash: 'h1' })), {
        outcome: 'claimed',
      })
      assert.equal(await keys().complete('agent-1', 'order-42', 'first', answer), false)
      assert.equal(await keys().complete('agent-1', 'order-42', 'rescuer', answer), true)
    },
  )

  behaves(
    'keeps a renewed claim past its first lease, for its owner only, and never a finished one',
    async () => {
      await keys().begin(claim())
      assert.equal(await keys().renew('agent-1', 'order-42', 'not-the-owner', t0 + 120_000), false)
      assert.equal(await keys().renew('agent-1', 'order-42', 'first', t0 + 120_000), true)
      // Past the first lease (t0 + 60 s), inside the renewed one: not taken over.
      assert.equal((await keys().begin(claim({ owner: 'rescuer', now: t0 + 90_000 }))).outcome, 'existing')
      assert.equal(await keys().complete('agent-1', 'order-42', 'first', answer), true)
      assert.equal(await keys().renew('agent-1', 'order-42', 'first', t0 + 240_000), false)
    },
  )

  behaves('never takes over a finished record before it expires, and reads it as gone after', async () => {
    await keys().begin(claim({ expiresAt: t0 + 1_000 }))
    await keys().complete('agent-1', 'order-42', 'first', answer)
    assert.equal((await keys().begin(claim({ owner: 'b', now: t0 + 999 }))).outcome, 'existing')
    assert.equal(await keys().get('agent-1', 'order-42', t0 + 1_000), undefined)
    assert.deepEqual(await keys().begin(claim({ owner: 'c', now: t0 + 1_000, expiresAt: t0 + 5_000 })), {
      outcome: 'claimed',
    })
  })

  behaves('prunes expired records only', async () => {
    await keys().begin(claim({ key: 'old', expiresAt: t0 + 10 }))
    await keys().begin(claim({ key: 'new', expiresAt: t0 + 10_000 }))
    assert.equal(await keys().prune(t0 + 10), 1)
    assert.equal(await keys().get('agent-1', 'old', t0), undefined)
    assert.notEqual(await keys().get('agent-1', 'new', t0), undefined)
  })

  behaves('lets exactly one of many racing claims from two instances win', async () => {
    const other = await peer()
    const claims = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        (i % 2 === 0 ? store() : other).idempotency.begin(claim({ key: 'race', owner: `o${i}` })),
      ),
    )
    assert.equal(claims.filter((c) => c.outcome === 'claimed').length, 1)
  })
})
