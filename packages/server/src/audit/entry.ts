/**
 * Audit ledger entries and their hash chain (DESIGN §13). An entry's hash covers every field but
 * the hash itself, written as canonical JSON after the previous entry's hash, so an edit, a
 * deletion, an insertion or a reorder changes a hash that a later entry or a signed checkpoint
 * has already committed to. Canonical JSON is the rule of policy/guards/args-shape.ts
 * (`canonicalJson`): keys sorted, no whitespace, JSON.stringify strings and numbers.
 */
import { createHash } from 'node:crypto'

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

const text = (v: string | null) => (v === null ? 'null' : JSON.stringify(v))
const num = (v: number) => (Number.isFinite(v) ? String(v) : 'null')

/**
 * The canonical JSON of an entry's fields without its hash: keys sorted, no whitespace, exactly
 * what `canonicalJson` writes for the same object (a test holds them equal), built directly
 * because the generic walk costs tens of microseconds per entry.
 */
export function entryCanonicalJson(e: Omit<AuditEntry, 'hash'>): string {
  return `{"action":${text(e.action)},"correlationId":${text(e.correlationId)},"decision":${text(e.decision)},"durationMs":${num(e.durationMs)},"instance":${text(e.instance)},"kind":${text(e.kind)},"prevHash":${text(e.prevHash)},"principal":${text(e.principal)},"requestId":${text(e.requestId)},"rule":${text(e.rule)},"seq":${num(e.seq)},"status":${num(e.status)},"target":${text(e.target)},"time":${num(e.time)}}`
}

/** The hash of an entry: SHA-256 over its predecessor's hash and the canonical JSON of its fields. */
export function entryHash(entry: Omit<AuditEntry, 'hash'>): string {
  return createHash('sha256').update(entry.prevHash).update(entryCanonicalJson(entry)).digest('hex')
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
    // One object per entry, in a fixed shape: spreads would copy it twice.
    const entry: AuditEntry = {
      seq,
      time: event.time,
      instance,
      requestId: event.requestId,
      correlationId: event.correlationId,
      principal: event.principal,
      kind: event.kind,
      target: event.target,
      action: event.action,
      decision: event.decision,
      rule: event.rule,
      status: event.status,
      durationMs: event.durationMs,
      prevHash: hash,
      hash: '',
    }
    hash = entryHash(entry)
    entry.hash = hash
    out.push(entry)
  }
  return out
}

/** The API form of an entry: the time as RFC 3339. */
export function entryView(entry: AuditEntry) {
  return { ...entry, time: new Date(entry.time).toISOString() }
}
