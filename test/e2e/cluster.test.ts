/**
 * Two real gateway processes sharing one Postgres schema and one Redis prefix behave as one
 * gateway (DESIGN §14): an agent made on one is known to the other, a token issued by one is
 * accepted by the other, and a revocation through either is refused by both within a second.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { stringify } from 'yaml'
import { assertionFor, jwtBearer, type TestAgentKey } from '../support/agents.ts'
import { type Started, startGatewayProcess } from '../support/process.ts'
import { dropSchemaAndKeys, requireService, serviceUrls } from '../support/services.ts'
import { startUpstream, type TestUpstream } from '../support/upstream.ts'

const adminKey = 'cluster-test-admin-key-0123456789'
const issuer = 'http://gateway.cluster.test'

describe('two gateway processes on one Postgres and Redis', () => {
  const suffix = randomBytes(6).toString('hex')
  const schema = `runr_test_${suffix}`
  const prefix = `runr_test_${suffix}:`
  let available = false
  let upstream: TestUpstream
  let a: Started
  let b: Started

  before(async () => {
    available =
      (await requireService('postgres', serviceUrls.postgres)) &&
      (await requireService('redis', serviceUrls.redis))
    if (!available) return
    upstream = await startUpstream()
    const dir = await mkdtemp(join(tmpdir(), 'runr-cluster-'))
    const config = {
      gateway: {
        issuer,
        listen: { host: '127.0.0.1', port: 0 },
        admin: { host: '127.0.0.1', port: 0 },
        logLevel: 'warn',
      },
      store: { kind: 'postgres', url: serviceUrls.postgres, schema },
      redis: { url: serviceUrls.redis, prefix },
      systems: { up: { kind: 'http', url: upstream.url } },
      channels: [{ name: 'orders', prefix: '/orders', system: 'up', rules: [{ path: '*' }] }],
      policies: [
        {
          name: 'orders',
          agents: { all: true },
          allow: [
            { name: 'limited', channel: 'orders', paths: ['/limited/*'], quota: { limit: 5, period: '1h' } },
            { channel: 'orders' },
          ],
        },
      ],
    }
    const file = join(dir, '4runr.yaml')
    await writeFile(file, stringify(config))
    // The same master key on both: each must open the signing keys the other sealed.
    const env = { RUNR_ADMIN_KEY: adminKey, RUNR_MASTER_KEY: randomBytes(32).toString('base64') }
    a = await startGatewayProcess(file, env, dir)
    b = await startGatewayProcess(file, env, dir)
  })

  after(async () => {
    if (!available) return
    for (const g of [a, b]) g?.child.kill('SIGTERM')
    const codes = await Promise.all([a?.exited, b?.exited])
    await upstream.close()
    await dropSchemaAndKeys(schema, prefix)
    assert.deepEqual(codes, [0, 0], 'both processes exit cleanly on SIGTERM')
  })

  const admin = (g: Started, path: string, body?: unknown) =>
    fetch(`${g.adminUrl}${path}`, {
      method: body === undefined ? 'GET' : 'POST',
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    })

  async function tokenFrom(g: Started, agent: TestAgentKey): Promise<string> {
    const res = await fetch(`${g.publicUrl}/v1/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: jwtBearer,
        assertion: await assertionFor(agent, issuer),
        scope: 'channel:orders',
      }).toString(),
    })
    assert.equal(res.status, 200, await res.clone().text())
    return ((await res.json()) as { access_token: string }).access_token
  }

  const status = async (g: Started, token: string) =>
    (await fetch(`${g.publicUrl}/orders/x`, { headers: { authorization: `Bearer ${token}` } })).status

  /** A new agent with a generated key pair, created through `g`'s admin API. */
  async function createAgent(g: Started, name: string): Promise<TestAgentKey> {
    const created = (await (await admin(g, '/v1/agents', { name })).json()) as {
      id: string
      kid: string
      privateKeyJwk: TestAgentKey['privateKeyJwk']
    }
    return { id: created.id, kid: created.kid, privateKeyJwk: created.privateKeyJwk }
  }

  /** Poll until `check` holds; returns the milliseconds it took, or fails after `limitMs`. */
  async function within(limitMs: number, check: () => Promise<boolean>): Promise<number> {
    const started = performance.now()
    while (!(await check())) {
      if (performance.now() - started > limitMs) assert.fail(`not within ${limitMs} ms`)
      await new Promise((r) => setTimeout(r, 25))
    }
    return performance.now() - started
  }

  it('refuses on the second process a token revoked through the first, within 1 s', async (t) => {
    if (!available) return t.skip('postgres or redis not running')
    const agent = await createAgent(a, `agent-${suffix}`)
    // The second process learns of the new agent through Redis, then accepts the first's token.
    const token = await tokenFrom(a, agent)
    await within(2000, async () => (await status(b, token)) === 200)
    assert.equal(await status(a, token), 200)

    const jti = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).jti as string
    assert.equal((await admin(a, '/v1/revocations', { jti })).status, 201)
    const took = await within(1000, async () => (await status(b, token)) === 401)
    t.diagnostic(`revocation reached the second process in ${took.toFixed(0)} ms`)
    assert.equal(await status(a, token), 401)
  })

  it('kills an agent through the second process for both, and shares signing keys', async (t) => {
    if (!available) return t.skip('postgres or redis not running')
    const agent = await createAgent(b, `agent2-${suffix}`)
    await within(
      2000,
      async () =>
        (
          await fetch(`${a.adminUrl}/v1/agents/${agent.id}`, {
            headers: { authorization: `Bearer ${adminKey}` },
          })
        ).status === 200,
    )
    const fromA = await tokenFrom(a, agent)
    const fromB = await tokenFrom(b, agent)
    await within(2000, async () => (await status(b, fromA)) === 200 && (await status(a, fromB)) === 200)
    assert.equal((await admin(b, '/v1/revocations', { agentId: agent.id })).status, 201)
    await within(1000, async () => (await status(a, fromA)) === 401 && (await status(a, fromB)) === 401)
    assert.equal(await status(b, fromA), 401)
  })
  it('shares a quota between the two processes through Redis: exactly the limit is admitted', async (t) => {
    if (!available) return t.skip('postgres or redis not running')
    const agent = await createAgent(a, `quota-${suffix}`)
    const token = await tokenFrom(a, agent)
    await within(2000, async () => (await status(b, token)) === 200)
    const limited = async (g: Started) =>
      (await fetch(`${g.publicUrl}/orders/limited/x`, { headers: { authorization: `Bearer ${token}` } }))
        .status
    const statuses = await Promise.all(Array.from({ length: 12 }, (_, i) => limited(i % 2 === 0 ? a : b)))
    assert.equal(statuses.filter((s) => s === 200).length, 5, JSON.stringify(statuses))
    assert.equal(statuses.filter((s) => s === 429).length, 7)
  })
})
