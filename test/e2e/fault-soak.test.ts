/**
 * A fault soak (issue 7): 10,000 requests at a real gateway process whose backend fails one call
 * in five (5xx answers, connection resets, answers slower than the headers timeout). Every
 * request gets a success or a typed answer, the process stays up, its live heap (after a full
 * collection) comes back near where it started, and `runr_requests_total` adds up to the requests sent.
 */
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { Agent, request, WebSocket } from 'undici'
import { errorCatalogue } from '../../packages/server/src/errors/catalogue.ts'
import { type Started, startProcessWith } from '../support/process.ts'

const total = 10_000
const concurrency = 64
const adminKey = 'soak-test-admin-key-0123456789abcdef'

/** A backend failing every fifth request, in turn with a 500, a reset and a late answer. */
async function startFaultyBackend(): Promise<{ server: Server; url: string; faults: () => number }> {
  let n = 0
  let faults = 0
  const server = createServer((req, res) => {
    req.resume()
    const i = n++
    if (i % 5 !== 4) {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}')
      return
    }
    faults++
    const kind = Math.floor(i / 5) % 3
    if (kind === 0) res.writeHead(500, { 'content-type': 'application/json' }).end('{"fault":"500"}')
    else if (kind === 1) req.socket.destroy()
    else {
      const timer = setTimeout(() => res.end('{"ok":"late"}'), 300)
      res.on('close', () => clearTimeout(timer))
    }
  })
  server.keepAliveTimeout = 10_000
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const { port } = server.address() as AddressInfo
  return { server, url: `http://127.0.0.1:${port}`, faults: () => faults }
}

function sumSeries(metrics: string, name: string, labels: string): number {
  let sum = 0
  for (const line of metrics.split('\n')) {
    if (line.startsWith(`${name}{`) && line.includes(labels)) sum += Number(line.split(' ').at(-1))
  }
  return sum
}

/**
 * Run a full garbage collection in the gateway process through its inspector (started with
 * --inspect on a free port), so heap sizes compare live objects, not garbage not yet collected.
 */
async function collectGarbage(stderr: string): Promise<void> {
  const url = /Debugger listening on (ws:\/\/\S+)/.exec(stderr)?.[1]
  assert.ok(url !== undefined, 'the inspector is listening')
  const ws = new WebSocket(url)
  await new Promise((ready, fail) => {
    ws.addEventListener('open', ready, { once: true })
    ws.addEventListener('error', fail, { once: true })
  })
  const done = new Promise((r) => ws.addEventListener('message', r, { once: true }))
  ws.send(JSON.stringify({ id: 1, method: 'HeapProfiler.collectGarbage' }))
  await done
  ws.close()
}

function gauge(metrics: string, name: string): number {
  const line = metrics.split('\n').find((l) => l.startsWith(`${name} `))
  return Number(line?.split(' ').at(-1))
}

describe('fault soak', () => {
  let backend: Awaited<ReturnType<typeof startFaultyBackend>>
  let gw: Started
  const client = new Agent({ connections: concurrency, keepAliveTimeout: 10_000 })

  const metrics = async (): Promise<string> => {
    const res = await request(`${gw.adminUrl}/metrics`, { headers: { authorization: `Bearer ${adminKey}` } })
    return res.body.text()
  }

  before(async () => {
    backend = await startFaultyBackend()
    gw = await startProcessWith(
      {
        gateway: { logLevel: 'error' },
        systems: {
          flaky: {
            kind: 'http',
            url: backend.url,
            headersTimeoutMs: 150,
            retry: { attempts: 1, backoff: '5ms' },
            breaker: { rate: 0.6, minCalls: 100, window: '10s', openMs: '1s' },
            bulkhead: { maxConcurrent: 48, maxQueue: 64, queueTimeout: '2s' },
          },
        },
        channels: [{ name: 'soak', prefix: '/soak', system: 'flaky', rules: [{ path: '*', public: true }] }],
      },
      // The inspector lets the test run a full collection in the gateway before reading its heap.
      { RUNR_ADMIN_KEY: adminKey, NODE_OPTIONS: '--inspect=127.0.0.1:0' },
    )
  })
  after(async () => {
    gw?.child.kill('SIGTERM')
    await gw?.exited
    await client.close()
    backend?.server.closeAllConnections()
    await new Promise((r) => backend?.server.close(r))
  })

  it('answers all 10,000 requests with a success or a typed error and stays up, with counters that add up', async (t) => {
    const warm = async (count: number) => {
      for (let i = 0; i < count; i += concurrency) {
        await Promise.all(
          Array.from({ length: Math.min(concurrency, count - i) }, async () => {
            const res = await request(`${gw.publicUrl}/soak/x`, { dispatcher: client })
            await res.body.dump()
          }),
        )
      }
    }
    await warm(500)
    await collectGarbage(gw.stderr())
    const before = await metrics()
    const sentBefore = sumSeries(before, 'runr_requests_total', 'route="soak"')
    const heapBefore = gauge(before, 'runr_nodejs_heap_size_used_bytes')

    const outcomes = new Map<string, number>()
    const untyped: string[] = []
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < total) {
        next++
        const res = await request(`${gw.publicUrl}/soak/item`, { dispatcher: client })
        const body = await res.body.text()
        let outcome: string
        if (res.statusCode === 200) outcome = '200'
        else if (res.statusCode === 500 && body === '{"fault":"500"}') outcome = '500 passed on'
        else {
          try {
            const { error } = JSON.parse(body) as {
              error: { code: keyof typeof errorCatalogue; status: number }
            }
            assert.equal(errorCatalogue[error.code]?.status, res.statusCode)
            assert.equal(error.status, res.statusCode)
            outcome = `${res.statusCode} ${error.code}`
          } catch {
            outcome = `untyped ${res.statusCode}`
            if (untyped.length < 5) untyped.push(`${res.statusCode} ${body.slice(0, 200)}`)
          }
        }
        outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1)
      }
    }
    const started = Date.now()
    await Promise.all(Array.from({ length: concurrency }, worker))
    const seconds = (Date.now() - started) / 1000

    t.diagnostic(`${total} requests in ${seconds} s: ${JSON.stringify(Object.fromEntries(outcomes))}`)
    assert.deepEqual(untyped, [], 'every answer is a success or a typed error')
    assert.equal(
      [...outcomes.values()].reduce((a, b) => a + b, 0),
      total,
    )
    assert.ok((outcomes.get('200') ?? 0) > total * 0.75, JSON.stringify(Object.fromEntries(outcomes)))
    assert.ok(backend.faults() > total * 0.15, 'the backend really failed')
    assert.equal(gw.child.exitCode, null, 'the gateway process is still up')

    await collectGarbage(gw.stderr())
    const after = await metrics()
    const sent = sumSeries(after, 'runr_requests_total', 'route="soak"') - sentBefore
    assert.equal(sent, total, 'runr_requests_total counts every request sent')
    const heapAfter = gauge(after, 'runr_nodejs_heap_size_used_bytes')
    const grown = heapAfter - heapBefore
    assert.ok(
      grown < 8 * 1024 * 1024,
      `heap grew ${Math.round(grown / 1024 / 1024)} MiB over ${total} requests in ${seconds} s`,
    )
    const health = await request(`${gw.publicUrl}/health`)
    assert.equal(health.statusCode, 200)
    await health.body.dump()
  })
})
