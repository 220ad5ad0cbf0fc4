import assert from 'node:assert/strict'
import { generateKeyPairSync } from 'node:crypto'
import { describe, it } from 'node:test'
import { calculateJwkThumbprint, importJWK, jwtVerify, SignJWT } from 'jose'
import { GatewayError } from '../errors/gateway-error.ts'
import { generateAgentKeyPair, jwkThumbprint, parsePublicJwk } from './jwk.ts'

// RFC 8037 appendix A.1 and A.3.
const rfcX = '11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo'
const rfcThumbprint = 'kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k'

function refusal(value: unknown): string {
  try {
    parsePublicJwk(value)
  } catch (err) {
    assert.ok(err instanceof GatewayError)
    assert.equal(err.code, 'bad_request')
    return err.message
  }
  assert.fail('the JWK was accepted')
}

describe('parsePublicJwk', () => {
  it('accepts an Ed25519 public JWK and keeps only kty, crv, x and kid', () => {
    assert.deepEqual(parsePublicJwk({ kty: 'OKP', crv: 'Ed25519', x: rfcX }), {
      kty: 'OKP',
      crv: 'Ed25519',
      x: rfcX,
    })
    assert.deepEqual(
      parsePublicJwk({ kty: 'OKP', crv: 'Ed25519', x: rfcX, kid: 'k-1', alg: 'EdDSA', use: 'sig' }),
      {
        kty: 'OKP',
        crv: 'Ed25519',
        x: rfcX,
        kid: 'k-1',
      },
    )
  })

  it('refuses a JWK carrying the private key d and says why', () => {
    const { privateJwk } = generateAgentKeyPair()
    assert.match(refusal(privateJwk), /private key/)
    assert.match(refusal({ kty: 'OKP', crv: 'Ed25519', x: rfcX, d: 'anything' }), /private key/)
  })

  it('refuses symmetric, RSA, EC and X25519 keys', () => {
    assert.match(refusal({ kty: 'oct', k: 'c2VjcmV0' }), /private key/)
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ format: 'jwk' })
    assert.match(refusal(rsa), /Ed25519/)
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' })
    assert.match(refusal(ec), /Ed25519/)
    assert.match(refusal({ kty: 'OKP', crv: 'X25519', x: rfcX }), /Ed25519/)
  })

  it('refuses an x that is not 32 bytes of canonical unpadded base64url', () => {
    for (const x of [
      undefined,
      42,
      '',
      Buffer.alloc(31).toString('base64url'),
      Buffer.alloc(33).toString('base64url'),
      `${rfcX}=`,
      Buffer.from(rfcX, 'base64url').toString('base64'),
      // Same bytes, but the unused low bits of the last character are set.
      `${rfcX.slice(0, 42)}p`,
    ]) {
      assert.match(refusal({ kty: 'OKP', crv: 'Ed25519', x }), /32-byte/, String(x))
    }
  })

  it('refuses values that are not JSON objects', () => {
    for (const value of [null, undefined, 'jwk', 7, [rfcX]]) assert.match(refusal(value), /JSON object/)
  })

  it('refuses a key declared for another algorithm or for encryption', () => {
    assert.match(refusal({ kty: 'OKP', crv: 'Ed25519', x: rfcX, alg: 'ES256' }), /alg/)
    assert.match(refusal({ kty: 'OKP', crv: 'Ed25519', x: rfcX, use: 'enc' }), /use/)
  })

  it('refuses a kid that is empty, too long, not a string or holds spaces', () => {
    for (const kid of ['', 'a'.repeat(129), 12, 'has space', 'line\nbreak']) {
      assert.match(refusal({ kty: 'OKP', crv: 'Ed25519', x: rfcX, kid }), /kid/)
    }
  })
})

describe('jwkThumbprint', () => {
  it('computes the RFC 8037 appendix A.3 thumbprint, as jose does', async () => {
    const jwk = { kty: 'OKP', crv: 'Ed25519', x: rfcX } as const
    assert.equal(jwkThumbprint(jwk), rfcThumbprint)
    const other = generateAgentKeyPair().publicJwk
    assert.equal(jwkThumbprint(other), await calculateJwkThumbprint(other))
  })

  it('ignores kid, so a key has one thumbprint whatever it is called', () => {
    assert.equal(jwkThumbprint({ kty: 'OKP', crv: 'Ed25519', x: rfcX, kid: 'mine' }), rfcThumbprint)
  })
})

describe('generateAgentKeyPair', () => {
  it('makes an Ed25519 pair whose kid is the thumbprint and whose public half parses', () => {
    const { publicJwk, privateJwk, kid } = generateAgentKeyPair()
    assert.equal(kid, jwkThumbprint(publicJwk))
    assert.deepEqual(parsePublicJwk(publicJwk), publicJwk)
    assert.deepEqual(Object.keys(publicJwk).sort(), ['crv', 'kid', 'kty', 'x'])
    assert.equal(privateJwk.kid, kid)
    assert.equal(privateJwk.alg, 'EdDSA')
    assert.equal(privateJwk.x, publicJwk.x)
    assert.equal(Buffer.from(privateJwk.d, 'base64url').length, 32)
    assert.notEqual(generateAgentKeyPair().kid, kid)
  })

  it('gives a private key whose signatures the public key verifies', async () => {
    const { publicJwk, privateJwk } = generateAgentKeyPair()
    const token = await new SignJWT({ sub: 'a' })
      .setProtectedHeader({ alg: 'EdDSA' })
      .sign(await importJWK(privateJwk, 'EdDSA'))
    const { payload } = await jwtVerify(token, await importJWK(publicJwk, 'EdDSA'))
    assert.equal(payload.sub, 'a')
  })
})
