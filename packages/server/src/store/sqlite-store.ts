/**
 * The embedded Store (DESIGN §14): one SQLite file through better-sqlite3. Every call runs
 * synchronously on the event loop; the statements are small and indexed, so this is cheaper than
 * a worker round trip, and it keeps transactions trivially serial within the process.
 */
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import Database from 'better-sqlite3'
import { pendingMigrations, schemaMigrationsTable, sqliteMigrations } from './migrations.ts'
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
  AgentPatch,
  AgentStore,
  ApprovalStore,
  IdempotencyClaim,
  IdempotencyStore,
  NewAgent,
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

function policyStore(db: Database.Database): PolicyStore {
  const columns = 'name, version, document, created_at as createdAt, updated_at as updatedAt'
  const list = db.prepare<[], PolicyRow>(`select ${columns} from policies order by name`)
  const current = db.prepare<[string], PolicyRow>(`select ${columns} from policies where name = ?`)
  const lastVersion = db
    .prepare<[string], number>('select coalesce(max(version), 0) from policy_versions where name = ?')
    .pluck()
  const insertVersion = db.prepare<PolicyRow>(
    `insert into policy_versions (name, version, document, created_at, updated_at)
     values (@name, @version, @document, @createdAt, @updatedAt)`,
  )
  const upsertCurrent = db.prepare<PolicyRow>(
    `insert into policies (name, version, document, created_at, updated_at)
     values (@name, @version, @document, @createdAt, @updatedAt)
     on conflict (name) do update set
       version = excluded.version, document = excluded.document, updated_at = excluded.updated_at`,
  )
  const deleteCurrent = db.prepare<[string]>('delete from policies where name = ?')
  const bump = db.prepare('update policy_revision set revision = revision + 1')
  const revision = db.prepare<[], number>('select revision from policy_revision').pluck()
  const history = db.prepare<{ name: string; limit: number }, PolicyRow>(
    `select ${columns} from policy_versions where name = @name order by version desc limit @limit`,
  )

  // IMMEDIATE: another process writing the same file waits for the lock instead of failing with
  // SQLITE_BUSY when this read-then-write transaction upgrades.
  const put = db.transaction(
    (name: string, document: string, expectedVersion: number | undefined, now: number): PolicyRow => {
      const found = current.get(name)
      const version = found?.version ?? 0
      if (expectedVersion !== undefined && expectedVersion !== version)
        throw conflict.policyVersion(name, expectedVersion, version)
      const row: PolicyRow = {
        name,
        version: lastVersion.get(name)! + 1,
        document,
        createdAt: found?.createdAt ?? now,
        updatedAt: now,
      }
      insertVersion.run(row)
      upsertCurrent.run(row)
      bump.run()
      return row
    },
  )
  const remove = db.transaction((name: string): boolean => {
    if (deleteCurrent.run(name).changes === 0) return false
    bump.run()
    return true
  })

  return {
    async list() {
      return list.all().map(toPolicy)
    },
    async get(name) {
      const row = current.get(name)
      return row === undefined ? undefined : toPolicy(row)
    },
    async put(name, document, options = {}) {
      const text = policyDocumentText(document)
      const expected = checkExpectedVersion(options.expectedVersion)
      return toPolicy(put.immediate(name, text, expected, options.now ?? Date.now()))
    },
    async delete(name) {
      return remove.immediate(name)
    },
    async history(name, options = {}) {
      return history.all({ name, limit: checkLimit(options.limit) ?? -1 }).map(toPolicy)
    },
    async fingerprint() {
      return String(revision.get())
    },
  }
}

