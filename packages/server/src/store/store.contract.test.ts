import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, beforeEach, describe, it } from 'node:test'
import Database from 'better-sqlite3'
import postgres from 'postgres'
import { requireService, serviceUrls } from '../../../../test/support/services.ts'
import {
  postgresMigrations,
  SchemaTooNewError,
  schemaMigrationsTable,
  sqliteMigrations,
} from './migrations.ts'
import { openPostgresStore } from './postgres-store.ts'
import { openSqliteStore } from './sqlite-store.ts'
import { type Backend, postgresBackend, sqliteBackend } from './test-helpers.ts'
import {
  type AgentKey,
  type NewAgent,
  type Revocation,
  type SigningKey,
  type Store,
  StoreConflictError,
} from './types.ts'

const jwk = (x: string) => ({ kty: 'OKP', crv: 'Ed25519', x }) as const

function agentKey(kid: string, createdAt: number, notAfter: number | null = null): AgentKey {
  return { kid, jwk: jwk(`x-${kid}`), createdAt, notAfter }
}

function revocation(id: string, createdAt: number, expiresAt: number | null = null): Revocation {
  return { id, kind: 'jti', jti: `jti-${id}`, agentId: null, kid: null, reason: null, createdAt, expiresAt }
}

function signingKey(kid: string, createdAt: number, retiredAt: number | null = null): SigningKey {
  return {
    kid,
    alg: 'EdDSA',
    publicJwk: { ...jwk(`x-${kid}`), kid },
    sealedPrivateKey: `sealed-${kid}`,
    createdAt,
    retiredAt,
  }
}

const latest = sqliteMigrations.at(-1)!.version

