/**
 * Issuing and judging access tokens (DESIGN §5): the `/v1/token` grants (RFC 7523 jwt-bearer and
 * RFC 8693 token exchange for delegation), admin-issued tokens, RFC 7662 introspection, and the
 * per-request check that the authenticator runs (signature via the verified-token cache, then
 * revocation, then key binding).
 */
import type { CompiledConfig } from '../config/compile.ts'
import { durationMs } from '../config/duration.ts'
import { GatewayError } from '../errors/gateway-error.ts'
import type { AccessClaims, TokenIssuer, TokenVerifier } from '../identity/access-token.ts'
import { verifyAssertion } from '../identity/assertion.ts'
import { verifyDpopProof } from '../identity/dpop.ts'
import { formatScope, isSubset, parseScope } from '../identity/scope.ts'
import type { SharedState } from '../state/types.ts'
import type { Agent } from '../store/types.ts'
import type { AgentDirectory, RevokedReason } from './agent-directory.ts'

export const grantJwtBearer = 'urn:ietf:params:oauth:grant-type:jwt-bearer'
export const grantTokenExchange = 'urn:ietf:params:oauth:grant-type:token-exchange'
export const accessTokenType = 'urn:ietf:params:oauth:token-type:access_token'

export interface TokenResponse {
  access_token: string
  token_type: 'Bearer' | 'DPoP'
  expires_in: number
  scope: string
  intent?: string
  issued_token_type?: string
}

export interface TokenServiceDeps {
  config(): CompiledConfig
  issuer: string
  tokens: TokenIssuer
  verifier: TokenVerifier
  directory: AgentDirectory
  state: SharedState
  /** The longest lifetime the signing keys allow (the key ring's maxTtl, fixed at start). */
  maxTtlCapMs: number
  /** Counts issued tokens by grant (runr_tokens_issued_total) and records them in the audit ledger. */
  onIssued?(grant: string, issued: { sub: string; jti: string }): void
  /**
   * Could any policy ever allow the agent this scope token? Issuance refuses scopes that cannot be
   * used (`invalid_scope`), so a token never carries more than the policies could honour.
   */
  canGrant?(agent: Agent, scope: string): boolean
  now?(): number
}

const intentPattern = /^[A-Za-z0-9_.:-]{1,64}$/
/** The access-token verifier refuses longer `act`/`anc` chains. */
const maxDelegationDepth = 8

function stringParam(params: Record<string, unknown>, name: string): string | undefined {
  const value = params[name]
  if (value === undefined || value === null || value === '') return undefined
  if (typeof value !== 'string') throw new GatewayError('invalid_request', `${name} must be a string.`)
  return value
}

function revokedError(reason: RevokedReason): GatewayError {
  return new GatewayError('token_revoked', undefined, {
    details: { reason },
    headers: { 'www-authenticate': 'Bearer error="invalid_token"' },
  })
}

export class TokenService {
  private readonly now: () => number
  /**
   * Replay detection through the shared state. When Redis cannot answer, the request is refused
   * with 503 (fail closed): accepting it unchecked would let a replayed assertion or proof through.
   */
  private readonly claimOnce: (key: string, ttlMs: number) => Promise<boolean>

  constructor(private readonly deps: TokenServiceDeps) {
    this.now = deps.now ?? Date.now
    this.claimOnce = (key, ttlMs) =>
      deps.state.claimOnce(key, ttlMs).catch((err: unknown) => {
        throw new GatewayError('not_ready', 'Replay protection is unavailable (shared state); try again.', {
          cause: err,
          headers: { 'retry-after': '1' },
        })
      })
  }

  /** The lifetime asked for (`ttl`: seconds or a duration string), bounded by tokens.maxTtl. */
  private ttlMs(raw: unknown): number {
    const tokens = this.deps.config().tokens
    // The key ring sized its JWKS grace for the maxTtl it started with: a reload may lower the
    // bound but not raise it (that takes a restart).
    const maxTtlMs = Math.min(tokens.maxTtlMs, this.deps.maxTtlCapMs)
    if (raw === undefined || raw === null || raw === '') return Math.min(tokens.ttlMs, maxTtlMs)
    let ms: number
    if (typeof raw === 'number' || (typeof raw === 'string' && /^\d+$/.test(raw))) ms = Number(raw) * 1000
    else if (typeof raw === 'string') {
      try {
        ms = durationMs(raw as never)
      } catch {
        throw new GatewayError('invalid_request', 'ttl must be seconds or a duration such as 10m.')
      }
    } else throw new GatewayError('invalid_request', 'ttl must be seconds or a duration such as 10m.')
    if (!Number.isFinite(ms) || ms < 1000)
      throw new GatewayError('invalid_request', 'ttl must be at least 1s.')
    if (ms > maxTtlMs) {
      throw new GatewayError('invalid_request', `ttl exceeds tokens.maxTtl (${maxTtlMs / 1000}s).`, {
        details: { maxTtlSeconds: maxTtlMs / 1000 },
      })
    }
    return ms
  }

