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

/**
 * Thrown when a unique constraint (agent name, agent id, key kid within an agent, signing kid,
 * approval id) is hit, and when a compare-and-set (policy expectedVersion, secret reseal) misses.
 */
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

/**
 * One version of a policy managed through the admin API. Config-file policies never reach the
 * Store. Versions of a name count up from 1 and are never reused, not even after a delete, so an
 * audit record naming `policy@version` stays unambiguous.
 */
export interface StoredPolicy {
  name: string
  version: number
  /** A JSON object, returned as it was stored (key order included). */
  document: unknown
  /** When this incarnation of the policy was created (its first version after any delete). */
  createdAt: number
  /** When this version was written. */
  updatedAt: number
}

export interface PolicyPutOptions {
  /**
   * The version the caller last read: the put fails with StoreConflictError unless it is still
   * current. 0 means the policy must not exist. Omitted: write whatever is there.
   */
  expectedVersion?: number
  /** Milliseconds; defaults to now. */
  now?: number
}

export interface PolicyStore {
  /** The current version of every policy, ordered by name (bytewise). */
  list(): Promise<StoredPolicy[]>
  get(name: string): Promise<StoredPolicy | undefined>
  /**
   * Writes a new version (1 for a new name, else the highest version ever written + 1). Writes
   * are serialised across instances, so two puts never produce the same version.
   * TypeError when `document` is not a JSON object; StoreConflictError on an expectedVersion miss.
   */
  put(name: string, document: unknown, options?: PolicyPutOptions): Promise<StoredPolicy>
  /** Removes the current version; the history is kept. True when the policy existed. */
  delete(name: string): Promise<boolean>
  /** Every version ever written under `name`, deleted incarnations included, newest first. */
  history(name: string, options?: { limit?: number }): Promise<StoredPolicy[]>
  /**
   * An opaque value that changes with every put and every delete that removed something, on any
   * instance: poll it and reload the policies when it differs from the last one seen.
   */
  fingerprint(): Promise<string>
}

/** 'expired' is never stored: a pending or approved record reads as expired once expiresAt <= now. */
export type ApprovalStatus = 'pending' | 'approved' | 'rejected' | 'used' | 'expired'

/** A call parked until an operator decides on it (DESIGN §7, `approval: required`). */
export interface Approval {
  id: string
  agentId: string
  /** JSON: what is being approved, e.g. `{kind: 'tool', tool, action}`. */
  target: unknown
  /** Hash of the canonical call: the replay that uses the approval must hash the same. */
  requestHash: string
  /** JSON shown to the operator. */
  summary: unknown
  policy: string
  rule: string
  status: ApprovalStatus
  createdAt: number
  expiresAt: number
  decidedAt: number | null
  decidedBy: string | null
  note: string | null
  usedAt: number | null
}

/** An approval as it is requested: pending, undecided and unused. */
export type NewApproval = Omit<Approval, 'status' | 'decidedAt' | 'decidedBy' | 'note' | 'usedAt'>

/** What became of a decision: only a pending, unexpired approval can be decided, and only once. */
export type DecideResult =
  | { outcome: 'decided'; approval: Approval }
  | { outcome: 'not_found' }
  /** Someone decided first (or it was used); `approval` is the record as it stands. */
  | { outcome: 'already_decided'; approval: Approval }
  /** Still pending, but past expiresAt. */
  | { outcome: 'expired'; approval: Approval }

export interface ApprovalListOptions {
  /** The status as read at `now` (so 'expired' and 'pending' exclude each other). */
  status?: ApprovalStatus
  agentId?: string
  limit?: number
  /** The id of the last approval of the previous page. */
  after?: string
  /** Milliseconds; defaults to now. */
  now?: number
}

export interface ApprovalStore {
  /** Stores a pending approval. StoreConflictError when the id is taken. */
  create(approval: NewApproval): Promise<Approval>
  /** The approval with its status as read at `now` (default: now). */
  get(id: string, now?: number): Promise<Approval | undefined>
  /** Newest first (createdAt, then id, descending). */
  list(options?: ApprovalListOptions): Promise<Approval[]>
  /** Approves or rejects a pending, unexpired approval; atomic, so of two deciders one wins. */
  decide(
    id: string,
    decision: 'approved' | 'rejected',
    options: { by: string; note?: string | null; now?: number },
  ): Promise<DecideResult>
  /**
   * Marks an approved, unexpired approval used. True exactly once per approval, however many
   * callers on however many instances race for it.
   */
  consume(id: string, now: number): Promise<boolean>
  /** Deletes approvals whose expiresAt is before `before`, whatever their status; returns how many. */
  prune(before: number): Promise<number>
}

/** One fixed window of a durable counter. */
export interface QuotaWindow {
  /** Identifies the window together with the key; a different windowStart is a fresh count. */
  windowStart: number
  /** When the window ends; prune deletes it from then on. */
  windowEnd: number
}

export interface QuotaConsumeOptions extends QuotaWindow {
  /** Most the window may count. */
  limit: number
  /** Default 1. */
  cost?: number
}

/**
 * Durable fixed-window counters (DESIGN §9 quotas in the embedded mode, where they must survive a
 * restart). Counts are non-negative integers.
 */
