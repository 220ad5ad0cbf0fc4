/**
 * The audit ledger of a cluster on Postgres: two gateways on one database each write their own
 * chain, each chain verifies alone, one instance's ledger API sees both, and tampering with one
 * chain's rows directly in Postgres breaks that chain only.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import postgres from 'postgres'
import { startTestGateway, type TestGateway } from '../support/gateway.ts'
import { requireService, serviceUrls } from '../support/services.ts'
import { startUpstream, type TestUpstream } from '../support/upstream.ts'

interface Report {
  ok: boolean
  chains: Array<{ instance: string; ok: boolean; lastSeq: number; broken?: { seq: number; reason: string } }>
}

describe('the audit ledger of a two-instance cluster on Postgres', () => {
  const schema = `runr_audit_cluster_${randomBytes(5).toString('hex')}`
  let available = false
  let upstream: TestUpstream
  const gateways: TestGateway[] = []

  before(async () => {
    available = await requireService('postgres', serviceUrls.postgres)
    if (!available) return
    upstream = await startUpstream()
    const env = { RUNR_MASTER_KEY: randomBytes(32).toString('base64') }
    for (const instance of ['gw-a', 'gw-b']) {
      gateways.push(
        await startTestGateway(
          {
            store: { kind: 'postgres', url: serviceUrls.postgres, schema },
            audit: { instance, checkpointEvery: 3 },
            systems: { up: { kind: 'http', url: upstream.url } },
            channels: [{ name: 'orders', prefix: '/orders', system: 'up', rules: [{ path: '*' }] }],
          },
          { env },
        ),
      )
    }
  })
  after(async () => {
    if (!available) return
    for (const gw of gateways) await gw.stop()
    await upstream.close()
    const sql = postgres(serviceUrls.postgres, { max: 1, onnotice: () => {} })
    await sql.unsafe(`drop schema if exists "${schema}" cascade`)
    await sql.end()
  })

  const verify = async (gw: TestGateway): Promise<Report> =>
    (await (await gw.admin('/v1/audit/verify')).json()) as Report

  it('keeps one chain per instance, each verifiable alone, and finds tampering in the chain it hit', async (t) => {
    if (!available) return t.skip('postgres not running')
    const [a, b] = gateways as [TestGateway, TestGateway]
    for (let i = 0; i < 5; i++) {
      for (const gw of [a, b]) {
        const res = await fetch(`${gw.publicUrl}/orders/x`)
        assert.equal(res.status, 401)
        await res.arrayBuffer()
      }
    }
    await new Promise((r) => setTimeout(r, 150))
    const report = await verify(a)
    assert.equal(report.ok, true, JSON.stringify(report))
    assert.deepEqual(
      report.chains.map((c) => [c.instance, c.lastSeq]),
      [
        ['gw-a', 5],
        ['gw-b', 5],
      ],
    )
    const onlyB = (await (await a.admin('/v1/audit?instance=gw-b')).json()) as {
      entries: Array<{ instance: string }>
    }
    assert.equal(onlyB.entries.length, 5)
    assert.ok(onlyB.entries.every((e) => e.instance === 'gw-b'))

    const sql = postgres(serviceUrls.postgres, { max: 1, onnotice: () => {} })
    try {
      await sql.unsafe(
        `update "${schema}".audit_entries set principal = 'admin' where instance = 'gw-b' and seq = 2`,
      )
    } finally {
      await sql.end()
    }
    const after = await verify(b)
    assert.equal(after.ok, false)
    const [chainA, chainB] = after.chains
    assert.equal(chainA!.ok, true, 'the other instance’s chain is untouched')
    assert.equal(chainB!.broken?.seq, 2)
  })
})
