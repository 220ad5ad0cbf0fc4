/**
 * Rate limits end to end (issue 7, DESIGN §9): real gateways in this process in front of a local
 * upstream and the fake SerpAPI, limits by every key kind, the RateLimit-* headers and the 429
 * refusal, X-Forwarded-For from trusted and untrusted peers, two gateways sharing one Redis, and
 * Redis going away and coming back under failOpen true and false.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it, type TestContext } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import { stringify } from 'yaml'
import { type FakeUpstreams, startFakeUpstreams } from '../../packages/server/src/fakes/index.ts'
import { startTestGateway, type TestGateway, waitUntilReady } from '../support/gateway.ts'
import { type Started, startGatewayProcess } from '../support/process.ts'
import { startRedisProxy } from '../support/redis-proxy.ts'
import { dropRedisKeys, requireService, serviceUrls } from '../support/services.ts'
import { agentToken, expectError, putSecret } from '../support/tools.ts'
import { startUpstream, type TestUpstream } from '../support/upstream.ts'

const serpKey = `serp-${randomBytes(8).toString('hex')}`

function limitHeaders(res: Response): [string | null, string | null, string | null] {
  return [
    res.headers.get('ratelimit-limit'),
    res.headers.get('ratelimit-remaining'),
    res.headers.get('ratelimit-reset'),
  ]
}

/** The value of one series on the admin /metrics page (0 when absent). */
async function metric(gw: TestGateway, series: string): Promise<number> {
  const text = await (await gw.admin('/metrics')).text()
  const line = text.split('\n').find((l) => l.startsWith(`${series} `))
  return line === undefined ? 0 : Number(line.slice(series.length + 1))
}

