import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { importJWK, type JWTPayload, SignJWT } from 'jose'
import type { Agent } from '../store/types.ts'
import { verifyAssertion } from './assertion.ts'
import { generateAgentKeyPair, type PrivateJwk } from './jwk.ts'
import { assertRefused, craftJwt, hs256Jwt, memoryClaimOnce, testClock } from './test-helpers.ts'

const issuer = 'https://gateway.example'

async function setup(options: { status?: Agent['status']; keys?: number } = {}) {
  const clock = testClock()
  const pairs = Array.from({ length: options.keys ?? 1 }, () => generateAgentKeyPair())
  const agent: Agent = {
    id: 'agt_1',
    name: 'research-bot',
    labels: {},
    roles: [],
    status: options.status ?? 'active',
    requireDpop: false,
    source: 'api',
    createdAt: clock.now(),
    updatedAt: clock.now(),
    keys: pairs.map((p) => ({ kid: p.kid, jwk: p.publicJwk, createdAt: clock.now(), notAfter: null })),
  }
  const replay = memoryClaimOnce()
  const deps = {
    issuer,
    findAgent: async (id: string) => (id === agent.id ? agent : undefined),
    claimOnce: replay.claimOnce,
    now: clock.now,
  }
  const seconds = () => Math.floor(clock.now() / 1000)
  const claims = (extra: JWTPayload = {}): JWTPayload => ({
    iss: agent.id,
    sub: agent.id,
    aud: issuer,
    iat: seconds(),
    exp: seconds() + 60,
    jti: 'jti-1',
    ...extra,
  })
  const sign = async (
    payload: JWTPayload,
    header: Record<string, unknown> = {},
    key: PrivateJwk = pairs[0]!.privateJwk,
  ) =>
    new SignJWT(payload)
      .setProtectedHeader({ alg: 'EdDSA', kid: key.kid, ...header })
      .sign(await importJWK(key, 'EdDSA'))
  return { agent, pairs, deps, replay, clock, seconds, claims, sign }
}

