import assert from 'node:assert/strict'
import { eachStore } from './test-helpers.ts'

const hour = { windowStart: 3_600_000, windowEnd: 7_200_000 }
const nextHour = { windowStart: 7_200_000, windowEnd: 10_800_000 }

eachStore('quota store', ['quota_counters'], ({ backend, store, peer, behaves }) => {
  const quotas = () => store().quotas
  const rows = async () => Number((await backend.query('select count(*) as n from quota_counters'))[0]?.['n'])

  behaves('admits consumption up to the limit and refuses beyond it without consuming', async () => {
    const results = []
    for (let i = 0; i < 5; i++) results.push(await quotas().consume('agent-1:search', { limit: 3, ...hour }))
    assert.deepEqual(results, [
      { allowed: true, used: 1 },
      { allowed: true, used: 2 },
      { allowed: true, used: 3 },
      { allowed: false, used: 3 },
      { allowed: false, used: 3 },
    ])
    assert.equal(await quotas().get('agent-1:search', hour.windowStart), 3)
  })

  behaves(
    'counts a cost, refusing one that would cross the limit while a smaller one still fits',
    async () => {
      const consume = (cost: number) => quotas().consume('k', { limit: 10, cost, ...hour })
      assert.deepEqual(await consume(4), { allowed: true, used: 4 })
      assert.deepEqual(await consume(4), { allowed: true, used: 8 })
      assert.deepEqual(await consume(4), { allowed: false, used: 8 })
      assert.deepEqual(await consume(2), { allowed: true, used: 10 })
      assert.deepEqual(await consume(0), { allowed: true, used: 10 })
    },
  )

  behaves('refuses a first cost above the limit without creating the window', async () => {
    assert.deepEqual(await quotas().consume('k', { limit: 5, cost: 6, ...hour }), { allowed: false, used: 0 })
    assert.equal(await rows(), 0)
    assert.deepEqual(await quotas().consume('k', { limit: 5, cost: 5, ...hour }), { allowed: true, used: 5 })
  })

  behaves('counts each window from zero and keeps keys apart', async () => {
    await quotas().consume('a', { limit: 1, ...hour })
    assert.deepEqual(await quotas().consume('a', { limit: 1, ...hour }), { allowed: false, used: 1 })
    assert.deepEqual(await quotas().consume('a', { limit: 1, ...nextHour }), { allowed: true, used: 1 })
    assert.deepEqual(await quotas().consume('b', { limit: 1, ...hour }), { allowed: true, used: 1 })
    assert.equal(await quotas().get('a', hour.windowStart), 1)
    assert.equal(await quotas().get('a', nextHour.windowStart), 1)
    assert.equal(await quotas().get('c', hour.windowStart), 0)
  })

  behaves('adds usage whatever the limit, after which consumption is refused', async () => {
    assert.equal(await quotas().add('tokens', 7, hour), 7)
    assert.equal(await quotas().add('tokens', 5, hour), 12)
    assert.equal(await quotas().add('tokens', 0, hour), 12)
    assert.deepEqual(await quotas().consume('tokens', { limit: 10, ...hour }), { allowed: false, used: 12 })
    assert.equal(await quotas().add('tokens', 3, nextHour), 3)
    assert.equal(await quotas().get('tokens', hour.windowStart), 12)
  })

  behaves('never admits more than the limit to concurrent consumers on two instances', async () => {
    const other = await peer()
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        (i % 2 === 0 ? quotas() : other.quotas).consume('shared', { limit: 10, ...hour }),
      ),
    )
    assert.equal(results.filter((result) => result.allowed).length, 10)
    assert.deepEqual(
      results
        .filter((result) => result.allowed)
        .map((result) => result.used)
        .sort((a, b) => a - b),
      Array.from({ length: 10 }, (_, i) => i + 1),
    )
    assert.equal(await quotas().get('shared', hour.windowStart), 10)
  })

  behaves('adds concurrent usage from two instances without losing any', async () => {
    const other = await peer()
    await Promise.all(
      Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? quotas() : other.quotas).add('tokens', 3, hour)),
    )
    assert.equal(await quotas().get('tokens', hour.windowStart), 120)
  })

  behaves('keeps its counts when the store is closed and opened again', async () => {
    const first = await backend.open()
    await first.quotas.consume('durable', { limit: 5, cost: 4, ...hour })
    await first.close()
    const reopened = await backend.open()
    try {
      assert.deepEqual(await reopened.quotas.consume('durable', { limit: 5, cost: 2, ...hour }), {
        allowed: false,
        used: 4,
      })
    } finally {
      await reopened.close()
    }
  })

  behaves('prunes windows that ended at or before the given instant', async () => {
    await quotas().add('a', 1, hour)
    await quotas().add('b', 1, hour)
    await quotas().add('a', 1, nextHour)
    assert.equal(await quotas().prune(hour.windowEnd), 2)
    assert.equal(await quotas().prune(hour.windowEnd), 0)
    assert.equal(await quotas().get('a', hour.windowStart), 0)
    assert.equal(await quotas().get('a', nextHour.windowStart), 1)
  })

  behaves('rejects a negative or fractional limit, cost or amount, and an empty window', async () => {
    await assert.rejects(quotas().consume('k', { limit: -1, ...hour }), RangeError)
    await assert.rejects(quotas().consume('k', { limit: 10, cost: 1.5, ...hour }), RangeError)
    await assert.rejects(quotas().consume('k', { limit: 10, cost: -1, ...hour }), RangeError)
    await assert.rejects(quotas().consume('k', { limit: 10, windowStart: 5, windowEnd: 5 }), {
      name: 'RangeError',
      message: 'a quota window needs integer bounds with start < end, got 5..5',
    })
    await assert.rejects(quotas().add('k', -3, hour), RangeError)
    await assert.rejects(quotas().add('k', Number.NaN, hour), RangeError)
    assert.equal(await rows(), 0)
  })
})
