/**
 * The operator's client for the admin listener (DESIGN §3, §18): agents and their keys and tokens,
 * revocations, introspection, policies, secrets, approvals and the audit ledger. Reads and
 * idempotent writes (PUT, DELETE) are retried like agent calls; POSTs are sent once.
 */
import type { Jwk } from './jws.ts'
import type { RetryOptions } from './retry.ts'
import { Transport } from './transport.ts'

export interface AdminClientOptions {
  /** The admin listener's URL, e.g. `http://127.0.0.1:8081`. */
  baseUrl: string
  /** An admin key (`RUNR_ADMIN_KEY` or `gateway.admin.keys`). */
  adminKey: string
  retry?: RetryOptions | false
  timeoutMs?: number
  fetch?: typeof fetch
}

/** An agent as the admin API shows it. */
export interface AgentRecord {
  id: string
  name: string
  labels: Record<string, string>
  roles: string[]
  status: 'active' | 'disabled'
  requireDpop?: boolean
  keys?: Array<{ kid: string; notAfter: string | null; [field: string]: unknown }>
  [field: string]: unknown
}

/** `POST /v1/agents` answers the agent, its first key's id and, when the gateway made the key, the private JWK (once). */
export interface CreatedAgent extends AgentRecord {
  kid: string
  privateKeyJwk?: Jwk
}

export interface TokenAnswer {
  access_token: string
  token_type: 'Bearer' | 'DPoP'
  expires_in: number
  scope: string
  intent?: string
}

export interface Approval {
  id: string
  agentId: string
  status: 'pending' | 'approved' | 'rejected' | 'used' | 'expired'
  summary: Record<string, unknown>
  policy: string
  rule: string
  expiresAt: string
  note: string | null
  [field: string]: unknown
}

type Query = Record<string, string | number | boolean | undefined>

function withQuery(path: string, query: Query | undefined): string {
  if (query === undefined) return path
  const params = new URLSearchParams()
  for (const [name, value] of Object.entries(query)) if (value !== undefined) params.set(name, String(value))
  const text = params.toString()
  return text === '' ? path : `${path}?${text}`
}

const id = (value: string) => encodeURIComponent(value)

export class AdminClient {
  private readonly transport: Transport
  private readonly authorization: string

  readonly agents = {
    create: (body: {
      name: string
      labels?: Record<string, string>
      roles?: string[]
      publicKeyJwk?: Jwk
      requireDpop?: boolean
    }) => this.json<CreatedAgent>('POST', '/v1/agents', body),
    list: (query?: { limit?: number; after?: string }) =>
      this.json<{ agents: AgentRecord[]; next: string | null }>('GET', withQuery('/v1/agents', query)),
    get: (agentId: string) => this.json<AgentRecord>('GET', `/v1/agents/${id(agentId)}`),
    update: (
      agentId: string,
      patch: {
        status?: 'active' | 'disabled'
        labels?: Record<string, string>
        roles?: string[]
        requireDpop?: boolean
      },
    ) => this.json<AgentRecord>('PATCH', `/v1/agents/${id(agentId)}`, patch),
    /** Deletes the agent and revokes its tokens. */
    delete: (agentId: string) => this.json<void>('DELETE', `/v1/agents/${id(agentId)}`),
    /** Add a key (rotation); with `notAfterOld` the other keys stop working then. */
    addKey: (agentId: string, body: { publicKeyJwk?: Jwk; notAfterOld?: string | number } = {}) =>
      this.json<{ kid: string; privateKeyJwk?: Jwk; agent: AgentRecord }>(
        'POST',
        `/v1/agents/${id(agentId)}/keys`,
        body,
      ),
    /** An admin-issued access token, for agents without keys. */
    issueToken: (agentId: string, body: { scope?: string; intent?: string; ttl?: string | number } = {}) =>
      this.json<TokenAnswer>('POST', `/v1/agents/${id(agentId)}/tokens`, body),
  }

  readonly revocations = {
    /** Revoke one token (`jti` or the `token` itself), an agent (kill switch) or one of its keys. */
    create: (body: { jti?: string; token?: string; agentId?: string; kid?: string; reason?: string }) =>
      this.json<Record<string, unknown>>('POST', '/v1/revocations', body),
    list: () => this.json<{ revocations: Array<Record<string, unknown>> }>('GET', '/v1/revocations'),
  }

