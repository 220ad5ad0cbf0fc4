/**
 * Tool calls through the resilience stages against the fault-injecting fake upstreams: retries of
 * idempotent actions with the real count in `metadata.attempts`, no retry of an action with
 * effects, the breaker opening and closing per tool, the total timeout, and the bulkhead.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, beforeEach, describe, it } from 'node:test'
import { type FakeUpstreams, startFakeUpstreams } from '../../packages/server/src/fakes/index.ts'
import { startTestGateway, type TestGateway } from '../support/gateway.ts'
import { agentToken, expectError, putSecret } from '../support/tools.ts'

const credentials = {
  serpapi: `serp-${randomBytes(12).toString('hex')}`,
  openai: `sk-${randomBytes(12).toString('hex')}`,
  gmail: `ya29.${randomBytes(12).toString('hex')}`,
}

describe('tool resilience', () => {
  let fakes: FakeUpstreams
  let gw: TestGateway
  let token: string

  const call = (tool: string, action: string, params: unknown) =>
    fetch(`${gw.publicUrl}/v1/tools/${tool}/${action}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(params),
    })
  const search = () => call('serpapi', 'search', { q: 'resilience' })

  before(async () => {
    fakes = await startFakeUpstreams({ credentials })
    gw = await startTestGateway({
      gateway: { logLevel: 'warn' },
      tools: {
        serpapi: {
          url: fakes.serpapi.url,
          retry: { attempts: 2, backoff: '5ms' },
          breaker: { failures: 4, openMs: 1_500 },
        },
        openai: { url: fakes.openai.url, totalTimeoutMs: 300 },
        gmail: {
          url: fakes.gmail.url,
          retry: { attempts: 3, backoff: '5ms' },
          bulkhead: { maxConcurrent: 1, maxQueue: 0 },
        },
      },
      policies: [
        {
          name: 'all',
          agents: { names: ['resilient-bot'] },
          allow: [{ tool: 'serpapi' }, { tool: 'openai' }, { tool: 'gmail' }],
        },
      ],
    })
    token = await agentToken(gw, 'resilient-bot', 'serpapi:search openai:chat gmail:send gmail:profile')
    await putSecret(gw, 'serpapi_key', credentials.serpapi)
    await putSecret(gw, 'openai_key', credentials.openai)
    await putSecret(gw, 'gmail_token', credentials.gmail)
  })
  after(async () => {
    await gw?.stop()
    await fakes?.close()
  })
  beforeEach(() => {
    fakes.serpapi.faults.clear()
    fakes.openai.faults.clear()
    fakes.gmail.faults.clear()
  })

  it('retries an idempotent action after a 503 and a reset and reports the real attempts', async () => {
    fakes.serpapi.faults.add({ kind: 'status', status: 503 })
    fakes.serpapi.faults.add({ kind: 'reset' })
    const before = fakes.serpapi.requests.length
    const res = await search()
    const body = (await res.json()) as { metadata: { attempts: number; upstreamStatus: number } }
    assert.equal(res.status, 200, JSON.stringify(body))
    assert.equal(body.metadata.attempts, 3)
    assert.equal(body.metadata.upstreamStatus, 200)
    assert.equal(fakes.serpapi.requests.length - before, 3, 'three tries reached the fake')
  })

  it("waits for the upstream's Retry-After before retrying a tool call", async () => {
    fakes.serpapi.faults.add({ kind: 'status', status: 503, headers: { 'retry-after': '1' } })
    const started = Date.now()
    const res = await search()
    assert.equal(res.status, 200)
    assert.equal(((await res.json()) as { metadata: { attempts: number } }).metadata.attempts, 2)
    assert.ok(Date.now() - started >= 950, `retried after ${Date.now() - started} ms`)
  })

  it('does not repeat an action with effects: gmail.send fails once on a 503', async () => {
    fakes.gmail.faults.add({ kind: 'status', status: 503 })
    const sent = fakes.gmail.sent.length
    const error = await expectError(
      await call('gmail', 'send', { to: 'a@example.com', subject: 'once', text: 'only once' }),
      502,
      'upstream_error',
    )
    assert.equal(error.details?.['upstreamStatus'], 503)
    assert.equal(fakes.gmail.sent.length, sent)
    assert.equal(fakes.gmail.faults.size, 0, 'the single fault was used by the single try')
  })

  it('opens the tool breaker after consecutive failures, then half-opens and closes', async () => {
    // The first call fails three tries; the second's first try is the fourth failure, which opens it.
    fakes.serpapi.faults.add({ kind: 'status', status: 503 }, { times: 6 })
    const before = fakes.serpapi.requests.length
    await expectError(await search(), 502, 'upstream_error')
    const second = await search()
    assert.equal(second.status, 502, await second.text())
    const refused = await search()
    assert.equal(fakes.serpapi.requests.length - before, 4, 'no retry into the breaker that just opened')
    const retryAfter = Number(refused.headers.get('retry-after'))
    assert.ok(retryAfter >= 1 && retryAfter <= 2, `Retry-After ${retryAfter}: the rest of openMs, rounded up`)
    const error = await expectError(refused, 503, 'circuit_open')
    assert.deepEqual(error.details, { tool: 'serpapi', retryAfterSeconds: retryAfter })
    const metrics = await (await gw.admin('/metrics')).text()
    assert.match(metrics, /runr_breaker_state\{kind="tool",name="serpapi"\} 1/)
    fakes.serpapi.faults.clear()
    await new Promise((r) => setTimeout(r, 1_600))
    assert.equal((await search()).status, 200, 'the half-open probe succeeds')
    assert.match(
      await (await gw.admin('/metrics')).text(),
      /runr_breaker_state\{kind="tool",name="serpapi"\} 0/,
    )
  })

  it('answers 504 upstream_timeout naming the total timeout when the upstream is slow', async () => {
    fakes.openai.faults.add({ kind: 'latency', ms: 1_000 })
    const started = Date.now()
    const error = await expectError(
      await call('openai', 'chat', { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }),
      504,
      'upstream_timeout',
    )
    assert.deepEqual(error.details, { timeout: 'total', timeoutMs: 300 })
    assert.ok(Date.now() - started < 900)
  })

  it('refuses a second concurrent call beyond the tool bulkhead with 503 bulkhead_full', async () => {
    fakes.gmail.faults.add({ kind: 'latency', ms: 1_000 })
    const [a, b] = await Promise.all([call('gmail', 'profile', {}), call('gmail', 'profile', {})])
    const statuses = [a.status, b.status].sort()
    assert.deepEqual(statuses, [200, 503])
    const refused = a.status === 503 ? a : b
    const error = await expectError(refused, 503, 'bulkhead_full')
    assert.equal(error.details?.['target'], 'tool:gmail')
  })
})
