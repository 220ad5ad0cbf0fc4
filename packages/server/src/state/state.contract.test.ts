import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { connect, createServer, type Socket } from 'node:net'
import { after, before, describe, it, type TestContext } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { requireService, serviceUrls } from '../../../../test/support/services.ts'
import { closedPort } from '../../../../test/support/upstream.ts'
import { createMemoryState } from './memory-state.ts'
import { openSharedState } from './open-state.ts'
import { createRedisState } from './redis-state.ts'
import { SharedStateError, type StateErrorReporter } from './state-error.ts'
import type { SharedState } from './types.ts'

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
    })
  })
}

describe('SharedState in memory', () => {
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

/** A TCP proxy in front of Redis that a test can stall, cut and restore. */
interface RedisProxy {
  readonly url: string
  /** Keep connections open but drop every reply, as a hung Redis would. */
  stall(): void
  /** Drop every connection and refuse new ones, as a Redis that went away. */
  cut(): Promise<void>
  /** Accept connections again on the same port. */
  restore(): Promise<void>
}

async function startRedisProxy(t: TestContext, target: string): Promise<RedisProxy> {
  const parsed = new URL(target)
  const host = parsed.hostname.replace(/^\[|\]$/g, '')
  const port = Number(parsed.port || 6379)
  const sockets = new Set<Socket>()
  let stalled = false
  const server = createServer((client) => {
    const upstream = connect(port, host)
    for (const socket of [client, upstream]) {
      sockets.add(socket)
      socket.on('error', () => {})
      socket.on('close', () => {
        sockets.delete(socket)
        client.destroy()
        upstream.destroy()
      })
    }
    client.pipe(upstream)
    upstream.on('data', (chunk: Buffer) => {
      if (!stalled) client.write(chunk)
    })
  })
  const listen = (at: number): Promise<void> => new Promise((done) => server.listen(at, '127.0.0.1', done))
  await listen(0)
  const proxyPort = (server.address() as { port: number }).port
  const cut = async (): Promise<void> => {
    const closed = new Promise((done) => server.close(done))
    for (const socket of sockets) socket.destroy()
    await closed
  }
  t.after(() => (server.listening ? cut() : undefined))
  const url = new URL(target)
  url.host = `127.0.0.1:${proxyPort}`
  return {
    url: url.toString(),
    stall: () => {
      stalled = true
    },
    cut,
    restore: () => listen(proxyPort),
  }
}

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
