/**
 * The audit ledger on a running gateway: what is recorded (calls, denials, tokens, admin changes),
 * what never is (tokens, secret values), the query API with its filters, paging and refusals,
 * the NDJSON export, verification through the API and `4runr audit verify` after tampering with
 * the SQLite file directly, `4runr audit tail`, and an unwritable store refusing calls with 503 or
 * serving on with `audit.onFailure: continue`, with /ready saying why.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import Database from 'better-sqlite3'
import { assertionFor, jwtBearer, type TestAgentKey } from '../support/agents.ts'
import { startTestGateway, type TestGateway, testAdminKey } from '../support/gateway.ts'
import { cli, root, runCliAsync, tsx } from '../support/process.ts'
import { expectError } from '../support/tools.ts'
import { startUpstream, type TestUpstream } from '../support/upstream.ts'

interface Entry {
  seq: number
  time: string
  instance: string
  requestId: string | null
  principal: string | null
  kind: string
  target: string | null
  action: string | null
  decision: string | null
  rule: string | null
  status: number
  hash: string
}

const json = (method: string, body?: unknown): RequestInit => ({
  method,
  headers: { 'content-type': 'application/json' },
  body: body === undefined ? undefined : JSON.stringify(body),
})

function config(upstreamUrl: string, audit: Record<string, unknown> = {}) {
  return {
    audit: { instance: 'e2e', checkpointEvery: 5, ...audit },
    systems: { orders: { kind: 'http', url: upstreamUrl } },
    channels: [
      {
        name: 'orders',
        prefix: '/orders',
        system: 'orders',
        rules: [
          { path: '/open/*', public: true, audit: true },
          { path: '/quiet/*', public: true },
          { path: '*' },
        ],
      },
    ],
    policies: [
      {
        name: 'readers',
        agents: { labels: { team: 'growth' } },
        allow: [{ name: 'read', channel: 'orders', methods: ['GET', 'DELETE'] }],
        deny: [{ name: 'no-delete', channel: 'orders', methods: ['DELETE'] }],
      },
    ],
  }
}

async function entries(gw: TestGateway, query = ''): Promise<{ entries: Entry[]; next: string | null }> {
  const res = await gw.admin(`/v1/audit${query}`)
  assert.equal(res.status, 200, await res.clone().text())
  return (await res.json()) as { entries: Entry[]; next: string | null }
}

/** Wait for the batch window so what was sent is written. */
const settle = () => new Promise((r) => setTimeout(r, 120))

