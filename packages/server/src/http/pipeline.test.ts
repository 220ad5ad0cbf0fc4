import assert from 'node:assert/strict'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { startUpstream, type TestUpstream } from '../../../../test/support/upstream.ts'
import { compileConfig } from '../config/compile.ts'
import { GatewayError } from '../errors/gateway-error.ts'
import { createLogger } from '../observability/logger.ts'
import { createMetrics } from '../observability/metrics.ts'
import { createPools, type Pools } from '../upstreams/pools.ts'
import { type Authenticator, createPipeline } from './pipeline.ts'
import { createPublicServer } from './public-server.ts'

// Here a header stands in for a proven principal, so the stages after authentication (scope,
// roles, templates) are exercised on a real server apart from token verification, which the
// identity e2e tests cover. `x-test-async` makes it answer through a promise, as a cache miss does.
const headerAuthenticator: Authenticator = (req) => {
  const who = req.headers['x-test-principal']
  if (typeof who !== 'string') return undefined
  if (who === 'expired') throw new GatewayError('token_expired')
  const [id, roles, ...rest] = who.split(':')
  const scope = rest.length === 0 ? undefined : rest.join(':')
  const principal = {
    kind: 'agent' as const,
    id: id!,
    roles: roles === undefined || roles === '' ? [] : roles.split(','),
    claims: { sub: id, scope: scope ?? 'channel:orders', team: 'growth' },
  }
  if (req.headers['x-test-async'] === 'reject') return Promise.reject(new GatewayError('token_revoked'))
  return req.headers['x-test-async'] === '1' ? Promise.resolve(principal) : principal
}

describe('the pipeline after authentication', () => {
  let upstream: TestUpstream
  let server: Server
  let pools: Pools
  let base: string

  before(async () => {
    upstream = await startUpstream()
    const config = compileConfig(
      {
        systems: { s: { kind: 'http', url: upstream.url } },
        channels: [
          {
            name: 'orders',
            prefix: '/orders',
            system: 's',
            rules: [{ path: '*', methods: { GET: ['reader'], POST: ['writer'] } }],
            requestHeaders: { set: { 'X-Agent-Id': '{{sub}}', 'X-Team': '{{team}}' } },
          },
        ],
      },
      '',
    )
    pools = createPools()
    const pipeline = createPipeline({
      currentConfig: () => config,
      pools,
      metrics: createMetrics(),
      logger: createLogger('silent'),
      authenticators: [headerAuthenticator],
      readiness: async () => ({ ready: true, reasons: [] }),
    })
    server = createPublicServer(pipeline, { maxHeaderBytes: 16_384 })
    await new Promise<void>((ready) => server.listen(0, '127.0.0.1', ready))
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })
  after(async () => {
    server.closeAllConnections()
    await new Promise((done) => server.close(done))
    await pools.close()
    await upstream.close()
  })

  it('forwards a principal holding a role the method requires, with its id in templates', async () => {
    const res = await fetch(`${base}/orders/1`, { headers: { 'x-test-principal': 'agent-7:reader' } })
    assert.equal(res.status, 200)
    const seen = (await res.json()) as { headers: Record<string, string> }
    assert.equal(seen.headers['x-agent-id'], 'agent-7')
    assert.equal(seen.headers['x-team'], 'growth')
  })

  it('waits for an authenticator that answers through a promise', async () => {
    const res = await fetch(`${base}/orders/1`, {
      headers: { 'x-test-principal': 'agent-8:reader', 'x-test-async': '1' },
    })
    assert.equal(res.status, 200)
    assert.equal(((await res.json()) as { headers: Record<string, string> }).headers['x-agent-id'], 'agent-8')
  })

  it("answers an authenticator's rejected promise in the common error body", async () => {
    const res = await fetch(`${base}/orders/1`, {
      headers: { 'x-test-principal': 'agent-8:reader', 'x-test-async': 'reject' },
    })
    assert.equal(res.status, 401)
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'token_revoked')
  })

  it("refuses an agent whose token scope does not name the channel, even as a prefix of another's", async () => {
    for (const scope of ['channel:other', 'channel:order', 'channel:orders2 tool:x', '']) {
      const res = await fetch(`${base}/orders/1`, { headers: { 'x-test-principal': `a:reader:${scope}` } })
      assert.equal(res.status, 403, scope)
      const body = (await res.json()) as { error: { code: string; details: { requiredScope: string } } }
      assert.equal(body.error.details.requiredScope, 'channel:orders')
    }
    const ok = await fetch(`${base}/orders/1`, {
      headers: { 'x-test-principal': 'a:reader:tool:x channel:orders' },
    })
    assert.equal(ok.status, 200)
  })

  it('does not forward the Authorization and DPoP headers unless the channel says so', async () => {
    const res = await fetch(`${base}/orders/1`, {
      headers: { 'x-test-principal': 'a:reader', authorization: 'Bearer secret-token', dpop: 'proof' },
    })
    const seen = (await res.json()) as { headers: Record<string, string> }
    assert.equal(seen.headers['authorization'], undefined)
    assert.equal(seen.headers['dpop'], undefined)
  })

  it('refuses a principal without the role with 403 forbidden naming the roles required', async () => {
    const res = await fetch(`${base}/orders/1`, {
      method: 'POST',
      headers: { 'x-test-principal': 'agent-7:reader' },
    })
    assert.equal(res.status, 403)
    const body = (await res.json()) as { error: { code: string; details: { requiredRoles: string[] } } }
    assert.equal(body.error.code, 'forbidden')
    assert.deepEqual(body.error.details.requiredRoles, ['writer'])
  })

  it('answers 401 with WWW-Authenticate when no authenticator proves a principal', async () => {
    const res = await fetch(`${base}/orders/1`)
    assert.equal(res.status, 401)
    assert.equal(res.headers.get('www-authenticate'), 'Bearer, DPoP')
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'unauthenticated')
  })

  it("answers an authenticator's own refusal in the common error body", async () => {
    const res = await fetch(`${base}/orders/1`, { headers: { 'x-test-principal': 'expired' } })
    assert.equal(res.status, 401)
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'token_expired')
  })

  it('never reaches the upstream for a refused request', async () => {
    const before = upstream.requests.length
    await (
      await fetch(`${base}/orders/x`, { method: 'POST', headers: { 'x-test-principal': 'a:reader' } })
    ).text()
    await (await fetch(`${base}/orders/x`)).text()
    assert.equal(upstream.requests.length, before)
  })
})
