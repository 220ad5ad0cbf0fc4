/**
 * The audit ledger's append rate alone (issue: audit), for SQLite and Postgres: entries/s that
 * the ledger writes as the gateway feeds it, batched durability (group commits every 50 ms),
 * hashing, chaining and a signed checkpoint every 1,000 entries included. Also the hot-path cost
 * of one `append` call (what a request pays), which only pushes the entry onto the open batch.
 *
 * The producer appends in bursts, yielding to the event loop between them, so the ledger's timer
 * forms its batches as it does under real traffic; the rate is entries over the time until the
 * last one is committed.
 *
 *   node --import tsx bench/audit-ledger.ts     # prints both rows; Postgres from RUNR_BENCH_POSTGRES_URL
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AuditEvent } from '../packages/server/src/audit/entry.ts'
import { createLedger } from '../packages/server/src/audit/ledger.ts'
import type { LedgerStore } from '../packages/server/src/audit/ledger-store.ts'
import { openPostgresLedgerStore } from '../packages/server/src/audit/postgres-ledger-store.ts'
import { openSqliteLedgerStore } from '../packages/server/src/audit/sqlite-ledger-store.ts'
import { createKeyRing, type KeyRing } from '../packages/server/src/identity/key-ring.ts'
import { MasterKeys } from '../packages/server/src/secrets/master-keys.ts'
import { openStore } from '../packages/server/src/store/open-store.ts'
import type { Store } from '../packages/server/src/store/types.ts'

export const BENCH_POSTGRES_URL =
  process.env['RUNR_BENCH_POSTGRES_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test'

export interface AuditLedgerResult {
  backend: 'sqlite' | 'postgres'
  entries: number
  seconds: number
  entriesPerSec: number
  /** Mean cost of one append() call on the request path, in nanoseconds. */
  appendNs: number
  /** Set when the backend could not be measured (Postgres not running). */
  skipped?: string
}

const ENTRIES = 100_000
/** Entries appended per event-loop turn: about what a busy gateway produces per turn. */
const BURST = 200

function event(i: number): AuditEvent {
  return {
    time: Date.now(),
    requestId: `req-${i}`,
    correlationId: `req-${i}`,
    principal: `agent:agt_${i % 1000}`,
    kind: 'call',
    target: 'tool:serpapi',
    action: 'search',
    decision: 'allow',
    rule: 'research/0',
    status: 200,
    durationMs: 1.234,
  }
}

/** The backend's Store (migrated, and holding the signing keys) and a ledger store beside it. */
async function openBackend(
  backend: 'sqlite' | 'postgres',
  masterKeys: MasterKeys,
): Promise<{ store: LedgerStore; keyRing: KeyRing; cleanUp: () => Promise<void> }> {
  let main: Store
  let store: LedgerStore
  let dropped: () => Promise<void>
  if (backend === 'sqlite') {
    const dir = mkdtempSync(join(tmpdir(), 'runr-bench-audit-'))
    const path = join(dir, '4runr.db')
    main = await openStore({ kind: 'sqlite', path })
    store = openSqliteLedgerStore(path)
    dropped = async () => rmSync(dir, { recursive: true, force: true })
  } else {
    const schema = `runr_bench_audit_${randomBytes(4).toString('hex')}`
    main = await openStore({ kind: 'postgres', url: BENCH_POSTGRES_URL }, { postgresSchema: schema })
    store = openPostgresLedgerStore(BENCH_POSTGRES_URL, { schema })
    dropped = async () => {
      const { default: postgres } = await import('postgres')
      const sql = postgres(BENCH_POSTGRES_URL, { max: 1, onnotice: () => {} })
      await sql.unsafe(`drop schema if exists "${schema}" cascade`)
      await sql.end()
    }
  }
  // The gateway's own key ring signs the checkpoints, as in production.
  const keyRing = await createKeyRing({
    store: main.signingKeys,
    masterKey: masterKeys,
    rotateEveryMs: 86_400_000,
    maxTtlMs: 3_600_000,
  })
  return {
    store,
    keyRing,
    cleanUp: async () => {
      await main.close()
      await dropped()
    },
  }
}

/** Measure the ledger on `backend`; Postgres answers `skipped` when it cannot be reached. */
export async function measureAuditLedger(
  backend: 'sqlite' | 'postgres',
  entries = ENTRIES,
): Promise<AuditLedgerResult> {
  const masterKeys = new MasterKeys(randomBytes(32))
  let opened: Awaited<ReturnType<typeof openBackend>>
  try {
    opened = await openBackend(backend, masterKeys)
  } catch (err) {
    return { backend, entries: 0, seconds: 0, entriesPerSec: 0, appendNs: 0, skipped: (err as Error).message }
  }
  const ledger = await createLedger({
    store: opened.store,
    settings: () => ({
      enabled: true,
      checkpointEvery: 1000,
      durability: 'batched',
      onFailure: 'refuse',
      retainDays: undefined,
      instance: 'bench',
    }),
    instance: 'bench',
    signingKey: () => opened.keyRing.active(),
    masterKeys,
    onError: (err) => {
      throw err
    },
  })
  // Built ahead, so the figure is the ledger's and not the benchmark's allocations.
  const events = Array.from({ length: entries }, (_, i) => event(i))
  let appendTime = 0n
  const started = process.hrtime.bigint()
  for (let i = 0; i < entries; i += BURST) {
    const t = process.hrtime.bigint()
    const end = Math.min(entries, i + BURST)
    for (let j = i; j < end; j++) ledger.append(events[j]!)
    appendTime += process.hrtime.bigint() - t
    await new Promise((r) => setImmediate(r))
  }
  await ledger.flush()
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  const head = await opened.store.head('bench')
  await ledger.close()
  await opened.cleanUp()
  if (head?.seq !== entries) throw new Error(`wrote ${head?.seq ?? 0} of ${entries} entries`)
  return {
    backend,
    entries,
    seconds,
    entriesPerSec: entries / seconds,
    appendNs: Number(appendTime) / entries,
  }
}

export function formatAuditLedger(r: AuditLedgerResult): string {
  if (r.skipped !== undefined) return `audit ledger append rate (${r.backend}): skipped (${r.skipped})`
  return `audit ledger append rate (${r.backend}, batched, checkpoint every 1000): ${Math.round(r.entriesPerSec).toLocaleString('en')} entries/s (${r.entries} entries in ${r.seconds.toFixed(2)} s); append() on the request path ${r.appendNs.toFixed(0)} ns`
}

if (import.meta.url === `file://${process.argv[1]}`) {
  for (const backend of ['sqlite', 'postgres'] as const)
    console.log(formatAuditLedger(await measureAuditLedger(backend)))
}
