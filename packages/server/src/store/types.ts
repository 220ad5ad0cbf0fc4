/**
 * The Store contract (DESIGN §14): durable records shared by every gateway instance. Two
 * implementations (SQLite, Postgres) pass one contract suite (store.contract.test.ts).
 *
 * Times are integer milliseconds since the epoch. Ids are opaque strings chosen by the caller
 * (the identity layer makes them), so both stores agree on them and tests can predict them.
 * Methods never return shared mutable objects: every call returns fresh records.
 */

/** An Ed25519 public key as a JWK (RFC 8037). */
export interface PublicJwk {
  kty: 'OKP'
  crv: 'Ed25519'
  x: string
  kid?: string
}

export interface AgentKey {
  /** Unique within the agent; the RFC 7638 thumbprint of the JWK unless the caller gave one. */
  kid: string
  jwk: PublicJwk
  createdAt: number
  /** After this instant the key no longer verifies assertions; null: no end. */
  notAfter: number | null
}

export type AgentStatus = 'active' | 'disabled'

export interface Agent {
  id: string
  /** Unique across agents. */
  name: string
  labels: Record<string, string>
  roles: string[]
  status: AgentStatus
  requireDpop: boolean
  /** `config` for agents declared in the config file, `api` for agents made through the admin API. */
  source: 'api' | 'config'
  createdAt: number
  updatedAt: number
  /** Ordered by createdAt ascending. */
  keys: AgentKey[]
}

export interface NewAgent {
  id: string
  name: string
  labels?: Record<string, string>
  roles?: string[]
  status?: AgentStatus
  requireDpop?: boolean
  source?: 'api' | 'config'
  /** Milliseconds; defaults to now. */
  createdAt?: number
  keys?: AgentKey[]
}

export interface AgentPatch {
  name?: string
  labels?: Record<string, string>
  roles?: string[]
  status?: AgentStatus
  requireDpop?: boolean
}

/**
 * A revocation. `jti`: one token. `agent`: every token of the agent issued at or before
 * `createdAt` (the kill switch). `key`: every token obtained with the agent key `kid` at or
 * before `createdAt`, and the key itself stops verifying assertions.
 */
export interface Revocation {
  id: string
  kind: 'jti' | 'agent' | 'key'
  jti: string | null
  agentId: string | null
  kid: string | null
  reason: string | null
  createdAt: number
  /** When the record can be forgotten (the revoked token's exp); null: keep. */
  expiresAt: number | null
}

/** One of the gateway's own token-signing keys; the private half is sealed with the master key. */
export interface SigningKey {
  kid: string
  alg: 'EdDSA'
  publicJwk: PublicJwk
  /** Output of identity/sealed.ts: never the plain private key. */
  sealedPrivateKey: string
  createdAt: number
  /** When it stopped signing (a newer key took over); null while it is the active key. */
  retiredAt: number | null
}

/** Thrown when a unique constraint (agent name, agent id, key kid within an agent, signing kid) is hit. */
export class StoreConflictError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'StoreConflictError'
  }
}

export interface AgentStore {
  /** Throws StoreConflictError when the id or name is taken. */
  create(agent: NewAgent): Promise<Agent>
  get(id: string): Promise<Agent | undefined>
  getByName(name: string): Promise<Agent | undefined>
  /** Ordered by createdAt then id; `after` is the id of the last agent of the previous page. */
  list(options?: { limit?: number; after?: string }): Promise<Agent[]>
  /** undefined when there is no such agent; StoreConflictError on a taken name. */
  update(id: string, patch: AgentPatch, now?: number): Promise<Agent | undefined>
  /** True when an agent was deleted (its keys go with it). */
  delete(id: string): Promise<boolean>
  /**
   * Add a key; when `notAfterOthers` is given, every existing key of the agent whose notAfter is
   * null or later is set to it (rotation). undefined when there is no such agent; conflict on a
   * taken kid.
   */
  addKey(agentId: string, key: AgentKey, notAfterOthers?: number): Promise<Agent | undefined>
}

export interface RevocationStore {
  /** Idempotent on `id`. */
  add(revocation: Revocation): Promise<void>
  /** Every revocation with createdAt >= `since` (default 0) and not expired at `now`, oldest first. */
  list(options?: { since?: number; now?: number; limit?: number }): Promise<Revocation[]>
  /** Delete records whose expiresAt < now; returns how many. */
  prune(now: number): Promise<number>
}

export interface SigningKeyStore {
  /** Every key, oldest first. */
  list(): Promise<SigningKey[]>
  /** Conflict on a taken kid. */
  insert(key: SigningKey): Promise<void>
  /** Mark every key but `kid` that is still active as retired at `at`. */
  retireAllBut(kid: string, at: number): Promise<void>
  /** Delete keys retired before `before`; returns how many. */
  deleteRetiredBefore(before: number): Promise<number>
}

export interface Store {
  readonly kind: 'sqlite' | 'postgres'
  readonly agents: AgentStore
  readonly revocations: RevocationStore
  readonly signingKeys: SigningKeyStore
  /** True when the database answers (for /ready). */
  ping(): Promise<boolean>
  close(): Promise<void>
}
