/**
 * Ledger stores for tests: a migrated SQLite file or Postgres schema of their own, with a side
 * door for the tampering an attacker with database access would do.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { type CryptoKey, importJWK } from 'jose'
import { jwkThumbprint } from '../identity/jwk.ts'
import { MasterKeys } from '../secrets/master-keys.ts'
import { type Backend, postgresBackend, sqliteBackend } from '../store/test-helpers.ts'
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

/** The Store contract's database, migrated by opening a Store once, with the ledger on it. */
function ledgerBackend(store: Backend): LedgerBackend {
  return {
    kind: store.kind,
    async setUp() {
      if (!(await store.setUp())) return false
      await (await store.open()).close()
      return true
    },
    open() {
      const at = store.location()
      return at.kind === 'sqlite'
        ? openSqliteLedgerStore(at.path)
        : openPostgresLedgerStore(at.url, { schema: at.schema })
    },
    query: (statement) => store.query(statement),
    tearDown: () => store.tearDown(),
  }
}

export const sqliteLedgerBackend = () => ledgerBackend(sqliteBackend())
export const postgresLedgerBackend = () => ledgerBackend(postgresBackend())

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
