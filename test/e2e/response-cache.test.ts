/**
 * The response cache end to end (issue 7, DESIGN §10): real gateways in this process, the fake
 * SerpAPI, OpenAI and Gmail upstreams and a local channel backend. Tool actions and channel GETs
 * that opt in answer MISS then HIT with one upstream call, never across agents unless shared, with
 * response filters applied per agent after the cache; no-cache bypasses; a failing upstream is
 * answered STALE within the stale-if-error window; big answers stream through unkept; entries are
 * shared between gateways on one Redis.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { after, before, describe, it } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import { type FakeUpstreams, startFakeUpstreams } from '../../packages/server/src/fakes/index.ts'
import { startTestGateway, type TestGateway, waitUntilReady } from '../support/gateway.ts'
import { dropRedisKeys, requireService, serviceUrls } from '../support/services.ts'
import { agentToken, expectError, putSecret } from '../support/tools.ts'
import { startUpstream, type TestUpstream } from '../support/upstream.ts'

const credentials = {
  serpapi: `serp-${randomBytes(8).toString('hex')}`,
  openai: `sk-${randomBytes(8).toString('hex')}`,
  gmail: `ya29.${randomBytes(8).toString('hex')}`,
}

interface ToolAnswer {
  data: unknown
  metadata: { cached: boolean; attempts: number; upstreamStatus: number }
}

/** A channel backend: numbered JSON answers, and a few misbehaving paths. */
let failing = false
function backend(req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://backend')
  const json = (status: number, body: unknown, headers: Record<string, string> = {}): void => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body))
  }
  if (failing || url.pathname.endsWith('/down')) json(503, { error: 'down' })
  else if (url.pathname.endsWith('/missing')) json(404, { error: 'missing' })
  else if (url.pathname.endsWith('/cookie')) json(200, { n: Math.random() }, { 'set-cookie': 's=1' })
  else if (url.pathname.endsWith('/no-store'))
    json(200, { n: Math.random() }, { 'cache-control': 'no-store' })
  else if (url.pathname.endsWith('/big')) json(200, { pad: 'x'.repeat(20_000), n: Math.random() })
  else
    json(200, {
      n: Math.random(),
      path: url.pathname,
      query: url.search,
      agent: req.headers['x-agent'] ?? null,
    })
}

