/**
 * The ledger in Postgres, for a cluster: every instance writes its own chain into the same
 * tables, through a small pool of its own so a group commit never queues behind Store queries.
 */
import postgres from 'postgres'
import { int8, schemaName } from '../store/postgres-store.ts'
import { type AuditEntry, chain, genesisHash } from './entry.ts'
import type { AuditKey, AuditPageQuery, Checkpoint, LedgerStore } from './ledger-store.ts'

type Sql = postgres.Sql<{ int8: number }>
type Query = Sql | postgres.TransactionSql<{ int8: number }>

/** Rows per insert statement, well inside the protocol's parameter limit. */
const insertRows = 2000

interface EntryRow {
  instance: string
  seq: number
  time: number
  request_id: string | null
  correlation_id: string | null
  principal: string | null
  kind: AuditEntry['kind']
  target: string | null
  action: string | null
  decision: string | null
  rule: string | null
  status: number
  duration_ms: number
  prev_hash: string
  hash: string
}

const entryColumns = [
  'instance',
  'seq',
  'time',
  'request_id',
  'correlation_id',
  'principal',
  'kind',
  'target',
  'action',
  'decision',
  'rule',
  'status',
  'duration_ms',
  'prev_hash',
  'hash',
] as const

function toRow(e: AuditEntry): EntryRow {
  return {
    instance: e.instance,
    seq: e.seq,
    time: e.time,
    request_id: e.requestId,
    correlation_id: e.correlationId,
    principal: e.principal,
    kind: e.kind,
    target: e.target,
    action: e.action,
    decision: e.decision,
    rule: e.rule,
    status: e.status,
    duration_ms: e.durationMs,
    prev_hash: e.prevHash,
    hash: e.hash,
  }
}

function toEntry(r: EntryRow): AuditEntry {
  return {
    instance: r.instance,
    seq: r.seq,
    time: r.time,
    requestId: r.request_id,
    correlationId: r.correlation_id,
    principal: r.principal,
    kind: r.kind,
    target: r.target,
    action: r.action,
    decision: r.decision,
    rule: r.rule,
    status: r.status,
    durationMs: r.duration_ms,
    prevHash: r.prev_hash,
    hash: r.hash,
  }
}

async function headOf(q: Query, instance: string): Promise<{ seq: number; hash: string } | undefined> {
  const [row] = await q<{ seq: number; hash: string }[]>`
    select seq, hash from audit_entries where instance = ${instance} order by seq desc limit 1`
  return row
}

