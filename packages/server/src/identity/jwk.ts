/**
 * Agent public keys (DESIGN §5): Ed25519 JWKs (RFC 8037) and their RFC 7638 thumbprints. Only
 * public keys are ever accepted: a JWK carrying a private member is refused rather than
 * stripped, because whoever sent it has leaked the private key and should be told so.
 */
import { createHash, generateKeyPairSync } from 'node:crypto'
import { GatewayError } from '../errors/gateway-error.ts'
import type { PublicJwk } from '../store/types.ts'

/** An Ed25519 private JWK as handed to an agent once; the gateway never stores it. */
export interface PrivateJwk {
  kty: 'OKP'
  crv: 'Ed25519'
  x: string
  d: string
  kid: string
  alg: 'EdDSA'
}

// Members that only private (or symmetric) keys have, across key types (RFC 7518 §6, draft AKP).
const privateMembers = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k', 'priv']
// 32 bytes in unpadded base64url is 43 characters; the last one carries 2 unused bits.
const ed25519X = /^[A-Za-z0-9_-]{43}$/
const kidPattern = /^[\x21-\x7e]{1,128}$/

function refuse(message: string): never {
  throw new GatewayError('bad_request', message)
}

/** True when `value` holds a private or symmetric key member (`d`, `k`, …). */
export function hasPrivateMembers(value: Record<string, unknown>): boolean {
  return privateMembers.some((name) => value[name] !== undefined)
}

/**
 * Accept an agent's public key: `{kty: 'OKP', crv: 'Ed25519', x}` with an optional `kid`;
 * anything else is a `bad_request`. Returns a fresh object holding only those members.
 */
export function parsePublicJwk(value: unknown): PublicJwk {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    refuse('publicKeyJwk must be a JSON object (an Ed25519 public JWK)')
  }
  const jwk = value as Record<string, unknown>
  if (hasPrivateMembers(jwk)) {
    refuse('publicKeyJwk must be a public key but it carries private key material: never send a private key')
  }
  if (jwk['kty'] !== 'OKP' || jwk['crv'] !== 'Ed25519') {
    refuse('publicKeyJwk must be an Ed25519 key: kty "OKP" and crv "Ed25519"')
  }
  const x = jwk['x']
  // The round trip refuses non-canonical encodings, which would give one key two thumbprints.
  if (typeof x !== 'string' || !ed25519X.test(x) || Buffer.from(x, 'base64url').toString('base64url') !== x) {
    refuse('publicKeyJwk.x must be the 32-byte public key in unpadded base64url')
  }
  if (jwk['alg'] !== undefined && jwk['alg'] !== 'EdDSA' && jwk['alg'] !== 'Ed25519') {
    refuse('publicKeyJwk.alg must be "EdDSA" when present')
  }
  if (jwk['use'] !== undefined && jwk['use'] !== 'sig') refuse('publicKeyJwk.use must be "sig" when present')
  const kid = jwk['kid']
  if (kid === undefined) return { kty: 'OKP', crv: 'Ed25519', x }
  if (typeof kid !== 'string' || !kidPattern.test(kid)) {
    refuse('publicKeyJwk.kid must be 1 to 128 printable characters without spaces')
  }
  return { kty: 'OKP', crv: 'Ed25519', x, kid }
}

/** The RFC 7638 thumbprint (base64url SHA-256) of an Ed25519 public key. */
export function jwkThumbprint(jwk: PublicJwk): string {
  // RFC 7638 §3.2: the required members only, in lexicographic order, without whitespace.
  const canonical = `{"crv":${JSON.stringify(jwk.crv)},"kty":${JSON.stringify(jwk.kty)},"x":${JSON.stringify(jwk.x)}}`
  return createHash('sha256').update(canonical, 'utf8').digest('base64url')
}

/** A new Ed25519 key pair for an agent; `kid` is the thumbprint and both JWKs carry it. */
export function generateAgentKeyPair(): { publicJwk: PublicJwk; privateJwk: PrivateJwk; kid: string } {
  const exported = generateKeyPairSync('ed25519').privateKey.export({ format: 'jwk' })
  const x = exported.x!
  const kid = jwkThumbprint({ kty: 'OKP', crv: 'Ed25519', x })
  return {
    publicJwk: { kty: 'OKP', crv: 'Ed25519', x, kid },
    privateJwk: { kty: 'OKP', crv: 'Ed25519', x, d: exported.d!, kid, alg: 'EdDSA' },
    kid,
  }
}
