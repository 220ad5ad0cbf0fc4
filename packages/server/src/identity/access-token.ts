/**
 * The gateway's access tokens (DESIGN §5): JWTs signed with the key ring's active Ed25519 key,
 * typed `at+jwt` (RFC 9068 §2.1) so no other JWT the gateway or an agent signs can pass for one.
 *
 * Verification is on every request's path. A jose verification costs ~100 µs of CPU, so a
 * verified token is cached until its `exp` and a cache hit is answered synchronously; the
 * caller still checks revocation on every request, hits included.
 */
import { randomBytes } from 'node:crypto'
import { compactVerify, decodeProtectedHeader, SignJWT } from 'jose'
import { LRUCache } from 'lru-cache'
import { GatewayError } from '../errors/gateway-error.ts'
import type { KeyRing } from './key-ring.ts'
import { formatScope } from './scope.ts'

/** One link of an RFC 8693 §4.1 delegation chain: `sub` acts, on behalf of whoever `act` names. */
export interface Actor {
  sub: string
  act?: Actor
}

/** The claims of a verified access token. Objects from the verifier are frozen and shared. */
export interface AccessClaims {
  iss: string
  sub: string
  aud: string
  iat: number
  exp: number
  jti: string
  /** Space-separated scope tokens (RFC 6749 §3.3). */
  scope: string
  intent?: string
  /** The agent key that signed the assertion this token was exchanged for. */
  akid?: string
  /** RFC 9449 §6.1: the thumbprint of the key the token is bound to. */
  cnf?: { jkt: string }
  act?: Actor
  parent_jti?: string
  /** Every token this one was delegated from, oldest first: revoking any of them revokes this one. */
  anc?: readonly string[]
}

/** Why a token was refused, in `error.details.reason`. */
export type TokenRefusal =
  | 'malformed'
  | 'algorithm_not_allowed'
  | 'wrong_type'
  | 'unknown_key'
  | 'bad_signature'
  | 'wrong_issuer'
  | 'wrong_audience'
  | 'missing_claim'
  | 'invalid_claim'
  | 'expired'
  | 'not_yet_valid'
  | 'iat_in_future'

/** Allowance for clocks that run ahead of ours, on `nbf` and `iat` (not on `exp`). */
export const clockSkewSeconds = 30
const maxTokenLength = 8192
const maxActDepth = 8

function refuse(reason: TokenRefusal, message: string): never {
  throw new GatewayError(reason === 'expired' ? 'token_expired' : 'unauthenticated', message, {
    details: { reason },
  })
}

export interface TokenIssuer {
  /** Sign a new access token; `ttlMs` must not exceed the key ring's `maxTtlMs`. */
  issue(request: {
    sub: string
    scope: readonly string[]
    intent?: string
    ttlMs: number
    akid?: string
    jkt?: string
    act?: Actor
    parentJti?: string
    ancestors?: readonly string[]
  }): Promise<{ token: string; claims: AccessClaims; expiresIn: number }>
}

/** Issue access tokens for `issuer`, which is also their audience. */
export function createTokenIssuer(options: {
  keyRing: KeyRing
  issuer: string
  now?: () => number
}): TokenIssuer {
  const { keyRing, issuer } = options
  const now = options.now ?? Date.now
  return {
    async issue(request) {
      // A token outliving maxTtlMs could outlive its signing key's place in the JWKS.
      if (!(request.ttlMs > 0) || request.ttlMs > keyRing.maxTtlMs) {
        throw new RangeError(`token ttl must be positive and at most ${keyRing.maxTtlMs} ms`)
      }
      const iat = Math.floor(now() / 1000)
      const expiresIn = Math.max(1, Math.floor(request.ttlMs / 1000))
      const claims: AccessClaims = {
        iss: issuer,
        sub: request.sub,
        aud: issuer,
        iat,
        exp: iat + expiresIn,
        jti: randomBytes(16).toString('base64url'),
        scope: formatScope(request.scope),
      }
      if (request.intent !== undefined) claims.intent = request.intent
      if (request.akid !== undefined) claims.akid = request.akid
      if (request.jkt !== undefined) claims.cnf = { jkt: request.jkt }
      if (request.act !== undefined) claims.act = request.act
      if (request.parentJti !== undefined) claims.parent_jti = request.parentJti
      if (request.ancestors !== undefined && request.ancestors.length > 0) claims.anc = [...request.ancestors]
      const { kid, privateKey } = keyRing.active()
      const token = await new SignJWT({ ...claims })
        .setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid })
        .sign(privateKey)
      return { token, claims, expiresIn }
    },
  }
}