function contract(backend: Backend): void {
  describe(`${backend.kind} store`, () => {
    let available = false
    let store: Store

    before(async () => {
      available = await backend.setUp()
      if (available) store = await backend.open()
    })
    after(async () => {
      if (available) await store.close()
      await backend.tearDown()
    })
    beforeEach(async () => {
      if (!available) return
      for (const table of ['agent_keys', 'agents', 'revocations', 'signing_keys'])
        await backend.query(`delete from ${table}`)
    })

    /** `it`, skipped when the backend is not running. */
    function behaves(name: string, body: () => Promise<void>): void {
      it(name, async (t) => {
        if (!available) return t.skip(`${backend.kind} not running`)
        await body()
      })
    }

    const create = (id: string, extra: Partial<NewAgent> = {}) =>
      store.agents.create({ id, name: `agent-${id}`, createdAt: 1_000, ...extra })

    describe('agents', () => {
      behaves('creates an agent with defaults and reads it back by id and by name', async () => {
        const created = await store.agents.create({ id: 'a1', name: 'billing-bot', createdAt: 1_000 })
        const expected = {
          id: 'a1',
          name: 'billing-bot',
          labels: {},
          roles: [],
          status: 'active',
          requireDpop: false,
          source: 'api',
          createdAt: 1_000,
          updatedAt: 1_000,
          keys: [],
        }
        assert.deepEqual(created, expected)
        assert.deepEqual(await store.agents.get('a1'), expected)
        assert.deepEqual(await store.agents.getByName('billing-bot'), expected)
      })

      behaves('stamps createdAt with the current time when none is given', async () => {
        const before = Date.now()
        const created = await store.agents.create({ id: 'a1', name: 'now' })
        assert.ok(created.createdAt >= before && created.createdAt <= Date.now())
        assert.equal(created.updatedAt, created.createdAt)
      })

      behaves('stores every field given, with keys ordered by createdAt', async () => {
        const agent: NewAgent = {
          id: 'a1',
          name: 'ops',
          labels: { team: 'ops', tier: 'gold' },
          roles: ['reader', 'writer'],
          status: 'disabled',
          requireDpop: true,
          source: 'config',
          createdAt: 2_000,
          keys: [agentKey('k-late', 2_500, 9_000), agentKey('k-early', 1_500)],
        }
        const created = await store.agents.create(agent)
        assert.deepEqual(created, {
          id: 'a1',
          name: 'ops',
          labels: { team: 'ops', tier: 'gold' },
          roles: ['reader', 'writer'],
          status: 'disabled',
          requireDpop: true,
          source: 'config',
          createdAt: 2_000,
          updatedAt: 2_000,
          keys: [agentKey('k-early', 1_500), agentKey('k-late', 2_500, 9_000)],
        })
        assert.deepEqual(await store.agents.get('a1'), created)
      })

      behaves('returns undefined for an unknown id or name', async () => {
        await create('a1')
        assert.equal(await store.agents.get('nope'), undefined)
        assert.equal(await store.agents.getByName('nope'), undefined)
      })

      behaves('refuses a second agent with the same name', async () => {
        await create('a1', { name: 'twin' })
        await assert.rejects(create('a2', { name: 'twin', keys: [agentKey('k1', 1_000)] }), {
          name: 'StoreConflictError',
          message: 'agent name "twin" is taken',
        })
        assert.equal(await store.agents.get('a2'), undefined)
        assert.equal((await store.agents.getByName('twin'))?.id, 'a1')
      })

      behaves('refuses a second agent with the same id', async () => {
        await create('a1')
        await assert.rejects(create('a1', { name: 'other' }), (err: unknown) => {
          assert.ok(err instanceof StoreConflictError)
          assert.equal(err.message, 'agent id "a1" is taken')
          return true
        })
        assert.equal(await store.agents.getByName('other'), undefined)
      })

      behaves('refuses an agent whose keys repeat a kid, creating nothing', async () => {
        await assert.rejects(create('a1', { keys: [agentKey('k1', 1_000), agentKey('k1', 2_000)] }), {
          name: 'StoreConflictError',
          message: 'agent "a1" already has a key with kid "k1"',
        })
        assert.equal(await store.agents.get('a1'), undefined)
      })

      behaves('lists agents by createdAt then bytewise id, a page at a time', async () => {
        await create('c', { createdAt: 3_000 })
        await create('b', { createdAt: 1_000, keys: [agentKey('k1', 1_000)] })
        await create('a', { createdAt: 2_000 })
        await create('B', { createdAt: 2_000 })
        await create('a-2', { createdAt: 2_000 })
        const order = ['b', 'B', 'a', 'a-2', 'c']
        const all = await store.agents.list()
        assert.deepEqual(
          all.map((agent) => agent.id),
          order,
        )
        assert.deepEqual(all[0]?.keys, [agentKey('k1', 1_000)])

        const pages: string[][] = []
        let cursor: string | undefined
        for (;;) {
          const page = await store.agents.list({
            limit: 2,
            ...(cursor === undefined ? {} : { after: cursor }),
          })
          if (page.length === 0) break
          pages.push(page.map((agent) => agent.id))
          cursor = page.at(-1)!.id
        }
        assert.deepEqual(pages, [['b', 'B'], ['a', 'a-2'], ['c']])
      })

      behaves(
        'lists nothing after an agent that no longer exists, and nothing for a limit of 0',
        async () => {
          await create('a1')
          assert.deepEqual(await store.agents.list({ after: 'gone' }), [])
          assert.deepEqual(await store.agents.list({ limit: 0 }), [])
        },
      )

      behaves('rejects a negative or fractional page size', async () => {
        await assert.rejects(store.agents.list({ limit: -1 }), RangeError)
        await assert.rejects(store.agents.list({ limit: 1.5 }), RangeError)
      })

      behaves('updates only the fields given and stamps updatedAt', async () => {
        await create('a1', {
          name: 'before',
          labels: { a: '1' },
          roles: ['r'],
          keys: [agentKey('k1', 1_000)],
        })
        const updated = await store.agents.update('a1', { labels: { b: '2' }, requireDpop: true }, 5_000)
        const expected = {
          id: 'a1',
          name: 'before',
          labels: { b: '2' },
          roles: ['r'],
          status: 'active',
          requireDpop: true,
          source: 'api',
          createdAt: 1_000,
          updatedAt: 5_000,
          keys: [agentKey('k1', 1_000)],
        }
        assert.deepEqual(updated, expected)
        assert.deepEqual(await store.agents.get('a1'), expected)

        const renamed = await store.agents.update(
          'a1',
          { name: 'after', roles: [], status: 'disabled', requireDpop: false, labels: {} },
          6_000,
        )
        assert.deepEqual(renamed, {
          ...expected,
          name: 'after',
          labels: {},
          roles: [],
          status: 'disabled',
          requireDpop: false,
          updatedAt: 6_000,
        })
        assert.equal(await store.agents.getByName('before'), undefined)
      })

      behaves('refuses to rename an agent to a taken name, changing nothing', async () => {
        await create('a1', { name: 'first' })
        await create('a2', { name: 'second' })
        await assert.rejects(store.agents.update('a2', { name: 'first', roles: ['x'] }, 9_000), {
          name: 'StoreConflictError',
          message: 'agent name "first" is taken',
        })
        const unchanged = await store.agents.get('a2')
        assert.equal(unchanged?.name, 'second')
        assert.deepEqual(unchanged?.roles, [])
        assert.equal(unchanged?.updatedAt, 1_000)
      })

      behaves('returns undefined when updating an unknown agent', async () => {
        assert.equal(await store.agents.update('nope', { name: 'x' }, 2_000), undefined)
      })

      behaves('deletes an agent together with its keys', async () => {
        await create('a1', { keys: [agentKey('k1', 1_000)] })
        assert.equal(await store.agents.delete('a1'), true)
        assert.equal(await store.agents.get('a1'), undefined)
        assert.deepEqual(await backend.query("select kid from agent_keys where agent_id = 'a1'"), [])
        assert.equal(await store.agents.delete('a1'), false)
      })

      behaves('adds a key and ends every key still valid after the rotation instant', async () => {
        await create('a1', {
          keys: [agentKey('open', 1_000), agentKey('later', 1_100, 5_000), agentKey('earlier', 1_200, 2_000)],
        })
        const rotated = await store.agents.addKey('a1', agentKey('new', 3_000), 3_000)
        assert.deepEqual(rotated?.keys, [
          agentKey('open', 1_000, 3_000),
          agentKey('later', 1_100, 3_000),
          agentKey('earlier', 1_200, 2_000),
          agentKey('new', 3_000),
        ])
        assert.deepEqual(await store.agents.get('a1'), rotated)
      })

      behaves('adds a key without touching the others when no rotation instant is given', async () => {
        await create('a1', { keys: [agentKey('k1', 1_000)] })
        const added = await store.agents.addKey('a1', agentKey('k2', 2_000, 8_000))
        assert.deepEqual(added?.keys, [agentKey('k1', 1_000), agentKey('k2', 2_000, 8_000)])
      })

      behaves('returns undefined when adding a key to an unknown agent', async () => {
        assert.equal(await store.agents.addKey('nope', agentKey('k1', 1_000), 1_000), undefined)
      })

      behaves('refuses a kid the agent already has, leaving its keys as they were', async () => {
        await create('a1', { keys: [agentKey('k1', 1_000), agentKey('k2', 1_100)] })
        await assert.rejects(store.agents.addKey('a1', agentKey('k1', 2_000), 2_000), {
          name: 'StoreConflictError',
          message: 'agent "a1" already has a key with kid "k1"',
        })
        assert.deepEqual((await store.agents.get('a1'))?.keys, [agentKey('k1', 1_000), agentKey('k2', 1_100)])
      })

      behaves('lets two agents hold keys with the same kid', async () => {
        await create('a1', { keys: [agentKey('shared', 1_000)] })
        await create('a2', { keys: [agentKey('shared', 1_000)] })
        assert.deepEqual((await store.agents.get('a2'))?.keys, [agentKey('shared', 1_000)])
      })
    })

    describe('revocations', () => {
      behaves('records a revocation once however often it is added', async () => {
        const first = {
          ...revocation('r1', 1_000),
          kind: 'key',
          agentId: 'a1',
          kid: 'k1',
          reason: 'leaked',
        } as const
        await store.revocations.add(first)
        await store.revocations.add({ ...first, reason: 'again', createdAt: 2_000 })
        assert.deepEqual(await store.revocations.list({ now: 1_500 }), [first])
      })

      behaves('lists revocations created at or after an instant, oldest first', async () => {
        await store.revocations.add(revocation('r3', 3_000))
        await store.revocations.add(revocation('r1', 1_000))
        await store.revocations.add(revocation('r2', 2_000))
        const ids = async (options: { since?: number; limit?: number }) =>
          (await store.revocations.list({ now: 0, ...options })).map((r) => r.id)
        assert.deepEqual(await ids({}), ['r1', 'r2', 'r3'])
        assert.deepEqual(await ids({ since: 2_000 }), ['r2', 'r3'])
        assert.deepEqual(await ids({ since: 3_001 }), [])
        assert.deepEqual(await ids({ limit: 2 }), ['r1', 'r2'])
      })

      behaves('leaves out revocations expired at the given instant', async () => {
        await store.revocations.add(revocation('kept-forever', 1_000))
        await store.revocations.add(revocation('expires-later', 1_100, 6_000))
        await store.revocations.add(revocation('expires-now', 1_200, 5_000))
        await store.revocations.add(revocation('expired', 1_300, 4_000))
        assert.deepEqual(
          (await store.revocations.list({ now: 5_000 })).map((r) => r.id),
          ['kept-forever', 'expires-later'],
        )
      })

      behaves('prunes revocations that expired before the given instant and keeps the rest', async () => {
        await store.revocations.add(revocation('forever', 1_000))
        await store.revocations.add(revocation('at-now', 1_100, 5_000))
        await store.revocations.add(revocation('old-1', 1_200, 4_000))
        await store.revocations.add(revocation('old-2', 1_300, 10))
        assert.equal(await store.revocations.prune(5_000), 2)
        assert.equal(await store.revocations.prune(5_000), 0)
        assert.deepEqual(
          (await store.revocations.list({ now: 0 })).map((r) => r.id),
          ['forever', 'at-now'],
        )
      })
    })

    describe('signing keys', () => {
      behaves('lists signing keys oldest first', async () => {
        await store.signingKeys.insert(signingKey('k2', 2_000))
        await store.signingKeys.insert(signingKey('k1', 1_000, 2_000))
        assert.deepEqual(await store.signingKeys.list(), [
          signingKey('k1', 1_000, 2_000),
          signingKey('k2', 2_000),
        ])
      })

      behaves('refuses a signing key whose kid is taken', async () => {
        await store.signingKeys.insert(signingKey('k1', 1_000))
        await assert.rejects(store.signingKeys.insert(signingKey('k1', 2_000)), {
          name: 'StoreConflictError',
          message: 'signing key kid "k1" is taken',
        })
        assert.deepEqual(await store.signingKeys.list(), [signingKey('k1', 1_000)])
      })

      behaves('retires every active key but the one named, leaving retired keys as they were', async () => {
        await store.signingKeys.insert(signingKey('old', 1_000, 1_500))
        await store.signingKeys.insert(signingKey('current', 2_000))
        await store.signingKeys.insert(signingKey('next', 3_000))
        await store.signingKeys.retireAllBut('next', 3_000)
        assert.deepEqual(await store.signingKeys.list(), [
          signingKey('old', 1_000, 1_500),
          signingKey('current', 2_000, 3_000),
          signingKey('next', 3_000),
        ])
      })

      behaves('deletes only keys retired before the given instant', async () => {
        await store.signingKeys.insert(signingKey('gone', 1_000, 1_500))
        await store.signingKeys.insert(signingKey('at-cutoff', 2_000, 3_000))
        await store.signingKeys.insert(signingKey('active', 3_000))
        assert.equal(await store.signingKeys.deleteRetiredBefore(3_000), 1)
        assert.deepEqual(
          (await store.signingKeys.list()).map((key) => key.kid),
          ['at-cutoff', 'active'],
        )
      })
    })

    behaves('returns fresh records that callers may change freely', async () => {
      await create('a1', { labels: { a: '1' }, roles: ['r'], keys: [agentKey('k1', 1_000)] })
      await store.revocations.add(revocation('r1', 1_000))
      await store.signingKeys.insert(signingKey('s1', 1_000))

      const agent = (await store.agents.get('a1'))!
      agent.labels['a'] = 'changed'
      agent.roles.push('extra')
      agent.keys[0]!.jwk.x = 'changed' as never
      agent.keys.push(agentKey('k2', 2_000))
      const [listed] = await store.agents.list()
      assert.deepEqual(listed, await store.agents.get('a1'))
      assert.deepEqual(listed?.labels, { a: '1' })
      assert.deepEqual(listed?.roles, ['r'])
      assert.deepEqual(listed?.keys, [agentKey('k1', 1_000)])

      const [revoked] = await store.revocations.list({ now: 0 })
      revoked!.reason = 'changed'
      assert.deepEqual(await store.revocations.list({ now: 0 }), [revocation('r1', 1_000)])

      const [signing] = await store.signingKeys.list()
      signing!.publicJwk.x = 'changed'
      assert.deepEqual(await store.signingKeys.list(), [signingKey('s1', 1_000)])
    })

    describe('lifecycle', () => {
      behaves('keeps its data and applies each migration once when reopened', async () => {
        await create('a1', { keys: [agentKey('k1', 1_000)] })
        await store.signingKeys.insert(signingKey('s1', 1_000))
        const expected = await store.agents.get('a1')
        const versions = await backend.query(
          'select version, applied_at from schema_migrations order by version',
        )
        assert.deepEqual(
          versions.map((row) => row['version']),
          sqliteMigrations.map((migration) => migration.version),
        )

        await store.close()
        store = await backend.open()
        const again = await backend.open()
        try {
          assert.deepEqual(await again.agents.get('a1'), expected)
          assert.deepEqual(await store.signingKeys.list(), [signingKey('s1', 1_000)])
          assert.deepEqual(
            await backend.query('select version, applied_at from schema_migrations order by version'),
            versions,
          )
        } finally {
          await again.close()
        }
      })

      behaves('refuses a database whose schema is newer than this gateway', async () => {
        await backend.query(`insert into schema_migrations (version, applied_at) values (${latest + 1}, 0)`)
        try {
          await assert.rejects(backend.open(), {
            name: SchemaTooNewError.name,
            message: `database schema version ${latest + 1} is newer than this gateway supports (${latest})`,
          })
        } finally {
          await backend.query(`delete from schema_migrations where version = ${latest + 1}`)
        }
      })

      behaves('answers ping while open, and closes more than once without error', async () => {
        const other = await backend.open()
        assert.equal(other.kind, backend.kind)
        assert.equal(await other.ping(), true)
        await other.close()
        await other.close()
        assert.equal(await other.ping(), false)
        assert.equal(await store.ping(), true)
      })
    })
  })
}

