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
  // Only the driver in use is loaded: every module kept on the heap lengthens each full GC pause.
  if (config.kind === 'sqlite') {
    const { openSqliteStore } = await import('./sqlite-store.ts')
    return openSqliteStore(config.path)
  }
  const { openPostgresStore } = await import('./postgres-store.ts')
  return openPostgresStore(
    config.url,
    options.postgresSchema === undefined ? {} : { schema: options.postgresSchema },
  )
}
