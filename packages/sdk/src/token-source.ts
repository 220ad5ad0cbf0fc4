/**
 * The agent's access token (DESIGN §5): an RFC 7523 client assertion signed with the agent's key,
 * exchanged at `POST /v1/token`, cached, and replaced before it expires. One exchange at a time
 * (concurrent callers share it); a refresh that fails while the old token is still good leaves
 * the old one in use. Key-bound tokens (RFC 9449 DPoP) get a fresh proof for every request.
 */
import { AuthError, GatewayError } from './errors.ts'
import { sha256Base64url, signJws } from './jws.ts'
import type { AgentKey } from './keys.ts'
import type { Transport } from './transport.ts'

const jwtBearer = 'urn:ietf:params:oauth:grant-type:jwt-bearer'
/** Assertions live one minute: plenty for one exchange, short if one leaks (the gateway allows 5). */
const assertionLifetimeSeconds = 60

export interface TokenSettings {
  agentId: string | undefined
  issuer: string | undefined
  scope: string | undefined
  intent: string | undefined
  ttl: number | undefined
  dpop: boolean | undefined
}

/** A token in use. */
export interface AccessToken {
  value: string
  /** Key-bound: sent as `Authorization: DPoP` with a proof. */
  bound: boolean
  scope: string
  expiresAt: number
  refreshAt: number
  /** The proofs' `ath` for this token, hashed once. */
  ath: string | undefined
}

function invalidAnswer(what: string): GatewayError {
  return new GatewayError({
    code: 'invalid_response',
    message: `${what} is not what the gateway answers.`,
    status: 200,
  })
}

export class TokenSource {
  private token: AccessToken | undefined
  private pending: Promise<AccessToken> | undefined
  private issuerPromise: Promise<string> | undefined
  private origin: string | undefined
  private bind: boolean

  constructor(
    private readonly transport: Transport,
    private readonly key: () => Promise<AgentKey>,
    private readonly settings: TokenSettings,
  ) {
    this.bind = settings.dpop === true
  }

  /** The current token, exchanging a new one when none is cached or it is due for renewal. */
  async get(): Promise<AccessToken> {
    const token = this.token
    const now = Date.now()
    if (token !== undefined && now < token.refreshAt) return token
    this.pending ??= this.exchange().finally(() => {
      this.pending = undefined
    })
    // Due but still valid: a failed renewal keeps the call going on the old token.
    if (token !== undefined && now < token.expiresAt - 1000) return this.pending.catch(() => token)
    return this.pending
  }

  /** Forget `value` (the gateway said it expired), so the next `get()` exchanges a new one. */
  invalidate(value: string): void {
    if (this.token?.value === value) this.token = undefined
  }

  /** The Authorization (and DPoP) headers for `method path`, and the token they carry. */
  async authorize(
    method: string,
    path: string,
  ): Promise<{ headers: Record<string, string>; token: AccessToken }> {
    const token = await this.get()
    if (!token.bound) return { headers: { authorization: `Bearer ${token.value}` }, token }
    const dpop = await this.proof(method, path, token.ath)
    return { headers: { authorization: `DPoP ${token.value}`, dpop }, token }
  }

  /** The issuer from the gateway's RFC 8414 metadata, checked against a pinned one. */
  issuer(): Promise<string> {
    this.issuerPromise ??= this.discover().catch((err: unknown) => {
      this.issuerPromise = undefined
      throw err
    })
    return this.issuerPromise
  }

  private async discover(): Promise<string> {
    const answer = await this.transport.send({
      method: 'GET',
      path: '/.well-known/oauth-authorization-server',
      retryable: true,
    })
    const issuer = (answer.body as { issuer?: unknown } | undefined)?.issuer
    if (typeof issuer !== 'string' || !URL.canParse(issuer))
      throw invalidAnswer('The authorization server metadata')
    const pinned = this.settings.issuer ?? (await this.key()).issuer
    // A key made for one gateway never signs an assertion for another.
    if (pinned !== undefined && pinned !== issuer) {
      throw new AuthError({
        code: 'issuer_mismatch',
        message: `${this.transport.baseUrl} names issuer "${issuer}", but the key is for "${pinned}".`,
        status: 0,
      })
    }
    this.origin = new URL(issuer).origin
    return issuer
  }

