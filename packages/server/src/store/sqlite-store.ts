/**
 * The embedded Store (DESIGN §14): one SQLite file through better-sqlite3. Every call runs
 * synchronously on the event loop; the statements are small and indexed, so this is cheaper than
 * a worker round trip, and it keeps transactions trivially serial within the process.
 */
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import Database from 'better-sqlite3'
import { pendingMigrations, schemaMigrationsTable, sqliteMigrations } from './migrations.ts'
import { assertDistinctKids, checkLimit, conflict, groupAgents } from './records.ts'
import type {
  Agent,
  AgentKey,
  AgentPatch,
  AgentStore,
  NewAgent,
  PublicJwk,
  Revocation,
  RevocationStore,
  SigningKey,
  SigningKeyStore,
  Store,
} from './types.ts'

/** One row of `agents left join agent_keys`, as SQLite returns it. */
interface AgentKeyRow {
  id: string
  name: string
  labels: string
  roles: string
  status: Agent['status']
  requireDpop: 0 | 1
  source: Agent['source']
  createdAt: number
  updatedAt: number
  keyKid: string | null
  keyJwk: string | null
  keyCreatedAt: number | null
  keyNotAfter: number | null
}

interface SigningKeyRow extends Omit<SigningKey, 'publicJwk'> {
  publicJwk: string
}

/** Agents from `source` (a table expression aliased `a`) with their keys, agents and keys in order. */
function selectAgents(source: string): string {
  return `select a.id, a.name, a.labels, a.roles, a.status, a.require_dpop as requireDpop, a.source,
      a.created_at as createdAt, a.updated_at as updatedAt,
      k.kid as keyKid, k.jwk as keyJwk, k.created_at as keyCreatedAt, k.not_after as keyNotAfter
    from ${source} a left join agent_keys k on k.agent_id = a.id
    order by a.created_at, a.id, k.created_at, k.kid`
}

function toAgents(rows: AgentKeyRow[]): Agent[] {
  return groupAgents(
    rows,
    (row) => ({
      id: row.id,
      name: row.name,
      labels: JSON.parse(row.labels) as Record<string, string>,
      roles: JSON.parse(row.roles) as string[],
      status: row.status,
      requireDpop: row.requireDpop === 1,
      source: row.source,
      createdAt: row.createdAt,
      updatedAt: row.updatedAt,
      keys: [],
    }),
    (row) =>
      row.keyKid === null
        ? undefined
        : {
            kid: row.keyKid,
            jwk: JSON.parse(row.keyJwk!) as PublicJwk,
            createdAt: row.keyCreatedAt!,
            notAfter: row.keyNotAfter,
          },
  )
}

/** `table.column` list from a SQLite unique/primary-key violation, or undefined for any other error. */
function uniqueViolation(err: unknown): string | undefined {
  if (!(err instanceof Database.SqliteError)) return undefined
  if (err.code !== 'SQLITE_CONSTRAINT_UNIQUE' && err.code !== 'SQLITE_CONSTRAINT_PRIMARYKEY') return undefined
  return err.message.replace(/^UNIQUE constraint failed: /, '')
}

function migrate(db: Database.Database): void {
  // IMMEDIATE takes the write lock before reading the version, so two processes opening the same
  // file at once migrate one after the other (the second waits up to busy_timeout).
  db.transaction(() => {
    db.exec(schemaMigrationsTable.sqlite)
    const { version } = db
      .prepare<[], { version: number }>('select coalesce(max(version), 0) as version from schema_migrations')
      .get()!
    const record = db.prepare<[number, number]>(
      'insert into schema_migrations (version, applied_at) values (?, ?)',
    )
    for (const migration of pendingMigrations(sqliteMigrations, version)) {
      for (const statement of migration.statements) db.exec(statement)
      record.run(migration.version, Date.now())
    }
  }).immediate()
}