function approvalStore(db: Database.Database): ApprovalStore {
  const columns = `id, agent_id as agentId, target, request_hash as requestHash, summary, policy, rule, status,
    created_at as createdAt, expires_at as expiresAt, decided_at as decidedAt, decided_by as decidedBy, note,
    used_at as usedAt`
  const insert = db.prepare<ApprovalRow>(
    `insert into approvals (id, agent_id, target, request_hash, summary, policy, rule, status, created_at,
       expires_at, decided_at, decided_by, note, used_at)
     values (@id, @agentId, @target, @requestHash, @summary, @policy, @rule, @status, @createdAt,
       @expiresAt, @decidedAt, @decidedBy, @note, @usedAt)`,
  )
  const byId = db.prepare<[string], ApprovalRow>(`select ${columns} from approvals where id = ?`)
  // The status filter reads statuses as of @now: 'expired' is pending or approved past expires_at.
  const page = db.prepare<
    { status: string | null; agentId: string | null; after: string | null; limit: number; now: number },
    ApprovalRow
  >(
    `select ${columns} from approvals
     where (@agentId is null or agent_id = @agentId)
       and (@after is null or (created_at, id) < (select created_at, id from approvals where id = @after))
       and (@status is null
         or (@status = 'expired' and status in ('pending', 'approved') and expires_at <= @now)
         or (@status in ('pending', 'approved') and status = @status and expires_at > @now)
         or (@status in ('rejected', 'used') and status = @status))
     order by created_at desc, id desc limit @limit`,
  )
  const decide = db.prepare<{ id: string; status: string; by: string; note: string | null; now: number }>(
    `update approvals set status = @status, decided_at = @now, decided_by = @by, note = @note
     where id = @id and status = 'pending' and expires_at > @now`,
  )
  const consume = db.prepare<{ id: string; now: number }>(
    `update approvals set status = 'used', used_at = @now
     where id = @id and status = 'approved' and expires_at > @now`,
  )
  const prune = db.prepare<[number]>('delete from approvals where expires_at < ?')

  const get = (id: string, now: number) => {
    const row = byId.get(id)
    return row === undefined ? undefined : toApproval(row, now)
  }

  return {
    async create(approval) {
      const row: ApprovalRow = {
        id: approval.id,
        agentId: approval.agentId,
        target: jsonText(approval.target, 'the approval target'),
        requestHash: approval.requestHash,
        summary: jsonText(approval.summary, 'the approval summary'),
        policy: approval.policy,
        rule: approval.rule,
        status: 'pending',
        createdAt: approval.createdAt,
        expiresAt: approval.expiresAt,
        decidedAt: null,
        decidedBy: null,
        note: null,
        usedAt: null,
      }
      try {
        insert.run(row)
      } catch (err) {
        throw uniqueViolation(err) === undefined ? err : conflict.approvalId(approval.id)
      }
      return toApproval(row, approval.createdAt)
    },
    async get(id, now = Date.now()) {
      return get(id, now)
    },
    async list(options = {}) {
      const now = options.now ?? Date.now()
      return page
        .all({
          status: checkApprovalStatus(options.status) ?? null,
          agentId: options.agentId ?? null,
          after: options.after ?? null,
          limit: checkLimit(options.limit) ?? -1,
          now,
        })
        .map((row) => toApproval(row, now))
    },
    async decide(id, decision, options) {
      const now = options.now ?? Date.now()
      const { changes } = decide.run({
        id,
        status: decision,
        by: options.by,
        note: options.note ?? null,
        now,
      })
      const approval = get(id, now)
      return changes > 0 ? { outcome: 'decided', approval: approval! } : refusedDecision(approval)
    },
    async consume(id, now) {
      return consume.run({ id, now }).changes > 0
    },
    async prune(before) {
      return prune.run(before).changes
    },
  }
}

