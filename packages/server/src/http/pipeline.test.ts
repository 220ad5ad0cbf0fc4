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

// Identity arrives with its own work; here a header stands in for a proven principal so the
// stages after authentication (roles, templates) can be exercised on a real server.
const headerAuthenticator: Authenticator = (req) => {
  const who = req.headers['x-test-principal']
  if (typeof who !== 'string') return undefined
  if (who === 'expired') throw new GatewayError('token_expired')
  const [id, roles] = who.split(':')
  return { kind: 'agent', id: id!, roles: roles === undefined ? [] : roles.split(',') }
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
            requestHeaders: { set: { 'X-Agent-Id': '{{sub}}' } },
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
    assert.equal(res.headers.get('www-authenticate'), 'Bearer')
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
