/**
 * AdminClient round trips against a real `4runr start` process: agents and keys, admin-issued
 * tokens, introspection and revocation, signing-key rotation, policies, secrets, approvals and
 * the audit ledger, and the admin API's refusals as typed errors.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { AdminClient, AuthError, GatewayClient, GatewayError } from '../src/index.ts'
import { rejection, type SdkGateway, startSdkGateway } from './support.ts'

describe('AdminClient against a running gateway', () => {
  let gw: SdkGateway
  let admin: AdminClient

  before(async () => {
    gw = await startSdkGateway()
    admin = gw.admin
  })
  after(() => gw.stop())

  it('creates, reads, lists, updates and deletes an agent', async () => {
    const created = await admin.agents.create({ name: 'ops-bot', labels: { team: 'ops' }, roles: ['reader'] })
    assert.equal(created.name, 'ops-bot')
    assert.equal(typeof created.kid, 'string')
    assert.equal(created.privateKeyJwk?.kty, 'OKP')
    assert.deepEqual((await admin.agents.get(created.id)).labels, { team: 'ops' })
    assert.ok((await admin.agents.list()).agents.some((a) => a.id === created.id))
    const disabled = await admin.agents.update(created.id, { status: 'disabled', labels: { team: 'sec' } })
    assert.equal(disabled.status, 'disabled')
    assert.deepEqual(disabled.labels, { team: 'sec' })
    assert.equal(await admin.agents.delete(created.id), undefined)
    const err = await rejection(admin.agents.get(created.id))
    assert.equal(err.code, 'not_found')
    assert.equal(err.status, 404)
  })

  it('adds a key that the agent client can then use', async () => {
    const created = await admin.agents.create({ name: 'rotating-bot' })
    const added = await admin.agents.addKey(created.id)
    assert.notEqual(added.kid, created.kid)
    await admin.policies.put('rotating', {
      agents: { names: ['rotating-bot'] },
      allow: [{ tool: 'serpapi' }],
    })
    const client = new GatewayClient({
      baseUrl: gw.publicUrl,
      agentId: created.id,
      privateKey: added.privateKeyJwk!,
      scope: 'serpapi:search',
    })
    assert.equal((await client.serpapi.search({ q: 'new key' })).metadata.upstreamStatus, 200)
  })

  it('issues a token, introspects it, revokes it and lists the revocation', async () => {
    const created = await admin.agents.create({ name: 'keyless-bot' })
    const issued = await admin.agents.issueToken(created.id, { ttl: 60 })
    assert.equal(issued.token_type, 'Bearer')
    const active = await admin.tokens.introspect(issued.access_token)
    assert.equal(active.active, true)
    assert.equal(active['sub'], created.id)
    await admin.revocations.create({ token: issued.access_token, reason: 'test' })
    assert.equal((await admin.tokens.introspect(issued.access_token)).active, false)
    assert.ok((await admin.revocations.list()).revocations.some((r) => r['jti'] === active['jti']))
  })

  it('rotates the token-signing key', async () => {
    const rotated = await admin.tokens.rotateSigningKey()
    assert.equal(typeof rotated.kid, 'string')
  })

  it('puts, reads, versions, explains and deletes a policy', async () => {
    const agent = await admin.agents.create({ name: 'policy-bot' })
    await admin.policies.put('searchers', { agents: { names: ['policy-bot'] }, allow: [{ tool: 'serpapi' }] })
    const replaced = await admin.policies.put(
      'searchers',
      { agents: { names: ['policy-bot'] }, allow: [{ tool: 'serpapi', actions: ['search'] }] },
      { expectedVersion: 1 },
    )
    assert.equal(replaced['version'], 2)
    assert.equal((await admin.policies.get('searchers'))['name'], 'searchers')
    assert.equal((await admin.policies.history('searchers')).versions.length, 2)
    assert.ok((await admin.policies.list()).policies.some((p) => p['name'] === 'searchers'))
    const explained = await admin.policies.evaluate({
      agent: agent.id,
      tool: 'serpapi',
      action: 'search',
      scope: 'serpapi:search',
    })
    assert.equal(explained.decision, 'allow')
    const stale = await rejection(
      admin.policies.put(
        'searchers',
        { agents: { all: true }, allow: [{ tool: 'serpapi' }] },
        { expectedVersion: 1 },
      ),
    )
    assert.equal(stale.code, 'conflict')
    assert.equal(stale.status, 409)
    await admin.policies.delete('searchers')
    assert.equal((await rejection(admin.policies.get('searchers'))).code, 'not_found')
  })

  it('writes secrets without ever reading them back', async () => {
    const agent = await admin.agents.create({ name: 'secret-bot' })
    assert.equal(await admin.secrets.put('weather_key', 'w-123456'), undefined)
    await admin.secrets.put('weather_key', 'w-agent-789', { agent: agent.id })
    const listed = JSON.stringify(await admin.secrets.list())
    assert.match(listed, /weather_key/)
    assert.doesNotMatch(listed, /w-123456|w-agent-789/)
    await admin.secrets.delete('weather_key', { agent: agent.id })
    await admin.secrets.delete('weather_key')
    assert.equal((await rejection(admin.secrets.delete('weather_key'))).code, 'not_found')
  })

  it('lists approvals and refuses to decide one that does not exist', async () => {
    const { approvals } = await admin.approvals.list({ status: 'pending' })
    assert.ok(Array.isArray(approvals))
    const err = await rejection(admin.approvals.approve('apr_missing'))
    assert.equal(err.code, 'not_found')
  })

  it('verifies the audit chain and finds the admin changes in it', async () => {
    await admin.agents.create({ name: 'audited-bot' })
    // verify flushes the open batch, so the query below sees the change.
    const verified = await admin.audit.verify()
    assert.equal(verified['ok'], true)
    const page = await admin.audit.query({ kind: 'admin', limit: 5 })
    assert.ok(page.entries.length > 0)
    assert.ok(page.entries.every((entry) => entry['kind'] === 'admin'))
    assert.equal((await rejection(admin.audit.query({ kind: 'nonsense' }))).code, 'bad_request')
  })

  it('refuses bad input with bad_request and a wrong admin key with AuthError 401', async () => {
    const bad = await rejection(admin.agents.create({ name: '' }))
    assert.equal(bad.constructor, GatewayError)
    assert.equal(bad.code, 'bad_request')
    assert.equal(bad.status, 400)
    const stranger = new AdminClient({ baseUrl: gw.adminUrl, adminKey: 'not-the-admin-key' })
    const err = await rejection(stranger.agents.list())
    assert.ok(err instanceof AuthError)
    assert.equal(err.status, 401)
    assert.throws(() => new AdminClient({ baseUrl: gw.adminUrl, adminKey: '' }), TypeError)
  })
})
