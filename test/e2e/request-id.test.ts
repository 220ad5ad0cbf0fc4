import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { startTestGateway, type TestGateway } from '../support/gateway.ts'
import { startUpstream, type TestUpstream } from '../support/upstream.ts'

function configWith(upstream: TestUpstream, requestId: object) {
  return {
    gateway: { requestId },
    systems: { s: { kind: 'http', url: upstream.url } },
    channels: [
      { name: 'c', prefix: '/c', system: 's', rules: [{ path: '/closed/*' }, { path: '*', public: true }] },
    ],
  }
}

describe('request id modes', () => {
  let upstream: TestUpstream
  const gateways: TestGateway[] = []
  before(async () => {
    upstream = await startUpstream()
  })
  after(async () => {
    for (const gw of gateways) await gw.stop()
    await upstream.close()
  })

  it('with on: error, echoes the request id on error responses only', async () => {
    const gw = await startTestGateway(configWith(upstream, { on: 'error' }))
    gateways.push(gw)
    const ok = await fetch(`${gw.publicUrl}/c/x`)
    await ok.arrayBuffer()
    assert.equal(ok.status, 200)
    assert.equal(ok.headers.get('x-request-id'), null)
    const denied = await fetch(`${gw.publicUrl}/c/closed/x`)
    const body = (await denied.json()) as { error: { requestId: string } }
    assert.equal(denied.status, 401)
    assert.equal(denied.headers.get('x-request-id'), body.error.requestId)
  })

  it('with on: none, neither sets nor strips the header, and keeps an id in error bodies', async () => {
    const gw = await startTestGateway(configWith(upstream, { on: 'none' }))
    gateways.push(gw)
    const ok = await fetch(`${gw.publicUrl}/c/x`, { headers: { 'x-request-id': 'from-client' } })
    const seen = (await ok.json()) as { headers: Record<string, string> }
    assert.equal(ok.headers.get('x-request-id'), null)
    assert.equal(
      seen.headers['x-request-id'],
      'from-client',
      "a client's own header passes through untouched",
    )
    const denied = await fetch(`${gw.publicUrl}/c/closed/x`)
    assert.equal(denied.headers.get('x-request-id'), null)
    assert.ok(((await denied.json()) as { error: { requestId: string } }).error.requestId)
  })

  it('uses a custom header name when configured', async () => {
    const gw = await startTestGateway(configWith(upstream, { header: 'X-Trace-Ref', on: 'always' }))
    gateways.push(gw)
    const res = await fetch(`${gw.publicUrl}/c/x`, { headers: { 'x-trace-ref': 'ref-42' } })
    const seen = (await res.json()) as { headers: Record<string, string> }
    assert.equal(res.headers.get('x-trace-ref'), 'ref-42')
    assert.equal(seen.headers['x-trace-ref'], 'ref-42')
    assert.equal(res.headers.get('x-request-id'), null)
  })
})
