/**
 * Agent identity end to end on a real gateway: agents through the admin API, token exchange on
 * the public listener, tokens on channel routes, key binding, delegation, revocation, rotation.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import {
  accessTokenType,
  assertionFor,
  claimsOf,
  dpopProof,
  hmacWithPublicKey,
  jwtBearer,
  newDpopKey,
  type TestAgentKey,
  tokenExchange,
  unsignedToken,
} from '../support/agents.ts'
import { startTestGateway, type TestGateway } from '../support/gateway.ts'
import { dropSchemaAndKeys, requireService, serviceUrls } from '../support/services.ts'
import { startUpstream, type TestUpstream } from '../support/upstream.ts'

interface AgentBody {
  id: string
  name: string
  kid: string
  labels: Record<string, string>
  privateKeyJwk: TestAgentKey['privateKeyJwk']
  keys: Array<{ kid: string; publicKeyJwk: { x: string } }>
}
type Jwks = { keys: Array<{ kid: string; kty: string; d?: string }> }

type ErrorBody = { error: { code: string; status: number; details?: Record<string, unknown> } }

// The whole suite runs twice: on the embedded SQLite store with in-memory shared state, and on
// Postgres (a fresh schema) with Redis (a fresh key prefix), as a cluster member would.
const postgresUp = await requireService('postgres', serviceUrls.postgres)
const redisUp = await requireService('redis', serviceUrls.redis)
const backends = [
  { name: 'SQLite and memory', skip: false },
  { name: 'Postgres and Redis', skip: !(postgresUp && redisUp) },
]

for (const backend of backends)
  describe(`agent identity on ${backend.name}`, { skip: backend.skip }, () => {
    let upstream: TestUpstream
    let gw: TestGateway
    const suffix = randomBytes(6).toString('hex')
    const shared =
      backend.name === 'Postgres and Redis'
        ? {
            store: { kind: 'postgres', url: serviceUrls.postgres, schema: `runr_test_${suffix}` },
            redis: { url: serviceUrls.redis, prefix: `runr_test_${suffix}:` },
          }
        : {}

    before(async () => {
      upstream = await startUpstream()
      gw = await startTestGateway({
        ...shared,
        tokens: { ttl: '15m', maxTtl: '1h' },
        systems: { orders: { kind: 'http', url: upstream.url } },
        channels: [
          {
            name: 'orders',
            prefix: '/orders',
            system: 'orders',
            rules: [
              { path: '/admin/*', methods: { GET: ['admin'] } },
              { path: '*', methods: ['GET', 'POST'] },
            ],
            requestHeaders: { set: { 'X-Agent-Id': '{{sub}}', 'X-Intent': '{{intent}}' } },
          },
        ],
        policies: [
          {
            name: 'every-agent',
            agents: { all: true },
            allow: [{ channel: 'orders' }, { channel: 'billing' }, { tool: 'serpapi', actions: ['search'] }],
          },
        ],
      })
    })
    after(async () => {
      await gw.stop()
      await upstream.close()
      if (shared.store !== undefined) await dropSchemaAndKeys(shared.store.schema, shared.redis.prefix)
    })

    async function createAgent(
      body: Record<string, unknown> = {},
    ): Promise<TestAgentKey & { body: AgentBody }> {
      const res = await gw.admin('/v1/agents', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: `agent-${Math.random().toString(36).slice(2, 10)}`, ...body }),
      })
      assert.equal(res.status, 201)
      const created = (await res.json()) as AgentBody
      return { id: created.id, kid: created.kid, privateKeyJwk: created.privateKeyJwk, body: created }
    }

    function tokenRequest(params: Record<string, string>, headers: Record<string, string> = {}) {
      return fetch(`${gw.publicUrl}/v1/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
        body: new URLSearchParams(params).toString(),
      })
    }

    async function getToken(
      agent: TestAgentKey,
      scope = 'channel:orders',
      extra: Record<string, string> = {},
    ) {
      const res = await tokenRequest({
        grant_type: jwtBearer,
        assertion: await assertionFor(agent, gw.issuer),
        scope,
        ...extra,
      })
      assert.equal(res.status, 200, await res.clone().text())
      return (await res.json()) as {
        access_token: string
        token_type: string
        expires_in: number
        scope: string
      }
    }

    const call = (token: string, path = '/orders/1', headers: Record<string, string> = {}) =>
      fetch(`${gw.publicUrl}${path}`, { headers: { authorization: `Bearer ${token}`, ...headers } })

    async function expectError(res: Response, status: number, code: string, reason?: string) {
      const body = (await res.json()) as ErrorBody
      assert.equal(res.status, status, JSON.stringify(body))
      assert.equal(body.error.code, code, JSON.stringify(body))
      if (reason !== undefined) assert.equal(body.error.details?.['reason'], reason, JSON.stringify(body))
    }

    describe('agents', () => {
      it('creates an agent with a generated key pair and returns the private key only once', async () => {
        const agent = await createAgent({ labels: { team: 'growth' }, roles: ['reader'] })
        assert.equal(agent.privateKeyJwk.kty, 'OKP')
        assert.equal(typeof agent.privateKeyJwk.d, 'string')
        assert.match(agent.id, /^agt_/)
        const read = (await (await gw.admin(`/v1/agents/${agent.id}`)).json()) as AgentBody
        assert.deepEqual(read.labels, { team: 'growth' })
        assert.equal(read.keys[0]?.kid, agent.kid)
        assert.equal(JSON.stringify(read).includes(agent.privateKeyJwk.d!), false)
        const list = (await (await gw.admin('/v1/agents')).json()) as { agents: AgentBody[] }
        assert.ok(list.agents.some((a: { id: string }) => a.id === agent.id))
      })

      it('refuses a duplicate name with 409, a bad body with 400 and an unknown agent with 404', async () => {
        const agent = await createAgent()
        const dup = await gw.admin('/v1/agents', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ name: agent.body.name }),
        })
        await expectError(dup, 409, 'conflict')
        const unknownKey = await gw.admin('/v1/agents', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ name: 'x1', requireDPoP: true }),
        })
        await expectError(unknownKey, 400, 'bad_request')
        const privateJwk = await gw.admin('/v1/agents', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ name: 'x2', publicKeyJwk: agent.privateKeyJwk }),
        })
        await expectError(privateJwk, 400, 'bad_request')
        await expectError(await gw.admin('/v1/agents/agt_nope'), 404, 'not_found')
      })

      it('refuses every agent route without the admin key', async () => {
        const res = await fetch(`${gw.adminUrl}/v1/agents`)
        await expectError(res, 401, 'unauthenticated')
      })
    })

    describe('token exchange', () => {
      it('exchanges a signed assertion for a scoped token that opens the channel', async () => {
        const agent = await createAgent()
        const answer = await getToken(agent, 'channel:orders', { intent: 'research' })
        assert.equal(answer.token_type, 'Bearer')
        assert.equal(answer.expires_in, 900)
        const claims = claimsOf(answer.access_token)
        assert.equal(claims['sub'], agent.id)
        assert.equal(claims['iss'], gw.issuer)
        assert.equal(claims['scope'], 'channel:orders')
        const res = await call(answer.access_token)
        assert.equal(res.status, 200)
        const seen = (await res.json()) as { headers: Record<string, string> }
        assert.equal(seen.headers['x-agent-id'], agent.id)
        assert.equal(seen.headers['x-intent'], 'research')
        assert.equal(seen.headers['authorization'], undefined, 'the token is not forwarded upstream')
      })

      it('accepts a JSON token request as well as a form', async () => {
        const agent = await createAgent()
        const res = await fetch(`${gw.publicUrl}/v1/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ grant_type: jwtBearer, assertion: await assertionFor(agent, gw.issuer) }),
        })
        assert.equal(res.status, 200)
        assert.equal(res.headers.get('cache-control'), 'no-store')
      })

      it('serves the JWKS and the authorization server metadata', async () => {
        const jwks = (await (await fetch(`${gw.publicUrl}/.well-known/jwks.json`)).json()) as Jwks
        assert.ok(jwks.keys.length >= 1)
        assert.equal(jwks.keys[0]?.kty, 'OKP')
        assert.equal(jwks.keys[0]?.d, undefined)
        const meta = (await (
          await fetch(`${gw.publicUrl}/.well-known/oauth-authorization-server`)
        ).json()) as { issuer: string }
        assert.equal(meta.issuer, gw.issuer)
      })

      it('refuses a replayed assertion', async () => {
        const agent = await createAgent()
        const assertion = await assertionFor(agent, gw.issuer)
        assert.equal((await tokenRequest({ grant_type: jwtBearer, assertion })).status, 200)
        await expectError(
          await tokenRequest({ grant_type: jwtBearer, assertion }),
          400,
          'invalid_grant',
          'replayed_jti',
        )
      })

      it('refuses forged, expired, misaddressed and oversized assertions with specific reasons', async () => {
        const agent = await createAgent()
        const now = Math.floor(Date.now() / 1000)
        const base = { iss: agent.id, sub: agent.id, aud: gw.issuer, iat: now, exp: now + 60, jti: 'j' }
        const x = agent.body.keys[0]!.publicKeyJwk.x
        const cases: Array<[string, string, string, string]> = [
          ['alg none', unsignedToken(base), 'invalid_grant', 'algorithm_not_allowed'],
          [
            'HS256 with the public key',
            hmacWithPublicKey(base, x, agent.kid),
            'invalid_grant',
            'algorithm_not_allowed',
          ],
          ['malformed', 'not.a.jwt', 'invalid_grant', 'malformed'],
          [
            'expired',
            await assertionFor(agent, gw.issuer, { iat: now - 600, exp: now - 300 }),
            'invalid_grant',
            'expired',
          ],
          [
            'exp too far',
            await assertionFor(agent, gw.issuer, { exp: now + 3600 }),
            'invalid_grant',
            'exp_too_far',
          ],
          [
            'iat in the future',
            await assertionFor(agent, gw.issuer, { iat: now + 3600 }),
            'invalid_grant',
            'iat_in_future',
          ],
          [
            'wrong aud',
            await assertionFor(agent, 'https://elsewhere.example'),
            'invalid_grant',
            'wrong_audience',
          ],
          [
            'unknown kid',
            await assertionFor(agent, gw.issuer, {}, { kid: 'nope' }),
            'invalid_grant',
            'unknown_key',
          ],
          [
            'no jti',
            await assertionFor(agent, gw.issuer, { jti: undefined }),
            'invalid_grant',
            'missing_jti',
          ],
          [
            'over 8 KiB',
            await assertionFor(agent, gw.issuer, { pad: 'x'.repeat(9000) }),
            'invalid_request',
            'too_large',
          ],
        ]
        for (const [why, assertion, code, reason] of cases) {
          const res = await tokenRequest({ grant_type: jwtBearer, assertion })
          const body = (await res.json()) as ErrorBody
          assert.equal(res.status, 400, why)
          assert.equal(body.error.code, code, why)
          assert.equal(body.error.details?.['reason'], reason, `${why}: ${JSON.stringify(body)}`)
        }
      })

      it('refuses a missing grant, an unknown grant, a bad scope, a ttl over maxTtl and a wrong media type', async () => {
        const agent = await createAgent()
        await expectError(await tokenRequest({}), 400, 'invalid_request')
        await expectError(await tokenRequest({ grant_type: 'password' }), 400, 'unsupported_grant_type')
        await expectError(await tokenRequest({ grant_type: jwtBearer }), 400, 'invalid_request')
        const assertion = async () => assertionFor(agent, gw.issuer)
        await expectError(
          await tokenRequest({ grant_type: jwtBearer, assertion: await assertion(), scope: 'bad scope!' }),
          400,
          'invalid_scope',
        )
        await expectError(
          await tokenRequest({ grant_type: jwtBearer, assertion: await assertion(), ttl: '2h' }),
          400,
          'invalid_request',
        )
        const text = await fetch(`${gw.publicUrl}/v1/token`, {
          method: 'POST',
          body: 'x',
          headers: { 'content-type': 'text/plain' },
        })
        await expectError(text, 400, 'invalid_request')
        const get = await fetch(`${gw.publicUrl}/v1/token`)
        assert.equal(get.status, 405)
        assert.equal(get.headers.get('allow'), 'POST')
      })

      it('refuses a token request body over gateway.bodyLimitBytes with 413', async () => {
        const res = await fetch(`${gw.publicUrl}/v1/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: `assertion=${'a'.repeat(1_100_000)}`,
        })
        await expectError(res, 413, 'payload_too_large')
      })
    })

    describe('tokens on channel routes', () => {
      it('refuses a token without the channel in its scope with 403, and a missing role with 403', async () => {
        const agent = await createAgent({ roles: ['reader'] })
        const other = await getToken(agent, 'channel:billing')
        await expectError(await call(other.access_token), 403, 'forbidden')
        const ok = await getToken(agent)
        await expectError(await call(ok.access_token, '/orders/admin/x'), 403, 'forbidden')
        const admin = await createAgent({ roles: ['admin'] })
        assert.equal((await call((await getToken(admin)).access_token, '/orders/admin/x')).status, 200)
      })

      it('refuses garbage, a foreign signature and a malformed Authorization header with 401', async () => {
        const agent = await createAgent()
        const token = (await getToken(agent)).access_token
        const [h, p] = token.split('.')
        const forged = `${h}.${p}.${Buffer.alloc(64).toString('base64url')}`
        const refused = await call(forged)
        assert.match(refused.headers.get('www-authenticate') ?? '', /^Bearer error="invalid_token"/)
        await expectError(refused, 401, 'unauthenticated', 'bad_signature')
        await expectError(await call('abc.def.ghi'), 401, 'unauthenticated')
        const basic = await fetch(`${gw.publicUrl}/orders/1`, {
          headers: { authorization: 'Basic Zm9vOmJhcg==' },
        })
        await expectError(basic, 401, 'unauthenticated')
        // An agent's own assertion is not an access token.
        await expectError(await call(await assertionFor(agent, gw.issuer)), 401, 'unauthenticated')
      })

      it('refuses a revoked token on the very next request, and says so in introspection', async () => {
        const agent = await createAgent()
        const token = (await getToken(agent)).access_token
        assert.equal((await call(token)).status, 200)
        const introspect = async () =>
          (await (
            await gw.admin('/v1/introspect', {
              method: 'POST',
              headers: { 'content-type': 'application/x-www-form-urlencoded' },
              body: new URLSearchParams({ token }).toString(),
            })
          ).json()) as { active: boolean; sub?: string }
        assert.deepEqual(
          { active: (await introspect()).active, sub: (await introspect()).sub },
          { active: true, sub: agent.id },
        )
        const revoke = await gw.admin('/v1/revocations', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ jti: claimsOf(token)['jti'], reason: 'test' }),
        })
        assert.equal(revoke.status, 201)
        await expectError(await call(token), 401, 'token_revoked', 'revoked_token')
        assert.deepEqual(await introspect(), { active: false })
        const list = (await (await gw.admin('/v1/revocations')).json()) as {
          revocations: Array<{ jti: string; expiresAt: string | null }>
        }
        const record = list.revocations.find((r) => r.jti === claimsOf(token)['jti'])
        // Kept only as long as a token can live (tokens.maxTtl, 1 h here, plus a minute).
        const keptMs = Date.parse(record?.expiresAt ?? '') - Date.now()
        assert.ok(keptMs > 59 * 60_000 && keptMs <= 61 * 60_000, `kept for ${keptMs} ms`)
      })

      it('kills every token of an agent at once, while new tokens work again', async () => {
        const agent = await createAgent()
        const a = (await getToken(agent)).access_token
        const b = (await getToken(agent)).access_token
        await gw.admin('/v1/revocations', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ agentId: agent.id }),
        })
        await expectError(await call(a), 401, 'token_revoked', 'revoked_agent')
        await expectError(await call(b), 401, 'token_revoked', 'revoked_agent')
        // Tokens carry iat in whole seconds: a token from the same second counts as revoked.
        await new Promise((r) => setTimeout(r, 1100))
        assert.equal((await call((await getToken(agent)).access_token)).status, 200)
      })

      it('revokes by agent key: its tokens die and the key can no longer sign assertions', async () => {
        const agent = await createAgent()
        const token = (await getToken(agent)).access_token
        await gw.admin('/v1/revocations', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ agentId: agent.id, kid: agent.kid }),
        })
        await expectError(await call(token), 401, 'token_revoked', 'revoked_key')
        const res = await tokenRequest({
          grant_type: jwtBearer,
          assertion: await assertionFor(agent, gw.issuer),
        })
        await expectError(res, 400, 'invalid_grant', 'unknown_key')
      })

      it('refuses the tokens of a disabled agent and lets none be issued; re-enabling does not revive them', async () => {
        const agent = await createAgent()
        const token = (await getToken(agent)).access_token
        const patch = (status: string) =>
          gw.admin(`/v1/agents/${agent.id}`, {
            method: 'PATCH',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ status }),
          })
        assert.equal((await patch('disabled')).status, 200)
        await expectError(await call(token), 401, 'token_revoked', 'agent_disabled')
        const res = await tokenRequest({
          grant_type: jwtBearer,
          assertion: await assertionFor(agent, gw.issuer),
        })
        await expectError(res, 400, 'invalid_grant', 'agent_disabled')
        assert.equal((await patch('active')).status, 200)
        await expectError(await call(token), 401, 'token_revoked', 'revoked_agent')
      })

      it('refuses the tokens of a deleted agent', async () => {
        const agent = await createAgent()
        const token = (await getToken(agent)).access_token
        assert.equal((await gw.admin(`/v1/agents/${agent.id}`, { method: 'DELETE' })).status, 204)
        await expectError(await call(token), 401, 'token_revoked')
        const res = await tokenRequest({
          grant_type: jwtBearer,
          assertion: await assertionFor(agent, gw.issuer),
        })
        await expectError(res, 400, 'invalid_grant', 'unknown_agent')
      })

      it('takes role changes into account on the next request', async () => {
        const agent = await createAgent({ roles: ['admin'] })
        const token = (await getToken(agent)).access_token
        assert.equal((await call(token, '/orders/admin/x')).status, 200)
        await gw.admin(`/v1/agents/${agent.id}`, {
          method: 'PATCH',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ roles: [] }),
        })
        await expectError(await call(token, '/orders/admin/x'), 403, 'forbidden')
      })
    })

    describe('key-bound tokens (DPoP)', () => {
      it('binds a token to the proof key and accepts it only with a fresh proof of that key', async () => {
        const agent = await createAgent()
        const key = await newDpopKey()
        const tokenUrl = `${gw.publicUrl}/v1/token`
        const res = await tokenRequest(
          { grant_type: jwtBearer, assertion: await assertionFor(agent, gw.issuer), scope: 'channel:orders' },
          { dpop: await dpopProof(key, 'POST', tokenUrl) },
        )
        const answer = (await res.json()) as { access_token: string; token_type: string }
        assert.equal(answer.token_type, 'DPoP')
        const token = answer.access_token
        assert.equal(typeof (claimsOf(token)['cnf'] as { jkt: string }).jkt, 'string')

        const url = `${gw.publicUrl}/orders/1`
        const withProof = async (proof: string, scheme = 'DPoP') =>
          fetch(url, { headers: { authorization: `${scheme} ${token}`, dpop: proof } })
        assert.equal((await withProof(await dpopProof(key, 'GET', url, token))).status, 200)

        const replayed = await dpopProof(key, 'GET', url, token)
        assert.equal((await withProof(replayed)).status, 200)
        await expectError(await withProof(replayed), 401, 'invalid_dpop_proof', 'replayed')
        await expectError(await call(token), 401, 'invalid_dpop_proof', 'wrong_scheme')
        await expectError(
          await fetch(url, { headers: { authorization: `DPoP ${token}` } }),
          401,
          'invalid_dpop_proof',
          'missing_proof',
        )
        await expectError(
          await withProof(await dpopProof(key, 'POST', url, token)),
          401,
          'invalid_dpop_proof',
          'wrong_method',
        )
        await expectError(
          await withProof(await dpopProof(key, 'GET', `${gw.publicUrl}/orders/2`, token)),
          401,
          'invalid_dpop_proof',
          'wrong_url',
        )
        await expectError(
          await withProof(await dpopProof(key, 'GET', url, 'other-token')),
          401,
          'invalid_dpop_proof',
          'wrong_ath',
        )
        const stranger = await newDpopKey()
        await expectError(
          await withProof(await dpopProof(stranger, 'GET', url, token)),
          401,
          'invalid_dpop_proof',
          'wrong_key',
        )
        // A proof made for another server is refused even when the Host header claims that server.
        const elsewhere = await dpopProof(key, 'GET', 'http://evil.example/orders/1', token)
        const spoofed = await fetch(url, {
          headers: { authorization: `DPoP ${token}`, dpop: elsewhere, host: 'evil.example' },
        })
        await expectError(spoofed, 401, 'invalid_dpop_proof', 'wrong_url')
        assert.match(spoofed.headers.get('www-authenticate') ?? '', /^DPoP error="invalid_dpop_proof"/)
        const stale = await dpopProof(key, 'GET', url, token, { iat: Math.floor(Date.now() / 1000) - 600 })
        await expectError(await withProof(stale), 401, 'invalid_dpop_proof', 'stale')
      })

      it('refuses an unbound token for an agent that requires DPoP, at issue and at use', async () => {
        const agent = await createAgent()
        const token = (await getToken(agent)).access_token
        await gw.admin(`/v1/agents/${agent.id}`, {
          method: 'PATCH',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ requireDpop: true }),
        })
        await expectError(await call(token), 401, 'unauthenticated', 'dpop_required')
        const res = await tokenRequest({
          grant_type: jwtBearer,
          assertion: await assertionFor(agent, gw.issuer),
        })
        await expectError(res, 401, 'invalid_dpop_proof', 'missing_proof')
      })
    })

    describe('delegation', () => {
      it('narrows a token: subset scope, no later expiry, act chain and parent jti', async () => {
        const agent = await createAgent()
        const parent = (await getToken(agent, 'channel:orders channel:billing', { ttl: '10m' })).access_token
        const res = await tokenRequest({
          grant_type: tokenExchange,
          subject_token: parent,
          subject_token_type: accessTokenType,
          scope: 'channel:orders',
          ttl: '30m',
        })
        assert.equal(res.status, 200)
        const child = (await res.json()) as { access_token: string; scope: string; issued_token_type: string }
        assert.equal(child.scope, 'channel:orders')
        assert.equal(child.issued_token_type, accessTokenType)
        const c = claimsOf(child.access_token)
        const p = claimsOf(parent)
        assert.equal(c['parent_jti'], p['jti'])
        assert.deepEqual(c['act'], { sub: agent.id })
        assert.ok((c['exp'] as number) <= (p['exp'] as number))
        assert.equal((await call(child.access_token)).status, 200)
      })

      it('refuses to widen a scope through delegation, or to delegate a revoked token', async () => {
        const agent = await createAgent()
        const parent = (await getToken(agent, 'channel:orders')).access_token
        const wider = await tokenRequest({
          grant_type: tokenExchange,
          subject_token: parent,
          scope: 'channel:orders channel:billing',
        })
        await expectError(wider, 400, 'invalid_scope')
        await gw.admin('/v1/revocations', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ token: parent }),
        })
        const revoked = await tokenRequest({ grant_type: tokenExchange, subject_token: parent })
        await expectError(revoked, 400, 'invalid_grant')
      })

      it('refuses a delegated token once any token it came from is revoked', async () => {
        const agent = await createAgent()
        const parent = (await getToken(agent)).access_token
        const exchange = async (subject: string) => {
          const res = await tokenRequest({ grant_type: tokenExchange, subject_token: subject })
          assert.equal(res.status, 200)
          return ((await res.json()) as { access_token: string }).access_token
        }
        const child = await exchange(parent)
        const grandchild = await exchange(child)
        assert.equal((await call(grandchild)).status, 200)
        await gw.admin('/v1/revocations', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ token: parent }),
        })
        await expectError(await call(child), 401, 'token_revoked', 'revoked_parent')
        await expectError(await call(grandchild), 401, 'token_revoked', 'revoked_parent')
      })

      it('refuses to exchange an unbound token of an agent that requires DPoP for a bound one', async () => {
        const agent = await createAgent()
        const unbound = (await getToken(agent)).access_token
        await gw.admin(`/v1/agents/${agent.id}`, {
          method: 'PATCH',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ requireDpop: true }),
        })
        const thief = await newDpopKey()
        const res = await tokenRequest(
          { grant_type: tokenExchange, subject_token: unbound },
          { dpop: await dpopProof(thief, 'POST', `${gw.publicUrl}/v1/token`) },
        )
        await expectError(res, 400, 'invalid_grant', 'dpop_required')
      })

      it('refuses to launder a key-bound token into an unbound one', async () => {
        const agent = await createAgent()
        const key = await newDpopKey()
        const tokenUrl = `${gw.publicUrl}/v1/token`
        const bound = (await (
          await tokenRequest(
            {
              grant_type: jwtBearer,
              assertion: await assertionFor(agent, gw.issuer),
              scope: 'channel:orders',
            },
            { dpop: await dpopProof(key, 'POST', tokenUrl) },
          )
        ).json()) as { access_token: string }
        const res = await tokenRequest({ grant_type: tokenExchange, subject_token: bound.access_token })
        await expectError(res, 401, 'invalid_dpop_proof', 'missing_proof')
        const ok = await tokenRequest(
          { grant_type: tokenExchange, subject_token: bound.access_token },
          { dpop: await dpopProof(key, 'POST', tokenUrl) },
        )
        assert.equal(ok.status, 200)
        assert.equal(((await ok.json()) as { token_type: string }).token_type, 'DPoP')
      })
    })

    describe('keys and admin-issued tokens', () => {
      it('rotates the signing key: the JWKS keeps the old key and its tokens keep working', async () => {
        const agent = await createAgent()
        const before = (await getToken(agent)).access_token
        const rotated = (await (await gw.admin('/v1/keys/rotate', { method: 'POST' })).json()) as {
          kid: string
        }
        const jwks = (await (await fetch(`${gw.publicUrl}/.well-known/jwks.json`)).json()) as {
          keys: Array<{ kid: string }>
        }
        assert.ok(jwks.keys.some((k) => k.kid === rotated.kid))
        const oldKid = JSON.parse(Buffer.from(before.split('.')[0]!, 'base64url').toString()).kid as string
        assert.notEqual(oldKid, rotated.kid)
        assert.ok(jwks.keys.some((k) => k.kid === oldKid))
        assert.equal((await call(before)).status, 200)
        const after = (await getToken(agent)).access_token
        assert.equal(JSON.parse(Buffer.from(after.split('.')[0]!, 'base64url').toString()).kid, rotated.kid)
      })

      it('rotates an agent key: the old key stops after notAfterOld, the new one signs', async () => {
        const agent = await createAgent()
        const res = await gw.admin(`/v1/agents/${agent.id}/keys`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ notAfterOld: new Date(Date.now() - 1000).toISOString() }),
        })
        assert.equal(res.status, 201)
        assert.equal(res.headers.get('cache-control'), 'no-store', 'a private key is never cached')
        const asMs = await gw.admin(`/v1/agents/${agent.id}/keys`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ notAfterOld: Date.now() + 60_000 }),
        })
        assert.equal(asMs.status, 201, 'notAfterOld also takes milliseconds since the epoch')
        const added = (await res.json()) as { kid: string; privateKeyJwk: TestAgentKey['privateKeyJwk'] }
        const old = await tokenRequest({
          grant_type: jwtBearer,
          assertion: await assertionFor(agent, gw.issuer),
        })
        await expectError(old, 400, 'invalid_grant')
        const fresh = { id: agent.id, kid: added.kid, privateKeyJwk: added.privateKeyJwk }
        assert.equal((await call((await getToken(fresh)).access_token)).status, 200)
      })

      it('issues a token for an agent from the admin API, and through the original 4Runr routes', async () => {
        const agent = await createAgent()
        const res = await gw.admin(`/v1/agents/${agent.id}/tokens`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ scope: 'channel:orders', ttl: 60 }),
        })
        const issued = (await res.json()) as { access_token: string; expires_in: number }
        assert.equal(issued.expires_in, 60)
        assert.equal((await call(issued.access_token)).status, 200)

        const legacy = (await (
          await gw.admin('/api/create-agent', {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ name: 'legacy-bot', role: 'reader' }),
          })
        ).json()) as { agent_id: string; private_key: string }
        assert.match(legacy.private_key, /BEGIN PRIVATE KEY/)
        const generated = (await (
          await gw.admin('/api/generate-token', {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({
              agent_id: legacy.agent_id,
              tools: ['serpapi'],
              permissions: ['search'],
              ttl_minutes: 5,
            }),
          })
        ).json()) as { agent_token: string; scope: string }
        assert.equal(generated.scope, 'serpapi:search')
        assert.equal(claimsOf(generated.agent_token)['sub'], legacy.agent_id)
        const noAdmin = await fetch(`${gw.adminUrl}/api/generate-token`, { method: 'POST' })
        assert.equal(noAdmin.status, 401)
      })
    })
  })