contract(sqliteBackend())
contract(postgresBackend())

describe('sqlite store files', () => {
  it('creates the parent directory of a new database file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'runr-store-'))
    try {
      const path = join(dir, 'a', 'b', 'gateway.db')
      const store = openSqliteStore(path)
      await store.close()
      assert.ok(existsSync(path))
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('keeps an in-memory database private to the store that opened it', async () => {
    const first = openSqliteStore(':memory:')
    const second = openSqliteStore(':memory:')
    await first.agents.create({ id: 'a1', name: 'memory' })
    assert.equal((await first.agents.get('a1'))?.name, 'memory')
    assert.equal(await second.agents.get('a1'), undefined)
    await first.close()
    await second.close()
  })
})

describe('postgres store startup', () => {
  const url = serviceUrls.postgres
  const schema = `runr_test_${randomBytes(6).toString('hex')}`
  let raw: postgres.Sql | undefined

  after(async () => {
    if (raw === undefined) return
    await raw.unsafe(`drop schema if exists "${schema}" cascade`)
    await raw.end()
  })

  it('migrates a new schema once when two gateways start at the same moment', async (t) => {
    if (!(await requireService('postgres', url))) return t.skip('postgres not running')
    raw = postgres(url, { max: 1, onnotice: () => {} })
    const opened = await Promise.allSettled([
      openPostgresStore(url, { schema, max: 2 }),
      openPostgresStore(url, { schema, max: 2 }),
    ])
    const stores = opened.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []))
    try {
      for (const result of opened) if (result.status === 'rejected') throw result.reason
      const rows = await raw.unsafe(`select version from "${schema}".schema_migrations order by version`)
      assert.deepEqual(
        rows.map((row) => row['version']),
        postgresMigrations.map((migration) => migration.version),
      )
      await stores[0]!.agents.create({ id: 'a1', name: 'shared', createdAt: 1_000 })
      assert.equal((await stores[1]!.agents.get('a1'))?.name, 'shared')
    } finally {
      // A store left open would keep the test process alive until the runner's timeout.
      await Promise.all(stores.map((store) => store.close()))
    }
  })

  it('refuses a schema name that is not a plain identifier', async () => {
    await assert.rejects(openPostgresStore(url, { schema: 'x"; drop schema public; --' }), TypeError)
  })
})

