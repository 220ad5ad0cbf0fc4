/**
 * The databases the Store contract suites run against: a SQLite file in a temporary directory and
 * a Postgres schema of its own, each with a side door for what the Store does not expose.
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, beforeEach, describe, it } from 'node:test'
import Database from 'better-sqlite3'
import postgres from 'postgres'
import { requireService, serviceUrls } from '../../../../test/support/services.ts'
import { openStore } from './open-store.ts'
import type { Store } from './types.ts'

/** One database the contract runs against. */
export interface Backend {
  kind: 'sqlite' | 'postgres'
  /** False when the database is not available here (the suite then skips). */
  setUp(): Promise<boolean>
  /** Opens a Store on the same database every time. */
  open(): Promise<Store>
  /** Runs SQL directly against that database, bypassing the Store. */
  query(statement: string): Promise<Record<string, unknown>[]>
  /** Where the database is, for modules that open their own connection to it (the audit ledger). */
  location(): { kind: 'sqlite'; path: string } | { kind: 'postgres'; url: string; schema: string }
  tearDown(): Promise<void>
}

export function sqliteBackend(): Backend {
  let dir = ''
  let path = ''
  let raw: Database.Database | undefined
  return {
    kind: 'sqlite',
    async setUp() {
      dir = await mkdtemp(join(tmpdir(), 'runr-store-'))
      // A directory that does not exist yet: opening must create it.
      path = join(dir, 'nested', 'gateway.db')
      return true
    },
    open: async () => openStore({ kind: 'sqlite', path }),
    location: () => ({ kind: 'sqlite', path }),
    async query(statement) {
      raw ??= new Database(path)
      const prepared = raw.prepare(statement)
      if (prepared.reader) return prepared.all() as Record<string, unknown>[]
      prepared.run()
      return []
    },
    async tearDown() {
      raw?.close()
      if (dir !== '') await rm(dir, { recursive: true, force: true })
    },
  }
}

export function postgresBackend(): Backend {
  const url = serviceUrls.postgres
  const schema = `runr_test_${randomBytes(6).toString('hex')}`
  let raw: postgres.Sql | undefined
  return {
    kind: 'postgres',
    async setUp() {
      if (!(await requireService('postgres', url))) return false
      raw = postgres(url, { max: 1, onnotice: () => {} })
      return true
    },
    open: () => openStore({ kind: 'postgres', url }, { postgresSchema: schema }),
    location: () => ({ kind: 'postgres', url, schema }),
    async query(statement) {
      // One simple-protocol round trip, so the search_path holds for the statement after it.
      const results = (await raw!.unsafe(`set search_path to "${schema}"; ${statement}`)) as unknown as Array<
        Record<string, unknown>[]
      >
      return Array.from(results[1] ?? [])
    },
    async tearDown() {
      if (raw === undefined) return
      await raw.unsafe(`drop schema if exists "${schema}" cascade`)
      await raw.end()
    },
  }
}

/** What a contract suite body gets for one backend. */
export interface StoreSuite {
  readonly backend: Backend
  /** The Store under test, open for the whole suite. */
  store(): Store
  /** A second Store on the same database, as another gateway instance would open it; closed after the suite. */
  peer(): Promise<Store>
  /** `it`, skipped when the backend is not running. */
  behaves(name: string, body: () => Promise<void>): void
}

/**
 * Runs `body` once against SQLite and once against Postgres, as `describe(`${kind} ${title}`)`,
 * emptying `tables` before every test.
 */
export function eachStore(title: string, tables: readonly string[], body: (suite: StoreSuite) => void): void {
  for (const backend of [sqliteBackend(), postgresBackend()]) {
    describe(`${backend.kind} ${title}`, () => {
      let available = false
      let store: Store | undefined
      let peer: Promise<Store> | undefined

      before(async () => {
        available = await backend.setUp()
        if (available) store = await backend.open()
      })
      after(async () => {
        await store?.close()
        await (await peer?.catch(() => undefined))?.close()
        await backend.tearDown()
      })
      beforeEach(async () => {
        if (!available) return
        for (const table of tables) await backend.query(`delete from ${table}`)
      })

      body({
        backend,
        store: () => store!,
        peer: () => {
          peer ??= backend.open()
          return peer
        },
        behaves(name, test) {
          it(name, async (t) => {
            if (!available) return t.skip(`${backend.kind} not running`)
            await test()
          })
        },
      })
    })
  }
}
