/**
 * OpenTelemetry traces end to end: a gateway exporting over OTLP/HTTP to a local fake collector
 * that decodes what it receives. The spans (request, authenticate, policy, upstream) hang under
 * the caller's trace, the upstream is told the upstream span is its parent, the log line carries
 * the same trace id, an unsampled caller is followed, and no credential reaches a span.
 */
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { startTestGateway, type TestGateway } from '../support/gateway.ts'
import { agentToken } from '../support/tools.ts'
import { closedPort, startUpstream, type TestUpstream } from '../support/upstream.ts'

interface ExportedSpan {
  traceId: string
  spanId: string
  parentSpanId: string
  name: string
  kind: number
  status: number
  attributes: Record<string, unknown>
}

/** OTLP span kinds (opentelemetry-proto trace.proto). */
const SERVER = 2
const CLIENT = 3
const INTERNAL = 1
const STATUS_ERROR = 2

/** OTLP/JSON ids are hex here; base64 (the proto3 JSON default) is accepted too. */
function hexId(value: unknown): string {
  if (typeof value !== 'string' || value === '') return ''
  return /^[0-9a-f]+$/.test(value) ? value : Buffer.from(value, 'base64').toString('hex')
}

function attributeValue(value: Record<string, unknown>): unknown {
  if ('stringValue' in value) return value['stringValue']
  if ('intValue' in value) return Number(value['intValue'])
  if ('doubleValue' in value) return value['doubleValue']
  if ('boolValue' in value) return value['boolValue']
  return undefined
}