function quotaStore(db: Database.Database): QuotaStore {
  // A refused upsert (the where clause is false) returns no row and changes nothing.
  const consume = db
    .prepare<{ key: string; windowStart: number; windowEnd: number; cost: number; limit: number }, number>(
      `insert into quota_counters (key, window_start, window_end, used)
     values (@key, @windowStart, @windowEnd, @cost)
     on conflict (key, window_start) do update set used = used + excluded.used
       where used + excluded.used <= @limit
     returning used`,
    )
    .pluck()
  const add = db
    .prepare<{ key: string; windowStart: number; windowEnd: number; amount: number }, number>(
      `insert into quota_counters (key, window_start, window_end, used)
     values (@key, @windowStart, @windowEnd, @amount)
     on conflict (key, window_start) do update set used = used + excluded.used
     returning used`,
    )
    .pluck()
  const get = db
    .prepare<{ key: string; windowStart: number }, number>(
      'select used from quota_counters where key = @key and window_start = @windowStart',
    )
    .pluck()
  const prune = db.prepare<[number]>('delete from quota_counters where window_end <= ?')
  const read = (key: string, windowStart: number) => get.get({ key, windowStart }) ?? 0

  return {
    async consume(key, options) {
      checkWindow(options)
      const limit = checkCount(options.limit, 'limit')
      const cost = checkCount(options.cost ?? 1, 'cost')
      const { windowStart, windowEnd } = options
      // Checked here because the insert path has no where clause: a first call costing more than
      // the limit must not create a window already over it.
      const used = cost <= limit ? consume.get({ key, windowStart, windowEnd, cost, limit }) : undefined
      return used === undefined ? { allowed: false, used: read(key, windowStart) } : { allowed: true, used }
    },
    async add(key, amount, window) {
      checkWindow(window)
      checkCount(amount, 'amount')
      return add.get({ key, windowStart: window.windowStart, windowEnd: window.windowEnd, amount })!
    },
    async get(key, windowStart) {
      return read(key, windowStart)
    },
    async prune(now) {
      return prune.run(now).changes
    },
  }
}

interface SecretRow extends Omit<SecretRecord, 'agentId'> {
  agentId: string
}

function toSecret(row: SecretRow): SecretRecord {
  return { ...row, agentId: secretAgentId(row.agentId) }
}

function secretStore(db: Database.Database): SecretStore {
  const columns = `name, agent_id as agentId, sealed_value as sealedValue, key_id as keyId,
    created_at as createdAt, rotated_at as rotatedAt`
  const upsert = db.prepare<
    { name: string; agentId: string; sealedValue: string; keyId: string; now: number },
    SecretRow
  >(
    `insert into secrets (name, agent_id, sealed_value, key_id, created_at, rotated_at)
     values (@name, @agentId, @sealedValue, @keyId, @now, null)
     on conflict (name, agent_id) do update set
       sealed_value = excluded.sealed_value, key_id = excluded.key_id, rotated_at = @now
     returning ${columns}`,
  )
  const get = db.prepare<{ name: string; agentId: string }, SecretRow>(
    `select ${columns} from secrets where name = @name and agent_id = @agentId`,
  )
  const all = db.prepare<[], SecretRow>(`select ${columns} from secrets order by name, agent_id`)
  const remove = db.prepare<{ name: string; agentId: string }>(
    'delete from secrets where name = @name and agent_id = @agentId',
  )
  const reseal = db.prepare<{
    name: string
    agentId: string
    previousSealedValue: string
    sealedValue: string
    keyId: string
  }>(
    `update secrets set sealed_value = @sealedValue, key_id = @keyId
     where name = @name and agent_id = @agentId and sealed_value = @previousSealedValue`,
  )
  const resealAll = db.transaction((changes: Parameters<SecretStore['reseal']>[0]) => {
    for (const change of changes) {
      const { name, agentId, previousSealedValue, sealedValue, keyId } = change
      const column = secretAgentColumn(agentId)
      if (reseal.run({ name, agentId: column, previousSealedValue, sealedValue, keyId }).changes === 0)
        throw conflict.secretChanged(name, agentId)
    }
  })

  return {
    async put(secret, now = Date.now()) {
      const { name, sealedValue, keyId } = secret
      return toSecret(
        upsert.get({ name, agentId: secretAgentColumn(secret.agentId), sealedValue, keyId, now })!,
      )
    },
    async get(name, agentId) {
      const row = get.get({ name, agentId: secretAgentColumn(agentId) })
      return row === undefined ? undefined : toSecret(row)
    },
    async list() {
      return all.all().map(({ sealedValue: _, ...row }) => ({ ...row, agentId: secretAgentId(row.agentId) }))
    },
    async delete(name, agentId) {
      return remove.run({ name, agentId: secretAgentColumn(agentId) }).changes > 0
    },
    async all() {
      return all.all().map(toSecret)
    },
    async reseal(changes) {
      resealAll.immediate(changes)
    },
  }
}