  private intent(raw: unknown): string | undefined {
    if (raw === undefined || raw === null || raw === '') return undefined
    if (typeof raw !== 'string' || !intentPattern.test(raw)) {
      throw new GatewayError('invalid_request', 'intent must be 1–64 letters, digits, or . _ : -')
    }
    return raw
  }

  private requiresDpop(agent: Agent): boolean {
    return agent.requireDpop || this.deps.config().tokens.requireDpop
  }

  /** `POST /v1/token`: `params` from the form or JSON body, `dpop` the DPoP header if any. */
  async exchange(params: Record<string, unknown>, dpop: string | undefined, tokenUrls: string[]) {
    const grant = stringParam(params, 'grant_type')
    if (grant === undefined) throw new GatewayError('invalid_request', 'grant_type is required.')
    if (grant === grantJwtBearer) return this.jwtBearer(params, dpop, tokenUrls)
    if (grant === grantTokenExchange) return this.tokenExchange(params, dpop, tokenUrls)
    throw new GatewayError('unsupported_grant_type', undefined, {
      details: { grant_type: grant.slice(0, 100) },
    })
  }

  private async proofKey(dpop: string | undefined, tokenUrls: string[]): Promise<string | undefined> {
    if (dpop === undefined) return undefined
    const { jkt } = await verifyDpopProof(
      dpop,
      { method: 'POST', urls: tokenUrls },
      { claimOnce: this.claimOnce, now: this.deps.now },
    )
    return jkt
  }

  private async jwtBearer(params: Record<string, unknown>, dpop: string | undefined, tokenUrls: string[]) {
    const assertion = stringParam(params, 'assertion')
    if (assertion === undefined) throw new GatewayError('invalid_request', 'assertion is required.')
    const scope = parseScope(stringParam(params, 'scope'))
    const intent = this.intent(params['intent'])
    const ttlMs = this.ttlMs(params['ttl'])
    const { directory } = this.deps
    const { agent, kid } = await verifyAssertion(assertion, {
      issuer: this.deps.issuer,
      // A revoked key must not mint new tokens: hide it from the verifier.
      findAgent: async (id) => {
        const found = directory.get(id)
        if (found === undefined) return undefined
        return { ...found, keys: found.keys.filter((k) => !directory.isKeyRevoked(id, k.kid)) }
      },
      claimOnce: this.claimOnce,
      now: this.deps.now,
    })
    const jkt = await this.proofKey(dpop, tokenUrls)
    if (jkt === undefined && this.requiresDpop(agent)) {
      throw new GatewayError('invalid_dpop_proof', 'This agent must bind its tokens: send a DPoP proof.', {
        details: { reason: 'missing_proof' },
      })
    }
    this.grantable(agent, scope)
    const issued = await this.deps.tokens.issue({ sub: agent.id, scope, intent, ttlMs, akid: kid, jkt })
    this.deps.onIssued?.('jwt-bearer', issued.claims)
    return this.answer(issued, jkt, scope, intent)
  }

