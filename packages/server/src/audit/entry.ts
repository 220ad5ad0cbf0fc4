/**
 * Audit ledger entries and their hash chain (DESIGN §13). An entry's hash covers every field but
 * the hash itself, written as canonical JSON after the previous entry's hash, so an edit, a
 * deletion, an insertion or a reorder changes a hash that a later entry or a signed checkpoint
 * has already committed to.
 */
import { createHash } from 'node:crypto'
import { canonicalJson } from '../policy/guards/args-shape.ts'

/** The prevHash of the first entry of every chain. */
export const genesisHash = '0'.repeat(64)

/** What kind of event an entry records. */
export type AuditKind = 'call' | 'token' | 'admin'

/**
 * What a caller hands the ledger: cheap to build on the hot path. Position and hashes are given
 * at flush time, when the entry joins its chain.
 */
export interface AuditEvent {
  /** Milliseconds since the epoch. */
  time: number
  requestId: string | null
  correlationId: string | null
  /** `agent:<id>`, `user:<id>`, `admin`, or null when nobody was proven. */
  principal: string | null
  kind: AuditKind
  /** `tool:<tool>`, `channel:<name>`, `agent:<id>`, `secret:<name>`, a route... */
  target: string | null
  action: string | null
  /** `allow`, `deny`, `approval_required`, or null when no decision applied. */
  decision: string | null
  /** The deciding policy rule, when one decided. */
  rule: string | null
  status: number
  durationMs: number
}

/** An event in its chain. */
export interface AuditEntry extends AuditEvent {
  instance: string
  seq: number
  prevHash: string
  hash: string
}

/** The hash of an entry: SHA-256 over its predecessor's hash and the canonical JSON of its fields. */
export function entryHash(entry: Omit<AuditEntry, 'hash'>): string {
  const fields = {
    seq: entry.seq,
    time: entry.time,
    instance: entry.instance,
    requestId: entry.requestId,
    correlationId: entry.correlationId,
    principal: entry.principal,
    kind: entry.kind,
    target: entry.target,
    action: entry.action,
    decision: entry.decision,
    rule: entry.rule,
    status: entry.status,
    durationMs: entry.durationMs,
    prevHash: entry.prevHash,
  }
  return createHash('sha256').update(entry.prevHash).update(canonicalJson(fields)).digest('hex')
}

/** Chain `events` after the entry (`seq`, `hash`) of `instance`. */
export function chain(
  instance: string,
  head: { seq: number; hash: string },
  events: readonly AuditEvent[],
): AuditEntry[] {
  const out: AuditEntry[] = []
  let { seq, hash } = head
  for (const event of events) {
    seq += 1
    const linked = { ...event, instance, seq, prevHash: hash }
    hash = entryHash(linked)
    out.push({ ...linked, hash })
  }
  return out
}

/** The API form of an entry: the time as RFC 3339. */
export function entryView(entry: AuditEntry) {
  return { ...entry, time: new Date(entry.time).toISOString() }
}
