/**
 * DPoP proofs (RFC 9449 §4.3): a fresh JWT signed by the key a token is bound to, naming the
 * request it accompanies. Checked in the RFC's order; the `jti` is spent last, only for a
 * proof that passed every other check.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import {
  type CryptoKey,
  calculateJwkThumbprint,
  compactVerify,
  decodeProtectedHeader,
  importJWK,
  type JWK,
  type JWTPayload,
} from 'jose'
import { GatewayError } from '../errors/gateway-error.ts'
import { hasPrivateMembers } from './jwk.ts'

/** Why a proof was refused, in `error.details.reason`. */
export type DpopRefusal =
  | 'missing_proof'
  | 'malformed'
  | 'wrong_type'
  | 'algorithm_not_allowed'
  | 'bad_key'
  | 'bad_signature'
  | 'missing_claim'
  | 'wrong_method'
  | 'wrong_url'
  | 'stale'
  | 'wrong_ath'
  | 'wrong_key'
  | 'replayed'

/** RFC 9449 §4.3 leaves the window to the server: a proof is accepted 60 s either side of `iat`. */
export const dpopWindowSeconds = 60
/** How long a proof's jti is remembered: longer than the whole window it could be accepted in. */
export const dpopReplayMs = 120_000
const maxProofLength = 8192

// Each allowed algorithm with the only key shape it may use.
const keyShapes: Record<string, { kty: string; crv: string }> = {
  EdDSA: { kty: 'OKP', crv: 'Ed25519' },
  ES256: { kty: 'EC', crv: 'P-256' },
}

function refuse(reason: DpopRefusal, message: string): never {
  throw new GatewayError('invalid_dpop_proof', message, { details: { reason } })
}

// RFC 9449 §4.3 step 9: compare without query and fragment, after URL normalisation.
function withoutQuery(url: string): string | undefined {
  if (!URL.canParse(url)) return undefined
  const parsed = new URL(url)
  parsed.search = ''
  parsed.hash = ''
  return parsed.href
}

function sameText(a: string, b: string): boolean {
  const left = Buffer.from(a, 'utf8')
  const right = Buffer.from(b, 'utf8')
  return left.length === right.length && timingSafeEqual(left, right)
}

/**
 * Verify a DPoP proof for a request. `urls` are the acceptable `htu` values; with `accessToken`
 * the proof must carry its hash (`ath`), with `jkt` it must be signed by that key. Resolves with
 * the proof key's RFC 7638 thumbprint.
 */
export async function verifyDpopProof(
  proof: string | undefined,
  expect: { method: string; urls: readonly string[]; accessToken?: string; jkt?: string },
  deps: { claimOnce(key: string, ttlMs: number): Promise<boolean>; now?: () => number },
): Promise<{ jkt: string; claims: JWTPayload }> {
  if (proof === undefined || proof === '') refuse('missing_proof', 'a DPoP proof is required')
  if (typeof proof !== 'string' || proof.length > maxProofLength || proof.split('.').length !== 3) {
    refuse('malformed', 'the DPoP proof is not a single compact JWS')
  }
  let header: ReturnType<typeof decodeProtectedHeader>
  try {
    header = decodeProtectedHeader(proof)
  } catch {
    refuse('malformed', 'the DPoP proof header cannot be decoded')
  }
  if (header.typ !== 'dpop+jwt') refuse('wrong_type', 'the DPoP proof typ must be dpop+jwt')
  const shape = typeof header.alg === 'string' ? keyShapes[header.alg] : undefined
  if (shape === undefined)
    refuse('algorithm_not_allowed', 'the DPoP proof must be signed with EdDSA or ES256')
  const alg = header.alg!
  const jwk = header.jwk
  if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) {
    refuse('bad_key', 'the DPoP proof header must carry the public key as jwk')
  }
  if (hasPrivateMembers(jwk as Record<string, unknown>)) {
    refuse('bad_key', 'the DPoP proof jwk must be a public key: it carries private key material')
  }
  if (jwk.kty !== shape.kty || jwk.crv !== shape.crv) {
    refuse('bad_key', `the DPoP proof jwk must be a ${shape.kty} ${shape.crv} key for ${alg}`)
  }
  let key: CryptoKey
  // Only the members of the key itself: no alg, use or key_ops to clash with what is checked here.
  const publicJwk: JWK = { kty: jwk.kty, crv: jwk.crv, x: jwk.x }
  if (jwk.kty === 'EC') publicJwk.y = jwk.y
  try {
    key = (await importJWK(publicJwk, alg)) as CryptoKey
  } catch {
    refuse('bad_key', 'the DPoP proof jwk is not a valid public key')
  }
  let claims: JWTPayload
  try {
    const verified = await compactVerify(proof, key, { algorithms: [alg] })
    claims = JSON.parse(new TextDecoder().decode(verified.payload))
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') {
      refuse('bad_signature', 'the DPoP proof signature is invalid')
    }
    refuse('malformed', 'the DPoP proof cannot be read')
  }
  if (typeof claims !== 'object' || claims === null || Array.isArray(claims)) {
    refuse('malformed', 'the DPoP proof payload is not a JSON object')
  }
  const { htm, htu, iat, jti, ath } = claims as Record<string, unknown>
  if (
    typeof htm !== 'string' ||
    typeof htu !== 'string' ||
    typeof iat !== 'number' ||
    !Number.isFinite(iat)
  ) {
    refuse('missing_claim', 'the DPoP proof must carry htm, htu and a numeric iat')
  }
  if (typeof jti !== 'string' || jti === '' || jti.length > 256) {
    refuse('missing_claim', 'the DPoP proof must carry a jti of at most 256 characters')
  }
  if (htm !== expect.method) refuse('wrong_method', 'the DPoP proof htm does not match the request method')
  const target = withoutQuery(htu)
  if (target === undefined || !expect.urls.some((url) => withoutQuery(url) === target)) {
    refuse('wrong_url', 'the DPoP proof htu does not match the request URL')
  }
  const nowSeconds = (deps.now ?? Date.now)() / 1000
  if (Math.abs(nowSeconds - iat) > dpopWindowSeconds) refuse('stale', 'the DPoP proof iat is not recent')
  if (expect.accessToken !== undefined) {
    const expected = createHash('sha256').update(expect.accessToken, 'utf8').digest('base64url')
    if (typeof ath !== 'string' || !sameText(ath, expected)) {
      refuse('wrong_ath', 'the DPoP proof ath does not match the access token')
    }
  }
  const jkt = await calculateJwkThumbprint(publicJwk, 'sha256')
  if (expect.jkt !== undefined && !sameText(jkt, expect.jkt)) {
    refuse('wrong_key', 'the DPoP proof is not signed by the key the token is bound to')
  }
  if (!(await deps.claimOnce(`dpop:${jkt}:${jti}`, dpopReplayMs))) {
    refuse('replayed', 'the DPoP proof has been used before')
  }
  return { jkt, claims }
}
