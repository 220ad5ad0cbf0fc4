/**
 * The metrics catalogue against the traffic that made it: a known mix of requests (public and
 * token-protected channel calls, policy denials, a missing token, rate-limited calls, tool calls
 * with good and bad parameters, an LLM call) is sent to a real gateway, `/metrics` is scraped
 * before and after, and every counter moved by exactly what was sent.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { type FakeUpstreams, startFakeUpstreams } from '../../packages/server/src/fakes/index.ts'
import { startTestGateway, type TestGateway } from '../support/gateway.ts'
import { agentToken, putSecret } from '../support/tools.ts'
import { startUpstream, type TestUpstream } from '../support/upstream.ts'

/** `name{a="x",b="y"}` → value, for every sample in a Prometheus text exposition. */
function parseExposition(text: string): Map<string, number> {
  const samples = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const at = line.lastIndexOf(' ')
    samples.set(line.slice(0, at), Number(line.slice(at + 1)))
  }
  return samples
}

/** The sample key the way prom-client writes it: labels in the order given. */
const key = (name: string, labels: Record<string, string> = {}) => {
  const inner = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .join(',')
  return inner === '' ? name : `${name}{${inner}}`
}

describe('metrics count the traffic sent', () => {
  const credentials = {
    serpapi: `serp-${randomBytes(8).toString('hex')}`,
    openai: `sk-${randomBytes(8).toString('hex')}`,
    gmail: `ya29.${randomBytes(8).toString('hex')}`,
  }
  let fakes: FakeUpstreams
  let upstream: TestUpstream
  let gw: TestGateway
  let token: string

  before(async () => {
    fakes = await startFakeUpstreams({ credentials })
    upstream = await startUpstream()
    gw = await startTestGateway({
      systems: { orders: { kind: 'http', url: upstream.url } },
      channels: [
        {
          name: 'orders',
          prefix: '/orders',
          system: 'orders',
          rules: [{ path: '/public/*', public: true }, { path: '*' }],
        },
        {
          name: 'tight',
          prefix: '/tight',
          system: 'orders',
          rules: [{ path: '*', public: true }],
          rateLimit: { by: 'ip', limit: 2, period: '1h' },
        },
      ],
      tools: { serpapi: { url: fakes.serpapi.url }, openai: { url: fakes.openai.url } },
      policies: [
        {
          name: 'counted',
          agents: { names: ['metrics-agent'] },
          allow: [
            { name: 'read', channel: 'orders', methods: ['GET'] },
            { name: 'search', tool: 'serpapi', actions: ['search'] },
            { name: 'chat', tool: 'openai', actions: ['chat'] },
          ],
          deny: [{ name: 'no-secrets', channel: 'orders', paths: ['/secret/*'] }],
        },
      ],
      metrics: { perAgent: true },
    })
    await putSecret(gw, 'serpapi_key', credentials.serpapi)
    await putSecret(gw, 'openai_key', credentials.openai)
    token = await agentToken(gw, 'metrics-agent', 'channel:orders serpapi:search openai:chat')
  })
  after(async () => {
    await gw.stop()
    await upstream.close()
    await fakes.close()
  })

  async function scrape(): Promise<Map<string, number>> {
    const res = await gw.admin('/metrics')
    assert.equal(res.status, 200)
    return parseExposition(await res.text())
  }

  async function send(path: string, init: RequestInit = {}, bearer?: string): Promise<number> {
    const headers = new Headers(init.headers)
    if (bearer !== undefined) headers.set('authorization', `Bearer ${bearer}`)
    const res = await fetch(`${gw.publicUrl}${path}`, { ...init, headers })
    await res.arrayBuffer()
    return res.status
  }

  const post = (body: unknown): RequestInit => ({
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })

  it('moves each counter by exactly the requests, decisions, refusals, tool calls and LLM tokens sent', async () => {
    const before = await scrape()
    const statuses: number[] = []
    for (let i = 0; i < 5; i++) statuses.push(await send(`/orders/public/p${i}`))
    for (let i = 0; i < 3; i++) statuses.push(await send(`/orders/items/${i}`, {}, token))
    for (let i = 0; i < 2; i++) statuses.push(await send(`/orders/secret/s${i}`, {}, token))
    statuses.push(await send('/orders/items/anonymous'))
    for (let i = 0; i < 4; i++) statuses.push(await send(`/tight/t${i}`))
    for (let i = 0; i < 2; i++)
      statuses.push(await send('/v1/tools/serpapi/search', post({ q: `q${i}` }), token))
    statuses.push(await send('/v1/tools/serpapi/search', post({ q: 42 }), token))
    const chat = await fetch(`${gw.publicUrl}/v1/tools/openai/chat`, {
      ...post({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'count me' }] }),
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    })
    assert.equal(chat.status, 200)
    const usage = (
      (await chat.json()) as { data: { usage: { prompt_tokens: number; completion_tokens: number } } }
    ).data.usage
    assert.ok(usage.prompt_tokens > 0 && usage.completion_tokens > 0)
    assert.deepEqual(statuses, [
      ...[200, 200, 200, 200, 200],
      ...[200, 200, 200],
      ...[403, 403],
      401,
      ...[200, 200, 429, 429],
      ...[200, 200],
      400,
    ])

    const afterScrape = await scrape()
    const delta = (name: string, labels?: Record<string, string>) =>
      (afterScrape.get(key(name, labels)) ?? 0) - (before.get(key(name, labels)) ?? 0)
    const sum = (prefix: string) => {
      let total = 0
      for (const [k, v] of afterScrape) if (k.startsWith(prefix)) total += v - (before.get(k) ?? 0)
      return total
    }

    const requests = 'runr_requests_total'
    assert.equal(delta(requests, { route: 'orders', method: 'GET', status: '2xx' }), 8)
    assert.equal(delta(requests, { route: 'orders', method: 'GET', status: '4xx' }), 3)
    assert.equal(delta(requests, { route: 'tight', method: 'GET', status: '2xx' }), 2)
    assert.equal(delta(requests, { route: 'tight', method: 'GET', status: '4xx' }), 2)
    const toolRoute = '/v1/tools/{tool}/{action}'
    assert.equal(delta(requests, { route: toolRoute, method: 'POST', status: '2xx' }), 3)
    assert.equal(delta(requests, { route: toolRoute, method: 'POST', status: '4xx' }), 1)
    assert.equal(delta('runr_request_duration_seconds_count', { route: 'orders', method: 'GET' }), 11)
    // Only the calls that reached the backend: 5 public, 3 allowed, and the 2 admitted on `tight`.
    assert.equal(delta('runr_upstream_duration_seconds_count', { system: 'orders' }), 10)

    // Allowed: 3 channel calls, 2 searches, 1 chat. Denied: the 2 secret paths. The bad
    // parameters are refused before any decision, and the anonymous call has nobody to decide for.
    assert.equal(sum('runr_policy_decisions_total{decision="allow"'), 6)
    assert.equal(sum('runr_policy_decisions_total{decision="deny"'), 2)
    assert.equal(delta('runr_rate_limited_total', { by: 'ip' }), 2)

    const tool = 'runr_tool_calls_total'
    assert.equal(delta(tool, { tool: 'serpapi', action: 'search', status: '2xx' }), 2)
    assert.equal(delta(tool, { tool: 'serpapi', action: 'search', status: '4xx' }), 1)
    assert.equal(delta(tool, { tool: 'openai', action: 'chat', status: '2xx' }), 1)
    assert.equal(delta('runr_tool_call_duration_seconds_count', { tool: 'serpapi', action: 'search' }), 3)
    const byAgent = 'runr_agent_tool_calls_total'
    assert.equal(
      delta(byAgent, { agent: 'metrics-agent', tool: 'serpapi', action: 'search', status: '2xx' }),
      2,
    )
    assert.equal(delta('runr_llm_tokens_total', { tool: 'openai', kind: 'prompt' }), usage.prompt_tokens)
    assert.equal(
      delta('runr_llm_tokens_total', { tool: 'openai', kind: 'completion' }),
      usage.completion_tokens,
    )
    assert.equal(
      delta('runr_agent_llm_tokens_total', { agent: 'metrics-agent', tool: 'openai', kind: 'prompt' }),
      usage.prompt_tokens,
    )
  })

  it('names every metric by convention: runr_ prefix, counters in _total, durations in _seconds', async () => {
    const res = await gw.admin('/metrics')
    const text = await res.text()
    const types = new Map<string, string>()
    for (const line of text.split('\n')) {
      const m = /^# TYPE (\S+) (\S+)$/.exec(line)
      if (m) types.set(m[1]!, m[2]!)
    }
    assert.ok(types.size > 10)
    for (const [name, type] of types) {
      assert.match(name, /^runr_[a-z0-9_]+$/, name)
      if (type === 'counter') assert.match(name, /_total$/, `${name} is a counter without _total`)
      if (name.includes('duration')) assert.match(name, /_seconds$/, `${name} is not in seconds`)
    }
    // Never a credential in a label or value.
    for (const secret of [token, credentials.serpapi, credentials.openai]) assert.ok(!text.includes(secret))
  })
})
