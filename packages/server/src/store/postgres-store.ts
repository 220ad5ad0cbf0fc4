/**
 * The shared Store (DESIGN §14): Postgres through porsager/postgres, so any number of gateway
 * instances see the same agents, keys, revocations and signing keys.
 */
import postgres from 'postgres'
import { pendingMigrations, postgresMigrations, schemaMigrationsTable } from './migrations.ts'
import { assertDistinctKids, checkLimit, conflict, groupAgents } from './records.ts'
import type {
  Agent,
  AgentKey,
  AgentStore,
  PublicJwk,
  Revocation,
  RevocationStore,
  SigningKey,
  SigningKeyStore,
  Store,
} from './types.ts'

/**
 * int8 (OID 20) parsed as a JS number: every bigint column holds milliseconds since the epoch,
 * far inside Number.MAX_SAFE_INTEGER, and the contract speaks numbers.
 */
const int8: postgres.PostgresType<number> = {
  to: 20,
  from: [20],
  serialize: (value) => String(value),
  parse: (raw: string) => Number(raw),
}

type Sql = postgres.Sql<{ int8: number }>
type Query = Sql | postgres.TransactionSql<{ int8: number }>

/** One row of `agents left join agent_keys`; postgres.js has already parsed jsonb and booleans. */
interface AgentKeyRow {
  id: string
  name: string
  labels: Record<string, string>
  roles: string[]
  status: Agent['status']
  requireDpop: boolean
  source: Agent['source']
  createdAt: number
  updatedAt: number
  keyKid: string | null
  keyJwk: PublicJwk | null
  keyCreatedAt: number | null
  keyNotAfter: number | null
}

/** The schema name doubles as an identifier in search_path, so only plain names are accepted. */
const schemaName = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/

/** Agents from `source` (a parenthesised select aliased `a`) with their keys, agents and keys in order. */
async function selectAgents(q: Query, source: postgres.Fragment): Promise<Agent[]> {
  const rows = await q<AgentKeyRow[]>`
    select a.id, a.name, a.labels, a.roles, a.status, a.require_dpop as "requireDpop", a.source,
      a.created_at as "createdAt", a.updated_at as "updatedAt",
      k.kid as "keyKid", k.jwk as "keyJwk", k.created_at as "keyCreatedAt", k.not_after as "keyNotAfter"
    from ${source} a left join agent_keys k on k.agent_id = a.id
    order by a.created_at, a.id, k.created_at, k.kid`
  return groupAgents(
    rows,
    (row) => ({
      id: row.id,
      name: row.name,
      labels: row.labels,
      roles: row.roles,
      status: row.status,
      requireDpop: row.requireDpop,
      source: row.source,
      createdAt: row.createdAt,
      updatedAt: row.updatedAt,
      keys: [],
    }),
    (row) =>
      row.keyKid === null
        ? undefined
        : { kid: row.keyKid, jwk: row.keyJwk!, createdAt: row.keyCreatedAt!, notAfter: row.keyNotAfter },
  )
}

/** The constraint a unique violation (SQLSTATE 23505) hit, or undefined for any other error. */
function uniqueViolation(err: unknown): string | undefined {
  if (!(err instanceof postgres.PostgresError) || err.code !== '23505') return undefined
  return err.constraint_name ?? ''
}

/** jsonb parameter. The record types are interfaces, which TypeScript will not see as JSONValue. */
function json(q: Query, value: object): postgres.Parameter {
  return q.json(value as postgres.JSONValue)
}

async function migrate(sql: Sql, schema: string | undefined): Promise<void> {
  await sql.begin(async (tx) => {
    // Held until commit: a second gateway starting at the same moment waits here, then finds
    // nothing pending. Keyed by schema so separate schemas (test runs) do not queue behind each other.
    await tx`select pg_advisory_xact_lock(hashtextextended(${`4runr-gateway:migrate:${schema ?? ''}`}, 0))`
    if (schema !== undefined) await tx`create schema if not exists ${tx(schema)}`
    await tx.unsafe(schemaMigrationsTable.postgres)
    const [row] = await tx<{ version: number }[]>`
      select coalesce(max(version), 0)::integer as version from schema_migrations`
    for (const migration of pendingMigrations(postgresMigrations, row?.version ?? 0)) {
      for (const statement of migration.statements) await tx.unsafe(statement)
      await tx`insert into schema_migrations (version, applied_at) values (${migration.version}, ${Date.now()})`
    }
  })
}