function agentStore(db: Database.Database): AgentStore {
  const byId = db.prepare<[string], AgentKeyRow>(selectAgents('(select * from agents where id = ?)'))
  const byName = db.prepare<[string], AgentKeyRow>(selectAgents('(select * from agents where name = ?)'))
  // limit -1 is SQLite for "no limit". An `after` id that no longer exists yields an empty page:
  // its position in the order is gone with it.
  const page = db.prepare<{ after: string | null; limit: number }, AgentKeyRow>(
    selectAgents(`(select * from agents
      where @after is null or (created_at, id) > (select created_at, id from agents where id = @after)
      order by created_at, id limit @limit)`),
  )
  const insertAgent = db.prepare<{
    id: string
    name: string
    labels: string
    roles: string
    status: string
    requireDpop: number
    source: string
    createdAt: number
  }>(
    `insert into agents (id, name, labels, roles, status, require_dpop, source, created_at, updated_at)
     values (@id, @name, @labels, @roles, @status, @requireDpop, @source, @createdAt, @createdAt)`,
  )
  const patchAgent = db.prepare<{
    id: string
    name: string | null
    labels: string | null
    roles: string | null
    status: string | null
    requireDpop: number | null
    now: number
  }>(
    `update agents set name = coalesce(@name, name), labels = coalesce(@labels, labels),
       roles = coalesce(@roles, roles), status = coalesce(@status, status),
       require_dpop = coalesce(@requireDpop, require_dpop), updated_at = @now
     where id = @id`,
  )
  const deleteAgent = db.prepare<[string]>('delete from agents where id = ?')
  const agentExists = db.prepare<[string], 1>('select 1 from agents where id = ?').pluck()
  const insertKey = db.prepare<{
    agentId: string
    kid: string
    jwk: string
    createdAt: number
    notAfter: number | null
  }>(
    `insert into agent_keys (agent_id, kid, jwk, created_at, not_after)
     values (@agentId, @kid, @jwk, @createdAt, @notAfter)`,
  )
  const endKeys = db.prepare<{ agentId: string; at: number }>(
    `update agent_keys set not_after = @at
     where agent_id = @agentId and (not_after is null or not_after > @at)`,
  )

  const get = (id: string): Agent | undefined => toAgents(byId.all(id))[0]
  const addKeyRow = (agentId: string, key: AgentKey): void => {
    try {
      insertKey.run({
        agentId,
        kid: key.kid,
        jwk: JSON.stringify(key.jwk),
        createdAt: key.createdAt,
        notAfter: key.notAfter,
      })
    } catch (err) {
      throw uniqueViolation(err) === undefined ? err : conflict.agentKey(agentId, key.kid)
    }
  }

  const create = db.transaction((agent: NewAgent): Agent => {
    const keys = agent.keys ?? []
    assertDistinctKids(agent.id, keys)
    try {
      insertAgent.run({
        id: agent.id,
        name: agent.name,
        labels: JSON.stringify(agent.labels ?? {}),
        roles: JSON.stringify(agent.roles ?? []),
        status: agent.status ?? 'active',
        requireDpop: agent.requireDpop ? 1 : 0,
        source: agent.source ?? 'api',
        createdAt: agent.createdAt ?? Date.now(),
      })
    } catch (err) {
      const columns = uniqueViolation(err)
      if (columns === 'agents.name') throw conflict.agentName(agent.name)
      if (columns === 'agents.id') throw conflict.agentId(agent.id)
      throw err
    }
    for (const key of keys) addKeyRow(agent.id, key)
    return get(agent.id)!
  })

  const update = db.transaction((id: string, patch: AgentPatch, now: number): Agent | undefined => {
    try {
      const { changes } = patchAgent.run({
        id,
        name: patch.name ?? null,
        labels: patch.labels === undefined ? null : JSON.stringify(patch.labels),
        roles: patch.roles === undefined ? null : JSON.stringify(patch.roles),
        status: patch.status ?? null,
        requireDpop: patch.requireDpop === undefined ? null : patch.requireDpop ? 1 : 0,
        now,
      })
      if (changes === 0) return undefined
    } catch (err) {
      if (uniqueViolation(err) !== undefined && patch.name !== undefined) throw conflict.agentName(patch.name)
      throw err
    }
    return get(id)
  })

  const addKey = db.transaction(
    (agentId: string, key: AgentKey, notAfterOthers: number | undefined): Agent | undefined => {
      if (agentExists.get(agentId) === undefined) return undefined
      if (notAfterOthers !== undefined) endKeys.run({ agentId, at: notAfterOthers })
      addKeyRow(agentId, key)
      return get(agentId)
    },
  )

  return {
    async create(agent) {
      return create(agent)
    },
    async get(id) {
      return get(id)
    },
    async getByName(name) {
      return toAgents(byName.all(name))[0]
    },
    async list(options = {}) {
      return toAgents(page.all({ after: options.after ?? null, limit: checkLimit(options.limit) ?? -1 }))
    },
    async update(id, patch, now = Date.now()) {
      return update(id, patch, now)
    },
    async delete(id) {
      return deleteAgent.run(id).changes > 0
    },
    async addKey(agentId, key, notAfterOthers) {
      return addKey(agentId, key, notAfterOthers)
    },
  }
}