export interface QuotaStore {
  /**
   * Adds `cost` only when the count stays within `limit`, atomically across instances; a refusal
   * adds nothing. `used` is the count after the call.
   */
  consume(key: string, options: QuotaConsumeOptions): Promise<{ allowed: boolean; used: number }>
  /** Adds `amount` whatever the limit (usage known only after the call, e.g. LLM tokens); returns the count. */
  add(key: string, amount: number, window: QuotaWindow): Promise<number>
  /** The count of the window starting at `windowStart` (0 when nothing was counted). */
  get(key: string, windowStart: number): Promise<number>
  /** Deletes windows that ended at or before `now`; returns how many. */
  prune(now: number): Promise<number>
}

/** A tool secret, sealed with the master key. `agentId` null: the tool-wide value; else an agent's override. */
export interface SecretRecord {
  name: string
  agentId: string | null
  /** Ciphertext from the secrets module: never the plain value. */
  sealedValue: string
  /** Which master key sealed it. */
  keyId: string
  createdAt: number
  /** When the value was last replaced; null while it is the first value. */
  rotatedAt: number | null
}

/** A secret without its value, for listings. */
export type SecretMetadata = Omit<SecretRecord, 'sealedValue'>

/** A secret's value sealed again (under a new master key), replacing exactly `previousSealedValue`. */
export interface SecretReseal {
  name: string
  agentId: string | null
  previousSealedValue: string
  sealedValue: string
  keyId: string
}

export interface SecretStore {
  /**
   * Stores a value, replacing the one with the same name and agentId: a replacement keeps
   * createdAt and sets rotatedAt to `now` (default: now). TypeError on an empty agentId.
   */
  put(
    secret: Pick<SecretRecord, 'name' | 'agentId' | 'sealedValue' | 'keyId'>,
    now?: number,
  ): Promise<SecretRecord>
  /** Exactly that value: an agent's override does not fall back to the tool-wide value here. */
  get(name: string, agentId: string | null): Promise<SecretRecord | undefined>
  /** Ordered by name, then agentId with the tool-wide value first. */
  list(): Promise<SecretMetadata[]>
  /** Deletes one value (agentId omitted or null: the tool-wide one). True when it existed. */
  delete(name: string, agentId?: string | null): Promise<boolean>
  /** Every secret with its sealed value, in list order. */
  all(): Promise<SecretRecord[]>
  /**
   * Replaces sealed values in one transaction, all or nothing: StoreConflictError when any of them
   * no longer holds `previousSealedValue` (written or deleted since it was read), so a master-key
   * rotation never overwrites a newer value with a stale one. createdAt and rotatedAt stay.
   */
  reseal(changes: readonly SecretReseal[]): Promise<void>
}

/** An answer kept for repeats of an `Idempotency-Key`: status, the headers that matter, body bytes. */
export interface IdempotentAnswer {
  status: number
  headers: Record<string, string>
  body: Buffer
}

/**
 * One `Idempotency-Key` of one principal. `pending` while the first call runs (until `leaseUntil`,
 * after which another call may take it over: the first one's instance died), then `done` with the
 * answer until `expiresAt`.
 */
export interface IdempotencyRecord {
  principal: string
  key: string
  /** Hash of what was asked (target and canonical arguments): a repeat must ask the same. */
  requestHash: string
  /** Who holds the claim: only they can complete or release it. */
  owner: string
  state: 'pending' | 'done'
  answer: IdempotentAnswer | null
  createdAt: number
  expiresAt: number
  leaseUntil: number
}

/** A claim on a key for a first execution. */
export interface IdempotencyClaim {
  principal: string
  key: string
  requestHash: string
  owner: string
  now: number
  expiresAt: number
  leaseUntil: number
}

export interface IdempotencyStore {
  /**
   * Claim `key` for a first execution: 'claimed' when it was free, expired, or pending past its
   * lease; else the record as it stands. Atomic across instances: of racing claims one wins.
   */
  begin(
    claim: IdempotencyClaim,
  ): Promise<{ outcome: 'claimed' } | { outcome: 'existing'; record: IdempotencyRecord }>
  /** Store the answer of the claim `owner` holds; false when the claim was lost (taken over). */
  complete(principal: string, key: string, owner: string, answer: IdempotentAnswer): Promise<boolean>
  /**
   * Extend the lease of the pending claim `owner` holds to `leaseUntil`: the first call is still
   * running. False when the claim was lost (taken over, or finished).
   */
  renew(principal: string, key: string, owner: string, leaseUntil: number): Promise<boolean>
  /** Give up a pending claim (the call ended before anything worth keeping happened). */
  release(principal: string, key: string, owner: string): Promise<void>
  /** The record, unless it expired at `now`. */
  get(principal: string, key: string, now: number): Promise<IdempotencyRecord | undefined>
  /** Delete records that expired at or before `now`; returns how many. */
  prune(now: number): Promise<number>
}

export interface Store {
  readonly kind: 'sqlite' | 'postgres'
  readonly agents: AgentStore
  readonly revocations: RevocationStore
  readonly signingKeys: SigningKeyStore
  readonly policies: PolicyStore
  readonly approvals: ApprovalStore
  readonly quotas: QuotaStore
  readonly secrets: SecretStore
  readonly idempotency: IdempotencyStore
  /** True when the database answers (for /ready). */
  ping(): Promise<boolean>
  close(): Promise<void>
}
