import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it, type TestContext } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { startRedisProxy } from '../../../../test/support/redis-proxy.ts'
import { requireService, serviceUrls } from '../../../../test/support/services.ts'
import { closedPort } from '../../../../test/support/upstream.ts'
import { createMemoryState } from './memory-state.ts'
import { openSharedState } from './open-state.ts'
import { createRedisState } from './redis-state.ts'
import { SharedStateError, type StateErrorReporter } from './state-error.ts'
import type { RateDecision, RateSpec, SharedState } from './types.ts'

const redisUrl = serviceUrls.redis
// Each run has its own prefixes, so parallel runs and other users of this Redis never meet.
const runPrefix = `runr_test_${randomBytes(6).toString('hex')}:`
const otherPrefix = `runr_test_${randomBytes(6).toString('hex')}:`

let redisCheck: Promise<boolean> | undefined
function redisAvailable(): Promise<boolean> {
  redisCheck ??= requireService('redis', redisUrl)
  return redisCheck
}

after(async () => {
  if (!(await redisCheck?.catch(() => false))) return
  const client = new Redis(redisUrl, { lazyConnect: true })
  await client.connect()
  for (const prefix of [runPrefix, otherPrefix]) {
    let cursor = '0'
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
      if (keys.length > 0) await client.del(...keys)
      cursor = next
    } while (cursor !== '0')
  }
  await client.quit()
})

interface Implementation {
  kind: 'memory' | 'redis'
  available(): Promise<boolean>
  open(options: { onError?: StateErrorReporter }): Promise<SharedState>
}

const implementations: Implementation[] = [
  { kind: 'memory', available: async () => true, open: async (options) => createMemoryState(options) },
  {
    kind: 'redis',
    available: redisAvailable,
    open: (options) => createRedisState({ url: redisUrl, prefix: runPrefix, ...options }),
  },
]

/** A fresh key or channel name, so tests sharing a prefix never see each other's. */
function unique(name: string): string {
  return `${name}-${randomBytes(4).toString('hex')}`
}

/** Subscribes and collects what arrives. */
function listen(state: SharedState, channel: string): { got: string[]; stop: () => void } {
  const got: string[] = []
  const stop = state.subscribe(channel, (message) => got.push(message))
  return { got, stop }
}

