import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import { decodeJwt, decodeProtectedHeader, type JWTPayload, SignJWT } from 'jose'
import { type AccessClaims, createTokenIssuer, createTokenVerifier } from './access-token.ts'
import { createKeyRing, retiredKeyGraceMs } from './key-ring.ts'
import { assertRefused, craftJwt, hs256Jwt, memorySigningKeyStore, testClock } from './test-helpers.ts'

const issuer = 'https://gateway.example'
const hour = 3_600_000

async function setup() {
  const clock = testClock()
  const keyRing = await createKeyRing({
    store: memorySigningKeyStore(),
    masterKey: randomBytes(32),
    rotateEveryMs: 24 * hour,
    maxTtlMs: hour,
    now: clock.now,
  })
  const tokens = createTokenIssuer({ keyRing, issuer, now: clock.now })
  const verifier = createTokenVerifier({ keyRing, issuer, now: clock.now })
  // Signs anything with the gateway's real key: for tokens that are authentic but wrong.
  const signed = (payload: JWTPayload, header: Record<string, unknown> = {}) => {
    const { kid, privateKey } = keyRing.active()
    return new SignJWT(payload)
      .setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid, ...header })
      .sign(privateKey)
  }
  const seconds = () => Math.floor(clock.now() / 1000)
  const claims = (extra: JWTPayload = {}): JWTPayload => ({
    iss: issuer,
    sub: 'agent-1',
    aud: issuer,
    iat: seconds(),
    exp: seconds() + 600,
    jti: 'jti-1',
    scope: 'serpapi:search',
    ...extra,
  })
  return { clock, keyRing, tokens, verifier, signed, claims, seconds }
}

describe('createTokenIssuer', () => {
  it('signs an at+jwt with the active key carrying the standard claims', async () => {
    const { tokens, keyRing, seconds } = await setup()
    const issued = await tokens.issue({
      sub: 'agent-1',
      scope: ['serpapi:search', 'channel:orders'],
      ttlMs: 900_000,
    })
    assert.deepEqual(decodeProtectedHeader(issued.token), {
      alg: 'EdDSA',
      typ: 'at+jwt',
      kid: keyRing.active().kid,
    })
    const payload = decodeJwt(issued.token)
    assert.deepEqual(payload, issued.claims)
    assert.equal(payload.iss, issuer)
    assert.equal(payload.aud, issuer)
    assert.equal(payload.sub, 'agent-1')
    assert.equal(payload.iat, seconds())
    assert.equal(payload.exp, seconds() + 900)
    assert.equal(issued.expiresIn, 900)
    assert.equal(payload['scope'], 'serpapi:search channel:orders')
    assert.match(payload.jti!, /^[A-Za-z0-9_-]{22}$/, '128 random bits')
    assert.deepEqual(Object.keys(payload).sort(), ['aud', 'exp', 'iat', 'iss', 'jti', 'scope', 'sub'])
  })

  it('gives every token its own jti', async () => {
    const { tokens } = await setup()
    const a = await tokens.issue({ sub: 'a', scope: [], ttlMs: 60_000 })
    const b = await tokens.issue({ sub: 'a', scope: [], ttlMs: 60_000 })
    assert.notEqual(a.claims.jti, b.claims.jti)
  })

  it('carries intent, the agent key, the key binding and the delegation chain when given', async () => {
    const { tokens } = await setup()
    const act = { sub: 'agent-2', act: { sub: 'agent-3' } }
    const issued = await tokens.issue({
      sub: 'agent-1',
      scope: [],
      intent: 'research',
      ttlMs: 60_000,
      akid: 'key-1',
      jkt: 'thumb',
      act,
      parentJti: 'parent',
    })
    const payload = decodeJwt(issued.token)
    assert.equal(payload['intent'], 'research')
    assert.equal(payload['akid'], 'key-1')
    assert.deepEqual(payload['cnf'], { jkt: 'thumb' })
    assert.deepEqual(payload['act'], act)
    assert.equal(payload['parent_jti'], 'parent')
  })

  it('refuses a lifetime beyond the key ring maxTtlMs, which the JWKS grace is sized for', async () => {
    const { tokens } = await setup()
    await assert.rejects(tokens.issue({ sub: 'a', scope: [], ttlMs: hour + 1 }), RangeError)
    await assert.rejects(tokens.issue({ sub: 'a', scope: [], ttlMs: 0 }), RangeError)
    assert.equal((await tokens.issue({ sub: 'a', scope: [], ttlMs: hour })).expiresIn, 3600)
  })
})