describe('migrations', () => {
  it('number the SQLite and Postgres schemas alike, from 1 without gaps', () => {
    const versions = sqliteMigrations.map((migration) => migration.version)
    assert.deepEqual(
      versions,
      Array.from(versions, (_, i) => i + 1),
    )
    assert.deepEqual(
      postgresMigrations.map((migration) => migration.version),
      versions,
    )
  })
})

describe('a database made by the first release', () => {
  const v1 = { sqlite: sqliteMigrations[0]!, postgres: postgresMigrations[0]! }
  const agentRow = `insert into agents (id, name, labels, roles, status, require_dpop, source, created_at, updated_at)
    values ('a1', 'old', '{}', '[]', 'active', false, 'api', 1000, 1000)`

  it('gains the later tables when a SQLite file at version 1 is opened, keeping its agents', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'runr-store-'))
    try {
      const path = join(dir, 'gateway.db')
      const db = new Database(path)
      db.exec(schemaMigrationsTable.sqlite)
      for (const statement of v1.sqlite.statements) db.exec(statement)
      db.exec('insert into schema_migrations (version, applied_at) values (1, 0)')
      db.exec(agentRow.replace('false', '0'))
      db.close()

      const store = openSqliteStore(path)
      try {
        assert.equal((await store.agents.get('a1'))?.name, 'old')
        assert.equal((await store.policies.put('p', { rules: [] })).version, 1)
      } finally {
        await store.close()
      }
      const check = new Database(path, { readonly: true })
      const versions = check.prepare('select version from schema_migrations order by version').pluck().all()
      check.close()
      assert.deepEqual(
        versions,
        sqliteMigrations.map((migration) => migration.version),
      )
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('gains the later tables when a Postgres schema at version 1 is opened, keeping its agents', async (t) => {
    const url = serviceUrls.postgres
    if (!(await requireService('postgres', url))) return t.skip('postgres not running')
    const schema = `runr_test_${randomBytes(6).toString('hex')}`
    const raw = postgres(url, { max: 1, onnotice: () => {} })
    try {
      await raw.begin(async (tx) => {
        await tx.unsafe(`create schema "${schema}"`)
        await tx.unsafe(`set local search_path to "${schema}"`)
        await tx.unsafe(schemaMigrationsTable.postgres)
        for (const statement of v1.postgres.statements) await tx.unsafe(statement)
        await tx.unsafe('insert into schema_migrations (version, applied_at) values (1, 0)')
        await tx.unsafe(agentRow)
      })
      const store = await openPostgresStore(url, { schema, max: 1 })
      try {
        assert.equal((await store.agents.get('a1'))?.name, 'old')
        assert.equal((await store.policies.put('p', { rules: [] })).version, 1)
      } finally {
        await store.close()
      }
      const rows = await raw.unsafe(`select version from "${schema}".schema_migrations order by version`)
      assert.deepEqual(
        rows.map((row) => row['version']),
        postgresMigrations.map((migration) => migration.version),
      )
    } finally {
      await raw.unsafe(`drop schema if exists "${schema}" cascade`)
      await raw.end()
    }
  })
})