function revocationStore(db: Database.Database): RevocationStore {
  const insert = db.prepare<[Revocation]>(
    `insert into revocations (id, kind, jti, agent_id, kid, reason, created_at, expires_at)
     values (@id, @kind, @jti, @agentId, @kid, @reason, @createdAt, @expiresAt)
     on conflict (id) do nothing`,
  )
  const list = db.prepare<{ since: number; now: number; limit: number }, Revocation>(
    `select id, kind, jti, agent_id as agentId, kid, reason, created_at as createdAt, expires_at as expiresAt
     from revocations
     where created_at >= @since and (expires_at is null or expires_at > @now)
     order by created_at, id limit @limit`,
  )
  const prune = db.prepare<[number]>('delete from revocations where expires_at < ?')
  return {
    async add(revocation) {
      // Only the named columns are bound: better-sqlite3 rejects unknown keys and undefined values.
      const { id, kind, jti, agentId, kid, reason, createdAt, expiresAt } = revocation
      insert.run({ id, kind, jti, agentId, kid, reason, createdAt, expiresAt })
    },
    async list(options = {}) {
      return list.all({
        since: options.since ?? 0,
        now: options.now ?? Date.now(),
        limit: checkLimit(options.limit) ?? -1,
      })
    },
    async prune(now) {
      return prune.run(now).changes
    },
  }
}

function signingKeyStore(db: Database.Database): SigningKeyStore {
  const list = db.prepare<[], SigningKeyRow>(
    `select kid, alg, public_jwk as publicJwk, sealed_private_key as sealedPrivateKey,
       created_at as createdAt, retired_at as retiredAt
     from signing_keys order by created_at, kid`,
  )
  const insert = db.prepare<SigningKeyRow>(
    `insert into signing_keys (kid, alg, public_jwk, sealed_private_key, created_at, retired_at)
     values (@kid, @alg, @publicJwk, @sealedPrivateKey, @createdAt, @retiredAt)`,
  )
  const retire = db.prepare<{ kid: string; at: number }>(
    'update signing_keys set retired_at = @at where kid <> @kid and retired_at is null',
  )
  const deleteRetired = db.prepare<[number]>('delete from signing_keys where retired_at < ?')
  return {
    async list() {
      return list.all().map((row) => ({ ...row, publicJwk: JSON.parse(row.publicJwk) as PublicJwk }))
    },
    async insert(key) {
      try {
        insert.run({
          kid: key.kid,
          alg: key.alg,
          publicJwk: JSON.stringify(key.publicJwk),
          sealedPrivateKey: key.sealedPrivateKey,
          createdAt: key.createdAt,
          retiredAt: key.retiredAt,
        })
      } catch (err) {
        throw uniqueViolation(err) === undefined ? err : conflict.signingKey(key.kid)
      }
    },
    async retireAllBut(kid, at) {
      retire.run({ kid, at })
    },
    async deleteRetiredBefore(before) {
      return deleteRetired.run(before).changes
    },
  }
}

/**
 * Opens (creating if needed) the SQLite database at `path` and brings its schema up to date.
 * `':memory:'` gives a private in-memory database. Throws SchemaTooNewError when the file was
 * migrated by a newer gateway.
 */
export function openSqliteStore(path: string): Store {
  if (path !== ':memory:' && path !== '') mkdirSync(dirname(path), { recursive: true })
  const db = new Database(path)
  try {
    // WAL lets readers (another gateway process, a backup) proceed while one writer commits.
    db.pragma('journal_mode = WAL')
    db.pragma('busy_timeout = 5000')
    db.pragma('foreign_keys = ON')
    migrate(db)
    const ping = db.prepare<[], 1>('select 1').pluck()
    return {
      kind: 'sqlite',
      agents: agentStore(db),
      revocations: revocationStore(db),
      signingKeys: signingKeyStore(db),
      async ping() {
        try {
          return ping.get() === 1
        } catch {
          return false
        }
      },
      async close() {
        if (db.open) db.close()
      },
    }
  } catch (err) {
    db.close()
    throw err
  }
}
