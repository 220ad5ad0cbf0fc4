import assert from 'node:assert/strict'
import { createHash, generateKeyPairSync } from 'node:crypto'
import { describe, it } from 'node:test'
import { calculateJwkThumbprint, type JWK, type JWTPayload, SignJWT } from 'jose'
import { verifyDpopProof } from './dpop.ts'
import { assertRefused, craftJwt, hs256Jwt, memoryClaimOnce, testClock } from './test-helpers.ts'

const url = 'https://gateway.example/v1/tools/serpapi/search'

function keyPair(type: 'ed25519' | 'ec' = 'ed25519') {
  const pair =
    type === 'ed25519' ? generateKeyPairSync('ed25519') : generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const alg = type === 'ed25519' ? 'EdDSA' : 'ES256'
  return { alg, privateKey: pair.privateKey, jwk: pair.publicKey.export({ format: 'jwk' }) as JWK }
}

function setup() {
  const clock = testClock()
  const replay = memoryClaimOnce()
  const deps = { claimOnce: replay.claimOnce, now: clock.now }
  const key = keyPair()
  const seconds = () => Math.floor(clock.now() / 1000)
  let counter = 0
  const claims = (extra: JWTPayload = {}): JWTPayload => ({
    htm: 'POST',
    htu: url,
    iat: seconds(),
    jti: `proof-${++counter}`,
    ...extra,
  })
  const proof = (payload: JWTPayload = claims(), header: Record<string, unknown> = {}, signer = key) =>
    new SignJWT(payload)
      .setProtectedHeader({ typ: 'dpop+jwt', alg: signer.alg, jwk: signer.jwk, ...header })
      .sign(signer.privateKey)
  return { clock, replay, deps, key, seconds, claims, proof }
}

const expect = { method: 'POST', urls: [url] }
const ath = (token: string) => createHash('sha256').update(token).digest('base64url')

