import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { closedPort } from '../../../../test/support/upstream.ts'
import { createMemoryState } from './memory-state.ts'
import { createRedisState } from './redis-state.ts'
import { SharedStateError } from './state-error.ts'
import { createSwitchableState } from './switchable-state.ts'

const tick = () => new Promise((r) => setTimeout(r, 10))

describe('a switchable shared state', () => {
  it('moves subscriptions to the new state and closes the old one', async () => {
    const first = createMemoryState()
    const second = createMemoryState()
    const state = createSwitchableState(first)
    const seen: string[] = []
    state.subscribe('identity', (m) => seen.push(m))
    await state.publish('identity', 'before')
    await tick()
    await state.switchTo(second)
    await state.publish('identity', 'after')
    await tick()
    assert.deepEqual(seen, ['before', 'after'])
    await assert.rejects(first.claimOnce('k', 1000), (err: unknown) => err instanceof SharedStateError)
    assert.equal(await state.claimOnce('k', 1000), true)
    assert.equal(await second.claimOnce('k', 1000), false, 'claims go to the current state')
    await state.close()
  })

  it('sends counters and quotas to the current state', async () => {
    const first = createMemoryState()
    const second = createMemoryState()
    const state = createSwitchableState(first)
    assert.equal(await state.increment('n', 10_000), 1)
    assert.deepEqual(await state.consumeQuota('q', { limit: 2, ttlMs: 10_000 }), { allowed: true, used: 1 })
    assert.equal(await state.addQuota('q', 3, 10_000), 4)
    assert.equal(await first.getQuota('q'), 4)
    await state.switchTo(second)
    assert.equal(await state.increment('n', 10_000), 1)
    assert.equal(await state.getQuota('q'), 0)
    assert.deepEqual(await state.consumeQuota('q', { limit: 2, cost: 2, ttlMs: 10_000 }), {
      allowed: true,
      used: 2,
    })
    assert.equal(await second.getQuota('q'), 2)
    await state.close()
  })

  it('stops delivering to an unsubscribed handler across a switch', async () => {
    const state = createSwitchableState(createMemoryState())
    const seen: string[] = []
    const off = state.subscribe('c', (m) => seen.push(m))
    off()
    await state.switchTo(createMemoryState())
    await state.publish('c', 'x')
    await tick()
    assert.deepEqual(seen, [])
    await state.close()
  })
})

describe('a Redis state that does not wait for its connection', () => {
  it('starts while Redis is unreachable, reports it down and refuses claims instead of hanging', async () => {
    const errors: unknown[] = []
    const state = await createRedisState({
      url: `redis://default:secret-pw@127.0.0.1:${await closedPort()}`,
      waitForConnection: false,
      onError: (err) => errors.push(err),
    })
    assert.equal(await state.ping(), false)
    await assert.rejects(
      state.claimOnce('k', 1000),
      (err: unknown) => err instanceof SharedStateError && err.code === 'state_unavailable',
    )
    for (let i = 0; i < 100 && errors.length === 0; i++) await tick()
    await state.close()
    assert.ok(errors.length > 0, 'connection errors are reported')
    assert.ok(!errors.some((e) => String((e as Error).message).includes('secret-pw')), 'never the password')
  })
})