describe('the response cache in memory', () => {
  let fakes: FakeUpstreams
  let upstream: TestUpstream
  let gw: TestGateway
  let tokenA: string
  let tokenB: string
  let redactToken: string

  const tool = (
    token: string,
    name: string,
    action: string,
    params: unknown,
    headers: Record<string, string> = {},
  ) =>
    fetch(`${gw.publicUrl}/v1/tools/${name}/${action}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...headers },
      body: JSON.stringify(params),
    })
  const answer = async (res: Response): Promise<ToolAnswer> => {
    const text = await res.text()
    assert.equal(res.status, 200, text)
    return JSON.parse(text) as ToolAnswer
  }
  const searches = () => fakes.serpapi.requests.filter((r) => r.path === '/search.json').length
  const get = (path: string, headers: Record<string, string> = {}) =>
    fetch(`${gw.publicUrl}${path}`, { headers })

  before(async () => {
    fakes = await startFakeUpstreams({ credentials })
    upstream = await startUpstream(backend)
    gw = await startTestGateway({
      gateway: { logLevel: 'warn' },
      cache: { maxEntryBytes: 16_384 },
      tools: {
        serpapi: { url: fakes.serpapi.url, cacheTtl: '1m', cache: { shared: true } },
        openai: {
          url: fakes.openai.url,
          cacheTtl: '1m',
          cache: { actions: { embeddings: 300 }, staleIfError: '1m' },
        },
        gmail: { url: fakes.gmail.url, cacheTtl: '1m' },
      },
      systems: { up: { kind: 'http', url: upstream.url } },
      channels: [
        {
          name: 'pages',
          prefix: '/pages',
          system: 'up',
          requestHeaders: { set: { 'x-agent': '{{sub}}' } },
          responseHeaders: { set: { 'x-served-for': '{{requestId}}' } },
          rules: [
            { path: '/shared/*', public: true, cache: { ttl: '1m', shared: true } },
            { path: '/short/*', public: true, cache: { ttl: 300, staleIfError: '1m' } },
            { path: '/open/*', public: true, cache: { ttl: '1m' } },
            { path: '/plain/*', public: true },
            { path: '*', cache: { ttl: '1m' } },
          ],
        },
      ],
      policies: [
        {
          name: 'cache-users',
          agents: { names: ['cache-a', 'cache-b'] },
          allow: [
            { tool: 'serpapi', actions: ['search'] },
            { tool: 'openai', actions: ['embeddings', 'chat'] },
            { tool: 'gmail', actions: ['send', 'profile'] },
            { channel: 'pages' },
          ],
        },
        {
          name: 'redacted',
          agents: { names: ['cache-redacted'] },
          allow: [{ tool: 'serpapi', actions: ['search'], responseFilter: { redact: ['email'] } }],
        },
      ],
    })
    const scope = 'serpapi:search openai:embeddings openai:chat gmail:send gmail:profile channel:pages'
    tokenA = await agentToken(gw, 'cache-a', scope)
    tokenB = await agentToken(gw, 'cache-b', scope)
    redactToken = await agentToken(gw, 'cache-redacted', 'serpapi:search')
    await putSecret(gw, 'serpapi_key', credentials.serpapi)
    await putSecret(gw, 'openai_key', credentials.openai)
    await putSecret(gw, 'gmail_token', credentials.gmail)
  })
  after(async () => {
    await gw?.stop()
    await fakes?.close()
    await upstream?.close()
  })

  describe('tool calls', () => {
    it('answers a repeat of an idempotent call from the cache: MISS, then HIT with metadata.cached and no upstream call', async () => {
      const before = searches()
      const first = await tool(tokenA, 'serpapi', 'search', { q: 'cache one', num: 3 })
      assert.equal(first.headers.get('x-cache'), 'MISS')
      const fresh = await answer(first)
      assert.equal(fresh.metadata.cached, false)
      // The same arguments in another order are the same call.
      const second = await tool(tokenA, 'serpapi', 'search', { num: 3, q: 'cache one' })
      assert.equal(second.headers.get('x-cache'), 'HIT')
      const hit = await answer(second)
      assert.deepEqual(hit.data, fresh.data)
      assert.deepEqual(
        [hit.metadata.cached, hit.metadata.attempts, hit.metadata.upstreamStatus],
        [true, 0, 200],
      )
      assert.equal(searches() - before, 1)
      assert.equal(
        (await answer(await tool(tokenA, 'serpapi', 'search', { q: 'cache two' }))).metadata.cached,
        false,
      )
    })

    it('keeps agents apart by default: the same call by another agent is a MISS', async () => {
      const first = await answer(await tool(tokenA, 'gmail', 'profile', {}))
      assert.equal(first.metadata.cached, false)
      assert.equal((await answer(await tool(tokenA, 'gmail', 'profile', {}))).metadata.cached, true)
      const other = await tool(tokenB, 'gmail', 'profile', {})
      assert.equal(other.headers.get('x-cache'), 'MISS')
      assert.equal((await answer(other)).metadata.cached, false)
    })

    it('applies the response filter after the cache, for each agent: a shared entry is redacted for the agent whose policy says so', async () => {
      const plain = await answer(await tool(tokenA, 'serpapi', 'search', { q: 'contact us' }))
      assert.match(JSON.stringify(plain.data), /@example\.com/)
      const redactedRes = await tool(redactToken, 'serpapi', 'search', { q: 'contact us' })
      assert.equal(redactedRes.headers.get('x-cache'), 'HIT', 'serpapi entries are shared')
      const redacted = await answer(redactedRes)
      assert.doesNotMatch(JSON.stringify(redacted.data), /@example\.com/)
      // And the entry itself was not redacted by that: the first agent still gets it whole.
      const again = await answer(await tool(tokenA, 'serpapi', 'search', { q: 'contact us' }))
      assert.deepEqual(again.data, plain.data)
    })

    it('bypasses the cache on Cache-Control: no-cache and keeps the fresh answer', async () => {
      const before = searches()
      await answer(await tool(tokenA, 'serpapi', 'search', { q: 'refresh me' }))
      const bypass = await tool(
        tokenA,
        'serpapi',
        'search',
        { q: 'refresh me' },
        { 'cache-control': 'no-cache' },
      )
      assert.equal(bypass.headers.get('x-cache'), 'MISS')
      assert.equal((await answer(bypass)).metadata.cached, false)
      assert.equal(searches() - before, 2)
      assert.equal(
        (await tool(tokenA, 'serpapi', 'search', { q: 'refresh me' })).headers.get('x-cache'),
        'HIT',
      )
    })

    it('never caches an action that is not idempotent: each send reaches the upstream', async () => {
      const mail = { to: 'someone@example.com', subject: 'hi', text: 'hello' }
      const sends = () => fakes.gmail.requests.filter((r) => r.method === 'POST').length
      const before = sends()
      for (let i = 0; i < 2; i++) {
        const res = await tool(tokenA, 'gmail', 'send', mail)
        assert.equal(res.headers.get('x-cache'), null)
        assert.equal((await answer(res)).metadata.cached, false)
      }
      assert.equal(sends() - before, 2)
    })

    it('answers STALE when the upstream fails after the ttl, within the stale-if-error window, and 502 without an entry', async () => {
      const params = { model: 'text-embedding-3-small', input: 'stale please' }
      await answer(await tool(tokenA, 'openai', 'embeddings', params))
      await delay(400)
      fakes.openai.faults.add({ kind: 'status', status: 503 }, { times: 2 })
      const stale = await tool(tokenA, 'openai', 'embeddings', params)
      assert.equal(stale.headers.get('x-cache'), 'STALE')
      const body = await answer(stale)
      assert.deepEqual([body.metadata.cached, body.metadata.upstreamStatus], [true, 200])
      await expectError(
        await tool(tokenA, 'openai', 'embeddings', { ...params, input: 'never seen' }),
        502,
        'upstream_error',
      )
      fakes.openai.faults.clear()
      assert.equal((await tool(tokenA, 'openai', 'embeddings', params)).headers.get('x-cache'), 'MISS')
    })

    it('counts hits, misses, stale answers and bypasses in /metrics', async () => {
      const text = await (await gw.admin('/metrics')).text()
      for (const result of ['hit', 'miss', 'stale', 'bypass'])
        assert.match(text, new RegExp(`runr_cache_lookups_total\\{kind="tool",result="${result}"\\} [1-9]`))
      assert.match(text, /runr_cache_hits_total\{kind="tool"\} [1-9]/)
    })
  })

  describe('channel GETs', () => {
    it('serves a repeat GET of an opted-in rule from the cache with this request’s ids, keyed by path and query', async () => {
      const before = upstream.requests.length
      const first = await get('/pages/open/a?x=1&y=2', { 'x-request-id': 'first-request' })
      assert.equal(first.headers.get('x-cache'), 'MISS')
      const body = await first.text()
      const second = await get('/pages/open/a?y=2&x=1', { 'x-request-id': 'second-request' })
      assert.equal(second.status, 200)
      assert.equal(second.headers.get('x-cache'), 'HIT')
      assert.equal(await second.text(), body)
      assert.equal(second.headers.get('x-request-id'), 'second-request')
      assert.equal(second.headers.get('x-correlation-id'), 'second-request')
      assert.equal(
        second.headers.get('x-served-for'),
        'second-request',
        'templated headers are rendered again',
      )
      assert.equal(second.headers.get('content-type'), 'application/json')
      assert.ok(Number(second.headers.get('age')) >= 0)
      assert.equal(upstream.requests.length - before, 1)
      assert.equal((await get('/pages/open/a?x=1&y=3')).headers.get('x-cache'), 'MISS')
      const head = await fetch(`${gw.publicUrl}/pages/open/a?x=1&y=2`, { method: 'HEAD' })
      assert.equal(head.headers.get('x-cache'), 'HIT')
    })

    it('keeps principals apart by default and shares a rule marked shared', async () => {
      const asA = await get('/pages/private/x', { authorization: `Bearer ${tokenA}` })
      assert.equal(asA.headers.get('x-cache'), 'MISS')
      const forA = (await asA.json()) as { agent: string }
      const againA = await get('/pages/private/x', { authorization: `Bearer ${tokenA}` })
      assert.equal(againA.headers.get('x-cache'), 'HIT')
      const asB = await get('/pages/private/x', { authorization: `Bearer ${tokenB}` })
      assert.equal(asB.headers.get('x-cache'), 'MISS')
      assert.notEqual(((await asB.json()) as { agent: string }).agent, forA.agent)
      await againA.arrayBuffer()

      assert.equal(
        (await get('/pages/shared/x', { authorization: `Bearer ${tokenA}` })).headers.get('x-cache'),
        'MISS',
      )
      assert.equal((await get('/pages/shared/x')).headers.get('x-cache'), 'HIT')
    })

    it('keeps no answer to a request carrying credentials no principal was proven from', async () => {
      const credentialed: Array<Record<string, string>> = [
        { authorization: 'Basic dXNlcjpwYXNz' },
        { cookie: 'session=abc' },
      ]
      for (const headers of credentialed) {
        for (let i = 0; i < 2; i++) {
          const res = await get('/pages/open/with-credentials', headers)
          assert.equal(res.headers.get('x-cache'), null)
          await res.arrayBuffer()
        }
      }
    })

    it('keeps only whole 2xx answers an origin lets it keep, within the size bound', async () => {
      for (const path of ['missing', 'cookie', 'no-store', 'big']) {
        const first = await get(`/pages/open/${path}`)
        await first.arrayBuffer()
        const second = await get(`/pages/open/${path}`)
        assert.equal(second.headers.get('x-cache'), 'MISS', path)
        await second.arrayBuffer()
      }
      const big = await get('/pages/open/big')
      assert.ok((await big.text()).length > 20_000, 'a big answer streams through whole')
    })

    it('bypasses on no-cache, and serves nothing from the cache for a rule that does not opt in or a POST', async () => {
      await (await get('/pages/open/b')).arrayBuffer()
      const bypass = await get('/pages/open/b', { 'cache-control': 'no-cache' })
      assert.equal(bypass.headers.get('x-cache'), 'MISS')
      await bypass.arrayBuffer()
      for (let i = 0; i < 2; i++) {
        const plain = await get('/pages/plain/b')
        assert.equal(plain.headers.get('x-cache'), null)
        await plain.arrayBuffer()
      }
      const post = await fetch(`${gw.publicUrl}/pages/open/b`, { method: 'POST', body: '{}' })
      assert.equal(post.headers.get('x-cache'), null)
      await post.arrayBuffer()
    })

    it('answers STALE for a failing upstream after the ttl, and the upstream’s own error without an entry', async () => {
      const fresh = await get('/pages/short/s')
      const body = await fresh.text()
      await delay(400)
      failing = true
      try {
        const stale = await get('/pages/short/s')
        assert.equal(stale.status, 200)
        assert.equal(stale.headers.get('x-cache'), 'STALE')
        assert.equal(await stale.text(), body)
        const none = await get('/pages/short/never')
        assert.equal(none.status, 503)
        await none.arrayBuffer()
      } finally {
        failing = false
      }
    })
  })
})

describe('the response cache behind an open circuit breaker', () => {
  it('answers STALE while the breaker is open, without calling the upstream', async (t) => {
    const fakes = await startFakeUpstreams({ credentials })
    t.after(() => fakes.close())
    const gw = await startTestGateway({
      gateway: { logLevel: 'warn' },
      tools: {
        serpapi: {
          url: fakes.serpapi.url,
          cacheTtl: 200,
          cache: { staleIfError: '1m' },
          breaker: { failures: 1, openMs: '1m' },
        },
      },
      policies: [
        { name: 'search', agents: { all: true }, allow: [{ tool: 'serpapi', actions: ['search'] }] },
      ],
    })
    t.after(() => gw.stop())
    await putSecret(gw, 'serpapi_key', credentials.serpapi)
    const token = await agentToken(gw, 'breaker-bot', 'serpapi:search')
    const search = () =>
      fetch(`${gw.publicUrl}/v1/tools/serpapi/search`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ q: 'breaker' }),
      })
    const fresh = await search()
    assert.equal(fresh.headers.get('x-cache'), 'MISS')
    const data = ((await fresh.json()) as ToolAnswer).data
    await delay(300)
    fakes.serpapi.faults.add({ kind: 'status', status: 500 })
    const failed = await search()
    assert.equal(failed.headers.get('x-cache'), 'STALE', 'the failure itself is answered stale')
    await failed.arrayBuffer()
    const seen = fakes.serpapi.requests.length
    const open = await search()
    assert.equal(open.headers.get('x-cache'), 'STALE')
    assert.deepEqual(((await open.json()) as ToolAnswer).data, data)
    assert.equal(fakes.serpapi.requests.length, seen, 'the open breaker kept the call from the upstream')
  })
})

describe('the response cache bounds in memory', () => {
  it('forgets the least recently used entry past cache.maxEntries', async (t) => {
    const upstream = await startUpstream(backend)
    t.after(() => upstream.close())
    const gw = await startTestGateway({
      gateway: { logLevel: 'warn' },
      cache: { maxEntries: 2 },
      systems: { up: { kind: 'http', url: upstream.url } },
      channels: [
        { name: 'p', prefix: '/p', system: 'up', rules: [{ path: '*', public: true, cache: { ttl: '1m' } }] },
      ],
    })
    t.after(() => gw.stop())
    const status = async (path: string) => {
      const res = await fetch(`${gw.publicUrl}${path}`)
      await res.arrayBuffer()
      return res.headers.get('x-cache')
    }
    assert.deepEqual(
      [await status('/p/1'), await status('/p/2'), await status('/p/1')],
      ['MISS', 'MISS', 'HIT'],
    )
    assert.equal(await status('/p/3'), 'MISS')
    assert.equal(await status('/p/2'), 'MISS', 'the least recently used entry went')
  })
})

describe('the response cache in Redis', () => {
  const prefix = `runr_test_${randomBytes(6).toString('hex')}:`
  after(async () => {
    if (await requireService('redis', serviceUrls.redis)) await dropRedisKeys(prefix)
  })

  it('shares entries between two gateways on one Redis', async (t) => {
    if (!(await requireService('redis', serviceUrls.redis))) return t.skip('redis is not running')
    const upstream = await startUpstream(backend)
    t.after(() => upstream.close())
    const config = {
      gateway: { logLevel: 'warn' },
      redis: { url: serviceUrls.redis, prefix },
      systems: { up: { kind: 'http', url: upstream.url } },
      channels: [
        { name: 'p', prefix: '/p', system: 'up', rules: [{ path: '*', public: true, cache: { ttl: '1m' } }] },
      ],
    }
    const a = await startTestGateway(config)
    t.after(() => a.stop())
    const b = await startTestGateway(config)
    t.after(() => b.stop())
    await Promise.all([waitUntilReady(a), waitUntilReady(b)])
    const first = await fetch(`${a.publicUrl}/p/shared`)
    assert.equal(first.headers.get('x-cache'), 'MISS')
    const body = await first.text()
    // The copy is written in the background once the answer ended.
    let second: Response | undefined
    for (let i = 0; i < 50; i++) {
      second = await fetch(`${b.publicUrl}/p/shared`)
      if (second.headers.get('x-cache') === 'HIT') break
      await second.arrayBuffer()
      await delay(20)
    }
    assert.equal(second?.headers.get('x-cache'), 'HIT')
    assert.equal(await second?.text(), body)
  })
})
