/**
 * Versioned schema migrations for both stores. Each list is append-only: a released migration is
 * never edited, a change is a new version. The two lists describe the same logical schema in each
 * dialect and carry the same version numbers, so a version means the same tables everywhere.
 * Later versions (policies, secrets, audit) are appended here.
 */

/** One step of the schema; its version is recorded in schema_migrations once applied. */
export interface Migration {
  version: number
  name: string
  /** Run in order inside the migration transaction; one statement each, so no driver has to split them. */
  statements: readonly string[]
}

/** Thrown when the database was migrated by a newer gateway than this one. */
export class SchemaTooNewError extends Error {
  constructor(found: number, supported: number) {
    super(`database schema version ${found} is newer than this gateway supports (${supported})`)
    this.name = 'SchemaTooNewError'
  }
}

/**
 * SQLite: STRICT tables so a wrong type is an error rather than silently stored; JSON as
 * checked text; booleans as 0/1.
 */
export const sqliteMigrations: readonly Migration[] = [
  {
    version: 1,
    name: 'identity: agents, agent keys, revocations, signing keys',
    statements: [
      `create table agents (
        id text not null primary key,
        name text not null,
        labels text not null check (json_valid(labels)),
        roles text not null check (json_valid(roles)),
        status text not null check (status in ('active', 'disabled')),
        require_dpop integer not null check (require_dpop in (0, 1)),
        source text not null check (source in ('api', 'config')),
        created_at integer not null,
        updated_at integer not null,
        constraint agents_name_unique unique (name)
      ) strict`,
      'create index agents_created_at_id on agents (created_at, id)',
      `create table agent_keys (
        agent_id text not null references agents (id) on delete cascade,
        kid text not null,
        jwk text not null check (json_valid(jwk)),
        created_at integer not null,
        not_after integer,
        primary key (agent_id, kid)
      ) strict`,
      `create table revocations (
        id text not null primary key,
        kind text not null check (kind in ('jti', 'agent', 'key')),
        jti text,
        agent_id text,
        kid text,
        reason text,
        created_at integer not null,
        expires_at integer
      ) strict`,
      'create index revocations_created_at on revocations (created_at)',
      'create index revocations_expires_at on revocations (expires_at)',
      `create table signing_keys (
        kid text not null primary key,
        alg text not null,
        public_jwk text not null check (json_valid(public_jwk)),
        sealed_private_key text not null,
        created_at integer not null,
        retired_at integer
      ) strict`,
    ],
  },
]

/**
 * Postgres: jsonb, boolean and bigint. Constraint names are spelled out because conflicts are
 * mapped by them. Ids and kids sort with the "C" collation (bytewise, like SQLite), so both
 * stores page through agents in the same order whatever the database's locale.
 */
export const postgresMigrations: readonly Migration[] = [
  {
    version: 1,
    name: 'identity: agents, agent keys, revocations, signing keys',
    statements: [
      `create table agents (
        id text collate "C" not null,
        name text not null,
        labels jsonb not null,
        roles jsonb not null,
        status text not null check (status in ('active', 'disabled')),
        require_dpop boolean not null,
        source text not null check (source in ('api', 'config')),
        created_at bigint not null,
        updated_at bigint not null,
        constraint agents_pkey primary key (id),
        constraint agents_name_unique unique (name)
      )`,
      'create index agents_created_at_id on agents (created_at, id)',
      `create table agent_keys (
        agent_id text collate "C" not null references agents (id) on delete cascade,
        kid text collate "C" not null,
        jwk jsonb not null,
        created_at bigint not null,
        not_after bigint,
        constraint agent_keys_pkey primary key (agent_id, kid)
      )`,
      `create table revocations (
        id text collate "C" not null,
        kind text not null check (kind in ('jti', 'agent', 'key')),
        jti text,
        agent_id text,
        kid text,
        reason text,
        created_at bigint not null,
        expires_at bigint,
        constraint revocations_pkey primary key (id)
      )`,
      'create index revocations_created_at on revocations (created_at)',
      'create index revocations_expires_at on revocations (expires_at)',
      `create table signing_keys (
        kid text collate "C" not null,
        alg text not null,
        public_jwk jsonb not null,
        sealed_private_key text not null,
        created_at bigint not null,
        retired_at bigint,
        constraint signing_keys_pkey primary key (kid)
      )`,
    ],
  },
]

/** Both dialects share one schema_migrations shape; `applied_at` is milliseconds since the epoch. */
export const schemaMigrationsTable = {
  sqlite:
    'create table if not exists schema_migrations (version integer primary key, applied_at integer not null)',
  postgres:
    'create table if not exists schema_migrations (version integer primary key, applied_at bigint not null)',
} as const

/**
 * The migrations still to apply to a database at version `current`, in order. Throws
 * SchemaTooNewError when `current` is past the last known version: running older code against a
 * newer schema could write rows the newer code no longer understands.
 */
export function pendingMigrations(migrations: readonly Migration[], current: number): Migration[] {
  const latest = migrations.at(-1)?.version ?? 0
  if (current > latest) throw new SchemaTooNewError(current, latest)
  return migrations.filter((migration) => migration.version > current)
}
