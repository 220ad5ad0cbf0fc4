import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { startTestGateway, type TestGateway } from '../support/gateway.ts'
import { dropSchemaAndKeys, requireService, serviceUrls } from '../support/services.ts'
import { closedPort, startSlowUpstream, startUpstream, type TestUpstream } from '../support/upstream.ts'

type ErrorBody = {
  error: { code: string; status: number; requestId: string; details?: { reasons?: string[] } }
}

/** GET `path` on both listeners, without an admin key. */
async function onBoth(gw: TestGateway, path: string): Promise<Array<{ status: number; body: unknown }>> {
  return Promise.all(
    [gw.publicUrl, gw.adminUrl].map(async (base) => {
      const res = await fetch(`${base}${path}`)
      return { status: res.status, body: await res.json() }
    }),
  )
}

/** Both listeners answer /ready with 503 not_ready; returns the reasons given. */
async function expectNotReady(gw: TestGateway): Promise<string[]> {
  const answers = await onBoth(gw, '/ready')
  const reasons: string[] = []
  for (const { status, body } of answers) {
    assert.equal(status, 503)
    const { error } = body as ErrorBody
    assert.equal(error.code, 'not_ready')
    assert.equal(error.status, 503)
    assert.ok(Array.isArray(error.details?.reasons))
    reasons.push(...(error.details?.reasons ?? []))
  }
  return reasons
}

describe('health and readiness without dependencies', () => {
  let gw: TestGateway

  before(async () => {
    gw = await startTestGateway({})
  })
  after(() => gw.stop())

  it('answers /health with 200 on both listeners', async () => {
    for (const answer of await onBoth(gw, '/health'))
      assert.deepEqual(answer, { status: 200, body: { status: 'ok' } })
  })

  it('answers /ready with 200 on both listeners when nothing needs probing', async () => {
    for (const answer of await onBoth(gw, '/ready'))
      assert.deepEqual(answer, { status: 200, body: { status: 'ready' } })
  })
})

describe('readiness with unreachable dependencies', () => {
  let gw: TestGateway
  let notRedis: TestUpstream

  before(async () => {
    const port = await closedPort()
    gw = await startTestGateway({ redis: { url: `redis://:canary-redis-pw@127.0.0.1:${port}` } })
    // An HTTP server is listening, but it is not Redis, Postgres or NATS.
    notRedis = await startUpstream()
  })
  after(async () => {
    await gw.stop()
    await notRedis.close()
  })

  it('answers /ready with 503 not_ready naming redis when Redis does not answer', async () => {
    const reasons = await expectNotReady(gw)
    assert.ok(reasons.length >= 2)
    for (const reason of reasons) assert.match(reason, /^redis\b/)
    assert.ok(!JSON.stringify(reasons).includes('canary-redis-pw'), 'reasons never carry the URL password')
  })

  it('stores and applies admin changes while Redis is down, and says they were made', async () => {
    const created = await gw.admin('/v1/agents', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'while-redis-is-down' }),
    })
    assert.equal(created.status, 201)
    const { id } = (await created.json()) as { id: string }
    const revoked = await gw.admin('/v1/revocations', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ agentId: id }),
    })
    assert.equal(revoked.status, 201)
  })

  it('keeps answering /health with 200 while not ready', async () => {
    for (const answer of await onBoth(gw, '/health')) assert.equal(answer.status, 200)
  })

  it('follows a reload: fixing the dependency makes the gateway ready, breaking it again does not', async () => {
    await gw.writeConfig({})
    const fixed = await gw.reload()
    assert.equal(fixed.ok, true)
    for (const answer of await onBoth(gw, '/ready')) assert.equal(answer.status, 200)

    await gw.writeConfig({ redis: { url: `redis://127.0.0.1:${await closedPort()}` } })
    assert.equal((await gw.reload()).ok, true)
    await expectNotReady(gw)
  })

  it('reports a dependency URL it cannot parse as a reason, not as an internal error', async () => {
    // The schema only checks the scheme, so a URL that new URL() refuses can reach the probes.
    await gw.writeConfig({ redis: { url: 'redis://[not-an-address' } })
    assert.equal((await gw.reload()).ok, true)
    const reasons = await expectNotReady(gw)
    for (const reason of reasons) assert.match(reason, /^redis: invalid URL/)
  })

  it('is not fooled by a server that accepts connections but speaks another protocol', async () => {
    const port = notRedis.port
    await gw.writeConfig({
      redis: { url: `redis://127.0.0.1:${port}` },
      store: { kind: 'postgres', url: `postgres://postgres@127.0.0.1:${port}/test` },
      systems: { events: { kind: 'nats', url: `nats://127.0.0.1:${port}` } },
    })
    assert.equal((await gw.reload()).ok, true)
    const reasons = await expectNotReady(gw)
    for (const name of [/^redis\b/, /^store \(postgres\)/, /^system events \(nats\)/])
      assert.ok(
        reasons.some((r) => name.test(r)),
        `${name} in ${JSON.stringify(reasons)}`,
      )
  })
})

