import assert from 'node:assert/strict'
import type { IncomingMessage } from 'node:http'
import { describe, it } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import { Registry } from 'prom-client'
import { compileConfig } from '../config/compile.ts'
import { ConfigError, parseConfigText } from '../config/load.ts'
import { createLogger } from '../observability/logger.ts'
import { createMemoryState } from '../state/memory-state.ts'
import { createCacheMetrics } from './cache-metrics.ts'
import { toolCachePolicy } from './compile-cache.ts'
import { cacheDirectives, createResponseCache } from './response-cache.ts'

function setup(options: { closed?: boolean; maxEntryBytes?: number } = {}) {
  let now = 5_000_000
  const state = createMemoryState({ now: () => now })
  if (options.closed) void state.close()
  const lines: Array<Record<string, unknown>> = []
  const cache = createResponseCache({
    state,
    logger: createLogger('warn', { write: (line: string) => void lines.push(JSON.parse(line)) }),
    metrics: createCacheMetrics(new Registry()),
    maxEntryBytes: () => options.maxEntryBytes ?? 1024,
    now: () => now,
  })
  return {
    cache,
    lines,
    state,
    advance: (ms: number) => {
      now += ms
    },
    at: () => now,
  }
}

const policy = { ttlMs: 1000, staleMs: 5000, shared: false }
const answer = (body: string, storedAt: number) => ({
  status: 200,
  headers: { 'content-type': 'application/json' },
  body: Buffer.from(body),
  storedAt,
})

/** Stores run in the background; a tick lets them land. */
const settle = () => delay(5)

describe('the response cache', () => {
  it('keys by target, canonical arguments and partition', () => {
    const { cache } = setup()
    const key = cache.keyOf('tool\nserpapi\nsearch', 'agent-1', { q: 'a', num: 2 })
    assert.equal(key, cache.keyOf('tool\nserpapi\nsearch', 'agent-1', { num: 2, q: 'a' }))
    assert.notEqual(key, cache.keyOf('tool\nserpapi\nsearch', 'agent-2', { q: 'a', num: 2 }))
    assert.notEqual(key, cache.keyOf('tool\nserpapi\nsearch', 'agent-1', { q: 'b', num: 2 }))
    assert.notEqual(key, cache.keyOf('tool\nopenai\nembeddings', 'agent-1', { q: 'a', num: 2 }))
    assert.match(key, /^[A-Za-z0-9_-]{43}$/, 'a hash, which never shows the arguments')
  })

  it('answers an entry fresh within its ttl, stale after it within the stale window, then nothing', async () => {
    const { cache, advance, at } = setup()
    cache.store('k', answer('{"a":1}', at()), policy)
    await settle()
    const fresh = await cache.lookup('k')
    assert.equal(fresh.fresh?.body.toString(), '{"a":1}')
    assert.deepEqual(fresh.fresh?.headers, { 'content-type': 'application/json' })
    advance(1500)
    const stale = await cache.lookup('k')
    assert.equal(stale.fresh, undefined)
    assert.equal(stale.stale?.body.toString(), '{"a":1}')
    advance(5000)
    assert.deepEqual(await cache.lookup('k'), { key: 'k', fresh: undefined, stale: undefined })
  })

  it('keeps nothing larger than maxEntryBytes', async () => {
    const { cache, at } = setup({ maxEntryBytes: 8 })
    cache.store('big', answer('0123456789', at()), policy)
    cache.store('small', answer('01234567', at()), policy)
    await settle()
    assert.equal((await cache.lookup('big')).fresh, undefined)
    assert.equal((await cache.lookup('small')).fresh?.body.length, 8)
  })

  it('treats an unreadable entry as a miss', async () => {
    const { cache, state } = setup()
    await state.cacheSet('short', Buffer.from([0, 0]), 10_000)
    await state.cacheSet('liar', Buffer.from([0, 0, 0, 200, 1, 2]), 10_000)
    await state.cacheSet(
      'garbled',
      Buffer.concat([Buffer.from([0, 0, 0, 3]), Buffer.from('{{{body')]),
      10_000,
    )
    for (const key of ['short', 'liar', 'garbled'])
      assert.equal((await cache.lookup(key)).fresh, undefined, key)
  })

  it('is a miss, never a failure, when the state cannot answer, and says so in one warning', async () => {
    const { cache, lines, at } = setup({ closed: true })
    assert.deepEqual(await cache.lookup('k'), { key: 'k', fresh: undefined, stale: undefined })
    cache.store('k', answer('x', at()), policy)
    await settle()
    assert.equal(lines.length, 1)
    assert.equal(lines[0]!['msg'], 'response cache cannot be read; calling the upstream')
  })

  it('reads Cache-Control: no-cache, max-age=0 and no-store as a bypass, no-store as not keeping either', () => {
    const directives = (value?: string) =>
      cacheDirectives({ headers: value === undefined ? {} : { 'cache-control': value } } as IncomingMessage)
    assert.deepEqual(directives(), { bypass: false, noStore: false })
    assert.deepEqual(directives('No-Cache'), { bypass: true, noStore: false })
    assert.deepEqual(directives('max-age=0'), { bypass: true, noStore: false })
    assert.deepEqual(directives('max-age=60'), { bypass: false, noStore: false })
    assert.deepEqual(directives('no-store'), { bypass: true, noStore: true })
  })
})

describe('compiling the cache settings', () => {
  const compile = (yaml: string) => compileConfig(parseConfigText(yaml), yaml)

  it('gives each tool action its ttl: cache.actions over cacheTtl, 0 turning one off', () => {
    const config = compile(
      'tools:\n  openai: { cacheTtl: 1m, cache: { actions: { embeddings: 10s, models: 0 }, shared: true, staleIfError: 5m } }\n',
    )
    assert.deepEqual(toolCachePolicy(config.cache, 'openai', 'embeddings'), {
      ttlMs: 10_000,
      staleMs: 300_000,
      shared: true,
    })
    assert.equal(toolCachePolicy(config.cache, 'openai', 'models'), undefined)
    assert.equal(toolCachePolicy(config.cache, 'openai', 'chat')?.ttlMs, 60_000)
    assert.equal(toolCachePolicy(config.cache, 'serpapi', 'search'), undefined)
    assert.equal(config.cache.maxEntryBytes, 1024 * 1024)
  })

  it('refuses a route cache without a usable ttl, naming the path', () => {
    const problems = (yaml: string) => {
      try {
        compile(yaml)
      } catch (err) {
        assert.ok(err instanceof ConfigError)
        return err.problems.map((p) => `${p.path}: ${p.message}`)
      }
      return []
    }
    const channel =
      'systems: { s: { kind: http, url: "http://127.0.0.1:9" } }\nchannels:\n  - name: c\n    system: s\n'
    assert.deepEqual(problems(`${channel}    rules: [{ path: "*", cache: { ttl: 0 } }]\n`), [
      'channels[0].rules[0].cache.ttl: must be at least 1ms',
    ])
    const schema = problems(
      `${channel}    rules: [{ path: "*", cache: { ttl: soon, shares: true } }]\ncache: { maxBytes: 10 }\n`,
    )
    assert.ok(
      schema.some((p) => p.startsWith('channels[0].rules[0].cache.ttl')),
      schema.join('\n'),
    )
    assert.ok(
      schema.some((p) => p.startsWith('channels[0].rules[0].cache.shares')),
      schema.join('\n'),
    )
    assert.ok(
      schema.some((p) => p.startsWith('cache.maxBytes')),
      schema.join('\n'),
    )
  })
})