async function eventually(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 3000) {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`)
    await delay(10)
  }
}

function hasCode(code: SharedStateError['code']): (error: unknown) => boolean {
  return (error) => error instanceof SharedStateError && error.code === code
}

/** A rate check as a promise whatever the implementation answers (a value or a promise). */
async function rate(
  state: SharedState,
  bucket: string,
  subject: string,
  spec: RateSpec,
): Promise<RateDecision> {
  return state.rateLimit(bucket, subject, spec)
}

/** `count` rate checks one after the other; their decisions. */
async function checks(state: SharedState, bucket: string, spec: RateSpec, count: number) {
  const out: RateDecision[] = []
  for (let i = 0; i < count; i++) out.push(await rate(state, bucket, 'subject', spec))
  return out
}

for (const impl of implementations) {
  describe(`SharedState contract (${impl.kind})`, () => {
    let up = false
    before(async () => {
      up = await impl.available()
    })

    /** A state closed after the test, or undefined when the test was skipped. */
    async function open(
      t: TestContext,
      options: { onError?: StateErrorReporter } = {},
    ): Promise<SharedState | undefined> {
      if (!up) {
        t.skip(`${impl.kind} is not running`)
        return undefined
      }
      const state = await impl.open(options)
      t.after(() => state.close())
      return state
    }

    it('claims a key the first time and refuses it while it is remembered', async (t) => {
      const state = await open(t)
      if (!state) return
      assert.equal(state.kind, impl.kind)
      const key = unique('jti')
      assert.equal(await state.claimOnce(key, 10_000), true)
      assert.equal(await state.claimOnce(key, 10_000), false)
    })

    it('claims a key again once its ttl has passed', async (t) => {
      const state = await open(t)
      if (!state) return
      const key = unique('jti')
      assert.equal(await state.claimOnce(key, 50), true)
      await delay(120)
      assert.equal(await state.claimOnce(key, 50), true)
    })

    it('keeps different keys independent', async (t) => {
      const state = await open(t)
      if (!state) return
      const [a, b] = [unique('a'), unique('b')]
      assert.equal(await state.claimOnce(a, 10_000), true)
      assert.equal(await state.claimOnce(b, 10_000), true)
      assert.equal(await state.claimOnce(a, 10_000), false)
      assert.equal(await state.claimOnce(b, 10_000), false)
    })

    it('refuses a ttl that is not a positive number', async (t) => {
      const state = await open(t)
      if (!state) return
      for (const ttl of [0, -1, Number.NaN, Number.POSITIVE_INFINITY])
        await assert.rejects(state.claimOnce(unique('jti'), ttl), RangeError)
    })

    it('counts increments of a key within its window and starts again from 1 after it', async (t) => {
      const state = await open(t)
      if (!state) return
      const [key, other] = [unique('repeat'), unique('repeat')]
      assert.equal(await state.increment(key, 300), 1)
      assert.equal(await state.increment(key, 300), 2)
      assert.equal(await state.increment(other, 300), 1)
      assert.equal(await state.increment(key, 300), 3)
      await delay(350)
      assert.equal(await state.increment(key, 300), 1)
    })

    it('counts concurrent increments without losing any', async (t) => {
      const state = await open(t)
      if (!state) return
      const key = unique('repeat')
      const counts = await Promise.all(Array.from({ length: 50 }, () => state.increment(key, 10_000)))
      assert.deepEqual(
        counts.sort((a, b) => a - b),
        Array.from({ length: 50 }, (_, i) => i + 1),
      )
    })

    it('admits quota up to the limit and refuses beyond it without consuming', async (t) => {
      const state = await open(t)
      if (!state) return
      const key = unique('quota')
      const results = []
      for (let i = 0; i < 5; i++) results.push(await state.consumeQuota(key, { limit: 3, ttlMs: 10_000 }))
      assert.deepEqual(results, [
        { allowed: true, used: 1 },
        { allowed: true, used: 2 },
        { allowed: true, used: 3 },
        { allowed: false, used: 3 },
        { allowed: false, used: 3 },
      ])
      assert.equal(await state.getQuota(key), 3)
    })

    it('counts a quota cost, refusing one that would cross the limit while a smaller one still fits', async (t) => {
      const state = await open(t)
      if (!state) return
      const key = unique('quota')
      const consume = (cost: number) => state.consumeQuota(key, { limit: 10, cost, ttlMs: 10_000 })
      assert.deepEqual(await consume(4), { allowed: true, used: 4 })
      assert.deepEqual(await consume(4), { allowed: true, used: 8 })
      assert.deepEqual(await consume(4), { allowed: false, used: 8 })
      assert.deepEqual(await consume(2), { allowed: true, used: 10 })
      assert.deepEqual(await consume(0), { allowed: true, used: 10 })
      const fresh = unique('quota')
      assert.deepEqual(await state.consumeQuota(fresh, { limit: 5, cost: 6, ttlMs: 10_000 }), {
        allowed: false,
        used: 0,
      })
      assert.deepEqual(await state.consumeQuota(fresh, { limit: 5, cost: 0, ttlMs: 10_000 }), {
        allowed: true,
        used: 0,
      })
      assert.equal(await state.getQuota(fresh), 0)
    })

    it('admits exactly the limit among many concurrent quota consumers', async (t) => {
      const state = await open(t)
      if (!state) return
      const key = unique('quota')
      const results = await Promise.all(
        Array.from({ length: 50 }, () => state.consumeQuota(key, { limit: 10, ttlMs: 10_000 })),
      )
      assert.equal(results.filter((result) => result.allowed).length, 10)
      assert.equal(await state.getQuota(key), 10)
    })

    it('adds quota usage whatever the limit, after which consumption is refused', async (t) => {
      const state = await open(t)
      if (!state) return
      const key = unique('tokens')
      assert.equal(await state.getQuota(key), 0)
      assert.equal(await state.addQuota(key, 0, 10_000), 0)
      assert.equal(await state.addQuota(key, 7, 10_000), 7)
      assert.equal(await state.addQuota(key, 5, 10_000), 12)
      assert.equal(await state.addQuota(key, 0, 10_000), 12)
      assert.deepEqual(await state.consumeQuota(key, { limit: 10, ttlMs: 10_000 }), {
        allowed: false,
        used: 12,
      })
      assert.equal(await state.addQuota(key, 2 ** 40, 10_000), 2 ** 40 + 12)
    })

    it('forgets a quota counter once the ttl it was created with has passed, whatever came after', async (t) => {
      const state = await open(t)
      if (!state) return
      const key = unique('quota')
      assert.deepEqual(await state.consumeQuota(key, { limit: 2, ttlMs: 300 }), { allowed: true, used: 1 })
      await delay(50)
      // A later call with a longer ttl does not extend the window.
      assert.deepEqual(await state.consumeQuota(key, { limit: 2, ttlMs: 10_000 }), { allowed: true, used: 2 })
      await delay(300)
      assert.equal(await state.getQuota(key), 0)
      assert.deepEqual(await state.consumeQuota(key, { limit: 2, ttlMs: 10_000 }), { allowed: true, used: 1 })
    })

    it('keeps quota counters apart from increments under the same key', async (t) => {
      const state = await open(t)
      if (!state) return
      const key = unique('shared-name')
      assert.equal(await state.increment(key, 10_000), 1)
      assert.equal(await state.getQuota(key), 0)
      assert.deepEqual(await state.consumeQuota(key, { limit: 1, ttlMs: 10_000 }), { allowed: true, used: 1 })
      assert.equal(await state.increment(key, 10_000), 2)
    })

    it('refuses a counter window, ttl, limit, cost or amount out of range', async (t) => {
      const state = await open(t)
      if (!state) return
      const key = unique('bad')
      for (const ms of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
        await assert.rejects(state.increment(key, ms), RangeError)
        await assert.rejects(state.consumeQuota(key, { limit: 1, ttlMs: ms }), RangeError)
        await assert.rejects(state.addQuota(key, 1, ms), RangeError)
      }
      for (const count of [-1, 1.5, Number.NaN, 2 ** 53]) {
        await assert.rejects(state.consumeQuota(key, { limit: count, ttlMs: 1000 }), {
          name: 'RangeError',
          message: `limit must be a non-negative integer, got ${count}`,
        })
        await assert.rejects(state.consumeQuota(key, { limit: 10, cost: count, ttlMs: 1000 }), RangeError)
        await assert.rejects(state.addQuota(key, count, 1000), RangeError)
      }
      assert.equal(await state.getQuota(key), 0)
    })

    it('delivers a message to every subscriber, the publishing instance included', async (t) => {
      const state = await open(t)
      if (!state) return
      const channel = unique('revocations')
      const first = listen(state, channel)
      const second = listen(state, channel)
      await state.publish(channel, 'token-1')
      await eventually(() => first.got.length === 1 && second.got.length === 1, 'both subscribers have it')
      assert.deepEqual(first.got, ['token-1'])
      assert.deepEqual(second.got, ['token-1'])
    })

    it('delivers messages in the order they were published', async (t) => {
      const state = await open(t)
      if (!state) return
      const channel = unique('ordered')
      const { got } = listen(state, channel)
      for (const n of [1, 2, 3, 4, 5]) await state.publish(channel, String(n))
      await eventually(() => got.length === 5, 'all five arrived')
      assert.deepEqual(got, ['1', '2', '3', '4', '5'])
    })

    it('does not deliver what was published before subscribing', async (t) => {
      const state = await open(t)
      if (!state) return
      const channel = unique('late')
      await state.publish(channel, 'early')
      const { got } = listen(state, channel)
      await state.publish(channel, 'late')
      await eventually(() => got.length > 0, 'the late message arrived')
      assert.deepEqual(got, ['late'])
    })

    it('stops delivering to a subscriber once it unsubscribes', async (t) => {
      const state = await open(t)
      if (!state) return
      const channel = unique('revocations')
      const leaving = listen(state, channel)
      const staying = listen(state, channel)
      leaving.stop()
      leaving.stop()
      await state.publish(channel, 'after')
      await eventually(() => staying.got.length === 1, 'the remaining subscriber has it')
      assert.deepEqual(leaving.got, [])
    })

    it('stops delivering on a channel whose last subscriber left, and resumes on a new subscription', async (t) => {
      const state = await open(t)
      if (!state) return
      const channel = unique('revocations')
      const gone = listen(state, channel)
      gone.stop()
      await state.publish(channel, 'nobody')
      const back = listen(state, channel)
      await state.publish(channel, 'again')
      await eventually(() => back.got.length === 1, 'the new subscriber has it')
      assert.deepEqual(back.got, ['again'])
      assert.deepEqual(gone.got, [])
    })

    it('does not deliver messages published on other channels', async (t) => {
      const state = await open(t)
      if (!state) return
      const [mine, theirs] = [unique('mine'), unique('theirs')]
      const { got } = listen(state, mine)
      await state.publish(theirs, 'not for me')
      await state.publish(mine, 'for me')
      await eventually(() => got.length > 0, 'the message on my channel arrived')
      assert.deepEqual(got, ['for me'])
    })

    it('keeps delivering to other subscribers when one throws, and reports what it threw', async (t) => {
      const reported: Array<{ error: unknown; source: string }> = []
      const state = await open(t, { onError: (error, source) => reported.push({ error, source }) })
      if (!state) return
      const channel = unique('revocations')
      const before = listen(state, channel)
      const boom = new Error('subscriber bug')
      state.subscribe(channel, () => {
        throw boom
      })
      const after = listen(state, channel)
      await state.publish(channel, 'one')
      await state.publish(channel, 'two')
      await eventually(() => after.got.length === 2, 'the later subscriber has both')
      assert.deepEqual(before.got, ['one', 'two'])
      assert.deepEqual(reported, [
        { error: boom, source: 'subscriber' },
        { error: boom, source: 'subscriber' },
      ])
    })

    it('answers ping while open, closes idempotently, and refuses work once closed', async (t) => {
      const state = await open(t)
      if (!state) return
      assert.equal(await state.ping(), true)
      await Promise.all([state.close(), state.close()])
      await state.close()
      assert.equal(await state.ping(), false)
      await assert.rejects(state.claimOnce(unique('jti'), 1000), hasCode('state_closed'))
      await assert.rejects(state.increment(unique('n'), 1000), hasCode('state_closed'))
      await assert.rejects(
        state.consumeQuota(unique('q'), { limit: 1, ttlMs: 1000 }),
        hasCode('state_closed'),
      )
      await assert.rejects(state.addQuota(unique('q'), 1, 1000), hasCode('state_closed'))
      await assert.rejects(state.getQuota(unique('q')), hasCode('state_closed'))
      await assert.rejects(state.publish(unique('c'), 'm'), hasCode('state_closed'))
      assert.throws(() => state.subscribe(unique('c'), () => {}), hasCode('state_closed'))
      await assert.rejects(
        rate(state, unique('b'), 's', { emissionMs: 100, windowMs: 100 }),
        hasCode('state_closed'),
      )
      await assert.rejects(state.cacheGet(unique('k')), hasCode('state_closed'))
      await assert.rejects(state.cacheSet(unique('k'), Buffer.from('x'), 1000), hasCode('state_closed'))
    })

    it('admits a burst of exactly its size, counting down what remains, then refuses until the next slot', async (t) => {
      const state = await open(t)
      if (!state) return
      // 5 at once, then one every 10 s: the test's own latency cannot free a slot.
      const spec = { emissionMs: 10_000, windowMs: 50_000 }
      const decisions = await checks(state, unique('burst'), spec, 7)
      assert.deepEqual(
        decisions.map((d) => [d.allowed, d.remaining]),
        [
          [true, 4],
          [true, 3],
          [true, 2],
          [true, 1],
          [true, 0],
          [false, 0],
          [false, 0],
        ],
      )
      const first = decisions[0]!
      assert.ok(first.resetMs > 9_000 && first.resetMs <= 10_000, `reset ${first.resetMs}`)
      const refused = decisions[5]!
      assert.ok(
        refused.retryAfterMs > 9_000 && refused.retryAfterMs <= 10_000,
        `retry ${refused.retryAfterMs}`,
      )
      assert.ok(refused.resetMs > 49_000 && refused.resetMs <= 50_000, `reset ${refused.resetMs}`)
      assert.equal(first.retryAfterMs, 0)
    })

    it('admits the steady rate: one more request each emission interval once the burst is spent', async (t) => {
      const state = await open(t)
      if (!state) return
      const spec = { emissionMs: 60, windowMs: 60 }
      const bucket = unique('steady')
      assert.equal((await rate(state, bucket, 's', spec)).allowed, true)
      const refused = await rate(state, bucket, 's', spec)
      assert.equal(refused.allowed, false)
      await delay(refused.retryAfterMs + 15)
      assert.equal((await rate(state, bucket, 's', spec)).allowed, true)
      assert.equal((await rate(state, bucket, 's', spec)).allowed, false)
    })

    it('is back to a full burst once the reset time has passed', async (t) => {
      const state = await open(t)
      if (!state) return
      const spec = { emissionMs: 30, windowMs: 90 }
      const bucket = unique('reset')
      const spent = await checks(state, bucket, spec, 4)
      assert.deepEqual(
        spent.map((d) => d.allowed),
        [true, true, true, false],
      )
      await delay(spent[2]!.resetMs + 15)
      const again = await checks(state, bucket, spec, 4)
      assert.deepEqual(
        again.map((d) => [d.allowed, d.remaining]),
        [
          [true, 2],
          [true, 1],
          [true, 0],
          [false, 0],
        ],
      )
    })

    it('fits a burst whose emission interval is not a whole number of milliseconds', async (t) => {
      const state = await open(t)
      if (!state) return
      // 3 per 1000 s: 333,333.33… ms apart; three of them must still fit the window.
      const spec = { emissionMs: 1_000_000 / 3, windowMs: 1_000_000 }
      const decisions = await checks(state, unique('thirds'), spec, 4)
      assert.deepEqual(
        decisions.map((d) => d.allowed),
        [true, true, true, false],
      )
    })

    it('admits a limit far above any load (a billion a second) with its burst left', async (t) => {
      const state = await open(t)
      if (!state) return
      const spec = { emissionMs: 1e-6, windowMs: 1000 }
      const bucket = unique('huge')
      for (let i = 0; i < 3; i++) {
        const decision = await rate(state, bucket, 's', spec)
        assert.equal(decision.allowed, true)
        assert.ok(decision.remaining > 999_000_000, `remaining ${decision.remaining}`)
      }
    })

    it('keeps limits and subjects apart', async (t) => {
      const state = await open(t)
      if (!state) return
      const spec = { emissionMs: 10_000, windowMs: 10_000 }
      const [a, b] = [unique('a'), unique('b')]
      assert.equal((await rate(state, a, 'x', spec)).allowed, true)
      assert.equal((await rate(state, a, 'x', spec)).allowed, false)
      assert.equal((await rate(state, a, 'y', spec)).allowed, true)
      assert.equal((await rate(state, b, 'x', spec)).allowed, true)
      assert.equal((await rate(state, a, '', spec)).allowed, true)
    })

    it('admits exactly the burst among many concurrent checks', async (t) => {
      const state = await open(t)
      if (!state) return
      const bucket = unique('concurrent')
      const spec = { emissionMs: 10_000, windowMs: 100_000 }
      const decisions = await Promise.all(Array.from({ length: 50 }, () => rate(state, bucket, 's', spec)))
      assert.equal(decisions.filter((d) => d.allowed).length, 10)
    })

    it('caches bytes for their ttl, binary intact, and forgets them after', async (t) => {
      const state = await open(t)
      if (!state) return
      const key = unique('entry')
      const bytes = Buffer.from([0, 1, 2, 255, 10, 13, 0xe2, 0x82])
      assert.equal(await state.cacheGet(key), undefined)
      await state.cacheSet(key, bytes, 80)
      assert.deepEqual(await state.cacheGet(key), bytes)
      await state.cacheSet(key, Buffer.from('newer'), 80)
      assert.equal((await state.cacheGet(key))?.toString(), 'newer')
      await delay(150)
      assert.equal(await state.cacheGet(key), undefined)
      await assert.rejects(state.cacheSet(key, bytes, 0), RangeError)
    })
  })
}

describe('SharedState in memory', () => {
  it('answers a rate check synchronously: no promise on the request path', () => {
    const state = createMemoryState()
    const decision = state.rateLimit('b', 's', { emissionMs: 1000, windowMs: 1000 })
    assert.ok(!(decision instanceof Promise))
    assert.equal((decision as RateDecision).allowed, true)
    void state.close()
  })

  it('follows GCRA on a fake clock: burst, steady rate, and reset', () => {
    let now = 5_000_000
    const state = createMemoryState({ now: () => now })
    const spec = { emissionMs: 100, windowMs: 300 }
    const check = () => state.rateLimit('b', 's', spec) as RateDecision
    assert.deepEqual(check(), { allowed: true, remaining: 2, resetMs: 100, retryAfterMs: 0 })
    assert.deepEqual(check(), { allowed: true, remaining: 1, resetMs: 200, retryAfterMs: 0 })
    assert.deepEqual(check(), { allowed: true, remaining: 0, resetMs: 300, retryAfterMs: 0 })
    assert.deepEqual(check(), { allowed: false, remaining: 0, resetMs: 300, retryAfterMs: 100 })
    now += 40
    assert.deepEqual(check(), { allowed: false, remaining: 0, resetMs: 260, retryAfterMs: 60 })
    now += 60
    assert.deepEqual(check(), { allowed: true, remaining: 0, resetMs: 300, retryAfterMs: 0 })
    now += 300
    assert.deepEqual(check(), { allowed: true, remaining: 2, resetMs: 100, retryAfterMs: 0 })
    void state.close()
  })

  it('refuses a new rate-limit subject when full rather than forgetting a live one, and makes room as they reset', () => {
    let now = 1_000_000
    const state = createMemoryState({ maxRateSubjects: 2, now: () => now })
    const spec = { emissionMs: 1000, windowMs: 1000 }
    state.rateLimit('b', 'one', spec)
    state.rateLimit('b', 'two', spec)
    assert.throws(() => state.rateLimit('b', 'three', spec), hasCode('state_full'))
    assert.equal((state.rateLimit('b', 'one', spec) as RateDecision).allowed, false, 'live subjects are kept')
    now += 2000
    assert.equal((state.rateLimit('b', 'three', spec) as RateDecision).allowed, true)
    void state.close()
  })

  it('evicts the least recently used cache entries past its entry and byte bounds', async () => {
    const state = createMemoryState({ maxCacheEntries: 2 })
    await state.cacheSet('a', Buffer.from('1'), 10_000)
    await state.cacheSet('b', Buffer.from('2'), 10_000)
    await state.cacheGet('a')
    await state.cacheSet('c', Buffer.from('3'), 10_000)
    assert.equal(await state.cacheGet('b'), undefined)
    assert.equal((await state.cacheGet('a'))?.toString(), '1')
    await state.close()

    const small = createMemoryState({ maxCacheBytes: 1000 })
    await small.cacheSet('x', Buffer.alloc(400), 10_000)
    await small.cacheSet('y', Buffer.alloc(400), 10_000)
    await small.cacheSet('z', Buffer.alloc(400), 10_000)
    assert.equal(await small.cacheGet('x'), undefined, 'the oldest went to make room')
    assert.equal((await small.cacheGet('z'))?.length, 400)
    await small.cacheSet('huge', Buffer.alloc(5000), 10_000)
    assert.equal(await small.cacheGet('huge'), undefined, 'an entry above the bound is not kept')
    await small.close()
  })

  it('refuses new claims when full rather than forgetting live ones, and makes room as they expire', async () => {
    let now = 1_000_000
    const state = createMemoryState({ maxClaims: 2, now: () => now })
    try {
      assert.equal(await state.claimOnce('a', 1000), true)
      assert.equal(await state.claimOnce('b', 5000), true)
      await assert.rejects(state.claimOnce('c', 1000), hasCode('state_full'))
      // Still remembered: a full table must not turn a replay into a first use.
      assert.equal(await state.claimOnce('a', 1000), false)
      assert.equal(await state.claimOnce('b', 1000), false)
      now += 1500
      assert.equal(await state.claimOnce('c', 1000), true)
      assert.equal(await state.claimOnce('b', 1000), false)
      await assert.rejects(state.claimOnce('d', 1000), hasCode('state_full'))
    } finally {
      await state.close()
    }
  })

  it('sweeps a full table at most once a second, so holding it full cannot cost a sweep per request', async () => {
    let now = 0
    const state = createMemoryState({ maxClaims: 1, now: () => now })
    try {
      assert.equal(await state.claimOnce('a', 10), true)
      now = 20
      assert.equal(await state.claimOnce('b', 10), true)
      now = 40
      // b has expired, but the last full sweep was 20 ms ago.
      await assert.rejects(state.claimOnce('c', 10), hasCode('state_full'))
      now = 1020
      assert.equal(await state.claimOnce('c', 10), true)
    } finally {
      await state.close()
    }
  })

  it('refuses new counters when full rather than forgetting live ones, and makes room as they expire', async () => {
    let now = 1_000_000
    const state = createMemoryState({ maxCounters: 2, now: () => now })
    try {
      assert.equal(await state.increment('a', 1000), 1)
      assert.deepEqual(await state.consumeQuota('b', { limit: 5, ttlMs: 5000 }), { allowed: true, used: 1 })
      await assert.rejects(state.increment('c', 1000), hasCode('state_full'))
      await assert.rejects(state.consumeQuota('c', { limit: 5, ttlMs: 1000 }), hasCode('state_full'))
      await assert.rejects(state.addQuota('c', 1, 1000), hasCode('state_full'))
      // Live counters go on counting: a full table must not let a quota start over.
      assert.equal(await state.increment('a', 1000), 2)
      assert.deepEqual(await state.consumeQuota('b', { limit: 5, ttlMs: 5000 }), { allowed: true, used: 2 })
      now += 1500
      assert.equal(await state.addQuota('c', 3, 1000), 3)
      assert.equal(await state.getQuota('b'), 2)
      await assert.rejects(state.increment('d', 1000), hasCode('state_full'))
    } finally {
      await state.close()
    }
  })

  it('keeps claims and counters in separate bounds', async () => {
    const state = createMemoryState({ maxClaims: 1, maxCounters: 1 })
    try {
      assert.equal(await state.claimOnce('a', 1000), true)
      assert.equal(await state.increment('a', 1000), 1)
      await assert.rejects(state.claimOnce('b', 1000), hasCode('state_full'))
      await assert.rejects(state.increment('b', 1000), hasCode('state_full'))
    } finally {
      await state.close()
    }
  })

  it('reuses the slot of an expired claim for the same key even when full', async () => {
    let now = 0
    const state = createMemoryState({ maxClaims: 1, now: () => now })
    try {
      assert.equal(await state.claimOnce('a', 100), true)
      now += 200
      assert.equal(await state.claimOnce('a', 100), true)
      assert.equal(await state.claimOnce('a', 100), false)
    } finally {
      await state.close()
    }
  })
})

describe('SharedState in Redis', () => {
  let up = false
  before(async () => {
    up = await redisAvailable()
  })

  /** A Redis state closed after the test, or undefined when Redis is not running. */
  async function open(
    t: TestContext,
    options: { prefix?: string; url?: string; onError?: StateErrorReporter } = {},
  ): Promise<SharedState | undefined> {
    if (!up) {
      t.skip('redis is not running')
      return undefined
    }
    const state = await createRedisState({ url: redisUrl, prefix: runPrefix, ...options })
    t.after(() => state.close())
    return state
  }

  it('lets two instances with the same prefix see each other’s claims and messages', async (t) => {
    const a = await open(t)
    const b = await open(t)
    if (!a || !b) return
    const key = unique('jti')
    assert.equal(await a.claimOnce(key, 10_000), true)
    assert.equal(await b.claimOnce(key, 10_000), false)

    const channel = unique('revocations')
    const onA = listen(a, channel)
    const onB = listen(b, channel)
    // b's own publish waits for b's subscription, so after this b is surely subscribed.
    await b.publish(channel, 'from b')
    await a.publish(channel, 'from a')
    await eventually(() => onA.got.length === 2 && onB.got.length === 2, 'both instances have both')
    assert.deepEqual(onB.got, ['from b', 'from a'])
    assert.deepEqual(new Set(onA.got), new Set(['from a', 'from b']))
  })

  it('keeps instances with different prefixes apart', async (t) => {
    const a = await open(t)
    const other = await open(t, { prefix: otherPrefix })
    if (!a || !other) return
    const key = unique('jti')
    assert.equal(await a.claimOnce(key, 10_000), true)
    assert.equal(await other.claimOnce(key, 10_000), true)

    const channel = unique('revocations')
    const { got } = listen(other, channel)
    await other.publish(channel, 'warm-up')
    await a.publish(channel, 'other cluster')
    // Redis answers a PUBLISH after queueing the message to subscribers, so anything a's message
    // could have caused has arrived before this one.
    await other.publish(channel, 'own cluster')
    await eventually(() => got.length === 2, 'both own messages arrived')
    assert.deepEqual(got, ['warm-up', 'own cluster'])
  })

  it('puts every key under its prefix, with the ttl as the expiry', async (t) => {
    const state = await open(t)
    if (!state) return
    const key = unique('jti')
    await state.claimOnce(key, 10_000)
    const client = new Redis(redisUrl, { lazyConnect: true })
    await client.connect()
    t.after(() => client.quit())
    const ttl = await client.pttl(`${runPrefix}claim:${key}`)
    assert.ok(ttl > 9000 && ttl <= 10_000, `pttl ${ttl}`)
    assert.equal(await client.exists(key), 0)
  })

  it('defaults the prefix to runr:', async (t) => {
    const state = await open(t, { prefix: undefined })
    if (!state) return
    const key = unique('runr_test_default_prefix')
    await state.claimOnce(key, 1000)
    const client = new Redis(redisUrl, { lazyConnect: true })
    await client.connect()
    t.after(() => client.quit())
    assert.equal(await client.del(`runr:claim:${key}`), 1)
  })

  it('shares quota counters and increments between two instances with the same prefix, never over-admitting', async (t) => {
    const a = await open(t)
    const b = await open(t)
    if (!a || !b) return
    const key = unique('quota')
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        (i % 2 === 0 ? a : b).consumeQuota(key, { limit: 10, ttlMs: 10_000 }),
      ),
    )
    assert.equal(results.filter((result) => result.allowed).length, 10)
    assert.deepEqual(
      results
        .filter((result) => result.allowed)
        .map((result) => result.used)
        .sort((x, y) => x - y),
      Array.from({ length: 10 }, (_, i) => i + 1),
    )
    assert.equal(await b.addQuota(key, 5, 10_000), 15)
    assert.equal(await a.getQuota(key), 15)

    const repeat = unique('repeat')
    const counts = await Promise.all(
      Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b).increment(repeat, 10_000)),
    )
    assert.equal(Math.max(...counts), 20)
  })

  it('shares rate limits between two instances: a burst across both admits exactly its size', async (t) => {
    const a = await open(t)
    const b = await open(t)
    if (!a || !b) return
    const bucket = unique('cluster')
    const spec = { emissionMs: 10_000, windowMs: 80_000 }
    const decisions = await Promise.all(
      Array.from({ length: 40 }, (_, i) => rate(i % 2 === 0 ? a : b, bucket, 'agent-1', spec)),
    )
    assert.equal(decisions.filter((d) => d.allowed).length, 8)
  })

  it('puts rate-limit and cache keys under the prefix, expiring when the limit resets or the entry ends', async (t) => {
    const state = await open(t)
    if (!state) return
    const client = new Redis(redisUrl, { lazyConnect: true })
    await client.connect()
    t.after(() => client.quit())
    const bucket = unique('rl')
    await rate(state, bucket, 'agent-1', { emissionMs: 5000, windowMs: 20_000 })
    await rate(state, bucket, 'agent-1', { emissionMs: 5000, windowMs: 20_000 })
    const ttl = await client.pttl(`${runPrefix}rate:${bucket}:agent-1`)
    assert.ok(ttl > 9000 && ttl <= 10_000, `pttl ${ttl}`)
    const key = unique('entry')
    await state.cacheSet(key, Buffer.from('v'), 30_000)
    const cacheTtl = await client.pttl(`${runPrefix}cache:${key}`)
    assert.ok(cacheTtl > 29_000 && cacheTtl <= 30_000, `pttl ${cacheTtl}`)
  })

  it('keeps quota counters of instances with different prefixes apart', async (t) => {
    const a = await open(t)
    const other = await open(t, { prefix: otherPrefix })
    if (!a || !other) return
    const key = unique('quota')
    assert.deepEqual(await a.consumeQuota(key, { limit: 1, ttlMs: 10_000 }), { allowed: true, used: 1 })
    assert.deepEqual(await other.consumeQuota(key, { limit: 1, ttlMs: 10_000 }), { allowed: true, used: 1 })
    assert.equal(await a.increment(key, 10_000), 1)
    assert.equal(await other.increment(key, 10_000), 1)
  })

  it('puts counters under the prefix, expiring with the window or ttl of the call that made them', async (t) => {
    const state = await open(t)
    if (!state) return
    const client = new Redis(redisUrl, { lazyConnect: true })
    await client.connect()
    t.after(() => client.quit())
    const [counted, consumed, added] = [unique('repeat'), unique('quota'), unique('tokens')]
    await state.increment(counted, 10_000)
    await state.increment(counted, 60_000)
    await state.consumeQuota(consumed, { limit: 5, ttlMs: 20_000 })
    await state.addQuota(added, 3, 30_000)
    const ttls = await Promise.all([
      client.pttl(`${runPrefix}count:${counted}`),
      client.pttl(`${runPrefix}quota:${consumed}`),
      client.pttl(`${runPrefix}quota:${added}`),
    ])
    for (const [ttl, max] of [
      [ttls[0]!, 10_000],
      [ttls[1]!, 20_000],
      [ttls[2]!, 30_000],
    ] as const)
      assert.ok(ttl > max - 1000 && ttl <= max, `pttl ${ttl} for ${max}`)
    assert.equal(await client.get(`${runPrefix}quota:${added}`), '3')
  })

  it('runs its counter scripts again after Redis forgets them', async (t) => {
    const state = await open(t)
    if (!state) return
    const key = unique('quota')
    assert.deepEqual(await state.consumeQuota(key, { limit: 5, ttlMs: 10_000 }), { allowed: true, used: 1 })
    const client = new Redis(redisUrl, { lazyConnect: true })
    await client.connect()
    t.after(() => client.quit())
    // What a Redis restart or failover does to the script cache.
    await client.script('FLUSH')
    assert.equal((await rate(state, key, 's', { emissionMs: 100, windowMs: 100 })).allowed, true)
    assert.deepEqual(await state.consumeQuota(key, { limit: 5, ttlMs: 10_000 }), { allowed: true, used: 2 })
    assert.equal(await state.increment(key, 10_000), 1)
    assert.equal(await state.addQuota(key, 1, 10_000), 3)
  })

  it('refuses to start when Redis is unreachable, naming host and port but never the password', async (t) => {
    if (!up) return t.skip('redis is not running')
    const port = await closedPort()
    const started = Date.now()
    await assert.rejects(
      createRedisState({ url: `redis://gateway:s3cret-pa55@127.0.0.1:${port}/0` }),
      (error: unknown) => {
        assert.ok(error instanceof SharedStateError)
        assert.equal(error.code, 'state_unavailable')
        assert.match(error.message, new RegExp(`127\\.0\\.0\\.1:${port}`))
        assert.doesNotMatch(error.message, /s3cret/)
        assert.doesNotMatch(JSON.stringify(error), /s3cret/)
        return true
      },
    )
    assert.ok(Date.now() - started < 3000)
  })

  it('refuses to start within a few seconds when Redis accepts connections but never answers', async (t) => {
    if (!up) return t.skip('redis is not running')
    const proxy = await startRedisProxy(t, redisUrl)
    proxy.stall()
    const started = Date.now()
    await assert.rejects(createRedisState({ url: proxy.url }), hasCode('state_unavailable'))
    assert.ok(Date.now() - started < 6000)
  })

  it('rejects a claim within the command timeout, rather than hanging, when Redis stops answering', async (t) => {
    const proxy = up ? await startRedisProxy(t, redisUrl) : undefined
    const state = await open(t, { url: proxy?.url })
    if (!state || !proxy) return
    assert.equal(await state.claimOnce(unique('jti'), 1000), true)
    proxy.stall()
    const started = Date.now()
    await assert.rejects(state.claimOnce(unique('jti'), 1000), hasCode('state_unavailable'))
    const waited = Date.now() - started
    assert.ok(waited >= 1500 && waited < 3000, `waited ${waited} ms`)
    assert.equal(await state.ping(), false)
    // Drop the stalled connections now so that close does not wait for a quit that cannot finish.
    await proxy.cut()
  })

  it('rejects claims at once when Redis goes away, and recovers with its subscriptions when it returns', async (t) => {
    const reported: Array<{ error: unknown; source: string }> = []
    const proxy = up ? await startRedisProxy(t, redisUrl) : undefined
    const state = await open(t, {
      url: proxy?.url,
      onError: (error, source) => reported.push({ error, source }),
    })
    const direct = await open(t)
    if (!state || !proxy || !direct) return
    const channel = unique('revocations')
    const { got } = listen(state, channel)
    await state.publish(channel, 'before')
    await eventually(() => got.length === 1, 'the first message arrived')

    await proxy.cut()
    const started = Date.now()
    await assert.rejects(state.claimOnce(unique('jti'), 1000), hasCode('state_unavailable'))
    await assert.rejects(state.publish(channel, 'while away'), hasCode('state_unavailable'))
    await assert.rejects(state.increment(unique('n'), 1000), hasCode('state_unavailable'))
    await assert.rejects(
      state.consumeQuota(unique('q'), { limit: 1, ttlMs: 1000 }),
      hasCode('state_unavailable'),
    )
    await assert.rejects(state.addQuota(unique('q'), 1, 1000), hasCode('state_unavailable'))
    await assert.rejects(state.getQuota(unique('q')), hasCode('state_unavailable'))
    await assert.rejects(
      rate(state, unique('b'), 's', { emissionMs: 100, windowMs: 100 }),
      hasCode('state_unavailable'),
    )
    await assert.rejects(state.cacheGet(unique('k')), hasCode('state_unavailable'))
    await assert.rejects(state.cacheSet(unique('k'), Buffer.from('x'), 1000), hasCode('state_unavailable'))
    assert.ok(Date.now() - started < 1000)
    assert.equal(await state.ping(), false)
    await eventually(() => reported.some((r) => r.source === 'connection'), 'a connection error was reported')

    await proxy.restore()
    await eventually(() => state.ping(), 'the state answers ping again', 10_000)
    assert.equal(await state.claimOnce(unique('jti'), 1000), true)
    assert.deepEqual(await state.consumeQuota(unique('q'), { limit: 1, ttlMs: 1000 }), {
      allowed: true,
      used: 1,
    })
    assert.equal((await rate(state, unique('b'), 's', { emissionMs: 100, windowMs: 100 })).allowed, true)
    // ioredis subscribes again after the reconnect, but ping does not wait for that: publish
    // (from another instance) until a message gets through.
    let n = 0
    await eventually(
      async () => {
        await direct.publish(channel, `after ${++n}`)
        return got.length > 1
      },
      'a message published after the reconnect arrived',
      10_000,
    )
    assert.match(got[1] ?? '', /^after \d+$/)
  })
})

describe('openSharedState', () => {
  it('opens memory state when no Redis is configured', async () => {
    const state = await openSharedState(undefined)
    assert.equal(state.kind, 'memory')
    await state.close()
  })

  it('opens Redis state under the configured prefix when Redis is configured', async (t) => {
    if (!(await redisAvailable())) return t.skip('redis is not running')
    const state = await openSharedState({ url: redisUrl, prefix: runPrefix })
    t.after(() => state.close())
    assert.equal(state.kind, 'redis')
    const key = unique('jti')
    const peer = await createRedisState({ url: redisUrl, prefix: runPrefix })
    t.after(() => peer.close())
    assert.equal(await state.claimOnce(key, 10_000), true)
    assert.equal(await peer.claimOnce(key, 10_000), false)
  })
})