function agentStore(sql: Sql): AgentStore {
  const get = (q: Query, id: string): Promise<Agent | undefined> =>
    selectAgents(q, q`(select * from agents where id = ${id})`).then((agents) => agents[0])
  const insertKey = async (q: Query, agentId: string, key: AgentKey): Promise<void> => {
    await q`
      insert into agent_keys (agent_id, kid, jwk, created_at, not_after)
      values (${agentId}, ${key.kid}, ${json(q, key.jwk)}, ${key.createdAt}, ${key.notAfter})`
  }

  return {
    async create(agent) {
      const keys = agent.keys ?? []
      assertDistinctKids(agent.id, keys)
      const createdAt = agent.createdAt ?? Date.now()
      try {
        return await sql.begin(async (tx) => {
          await tx`
            insert into agents (id, name, labels, roles, status, require_dpop, source, created_at, updated_at)
            values (${agent.id}, ${agent.name}, ${json(tx, agent.labels ?? {})}, ${json(tx, agent.roles ?? [])},
              ${agent.status ?? 'active'}, ${agent.requireDpop ?? false}, ${agent.source ?? 'api'},
              ${createdAt}, ${createdAt})`
          for (const key of keys) await insertKey(tx, agent.id, key)
          return (await get(tx, agent.id))!
        })
      } catch (err) {
        const constraint = uniqueViolation(err)
        if (constraint === 'agents_name_unique') throw conflict.agentName(agent.name)
        if (constraint === 'agents_pkey') throw conflict.agentId(agent.id)
        throw err
      }
    },
    async get(id) {
      return get(sql, id)
    },
    async getByName(name) {
      const [agent] = await selectAgents(sql, sql`(select * from agents where name = ${name})`)
      return agent
    },
    async list(options = {}) {
      const limit = checkLimit(options.limit) ?? null
      // An `after` id that no longer exists yields an empty page: its position went with it.
      const after =
        options.after === undefined
          ? sql``
          : sql`where (created_at, id) > (select created_at, id from agents where id = ${options.after})`
      return selectAgents(sql, sql`(select * from agents ${after} order by created_at, id limit ${limit})`)
    },
    async update(id, patch, now = Date.now()) {
      try {
        return await sql.begin(async (tx) => {
          const { count } = await tx`
            update agents set
              name = coalesce(${patch.name ?? null}, name),
              labels = coalesce(${patch.labels === undefined ? null : json(tx, patch.labels)}::jsonb, labels),
              roles = coalesce(${patch.roles === undefined ? null : json(tx, patch.roles)}::jsonb, roles),
              status = coalesce(${patch.status ?? null}, status),
              require_dpop = coalesce(${patch.requireDpop ?? null}::boolean, require_dpop),
              updated_at = ${now}
            where id = ${id}`
          return count === 0 ? undefined : get(tx, id)
        })
      } catch (err) {
        if (uniqueViolation(err) === 'agents_name_unique' && patch.name !== undefined)
          throw conflict.agentName(patch.name)
        throw err
      }
    },
    async delete(id) {
      const { count } = await sql`delete from agents where id = ${id}`
      return count > 0
    },
    async addKey(agentId, key, notAfterOthers) {
      try {
        return await sql.begin(async (tx) => {
          // Locking the agent row serialises concurrent rotations of one agent across instances.
          const [found] = await tx`select 1 from agents where id = ${agentId} for update`
          if (found === undefined) return undefined
          if (notAfterOthers !== undefined)
            await tx`
              update agent_keys set not_after = ${notAfterOthers}
              where agent_id = ${agentId} and (not_after is null or not_after > ${notAfterOthers})`
          await insertKey(tx, agentId, key)
          return get(tx, agentId)
        })
      } catch (err) {
        if (uniqueViolation(err) === 'agent_keys_pkey') throw conflict.agentKey(agentId, key.kid)
        throw err
      }
    },
  }
}