describe('verifyDpopProof', () => {
  it('accepts a proof and answers with the thumbprint of its key', async () => {
    const { deps, key, proof, replay } = setup()
    const result = await verifyDpopProof(await proof(), expect, deps)
    assert.equal(result.jkt, await calculateJwkThumbprint(key.jwk))
    assert.equal(result.claims.htm, 'POST')
    assert.deepEqual([...replay.claims], [[`dpop:${result.jkt}:proof-1`, 120_000]])
  })

  it('accepts ES256 proofs as well as EdDSA ones', async () => {
    const { deps, claims, proof } = setup()
    const ec = keyPair('ec')
    const result = await verifyDpopProof(await proof(claims(), {}, ec), expect, deps)
    assert.equal(result.jkt, await calculateJwkThumbprint(ec.jwk))
  })

  it('compares htu without query and fragment, after URL normalisation', async () => {
    const { deps, claims, proof } = setup()
    const htu = 'HTTPS://Gateway.Example:443/v1/tools/serpapi/search?q=1#frag'
    await verifyDpopProof(await proof(claims({ htu })), { method: 'POST', urls: [`${url}?other=2`] }, deps)
  })

  it('accepts any of several acceptable URLs', async () => {
    const { deps, claims, proof } = setup()
    const urls = ['http://10.0.0.1:8080/v1/token', 'https://gateway.example/v1/token']
    await verifyDpopProof(await proof(claims({ htu: urls[1] })), { method: 'POST', urls }, deps)
  })

  it('refuses a missing proof', async () => {
    const { deps } = setup()
    await assertRefused(verifyDpopProof(undefined, expect, deps), 'invalid_dpop_proof', 'missing_proof')
    await assertRefused(verifyDpopProof('', expect, deps), 'invalid_dpop_proof', 'missing_proof')
  })

  it('refuses text that is not one compact JWS, such as two proofs joined by a comma', async () => {
    const { deps, proof } = setup()
    const joined = `${await proof()}, ${await proof()}`
    for (const text of ['abc', 'a.b', joined, 'x'.repeat(9000)]) {
      await assertRefused(verifyDpopProof(text, expect, deps), 'invalid_dpop_proof', 'malformed')
    }
  })

  it('refuses a JWT that is not typed dpop+jwt', async () => {
    const { deps, claims, proof } = setup()
    for (const typ of ['JWT', 'at+jwt', undefined]) {
      await assertRefused(
        verifyDpopProof(await proof(claims(), { typ }), expect, deps),
        'invalid_dpop_proof',
        'wrong_type',
      )
    }
  })

  it('refuses alg none, HMAC and RSA proofs', async () => {
    const { deps, claims, key } = setup()
    const none = craftJwt({ typ: 'dpop+jwt', alg: 'none', jwk: key.jwk }, claims())
    await assertRefused(verifyDpopProof(none, expect, deps), 'invalid_dpop_proof', 'algorithm_not_allowed')
    const hmac = hs256Jwt({ typ: 'dpop+jwt', jwk: key.jwk }, claims(), Buffer.from(key.jwk.x!, 'base64url'))
    await assertRefused(verifyDpopProof(hmac, expect, deps), 'invalid_dpop_proof', 'algorithm_not_allowed')
    const rsa = craftJwt({ typ: 'dpop+jwt', alg: 'RS256', jwk: key.jwk }, claims(), 'c2ln')
    await assertRefused(verifyDpopProof(rsa, expect, deps), 'invalid_dpop_proof', 'algorithm_not_allowed')
  })

  it('refuses a proof whose jwk is missing, private, or of the wrong type for its alg', async () => {
    const { deps, claims, proof, key } = setup()
    const privateJwk = key.privateKey.export({ format: 'jwk' }) as JWK
    const ec = keyPair('ec')
    for (const jwk of [undefined, privateJwk, ec.jwk, { kty: 'OKP', crv: 'Ed25519', x: 'short' }]) {
      // jose refuses to sign with a private jwk in the header, so build those by hand.
      const text = craftJwt({ typ: 'dpop+jwt', alg: 'EdDSA', jwk }, claims(), 'c2ln')
      await assertRefused(verifyDpopProof(text, expect, deps), 'invalid_dpop_proof', 'bad_key')
    }
    await assertRefused(
      verifyDpopProof(await proof(claims(), { jwk: ec.jwk }), expect, deps),
      'invalid_dpop_proof',
      'bad_key',
    )
  })

  it('refuses a proof not signed by the key it carries', async () => {
    const { deps, claims, proof, key, replay } = setup()
    const other = keyPair()
    const forged = await proof(claims(), { jwk: key.jwk }, other)
    await assertRefused(verifyDpopProof(forged, expect, deps), 'invalid_dpop_proof', 'bad_signature')
    assert.equal(replay.claims.size, 0)
  })

  it('refuses a proof for another method or another URL', async () => {
    const { deps, claims, proof } = setup()
    for (const htm of ['GET', 'post']) {
      await assertRefused(
        verifyDpopProof(await proof(claims({ htm })), expect, deps),
        'invalid_dpop_proof',
        'wrong_method',
      )
    }
    for (const htu of [
      'https://gateway.example/v1/tools/openai/chat',
      'http://gateway.example/v1/tools/serpapi/search',
      'https://gateway.example:8443/v1/tools/serpapi/search',
      'https://evil.example/v1/tools/serpapi/search',
      'not a url',
    ]) {
      await assertRefused(
        verifyDpopProof(await proof(claims({ htu })), expect, deps),
        'invalid_dpop_proof',
        'wrong_url',
      )
    }
  })

  it('refuses a proof missing htm, htu, iat or jti', async () => {
    const { deps, claims, proof } = setup()
    for (const name of ['htm', 'htu', 'iat', 'jti']) {
      const payload = claims()
      delete payload[name]
      await assertRefused(
        verifyDpopProof(await proof(payload), expect, deps),
        'invalid_dpop_proof',
        'missing_claim',
      )
    }
  })

  it('refuses a proof made more than 60 s before or after now', async () => {
    const { deps, claims, proof, seconds } = setup()
    for (const iat of [seconds() - 61, seconds() + 61]) {
      await assertRefused(
        verifyDpopProof(await proof(claims({ iat })), expect, deps),
        'invalid_dpop_proof',
        'stale',
      )
    }
    await verifyDpopProof(await proof(claims({ iat: seconds() - 60 })), expect, deps)
    await verifyDpopProof(await proof(claims({ iat: seconds() + 60 })), expect, deps)
  })

  it('requires ath to be the hash of the access token it accompanies', async () => {
    const { deps, claims, proof } = setup()
    const withToken = { ...expect, accessToken: 'the-token' }
    await verifyDpopProof(await proof(claims({ ath: ath('the-token') })), withToken, deps)
    for (const extra of [{}, { ath: ath('another-token') }, { ath: 42 }]) {
      await assertRefused(
        verifyDpopProof(await proof(claims(extra)), withToken, deps),
        'invalid_dpop_proof',
        'wrong_ath',
      )
    }
  })

  it('refuses a proof by another key than the one the token is bound to', async () => {
    const { deps, key, claims, proof } = setup()
    const jkt = await calculateJwkThumbprint(key.jwk)
    await verifyDpopProof(await proof(), { ...expect, jkt }, deps)
    await assertRefused(
      verifyDpopProof(await proof(claims(), {}, keyPair()), { ...expect, jkt }, deps),
      'invalid_dpop_proof',
      'wrong_key',
    )
  })

  it('refuses a replayed proof, and spends no jti on a refused one', async () => {
    const { deps, claims, proof, replay } = setup()
    const once = await proof()
    await verifyDpopProof(once, expect, deps)
    await assertRefused(verifyDpopProof(once, expect, deps), 'invalid_dpop_proof', 'replayed')
    const wrongUrl = await proof(claims({ htu: 'https://elsewhere.example/', jti: 'kept' }))
    await assertRefused(verifyDpopProof(wrongUrl, expect, deps), 'invalid_dpop_proof', 'wrong_url')
    assert.equal(replay.claims.size, 1)
    await verifyDpopProof(await proof(claims({ jti: 'kept' })), expect, deps)
  })
})