export interface TokenVerifier {
  /**
   * The claims of a valid token: synchronously on a cache hit, else as a Promise. Never throws;
   * a refusal is always a rejected Promise with a GatewayError (`token_expired` or
   * `unauthenticated`, `details.reason` saying why). Revocation is the caller's to check.
   */
  verify(token: string): AccessClaims | Promise<AccessClaims>
  /** Drop one token from the cache. */
  forget(token: string): void
  /** Drop every cached token (e.g. after a signing key was withdrawn). */
  clear(): void
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value)
const isText = (value: unknown): value is string => typeof value === 'string' && value !== ''
const isTime = (value: unknown): value is number => typeof value === 'number' && Number.isFinite(value)

function optionalText(payload: Record<string, unknown>, name: string): string | undefined {
  const value = payload[name]
  if (value === undefined || isText(value)) return value
  refuse('invalid_claim', `the access token claim ${name} must be a non-empty string`)
}

function actor(value: unknown, depth: number): Actor {
  if (depth > maxActDepth || !isObject(value) || !isText(value['sub'])) {
    refuse('invalid_claim', 'the access token claim act must be a delegation chain of {sub, act?}')
  }
  const link: Actor = { sub: value['sub'] }
  if (value['act'] !== undefined) link.act = actor(value['act'], depth + 1)
  return Object.freeze(link)
}

/** Check the claims of a token whose signature is valid; returns a fresh, frozen copy. */
function checkClaims(payload: Record<string, unknown>, issuer: string, nowSeconds: number): AccessClaims {
  const { iss, aud, exp, nbf, iat, sub, jti, scope } = payload
  if (!isText(iss)) refuse('missing_claim', 'the access token has no iss')
  if (iss !== issuer) refuse('wrong_issuer', 'the access token was issued by someone else')
  if (aud === undefined) refuse('missing_claim', 'the access token has no aud')
  if (aud !== issuer && !(Array.isArray(aud) && aud.includes(issuer))) {
    refuse('wrong_audience', 'the access token is meant for another audience')
  }
  if (!isTime(exp)) refuse('missing_claim', 'the access token has no numeric exp')
  if (exp <= nowSeconds) refuse('expired', 'the access token has expired')
  if (nbf !== undefined && (!isTime(nbf) || nbf > nowSeconds + clockSkewSeconds)) {
    refuse('not_yet_valid', 'the access token is not valid yet (nbf)')
  }
  if (!isTime(iat)) refuse('missing_claim', 'the access token has no numeric iat')
  if (iat > nowSeconds + clockSkewSeconds)
    refuse('iat_in_future', 'the access token was issued in the future')
  if (!isText(sub)) refuse('missing_claim', 'the access token has no sub')
  if (!isText(jti)) refuse('missing_claim', 'the access token has no jti')
  if (typeof scope !== 'string') refuse('missing_claim', 'the access token has no scope')
  const claims: AccessClaims = { iss, sub, aud: issuer, iat, exp, jti, scope }
  const intent = optionalText(payload, 'intent')
  if (intent !== undefined) claims.intent = intent
  const akid = optionalText(payload, 'akid')
  if (akid !== undefined) claims.akid = akid
  const parentJti = optionalText(payload, 'parent_jti')
  if (parentJti !== undefined) claims.parent_jti = parentJti
  const cnf = payload['cnf']
  if (cnf !== undefined) {
    if (!isObject(cnf) || !isText(cnf['jkt']))
      refuse('invalid_claim', 'the access token claim cnf must carry jkt')
    claims.cnf = Object.freeze({ jkt: cnf['jkt'] })
  }
  if (payload['act'] !== undefined) claims.act = actor(payload['act'], 1)
  const anc = payload['anc']
  if (anc !== undefined) {
    if (!Array.isArray(anc) || anc.length > maxActDepth || !anc.every(isText)) {
      refuse('invalid_claim', 'the access token claim anc must be a short list of token ids')
    }
    claims.anc = Object.freeze([...anc])
  }
  return Object.freeze(claims)
}