describe('rate limits in memory', () => {
  let upstream: TestUpstream
  let fakes: FakeUpstreams
  let gw: TestGateway
  const get = (path: string, headers: Record<string, string> = {}) =>
    fetch(`${gw.publicUrl}${path}`, { headers })

  before(async () => {
    upstream = await startUpstream()
    fakes = await startFakeUpstreams({ credentials: { serpapi: serpKey, openai: 'x', gmail: 'y' } })
    const open = (name: string, rateLimit: unknown) => ({
      name,
      prefix: `/${name}`,
      system: 'up',
      rules: [{ path: '*', public: true }],
      rateLimit,
    })
    gw = await startTestGateway({
      gateway: { logLevel: 'warn' },
      systems: { up: { kind: 'http', url: upstream.url } },
      channels: [
        open('burst', { by: 'global', limit: 5, period: '1m' }),
        open('steady', { by: 'global', limit: 10, period: '1s', burst: 1 }),
        open('by-ip', { by: 'ip', limit: 2, period: '1m' }),
        open('by-path', { by: 'path', limit: 1, period: '1m' }),
        open('free', []),
        {
          name: 'by-agent',
          prefix: '/by-agent',
          system: 'up',
          rateLimit: { by: 'agent', limit: 2, period: '1m' },
        },
      ],
      rateLimits: [{ by: 'agent_tool', tool: 'serpapi', limit: 2, period: '1m' }],
      tools: { serpapi: { url: fakes.serpapi.url } },
      policies: [
        {
          name: 'limited',
          agents: { all: true },
          allow: [{ channel: 'by-agent' }, { tool: 'serpapi', actions: ['search'] }],
        },
      ],
    })
    await putSecret(gw, 'serpapi_key', serpKey)
  })
  after(async () => {
    await gw?.stop()
    await fakes?.close()
    await upstream?.close()
  })

  it('admits a burst of exactly the limit and refuses the rest with 429 rate_limited and Retry-After', async () => {
    const answers = await Promise.all(Array.from({ length: 8 }, () => get('/burst/x')))
    const admitted = answers.filter((r) => r.status === 200)
    const refused = answers.filter((r) => r.status === 429)
    assert.equal(admitted.length, 5)
    assert.equal(refused.length, 3)
    assert.deepEqual(admitted.map((r) => r.headers.get('ratelimit-remaining')).sort(), [
      '0',
      '1',
      '2',
      '3',
      '4',
    ])
    for (const res of admitted) assert.equal(res.headers.get('ratelimit-limit'), '5')
    for (const res of refused) {
      // One request every 12 s refills the burst of 5 per minute.
      assert.equal(res.headers.get('retry-after'), '12')
      assert.deepEqual(limitHeaders(res), ['5', '0', '60'])
      const error = await expectError(res, 429, 'rate_limited')
      assert.deepEqual(error.details, { by: 'global', limit: 'channels[0].rateLimit', retryAfterSeconds: 12 })
    }
    await Promise.all(admitted.map((r) => r.arrayBuffer()))
    assert.equal(await metric(gw, 'runr_rate_limited_total{by="global"}'), 3)
  })

  it('admits one request per emission interval at the steady rate', async () => {
    assert.equal((await get('/steady/a')).status, 200)
    const refused = await get('/steady/a')
    assert.equal(refused.status, 429)
    assert.equal(refused.headers.get('retry-after'), '1', 'never less than one second')
    await refused.arrayBuffer()
    await delay(130)
    const again = await get('/steady/a')
    assert.equal(again.status, 200)
    assert.deepEqual(limitHeaders(again), ['10', '0', '1'])
  })

  it('counts by the peer address and ignores X-Forwarded-For from a peer that is not a trusted proxy', async () => {
    assert.equal((await get('/by-ip/a', { 'x-forwarded-for': '198.51.100.1' })).status, 200)
    assert.equal((await get('/by-ip/a', { 'x-forwarded-for': '198.51.100.2' })).status, 200)
    const refused = await get('/by-ip/a', { 'x-forwarded-for': '198.51.100.3' })
    await expectError(refused, 429, 'rate_limited')
  })

  it('counts by path: each path has its own budget', async () => {
    assert.equal((await get('/by-path/one')).status, 200)
    await expectError(await get('/by-path/one'), 429, 'rate_limited')
    assert.equal((await get('/by-path/two')).status, 200)
  })

  it('sends no RateLimit headers on a route no limit covers', async () => {
    const res = await get('/free/x')
    assert.equal(res.status, 200)
    assert.deepEqual(limitHeaders(res), [null, null, null])
  })

  it('counts by agent: each agent has its own budget, checked after authentication', async () => {
    const a = await agentToken(gw, 'limited-a', 'channel:by-agent')
    const b = await agentToken(gw, 'limited-b', 'channel:by-agent')
    const as = (token: string) => get('/by-agent/x', { authorization: `Bearer ${token}` })
    assert.deepEqual(limitHeaders(await as(a)), ['2', '1', '30'])
    assert.equal((await as(a)).status, 200)
    const refused = await as(a)
    assert.equal((await expectError(refused, 429, 'rate_limited')).details?.['by'], 'agent')
    assert.equal((await as(b)).status, 200)
    // No principal, no per-agent count: the refusal is authentication's.
    await expectError(await get('/by-agent/x'), 401, 'unauthenticated')
  })

  it('counts by agent and tool on the tool route, with the headers on the tool answer', async () => {
    const a = await agentToken(gw, 'tool-a', 'serpapi:search')
    const b = await agentToken(gw, 'tool-b', 'serpapi:search')
    const search = (token: string) =>
      fetch(`${gw.publicUrl}/v1/tools/serpapi/search`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ q: 'limits' }),
      })
    const first = await search(a)
    assert.equal(first.status, 200, await first.clone().text())
    assert.deepEqual(limitHeaders(first), ['2', '1', '30'])
    assert.equal((await search(a)).status, 200)
    const refused = await search(a)
    const error = await expectError(refused, 429, 'rate_limited')
    assert.deepEqual(error.details, { by: 'agent_tool', limit: 'rateLimits[0]', retryAfterSeconds: 30 })
    assert.equal(refused.headers.get('retry-after'), '30')
    assert.equal((await search(b)).status, 200)
    // The refused call never reached the upstream.
    assert.equal(fakes.serpapi.requests.filter((r) => r.path === '/search.json').length, 3)
  })
})

describe('gateway-wide per-agent rate limits', () => {
  it('count calls through /api/proxy-request, whose token arrives in the body, like any other route', async () => {
    const fakes = await startFakeUpstreams({ credentials: { serpapi: serpKey, openai: 'x', gmail: 'y' } })
    const gw = await startTestGateway({
      gateway: { logLevel: 'warn' },
      rateLimits: [{ by: 'agent', limit: 2, period: '1m' }],
      tools: { serpapi: { url: fakes.serpapi.url } },
      policies: [
        { name: 'search', agents: { all: true }, allow: [{ tool: 'serpapi', actions: ['search'] }] },
      ],
    })
    try {
      await putSecret(gw, 'serpapi_key', serpKey)
      const token = await agentToken(gw, 'body-token-agent', 'serpapi:search')
      const viaBody = () =>
        fetch(`${gw.publicUrl}/api/proxy-request`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ agent_token: token, tool: 'serpapi', action: 'search', params: { q: 'x' } }),
        })
      const first = await viaBody()
      assert.equal(first.status, 200, await first.clone().text())
      assert.equal(first.headers.get('ratelimit-limit'), '2')
      assert.equal((await viaBody()).status, 200)
      const refused = await expectError(await viaBody(), 429, 'rate_limited')
      assert.equal(refused.details?.['by'], 'agent')
      // The same budget on the tool route: it is the agent's, whichever route it takes.
      await expectError(
        await fetch(`${gw.publicUrl}/v1/tools/serpapi/search`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ q: 'x' }),
        }),
        429,
        'rate_limited',
      )
    } finally {
      await gw.stop()
      await fakes.close()
    }
  })
})

