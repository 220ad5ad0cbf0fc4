/**
 * JWT-bearer client assertions (RFC 7523 §3, DESIGN §5): an agent proves who it is with a
 * short-lived JWT signed by one of its own Ed25519 keys. Nothing in the assertion is trusted
 * before its signature is verified with a key the agent registered; only then are its claims
 * judged and its `jti` spent, so a forged assertion cannot burn a real one's jti.
 */
import {
  type CryptoKey,
  compactVerify,
  decodeJwt,
  decodeProtectedHeader,
  importJWK,
  type JWTPayload,
} from 'jose'
import { GatewayError } from '../errors/gateway-error.ts'
import type { Agent, AgentKey } from '../store/types.ts'

/** Why an assertion was refused, in `error.details.reason`. */
export type AssertionRefusal =
  | 'too_large'
  | 'malformed'
  | 'algorithm_not_allowed'
  | 'missing_iss'
  | 'missing_sub'
  | 'iss_sub_mismatch'
  | 'unknown_agent'
  | 'agent_disabled'
  | 'unknown_key'
  | 'key_expired'
  | 'bad_signature'
  | 'wrong_audience'
  | 'missing_exp'
  | 'expired'
  | 'exp_too_far'
  | 'not_yet_valid'
  | 'iat_in_future'
  | 'missing_jti'
  | 'replayed_jti'

/** Assertions larger than this are refused before any parsing. */
export const maxAssertionBytes = 8192
/** DESIGN §5: an assertion may live at most five minutes. */
export const maxAssertionLifetimeSeconds = 300
const skewSeconds = 30

function refuse(reason: AssertionRefusal, message: string): never {
  throw new GatewayError(reason === 'too_large' ? 'invalid_request' : 'invalid_grant', message, {
    details: { reason },
  })
}

async function signedBy(assertion: string, key: AgentKey): Promise<boolean> {
  const publicKey = (await importJWK({ kty: 'OKP', crv: 'Ed25519', x: key.jwk.x }, 'EdDSA')) as CryptoKey
  try {
    await compactVerify(assertion, publicKey, { algorithms: ['EdDSA'] })
    return true
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') return false
    refuse('malformed', 'the assertion is not a valid compact JWS')
  }
}

/**
 * Verify an agent's client assertion for `issuer`. Resolves with the agent, the kid of the key
 * that signed it and the claims; refuses with `invalid_grant` (`invalid_request` when too large).
 */
export async function verifyAssertion(
  assertion: string,
  deps: {
    issuer: string
    findAgent(id: string): Promise<Agent | undefined>
    /** True the first time `key` is claimed within `ttlMs`, false on every later claim. */
    claimOnce(key: string, ttlMs: number): Promise<boolean>
    now?: () => number
  },
): Promise<{ agent: Agent; kid: string; claims: JWTPayload }> {
  if (typeof assertion !== 'string' || Buffer.byteLength(assertion, 'utf8') > maxAssertionBytes) {
    refuse('too_large', `the assertion must be a string of at most ${maxAssertionBytes} bytes`)
  }
  let header: ReturnType<typeof decodeProtectedHeader>
  let claims: JWTPayload
  try {
    if (assertion.split('.').length !== 3) throw new Error('not compact')
    header = decodeProtectedHeader(assertion)
    claims = decodeJwt(assertion)
  } catch {
    refuse('malformed', 'the assertion is not a compact JWS with a JSON claims set')
  }
  // Before any key is looked at: `none`, HMAC (keyed with the public key bytes, the classic
  // algorithm confusion) and every other algorithm are refused outright.
  if (header.alg !== 'EdDSA')
    refuse('algorithm_not_allowed', 'the assertion must be signed with EdDSA (Ed25519)')
  const { iss, sub } = claims
  if (typeof iss !== 'string' || iss === '') refuse('missing_iss', 'the assertion has no iss')
  if (typeof sub !== 'string' || sub === '') refuse('missing_sub', 'the assertion has no sub')
  if (iss !== sub) refuse('iss_sub_mismatch', 'the assertion iss and sub must both be the agent id')

  const agent = await deps.findAgent(sub)
  if (agent === undefined) refuse('unknown_agent', 'no agent has this id')
  const now = (deps.now ?? Date.now)()
  const live = (key: AgentKey) => key.notAfter === null || key.notAfter > now
  let key: AgentKey | undefined
  if (header.kid !== undefined) {
    const named = agent.keys.find((k) => k.kid === header.kid)
    if (named === undefined) refuse('unknown_key', 'the agent has no key with this kid')
    if (!live(named)) refuse('key_expired', 'the agent key with this kid is past its notAfter')
    if (!(await signedBy(assertion, named))) refuse('bad_signature', 'the assertion signature is invalid')
    key = named
  } else {
    const candidates = agent.keys.filter(live)
    if (candidates.length === 0) {
      refuse(agent.keys.length === 0 ? 'unknown_key' : 'key_expired', 'the agent has no key that is in force')
    }
    for (const candidate of candidates) {
      if (await signedBy(assertion, candidate)) {
        key = candidate
        break
      }
    }
    if (key === undefined) refuse('bad_signature', 'the assertion is not signed by any key of the agent')
  }
  // Said only to the key holder, so nobody else learns whether an agent is disabled.
  if (agent.status !== 'active') refuse('agent_disabled', 'the agent is disabled')

  const { aud, exp, iat, nbf, jti } = claims
  if (aud !== deps.issuer && !(Array.isArray(aud) && aud.includes(deps.issuer))) {
    refuse('wrong_audience', 'the assertion aud must be the gateway issuer')
  }
  const nowSeconds = now / 1000
  if (typeof exp !== 'number' || !Number.isFinite(exp))
    refuse('missing_exp', 'the assertion has no numeric exp')
  if (exp <= nowSeconds) refuse('expired', 'the assertion has expired')
  if (exp > nowSeconds + maxAssertionLifetimeSeconds + skewSeconds) {
    refuse('exp_too_far', 'the assertion exp must be at most 5 minutes ahead')
  }
  if (iat !== undefined && (typeof iat !== 'number' || iat > nowSeconds + skewSeconds)) {
    refuse('iat_in_future', 'the assertion iat is in the future')
  }
  if (nbf !== undefined && (typeof nbf !== 'number' || nbf > nowSeconds + skewSeconds)) {
    refuse('not_yet_valid', 'the assertion is not valid yet (nbf)')
  }
  if (typeof jti !== 'string' || jti === '') refuse('missing_jti', 'the assertion has no jti')
  // Remembered until the assertion could no longer pass the exp check anyway.
  const fresh = await deps.claimOnce(
    `assertion:${agent.id}:${jti}`,
    Math.ceil((exp + skewSeconds) * 1000 - now),
  )
  if (!fresh) refuse('replayed_jti', 'the assertion jti has been used before')
  return { agent, kid: key.kid, claims }
}
