/**
 * The ledger in the embedded SQLite file, on its own connection to the file the Store migrated:
 * a group commit never waits behind the Store's statements, and WAL lets both write in turn.
 */
import Database from 'better-sqlite3'
import { type AuditEntry, type AuditEvent, chain, genesisHash } from './entry.ts'
import type { AuditCursor, AuditFilter, AuditKey, Checkpoint, LedgerStore } from './ledger-store.ts'

const columns = `instance, seq, time, request_id as requestId, correlation_id as correlationId, principal,
  kind, target, action, decision, rule, status, duration_ms as durationMs, prev_hash as prevHash, hash`

/** `where` text and named parameters for a filter and an optional cursor. */
function whereOf(filter: AuditFilter, after: AuditCursor | undefined, order: 'asc' | 'desc') {
  const clauses: string[] = []
  const params: Record<string, string | number> = {}
  for (const key of ['principal', 'target', 'kind', 'decision', 'instance'] as const) {
    const value = filter[key]
    if (value === undefined) continue
    clauses.push(`${key} = @${key}`)
    params[key] = value
  }
  if (filter.status !== undefined) {
    if ('exact' in filter.status) {
      clauses.push('status = @status')
      params['status'] = filter.status.exact
    } else {
      clauses.push('status >= @statusLow and status < @statusHigh')
      params['statusLow'] = filter.status.class * 100
      params['statusHigh'] = filter.status.class * 100 + 100
    }
  }
  if (filter.from !== undefined) {
    clauses.push('time >= @from')
    params['from'] = filter.from
  }
  if (filter.to !== undefined) {
    clauses.push('time < @to')
    params['to'] = filter.to
  }
  if (after !== undefined) {
    clauses.push(
      `(time, instance, seq) ${order === 'asc' ? '>' : '<'} (@afterTime, @afterInstance, @afterSeq)`,
    )
    params['afterTime'] = after.time
    params['afterInstance'] = after.instance
    params['afterSeq'] = after.seq
  }
  return { where: clauses.length === 0 ? '' : `where ${clauses.join(' and ')}`, params }
}

/** Opens the ledger in the SQLite file at `path`, whose schema the Store has migrated. */
export function openSqliteLedgerStore(path: string): LedgerStore {
  const db = new Database(path)
  db.pragma('journal_mode = WAL')
  db.pragma('busy_timeout = 5000')
  const headOf = db.prepare<[string], { seq: number; hash: string }>(
    'select seq, hash from audit_entries where instance = ? order by seq desc limit 1',
  )
  const insert = db.prepare<AuditEntry>(
    `insert into audit_entries (instance, seq, time, request_id, correlation_id, principal, kind, target,
      action, decision, rule, status, duration_ms, prev_hash, hash)
     values (@instance, @seq, @time, @requestId, @correlationId, @principal, @kind, @target, @action,
      @decision, @rule, @status, @durationMs, @prevHash, @hash)`,
  )
  // IMMEDIATE: the head is read under the write lock, so no other writer can extend it meanwhile.
  const appendTx = db.transaction((instance: string, events: readonly AuditEvent[]): AuditEntry[] => {
    const entries = chain(instance, headOf.get(instance) ?? { seq: 0, hash: genesisHash }, events)
    for (const entry of entries) insert.run(entry)
    return entries
  })
  const instances = db
    .prepare<[], string>('select instance from audit_entries union select instance from audit_checkpoints')
    .pluck()
  const range = db.prepare<[string, number, number], AuditEntry>(
    `select ${columns} from audit_entries where instance = ? and seq >= ? order by seq limit ?`,
  )
  const addCheckpoint = db.prepare<Checkpoint>(
    `insert or ignore into audit_checkpoints (instance, seq, hash, time, kid, signature)
     values (@instance, @seq, @hash, @time, @kid, @signature)`,
  )
  const checkpoints = db.prepare<[string], Checkpoint>(
    'select instance, seq, hash, time, kid, signature from audit_checkpoints where instance = ? order by seq',
  )
  const addKey = db.prepare<{ kid: string; jwk: string; attestation: string; createdAt: number }>(
    `insert or ignore into audit_keys (kid, public_jwk, attestation, created_at)
     values (@kid, @jwk, @attestation, @createdAt)`,
  )
  const keys = db.prepare<[], { kid: string; jwk: string; attestation: string; createdAt: number }>(
    'select kid, public_jwk as jwk, attestation, created_at as createdAt from audit_keys order by kid',
  )
  const reattest = db.prepare<[string, string]>('update audit_keys set attestation = ? where kid = ?')
  const pruneEntries = db.prepare<[string, number]>(
    'delete from audit_entries where instance = ? and seq <= ?',
  )
  const pruneCheckpoints = db.prepare<[string, number]>(
    'delete from audit_checkpoints where instance = ? and seq < ?',
  )
  const pruneTx = db.transaction((instance: string, through: number): number => {
    const removed = pruneEntries.run(instance, through).changes
    pruneCheckpoints.run(instance, through)
    return removed
  })
  const pages = new Map<string, Database.Statement>()

  return {
    kind: 'sqlite',
    async append(instance, events) {
      return appendTx.immediate(instance, events)
    },
    async head(instance) {
      return headOf.get(instance)
    },
    async instances() {
      return instances.all().sort()
    },
    async range(instance, fromSeq, limit) {
      return range.all(instance, fromSeq, limit)
    },
    async page(query) {
      const { where, params } = whereOf(query.filter, query.after, query.order)
      const text = `select ${columns} from audit_entries ${where}
        order by time ${query.order}, instance ${query.order}, seq ${query.order} limit @limit`
      // Filters combine in a few dozen ways: each shape is prepared once.
      let statement = pages.get(text)
      if (statement === undefined) {
        statement = db.prepare(text)
        pages.set(text, statement)
      }
      return statement.all({ ...params, limit: query.limit }) as AuditEntry[]
    },
    async addCheckpoint(checkpoint) {
      addCheckpoint.run(checkpoint)
    },
    async checkpoints(instance) {
      return checkpoints.all(instance)
    },
    async addKey(key) {
      addKey.run({
        kid: key.kid,
        jwk: JSON.stringify({ kty: 'OKP', crv: 'Ed25519', x: key.x }),
        attestation: key.attestation,
        createdAt: key.createdAt,
      })
    },
    async keys(): Promise<AuditKey[]> {
      return keys.all().map((row) => ({
        kid: row.kid,
        x: String((JSON.parse(row.jwk) as { x?: unknown }).x ?? ''),
        attestation: row.attestation,
        createdAt: row.createdAt,
      }))
    },
    async reattest(kid, attestation) {
      reattest.run(attestation, kid)
    },
    async prune(instance, throughSeq) {
      return pruneTx.immediate(instance, throughSeq)
    },
    async close() {
      if (db.open) db.close()
    },
  }
}
