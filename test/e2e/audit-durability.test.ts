/**
 * Audit durability with real gateway processes (`4runr start`) killed mid-traffic: in batched mode
 * SIGKILL loses at most the open batch and SIGTERM loses nothing; in sync mode SIGKILL loses
 * nothing, since each entry was committed before its answer left. After a kill the chain still
 * verifies, and the restarted gateway continues it.
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import Database from 'better-sqlite3'
import { stringify } from 'yaml'
import { openSqliteLedgerStore } from '../../packages/server/src/audit/sqlite-ledger-store.ts'
import { verifyLedger } from '../../packages/server/src/audit/verify.ts'
import { resolveMasterKeys } from '../../packages/server/src/secrets/master-keys.ts'
import { type Started, startGatewayProcess } from '../support/process.ts'
import { startUpstream, type TestUpstream } from '../support/upstream.ts'

const adminKey = 'e2e-audit-durability-key-0123456789'

const running = new Set<Started>()
after(() => {
  for (const gw of running) gw.child.kill('SIGKILL')
})

describe('audit durability across process kills', () => {
  let upstream: TestUpstream
  const dirs: string[] = []
  before(async () => {
    upstream = await startUpstream()
  })
  after(async () => {
    await upstream.close()
    for (const dir of dirs) await rm(dir, { recursive: true, force: true })
  })

  async function gatewayIn(durability: 'batched' | 'sync') {
    const dir = await mkdtemp(join(tmpdir(), 'runr-audit-kill-'))
    dirs.push(dir)
    const file = join(dir, '4runr.yaml')
    await writeFile(
      file,
      stringify({
        gateway: {
          listen: { host: '127.0.0.1', port: 0 },
          admin: { host: '127.0.0.1', port: 0 },
          logLevel: 'warn',
        },
        store: { kind: 'sqlite', path: join(dir, 'data/4runr.db') },
        audit: { instance: 'kill', durability, checkpointEvery: 10 },
        systems: { orders: { kind: 'http', url: upstream.url } },
        channels: [{ name: 'orders', prefix: '/orders', system: 'orders', rules: [{ path: '*' }] }],
      }),
    )
    const start = async () => {
      const gw = await startGatewayProcess(file, { RUNR_ADMIN_KEY: adminKey }, dir)
      running.add(gw)
      return gw
    }
    /** Request ids in the ledger, read from the file directly (the process is gone). */
    const recorded = (): string[] => {
      const db = new Database(join(dir, 'data/4runr.db'), { readonly: true })
      try {
        return db
          .prepare<[], string>("select request_id from audit_entries where instance = 'kill' order by seq")
          .pluck()
          .all()
      } finally {
        db.close()
      }
    }
    return { start, recorded, dir }
  }

  /** An unauthenticated call: a denial, always recorded. */
  const deny = (gw: Started, id: string) =>
    fetch(`${gw.publicUrl}/orders/x`, { headers: { 'x-request-id': id } }).then((res) => {
      assert.equal(res.status, 401)
      return res.arrayBuffer()
    })
  const ids = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}-${i}`)

  async function verify(gw: Started) {
    const res = await fetch(`${gw.adminUrl}/v1/audit/verify`, {
      headers: { authorization: `Bearer ${adminKey}` },
    })
    return (await res.json()) as {
      ok: boolean
      chains: Array<{ instance: string; lastSeq: number; unsigned: number; broken?: unknown }>
    }
  }

  async function kill(gw: Started, signal: NodeJS.Signals) {
    gw.child.kill(signal)
    await gw.exited
    running.delete(gw)
  }

  it('batched: SIGKILL loses at most the open batch; what was flushed survives and still verifies', async () => {
    const { start, recorded } = await gatewayIn('batched')
    const gw = await start()
    const flushed = ids('flushed', 20)
    for (const id of flushed) await deny(gw, id)
    // Past the 50 ms batch window: these are committed.
    await new Promise((r) => setTimeout(r, 300))
    const open = ids('open', 5)
    await Promise.all(open.map((id) => deny(gw, id)))
    await kill(gw, 'SIGKILL')

    const kept = recorded()
    assert.deepEqual(kept.slice(0, 20), flushed)
    assert.ok(kept.length <= 25, 'nothing invented')
    const restarted = await start()
    try {
      await deny(restarted, 'after-restart')
      const report = await verify(restarted)
      assert.equal(report.ok, true, JSON.stringify(report))
      assert.equal(report.chains[0]!.lastSeq, kept.length + 1, 'the restarted gateway continues the chain')
    } finally {
      await kill(restarted, 'SIGTERM')
    }
  })

  it('batched: SIGTERM right after the last answer loses nothing and signs the head', async () => {
    const { start, recorded, dir } = await gatewayIn('batched')
    const gw = await start()
    const sent = ids('graceful', 25)
    await Promise.all(sent.map((id) => deny(gw, id)))
    await kill(gw, 'SIGTERM')
    assert.deepEqual(recorded().sort(), [...sent].sort())
    // Verified as the CLI's gateway would, from the file and the data directory's master key.
    const store = openSqliteLedgerStore(join(dir, 'data/4runr.db'))
    try {
      const { keys } = await resolveMasterKeys({ env: {}, dataDir: join(dir, 'data') })
      const report = await verifyLedger(store, keys)
      assert.equal(report.ok, true, JSON.stringify(report))
      assert.equal(report.chains[0]!.unsigned, 0, 'the shutdown checkpoint covers the head')
    } finally {
      await store.close()
    }
  })

  it('sync: SIGKILL right after the last answer loses nothing', async () => {
    const { start, recorded } = await gatewayIn('sync')
    const gw = await start()
    const sent = ids('sync', 20)
    for (const id of sent) await deny(gw, id)
    await kill(gw, 'SIGKILL')
    assert.deepEqual(recorded(), sent)
  })
})