/** Verify access tokens signed by `keyRing` for `issuer`, caching valid ones until they expire. */
export function createTokenVerifier(options: {
  keyRing: KeyRing
  issuer: string
  cacheSize?: number
  now?: () => number
}): TokenVerifier {
  const { keyRing, issuer } = options
  const now = options.now ?? Date.now
  // The cache's clock is ours, so a test's clock moves it too; ttlResolution 0 reads it every time.
  const cache = new LRUCache<string, AccessClaims>({
    max: options.cacheSize ?? 10_000,
    ttlResolution: 0,
    perf: { now },
  })

  const verifying = new Map<string, Promise<AccessClaims>>()

  const verifyUncached = async (token: string): Promise<AccessClaims> => {
    if (typeof token !== 'string' || token.length > maxTokenLength || token.split('.').length !== 3) {
      refuse('malformed', 'the access token is not a compact JWS')
    }
    let header: ReturnType<typeof decodeProtectedHeader>
    try {
      header = decodeProtectedHeader(token)
    } catch {
      refuse('malformed', 'the access token header cannot be decoded')
    }
    // Checked before any key is touched: only EdDSA is ever accepted (no none, no HMAC, no RSA).
    if (header.alg !== 'EdDSA') refuse('algorithm_not_allowed', 'the access token must be signed with EdDSA')
    if (header.typ !== 'at+jwt' && header.typ !== 'application/at+jwt') {
      refuse('wrong_type', 'the token is not an access token (typ must be at+jwt)')
    }
    const key = typeof header.kid === 'string' ? keyRing.verificationKey(header.kid) : undefined
    if (key === undefined) refuse('unknown_key', 'the access token was signed by an unknown or retired key')
    let payload: unknown
    try {
      const verified = await compactVerify(token, key, { algorithms: ['EdDSA'] })
      payload = JSON.parse(new TextDecoder().decode(verified.payload))
    } catch (err) {
      if ((err as { code?: string }).code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') {
        refuse('bad_signature', 'the access token signature is invalid')
      }
      refuse('malformed', 'the access token cannot be read')
    }
    if (!isObject(payload)) refuse('malformed', 'the access token payload is not a JSON object')
    const at = now()
    const claims = checkClaims(payload, issuer, at / 1000)
    cache.set(token, claims, { ttl: Math.max(1, claims.exp * 1000 - at) })
    return claims
  }

  return {
    verify(token) {
      const hit = cache.get(token)
      if (hit === undefined) {
        // Concurrent first uses of one token share one verification, instead of each paying
        // for an Ed25519 check (a client that opens 50 connections with a fresh token).
        let running = verifying.get(token)
        if (running === undefined) {
          running = verifyUncached(token).finally(() => verifying.delete(token))
          verifying.set(token, running)
        }
        return running
      }
      // The cache's TTL already ends at exp; this re-check makes that a guarantee, not a setting.
      if (hit.exp * 1000 > now()) return hit
      cache.delete(token)
      return Promise.reject(
        new GatewayError('token_expired', 'the access token has expired', { details: { reason: 'expired' } }),
      )
    },
    forget(token) {
      cache.delete(token)
    },
    clear() {
      cache.clear()
    },
  }
}