/** Opens the ledger in the Postgres database (and schema) the Store has migrated. */
export function openPostgresLedgerStore(url: string, options: { schema?: string } = {}): LedgerStore {
  const { schema } = options
  if (schema !== undefined && !schemaName.test(schema))
    throw new TypeError(`postgres schema must be a plain identifier, got ${JSON.stringify(schema)}`)
  const sql: Sql = postgres(url, {
    max: 2,
    types: { int8 },
    onnotice: () => {},
    connection: {
      application_name: '4runr-gateway-audit',
      ...(schema === undefined ? {} : { search_path: `"${schema}"` }),
    },
  })
  let closing: Promise<void> | undefined

  return {
    kind: 'postgres',
    async append(instance, events) {
      if (events.length === 0) return []
      return sql.begin(async (tx) => {
        // Serialises writers of one chain until commit; other instances' chains do not wait.
        await tx`select pg_advisory_xact_lock(hashtextextended(${`4runr-gateway:audit:${instance}`}, 0))`
        const entries = chain(instance, (await headOf(tx, instance)) ?? { seq: 0, hash: genesisHash }, events)
        // A statement takes at most 65,535 parameters: 15 per row.
        for (let i = 0; i < entries.length; i += insertRows) {
          const rows = entries.slice(i, i + insertRows).map(toRow)
          await tx`insert into audit_entries ${tx(rows, ...entryColumns)}`
        }
        return entries
      })
    },
    head: (instance) => headOf(sql, instance),
    async instances() {
      const rows = await sql<{ instance: string }[]>`
        select instance from audit_entries union select instance from audit_checkpoints order by instance`
      return rows.map((r) => r.instance)
    },
    async range(instance, fromSeq, limit) {
      const rows = await sql<EntryRow[]>`
        select * from audit_entries where instance = ${instance} and seq >= ${fromSeq} order by seq limit ${limit}`
      return rows.map(toEntry)
    },
    async page(query: AuditPageQuery) {
      const { filter, after, order } = query
      const clauses: postgres.PendingQuery<postgres.Row[]>[] = []
      if (filter.principal !== undefined) clauses.push(sql`principal = ${filter.principal}`)
      if (filter.target !== undefined) clauses.push(sql`target = ${filter.target}`)
      if (filter.kind !== undefined) clauses.push(sql`kind = ${filter.kind}`)
      if (filter.decision !== undefined) clauses.push(sql`decision = ${filter.decision}`)
      if (filter.instance !== undefined) clauses.push(sql`instance = ${filter.instance}`)
      if (filter.status !== undefined) {
        clauses.push(
          'exact' in filter.status
            ? sql`status = ${filter.status.exact}`
            : sql`status >= ${filter.status.class * 100} and status < ${filter.status.class * 100 + 100}`,
        )
      }
      if (filter.from !== undefined) clauses.push(sql`time >= ${filter.from}`)
      if (filter.to !== undefined) clauses.push(sql`time < ${filter.to}`)
      if (after !== undefined) {
        clauses.push(
          order === 'asc'
            ? sql`(time, instance, seq) > (${after.time}, ${after.instance}, ${after.seq})`
            : sql`(time, instance, seq) < (${after.time}, ${after.instance}, ${after.seq})`,
        )
      }
      const where =
        clauses.length === 0 ? sql`` : clauses.reduce((all, c) => sql`${all} and ${c}`, sql`where true`)
      const direction = order === 'asc' ? sql`asc` : sql`desc`
      const rows = await sql<EntryRow[]>`
        select * from audit_entries ${where}
        order by time ${direction}, instance ${direction}, seq ${direction} limit ${query.limit}`
      return rows.map(toEntry)
    },
    async addCheckpoint(c: Checkpoint) {
      await sql`
        insert into audit_checkpoints (instance, seq, hash, time, kid, signature)
        values (${c.instance}, ${c.seq}, ${c.hash}, ${c.time}, ${c.kid}, ${c.signature})
        on conflict do nothing`
    },
    async checkpoints(instance) {
      return sql<Checkpoint[]>`
        select instance, seq, hash, time, kid, signature from audit_checkpoints
        where instance = ${instance} order by seq`
    },
    async addKey(key: AuditKey) {
      const jwk = { kty: 'OKP', crv: 'Ed25519', x: key.x }
      await sql`
        insert into audit_keys (kid, public_jwk, attestation, created_at)
        values (${key.kid}, ${sql.json(jwk)}, ${key.attestation}, ${key.createdAt})
        on conflict do nothing`
    },
    async keys() {
      const rows = await sql<{ kid: string; jwk: { x?: unknown }; attestation: string; createdAt: number }[]>`
        select kid, public_jwk as jwk, attestation, created_at as "createdAt" from audit_keys order by kid`
      return rows.map((r) => ({
        kid: r.kid,
        x: String(r.jwk.x ?? ''),
        attestation: r.attestation,
        createdAt: r.createdAt,
      }))
    },
    async reattest(kid, attestation) {
      await sql`update audit_keys set attestation = ${attestation} where kid = ${kid}`
    },
    async prune(instance, throughSeq) {
      return sql.begin(async (tx) => {
        const { count } =
          await tx`delete from audit_entries where instance = ${instance} and seq <= ${throughSeq}`
        await tx`delete from audit_checkpoints where instance = ${instance} and seq < ${throughSeq}`
        return count
      })
    },
    close() {
      closing ??= sql.end({ timeout: 5 })
      return closing
    },
  }
}