describe('rate limits of a tool', () => {
  it('count the OpenAI passthrough and the tool route against one tool budget, and start afresh when a reload changes them', async (t) => {
    const fakes = await startFakeUpstreams({ credentials: { serpapi: 'x', openai: serpKey, gmail: 'y' } })
    t.after(() => fakes.close())
    const config = (limit: number) => ({
      gateway: { logLevel: 'warn' },
      tools: { openai: { url: fakes.openai.url, rateLimit: { by: 'agent', limit, period: '1m' } } },
      policies: [{ name: 'ai', agents: { all: true }, allow: [{ tool: 'openai', actions: ['embeddings'] }] }],
    })
    const gw = await startTestGateway(config(1))
    t.after(() => gw.stop())
    await putSecret(gw, 'openai_key', serpKey)
    const token = await agentToken(gw, 'ai-bot', 'openai:embeddings')
    const embed = (path: string) =>
      fetch(`${gw.publicUrl}${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'text-embedding-3-small', input: 'hi' }),
      })
    const first = await embed('/v1/openai/embeddings')
    assert.equal(first.status, 200, await first.clone().text())
    assert.deepEqual(limitHeaders(first), ['1', '0', '60'])
    const refused = await expectError(await embed('/v1/tools/openai/embeddings'), 429, 'rate_limited')
    assert.equal(refused.details?.['limit'], 'tools.openai.rateLimit')
    await expectError(await embed('/v1/openai/embeddings'), 429, 'rate_limited')

    await gw.writeConfig(config(2))
    assert.equal((await gw.reload()).ok, true)
    const after = await embed('/v1/openai/embeddings')
    assert.equal(after.status, 200)
    assert.deepEqual(limitHeaders(after), ['2', '1', '30'])
  })
})

describe('rate limits behind a trusted proxy', () => {
  let upstream: TestUpstream
  let gw: TestGateway
  before(async () => {
    upstream = await startUpstream()
    gw = await startTestGateway({
      gateway: { logLevel: 'warn', trustedProxies: ['127.0.0.0/8'] },
      systems: { up: { kind: 'http', url: upstream.url } },
      channels: [
        {
          name: 'by-ip',
          prefix: '/by-ip',
          system: 'up',
          rules: [{ path: '*', public: true }],
          rateLimit: { by: 'ip', limit: 1, period: '1m' },
        },
      ],
    })
  })
  after(async () => {
    await gw?.stop()
    await upstream?.close()
  })

  it('counts the client X-Forwarded-For names, each apart, and the proxy itself without the header', async () => {
    const get = (headers: Record<string, string> = {}) => fetch(`${gw.publicUrl}/by-ip/x`, { headers })
    assert.equal((await get({ 'x-forwarded-for': '203.0.113.9' })).status, 200)
    await expectError(await get({ 'x-forwarded-for': '203.0.113.9' }), 429, 'rate_limited')
    // A forged entry left of the one our proxy wrote changes nothing.
    await expectError(await get({ 'x-forwarded-for': '192.0.2.1, 203.0.113.9' }), 429, 'rate_limited')
    assert.equal((await get({ 'x-forwarded-for': '203.0.113.10' })).status, 200)
    assert.equal((await get()).status, 200)
  })
})

describe('rate limits in Redis', () => {
  const prefix = `runr_test_${randomBytes(6).toString('hex')}:`
  let up = false
  let upstream: TestUpstream
  before(async () => {
    up = await requireService('redis', serviceUrls.redis)
    upstream = await startUpstream()
  })
  after(async () => {
    await upstream?.close()
    if (up) await dropRedisKeys(prefix)
  })

  function config(redisUrl: string, channels: Array<{ name: string; rateLimit: unknown }>) {
    return {
      gateway: { logLevel: 'warn' },
      redis: { url: redisUrl, prefix },
      systems: { up: { kind: 'http', url: upstream.url } },
      channels: channels.map((c) => ({
        ...c,
        prefix: `/${c.name}`,
        system: 'up',
        rules: [{ path: '*', public: true }],
      })),
    }
  }

  async function gateway(
    t: TestContext,
    redisUrl: string,
    channels: Array<{ name: string; rateLimit: unknown }>,
  ) {
    const gw = await startTestGateway(config(redisUrl, channels))
    t.after(() => gw.stop())
    // The gateway starts before Redis answers (a limit checked meanwhile fails open): wait.
    await waitUntilReady(gw)
    return gw
  }

  it('admits exactly the limit across two gateways sharing Redis', async (t) => {
    if (!up) return t.skip('redis is not running')
    const channels = [{ name: 'shared', rateLimit: { by: 'global', limit: 6, period: '1m' } }]
    const a = await gateway(t, serviceUrls.redis, channels)
    const b = await gateway(t, serviceUrls.redis, channels)
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) => fetch(`${(i % 2 === 0 ? a : b).publicUrl}/shared/x`)),
    )
    const admitted = answers.filter((r) => r.status === 200)
    assert.equal(admitted.length, 6)
    assert.deepEqual(admitted.map((r) => r.headers.get('ratelimit-remaining')).sort(), [
      '0',
      '1',
      '2',
      '3',
      '4',
      '5',
    ])
    assert.equal(answers.filter((r) => r.status === 429).length, 14)
    await Promise.all(answers.map((r) => r.arrayBuffer()))
  })

  it('admits exactly the limit across two gateway processes sharing Redis', async (t) => {
    if (!up) return t.skip('redis is not running')
    const processes: Started[] = []
    t.after(async () => {
      for (const p of processes) p.child.kill('SIGTERM')
      await Promise.all(processes.map((p) => p.exited))
    })
    for (let i = 0; i < 2; i++) {
      const dir = await mkdtemp(join(tmpdir(), 'runr-rl-'))
      const file = join(dir, '4runr.yaml')
      const text = stringify({
        ...config(serviceUrls.redis, [
          { name: 'procs', rateLimit: { by: 'global', limit: 7, period: '1m' } },
        ]),
        gateway: {
          logLevel: 'warn',
          listen: { host: '127.0.0.1', port: 0 },
          admin: { host: '127.0.0.1', port: 0 },
        },
        store: { kind: 'sqlite', path: join(dir, '4runr.db') },
      })
      await writeFile(file, text)
      const started = await startGatewayProcess(
        file,
        { RUNR_ADMIN_KEY: `rate-limit-admin-key-${i}-0123456789` },
        dir,
      )
      processes.push(started)
      await waitUntilReady(started)
    }
    const answers = await Promise.all(
      Array.from({ length: 24 }, (_, i) => fetch(`${processes[i % 2]!.publicUrl}/procs/x`)),
    )
    assert.equal(answers.filter((r) => r.status === 200).length, 7)
    assert.equal(answers.filter((r) => r.status === 429).length, 17)
    await Promise.all(answers.map((r) => r.arrayBuffer()))
  })

  it('admits under failOpen and refuses otherwise while Redis is away, counts both, and limits again once it is back', async (t) => {
    if (!up) return t.skip('redis is not running')
    const proxy = await startRedisProxy(t, serviceUrls.redis)
    const gw = await gateway(t, proxy.url, [
      { name: 'open', rateLimit: { by: 'global', limit: 1, period: '1m' } },
      { name: 'closed', rateLimit: { by: 'global', limit: 100, period: '1m', failOpen: false } },
    ])
    const get = (path: string) => fetch(`${gw.publicUrl}${path}`)
    assert.equal((await get('/open/x')).status, 200)
    await expectError(await get('/open/x'), 429, 'rate_limited')

    await proxy.cut()
    for (let i = 0; i < 3; i++) {
      const res = await get('/open/x')
      assert.equal(res.status, 200, 'failOpen admits what it cannot count')
      assert.equal(res.headers.get('ratelimit-limit'), null)
    }
    const refused = await get('/closed/x')
    assert.equal(refused.headers.get('retry-after'), '1')
    const error = await expectError(refused, 429, 'rate_limited')
    assert.equal(error.details?.['reason'], 'state_unavailable')
    assert.equal(await metric(gw, 'runr_rate_limit_unavailable_total{outcome="admitted"}'), 3)
    assert.equal(await metric(gw, 'runr_rate_limit_unavailable_total{outcome="refused"}'), 1)
    assert.ok(
      gw.logs.some((l) => l['msg'] === 'rate limits cannot be checked; admitting (failOpen)'),
      'the failure is logged',
    )

    await proxy.restore()
    const deadline = Date.now() + 15_000
    let status = 0
    while (Date.now() < deadline) {
      status = (await get('/closed/x')).status
      if (status === 200) break
      await delay(100)
    }
    assert.equal(status, 200, 'the limits work again without a restart')
    await expectError(await get('/open/x'), 429, 'rate_limited')
  })
})
