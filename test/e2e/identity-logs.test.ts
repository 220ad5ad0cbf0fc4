/**
 * No token, private key, assertion, proof or admin/master key reaches a log line (DESIGN §16),
 * even at trace level and on every error path: canary values are fed through each route and the
 * captured log text is searched for them.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { assertionFor, dpopProof, jwtBearer, newDpopKey, type TestAgentKey } from '../support/agents.ts'
import { startTestGateway, type TestGateway, testAdminKey } from '../support/gateway.ts'
import { startUpstream, type TestUpstream } from '../support/upstream.ts'

describe('identity and the logs', () => {
  let upstream: TestUpstream
  let gw: TestGateway
  const masterKey = randomBytes(32).toString('base64')

  before(async () => {
    upstream = await startUpstream()
    gw = await startTestGateway(
      {
        gateway: { logLevel: 'trace' },
        systems: { s: { kind: 'http', url: upstream.url } },
        channels: [{ name: 'c', prefix: '/c', system: 's', rules: [{ path: '*' }] }],
        policies: [{ name: 'c', agents: { all: true }, allow: [{ channel: 'c' }] }],
      },
      { env: { RUNR_MASTER_KEY: masterKey } },
    )
  })
  after(async () => {
    await gw.stop()
    await upstream.close()
  })

  it('never writes a secret it handled into a log line', async () => {
    const secrets: string[] = [testAdminKey, masterKey]
    const json = { 'content-type': 'application/json' }
    const form = { 'content-type': 'application/x-www-form-urlencoded' }

    const created = (await (
      await gw.admin('/v1/agents', {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ name: 'canary-bot' }),
      })
    ).json()) as { id: string; kid: string; privateKeyJwk: TestAgentKey['privateKeyJwk'] & { d: string } }
    secrets.push(created.privateKeyJwk.d)
    const agent = { id: created.id, kid: created.kid, privateKeyJwk: created.privateKeyJwk }

    // A bound token: assertion, token-endpoint proof, token, per-request proof.
    const key = await newDpopKey()
    const assertion = await assertionFor(agent, gw.issuer)
    const tokenProof = await dpopProof(key, 'POST', `${gw.publicUrl}/v1/token`)
    const issued = (await (
      await fetch(`${gw.publicUrl}/v1/token`, {
        method: 'POST',
        headers: { ...form, dpop: tokenProof },
        body: new URLSearchParams({ grant_type: jwtBearer, assertion, scope: 'channel:c' }).toString(),
      })
    ).json()) as { access_token: string }
    const token = issued.access_token
    const proof = await dpopProof(key, 'GET', `${gw.publicUrl}/c/x`, token)
    secrets.push(assertion, tokenProof, token, proof)
    assert.equal(
      (await fetch(`${gw.publicUrl}/c/x`, { headers: { authorization: `DPoP ${token}`, dpop: proof } }))
        .status,
      200,
    )
    // Error paths: a replayed proof, a replayed assertion, the bound token as Bearer.
    await fetch(`${gw.publicUrl}/c/x`, { headers: { authorization: `DPoP ${token}`, dpop: proof } })
    await fetch(`${gw.publicUrl}/v1/token`, {
      method: 'POST',
      headers: form,
      body: new URLSearchParams({ grant_type: jwtBearer, assertion }).toString(),
    })
    await fetch(`${gw.publicUrl}/c/x`, { headers: { authorization: `Bearer ${token}` } })

    // Canary strings where a credential goes.
    const canaryToken = 'canaryHeader.canaryPayload.canarySignature'
    const canaryAdmin = 'canary-admin-key-not-real-0123'
    secrets.push(canaryToken, canaryAdmin)
    await fetch(`${gw.publicUrl}/c/x`, { headers: { authorization: `Bearer ${canaryToken}` } })
    await fetch(`${gw.publicUrl}/c/x`, {
      headers: { authorization: `Basic ${canaryAdmin}`, cookie: `s=${canaryAdmin}` },
    })
    await fetch(`${gw.adminUrl}/v1/agents`, { headers: { authorization: `Bearer ${canaryAdmin}` } })
    await fetch(`${gw.publicUrl}/v1/token`, {
      method: 'POST',
      headers: form,
      body: new URLSearchParams({ grant_type: jwtBearer, assertion: canaryToken }).toString(),
    })
    await gw.admin('/v1/introspect', {
      method: 'POST',
      headers: form,
      body: new URLSearchParams({ token }).toString(),
    })
    await gw.admin('/v1/introspect', {
      method: 'POST',
      headers: json,
      body: JSON.stringify({ token: canaryToken }),
    })
    await gw.admin('/v1/revocations', { method: 'POST', headers: json, body: JSON.stringify({ token }) })
    await gw.admin('/v1/revocations', {
      method: 'POST',
      headers: json,
      body: JSON.stringify({ token: canaryToken }),
    })
    const admin = (await (
      await gw.admin(`/v1/agents/${agent.id}/tokens`, { method: 'POST', headers: json, body: '{}' })
    ).json()) as { access_token: string }
    secrets.push(admin.access_token)
    await fetch(`${gw.publicUrl}/c/x`, { headers: { authorization: `Bearer ${admin.access_token}` } })

    await new Promise((r) => setTimeout(r, 100))
    const logs = gw.rawLogs()
    assert.ok(logs.split('\n').length > 10, 'the requests were logged at all')
    for (const secret of secrets) {
      assert.equal(logs.includes(secret), false, `a secret (${secret.slice(0, 6)}…) appears in the logs`)
      // Signatures and payloads alone are secret enough to matter too.
      for (const part of secret.split('.').filter((p) => p.length > 20)) {
        assert.equal(
          logs.includes(part),
          false,
          `part of a secret (${part.slice(0, 6)}…) appears in the logs`,
        )
      }
    }
  })
})
