/**
 * Ledger stores for tests: a migrated SQLite file or Postgres schema of their own, with a side
 * door for the tampering an attacker with database access would do.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { type CryptoKey, importJWK } from 'jose'
import postgres from 'postgres'
import { requireService, serviceUrls } from '../../../../test/support/services.ts'
import { jwkThumbprint } from '../identity/jwk.ts'
import { MasterKeys } from '../secrets/master-keys.ts'
import { openStore } from '../store/open-store.ts'
import type { LedgerStore } from './ledger-store.ts'
import { openPostgresLedgerStore } from './postgres-ledger-store.ts'
import { openSqliteLedgerStore } from './sqlite-ledger-store.ts'

export interface LedgerBackend {
  kind: 'sqlite' | 'postgres'
  /** False when the database is not running here. */
  setUp(): Promise<boolean>
  /** A ledger store on the backend's database (a new connection each time). */
  open(): LedgerStore
  /** SQL run directly against the database, bypassing the ledger. */
  query(statement: string): Promise<Record<string, unknown>[]>
  tearDown(): Promise<void>
}

export function sqliteLedgerBackend(): LedgerBackend {
  let dir = ''
  let path = ''
  let raw: Database.Database | undefined
  return {
    kind: 'sqlite',
    async setUp() {
      dir = await mkdtemp(join(tmpdir(), 'runr-audit-'))
      path = join(dir, '4runr.db')
      await (await openStore({ kind: 'sqlite', path })).close()
      return true
    },
    open: () => openSqliteLedgerStore(path),
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

export function postgresLedgerBackend(): LedgerBackend {
  const url = serviceUrls.postgres
  const schema = `runr_audit_${randomBytes(6).toString('hex')}`
  let raw: postgres.Sql | undefined
  return {
    kind: 'postgres',
    async setUp() {
      if (!(await requireService('postgres', url))) return false
      await (await openStore({ kind: 'postgres', url }, { postgresSchema: schema })).close()
      raw = postgres(url, { max: 1, onnotice: () => {} })
      return true
    },
    open: () => openPostgresLedgerStore(url, { schema }),
    async query(statement) {
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

/** A fresh Ed25519 signing key, as the key ring's `active()` hands it out. */
export async function testSigningKey(): Promise<{ kid: string; privateKey: CryptoKey }> {
  const jwk = generateKeyPairSync('ed25519').privateKey.export({ format: 'jwk' })
  const kid = jwkThumbprint({ kty: 'OKP', crv: 'Ed25519', x: jwk.x! })
  const privateKey = (await importJWK(
    { kty: 'OKP', crv: 'Ed25519', x: jwk.x!, d: jwk.d! },
    'EdDSA',
  )) as CryptoKey
  return { kid, privateKey }
}

/** A master key set with one random key. */
export function testMasterKeys(): MasterKeys {
  return new MasterKeys(randomBytes(32))
}
