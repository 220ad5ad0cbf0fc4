import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, beforeEach, describe, it } from 'node:test'
import { MasterKeys } from '../secrets/master-keys.ts'
import type { AuditEvent } from './entry.ts'
import { createLedger } from './ledger.ts'
import type { LedgerStore } from './ledger-store.ts'
import type { AuditSettings } from './settings.ts'
import { signCheckpoint } from './signing.ts'
import {
  type LedgerBackend,
  postgresLedgerBackend,
  sqliteLedgerBackend,
  testMasterKeys,
  testSigningKey,
} from './test-helpers.ts'
import { verifyLedger } from './verify.ts'

function event(n: number, time = 1_700_000_000_000 + n): AuditEvent {
  return {
    time,
    requestId: `req-${n}`,
    correlationId: `req-${n}`,
    principal: `agent:a${n % 3}`,
    kind: 'call',
    target: 'tool:serpapi',
    action: 'search',
    decision: n % 4 === 0 ? 'deny' : 'allow',
    rule: 'research/0',
    status: n % 4 === 0 ? 403 : 200,
    durationMs: n + 0.125,
  }
}

function settings(overrides: Partial<AuditSettings> = {}): () => AuditSettings {
  const s: AuditSettings = {
    enabled: true,
    checkpointEvery: 4,
    durability: 'batched',
    onFailure: 'refuse',
    retainDays: undefined,
    instance: 'gw-1',
    ...overrides,
  }
  return () => s
}

