/**
 * The shared Store (DESIGN §14): Postgres through porsager/postgres, so any number of gateway
 * instances see the same agents, keys, revocations, signing keys, policies, approvals, quota
 * counters and secrets.
 */
import postgres from 'postgres'
import { pendingMigrations, postgresMigrations, schemaMigrationsTable } from './migrations.ts'
import {
  type ApprovalRow,
  assertDistinctKids,
  checkApprovalStatus,
  checkCount,
  checkExpectedVersion,
  checkLimit,
  checkWindow,
  conflict,
  groupAgents,
  type IdempotencyRow,
  jsonText,
  type PolicyRow,
  policyDocumentText,
  refusedDecision,
  secretAgentColumn,
  secretAgentId,
  toApproval,
  toIdempotency,
  toPolicy,
} from './records.ts'
import type {
  Agent,
  AgentKey,
  AgentStore,
  ApprovalStatus,
  ApprovalStore,
  IdempotencyStore,
  PolicyStore,
  PublicJwk,
  QuotaStore,
  Revocation,
  RevocationStore,
  SecretRecord,
  SecretStore,
  SigningKey,
  SigningKeyStore,
  Store,
} from './types.ts'

/**
 * int8 (OID 20) parsed as a JS number: every bigint column holds milliseconds since the epoch,
 * far inside Number.MAX_SAFE_INTEGER, and the contract speaks numbers.
 */