function revocationStore(sql: Sql): RevocationStore {
  return {
    async add(r) {
      await sql`
        insert into revocations (id, kind, jti, agent_id, kid, reason, created_at, expires_at)
        values (${r.id}, ${r.kind}, ${r.jti}, ${r.agentId}, ${r.kid}, ${r.reason}, ${r.createdAt}, ${r.expiresAt})
        on conflict (id) do nothing`
    },
    async list(options = {}) {
      const rows = await sql<Revocation[]>`
        select id, kind, jti, agent_id as "agentId", kid, reason, created_at as "createdAt",
          expires_at as "expiresAt"
        from revocations
        where created_at >= ${options.since ?? 0}
          and (expires_at is null or expires_at > ${options.now ?? Date.now()})
        order by created_at, id limit ${checkLimit(options.limit) ?? null}`
      // A postgres.js result is an Array subclass carrying query metadata; callers get plain arrays.
      return Array.from(rows)
    },
    async prune(now) {
      const { count } = await sql`delete from revocations where expires_at < ${now}`
      return count
    },
  }
}

function signingKeyStore(sql: Sql): SigningKeyStore {
  return {
    async list() {
      const rows = await sql<SigningKey[]>`
        select kid, alg, public_jwk as "publicJwk", sealed_private_key as "sealedPrivateKey",
          created_at as "createdAt", retired_at as "retiredAt"
        from signing_keys order by created_at, kid`
      return Array.from(rows)
    },
    async insert(key) {
      try {
        await sql`
          insert into signing_keys (kid, alg, public_jwk, sealed_private_key, created_at, retired_at)
          values (${key.kid}, ${key.alg}, ${json(sql, key.publicJwk)}, ${key.sealedPrivateKey},
            ${key.createdAt}, ${key.retiredAt})`
      } catch (err) {
        throw uniqueViolation(err) === undefined ? err : conflict.signingKey(key.kid)
      }
    },
    async retireAllBut(kid, at) {
      await sql`update signing_keys set retired_at = ${at} where kid <> ${kid} and retired_at is null`
    },
    async deleteRetiredBefore(before) {
      const { count } = await sql`delete from signing_keys where retired_at < ${before}`
      return count
    },
  }
}

/**
 * Connects to Postgres at `url` and brings the schema up to date. With `schema`, the tables live
 * in that schema (created if missing) and every pooled connection uses it as its search_path.
 * Throws SchemaTooNewError when the database was migrated by a newer gateway.
 */
export async function openPostgresStore(
  url: string,
  options: { schema?: string; max?: number } = {},
): Promise<Store> {
  const { schema } = options
  if (schema !== undefined && !schemaName.test(schema))
    throw new TypeError(`postgres schema must be a plain identifier, got ${JSON.stringify(schema)}`)
  const sql: Sql = postgres(url, {
    ...(options.max === undefined ? {} : { max: options.max }),
    types: { int8 },
    // `create ... if not exists` notices would otherwise go to the console on every start.
    onnotice: () => {},
    connection: {
      application_name: '4runr-gateway',
      // A startup parameter rather than `set`, so it holds for every connection the pool opens.
      ...(schema === undefined ? {} : { search_path: `"${schema}"` }),
    },
  })
  try {
    await migrate(sql, schema)
  } catch (err) {
    await sql.end({ timeout: 0 })
    throw err
  }
  let closing: Promise<void> | undefined
  return {
    kind: 'postgres',
    agents: agentStore(sql),
    revocations: revocationStore(sql),
    signingKeys: signingKeyStore(sql),
    async ping() {
      try {
        await sql`select 1`
        return true
      } catch {
        return false
      }
    },
    close() {
      // Queries already running get up to five seconds to finish before their connections are cut.
      closing ??= sql.end({ timeout: 5 })
      return closing
    },
  }
}
