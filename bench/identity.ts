/**
 * Agent identity for the rows behind agent tokens (`gateway-auth`, `tool`, `tool-policy`,
 * `openai-passthrough`) and the token exchange measurement: create an agent
 * over the admin API, sign RFC 7523 assertions with its private JWK (as the CLI's
 * `signAssertion` does), and exchange one for an access token at `POST /v1/token`.
 *
 * Tokens and private keys are secrets even on a throwaway gateway: nothing here prints them, and
 * error messages carry statuses and error codes only.
 */
import { randomUUID } from 'node:crypto'
import { type CryptoKey, importJWK, type JWK, SignJWT } from 'jose'

export const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer'

/** An agent created for the run: what signing an assertion needs. */
export interface BenchAgent {
  id: string
  kid: string
  privateKeyJwk: JWK
}

/** The gateway's refusal in one line (`400 invalid_grant/replayed_jti`), never a token. */
export function refusal(status: number, body: string): string {
  try {
    const error = (JSON.parse(body) as { error?: { code?: string; details?: { reason?: string } } }).error
    if (error?.code)
      return `${status} ${error.code}${error.details?.reason ? `/${error.details.reason}` : ''}`
  } catch {
    // not JSON: the status alone
  }
  return String(status)
}

async function json(res: Response, what: string): Promise<Record<string, unknown>> {
  const body = await res.text()
  if (!res.ok) throw new Error(`${what}: ${refusal(res.status, body)}`)
  return JSON.parse(body) as Record<string, unknown>
}

/**
 * `POST /v1/agents` on the admin listener: a new agent with a gateway-generated key pair, and
 * `labels` for policies that select agents by label.
 */
export async function createAgent(
  adminUrl: string,
  adminKey: string,
  name: string,
  labels?: Record<string, string>,
): Promise<BenchAgent> {
  const res = await fetch(`${adminUrl}/v1/agents`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
    body: JSON.stringify(labels === undefined ? { name } : { name, labels }),
  })
  const created = await json(res, 'POST /v1/agents')
  const agent = {
    id: created['id'] as string,
    kid: created['kid'] as string,
    privateKeyJwk: created['privateKeyJwk'] as JWK,
  }
  if (typeof agent.id !== 'string' || typeof agent.privateKeyJwk?.d !== 'string') {
    throw new Error('POST /v1/agents: the answer has no agent id or private key')
  }
  return agent
}

/** The issuer from the RFC 8414 metadata: an assertion's audience, whatever URL reached the gateway. */
export async function discoverIssuer(publicUrl: string): Promise<string> {
  const meta = await json(
    await fetch(`${publicUrl}/.well-known/oauth-authorization-server`),
    'GET /.well-known/oauth-authorization-server',
  )
  const issuer = meta['issuer']
  if (typeof issuer !== 'string') throw new Error('the authorization server metadata has no issuer')
  return issuer
}

/** Signs assertions for one agent; the JWK is imported once, not per assertion. */
export async function assertionSigner(agent: BenchAgent, issuer: string) {
  const key = (await importJWK(agent.privateKeyJwk, 'EdDSA')) as CryptoKey
  /** iss = sub = the agent, aud = the issuer, a fresh jti (single use), exp `lifetimeSec` ahead. */
  return (lifetimeSec = 60): Promise<string> => {
    const now = Math.floor(Date.now() / 1000)
    return new SignJWT({})
      .setProtectedHeader({ alg: 'EdDSA', kid: agent.kid, typ: 'JWT' })
      .setIssuer(agent.id)
      .setSubject(agent.id)
      .setAudience(issuer)
      .setIssuedAt(now)
      .setExpirationTime(now + lifetimeSec)
      .setJti(randomUUID())
      .sign(key)
  }
}

/** The form body of a jwt-bearer token request; `intent` is the token's declared purpose. */
export function tokenRequestBody(assertion: string, scope: string, ttlSec?: number, intent?: string): string {
  const form = new URLSearchParams({ grant_type: JWT_BEARER, assertion, scope })
  if (ttlSec !== undefined) form.set('ttl', String(ttlSec))
  if (intent !== undefined) form.set('intent', intent)
  return form.toString()
}

/** Exchanges one fresh assertion for an access token with `scope` (and `intent`), valid `ttlSec`. */
export async function fetchToken(
  publicUrl: string,
  agent: BenchAgent,
  issuer: string,
  scope: string,
  ttlSec: number,
  intent?: string,
): Promise<{ token: string; expiresIn: number }> {
  const sign = await assertionSigner(agent, issuer)
  const res = await fetch(`${publicUrl}/v1/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: tokenRequestBody(await sign(), scope, ttlSec, intent),
  })
  const answer = await json(res, 'POST /v1/token')
  const token = answer['access_token']
  if (typeof token !== 'string') throw new Error('POST /v1/token: the answer has no access_token')
  return { token, expiresIn: Number(answer['expires_in']) }
}