const parseHeaders = (text: string) => JSON.parse(text) as Record<string, string>

function idempotencyStore(db: Database.Database): IdempotencyStore {
  const columns = `principal, key, request_hash as requestHash, owner, state, status, headers, body,
    created_at as createdAt, expires_at as expiresAt, lease_until as leaseUntil`
  // The update takes over only an expired record or a claim whose lease lapsed; else no row.
  const claim = db
    .prepare<IdempotencyClaim, string>(
      `insert into idempotency_keys
         (principal, key, request_hash, owner, state, created_at, expires_at, lease_until)
       values (@principal, @key, @requestHash, @owner, 'pending', @now, @expiresAt, @leaseUntil)
       on conflict (principal, key) do update set
         request_hash = excluded.request_hash, owner = excluded.owner, state = 'pending', status = null,
         headers = null, body = null, created_at = excluded.created_at, expires_at = excluded.expires_at,
         lease_until = excluded.lease_until
       where idempotency_keys.expires_at <= @now
         or (idempotency_keys.state = 'pending' and idempotency_keys.lease_until <= @now)
       returning owner`,
    )
    .pluck()
  const byKey = db.prepare<{ principal: string; key: string }, IdempotencyRow<string>>(
    `select ${columns} from idempotency_keys where principal = @principal and key = @key`,
  )
  const complete = db.prepare<{
    principal: string
    key: string
    owner: string
    status: number
    headers: string
    body: Buffer
  }>(
    `update idempotency_keys set state = 'done', status = @status, headers = @headers, body = @body
     where principal = @principal and key = @key and owner = @owner and state = 'pending'`,
  )
  const release = db.prepare<{ principal: string; key: string; owner: string }>(
    `delete from idempotency_keys
     where principal = @principal and key = @key and owner = @owner and state = 'pending'`,
  )
  const renew = db.prepare<{ principal: string; key: string; owner: string; leaseUntil: number }>(
    `update idempotency_keys set lease_until = @leaseUntil
     where principal = @principal and key = @key and owner = @owner and state = 'pending'`,
  )
  const prune = db.prepare<[number]>('delete from idempotency_keys where expires_at <= ?')
  return {
    async begin(request) {
      if (claim.get(request) !== undefined) return { outcome: 'claimed' }
      const row = byKey.get(request)
      // Deleted between the two statements (released or pruned): claim again.
      if (row === undefined) return this.begin(request)
      return { outcome: 'existing', record: toIdempotency(row, parseHeaders) }
    },
    async complete(principal, key, owner, answer) {
      const { status, body } = answer
      return (
        complete.run({ principal, key, owner, status, headers: JSON.stringify(answer.headers), body })
          .changes > 0
      )
    },
    async renew(principal, key, owner, leaseUntil) {
      return renew.run({ principal, key, owner, leaseUntil }).changes === 1
    },
    async release(principal, key, owner) {
      release.run({ principal, key, owner })
    },
    async get(principal, key, now) {
      const row = byKey.get({ principal, key })
      return row === undefined || row.expiresAt <= now ? undefined : toIdempotency(row, parseHeaders)
    },
    async prune(now) {
      return prune.run(now).changes
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
      policies: policyStore(db),
      approvals: approvalStore(db),
      quotas: quotaStore(db),
      secrets: secretStore(db),
      idempotency: idempotencyStore(db),
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