for (const backend of [sqliteLedgerBackend(), postgresLedgerBackend()]) {
  describe(`audit ledger in ${backend.kind}`, () => {
    let available = false
    const masterKeys = testMasterKeys()
    let signingKey: Awaited<ReturnType<typeof testSigningKey>>
    /** Every ledger store a test opened, closed after the suite. */
    const opened: LedgerStore[] = []

    const open = async (overrides: Partial<AuditSettings> = {}, now?: () => number) => {
      const store = backend.open()
      const ledger = await createLedger({
        store,
        settings: settings(overrides),
        instance: overrides.instance ?? 'gw-1',
        signingKey: () => signingKey,
        masterKeys,
        onError: () => {},
        ...(now === undefined ? {} : { now }),
      })
      opened.push(store)
      return { ledger, store }
    }
    /** Ten entries, checkpoints at 4 and 8 and at 10 on close; a second connection to inspect. */
    const written = async (): Promise<LedgerStore> => {
      const { ledger } = await open()
      for (let n = 1; n <= 10; n++) {
        ledger.append(event(n))
        // One entry per group commit, so checkpoints fall exactly on 4 and 8.
        await ledger.flush()
      }
      await ledger.close()
      const store = backend.open()
      opened.push(store)
      return store
    }
    const firstBroken = async (store: LedgerStore) => {
      const report = await verifyLedger(store, masterKeys)
      assert.equal(report.ok, false, 'verify should fail')
      return report.chains.find((c) => c.broken !== undefined)!.broken!
    }
    const maybe = (name: string, body: () => Promise<void>) =>
      it(name, async (t) => {
        if (!available) return t.skip(`${backend.kind} not running`)
        await body()
      })

    before(async () => {
      available = await backend.setUp()
      signingKey = await testSigningKey()
    })
    after(async () => {
      for (const store of opened) await store.close()
      await backend.tearDown()
    })
    beforeEach(async () => {
      if (!available) return
      for (const table of ['audit_entries', 'audit_checkpoints', 'audit_keys'])
        await backend.query(`delete from ${table}`)
    })

    maybe(
      'chains a batch, signs a checkpoint every checkpointEvery entries and the head on close',
      async () => {
        const store = await written()
        const checkpoints = await store.checkpoints('gw-1')
        assert.deepEqual(
          checkpoints.map((c) => c.seq),
          [4, 8, 10],
        )
        assert.ok(checkpoints.every((c) => c.kid === signingKey.kid))
        const report = await verifyLedger(store, masterKeys)
        assert.equal(report.ok, true)
        assert.deepEqual(report.chains[0], {
          instance: 'gw-1',
          ok: true,
          entries: 10,
          firstSeq: 1,
          lastSeq: 10,
          checkpoints: 3,
          signedThrough: 10,
          unsigned: 0,
        })
        const entries = await store.range('gw-1', 1, 100)
        assert.deepEqual(
          entries.map((e) => e.requestId),
          Array.from({ length: 10 }, (_, i) => `req-${i + 1}`),
        )
        assert.equal(entries[0]!.durationMs, 1.125)
      },
    )

    maybe(
      'writes a backlog larger than one insert statement or one transaction carries, all of it on flush',
      async () => {
        const { ledger, store } = await open({ checkpointEvery: 1000 })
        for (let n = 1; n <= 12_000; n++) ledger.append(event(n))
        await ledger.flush()
        const [last] = await store.range('gw-1', 12_000, 1)
        assert.deepEqual(await store.head('gw-1'), { seq: 12_000, hash: last!.hash })
        assert.equal((await verifyLedger(store, masterKeys)).ok, true)
      },
    )

    maybe(
      'continues the chain of its instance after a restart, and keeps other instances apart',
      async () => {
        await written()
        const { ledger } = await open()
        ledger.append(event(11))
        const other = await open({ instance: 'gw-2' })
        other.ledger.append(event(1))
        await ledger.close()
        await other.ledger.close()
        const inspect = backend.open()
        opened.push(inspect)
        const report = await verifyLedger(inspect, masterKeys)
        assert.equal(report.ok, true)
        assert.deepEqual(
          report.chains.map((c) => [c.instance, c.firstSeq, c.lastSeq]),
          [
            ['gw-1', 1, 11],
            ['gw-2', 1, 1],
          ],
        )
      },
    )

    maybe(
      'verifies checkpoints signed before a signing-key rotation, and after the master key was rotated too',
      async () => {
        const before = signingKey
        await written()
        signingKey = await testSigningKey()
        try {
          const { ledger } = await open()
          for (let n = 11; n <= 13; n++) ledger.append(event(n))
          await ledger.close()
        } finally {
          signingKey = before
        }
        const store = backend.open()
        opened.push(store)
        const checkpoints = await store.checkpoints('gw-1')
        assert.equal(new Set(checkpoints.map((c) => c.kid)).size, 2)
        assert.equal((await verifyLedger(store, masterKeys)).ok, true)
        // A new master key, the old one still at hand: the ledger re-attests its keys at start...
        const rotated = new MasterKeys(randomBytes(32), [masterKeys.current.key])
        await createLedger({
          store,
          settings: settings(),
          instance: 'gw-1',
          signingKey: () => signingKey,
          masterKeys: rotated,
          onError: () => {},
        })
        // ...so they verify under the new key alone, once the old one is gone.
        assert.equal((await verifyLedger(store, new MasterKeys(rotated.current.key))).ok, true)
        const stranger = await verifyLedger(store, testMasterKeys())
        assert.match(stranger.chains[0]!.broken!.reason, /not attested/)
      },
    )

    maybe('catches an edited field at its seq', async () => {
      const store = await written()
      await backend.query(`update audit_entries set principal = 'agent:someone-else' where seq = 6`)
      const broken = await firstBroken(store)
      assert.equal(broken.seq, 6)
      assert.match(broken.reason, /content was changed/)
    })

    maybe('catches a deleted row at its seq', async () => {
      const store = await written()
      await backend.query('delete from audit_entries where seq = 3')
      assert.equal((await firstBroken(store)).seq, 3)
    })

    maybe('catches a deleted row when the rows after it were renumbered to close the gap', async () => {
      const store = await written()
      await backend.query('delete from audit_entries where seq = 3')
      for (let seq = 4; seq <= 10; seq++)
        await backend.query(`update audit_entries set seq = ${seq - 1} where seq = ${seq}`)
      await backend.query('delete from audit_checkpoints')
      const broken = await firstBroken(store)
      assert.equal(broken.seq, 3)
      assert.match(broken.reason, /deleted/)
    })

    maybe(
      'catches a row inserted in the middle at its seq, even with a correct hash of its own',
      async () => {
        const store = await written()
        for (let seq = 10; seq >= 5; seq--)
          await backend.query(`update audit_entries set seq = ${seq + 1} where seq = ${seq}`)
        const [four] = await store.range('gw-1', 4, 1)
        const { entryHash } = await import('./entry.ts')
        const forged = { ...event(99), instance: 'gw-1', seq: 5, prevHash: four!.hash }
        const hash = entryHash(forged)
        await backend.query(
          `insert into audit_entries (instance, seq, time, request_id, correlation_id, principal, kind, target, action,
          decision, rule, status, duration_ms, prev_hash, hash)
         values ('gw-1', 5, ${forged.time}, 'forged', 'forged', 'agent:a0', 'call', 'tool:gmail', 'send', 'allow',
          'r/0', 200, 1, '${four!.hash}', '${hash}')`,
        )
        const broken = await firstBroken(store)
        // The forged row's own hash was computed with requestId req-99; the stored one says 'forged'.
        assert.equal(broken.seq, 5)
      },
    )

    maybe('catches two rows swapped at the first of them', async () => {
      const store = await written()
      await backend.query('update audit_entries set seq = 1000 where seq = 6')
      await backend.query('update audit_entries set seq = 6 where seq = 7')
      await backend.query('update audit_entries set seq = 7 where seq = 1000')
      const broken = await firstBroken(store)
      assert.equal(broken.seq, 6)
      assert.match(broken.reason, /reordered/)
    })

    maybe(
      'catches a chain recomputed after an edit through the signed checkpoint it contradicts',
      async () => {
        const store = await written()
        const { chain } = await import('./entry.ts')
        const entries = await store.range('gw-1', 1, 100)
        const rewritten = chain(
          'gw-1',
          { seq: 5, hash: entries[4]!.hash },
          entries.slice(5).map((e, i) => (i === 0 ? { ...e, principal: 'agent:forged' } : e)),
        )
        for (const e of rewritten)
          await backend.query(
            `update audit_entries set principal = '${e.principal}', prev_hash = '${e.prevHash}', hash = '${e.hash}' where seq = ${e.seq}`,
          )
        const broken = await firstBroken(store)
        assert.equal(broken.seq, 5, 'reported from the entry after the last checkpoint that still holds')
        assert.match(broken.reason, /signed checkpoint at seq 8/)
      },
    )

    maybe('catches entries cut from the end through the checkpoint that covered them', async () => {
      const store = await written()
      await backend.query('delete from audit_entries where seq > 8')
      const broken = await firstBroken(store)
      assert.equal(broken.seq, 9)
      assert.match(broken.reason, /missing: a signed checkpoint covers seq 10/)
    })

    maybe(
      'catches a tampered checkpoint signature and a checkpoint re-signed with a key of its own',
      async () => {
        const store = await written()
        const [cp] = await store.checkpoints('gw-1')
        const bad = `${cp!.signature.slice(0, -4)}AAAA`
        await backend.query(`update audit_checkpoints set signature = '${bad}' where seq = 4`)
        let broken = await firstBroken(store)
        assert.equal(broken.seq, 4)
        assert.match(broken.reason, /signature does not verify/)

        const intruder = await testSigningKey()
        const forged = signCheckpoint({ instance: 'gw-1', seq: 4, hash: cp!.hash, time: cp!.time }, intruder)
        await backend.query(
          `update audit_checkpoints set kid = '${intruder.kid}', signature = '${forged.signature}' where seq = 4`,
        )
        await store.addKey({ kid: intruder.kid, x: 'AAAA', attestation: 'v1.AAAA.AAAA', createdAt: 0 })
        broken = await firstBroken(store)
        assert.equal(broken.seq, 4)
        assert.match(broken.reason, /not attested/)
      },
    )

    maybe('verifies from --since on, ignoring what comes before', async () => {
      const store = await written()
      await backend.query(`update audit_entries set principal = 'x' where seq = 2`)
      const report = await verifyLedger(store, masterKeys, { since: 5 })
      assert.equal(report.ok, true)
      assert.equal(report.chains[0]!.firstSeq, 5)
      assert.equal((await verifyLedger(store, masterKeys, { since: 1 })).chains[0]!.broken?.seq, 2)
    })

    maybe(
      'prunes entries past audit.retainDays up to a signed checkpoint, and what remains verifies',
      async () => {
        let clock = Date.parse('2026-01-01T00:00:00Z')
        const { ledger, store } = await open({ retainDays: 30 }, () => clock)
        for (let n = 1; n <= 6; n++) {
          ledger.append(event(n, clock))
          await ledger.flush()
        }
        clock += 40 * 86_400_000
        for (let n = 7; n <= 9; n++) ledger.append(event(n, clock))
        await ledger.flush()
        assert.equal(await ledger.prune(), 4, 'through the checkpoint at 4, signed 40 days ago')
        const report = await verifyLedger(store, masterKeys)
        assert.equal(report.ok, true, JSON.stringify(report))
        assert.equal(report.chains[0]!.firstSeq, 5)
        // Removing the anchoring checkpoint leaves a chain that starts nowhere.
        await backend.query('delete from audit_checkpoints where seq = 4')
        assert.equal((await firstBroken(store)).seq, 4)
      },
    )

    maybe(
      'commits a sync entry before resolving, and reports a store that refuses writes until it recovers',
      async () => {
        const { ledger, store } = await open()
        await ledger.commit(event(1))
        assert.equal((await store.range('gw-1', 1, 10)).length, 1)
        // Without an event: a barrier for what was queued before it.
        ledger.append(event(5))
        await ledger.commit()
        assert.equal((await store.range('gw-1', 1, 10)).length, 2)
        await refuseWrites(backend, true)
        await assert.rejects(ledger.commit(event(2)))
        ledger.append(event(3))
        await ledger.flush()
        assert.match(
          ledger.problem() ?? '',
          /cannot be written: .*audit store refuses writes.*1 entries waiting/,
        )
        await refuseWrites(backend, false)
        await ledger.flush()
        assert.equal(ledger.problem(), undefined)
        assert.deepEqual(
          (await store.range('gw-1', 1, 10)).map((e) => e.requestId),
          ['req-1', 'req-5', 'req-3'],
        )
      },
    )
  })
}

/** Make the entries table refuse inserts (as a full disk or a revoked grant would), or stop. */
export async function refuseWrites(backend: LedgerBackend, on: boolean): Promise<void> {
  if (backend.kind === 'sqlite') {
    await backend.query(
      on
        ? `create trigger refuse_audit before insert on audit_entries begin select raise(fail, 'audit store refuses writes'); end`
        : 'drop trigger refuse_audit',
    )
    return
  }
  if (on) {
    await backend.query(
      `create function refuse_audit() returns trigger language plpgsql as $$ begin raise exception 'audit store refuses writes'; end $$`,
    )
    await backend.query(
      'create trigger refuse_audit before insert on audit_entries execute function refuse_audit()',
    )
  } else {
    await backend.query('drop trigger refuse_audit on audit_entries')
    await backend.query('drop function refuse_audit()')
  }
}