describe('the audit ledger on a running gateway', () => {
  let upstream: TestUpstream
  let gw: TestGateway
  let agentId = ''
  let token = ''
  const secretValue = `canary-secret-${randomBytes(9).toString('base64url')}`

  before(async () => {
    upstream = await startUpstream()
    gw = await startTestGateway(config(upstream.url))
    const created = await gw.admin('/v1/agents', json('POST', { name: 'reader', labels: { team: 'growth' } }))
    agentId = ((await created.json()) as { id: string }).id
    const issued = await gw.admin(`/v1/agents/${agentId}/tokens`, json('POST', { scope: 'channel:orders' }))
    token = ((await issued.json()) as { access_token: string }).access_token
    assert.equal((await gw.admin('/v1/secrets/serpapi_key', json('PUT', { value: secretValue }))).status, 204)
    const call = (method: string, id: string, bearer = token) =>
      fetch(`${gw.publicUrl}/orders/items?q=${secretValue}`, {
        method,
        headers: { authorization: `Bearer ${bearer}`, 'x-request-id': id },
      })
    assert.equal((await call('GET', 'allowed-1')).status, 200)
    assert.equal((await call('DELETE', 'denied-1')).status, 403)
    assert.equal((await call('GET', 'unauthenticated-1', 'not-a-token')).status, 401)
    // The tool route crosses the same record stage: this token's scope has no tool in it.
    const tool = await fetch(`${gw.publicUrl}/v1/tools/serpapi/search`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${token}`,
        'content-type': 'application/json',
        'x-request-id': 'tool-1',
      },
      body: JSON.stringify({ q: secretValue }),
    })
    assert.equal(tool.status, 403)
    // Not audited: nobody proven, nothing decided, nothing refused.
    assert.equal((await fetch(`${gw.publicUrl}/nowhere`)).status, 404)
    await settle()
  })
  after(async () => {
    await gw.stop()
    await upstream.close()
  })

  it('records authenticated calls, denials, token issuance and admin changes, secrets by name', async () => {
    const all = (await entries(gw, '?order=asc')).entries
    const shape = all.map((e) => [e.kind, e.principal, e.target, e.action, e.decision, e.status])
    assert.deepEqual(shape, [
      ['admin', 'admin', 'agents', 'create', 'allow', 201],
      ['token', `agent:${agentId}`, all[1]!.target, 'issue:admin', 'allow', 200],
      ['token', 'admin', `agent:${agentId}`, 'issue:admin', 'allow', 200],
      ['admin', 'admin', 'secret:serpapi_key', 'put', 'allow', 204],
      ['call', `agent:${agentId}`, 'channel:orders', 'GET /items', 'allow', 200],
      ['call', `agent:${agentId}`, 'channel:orders', 'DELETE /items', 'deny', 403],
      ['call', null, 'channel:orders', 'GET /items', 'deny', 401],
      ['call', `agent:${agentId}`, 'tool:serpapi', 'search', 'deny', 403],
    ])
    const denied = all.find((e) => e.requestId === 'denied-1')!
    assert.equal(denied.rule, 'readers/no-delete')
    assert.deepEqual(
      all.map((e) => e.seq),
      [1, 2, 3, 4, 5, 6, 7, 8],
    )
  })

  it('never writes a token, a secret value, a query string or an Authorization value into the ledger', async () => {
    const res = await gw.admin('/v1/audit/export')
    const text = await res.text()
    assert.ok(!text.includes(token), 'the access token is in the ledger')
    assert.ok(!text.includes(token.split('.')[2]!), 'the token signature is in the ledger')
    assert.ok(!text.includes(secretValue), 'the secret value is in the ledger')
    assert.ok(!text.includes(testAdminKey), 'the admin key is in the ledger')
    assert.ok(!text.includes('not-a-token'), 'a presented credential is in the ledger')
    const db = new Database(join(gw.dir, '4runr.db'), { readonly: true })
    try {
      const rows = JSON.stringify(db.prepare('select * from audit_entries').all())
      assert.ok(!rows.includes(token) && !rows.includes(secretValue))
    } finally {
      db.close()
    }
  })

  it('filters by principal, target, decision, status class and time range, and pages with a cursor', async () => {
    const principal = `agent:${agentId}`
    const mine = await entries(gw, `?principal=${encodeURIComponent(principal)}&order=asc`)
    assert.deepEqual(
      mine.entries.map((e) => e.requestId ?? e.kind),
      ['token', 'allowed-1', 'denied-1', 'tool-1'],
    )
    const denials = await entries(gw, '?decision=deny&order=asc')
    assert.deepEqual(
      denials.entries.map((e) => e.status),
      [403, 401, 403],
    )
    assert.deepEqual(
      (await entries(gw, '?status=4xx&target=channel:orders')).entries.map((e) => e.status),
      [401, 403],
    )
    assert.equal((await entries(gw, '?kind=admin')).entries.length, 2)
    const all = (await entries(gw, '?order=asc')).entries
    const from = all[4]!.time
    const to = new Date(Date.parse(all.at(-1)!.time) + 1).toISOString()
    assert.ok((await entries(gw, `?from=${from}&to=${to}`)).entries.length >= 3)
    assert.equal((await entries(gw, '?to=2000-01-01T00:00:00Z')).entries.length, 0)

    const seen: number[] = []
    let cursor: string | null = ''
    while (cursor !== null) {
      const page = await entries(gw, `?limit=3${cursor === '' ? '' : `&cursor=${cursor}`}`)
      assert.ok(page.entries.length <= 3)
      seen.push(...page.entries.map((e) => e.seq))
      cursor = page.next
    }
    assert.deepEqual(seen, all.map((e) => e.seq).reverse(), 'newest first, every entry once')
  })

  it('refuses bad filters with 400 and a problem for each', async () => {
    const error = await expectError(
      await gw.admin('/v1/audit?status=abc&decision=maybe&from=yesterday&limit=0&cursor=zz&color=red'),
      400,
      'bad_request',
    )
    const paths = ((error.details?.['problems'] ?? []) as { path: string }[]).map((p) => p.path).sort()
    assert.deepEqual(paths, ['color', 'cursor', 'decision', 'from', 'limit', 'status'])
    await expectError(await gw.admin('/v1/audit?status=200&status=403'), 400, 'bad_request')
    await expectError(await gw.admin('/v1/audit?from=2026-02-01&to=2026-01-01'), 400, 'bad_request')
    await expectError(await gw.admin('/v1/audit/export?kind=everything'), 400, 'bad_request')
    await expectError(await gw.admin('/v1/audit/verify?since=-3'), 400, 'bad_request')
    await expectError(
      await gw.admin('/v1/audit', { headers: { authorization: 'Bearer wrong-key-0123456789' } }),
      401,
      'unauthenticated',
    )
  })

  it('exports the ledger as NDJSON, oldest first, one entry per line', async () => {
    const res = await gw.admin('/v1/audit/export?limit=2')
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type') ?? '', /application\/x-ndjson/)
    const lines = (await res.text()).trimEnd().split('\n')
    const parsed = lines.map((l) => JSON.parse(l) as Entry)
    assert.ok(parsed.length >= 7)
    assert.deepEqual(
      parsed.map((e) => e.seq),
      parsed.map((_, i) => i + 1),
    )
    assert.ok(parsed.every((e) => /^[0-9a-f]{64}$/.test(e.hash)))
  })

  it('verifies the chain through the API and the CLI, and names the first broken entry after tampering', async () => {
    const res = await gw.admin('/v1/audit/verify')
    const report = (await res.json()) as { ok: boolean; chains: Array<{ instance: string; ok: boolean }> }
    assert.equal(report.ok, true, JSON.stringify(report))
    const env = { RUNR_ADMIN_KEY: testAdminKey, RUNR_ADMIN_URL: gw.adminUrl }
    const ok = await runCliAsync(['audit', 'verify'], env)
    assert.equal(ok.status, 0, ok.stderr)
    assert.match(ok.stdout, /^OK {6}e2e: entries 1–\d+, \d+ checkpoints/)

    const db = new Database(join(gw.dir, '4runr.db'))
    try {
      db.prepare("update audit_entries set status = 200 where instance = 'e2e' and seq = 6").run()
    } finally {
      db.close()
    }
    const broken = await runCliAsync(['audit', 'verify'], env)
    assert.equal(broken.status, 1)
    assert.match(broken.stdout, /BROKEN {2}e2e: first broken entry 6: entry 6 does not match its hash/)
    const since = await runCliAsync(['audit', 'verify', '--since', '7', '--json'], env)
    assert.equal(since.status, 0, since.stdout)
    assert.equal((JSON.parse(since.stdout) as { ok: boolean }).ok, true)
    const bad = await runCliAsync(['audit', 'verify', '--since', 'x'], env)
    assert.equal(bad.status, 1)
    assert.match(bad.stderr, /--since must be a sequence number/)
  })

  it('follows new entries with 4runr audit tail', async () => {
    const child = spawn(process.execPath, ['--import', tsx, cli, 'audit', 'tail', '--interval', '200'], {
      cwd: root,
      env: { ...process.env, RUNR_ADMIN_KEY: testAdminKey, RUNR_ADMIN_URL: gw.adminUrl },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    try {
      const seen = (pattern: RegExp) =>
        new Promise<void>((done, fail) => {
          const timer = setTimeout(() => fail(new Error(`tail printed no ${pattern}:\n${out}`)), 15_000)
          const check = () => {
            if (pattern.test(out)) {
              clearTimeout(timer)
              done()
            }
          }
          child.stdout!.on('data', (chunk: Buffer) => {
            out += chunk.toString('utf8')
            check()
          })
          check()
        })
      await seen(/channel:orders GET \/items allow \(readers\/read\) 200/)
      await fetch(`${gw.publicUrl}/orders/tail-check`, { headers: { authorization: `Bearer ${token}` } })
      await seen(/channel:orders GET \/tail-check allow/)
    } finally {
      child.kill('SIGTERM')
    }
  })

  it('records policy, key, revocation and secret changes by name, and refused admin requests', async () => {
    const policy = { agents: { all: true }, allow: [{ channel: 'orders', methods: ['GET'] }] }
    assert.equal((await gw.admin('/v1/policies/extra', json('PUT', policy))).status, 200)
    assert.equal((await gw.admin('/v1/keys/rotate', { method: 'POST' })).status, 200)
    assert.equal((await gw.admin('/v1/revocations', json('POST', { agentId, reason: 'test' }))).status, 201)
    assert.equal((await gw.admin('/v1/secrets/serpapi_key', { method: 'DELETE' })).status, 204)
    assert.equal(
      (await gw.admin('/v1/policies/evaluate', json('POST', { agent: agentId, channel: 'orders' }))).status,
      200,
    )
    await settle()
    // Newest first: the last four admin entries, the evaluate call (a read) not among them.
    const recent = (await entries(gw, '?principal=admin&limit=4')).entries.reverse()
    assert.deepEqual(
      recent.map((e) => [e.kind, e.target, e.action, e.status]),
      [
        ['admin', 'policy:extra', 'put', 200],
        ['admin', 'signing-keys', 'rotate', 200],
        ['token', `agent:${agentId}`, 'revoke', 201],
        ['admin', 'secret:serpapi_key', 'delete', 204],
      ],
    )
    // Public paths: recorded only where the rule says audit: true.
    await (
      await fetch(`${gw.publicUrl}/orders/open/a`, { headers: { 'x-request-id': 'open-1' } })
    ).arrayBuffer()
    await (
      await fetch(`${gw.publicUrl}/orders/quiet/a`, { headers: { 'x-request-id': 'quiet-1' } })
    ).arrayBuffer()
    await settle()
    const [newest] = (await entries(gw, '?target=channel:orders&limit=1')).entries
    assert.deepEqual([newest!.requestId, newest!.principal, newest!.action], ['open-1', null, 'GET /open/a'])
    assert.ok(!(await (await gw.admin('/v1/audit/export')).text()).includes('quiet-1'))
    const denied = (await entries(gw, '?target=route:/v1/audit&decision=deny')).entries
    assert.ok(denied.length >= 1, 'the request with a wrong admin key is recorded')
    assert.equal(denied[0]!.principal, null)
  })
})

describe('an audit store that refuses writes', () => {
  let upstream: TestUpstream
  before(async () => {
    upstream = await startUpstream()
  })
  after(async () => upstream.close())

  const refuse = (gw: TestGateway, on: boolean) => {
    const db = new Database(join(gw.dir, '4runr.db'))
    try {
      db.exec(
        on
          ? "create trigger refuse_audit before insert on audit_entries begin select raise(fail, 'disk full (test)'); end"
          : 'drop trigger refuse_audit',
      )
    } finally {
      db.close()
    }
  }

  async function agentWithToken(gw: TestGateway): Promise<string> {
    const created = await gw.admin('/v1/agents', json('POST', { name: 'reader', labels: { team: 'growth' } }))
    const { id } = (await created.json()) as { id: string }
    const issued = await gw.admin(`/v1/agents/${id}/tokens`, json('POST', { scope: 'channel:orders' }))
    const token = ((await issued.json()) as { access_token: string }).access_token
    // Their entries are written before the store starts refusing.
    await settle()
    return token
  }

  it('refuses calls with 503 audit_unavailable by default, says why on /ready, and recovers', async () => {
    const gw = await startTestGateway(config(upstream.url))
    try {
      const token = await agentWithToken(gw)
      const call = () => fetch(`${gw.publicUrl}/orders/x`, { headers: { authorization: `Bearer ${token}` } })
      refuse(gw, true)
      // The batch holding this call's entry is the one that finds the store refusing.
      assert.equal((await call()).status, 200)
      await settle()
      const refused = await expectError(await call(), 503, 'audit_unavailable')
      assert.match(String(refused.details?.['reason']), /disk full \(test\)/)
      const ready = await expectError(await fetch(`${gw.publicUrl}/ready`), 503, 'not_ready')
      assert.match(JSON.stringify(ready.details), /the audit ledger cannot be written: disk full \(test\)/)
      // Admin changes are refused too; reading the ledger still works.
      await expectError(
        await gw.admin('/v1/agents', json('POST', { name: 'other' })),
        503,
        'audit_unavailable',
      )
      assert.equal((await gw.admin('/v1/audit')).status, 200)
      refuse(gw, false)
      // Retried within a second; then calls are served again.
      await new Promise((r) => setTimeout(r, 1300))
      assert.equal((await call()).status, 200)
      assert.equal((await fetch(`${gw.publicUrl}/ready`)).status, 200)
      const report = (await (await gw.admin('/v1/audit/verify')).json()) as { ok: boolean }
      assert.equal(report.ok, true)
    } finally {
      await gw.stop()
    }
  })

  it('keeps serving with audit.onFailure: continue, while /ready says the ledger is failing', async () => {
    const gw = await startTestGateway(config(upstream.url, { onFailure: 'continue' }))
    try {
      const token = await agentWithToken(gw)
      refuse(gw, true)
      const call = () => fetch(`${gw.publicUrl}/orders/x`, { headers: { authorization: `Bearer ${token}` } })
      assert.equal((await call()).status, 200)
      await settle()
      assert.equal((await call()).status, 200)
      const ready = await expectError(await fetch(`${gw.publicUrl}/ready`), 503, 'not_ready')
      assert.match(JSON.stringify(ready.details), /audit ledger cannot be written/)
      refuse(gw, false)
    } finally {
      await gw.stop()
    }
  })

  it('answers 503 instead of the result in sync mode when the entry cannot be committed', async () => {
    const gw = await startTestGateway(config(upstream.url, { durability: 'sync' }))
    try {
      // Committed before the answer: in the ledger the moment the client has it.
      const denied = await fetch(`${gw.publicUrl}/orders/x`, { headers: { 'x-request-id': 'sync-1' } })
      assert.equal(denied.status, 401)
      assert.equal((await entries(gw, '?decision=deny')).entries[0]?.requestId, 'sync-1')
      // A token is handed out only once its issuance is committed.
      const created = await gw.admin('/v1/agents', json('POST', { name: 'exchanger' }))
      const agent = (await created.json()) as TestAgentKey
      const exchange = async () =>
        fetch(`${gw.publicUrl}/v1/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ grant_type: jwtBearer, assertion: await assertionFor(agent, gw.issuer) }),
        })
      assert.equal((await exchange()).status, 200)
      const issued = (await entries(gw, `?kind=token&principal=agent:${agent.id}`)).entries
      assert.deepEqual(
        issued.map((e) => e.action),
        ['issue:jwt-bearer'],
      )
      refuse(gw, true)
      await expectError(await exchange(), 503, 'audit_unavailable')
      await expectError(await fetch(`${gw.publicUrl}/orders/x`), 503, 'audit_unavailable')
      await expectError(
        await gw.admin('/v1/agents', json('POST', { name: 'unrecorded' })),
        503,
        'audit_unavailable',
      )
      refuse(gw, false)
    } finally {
      await gw.stop()
    }
  })

  it('writes a proxied call’s sync entry that failed to commit once the store takes writes again', async () => {
    const gw = await startTestGateway(config(upstream.url, { durability: 'sync', onFailure: 'continue' }))
    try {
      const token = await agentWithToken(gw)
      refuse(gw, true)
      // A proxied answer is not held for its entry: served, and its entry must not be lost.
      const served = await fetch(`${gw.publicUrl}/orders/x`, {
        headers: { authorization: `Bearer ${token}`, 'x-request-id': 'unheld-1' },
      })
      assert.equal(served.status, 200)
      await served.arrayBuffer()
      await settle()
      refuse(gw, false)
      // Retried within a second of the store coming back.
      await new Promise((r) => setTimeout(r, 1300))
      const found = (await entries(gw, '?target=channel:orders')).entries.map((e) => e.requestId)
      assert.ok(found.includes('unheld-1'), `unheld-1 missing from ${JSON.stringify(found)}`)
      const report = (await (await gw.admin('/v1/audit/verify')).json()) as { ok: boolean }
      assert.equal(report.ok, true)
    } finally {
      await gw.stop()
    }
  })
})

describe('audit.enabled: false', () => {
  it('writes no ledger and serves no audit API', async () => {
    const upstream = await startUpstream()
    const gw = await startTestGateway(config(upstream.url, { enabled: false }))
    try {
      assert.equal((await fetch(`${gw.publicUrl}/orders/x`)).status, 401)
      await settle()
      await expectError(await gw.admin('/v1/audit'), 404, 'not_found')
      const db = new Database(join(gw.dir, '4runr.db'), { readonly: true })
      try {
        assert.deepEqual(db.prepare('select count(*) as n from audit_entries').get(), { n: 0 })
      } finally {
        db.close()
      }
    } finally {
      await gw.stop()
      await upstream.close()
    }
  })
})
