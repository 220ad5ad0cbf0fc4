/**
 * Where the ledger lives: one contract, a SQLite and a Postgres implementation. Appends read the
 * chain head and write the batch in one transaction that serialises writers of the same
 * instance, so two processes sharing an instance name extend its chain instead of forking it.
 */
import type { AuditEntry, AuditEvent } from './entry.ts'

/** A signed statement that the chain of `instance` had `hash` at `seq`. */
export interface Checkpoint {
  instance: string
  seq: number
  hash: string
  time: number
  /** The gateway signing key that signed it (see audit_keys). */
  kid: string
  /** Ed25519 signature (base64url) over the checkpoint payload. */
  signature: string
}

/** A checkpoint key's public half with its attestation under the master key. */
export interface AuditKey {
  kid: string
  x: string
  attestation: string
  createdAt: number
}

/** Query filters; every field narrows. */
export interface AuditFilter {
  principal?: string
  target?: string
  kind?: string
  decision?: string
  instance?: string
  /** An exact status, or a class as its first digit (4 for 4xx). */
  status?: { exact: number } | { class: number }
  /** Inclusive lower and exclusive upper time bound (ms). */
  from?: number
  to?: number
}

/** A position in (time, instance, seq) order: where the previous page stopped. */
export interface AuditCursor {
  time: number
  instance: string
  seq: number
}

export interface AuditPageQuery {
  filter: AuditFilter
  after?: AuditCursor
  order: 'asc' | 'desc'
  limit: number
}

export interface LedgerStore {
  readonly kind: 'sqlite' | 'postgres'
  /** Chain `events` after the current head of `instance` and write them, all or nothing. */
  append(instance: string, events: readonly AuditEvent[]): Promise<AuditEntry[]>
  /** The last entry's position, or undefined for an empty chain. */
  head(instance: string): Promise<{ seq: number; hash: string } | undefined>
  /** Every instance with entries or checkpoints. */
  instances(): Promise<string[]>
  /** Entries of `instance` with seq >= `fromSeq`, in seq order. */
  range(instance: string, fromSeq: number, limit: number): Promise<AuditEntry[]>
  /** Entries across instances, filtered, in (time, instance, seq) order. */
  page(query: AuditPageQuery): Promise<AuditEntry[]>
  addCheckpoint(checkpoint: Checkpoint): Promise<void>
  /** Checkpoints of `instance` in seq order. */
  checkpoints(instance: string): Promise<Checkpoint[]>
  /** Adds the key unless its kid is already known. */
  addKey(key: AuditKey): Promise<void>
  keys(): Promise<AuditKey[]>
  /** Replaces a key's attestation (after a master key rotation). */
  reattest(kid: string, attestation: string): Promise<void>
  /**
   * Drops the entries of `instance` up to and including `throughSeq` and the checkpoints before
   * it: the checkpoint at `throughSeq` stays as the signed anchor of what remains.
   */
  prune(instance: string, throughSeq: number): Promise<number>
  close(): Promise<void>
}
