import { openPostgresStore } from './postgres-store.ts'
import { openSqliteStore } from './sqlite-store.ts'
import type { Store } from './types.ts'

/** Where the Store lives: an embedded SQLite file, or a Postgres database shared by instances. */
export type StoreConfig = { kind: 'sqlite'; path: string } | { kind: 'postgres'; url: string }

/**
 * Opens the configured Store with its schema migrated. `postgresSchema` puts the Postgres tables in
 * their own schema (tests use one per run); SQLite ignores it.
 */
export async function openStore(
  config: StoreConfig,
  options: { postgresSchema?: string } = {},
): Promise<Store> {
  if (config.kind === 'sqlite') return openSqliteStore(config.path)
  return openPostgresStore(
    config.url,
    options.postgresSchema === undefined ? {} : { schema: options.postgresSchema },
  )
}