/** A collector for OTLP/HTTP JSON trace exports: keeps every span and every raw body. */
async function startCollector(): Promise<{
  url: string
  spans: ExportedSpan[]
  bodies: string[]
  close(): Promise<void>
}> {
  const spans: ExportedSpan[] = []
  const bodies: string[] = []
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8')
      bodies.push(text)
      if (
        req.method !== 'POST' ||
        req.url !== '/v1/traces' ||
        !String(req.headers['content-type']).includes('json')
      ) {
        res.writeHead(400).end()
        return
      }
      const body = JSON.parse(text) as {
        resourceSpans: Array<{
          resource: unknown
          scopeSpans: Array<{ spans: Array<Record<string, unknown>> }>
        }>
      }
      for (const rs of body.resourceSpans) {
        for (const ss of rs.scopeSpans) {
          for (const s of ss.spans) {
            const attributes: Record<string, unknown> = {}
            for (const a of (s['attributes'] as Array<{ key: string; value: Record<string, unknown> }>) ?? [])
              attributes[a.key] = attributeValue(a.value)
            spans.push({
              traceId: hexId(s['traceId']),
              spanId: hexId(s['spanId']),
              parentSpanId: hexId(s['parentSpanId']),
              name: String(s['name']),
              kind: Number(s['kind']),
              status: Number((s['status'] as { code?: number } | undefined)?.code ?? 0),
              attributes,
            })
          }
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
    })
  })
  await new Promise<void>((ready) => server.listen(0, '127.0.0.1', ready))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}/v1/traces`,
    spans,
    bodies,
    close: () =>
      new Promise((done) => {
        server.close(() => done())
        server.closeAllConnections()
      }),
  }
}

/** The spans of `traceId`, once `count` of them have arrived (the exporter batches). */
async function spansOf(collector: { spans: ExportedSpan[] }, traceId: string, count: number) {
  const deadline = Date.now() + 10_000
  for (;;) {
    const found = collector.spans.filter((s) => s.traceId === traceId)
    if (found.length >= count || Date.now() > deadline) return found
    await new Promise((r) => setTimeout(r, 25))
  }
}

const hex = (bytes: number) => Buffer.from(crypto.getRandomValues(new Uint8Array(bytes))).toString('hex')

describe('tracing to an OTLP/HTTP collector', () => {
  let collector: Awaited<ReturnType<typeof startCollector>>
  let upstream: TestUpstream
  let gw: TestGateway
  let token: string

  before(async () => {
    collector = await startCollector()
    upstream = await startUpstream()
    gw = await startTestGateway({
      systems: { orders: { kind: 'http', url: upstream.url } },
      channels: [
        {
          name: 'orders',
          prefix: '/orders',
          system: 'orders',
          rules: [{ path: '/public/*', public: true }, { path: '*' }],
        },
      ],
      policies: [
        {
          name: 'readers',
          agents: { all: true },
          allow: [{ name: 'read', channel: 'orders', methods: ['GET'] }],
          deny: [{ name: 'no-secrets', channel: 'orders', paths: ['/secret/*'] }],
        },
      ],
      tracing: { endpoint: collector.url, flushMs: 20, serviceName: 'gateway-under-test' },
    })
    token = await agentToken(gw, 'traced-agent', 'channel:orders')
  })
  after(async () => {
    await gw.stop()
    await upstream.close()
    await collector.close()
  })

  it('hangs the request, authenticate, policy and upstream spans under the caller’s trace, and names the upstream span as the upstream’s parent', async () => {
    const traceId = hex(16)
    const callerSpan = hex(8)
    const res = await fetch(`${gw.publicUrl}/orders/items?page=2`, {
      headers: { authorization: `Bearer ${token}`, traceparent: `00-${traceId}-${callerSpan}-01` },
    })
    assert.equal(res.status, 200)
    await res.text()

    const spans = await spansOf(collector, traceId, 4)
    const server = spans.find((s) => s.kind === SERVER)
    assert.ok(server, `no server span among ${JSON.stringify(spans)}`)
    assert.equal(server.parentSpanId, callerSpan)
    assert.equal(server.name, 'GET orders')
    assert.equal(server.attributes['http.response.status_code'], 200)
    assert.equal(server.attributes['http.route'], 'orders')
    assert.equal(server.attributes['url.path'], '/orders/items')
    assert.equal(server.attributes['runr.decision'], 'allow')
    assert.equal(server.attributes['runr.policy_rule'], 'readers/read')
    assert.equal(typeof server.attributes['runr.principal'], 'string')

    const child = (name: string) => spans.find((s) => s.name === name)
    const authenticate = child('authenticate')
    const policy = child('policy')
    const upstreamSpan = child('upstream orders')
    for (const [name, span] of Object.entries({ authenticate, policy, upstreamSpan })) {
      assert.ok(span, `no ${name} span`)
      assert.equal(span.parentSpanId, server.spanId, `${name} is not a child of the request span`)
    }
    assert.equal(authenticate!.kind, INTERNAL)
    assert.equal(authenticate!.attributes['runr.principal.kind'], 'agent')
    assert.equal(policy!.attributes['runr.decision'], 'allow')
    assert.equal(upstreamSpan!.kind, CLIENT)
    assert.equal(upstreamSpan!.attributes['http.response.status_code'], 200)

    const seen = upstream.requests.at(-1)!
    assert.equal(seen.headers['traceparent'], `00-${traceId}-${upstreamSpan!.spanId}-01`)
    // The log line of the request names the same trace.
    const line = gw.logs.find((l) => l['msg'] === 'request' && l['traceId'] === traceId)
    assert.ok(line, 'no request log line with the trace id')
    // The exported resource names the service.
    assert.ok(collector.bodies.some((b) => b.includes('gateway-under-test')))
  })

  it('starts a trace of its own under the trace id its log line carries when the caller sends none', async () => {
    const requestId = `trace-test-${hex(4)}`
    const res = await fetch(`${gw.publicUrl}/orders/public/ping`, { headers: { 'x-request-id': requestId } })
    assert.equal(res.status, 200)
    await res.text()
    const line = gw.logs.find((l) => l['msg'] === 'request' && l['requestId'] === requestId)
    assert.ok(line)
    const traceId = String(line['traceId'])
    const spans = await spansOf(collector, traceId, 2)
    const server = spans.find((s) => s.kind === SERVER)
    assert.ok(server)
    assert.equal(server.parentSpanId, '')
    assert.equal(server.attributes['runr.request_id'], requestId)
    // A public route: nobody to authenticate, nothing to decide.
    assert.deepEqual(spans.map((s) => s.name).sort(), ['GET orders', 'upstream orders'])
  })

  it('follows a caller that does not sample: no spans, and the upstream is told so', async () => {
    const traceId = hex(16)
    const res = await fetch(`${gw.publicUrl}/orders/items`, {
      headers: { authorization: `Bearer ${token}`, traceparent: `00-${traceId}-${hex(8)}-00` },
    })
    assert.equal(res.status, 200)
    await res.text()
    assert.match(
      String(upstream.requests.at(-1)!.headers['traceparent']),
      new RegExp(`^00-${traceId}-[0-9a-f]{16}-00$`),
    )
    // A sampled request after it is exported; by then the unsampled one would have been too.
    const later = hex(16)
    await (
      await fetch(`${gw.publicUrl}/orders/public/x`, { headers: { traceparent: `00-${later}-${hex(8)}-01` } })
    ).text()
    await spansOf(collector, later, 2)
    assert.deepEqual(
      collector.spans.filter((s) => s.traceId === traceId),
      [],
    )
  })

  it('records a denial on the policy span and the request span, and keeps the token out of every export', async () => {
    const traceId = hex(16)
    const res = await fetch(`${gw.publicUrl}/orders/secret/plans`, {
      headers: { authorization: `Bearer ${token}`, traceparent: `00-${traceId}-${hex(8)}-01` },
    })
    assert.equal(res.status, 403)
    await res.text()
    const spans = await spansOf(collector, traceId, 3)
    const server = spans.find((s) => s.kind === SERVER)!
    const policy = spans.find((s) => s.name === 'policy')!
    assert.equal(server.attributes['http.response.status_code'], 403)
    assert.equal(server.attributes['error.type'], 'policy_denied')
    assert.equal(server.attributes['runr.decision'], 'deny')
    // A 4xx is the caller's mistake, not the gateway's failure.
    assert.notEqual(server.status, STATUS_ERROR)
    assert.equal(policy.attributes['error.type'], 'policy_denied')
    assert.equal(
      spans.find((s) => s.name.startsWith('upstream')),
      undefined,
      'a denied call never reaches the upstream',
    )
    for (const body of collector.bodies) {
      assert.ok(!body.includes(token), 'a token reached the collector')
      assert.ok(!body.includes('page=2'), 'a query string reached the collector')
    }
  })
})

describe('tracing with an unreachable collector', () => {
  it('answers callers as usual and still stops promptly', async () => {
    const upstream = await startUpstream()
    const port = await closedPort()
    const gw = await startTestGateway({
      systems: { up: { kind: 'http', url: upstream.url } },
      channels: [{ name: 'up', prefix: '/up', system: 'up', rules: [{ path: '*', public: true }] }],
      tracing: { endpoint: `http://127.0.0.1:${port}/v1/traces`, flushMs: 20 },
    })
    try {
      for (let i = 0; i < 20; i++) {
        const res = await fetch(`${gw.publicUrl}/up/x${i}`)
        assert.equal(res.status, 200)
        await res.text()
      }
      await new Promise((r) => setTimeout(r, 100))
    } finally {
      const started = Date.now()
      await gw.stop()
      assert.ok(Date.now() - started < 8_000, 'stop waited on the dead collector too long')
      await upstream.close()
    }
  })
})

describe('tracing config', () => {
  it('refuses a sample ratio above 1 and an endpoint that is not an http URL, naming the path', async () => {
    await assert.rejects(
      startTestGateway({ tracing: { endpoint: 'http://127.0.0.1:4318/v1/traces', sampleRatio: 2 } }),
      /tracing\.sampleRatio/,
    )
    await assert.rejects(startTestGateway({ tracing: { endpoint: 'collector:4318' } }), /tracing\.endpoint/)
  })
})