  /**
   * Delegation: a token for the same agent, narrowed. The scope must be a subset and the expiry
   * no later; a key-bound subject token can only be exchanged with a proof of the same key, and
   * the new token stays bound to it (otherwise a stolen bound token could be laundered).
   */
  private async tokenExchange(
    params: Record<string, unknown>,
    dpop: string | undefined,
    tokenUrls: string[],
  ) {
    const subjectToken = stringParam(params, 'subject_token')
    if (subjectToken === undefined) throw new GatewayError('invalid_request', 'subject_token is required.')
    const subjectType = stringParam(params, 'subject_token_type')
    if (subjectType !== undefined && subjectType !== accessTokenType) {
      throw new GatewayError('invalid_request', `subject_token_type must be ${accessTokenType}.`)
    }
    let subject: AccessClaims
    try {
      subject = await this.deps.verifier.verify(subjectToken)
    } catch (err) {
      throw new GatewayError('invalid_grant', 'The subject token is not valid.', {
        details: { reason: err instanceof GatewayError ? (err.details?.['reason'] ?? err.code) : 'invalid' },
      })
    }
    const revoked = this.deps.directory.check(subject)
    if (revoked !== undefined) {
      throw new GatewayError('invalid_grant', 'The subject token has been revoked.', {
        details: { reason: revoked },
      })
    }
    const granted = parseScope(subject.scope)
    const requestedText = stringParam(params, 'scope')
    const scope = requestedText === undefined ? granted : parseScope(requestedText)
    if (!isSubset(scope, granted)) {
      throw new GatewayError(
        'invalid_scope',
        'A delegated token cannot have a wider scope than its subject token.',
        {
          details: { granted: formatScope(granted) },
        },
      )
    }
    const agent = this.deps.directory.get(subject.sub)
    // An unbound token of an agent that must bind its tokens is refused on its own; exchanging
    // it for one bound to the presenter's key would launder it.
    if (agent !== undefined && subject.cnf === undefined && this.requiresDpop(agent)) {
      throw new GatewayError(
        'invalid_grant',
        'This agent must use key-bound tokens; the subject token is not.',
        {
          details: { reason: 'dpop_required' },
        },
      )
    }
    const ancestors = [...(subject.anc ?? []), subject.jti]
    if (ancestors.length > maxDelegationDepth) {
      throw new GatewayError(
        'invalid_grant',
        `A token can be delegated at most ${maxDelegationDepth} times.`,
        {
          details: { reason: 'delegation_too_deep' },
        },
      )
    }
    const jkt = await this.proofKey(dpop, tokenUrls)
    const boundTo = subject.cnf?.jkt
    if (boundTo !== undefined && jkt !== boundTo) {
      throw new GatewayError(
        'invalid_dpop_proof',
        'Exchanging a key-bound token needs a proof of the same key.',
        {
          details: { reason: jkt === undefined ? 'missing_proof' : 'wrong_key' },
        },
      )
    }
    if (agent !== undefined && jkt === undefined && this.requiresDpop(agent)) {
      throw new GatewayError('invalid_dpop_proof', 'This agent must bind its tokens: send a DPoP proof.', {
        details: { reason: 'missing_proof' },
      })
    }
    const intent = this.intent(params['intent']) ?? subject.intent
    const remainingMs = subject.exp * 1000 - this.now()
    const ttlMs = Math.min(this.ttlMs(params['ttl']), remainingMs)
    if (ttlMs < 1000) throw new GatewayError('invalid_grant', 'The subject token is about to expire.')
    const act = subject.act === undefined ? { sub: subject.sub } : { sub: subject.sub, act: subject.act }
    const issued = await this.deps.tokens.issue({
      sub: subject.sub,
      scope,
      intent,
      ttlMs,
      akid: subject.akid,
      jkt,
      act,
      parentJti: subject.jti,
      ancestors,
    })
    this.deps.onIssued?.('token-exchange', issued.claims)
    return { ...this.answer(issued, jkt, scope, intent), issued_token_type: accessTokenType }
  }

  /** `POST /v1/agents/{id}/tokens`: for agents without keys; never key-bound. */
  async issueForAgent(agentId: string, params: Record<string, unknown>): Promise<TokenResponse> {
    const agent = this.deps.directory.get(agentId)
    if (agent === undefined) throw new GatewayError('not_found', `No agent with id ${agentId}.`)
    if (agent.status !== 'active') throw new GatewayError('conflict', 'The agent is disabled.')
    if (this.requiresDpop(agent)) {
      throw new GatewayError('conflict', 'The agent requires key-bound tokens; use POST /v1/token with DPoP.')
    }
    const scope = parseScope(typeof params['scope'] === 'string' ? params['scope'] : undefined)
    const intent = this.intent(params['intent'])
    const ttlMs = this.ttlMs(params['ttl'])
    this.grantable(agent, scope)
    const issued = await this.deps.tokens.issue({ sub: agent.id, scope, intent, ttlMs })
    this.deps.onIssued?.('admin', issued.claims)
    return this.answer(issued, undefined, scope, intent)
  }

  private grantable(agent: Agent, scope: readonly string[]): void {
    const canGrant = this.deps.canGrant
    if (canGrant === undefined) return
    const refused = scope.filter((token) => !canGrant(agent, token))
    if (refused.length > 0) {
      throw new GatewayError(
        'invalid_scope',
        `No policy can grant agent ${agent.name} the scope ${refused.join(' ')}.`,
        { details: { refused } },
      )
    }
  }

