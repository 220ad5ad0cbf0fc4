import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { startTestGateway, type TestGateway } from '../support/gateway.ts'
import { rawRequest, startUpstream, type TestUpstream } from '../support/upstream.ts'

describe('channels forward to http systems', () => {
  let upstream: TestUpstream
  let gw: TestGateway

  before(async () => {
    upstream = await startUpstream()
    gw = await startTestGateway({
      systems: {
        orders: { kind: 'http', url: upstream.url },
        based: { kind: 'http', url: `${upstream.url}/base/` },
      },
      channels: [
        {
          name: 'orders',
          prefix: '/orders',
          system: 'orders',
          rules: [{ path: '*', public: true }],
          requestHeaders: {
            set: { 'X-Gateway': '4runr', 'X-Channel': '{{channel}}', 'X-Agent-Id': '{{sub}}' },
            remove: ['Cookie', 'X-Secret-Internal'],
          },
          responseHeaders: { set: { 'X-Served-By': 'gw' }, remove: ['X-Powered-By'] },
        },
        { name: 'based', prefix: '/based', system: 'based', rules: [{ path: '*', public: true }] },
        {
          name: 'kept',
          prefix: '/kept',
          system: 'orders',
          stripPrefix: false,
          rules: [{ path: '*', public: true }],
        },
        { name: 'unprefixed', system: 'orders', rules: [{ path: '*', public: true }] },
      ],
    })
  })
  after(async () => {
    await gw.stop()
    await upstream.close()
  })

  it('strips the prefix and passes the method, path, query and body through', async () => {
    const res = await fetch(`${gw.publicUrl}/orders/items/7?x=1&y=%20z`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: 'hello',
    })
    assert.equal(res.status, 200)
    const seen = (await res.json()) as {
      method: string
      url: string
      body: string
      headers: Record<string, string>
    }
    assert.equal(seen.method, 'POST')
    assert.equal(seen.url, '/items/7?x=1&y=%20z')
    assert.equal(seen.body, 'hello')
    assert.equal(seen.headers['content-type'], 'text/plain')
  })

  it('serves every channel under /api/request/{channel} too, with or without a prefix', async () => {
    const viaRequest = (await (await fetch(`${gw.publicUrl}/api/request/orders/items`)).json()) as {
      url: string
    }
    assert.equal(viaRequest.url, '/items')
    const unprefixed = (await (await fetch(`${gw.publicUrl}/api/request/unprefixed/a?b=c`)).json()) as {
      url: string
    }
    assert.equal(unprefixed.url, '/a?b=c')
  })

  it('forwards the prefix itself as the root path', async () => {
    const seen = (await (await fetch(`${gw.publicUrl}/orders`)).json()) as { url: string }
    assert.equal(seen.url, '/')
  })

  it('appends the path to the system URL base path', async () => {
    const seen = (await (await fetch(`${gw.publicUrl}/based/x/y`)).json()) as { url: string }
    assert.equal(seen.url, '/base/x/y')
  })

  it('keeps the prefix when stripPrefix is false', async () => {
    const seen = (await (await fetch(`${gw.publicUrl}/kept/a`)).json()) as { url: string }
    assert.equal(seen.url, '/kept/a')
    const viaRequest = (await (await fetch(`${gw.publicUrl}/api/request/kept/a`)).json()) as { url: string }
    assert.equal(viaRequest.url, '/kept/a')
  })

  it('sets, removes and templates request headers and drops hop-by-hop ones', async () => {
    // fetch refuses to send Connection and TE itself, so this request goes out through node:http.
    const { body } = await rawRequest(`${gw.publicUrl}/orders/h`, {
      cookie: 'session=abc',
      'x-secret-internal': '1',
      'x-agent-id': 'spoofed',
      'x-gateway': 'spoofed',
      'x-keep': 'yes',
      connection: 'keep-alive, x-drop-me',
      'x-drop-me': 'listed in Connection',
      te: 'trailers',
    })
    const { headers } = JSON.parse(body) as { headers: Record<string, string> }
    assert.equal(headers['x-gateway'], '4runr')
    assert.equal(headers['x-channel'], 'orders')
    assert.equal(headers['x-agent-id'], undefined, 'a placeholder without a value leaves the header out')
    assert.equal(headers['cookie'], undefined)
    assert.equal(headers['x-secret-internal'], undefined)
    assert.equal(headers['x-drop-me'], undefined)
    assert.equal(headers['te'], undefined)
    assert.equal(headers['x-keep'], 'yes')
    assert.equal(headers['host'], new URL(upstream.url).host, 'the upstream sees its own host')
  })

  it('sets X-Forwarded-For/-Proto/-Host from what the gateway saw, ignoring client claims', async () => {
    const res = await fetch(`${gw.publicUrl}/orders/f`, {
      headers: {
        'x-forwarded-for': '6.6.6.6',
        'x-forwarded-host': 'evil.example',
        'x-forwarded-proto': 'https',
      },
    })
    const { headers } = (await res.json()) as { headers: Record<string, string> }
    assert.equal(headers['x-forwarded-for'], '127.0.0.1')
    assert.equal(headers['x-forwarded-proto'], 'http')
    assert.equal(headers['x-forwarded-host'], new URL(gw.publicUrl).host)
  })

  it('sets and removes response headers and echoes the request and correlation ids', async () => {
    upstream.server.once('request', (_req, res) => res.setHeader('x-powered-by', 'leaky'))
    const res = await fetch(`${gw.publicUrl}/orders/r`, { headers: { 'x-correlation-id': 'corr-1' } })
    await res.arrayBuffer()
    assert.equal(res.headers.get('x-served-by'), 'gw')
    assert.equal(res.headers.get('x-powered-by'), null)
    assert.equal(res.headers.get('x-correlation-id'), 'corr-1')
    assert.match(res.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/)
  })

  it('keeps a valid client request id and replaces an unsafe or overlong one', async () => {
    const kept = await fetch(`${gw.publicUrl}/orders/i`, { headers: { 'x-request-id': 'client-id-1' } })
    const keptSeen = (await kept.json()) as { headers: Record<string, string> }
    assert.equal(kept.headers.get('x-request-id'), 'client-id-1')
    assert.equal(keptSeen.headers['x-request-id'], 'client-id-1')

    for (const bad of ['x'.repeat(129), 'has space', 'semi;colon']) {
      const res = await fetch(`${gw.publicUrl}/orders/i`, { headers: { 'x-request-id': bad } })
      const seen = (await res.json()) as { headers: Record<string, string> }
      assert.notEqual(res.headers.get('x-request-id'), bad)
      assert.match(seen.headers['x-request-id'] ?? '', /^[0-9a-f-]{36}$/)
    }
  })

  it('generates a correlation id when none is sent and forwards it', async () => {
    const res = await fetch(`${gw.publicUrl}/orders/c`)
    const seen = (await res.json()) as { headers: Record<string, string> }
    const correlation = res.headers.get('x-correlation-id')
    assert.ok(correlation)
    assert.equal(seen.headers['x-correlation-id'], correlation)
  })

  it('continues a valid traceparent with a new span and replaces an invalid one', async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736'
    const valid = `00-${traceId}-00f067aa0ba902b7-01`
    const seen = (await (
      await fetch(`${gw.publicUrl}/orders/t`, { headers: { traceparent: valid } })
    ).json()) as {
      headers: Record<string, string>
    }
    const forwarded = seen.headers['traceparent'] ?? ''
    assert.match(forwarded, new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`))
    assert.notEqual(forwarded, valid, 'the gateway is a hop: its span becomes the parent')

    for (const invalid of [
      'garbage',
      `00-${'0'.repeat(32)}-00f067aa0ba902b7-01`,
      `00-${traceId}-${'0'.repeat(16)}-01`,
      `00-${traceId.toUpperCase()}-00f067aa0ba902b7-01`,
    ]) {
      const res = await fetch(`${gw.publicUrl}/orders/t`, { headers: { traceparent: invalid } })
      const { headers } = (await res.json()) as { headers: Record<string, string> }
      assert.notEqual(headers['traceparent'], invalid)
      assert.match(headers['traceparent'] ?? '', /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/)
      assert.ok(!headers['traceparent']!.includes(traceId.toUpperCase()))
    }
  })

  it('streams the upstream status and headers back unchanged', async () => {
    upstream.server.once('request', (_req, res) => {
      res.setHeader('set-cookie', ['a=1', 'b=2'])
    })
    const res = await fetch(`${gw.publicUrl}/orders/cookies`)
    await res.arrayBuffer()
    assert.deepEqual(res.headers.getSetCookie(), ['a=1', 'b=2'])
  })

  it('answers an unknown channel or path with 404 not_found in the common error body', async () => {
    for (const path of ['/nope', '/api/request/nope/x', '/ordersx']) {
      const res = await fetch(`${gw.publicUrl}${path}`)
      assert.equal(res.status, 404)
      const body = (await res.json()) as { error: { code: string; status: number; requestId: string } }
      assert.equal(body.error.code, 'not_found')
      assert.equal(body.error.status, 404)
      assert.equal(body.error.requestId, res.headers.get('x-request-id'))
    }
  })

  it('logs one line per request with ids and timings but no credentials or query', async () => {
    await (
      await fetch(`${gw.publicUrl}/orders/log?api_key=canary-query-secret`, {
        headers: { authorization: 'Bearer canary-token-value', cookie: 'sid=canary-cookie' },
      })
    ).arrayBuffer()
    await new Promise((r) => setTimeout(r, 50))
    const line = gw.logs.find((l) => l['msg'] === 'request' && l['path'] === '/orders/log')
    assert.ok(line, 'a request line was logged')
    assert.equal(line['channel'], 'orders')
    assert.equal(line['status'], 200)
    assert.equal(typeof line['durationMs'], 'number')
    assert.equal(typeof line['upstreamMs'], 'number')
    assert.ok(line['requestId'])
    const raw = gw.rawLogs()
    for (const canary of ['canary-query-secret', 'canary-token-value', 'canary-cookie'])
      assert.ok(!raw.includes(canary))
  })
})
