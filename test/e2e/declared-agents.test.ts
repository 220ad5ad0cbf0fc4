/** Agents declared in the config file (DESIGN §17 `agents:`), at start and across reloads. */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { exportJWK, generateKeyPair } from 'jose'
import { assertionFor, jwtBearer, type TestAgentKey } from '../support/agents.ts'
import { startTestGateway, type TestGateway } from '../support/gateway.ts'
import { startUpstream, type TestUpstream } from '../support/upstream.ts'

async function keyPair() {
  const { publicKey, privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true })
  const pub = await exportJWK(publicKey)
  return {
    publicKeyJwk: { kty: 'OKP', crv: 'Ed25519', x: pub.x!, kid: `k-${pub.x!.slice(0, 8)}` },
    privateKeyJwk: await exportJWK(privateKey),
  }
}

describe('agents declared in the config file', () => {
  let upstream: TestUpstream
  let gw: TestGateway
  let first: Awaited<ReturnType<typeof keyPair>>
  const base = (agents: unknown[]) => ({
    systems: { s: { kind: 'http', url: upstream.url } },
    channels: [
      { name: 'c', prefix: '/c', system: 's', rules: [{ path: '*', methods: { GET: ['reader'] } }] },
    ],
    agents,
    policies: [{ name: 'bots', agents: { names: ['cfg-bot', 'other-bot'] }, allow: [{ channel: 'c' }] }],
  })

  before(async () => {
    upstream = await startUpstream()
    first = await keyPair()
    gw = await startTestGateway(
      base([
        { name: 'cfg-bot', labels: { team: 'growth' }, roles: ['reader'], publicKeyJwk: first.publicKeyJwk },
      ]),
    )
  })
  after(async () => {
    await gw.stop()
    await upstream.close()
  })

  async function agentNamed(name: string) {
    const list = (await (await gw.admin('/v1/agents')).json()) as {
      agents: Array<{
        id: string
        name: string
        source: string
        status: string
        roles: string[]
        labels?: Record<string, string>
        keys: unknown[]
      }>
    }
    return list.agents.find((a) => a.name === name)
  }

  async function tokenFor(agent: TestAgentKey) {
    const res = await fetch(`${gw.publicUrl}/v1/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: jwtBearer,
        assertion: await assertionFor(agent, gw.issuer),
        scope: 'channel:c',
      }).toString(),
    })
    return { status: res.status, body: (await res.json()) as { access_token: string } }
  }

  it('creates them at start with their labels, roles and key; they exchange assertions like any agent', async () => {
    const agent = await agentNamed('cfg-bot')
    assert.ok(agent)
    assert.equal(agent.source, 'config')
    assert.deepEqual(agent.roles, ['reader'])
    const got = await tokenFor({
      id: agent.id,
      kid: first.publicKeyJwk.kid,
      privateKeyJwk: first.privateKeyJwk,
    })
    assert.equal(got.status, 200)
    const res = await fetch(`${gw.publicUrl}/c/x`, {
      headers: { authorization: `Bearer ${got.body.access_token}` },
    })
    assert.equal(res.status, 200)
  })

  it('keeps an agent the operator disabled disabled across a reload', async () => {
    const agent = (await agentNamed('cfg-bot'))!
    const patch = (status: string) =>
      gw.admin(`/v1/agents/${agent.id}`, {
        method: 'PATCH',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ status }),
      })
    assert.equal((await patch('disabled')).status, 200)
    await gw.writeConfig(
      base([
        { name: 'cfg-bot', labels: { team: 'ops' }, roles: ['reader'], publicKeyJwk: first.publicKeyJwk },
      ]),
    )
    assert.equal((await gw.reload()).ok, true)
    for (let i = 0; i < 50 && (await agentNamed('cfg-bot'))!.labels?.['team'] !== 'ops'; i++) {
      await new Promise((r) => setTimeout(r, 20))
    }
    const after = (await agentNamed('cfg-bot'))!
    assert.equal(after.labels?.['team'], 'ops', 'the reload was applied')
    assert.equal(after.status, 'disabled', 'and the disable by the operator stands')
    assert.equal((await patch('active')).status, 200)
  })

  it('follows a reload: a new key is added and the old one retired, roles change, a removed agent is disabled', async () => {
    const agent = (await agentNamed('cfg-bot'))!
    const oldToken = (
      await tokenFor({ id: agent.id, kid: first.publicKeyJwk.kid, privateKeyJwk: first.privateKeyJwk })
    ).body.access_token
    const second = await keyPair()
    await gw.writeConfig(
      base([{ name: 'cfg-bot', roles: ['reader', 'writer'], publicKeyJwk: second.publicKeyJwk }]),
    )
    assert.equal((await gw.reload()).ok, true)
    // The directory follows asynchronously after the swap.
    for (let i = 0; i < 50 && (await agentNamed('cfg-bot'))!.keys.length < 2; i++)
      await new Promise((r) => setTimeout(r, 20))
    const updated = (await agentNamed('cfg-bot'))!
    assert.deepEqual(updated.roles, ['reader', 'writer'])
    assert.equal(updated.keys.length, 2)
    const old = await tokenFor({
      id: agent.id,
      kid: first.publicKeyJwk.kid,
      privateKeyJwk: first.privateKeyJwk,
    })
    assert.equal(old.status, 400, 'the replaced key no longer signs assertions')
    const fresh = await tokenFor({
      id: agent.id,
      kid: second.publicKeyJwk.kid,
      privateKeyJwk: second.privateKeyJwk,
    })
    assert.equal(fresh.status, 200)

    await gw.writeConfig(base([]))
    assert.equal((await gw.reload()).ok, true)
    for (let i = 0; i < 50 && (await agentNamed('cfg-bot'))!.status === 'active'; i++)
      await new Promise((r) => setTimeout(r, 20))
    assert.equal((await agentNamed('cfg-bot'))!.status, 'disabled')
    const res = await fetch(`${gw.publicUrl}/c/x`, { headers: { authorization: `Bearer ${oldToken}` } })
    assert.equal(res.status, 401)
  })

  it('refuses a lifetime above the maxTtl it started with after a reload raised it, with 400 not 500', async () => {
    const created = (await (
      await gw.admin('/v1/agents', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'ttl-bot' }),
      })
    ).json()) as { id: string }
    await gw.writeConfig({ ...base([]), tokens: { ttl: '15m', maxTtl: '3h' } })
    assert.equal((await gw.reload()).ok, true)
    const res = await gw.admin(`/v1/agents/${created.id}/tokens`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ttl: 7200 }),
    })
    // The signing keys' grace was sized for the start-time maxTtl (1 h): raising it needs a restart.
    assert.equal(res.status, 400)
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'invalid_request')
    await gw.writeConfig(base([]))
    assert.equal((await gw.reload()).ok, true)
  })

  it('refuses to start with a declared agent that has no public key', async () => {
    await assert.rejects(startTestGateway(base([{ name: 'keyless' }])), /publicKeyJwk/)
  })
})