  private answer(
    issued: { token: string; expiresIn: number },
    jkt: string | undefined,
    scope: string[],
    intent: string | undefined,
  ): TokenResponse {
    const out: TokenResponse = {
      access_token: issued.token,
      token_type: jkt === undefined ? 'Bearer' : 'DPoP',
      expires_in: issued.expiresIn,
      scope: formatScope(scope),
    }
    if (intent !== undefined) out.intent = intent
    return out
  }

  /** RFC 7662: `{active: false}` for anything not currently good, without saying why. */
  async introspect(token: string) {
    let claims: AccessClaims
    try {
      claims = await this.deps.verifier.verify(token)
    } catch {
      return { active: false }
    }
    if (this.deps.directory.check(claims) !== undefined) return { active: false }
    return {
      active: true,
      token_type: claims.cnf?.jkt === undefined ? 'Bearer' : 'DPoP',
      scope: claims.scope,
      sub: claims.sub,
      client_id: claims.sub,
      iss: claims.iss,
      aud: claims.aud,
      iat: claims.iat,
      exp: claims.exp,
      jti: claims.jti,
      ...(claims.intent === undefined ? {} : { intent: claims.intent }),
      ...(claims.cnf === undefined ? {} : { cnf: claims.cnf }),
      ...(claims.act === undefined ? {} : { act: claims.act }),
      ...(claims.parent_jti === undefined ? {} : { parent_jti: claims.parent_jti }),
    }
  }

  /** Verify a token for revocation by jti: the record lives until the token's own expiry. */
  async expiryOf(token: string): Promise<{ jti: string; sub: string; exp: number }> {
    const claims = await this.deps.verifier.verify(token)
    return { jti: claims.jti, sub: claims.sub, exp: claims.exp }
  }

  /**
   * The per-request check. Cache hit and no key binding: fully synchronous. Revocation is judged
   * on every call, so the cache never outlives a revocation.
   */
  authenticate<R>(
    scheme: 'bearer' | 'dpop',
    token: string,
    request: R,
    method: string,
    proof: ProofSource<R>,
  ): AuthResult | Promise<AuthResult> {
    const verified = this.deps.verifier.verify(token)
    if (verified instanceof Promise) {
      return verified.then((claims) => this.judge(scheme, token, claims, request, method, proof))
    }
    return this.judge(scheme, token, verified, request, method, proof)
  }

  private judge<R>(
    scheme: 'bearer' | 'dpop',
    token: string,
    claims: AccessClaims,
    request: R,
    method: string,
    proof: ProofSource<R>,
  ): AuthResult | Promise<AuthResult> {
    const revoked = this.deps.directory.check(claims)
    if (revoked !== undefined) throw revokedError(revoked)
    const agent = this.deps.directory.get(claims.sub)!
    const jkt = claims.cnf?.jkt
    if (jkt === undefined) {
      if (scheme === 'dpop') {
        throw new GatewayError('invalid_dpop_proof', 'The DPoP scheme needs a key-bound token.', {
          details: { reason: 'token_not_bound' },
        })
      }
      if (this.requiresDpop(agent)) {
        throw new GatewayError('unauthenticated', 'This agent must use key-bound (DPoP) tokens.', {
          details: { reason: 'dpop_required' },
          headers: { 'www-authenticate': 'DPoP algs="EdDSA ES256"' },
        })
      }
      return { agent, claims }
    }
    // RFC 9449 §7.1: a bound token must come with the DPoP scheme and a proof of its key.
    if (scheme !== 'dpop') {
      throw new GatewayError('invalid_dpop_proof', 'A key-bound token must be sent as Authorization: DPoP.', {
        details: { reason: 'wrong_scheme' },
      })
    }
    // The proof is read only for a key-bound token.
    const p = proof(request, method)
    if (p.dpop === undefined) {
      throw new GatewayError('invalid_dpop_proof', 'A DPoP proof is required with this token.', {
        details: { reason: 'missing_proof' },
      })
    }
    return verifyDpopProof(
      p.dpop,
      { method: p.method, urls: p.urls, accessToken: token, jkt },
      { claimOnce: this.claimOnce, now: this.deps.now },
    ).then(() => ({ agent, claims }))
  }
}

/** Reads the DPoP proof and the acceptable `htu` values off the request, when needed. */
export type ProofSource<R> = (
  request: R,
  method: string,
) => { dpop: string | undefined; method: string; urls: string[] }

export interface AuthResult {
  agent: Agent
  claims: AccessClaims
}
