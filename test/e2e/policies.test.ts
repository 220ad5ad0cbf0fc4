/**
 * Policies end to end on a real gateway: the admin API (versioned puts, history, read-only config
 * policies, refusals with paths), enforcement on channel calls (default deny, deny wins, quotas,
 * the loop guard, approvals), token issuance refusing ungrantable scopes, the explain endpoint and
 * `4runr policy test`, and quota durability across a restart of the embedded mode.
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { stringify } from 'yaml'
import { startTestGateway, type TestGateway, testAdminKey } from '../support/gateway.ts'
import { runCliAsync, startGatewayProcess } from '../support/process.ts'
import { startUpstream, type TestUpstream } from '../support/upstream.ts'

type ErrorBody = {
  error: { code: string; message: string; status: number; details?: Record<string, unknown> }
}

const orders = (upstreamUrl: string) => ({
  systems: { orders: { kind: 'http', url: upstreamUrl } },
  channels: [{ name: 'orders', prefix: '/orders', system: 'orders', rules: [{ path: '*' }] }],
})

const configPolicies = [
  {
    name: 'readers',
    agents: { labels: { team: 'growth' } },
    allow: [
      { name: 'limited', channel: 'orders', paths: ['/limited/*'], quota: { limit: 2, period: '1h' } },
      { name: 'looping', channel: 'orders', paths: ['/search'], maxRepeats: { count: 2, period: '1h' } },
      { name: 'approve', channel: 'orders', paths: ['/refunds/*'], methods: ['POST'], approval: 'required' },
      { name: 'read', channel: 'orders', methods: ['GET', 'DELETE'] },
    ],
    deny: [{ name: 'no-delete', channel: 'orders', methods: ['DELETE'] }],
  },
]

describe('policies on a running gateway', () => {
  let upstream: TestUpstream
  let gw: TestGateway

  before(async () => {
    upstream = await startUpstream()
    gw = await startTestGateway({ ...orders(upstream.url), policies: configPolicies })
  })
  after(async () => {
    await gw.stop()
    await upstream.close()
  })

  const json = (method: string, body?: unknown): RequestInit => ({
    method,
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  })

  async function agent(name: string, labels: Record<string, string> = {}): Promise<string> {
    const res = await gw.admin('/v1/agents', json('POST', { name, labels }))
    assert.equal(res.status, 201)
    return ((await res.json()) as { id: string }).id
  }

  async function token(agentId: string, scope = 'channel:orders'): Promise<Response> {
    return gw.admin(`/v1/agents/${agentId}/tokens`, json('POST', { scope }))
  }

  async function tokenFor(agentId: string, scope = 'channel:orders'): Promise<string> {
    const res = await token(agentId, scope)
    assert.equal(res.status, 200, await res.clone().text())
    return ((await res.json()) as { access_token: string }).access_token
  }

  const call = (bearer: string, path: string, init: RequestInit = {}) =>
    fetch(`${gw.publicUrl}/orders${path}`, {
      ...init,
      headers: { authorization: `Bearer ${bearer}`, ...(init.headers as Record<string, string>) },
    })

  it('lists the config file’s policies as read-only', async () => {
    const listed = (await (await gw.admin('/v1/policies')).json()) as {
      version: string
      policies: { name: string; source: string }[]
    }
    assert.deepEqual(
      listed.policies.map((p) => [p.name, p.source]),
      [['readers', 'config']],
    )
    const put = await gw.admin(
      '/v1/policies/readers',
      json('PUT', { agents: { all: true }, allow: [{ tool: 'x' }] }),
    )
    assert.equal(put.status, 409)
    assert.equal(((await put.json()) as ErrorBody).error.details?.['reason'], 'config_policy')
    assert.equal((await gw.admin('/v1/policies/readers', { method: 'DELETE' })).status, 409)
  })

  it('refuses an agent call that no policy allows, then allows it once a policy is put, and versions it', async () => {
    const id = await agent('api-agent')
    // No policy can grant the agent channel:orders yet: issuance refuses the scope.
    const refused = await token(id)
    assert.equal(refused.status, 400)
    assert.equal(((await refused.json()) as ErrorBody).error.code, 'invalid_scope')

    const v1 = await gw.admin(
      '/v1/policies/api-agents',
      json('PUT', { agents: { names: ['api-agent'] }, allow: [{ channel: 'orders', methods: ['GET'] }] }),
    )
    assert.equal(v1.status, 200, await v1.clone().text())
    assert.equal(((await v1.json()) as { version: number; source: string }).version, 1)
    const bearer = await tokenFor(id)
    assert.equal((await call(bearer, '/x')).status, 200)
    const post = await call(bearer, '/x', { method: 'POST', body: '{}' })
    assert.equal(post.status, 403)
    const denied = (await post.json()) as ErrorBody
    assert.equal(denied.error.code, 'policy_denied')
    assert.equal(denied.error.details?.['reason'], 'no_matching_rule')

    const v2 = await gw.admin(
      '/v1/policies/api-agents?expectedVersion=1',
      json('PUT', {
        agents: { names: ['api-agent'] },
        allow: [{ channel: 'orders', methods: ['GET', 'POST'] }],
      }),
    )
    assert.equal(((await v2.json()) as { version: number }).version, 2)
    assert.equal((await call(bearer, '/x', { method: 'POST', body: '{}' })).status, 200)
    const stale = await gw.admin(
      '/v1/policies/api-agents?expectedVersion=1',
      json('PUT', { agents: { names: ['api-agent'] }, allow: [{ channel: 'orders' }] }),
    )
    assert.equal(stale.status, 409)
    const history = (await (await gw.admin('/v1/policies/api-agents/history')).json()) as {
      versions: { version: number }[]
    }
    assert.deepEqual(
      history.versions.map((v) => v.version),
      [2, 1],
    )
    assert.equal((await gw.admin('/v1/policies/api-agents', { method: 'DELETE' })).status, 204)
    assert.equal((await call(bearer, '/x')).status, 403)
    assert.equal((await gw.admin('/v1/policies/api-agents', { method: 'DELETE' })).status, 404)
  })

  it('refuses an invalid policy with 400 and every problem with its path', async () => {
    const res = await gw.admin(
      '/v1/policies/bad',
      json('PUT', {
        agents: { all: true },
        allow: [
          { tool: 'serpapi', when: 'args.num <=' },
          { tool: 'openai', timeWindows: [{ tz: 'Nowhere/Else', from: '9am' }] },
          { channel: 'orders', paths: ['no-slash'] },
        ],
      }),
    )
    assert.equal(res.status, 400)
    const body = (await res.json()) as ErrorBody
    assert.equal(body.error.code, 'bad_request')
    const paths = (body.error.details!['problems'] as { path: string }[]).map((p) => p.path)
    assert.ok(paths.includes('allow[0].when'), JSON.stringify(paths))
    assert.ok(
      paths.some((p) => p.startsWith('allow[1].timeWindows[0]')),
      JSON.stringify(paths),
    )
    assert.ok(paths.includes('allow[2].paths[0]'), JSON.stringify(paths))
    const shape = await gw.admin('/v1/policies/bad', json('PUT', { agents: { all: 'yes' }, allow: 'none' }))
    assert.equal(shape.status, 400)
    const shapePaths = ((await shape.json()) as ErrorBody).error.details?.['problems'] as { path: string }[]
    assert.ok(
      shapePaths.some((p) => p.path === 'agents.all'),
      JSON.stringify(shapePaths),
    )
    assert.equal((await gw.admin('/v1/policies/bad')).status, 404, 'nothing was stored')
    const notJson = await gw.admin('/v1/policies/bad', {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: '{"agents":',
    })
    assert.equal(notJson.status, 400)
  })

  it('lets a matching deny rule win over an allow rule', async () => {
    const bearer = await tokenFor(await agent('deleter', { team: 'growth' }))
    const res = await call(bearer, '/o/1', { method: 'DELETE' })
    assert.equal(res.status, 403)
    const body = (await res.json()) as ErrorBody
    assert.equal(body.error.details?.['reason'], 'denied_by_rule')
    assert.equal(body.error.details?.['rule'], 'readers/no-delete')
    assert.equal((await call(bearer, '/o/1')).status, 200)
    // The request log names the decision and the deciding rule.
    const lines = gw.logs.filter((l) => l['msg'] === 'request' && l['path'] === '/orders/o/1')
    const deny = lines.find((l) => l['status'] === 403)!
    assert.equal(deny['decision'], 'deny')
    assert.equal(deny['policyRule'], 'readers/no-delete')
    const allowed = lines.find((l) => l['status'] === 200)!
    assert.equal(allowed['decision'], 'allow')
    assert.equal(allowed['policyRule'], 'readers/read')
  })

  it('counts a quota per agent and refuses past it with 429, Retry-After and the reset time', async () => {
    const a = await tokenFor(await agent('quota-a', { team: 'growth' }))
    const b = await tokenFor(await agent('quota-b', { team: 'growth' }))
    assert.equal((await call(a, '/limited/1')).status, 200)
    assert.equal((await call(a, '/limited/2')).status, 200)
    const refused = await call(a, '/limited/3')
    assert.equal(refused.status, 429)
    assert.ok(Number(refused.headers.get('retry-after')) >= 1)
    const body = (await refused.json()) as ErrorBody
    assert.equal(body.error.code, 'quota_exceeded')
    assert.match(String(body.error.details?.['resetAt']), /^\d{4}-\d\d-\d\dT\d\d:00:00\.000Z$/)
    assert.equal((await call(b, '/limited/1')).status, 200, 'another agent has its own count')
  })

  it('stops an agent repeating the same call past maxRepeats', async () => {
    const bearer = await tokenFor(await agent('looper', { team: 'growth' }))
    assert.equal((await call(bearer, '/search?q=same')).status, 200)
    assert.equal((await call(bearer, '/search?q=same')).status, 200)
    const third = await call(bearer, '/search?q=same')
    assert.equal(third.status, 429)
    assert.equal(((await third.json()) as ErrorBody).error.details?.['reason'], 'repeat_limit')
    assert.equal((await call(bearer, '/search?q=other')).status, 200)
  })

  it('parks a call for approval; the operator approves; the replay runs once', async () => {
    const id = await agent('refunder', { team: 'growth' })
    const bearer = await tokenFor(id)
    const other = await tokenFor(await agent('bystander', { team: 'growth' }))
    const seen = upstream.requests.length
    const parked = await call(bearer, '/refunds/7', { method: 'POST', body: '{"amount":5}' })
    assert.equal(parked.status, 202)
    const { approvalId, status } = (await parked.json()) as { approvalId: string; status: string }
    assert.equal(status, 'pending')
    assert.equal(upstream.requests.length, seen, 'nothing reached the upstream')

    const poll = await fetch(`${gw.publicUrl}/v1/approvals/${approvalId}`, {
      headers: { authorization: `Bearer ${bearer}` },
    })
    assert.equal(((await poll.json()) as { status: string }).status, 'pending')
    const foreign = await fetch(`${gw.publicUrl}/v1/approvals/${approvalId}`, {
      headers: { authorization: `Bearer ${other}` },
    })
    assert.equal(foreign.status, 404)
    assert.equal((await fetch(`${gw.publicUrl}/v1/approvals/${approvalId}`)).status, 401)

    const pending = (await (await gw.admin('/v1/approvals?status=pending')).json()) as {
      approvals: { id: string }[]
    }
    assert.ok(pending.approvals.some((a) => a.id === approvalId))
    const bad = await gw.admin(`/v1/approvals/${approvalId}`, json('POST', { decision: 'maybe' }))
    assert.equal(bad.status, 400)
    const approved = await gw.admin(
      `/v1/approvals/${approvalId}`,
      json('POST', { decision: 'approve', note: 'ok' }),
    )
    assert.equal(approved.status, 200)
    assert.equal(((await approved.json()) as { status: string }).status, 'approved')
    const twiceDecided = await gw.admin(`/v1/approvals/${approvalId}`, json('POST', { decision: 'reject' }))
    assert.equal(twiceDecided.status, 409)

    const replay = () =>
      call(bearer, '/refunds/7', {
        method: 'POST',
        body: '{"amount":5}',
        headers: { 'x-approval-id': approvalId },
      })
    const ran = await replay()
    assert.equal(ran.status, 200)
    assert.equal(upstream.requests.length, seen + 1)
    const again = await replay()
    assert.equal(again.status, 409)
    assert.equal(((await again.json()) as ErrorBody).error.details?.['reason'], 'approval_used')
    assert.equal(upstream.requests.length, seen + 1, 'an approval runs one call')
  })

  it('explains a decision through the API and `4runr policy test`', async () => {
    await agent('explained', { team: 'growth' })
    const res = await gw.admin(
      '/v1/policies/evaluate',
      json('POST', { agent: 'explained', channel: 'orders', method: 'DELETE', path: '/o/1' }),
    )
    assert.equal(res.status, 200)
    const body = (await res.json()) as {
      decision: string
      rule: string
      candidates: { rule: string; matched: boolean; reasons: string[] }[]
    }
    assert.equal(body.decision, 'deny')
    assert.equal(body.rule, 'readers/no-delete')
    const read = body.candidates.find((c) => c.rule === 'readers/read')!
    assert.equal(read.matched, true)
    const approve = body.candidates.find((c) => c.rule === 'readers/approve')!
    assert.match(approve.reasons.join(' '), /method DELETE is not among POST/)

    const cli = await runCliAsync(
      [
        'policy',
        'test',
        '--agent',
        'explained',
        '--channel',
        'orders',
        '--method',
        'GET',
        '--path',
        '/limited/1',
      ],
      { RUNR_ADMIN_KEY: testAdminKey, RUNR_ADMIN_URL: gw.adminUrl },
    )
    assert.equal(cli.status, 0, cli.stderr)
    assert.match(cli.stdout, /^ALLOW \(allowed\) by rule readers\/limited/)
    assert.match(cli.stdout, /readers\/approve \(allow\): no match\n\s+method GET is not among POST/)

    const unknown = await runCliAsync(
      ['policy', 'test', '--agent', 'nobody', '--tool', 'serpapi', '--action', 'search'],
      {
        RUNR_ADMIN_KEY: testAdminKey,
        RUNR_ADMIN_URL: gw.adminUrl,
      },
    )
    assert.equal(unknown.status, 1)
    assert.match(unknown.stderr, /404 not_found/)
    const badArgs = await runCliAsync(
      ['policy', 'test', '--agent', 'explained', '--tool', 't', '--action', 'a', '--args', '{'],
      {
        RUNR_ADMIN_KEY: testAdminKey,
        RUNR_ADMIN_URL: gw.adminUrl,
      },
    )
    assert.equal(badArgs.status, 1)
    assert.match(badArgs.stderr, /--args must be JSON/)
  })

  it('refuses evaluate requests that name no target or both', async () => {
    await agent('evaluated')
    const none = await gw.admin('/v1/policies/evaluate', json('POST', { agent: 'evaluated' }))
    assert.equal(none.status, 400)
    const both = await gw.admin(
      '/v1/policies/evaluate',
      json('POST', { agent: 'evaluated', tool: 't', action: 'a', channel: 'orders' }),
    )
    assert.equal(both.status, 400)
    let deep: unknown = 1
    for (let i = 0; i < 100; i++) deep = { d: deep }
    const nested = await gw.admin(
      '/v1/policies/evaluate',
      json('POST', { agent: 'evaluated', tool: 't', action: 'a', args: deep }),
    )
    assert.equal(nested.status, 400)
  })
})

describe('quota durability in the embedded mode', () => {
  let upstream: TestUpstream
  let dir: string
  before(async () => {
    upstream = await startUpstream()
    dir = await mkdtemp(join(tmpdir(), 'runr-quota-'))
  })
  after(async () => {
    await upstream.close()
    await rm(dir, { recursive: true, force: true })
  })

  it('keeps a quota’s count across a gateway restart', async () => {
    const file = join(dir, '4runr.yaml')
    await writeFile(
      file,
      stringify({
        // A fixed issuer: the default (the listener's URL) changes with the port on restart.
        gateway: {
          issuer: 'http://gateway.test',
          listen: { host: '127.0.0.1', port: 0 },
          admin: { host: '127.0.0.1', port: 0 },
          logLevel: 'warn',
        },
        store: { kind: 'sqlite', path: join(dir, 'data/4runr.db') },
        ...orders(upstream.url),
        policies: [
          {
            name: 'limited',
            agents: { all: true },
            allow: [{ channel: 'orders', quota: { limit: 3, period: '1d' } }],
          },
        ],
      }),
    )
    const env = { RUNR_ADMIN_KEY: testAdminKey }
    const admin = (base: string, path: string, body: unknown) =>
      fetch(`${base}${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${testAdminKey}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      })
    let gateway = await startGatewayProcess(file, env, dir)
    const created = (await (await admin(gateway.adminUrl, '/v1/agents', { name: 'durable' })).json()) as {
      id: string
    }
    const issued = (await (
      await admin(gateway.adminUrl, `/v1/agents/${created.id}/tokens`, { scope: 'channel:orders', ttl: 600 })
    ).json()) as { access_token: string }
    const get = (base: string) =>
      fetch(`${base}/orders/x`, { headers: { authorization: `Bearer ${issued.access_token}` } })
    assert.equal((await get(gateway.publicUrl)).status, 200)
    assert.equal((await get(gateway.publicUrl)).status, 200)
    gateway.child.kill('SIGTERM')
    assert.equal(await gateway.exited, 0)

    gateway = await startGatewayProcess(file, env, dir)
    try {
      assert.equal((await get(gateway.publicUrl)).status, 200, 'the third call of the quota')
      const refused = await get(gateway.publicUrl)
      assert.equal(refused.status, 429, 'the count survived the restart')
    } finally {
      gateway.child.kill('SIGTERM')
      await gateway.exited
    }
  })
})