describe('readiness with the real services', () => {
  it('answers /ready with 200 when Redis, the Postgres store and a NATS system answer', async (t) => {
    // Checked inside the test, so that a required service that is down fails this test by name.
    for (const [name, url] of Object.entries(serviceUrls)) {
      if (!(await requireService(name, url))) return t.skip(`${name} not running`)
    }
    // Its own schema and key prefix: the database's public schema may hold another gateway's
    // signing keys, sealed with another master key.
    const suffix = randomBytes(6).toString('hex')
    const gw = await startTestGateway({
      redis: { url: serviceUrls.redis, prefix: `runr_test_${suffix}:` },
      store: { kind: 'postgres', url: serviceUrls.postgres, schema: `runr_test_${suffix}` },
      systems: { events: { kind: 'nats', url: serviceUrls.nats } },
    })
    t.after(async () => {
      await gw.stop()
      await dropSchemaAndKeys(`runr_test_${suffix}`, `runr_test_${suffix}:`)
    })
    for (const answer of await onBoth(gw, '/ready'))
      assert.deepEqual(answer, { status: 200, body: { status: 'ready' } })
  })
})

describe('readiness during shutdown', () => {
  let slow: TestUpstream
  let gw: TestGateway
  let slowArrived: Promise<void>

  before(async () => {
    ;({ upstream: slow, arrived: slowArrived } = await startSlowUpstream(600, 'done'))
    gw = await startTestGateway({
      gateway: { shutdownTimeoutMs: 5000 },
      systems: { backend: { kind: 'http', url: slow.url } },
      channels: [{ name: 'slow', prefix: '/slow', system: 'backend', rules: [{ path: '*', public: true }] }],
    })
  })
  after(async () => {
    await gw.stop()
    await slow.close()
  })

  it('says not ready but alive while draining, and lets the in-flight request finish', async () => {
    const inflight = fetch(`${gw.publicUrl}/slow/work`).then(async (res) => ({
      status: res.status,
      text: await res.text(),
    }))
    await slowArrived
    const stopped = gw.stop()
    // The admin listener stays up while the public one drains, so the verdict is observable there.
    const res = await fetch(`${gw.adminUrl}/ready`)
    assert.equal(res.status, 503)
    const body = (await res.json()) as ErrorBody
    assert.equal(body.error.code, 'not_ready')
    assert.ok(body.error.details?.reasons?.some((r) => /shutting down/.test(r)))
    // Alive while draining: liveness is not readiness.
    const health = await fetch(`${gw.adminUrl}/health`)
    assert.equal(health.status, 200)
    await health.arrayBuffer()
    assert.deepEqual(await inflight, { status: 200, text: 'done' })
    await stopped
  })
})