export const int8: postgres.PostgresType<number> = {
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
/** A schema name that needs no quoting rules beyond double quotes. */
export const schemaName = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/

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

// Documents, targets and summaries are json columns, which postgres.js hands back as text: parsed
// by toPolicy/toApproval like SQLite's, so both stores return the same values.
const policyColumns = (q: Query) =>
  q`name, version, document, created_at as "createdAt", updated_at as "updatedAt"`

function policyStore(sql: Sql): PolicyStore {
  return {
    async list() {
      const rows = await sql<PolicyRow[]>`select ${policyColumns(sql)} from policies order by name`
      return rows.map(toPolicy)
    },
    async get(name) {
      const [row] = await sql<PolicyRow[]>`select ${policyColumns(sql)} from policies where name = ${name}`
      return row === undefined ? undefined : toPolicy(row)
    },
    async put(name, document, options = {}) {
      const text = policyDocumentText(document)
      const expected = checkExpectedVersion(options.expectedVersion)
      const now = options.now ?? Date.now()
      const row = await sql.begin(async (tx) => {
        // Taking the revision row's lock first serialises every policy write across instances, so
        // the versions read below are still the latest when the new one is written. Rolled back
        // with everything else on a conflict.
        await tx`update policy_revision set revision = revision + 1`
        const [found] = await tx<{ version: number; createdAt: number }[]>`
          select version, created_at as "createdAt" from policies where name = ${name}`
        const version = found?.version ?? 0
        if (expected !== undefined && expected !== version)
          throw conflict.policyVersion(name, expected, version)
        const [last] = await tx<{ version: number }[]>`
          select coalesce(max(version), 0)::integer as version from policy_versions where name = ${name}`
        const next: PolicyRow = {
          name,
          version: (last?.version ?? 0) + 1,
          document: text,
          createdAt: found?.createdAt ?? now,
          updatedAt: now,
        }
        await tx`
          insert into policy_versions (name, version, document, created_at, updated_at)
          values (${name}, ${next.version}, ${text}::json, ${next.createdAt}, ${now})`
        await tx`
          insert into policies (name, version, document, created_at, updated_at)
          values (${name}, ${next.version}, ${text}::json, ${next.createdAt}, ${now})
          on conflict (name) do update set
            version = excluded.version, document = excluded.document, updated_at = excluded.updated_at`
        return next
      })
      return toPolicy(row)
    },
    async delete(name) {
      return sql.begin(async (tx) => {
        // The revision row is locked before the policy row, in the order put takes them, so a
        // delete and a put of one name cannot deadlock.
        await tx`select revision from policy_revision for update`
        const { count } = await tx`delete from policies where name = ${name}`
        if (count > 0) await tx`update policy_revision set revision = revision + 1`
        return count > 0
      })
    },
    async history(name, options = {}) {
      const rows = await sql<PolicyRow[]>`
        select ${policyColumns(sql)} from policy_versions where name = ${name}
        order by version desc limit ${checkLimit(options.limit) ?? null}`
      return rows.map(toPolicy)
    },
    async fingerprint() {
      const [row] = await sql<{ revision: number }[]>`select revision from policy_revision`
      return String(row?.revision ?? 0)
    },
  }
}

const approvalColumns = (q: Query) =>
  q`id, agent_id as "agentId", target, request_hash as "requestHash", summary, policy, rule, status,
    created_at as "createdAt", expires_at as "expiresAt", decided_at as "decidedAt", decided_by as "decidedBy",
    note, used_at as "usedAt"`

/** The condition selecting approvals whose status reads `status` at `now`. */
function statusIs(q: Query, status: ApprovalStatus, now: number): postgres.Fragment {
  if (status === 'expired') return q`status in ('pending', 'approved') and expires_at <= ${now}`
  if (status === 'pending' || status === 'approved') return q`status = ${status} and expires_at > ${now}`
  return q`status = ${status}`
}

function approvalStore(sql: Sql): ApprovalStore {
  const get = async (id: string, now: number) => {
    const [row] = await sql<ApprovalRow[]>`select ${approvalColumns(sql)} from approvals where id = ${id}`
    return row === undefined ? undefined : toApproval(row, now)
  }
  return {
    async create(approval) {
      const target = jsonText(approval.target, 'the approval target')
      const summary = jsonText(approval.summary, 'the approval summary')
      try {
        const [row] = await sql<ApprovalRow[]>`
          insert into approvals (id, agent_id, target, request_hash, summary, policy, rule, status, created_at,
            expires_at)
          values (${approval.id}, ${approval.agentId}, ${target}::json, ${approval.requestHash},
            ${summary}::json, ${approval.policy}, ${approval.rule}, 'pending', ${approval.createdAt},
            ${approval.expiresAt})
          returning ${approvalColumns(sql)}`
        return toApproval(row!, approval.createdAt)
      } catch (err) {
        throw uniqueViolation(err) === 'approvals_pkey' ? conflict.approvalId(approval.id) : err
      }
    },
    get(id, now = Date.now()) {
      return get(id, now)
    },
    async list(options = {}) {
      const now = options.now ?? Date.now()
      const status = checkApprovalStatus(options.status)
      const limit = checkLimit(options.limit) ?? null
      // Each filter is its own fragment rather than `$n is null or ...`, so every combination is a
      // statement whose plan can use the matching index.
      const filters: postgres.Fragment[] = []
      if (options.agentId !== undefined) filters.push(sql`agent_id = ${options.agentId}`)
      if (status !== undefined) filters.push(statusIs(sql, status, now))
      if (options.after !== undefined)
        filters.push(
          sql`(created_at, id) < (select created_at, id from approvals where id = ${options.after})`,
        )
      const where = filters.reduce((all, filter) => sql`${all} and ${filter}`, sql`true`)
      const rows = await sql<ApprovalRow[]>`
        select ${approvalColumns(sql)} from approvals where ${where}
        order by created_at desc, id desc limit ${limit}`
      return rows.map((row) => toApproval(row, now))
    },
    async decide(id, decision, options) {
      const now = options.now ?? Date.now()
      const [row] = await sql<ApprovalRow[]>`
        update approvals set status = ${decision}, decided_at = ${now}, decided_by = ${options.by},
          note = ${options.note ?? null}
        where id = ${id} and status = 'pending' and expires_at > ${now}
        returning ${approvalColumns(sql)}`
      if (row !== undefined) return { outcome: 'decided', approval: toApproval(row, now) }
      return refusedDecision(await get(id, now))
    },
    async consume(id, now) {
      // One conditional update: of racing callers, the row lock lets exactly one see 'approved'.
      const { count } = await sql`
        update approvals set status = 'used', used_at = ${now}
        where id = ${id} and status = 'approved' and expires_at > ${now}`
      return count > 0
    },
    async prune(before) {
      const { count } = await sql`delete from approvals where expires_at < ${before}`
      return count
    },
  }
}

function quotaStore(sql: Sql): QuotaStore {
  const read = async (key: string, windowStart: number): Promise<number> => {
    const [row] = await sql<{ used: number }[]>`
      select used from quota_counters where key = ${key} and window_start = ${windowStart}`
    return row?.used ?? 0
  }
  return {
    async consume(key, options) {
      checkWindow(options)
      const limit = checkCount(options.limit, 'limit')
      const cost = checkCount(options.cost ?? 1, 'cost')
      const { windowStart, windowEnd } = options
      // The insert path has no where clause: a first call costing more than the limit must not
      // create a window already over it.
      if (cost > limit) return { allowed: false, used: await read(key, windowStart) }
      // One statement: the conflicting row is locked and re-checked against its latest count, so
      // instances racing on one key never admit more than the limit between them.
      const [row] = await sql<{ used: number }[]>`
        insert into quota_counters (key, window_start, window_end, used)
        values (${key}, ${windowStart}, ${windowEnd}, ${cost})
        on conflict (key, window_start) do update set used = quota_counters.used + excluded.used
          where quota_counters.used + excluded.used <= ${limit}
        returning used`
      return row === undefined
        ? { allowed: false, used: await read(key, windowStart) }
        : { allowed: true, used: row.used }
    },
    async add(key, amount, window) {
      checkWindow(window)
      checkCount(amount, 'amount')
      const [row] = await sql<{ used: number }[]>`
        insert into quota_counters (key, window_start, window_end, used)
        values (${key}, ${window.windowStart}, ${window.windowEnd}, ${amount})
        on conflict (key, window_start) do update set used = quota_counters.used + excluded.used
        returning used`
      return row!.used
    },
    get(key, windowStart) {
      return read(key, windowStart)
    },
    async prune(now) {
      const { count } = await sql`delete from quota_counters where window_end <= ${now}`
      return count
    },
  }
}

interface SecretRow extends Omit<SecretRecord, 'agentId'> {
  agentId: string
}

const secretColumns = (q: Query) =>
  q`name, agent_id as "agentId", sealed_value as "sealedValue", key_id as "keyId",
    created_at as "createdAt", rotated_at as "rotatedAt"`

function toSecret(row: SecretRow): SecretRecord {
  return {
    name: row.name,
    agentId: secretAgentId(row.agentId),
    sealedValue: row.sealedValue,
    keyId: row.keyId,
    createdAt: row.createdAt,
    rotatedAt: row.rotatedAt,
  }
}

function secretStore(sql: Sql): SecretStore {
  const all = async () => {
    const rows = await sql<SecretRow[]>`select ${secretColumns(sql)} from secrets order by name, agent_id`
    return rows.map(toSecret)
  }
  return {
    async put(secret, now = Date.now()) {
      const [row] = await sql<SecretRow[]>`
        insert into secrets (name, agent_id, sealed_value, key_id, created_at, rotated_at)
        values (${secret.name}, ${secretAgentColumn(secret.agentId)}, ${secret.sealedValue}, ${secret.keyId},
          ${now}, null)
        on conflict (name, agent_id) do update set
          sealed_value = excluded.sealed_value, key_id = excluded.key_id, rotated_at = ${now}
        returning ${secretColumns(sql)}`
      return toSecret(row!)
    },
    async get(name, agentId) {
      const [row] = await sql<SecretRow[]>`
        select ${secretColumns(sql)} from secrets where name = ${name} and agent_id = ${secretAgentColumn(agentId)}`
      return row === undefined ? undefined : toSecret(row)
    },
    async list() {
      return (await all()).map(({ sealedValue: _, ...metadata }) => metadata)
    },
    async delete(name, agentId) {
      const { count } = await sql`
        delete from secrets where name = ${name} and agent_id = ${secretAgentColumn(agentId)}`
      return count > 0
    },
    all,
    async reseal(changes) {
      const rows = changes.map((change) => ({ ...change, column: secretAgentColumn(change.agentId) }))
      await sql.begin(async (tx) => {
        for (const change of rows) {
          const { count } = await tx`
            update secrets set sealed_value = ${change.sealedValue}, key_id = ${change.keyId}
            where name = ${change.name} and agent_id = ${change.column}
              and sealed_value = ${change.previousSealedValue}`
          if (count === 0) throw conflict.secretChanged(change.name, change.agentId)
        }
      })
    },
  }
}

type Headers = Record<string, string>

function idempotencyStore(sql: Sql): IdempotencyStore {
  const byKey = async (principal: string, key: string): Promise<IdempotencyRow<Headers> | undefined> => {
    const [row] = await sql<IdempotencyRow<Headers>[]>`
      select principal, key, request_hash as "requestHash", owner, state, status, headers, body,
        created_at as "createdAt", expires_at as "expiresAt", lease_until as "leaseUntil"
      from idempotency_keys where principal = ${principal} and key = ${key}`
    return row
  }
  return {
    async begin(c) {
      // One statement: the conflicting row is locked, so of racing claims exactly one wins, and
      // the update takes over only an expired record or a claim whose lease lapsed.
      const [won] = await sql<{ owner: string }[]>`
        insert into idempotency_keys
          (principal, key, request_hash, owner, state, created_at, expires_at, lease_until)
        values (${c.principal}, ${c.key}, ${c.requestHash}, ${c.owner}, 'pending', ${c.now}, ${c.expiresAt},
          ${c.leaseUntil})
        on conflict (principal, key) do update set
          request_hash = excluded.request_hash, owner = excluded.owner, state = 'pending', status = null,
          headers = null, body = null, created_at = excluded.created_at, expires_at = excluded.expires_at,
          lease_until = excluded.lease_until
        where idempotency_keys.expires_at <= ${c.now}
          or (idempotency_keys.state = 'pending' and idempotency_keys.lease_until <= ${c.now})
        returning owner`
      if (won !== undefined) return { outcome: 'claimed' }
      const row = await byKey(c.principal, c.key)
      if (row === undefined) return this.begin(c)
      return { outcome: 'existing', record: toIdempotency(row, (headers) => headers) }
    },
    async complete(principal, key, owner, answer) {
      const { count } = await sql`
        update idempotency_keys set state = 'done', status = ${answer.status},
          headers = ${json(sql, answer.headers)}, body = ${answer.body}
        where principal = ${principal} and key = ${key} and owner = ${owner} and state = 'pending'`
      return count > 0
    },
    async renew(principal, key, owner, leaseUntil) {
      const { count } = await sql`
        update idempotency_keys set lease_until = ${leaseUntil}
        where principal = ${principal} and key = ${key} and owner = ${owner} and state = 'pending'`
      return count === 1
    },
    async release(principal, key, owner) {
      await sql`
        delete from idempotency_keys
        where principal = ${principal} and key = ${key} and owner = ${owner} and state = 'pending'`
    },
    async get(principal, key, now) {
      const row = await byKey(principal, key)
      return row === undefined || row.expiresAt <= now ? undefined : toIdempotency(row, (headers) => headers)
    },
    async prune(now) {
      const { count } = await sql`delete from idempotency_keys where expires_at <= ${now}`
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
    policies: policyStore(sql),
    approvals: approvalStore(sql),
    quotas: quotaStore(sql),
    secrets: secretStore(sql),
    idempotency: idempotencyStore(sql),
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
