/**
 * The identity routes on the public listener: `POST /v1/token`, `GET /.well-known/jwks.json`, and
 * the agent-token authenticator for channels (DESIGN §3, §5).
 */
import type { IncomingMessage } from 'node:http'
import { GatewayError } from '../errors/gateway-error.ts'
import type { Principal, RequestContext } from '../http/context.ts'
import type { Authenticator, PublicRoute } from '../http/pipeline.ts'
import { parseFormOrJson, readBody } from '../http/read-body.ts'
import type { KeyRing } from '../identity/key-ring.ts'
import { type AuthResult, grantJwtBearer, grantTokenExchange, type TokenService } from './token-service.ts'

/**
 * The URL a DPoP proof's `htu` must name for this request: the gateway's public origin (from the
 * issuer, which operators set to the public URL) and the path as sent, without the query. Never
 * the client's Host header: a proof made for another server must not be replayable here
 * (RFC 9449 §11.1).
 */
export function requestUrls(req: IncomingMessage, issuer: string): string[] {
  const url = req.url ?? '/'
  const q = url.indexOf('?')
  return [new URL(issuer).origin + (q < 0 ? url : url.slice(0, q))]
}

function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name]
  return typeof value === 'string' ? value : undefined
}

export function identityRoutes(deps: {
  tokens: TokenService
  keyRing: KeyRing
  issuer: string
}): Map<string, PublicRoute> {
  const token: PublicRoute = {
    methods: ['POST'],
    async handle(req: IncomingMessage, ctx: RequestContext) {
      const body = await readBody(req, ctx.config.gateway.bodyLimitBytes)
      const params = parseFormOrJson(body, req.headers['content-type'])
      const answer = await deps.tokens.exchange(params, header(req, 'dpop'), requestUrls(req, deps.issuer))
      // RFC 6749 §5.1: token responses must not be cached.
      return { status: 200, body: answer, headers: { pragma: 'no-cache' } }
    },
  }
  const jwks: PublicRoute = {
    methods: ['GET', 'HEAD'],
    async handle() {
      return { status: 200, body: deps.keyRing.jwks(), headers: { 'cache-control': 'public, max-age=60' } }
    },
  }
  // RFC 8414 metadata: lets clients (and `4runr token get`) find the issuer and endpoints.
  const base = deps.issuer.replace(/\/+$/, '')
  const metadata = {
    issuer: deps.issuer,
    token_endpoint: `${base}/v1/token`,
    jwks_uri: `${base}/.well-known/jwks.json`,
    grant_types_supported: [grantJwtBearer, grantTokenExchange],
    token_endpoint_auth_methods_supported: ['private_key_jwt'],
    token_endpoint_auth_signing_alg_values_supported: ['EdDSA'],
    dpop_signing_alg_values_supported: ['EdDSA', 'ES256'],
  }
  const discovery: PublicRoute = {
    methods: ['GET', 'HEAD'],
    async handle() {
      return { status: 200, body: metadata, headers: { 'cache-control': 'public, max-age=300' } }
    },
  }
  return new Map([
    ['/v1/token', token],
    ['/.well-known/jwks.json', jwks],
    ['/.well-known/oauth-authorization-server', discovery],
  ])
}

/** The token of `Bearer <token>` or `DPoP <token>` (scheme in any case), else undefined. */
function credential(value: string): { scheme: 'bearer' | 'dpop'; token: string } | undefined {
  const space = value.indexOf(' ')
  if (space < 0) return undefined
  const name = value.slice(0, space).toLowerCase()
  const scheme = name === 'bearer' ? 'bearer' : name === 'dpop' ? 'dpop' : undefined
  const token = value.slice(space + 1).trim()
  // The token's own syntax is checked by verification (a cache hit is an exact match of a token
  // that was verified): a character scan here cost a quarter of the whole authenticator.
  if (scheme === undefined || token === '') return undefined
  return { scheme, token }
}

/**
 * Agent tokens on channel routes: `Authorization: Bearer <token>` or, for key-bound tokens,
 * `Authorization: DPoP <token>` with a `DPoP` proof. No Authorization header: not ours (undefined).
 */
export function agentTokenAuthenticator(tokens: TokenService, issuer: string): Authenticator {
  // One principal per verified token and agent version: a repeated token allocates nothing, and
  // a changed agent record (roles, status) is a new object, so the principal follows it.
  const principals = new WeakMap<object, { agent: object; principal: Principal }>()
  const toPrincipal = (r: AuthResult): Principal => {
    const known = principals.get(r.claims)
    if (known !== undefined && known.agent === r.agent) return known.principal
    const principal: Principal = {
      kind: 'agent',
      id: r.agent.id,
      roles: r.agent.roles,
      claims: r.claims as unknown as Record<string, unknown>,
      agent: r.agent,
    }
    principals.set(r.claims, { agent: r.agent, principal })
    return principal
  }
  const proof = (req: IncomingMessage, method: string) => ({
    dpop: header(req, 'dpop'),
    method,
    urls: requestUrls(req, issuer),
  })
  return (req, ctx) => {
    const value = req.headers.authorization
    if (value === undefined) return undefined
    const found = credential(value)
    if (found === undefined) {
      throw new GatewayError('unauthenticated', 'Send Authorization: Bearer <token> or DPoP <token>.', {
        details: { reason: 'malformed' },
        headers: { 'www-authenticate': 'Bearer, DPoP' },
      })
    }
    const result = tokens.authenticate(found.scheme, found.token, req, ctx.method, proof)
    return result instanceof Promise ? result.then(toPrincipal) : toPrincipal(result)
  }
}
