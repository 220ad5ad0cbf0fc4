/**
 * Versioned schema migrations for both stores. Each list is append-only: a released migration is
 * never edited, a change is a new version. The two lists describe the same logical schema in each
 * dialect and carry the same version numbers, so a version means the same tables everywhere.
 * Later versions (audit) are appended here.
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
  {
    version: 2,
    name: 'policies with history, approvals, quota counters, secrets',
    statements: [
      // The current version of each policy; policy_versions keeps every version ever written.
      `create table policies (
        name text not null primary key,
        version integer not null check (version > 0),
        document text not null check (json_valid(document)),
        created_at integer not null,
        updated_at integer not null
      ) strict`,
      `create table policy_versions (
        name text not null,
        version integer not null check (version > 0),
        document text not null check (json_valid(document)),
        created_at integer not null,
        updated_at integer not null,
        primary key (name, version)
      ) strict`,
      // One row counting policy writes: the fingerprint instances poll, and the lock that
      // serialises writers.
      `create table policy_revision (
        id integer not null primary key check (id = 1),
        revision integer not null
      ) strict`,
      'insert into policy_revision (id, revision) values (1, 0)',
      // 'expired' is derived at read time from expires_at, never stored.
      `create table approvals (
        id text not null primary key,
        agent_id text not null,
        target text not null check (json_valid(target)),
        request_hash text not null,
        summary text not null check (json_valid(summary)),
        policy text not null,
        rule text not null,
        status text not null check (status in ('pending', 'approved', 'rejected', 'used')),
        created_at integer not null,
        expires_at integer not null,
        decided_at integer,
        decided_by text,
        note text,
        used_at integer
      ) strict`,
      'create index approvals_created_at_id on approvals (created_at, id)',
      'create index approvals_agent_created_at_id on approvals (agent_id, created_at, id)',
      'create index approvals_status_created_at_id on approvals (status, created_at, id)',
      'create index approvals_expires_at on approvals (expires_at)',
      `create table quota_counters (
        key text not null,
        window_start integer not null,
        window_end integer not null,
        used integer not null check (used >= 0),
        primary key (key, window_start)
      ) strict`,
      'create index quota_counters_window_end on quota_counters (window_end)',
      // agent_id '' is the tool-wide value: a primary key cannot hold null, and agent ids are never empty.
      `create table secrets (
        name text not null,
        agent_id text not null,
        sealed_value text not null,
        key_id text not null,
        created_at integer not null,
        rotated_at integer,
        primary key (name, agent_id)
      ) strict`,
    ],
  },
  {
    version: 3,
    name: 'audit ledger: hash-chained entries per instance, signed checkpoints, checkpoint keys',
    statements: [
      // One hash chain per gateway instance: (instance, seq) is the chain position.
      `create table audit_entries (
        instance text not null,
        seq integer not null check (seq > 0),
        time integer not null,
        request_id text,
        correlation_id text,
        principal text,
        kind text not null,
        target text,
        action text,
        decision text,
        rule text,
        status integer not null,
        duration_ms real not null,
        prev_hash text not null,
        hash text not null,
        primary key (instance, seq)
      ) strict`,
      'create index audit_entries_time on audit_entries (time, instance, seq)',
      `create table audit_checkpoints (
        instance text not null,
        seq integer not null,
        hash text not null,
        time integer not null,
        kid text not null,
        signature text not null,
        primary key (instance, seq)
      ) strict`,
      // Public halves of the keys checkpoints were signed with, kept after the signing key is pruned.
      `create table audit_keys (
        kid text not null primary key,
        public_jwk text not null check (json_valid(public_jwk)),
        attestation text not null,
        created_at integer not null
      ) strict`,
    ],
  },
  {
    version: 4,
    name: 'idempotency keys: first answers kept for repeats',
    statements: [
      // headers as JSON text, body as bytes; both null while the first call runs.
      `create table idempotency_keys (
        principal text not null,
        key text not null,
        request_hash text not null,
        owner text not null,
        state text not null check (state in ('pending', 'done')),
        status integer,
        headers text check (headers is null or json_valid(headers)),
        body blob,
        created_at integer not null,
        expires_at integer not null,
        lease_until integer not null,
        primary key (principal, key)
      ) strict`,
      'create index idempotency_keys_expires_at on idempotency_keys (expires_at)',
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
  {
    version: 2,
    name: 'policies with history, approvals, quota counters, secrets',
    statements: [
      // Documents are json, not jsonb: stored verbatim (key order, \u0000) exactly as SQLite keeps them.
      `create table policies (
        name text collate "C" not null,
        version integer not null check (version > 0),
        document json not null,
        created_at bigint not null,
        updated_at bigint not null,
        constraint policies_pkey primary key (name)
      )`,
      `create table policy_versions (
        name text collate "C" not null,
        version integer not null check (version > 0),
        document json not null,
        created_at bigint not null,
        updated_at bigint not null,
        constraint policy_versions_pkey primary key (name, version)
      )`,
      `create table policy_revision (
        id integer not null check (id = 1),
        revision bigint not null,
        constraint policy_revision_pkey primary key (id)
      )`,
      'insert into policy_revision (id, revision) values (1, 0)',
      `create table approvals (
        id text collate "C" not null,
        agent_id text collate "C" not null,
        target json not null,
        request_hash text not null,
        summary json not null,
        policy text not null,
        rule text not null,
        status text not null check (status in ('pending', 'approved', 'rejected', 'used')),
        created_at bigint not null,
        expires_at bigint not null,
        decided_at bigint,
        decided_by text,
        note text,
        used_at bigint,
        constraint approvals_pkey primary key (id)
      )`,
      'create index approvals_created_at_id on approvals (created_at, id)',
      'create index approvals_agent_created_at_id on approvals (agent_id, created_at, id)',
      'create index approvals_status_created_at_id on approvals (status, created_at, id)',
      'create index approvals_expires_at on approvals (expires_at)',
      `create table quota_counters (
        key text collate "C" not null,
        window_start bigint not null,
        window_end bigint not null,
        used bigint not null check (used >= 0),
        constraint quota_counters_pkey primary key (key, window_start)
      )`,
      'create index quota_counters_window_end on quota_counters (window_end)',
      `create table secrets (
        name text collate "C" not null,
        agent_id text collate "C" not null,
        sealed_value text not null,
        key_id text not null,
        created_at bigint not null,
        rotated_at bigint,
        constraint secrets_pkey primary key (name, agent_id)
      )`,
    ],
  },
  {
    version: 3,
    name: 'audit ledger: hash-chained entries per instance, signed checkpoints, checkpoint keys',
    statements: [
      `create table audit_entries (
        instance text collate "C" not null,
        seq bigint not null check (seq > 0),
        time bigint not null,
        request_id text,
        correlation_id text,
        principal text,
        kind text not null,
        target text,
        action text,
        decision text,
        rule text,
        status integer not null,
        duration_ms double precision not null,
        prev_hash text not null,
        hash text not null,
        constraint audit_entries_pkey primary key (instance, seq)
      )`,
      'create index audit_entries_time on audit_entries (time, instance, seq)',
      `create table audit_checkpoints (
        instance text collate "C" not null,
        seq bigint not null,
        hash text not null,
        time bigint not null,
        kid text not null,
        signature text not null,
        constraint audit_checkpoints_pkey primary key (instance, seq)
      )`,
      `create table audit_keys (
        kid text collate "C" not null,
        public_jwk jsonb not null,
        attestation text not null,
        created_at bigint not null,
        constraint audit_keys_pkey primary key (kid)
      )`,
    ],
  },
  {
    version: 4,
    name: 'idempotency keys: first answers kept for repeats',
    statements: [
      `create table idempotency_keys (
        principal text collate "C" not null,
        key text collate "C" not null,
        request_hash text not null,
        owner text not null,
        state text not null check (state in ('pending', 'done')),
        status integer,
        headers jsonb,
        body bytea,
        created_at bigint not null,
        expires_at bigint not null,
        lease_until bigint not null,
        constraint idempotency_keys_pkey primary key (principal, key)
      )`,
      'create index idempotency_keys_expires_at on idempotency_keys (expires_at)',
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
