/**
 * Agent-side helpers for identity tests: sign RFC 7523 assertions and RFC 9449 DPoP proofs the
 * way a real agent would, with jose, plus a few deliberately broken variants.
 */
import { createHash, createHmac, randomUUID } from 'node:crypto'
import { exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from 'jose'

export interface TestAgentKey {
  id: string
  kid: string
  privateKeyJwk: JWK
}

const b64url = (data: Buffer | string) => Buffer.from(data).toString('base64url')

/** A jwt-bearer assertion; `override` changes claims, `header` the protected header. */
export async function assertionFor(
  agent: TestAgentKey,
  audience: string,
  override: Record<string, unknown> = {},
  header: Record<string, unknown> = {},
): Promise<string> {
  const key = await importJWK(agent.privateKeyJwk, 'EdDSA')
  const now = Math.floor(Date.now() / 1000)
  const claims = {
    iss: agent.id,
    sub: agent.id,
    aud: audience,
    iat: now,
    exp: now + 60,
    jti: randomUUID(),
    ...override,
  }
  for (const [k, v] of Object.entries(claims))
    if (v === undefined) delete (claims as Record<string, unknown>)[k]
  return new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', kid: agent.kid, ...header }).sign(key)
}

/** An unsigned `alg: none` token with the given claims. */
export function unsignedToken(claims: Record<string, unknown>): string {
  return `${b64url(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${b64url(JSON.stringify(claims))}.`
}

/** HS256 "signed" with the agent's public key bytes as the HMAC secret: algorithm confusion. */
export function hmacWithPublicKey(claims: Record<string, unknown>, publicX: string, kid: string): string {
  const input = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT', kid }))}.${b64url(JSON.stringify(claims))}`
  const sig = createHmac('sha256', Buffer.from(publicX, 'base64url')).update(input).digest()
  return `${input}.${b64url(sig)}`
}

type PrivateKey = Awaited<ReturnType<typeof generateKeyPair>>['privateKey']

export interface DpopKey {
  privateKey: PrivateKey
  publicJwk: JWK
}

export async function newDpopKey(): Promise<DpopKey> {
  const { privateKey, publicKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true })
  return { privateKey, publicJwk: await exportJWK(publicKey) }
}

/** A DPoP proof for `method url`, bound to `accessToken` when given. */
export async function dpopProof(
  key: DpopKey,
  method: string,
  url: string,
  accessToken?: string,
  override: Record<string, unknown> = {},
): Promise<string> {
  const claims: Record<string, unknown> = {
    htm: method,
    htu: url,
    iat: Math.floor(Date.now() / 1000),
    jti: randomUUID(),
    ...(accessToken === undefined
      ? {}
      : { ath: createHash('sha256').update(accessToken).digest('base64url') }),
    ...override,
  }
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'EdDSA', typ: 'dpop+jwt', jwk: key.publicJwk })
    .sign(key.privateKey)
}

/** The payload of a JWT, unverified (for asserting on claims the gateway put in). */
export function claimsOf(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as Record<
    string,
    unknown
  >
}

export const jwtBearer = 'urn:ietf:params:oauth:grant-type:jwt-bearer'
export const tokenExchange = 'urn:ietf:params:oauth:grant-type:token-exchange'
export const accessTokenType = 'urn:ietf:params:oauth:token-type:access_token'