  /**
   * A DPoP proof for `method path` (RFC 9449 §4.2). The gateway judges `htu` against its issuer's
   * origin, whatever URL this client reaches it by.
   */
  async proof(method: string, path: string, ath?: string): Promise<string> {
    await this.issuer()
    const key = await this.key()
    const claims: Record<string, unknown> = {
      htm: method,
      htu: this.origin + path,
      iat: Math.floor(Date.now() / 1000),
      jti: crypto.randomUUID(),
    }
    if (ath !== undefined) claims['ath'] = ath
    return signJws(key.signingKey, { typ: 'dpop+jwt', alg: 'EdDSA', jwk: key.publicJwk }, claims)
  }

  private async exchange(): Promise<AccessToken> {
    try {
      return await this.request()
    } catch (err) {
      // An agent that must bind its tokens says so on the first unbound exchange: bind from then on.
      if (
        !this.bind &&
        err instanceof AuthError &&
        err.code === 'invalid_dpop_proof' &&
        err.details?.['reason'] === 'missing_proof'
      ) {
        this.bind = true
        return this.request()
      }
      throw err
    }
  }

  private async request(): Promise<AccessToken> {
    const key = await this.key()
    const agentId = this.settings.agentId ?? key.agentId
    if (agentId === undefined) {
      throw new AuthError({
        code: 'invalid_key',
        message: 'agentId is required unless the key file (from 4runr agent create) names it.',
        status: 0,
      })
    }
    const issuer = await this.issuer()
    const bind = this.bind
    const started = Date.now()
    const answer = await this.transport.send({
      method: 'POST',
      path: '/v1/token',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      // An assertion's jti and a proof's jti are single use: every attempt signs new ones.
      retryable: true,
      prepare: async () => {
        const now = Math.floor(Date.now() / 1000)
        const header: Record<string, string> = { alg: 'EdDSA', typ: 'JWT' }
        if (key.kid !== undefined) header['kid'] = key.kid
        const assertion = await signJws(key.signingKey, header, {
          iss: agentId,
          sub: agentId,
          aud: issuer,
          iat: now,
          exp: now + assertionLifetimeSeconds,
          jti: crypto.randomUUID(),
        })
        const form = new URLSearchParams({ grant_type: jwtBearer, assertion })
        if (this.settings.scope !== undefined) form.set('scope', this.settings.scope)
        if (this.settings.intent !== undefined) form.set('intent', this.settings.intent)
        if (this.settings.ttl !== undefined) form.set('ttl', String(this.settings.ttl))
        return {
          body: form.toString(),
          headers: bind ? { dpop: await this.proof('POST', '/v1/token') } : undefined,
        }
      },
    })
    const body = answer.body as Record<string, unknown> | undefined
    const value = body?.['access_token']
    const expiresIn = body?.['expires_in']
    if (typeof value !== 'string' || typeof expiresIn !== 'number' || !(expiresIn > 0)) {
      throw invalidAnswer('The token answer')
    }
    const bound = body?.['token_type'] === 'DPoP'
    // Counted from before the request, and a second short: the gateway's exp is counted from the
    // whole second it issued in. The token is never believed to live longer than it does.
    const lifetimeMs = Math.max(expiresIn - 1, expiresIn / 2) * 1000
    const expiresAt = started + lifetimeMs
    const token: AccessToken = {
      value,
      bound,
      scope: typeof body?.['scope'] === 'string' ? body['scope'] : '',
      expiresAt,
      refreshAt: expiresAt - Math.min(60_000, lifetimeMs / 4),
      ath: bound ? await sha256Base64url(value) : undefined,
    }
    this.token = token
    return token
  }
}