describe('verifyAssertion', () => {
  it('accepts an assertion signed by the agent key and spends its jti until exp plus skew', async () => {
    const { agent, deps, replay, sign, claims, pairs } = await setup()
    const result = await verifyAssertion(await sign(claims()), deps)
    assert.equal(result.agent, agent)
    assert.equal(result.kid, pairs[0]!.kid)
    assert.equal(result.claims.jti, 'jti-1')
    assert.deepEqual([...replay.claims], [['assertion:agt_1:jti-1', 90_000]])
  })

  it('without a kid, finds which of the agent keys signed it', async () => {
    const { deps, sign, claims, pairs } = await setup({ keys: 3 })
    const result = await verifyAssertion(await sign(claims(), { kid: undefined }, pairs[2]!.privateJwk), deps)
    assert.equal(result.kid, pairs[2]!.kid)
  })

  it('accepts an aud array that contains the issuer', async () => {
    const { deps, sign, claims } = await setup()
    const result = await verifyAssertion(await sign(claims({ aud: ['https://other', issuer] })), deps)
    assert.deepEqual(result.claims.aud, ['https://other', issuer])
  })

  it('refuses an assertion over 8 KiB with invalid_request before parsing it', async () => {
    const { deps, sign, claims } = await setup()
    const big = await sign(claims({ padding: 'x'.repeat(8192) }))
    await assertRefused(verifyAssertion(big, deps), 'invalid_request', 'too_large', big)
    await assertRefused(verifyAssertion('é'.repeat(4097), deps), 'invalid_request', 'too_large')
  })

  it('refuses text that is not a compact JWS with a JSON claims set', async () => {
    const { deps } = await setup()
    for (const text of ['', 'abc', 'a.b', 'a.b.c.d.e', 'eyJhbGciOiJFZERTQSJ9.bm90IGpzb24.c2ln']) {
      await assertRefused(verifyAssertion(text, deps), 'invalid_grant', 'malformed')
    }
  })

  it('refuses an unsigned alg:none assertion', async () => {
    const { deps, claims, pairs, replay } = await setup()
    const token = craftJwt({ alg: 'none', kid: pairs[0]!.kid }, claims())
    await assertRefused(verifyAssertion(token, deps), 'invalid_grant', 'algorithm_not_allowed', token)
    assert.equal(replay.claims.size, 0)
  })

  it('refuses an HS256 assertion keyed with the agent public key bytes (algorithm confusion)', async () => {
    const { deps, claims, pairs } = await setup()
    const token = hs256Jwt({ kid: pairs[0]!.kid }, claims(), Buffer.from(pairs[0]!.publicJwk.x, 'base64url'))
    await assertRefused(verifyAssertion(token, deps), 'invalid_grant', 'algorithm_not_allowed', token)
    // The same trick with the JWK text as the secret.
    const textual = hs256Jwt({}, claims(), Buffer.from(JSON.stringify(pairs[0]!.publicJwk)))
    await assertRefused(verifyAssertion(textual, deps), 'invalid_grant', 'algorithm_not_allowed')
  })

  it('refuses RS256 and every other algorithm', async () => {
    const { deps, claims } = await setup()
    for (const alg of ['RS256', 'ES256', 'PS256', 'Ed25519', 'EDDSA']) {
      const token = craftJwt({ alg }, claims(), 'c2lnbmF0dXJl')
      await assertRefused(verifyAssertion(token, deps), 'invalid_grant', 'algorithm_not_allowed')
    }
  })

  it('refuses an assertion whose iss and sub are missing or differ', async () => {
    const { deps, sign, claims } = await setup()
    await assertRefused(
      verifyAssertion(await sign(claims({ iss: undefined })), deps),
      'invalid_grant',
      'missing_iss',
    )
    await assertRefused(
      verifyAssertion(await sign(claims({ sub: undefined })), deps),
      'invalid_grant',
      'missing_sub',
    )
    await assertRefused(
      verifyAssertion(await sign(claims({ iss: 'agt_2' })), deps),
      'invalid_grant',
      'iss_sub_mismatch',
    )
  })

  it('refuses an assertion from an unknown agent', async () => {
    const { deps, sign, claims } = await setup()
    await assertRefused(
      verifyAssertion(await sign(claims({ iss: 'agt_x', sub: 'agt_x' })), deps),
      'invalid_grant',
      'unknown_agent',
    )
  })

  it('refuses a disabled agent, even with a valid signature', async () => {
    const { deps, sign, claims, replay } = await setup({ status: 'disabled' })
    await assertRefused(verifyAssertion(await sign(claims()), deps), 'invalid_grant', 'agent_disabled')
    assert.equal(replay.claims.size, 0)
  })

  it('refuses a kid the agent does not have, and a key past its notAfter', async () => {
    const { deps, sign, claims, agent, clock } = await setup()
    await assertRefused(
      verifyAssertion(await sign(claims(), { kid: 'nope' }), deps),
      'invalid_grant',
      'unknown_key',
    )
    agent.keys[0]!.notAfter = clock.now()
    await assertRefused(verifyAssertion(await sign(claims()), deps), 'invalid_grant', 'key_expired')
    await assertRefused(
      verifyAssertion(await sign(claims(), { kid: undefined }), deps),
      'invalid_grant',
      'key_expired',
    )
    agent.keys = []
    await assertRefused(
      verifyAssertion(await sign(claims(), { kid: undefined }), deps),
      'invalid_grant',
      'unknown_key',
    )
  })

  it('refuses an assertion signed by a key the agent never registered', async () => {
    const { deps, claims, sign, pairs, replay } = await setup()
    const stranger = generateAgentKeyPair().privateJwk
    const named = await sign(claims(), { kid: pairs[0]!.kid }, stranger)
    await assertRefused(verifyAssertion(named, deps), 'invalid_grant', 'bad_signature', named)
    const unnamed = await sign(claims(), { kid: undefined }, stranger)
    await assertRefused(verifyAssertion(unnamed, deps), 'invalid_grant', 'bad_signature')
    assert.equal(replay.claims.size, 0, 'a forged assertion does not spend the real jti')
  })

  it('refuses an assertion meant for another audience', async () => {
    const { deps, sign, claims } = await setup()
    for (const aud of ['https://elsewhere', ['https://elsewhere'], undefined]) {
      await assertRefused(
        verifyAssertion(await sign(claims({ aud })), deps),
        'invalid_grant',
        'wrong_audience',
      )
    }
  })

  it('refuses an expired assertion, one without exp, and one living longer than 5 minutes', async () => {
    const { deps, sign, claims, seconds } = await setup()
    await assertRefused(
      verifyAssertion(await sign(claims({ iat: seconds() - 120, exp: seconds() - 1 })), deps),
      'invalid_grant',
      'expired',
    )
    await assertRefused(
      verifyAssertion(await sign(claims({ exp: undefined })), deps),
      'invalid_grant',
      'missing_exp',
    )
    await assertRefused(
      verifyAssertion(await sign(claims({ exp: seconds() + 331 })), deps),
      'invalid_grant',
      'exp_too_far',
    )
    const longest = await verifyAssertion(await sign(claims({ exp: seconds() + 330 })), deps)
    assert.equal(longest.claims.exp, seconds() + 330)
  })

  it('refuses an assertion issued more than 30 s in the future', async () => {
    const { deps, sign, claims, seconds } = await setup()
    await assertRefused(
      verifyAssertion(await sign(claims({ iat: seconds() + 300 })), deps),
      'invalid_grant',
      'iat_in_future',
    )
    await assertRefused(
      verifyAssertion(await sign(claims({ nbf: seconds() + 120 })), deps),
      'invalid_grant',
      'not_yet_valid',
    )
    await verifyAssertion(await sign(claims({ iat: seconds() + 30, jti: 'skewed' })), deps)
  })

  it('refuses an assertion without a jti', async () => {
    const { deps, sign, claims } = await setup()
    await assertRefused(
      verifyAssertion(await sign(claims({ jti: undefined })), deps),
      'invalid_grant',
      'missing_jti',
    )
    await assertRefused(
      verifyAssertion(await sign(claims({ jti: '' })), deps),
      'invalid_grant',
      'missing_jti',
    )
  })

  it('refuses a replayed jti', async () => {
    const { deps, sign, claims } = await setup()
    const token = await sign(claims())
    await verifyAssertion(token, deps)
    await assertRefused(verifyAssertion(token, deps), 'invalid_grant', 'replayed_jti', token)
    await assertRefused(verifyAssertion(await sign(claims()), deps), 'invalid_grant', 'replayed_jti')
    await verifyAssertion(await sign(claims({ jti: 'jti-2' })), deps)
  })
})