describe('createTokenVerifier', () => {
  it('verifies a token it issued and returns its claims', async () => {
    const { tokens, verifier } = await setup()
    const issued = await tokens.issue({
      sub: 'agent-1',
      scope: ['a:b'],
      ttlMs: 60_000,
      jkt: 'thumb',
      akid: 'k',
    })
    const result = verifier.verify(issued.token)
    assert.ok(result instanceof Promise, 'a miss verifies asynchronously')
    const claims = await result
    assert.deepEqual(claims, issued.claims)
    assert.ok(Object.isFrozen(claims))
    assert.ok(Object.isFrozen(claims.cnf))
  })

  it('answers a cache hit synchronously, not with a Promise', async () => {
    const { tokens, verifier } = await setup()
    const { token } = await tokens.issue({ sub: 'agent-1', scope: [], ttlMs: 60_000 })
    const first = await verifier.verify(token)
    const hit = verifier.verify(token)
    assert.ok(!(hit instanceof Promise))
    assert.equal(hit, first)
  })

  it('shares one verification among concurrent first uses of a token', async () => {
    const { tokens, verifier } = await setup()
    const { token } = await tokens.issue({ sub: 'agent-1', scope: [], ttlMs: 60_000 })
    const a = verifier.verify(token)
    const b = verifier.verify(token)
    assert.ok(a instanceof Promise)
    assert.equal(a, b)
    assert.equal((await a).sub, 'agent-1')
    const garbage = 'a.b.c'
    const x = verifier.verify(garbage)
    const y = verifier.verify(garbage)
    assert.equal(x, y)
    await assert.rejects(x as Promise<AccessClaims>)
    // A refused token is not remembered as refused: the next try verifies again.
    const z = verifier.verify(garbage)
    assert.notEqual(z, x)
    await assert.rejects(z as Promise<AccessClaims>)
  })

  it('never answers from the cache once the token has expired', async () => {
    const { clock, tokens, verifier } = await setup()
    const { token, claims } = await tokens.issue({ sub: 'agent-1', scope: [], ttlMs: 60_000 })
    await verifier.verify(token)
    clock.advance(claims.exp * 1000 - clock.now() - 1)
    assert.ok(!(verifier.verify(token) instanceof Promise), 'still cached one millisecond before exp')
    clock.advance(1)
    const expired = verifier.verify(token)
    assert.ok(expired instanceof Promise)
    await assertRefused(expired, 'token_expired', 'expired')
    await assertRefused(verifier.verify(token), 'token_expired', 'expired')
  })

  it('verifies again after forget and clear', async () => {
    const { tokens, verifier } = await setup()
    const { token } = await tokens.issue({ sub: 'agent-1', scope: [], ttlMs: 60_000 })
    await verifier.verify(token)
    verifier.forget(token)
    assert.ok(verifier.verify(token) instanceof Promise)
    await verifier.verify(token)
    verifier.clear()
    assert.ok(verifier.verify(token) instanceof Promise)
  })

  it('refuses an expired token with token_expired', async () => {
    const { signed, claims, seconds, verifier } = await setup()
    const token = await signed(claims({ iat: seconds() - 120, exp: seconds() - 60 }))
    await assertRefused(verifier.verify(token), 'token_expired', 'expired', token)
  })

  it('refuses an unsigned alg:none token', async () => {
    const { verifier, claims, keyRing } = await setup()
    const token = craftJwt({ alg: 'none', typ: 'at+jwt', kid: keyRing.active().kid }, claims())
    await assertRefused(verifier.verify(token), 'unauthenticated', 'algorithm_not_allowed', token)
  })

  it('refuses an HS256 token keyed with the bytes of the public signing key', async () => {
    const { verifier, claims, keyRing } = await setup()
    const jwk = keyRing.jwks().keys[0]!
    const token = hs256Jwt({ typ: 'at+jwt', kid: jwk.kid }, claims(), Buffer.from(jwk.x, 'base64url'))
    await assertRefused(verifier.verify(token), 'unauthenticated', 'algorithm_not_allowed', token)
  })

  it('refuses a JWT signed by the gateway that is not typed at+jwt', async () => {
    const { verifier, signed, claims } = await setup()
    await assertRefused(
      verifier.verify(await signed(claims(), { typ: 'JWT' })),
      'unauthenticated',
      'wrong_type',
    )
    await assertRefused(
      verifier.verify(await signed(claims(), { typ: undefined })),
      'unauthenticated',
      'wrong_type',
    )
  })

  it('refuses a token whose kid is unknown or missing', async () => {
    const { verifier, signed, claims } = await setup()
    await assertRefused(
      verifier.verify(await signed(claims(), { kid: 'other' })),
      'unauthenticated',
      'unknown_key',
    )
    await assertRefused(
      verifier.verify(await signed(claims(), { kid: undefined })),
      'unauthenticated',
      'unknown_key',
    )
  })

  it('refuses a token whose payload was changed after signing', async () => {
    const { verifier, tokens } = await setup()
    const { token } = await tokens.issue({ sub: 'agent-1', scope: ['a:b'], ttlMs: 60_000 })
    const [header, payload, signature] = token.split('.') as [string, string, string]
    const widened = { ...JSON.parse(Buffer.from(payload, 'base64url').toString()), scope: 'a:*' }
    const forged = `${header}.${Buffer.from(JSON.stringify(widened)).toString('base64url')}.${signature}`
    await assertRefused(verifier.verify(forged), 'unauthenticated', 'bad_signature', forged)
  })

  it('refuses a token for another audience or from another issuer', async () => {
    const { verifier, signed, claims } = await setup()
    await assertRefused(
      verifier.verify(await signed(claims({ aud: 'https://elsewhere' }))),
      'unauthenticated',
      'wrong_audience',
    )
    await assertRefused(
      verifier.verify(await signed(claims({ iss: 'https://elsewhere' }))),
      'unauthenticated',
      'wrong_issuer',
    )
  })

  it('refuses a token missing exp, iat, sub, jti or scope', async () => {
    const { verifier, signed, claims } = await setup()
    for (const name of ['exp', 'iat', 'sub', 'jti', 'scope', 'aud']) {
      const payload = claims()
      delete payload[name]
      await assertRefused(verifier.verify(await signed(payload)), 'unauthenticated', 'missing_claim')
    }
  })

  it('refuses a token issued or valid only in the future beyond 30 s of skew', async () => {
    const { verifier, signed, claims, seconds } = await setup()
    await assertRefused(
      verifier.verify(await signed(claims({ iat: seconds() + 3600, exp: seconds() + 4000 }))),
      'unauthenticated',
      'iat_in_future',
    )
    await assertRefused(
      verifier.verify(await signed(claims({ nbf: seconds() + 120 }))),
      'unauthenticated',
      'not_yet_valid',
    )
    const skewed = await verifier.verify(await signed(claims({ iat: seconds() + 30, nbf: seconds() + 30 })))
    assert.equal(skewed.sub, 'agent-1')
  })

  it('refuses claims of the wrong shape', async () => {
    const { verifier, signed, claims } = await setup()
    for (const extra of [
      { cnf: 'thumb' },
      { cnf: {} },
      { act: { act: { sub: 'x' } } },
      { act: 'agent' },
      { intent: 7 },
      { parent_jti: '' },
    ]) {
      await assertRefused(verifier.verify(await signed(claims(extra))), 'unauthenticated', 'invalid_claim')
    }
  })

  it('refuses a delegation chain deeper than eight links', async () => {
    const { verifier, signed, claims } = await setup()
    let act: Record<string, unknown> = { sub: 'a0' }
    for (let i = 1; i < 9; i++) act = { sub: `a${i}`, act }
    await assertRefused(verifier.verify(await signed(claims({ act }))), 'unauthenticated', 'invalid_claim')
  })

  it('keeps only the known claims of a verified token', async () => {
    const { verifier, signed, claims } = await setup()
    const result: AccessClaims = await verifier.verify(await signed(claims({ admin: true, intent: 'ops' })))
    assert.equal((result as unknown as Record<string, unknown>)['admin'], undefined)
    assert.equal(result.intent, 'ops')
  })

  it('refuses text that is not a compact JWS, without repeating it', async () => {
    const { verifier } = await setup()
    for (const token of ['', 'abc', 'a.b', 'a.b.c.d.e', '!!!.###.$$$', 'x'.repeat(9000)]) {
      await assertRefused(verifier.verify(token), 'unauthenticated', 'malformed', token || undefined)
    }
  })

  it('refuses a token signed by a rotated-out key once its grace has ended, even an unexpired one', async () => {
    const { clock, keyRing, verifier, claims } = await setup()
    const old = keyRing.active()
    const signOld = () =>
      new SignJWT(claims())
        .setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: old.kid })
        .sign(old.privateKey)
    await keyRing.rotate()
    clock.advance(hour + retiredKeyGraceMs - 1000)
    assert.equal((await verifier.verify(await signOld())).sub, 'agent-1', 'within the grace')
    clock.advance(1000)
    const late = await signOld()
    await assertRefused(verifier.verify(late), 'unauthenticated', 'unknown_key', late)
  })
})