  readonly tokens = {
    /** RFC 7662: `{active: false}` for anything not currently good. */
    introspect: (token: string) =>
      this.json<{ active: boolean; [claim: string]: unknown }>('POST', '/v1/introspect', { token }),
    /** Rotate the gateway's token-signing key now. */
    rotateSigningKey: () => this.json<{ kid: string; jwks: unknown }>('POST', '/v1/keys/rotate'),
  }

  readonly policies = {
    list: () =>
      this.json<{ version: unknown; policies: Array<Record<string, unknown>> }>('GET', '/v1/policies'),
    get: (name: string) => this.json<Record<string, unknown>>('GET', `/v1/policies/${id(name)}`),
    history: (name: string) =>
      this.json<{ versions: Array<Record<string, unknown>> }>('GET', `/v1/policies/${id(name)}/history`),
    /** Create or replace; `expectedVersion` makes it a compare-and-set. */
    put: (name: string, policy: Record<string, unknown>, options: { expectedVersion?: number } = {}) =>
      this.json<Record<string, unknown>>('PUT', withQuery(`/v1/policies/${id(name)}`, options), policy),
    delete: (name: string) => this.json<void>('DELETE', `/v1/policies/${id(name)}`),
    /** Explain the decision for an agent and a tool call or channel request. */
    evaluate: (input: {
      agent: string
      tool?: string
      action?: string
      channel?: string
      path?: string
      method?: string
      args?: unknown
      intent?: string
      scope?: string
    }) =>
      this.json<{
        decision: string
        policy: string | null
        rule: string | null
        reasons: unknown[]
        [field: string]: unknown
      }>('POST', '/v1/policies/evaluate', input),
  }

  readonly secrets = {
    /** Names and metadata only: secret values are write-only. */
    list: () => this.json<{ secrets: Array<Record<string, unknown>> }>('GET', '/v1/secrets'),
    put: (name: string, value: string, options: { agent?: string } = {}) =>
      this.json<void>('PUT', `/v1/secrets/${id(name)}`, { value, ...options }),
    delete: (name: string, options: { agent?: string } = {}) =>
      this.json<void>('DELETE', withQuery(`/v1/secrets/${id(name)}`, options)),
  }

  readonly approvals = {
    list: (query?: { status?: Approval['status']; agent?: string; limit?: number; after?: string }) =>
      this.json<{ approvals: Approval[]; next: string | null }>('GET', withQuery('/v1/approvals', query)),
    get: (approvalId: string) => this.json<Approval>('GET', `/v1/approvals/${id(approvalId)}`),
    approve: (approvalId: string, note?: string) =>
      this.json<Approval>('POST', `/v1/approvals/${id(approvalId)}`, { decision: 'approve', note }),
    reject: (approvalId: string, note?: string) =>
      this.json<Approval>('POST', `/v1/approvals/${id(approvalId)}`, { decision: 'reject', note }),
  }

  readonly audit = {
    /** Query the audit ledger (newest first); filters and the `after` cursor are query parameters. */
    query: (filters?: Query) =>
      this.json<{ entries: Array<Record<string, unknown>>; next: string | null }>(
        'GET',
        withQuery('/v1/audit', filters),
      ),
    /** Recompute the hash chain and checkpoint signatures (from sequence `since`, of one `instance`). */
    verify: (options?: { since?: number; instance?: string }) =>
      this.json<Record<string, unknown>>('GET', withQuery('/v1/audit/verify', options)),
  }

  constructor(options: AdminClientOptions) {
    if (typeof options !== 'object' || options === null) throw new TypeError('AdminClient needs options')
    if (typeof options.adminKey !== 'string' || options.adminKey === '')
      throw new TypeError('adminKey is required')
    this.transport = new Transport(options)
    this.authorization = `Bearer ${options.adminKey}`
  }

  private async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { authorization: this.authorization }
    if (body !== undefined) headers['content-type'] = 'application/json'
    const answer = await this.transport.send({
      method,
      path,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      retryable: method === 'GET' || method === 'PUT' || method === 'DELETE',
    })
    return answer.body as T
  }
}
