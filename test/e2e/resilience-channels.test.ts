/**
 * Channel calls through the resilience stages against real local backends: the breaker opens,
 * half-opens and closes; idempotent requests are retried within the budget and after the
 * upstream's Retry-After; each timeout kind answers 504 naming itself; the bulkhead refuses
 * overflow; a client that leaves aborts the upstream request.
 */
import assert from 'node:assert/strict'
import { request } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createServer as createTcpServer, type Socket, type Server as TcpServer } from 'node:net'
import { after, describe, it } from 'node:test'
import { startTestGateway, type TestGateway } from '../support/gateway.ts'
import { expectError } from '../support/tools.ts'
import { startUpstream, type TestUpstream } from '../support/upstream.ts'

const open = (name: string, system: string) => ({
  name,
  prefix: `/${name}`,
  system,
  rules: [{ path: '*', public: true }],
})

/** An upstream answering each request with the next reply of `script` (the last one repeats). */
async function scripted(
  script: Array<{ status: number; headers?: Record<string, string>; delayMs?: number }>,
): Promise<TestUpstream> {
  let n = 0
  return startUpstream((_req, res) => {
    const step = script[Math.min(n++, script.length - 1)]!
    const reply = () => {
      if (res.destroyed) return
      res.writeHead(step.status, { 'content-type': 'application/json', ...step.headers })
      res.end(JSON.stringify({ n, status: step.status }))
    }
    if (step.delayMs === undefined) reply()
    else setTimeout(reply, step.delayMs)
  })
}

async function breakerGauge(gw: TestGateway, system: string): Promise<number | undefined> {
  const text = await (await gw.admin('/metrics')).text()
  const line = text
    .split('\n')
    .find((l) => l.startsWith(`runr_breaker_state{kind="system",name="${system}"}`))
  return line === undefined ? undefined : Number(line.split(' ').at(-1))
}

describe('channel resilience', () => {
  const cleanups: Array<() => Promise<void>> = []
  after(async () => {
    for (const c of cleanups.reverse()) await c()
  })
  async function gateway(systems: Record<string, unknown>, channels: unknown[]): Promise<TestGateway> {
    const gw = await startTestGateway({ gateway: { logLevel: 'warn' }, systems, channels })
    cleanups.push(() => gw.stop())
    return gw
  }
  async function upstream(u: Promise<TestUpstream>): Promise<TestUpstream> {
    const up = await u
    cleanups.push(() => up.close())
    return up
  }

  it('opens the breaker after consecutive failures, answers 503 circuit_open with Retry-After, then half-opens and closes', async () => {
    const up = await upstream(scripted([{ status: 500 }, { status: 500 }, { status: 500 }, { status: 200 }]))
    const gw = await gateway({ b: { kind: 'http', url: up.url, breaker: { failures: 3, openMs: 1_500 } } }, [
      open('b', 'b'),
    ])
    for (let i = 0; i < 3; i++) assert.equal((await fetch(`${gw.publicUrl}/b/x`)).status, 500)
    assert.equal(await breakerGauge(gw, 'b'), 1, 'open in /metrics')
    const refused = await fetch(`${gw.publicUrl}/b/x`)
    const retryAfter = Number(refused.headers.get('retry-after'))
    assert.ok(retryAfter >= 1 && retryAfter <= 2, `Retry-After ${retryAfter}: the rest of openMs, rounded up`)
    const error = await expectError(refused, 503, 'circuit_open')
    assert.deepEqual(error.details, { system: 'b', retryAfterSeconds: retryAfter })
    assert.equal(up.requests.length, 3, 'the open breaker sent nothing upstream')
    await new Promise((r) => setTimeout(r, 1_600))
    assert.equal(await breakerGauge(gw, 'b'), 2, 'half-open once openMs passed')
    assert.equal((await fetch(`${gw.publicUrl}/b/x`)).status, 200, 'the probe goes through')
    assert.equal(await breakerGauge(gw, 'b'), 0, 'closed after the probe succeeded')
    assert.equal((await fetch(`${gw.publicUrl}/b/x`)).status, 200)
  })

  it('retries an idempotent GET on a listed status and answers the success', async () => {
    const up = await upstream(scripted([{ status: 503 }, { status: 502 }, { status: 200 }]))
    const gw = await gateway({ r: { kind: 'http', url: up.url, retry: { attempts: 3, backoff: '10ms' } } }, [
      open('r', 'r'),
    ])
    const res = await fetch(`${gw.publicUrl}/r/item`)
    assert.equal(res.status, 200)
    assert.deepEqual(await res.json(), { n: 3, status: 200 })
    assert.equal(up.requests.length, 3)
    const metrics = await (await gw.admin('/metrics')).text()
    assert.match(metrics, /runr_upstream_retries_total\{kind="system",name="r"\} 2/)
  })

  it('passes the last answer on as it came when the retries are used up', async () => {
    const up = await upstream(scripted([{ status: 503, headers: { 'x-from': 'upstream' } }]))
    const gw = await gateway({ r: { kind: 'http', url: up.url, retry: { attempts: 2, backoff: '5ms' } } }, [
      open('r', 'r'),
    ])
    const res = await fetch(`${gw.publicUrl}/r/item`)
    assert.equal(res.status, 503)
    assert.equal(res.headers.get('x-from'), 'upstream')
    assert.deepEqual(await res.json(), { n: 3, status: 503 })
    assert.equal(up.requests.length, 3)
  })

  it('does not retry a POST on a listed status, nor a request with a body', async () => {
    const up = await upstream(scripted([{ status: 503 }]))
    const gw = await gateway({ r: { kind: 'http', url: up.url, retry: { attempts: 3, backoff: '5ms' } } }, [
      open('r', 'r'),
    ])
    assert.equal((await fetch(`${gw.publicUrl}/r/x`, { method: 'POST', body: 'once' })).status, 503)
    assert.equal((await fetch(`${gw.publicUrl}/r/x`, { method: 'PUT', body: 'streamed' })).status, 503)
    assert.equal(up.requests.length, 2)
  })

  it('retries any method when the connection was refused, since nothing was sent', async () => {
    const probe = await startUpstream()
    const port = probe.port
    await probe.close()
    const gw = await gateway(
      { gone: { kind: 'http', url: `http://127.0.0.1:${port}`, retry: { attempts: 2, backoff: '5ms' } } },
      [open('gone', 'gone')],
    )
    const res = await fetch(`${gw.publicUrl}/gone/x`, { method: 'POST' })
    await expectError(res, 502, 'upstream_error')
    const metrics = await (await gw.admin('/metrics')).text()
    assert.match(metrics, /runr_upstream_retries_total\{kind="system",name="gone"\} 2/)
  })

  it('stops retrying at the retry budget, so a failing upstream sees at most 20% more load', async () => {
    const up = await upstream(scripted([{ status: 503 }]))
    const gw = await gateway(
      { f: { kind: 'http', url: up.url, retry: { attempts: 3, backoff: '1ms', maxBackoff: '2ms' } } },
      [open('f', 'f')],
    )
    const calls = 200
    for (let i = 0; i < calls; i += 20) {
      await Promise.all(Array.from({ length: 20 }, () => fetch(`${gw.publicUrl}/f/x`).then((r) => r.text())))
    }
    const retries = up.requests.length - calls
    assert.ok(retries <= calls * 0.2 + 10, `${retries} retries for ${calls} calls`)
    assert.ok(retries >= calls * 0.2 - 1, `the budget was used: ${retries} retries`)
  })

  it('waits as long as the upstream Retry-After asks, and not at all when it asks for more than the cap', async () => {
    const up = await upstream(scripted([{ status: 503, headers: { 'retry-after': '1' } }, { status: 200 }]))
    const gw = await gateway(
      {
        w: { kind: 'http', url: up.url, retry: { attempts: 1, maxRetryAfter: '2s' } },
        long: { kind: 'http', url: up.url, retry: { attempts: 1, maxRetryAfter: '500ms' } },
      },
      [open('w', 'w'), open('long', 'long')],
    )
    const started = Date.now()
    assert.equal((await fetch(`${gw.publicUrl}/w/x`)).status, 200)
    const waited = Date.now() - started
    assert.ok(waited >= 950, `waited ${waited} ms`)
    up.requests.length = 0
    const upstream503 = await upstream(scripted([{ status: 503, headers: { 'retry-after': '1' } }]))
    await gw.writeConfig({
      gateway: { logLevel: 'warn' },
      systems: {
        long: { kind: 'http', url: upstream503.url, retry: { attempts: 1, maxRetryAfter: '500ms' } },
      },
      channels: [open('long', 'long')],
    })
    assert.equal((await gw.reload()).ok, true)
    const quick = Date.now()
    const res = await fetch(`${gw.publicUrl}/long/x`)
    assert.equal(res.status, 503)
    assert.equal(res.headers.get('retry-after'), '1', "the upstream's answer, passed on")
    assert.ok(Date.now() - quick < 500)
    assert.equal(upstream503.requests.length, 1)
  })

  it('answers 504 upstream_timeout naming the headers timeout when the head is late', async () => {
    const up = await upstream(scripted([{ status: 200, delayMs: 1_000 }]))
    const gw = await gateway({ s: { kind: 'http', url: up.url, headersTimeoutMs: 100 } }, [open('s', 's')])
    const error = await expectError(await fetch(`${gw.publicUrl}/s/x`), 504, 'upstream_timeout')
    assert.deepEqual(error.details, { timeout: 'headers' })
  })

  it('answers 504 naming the total timeout when retries and waits outlast it', async () => {
    const up = await upstream(scripted([{ status: 503, delayMs: 150 }]))
    const gw = await gateway(
      { t: { kind: 'http', url: up.url, totalTimeoutMs: 400, retry: { attempts: 5, backoff: '100ms' } } },
      [open('t', 't')],
    )
    const started = Date.now()
    const error = await expectError(await fetch(`${gw.publicUrl}/t/x`), 504, 'upstream_timeout')
    assert.deepEqual(error.details, { timeout: 'total', timeoutMs: 400 })
    assert.ok(Date.now() - started < 1_000)
  })

  it('answers 504 naming the connect timeout when the TLS handshake never completes', async () => {
    // A TCP server that accepts and says nothing: the TLS handshake (part of connecting) hangs.
    const sockets = new Set<Socket>()
    const silent: TcpServer = createTcpServer((socket) => sockets.add(socket))
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r))
    cleanups.push(async () => {
      for (const socket of sockets) socket.destroy()
      await new Promise((r) => silent.close(() => r(undefined)))
    })
    const { port } = silent.address() as AddressInfo
    const gw = await gateway(
      { c: { kind: 'http', url: `https://127.0.0.1:${port}`, connectTimeoutMs: 150 } },
      [open('c', 'c')],
    )
    const error = await expectError(await fetch(`${gw.publicUrl}/c/x`), 504, 'upstream_timeout')
    assert.deepEqual(error.details, { timeout: 'connect' })
  })

  it('refuses calls beyond the bulkhead with 503 bulkhead_full and serves the ones it holds', async () => {
    const up = await upstream(scripted([{ status: 200, delayMs: 1_000 }]))
    const gw = await gateway(
      { k: { kind: 'http', url: up.url, bulkhead: { maxConcurrent: 2, maxQueue: 1, queueTimeout: '2s' } } },
      [open('k', 'k')],
    )
    const results = await Promise.all(
      Array.from({ length: 5 }, () =>
        fetch(`${gw.publicUrl}/k/x`).then(async (r) => ({ r, body: await r.text() })),
      ),
    )
    const statuses = results.map(({ r }) => r.status).sort()
    assert.deepEqual(statuses, [200, 200, 200, 503, 503])
    const refused = results.find(({ r }) => r.status === 503)!
    assert.equal(refused.r.headers.get('retry-after'), '1')
    const body = JSON.parse(refused.body) as { error: { code: string; details: unknown } }
    assert.equal(body.error.code, 'bulkhead_full')
    assert.deepEqual(body.error.details, { target: 'system:k', reason: 'queue_full', maxConcurrent: 2 })
    assert.equal(up.requests.length, 3)
  })

  it('aborts the upstream request when the client goes away', async () => {
    let upstreamClosed: () => void = () => {}
    const closed = new Promise<void>((r) => {
      upstreamClosed = r
    })
    const up = await upstream(
      startUpstream((_req, res) => {
        res.on('close', () => upstreamClosed())
      }),
    )
    const gw = await gateway({ a: { kind: 'http', url: up.url, retry: { attempts: 2 } } }, [open('a', 'a')])
    const req = request(`${gw.publicUrl}/a/slow`)
    req.on('error', () => {})
    req.end()
    while (up.requests.length === 0) await new Promise((r) => setTimeout(r, 10))
    req.destroy()
    await closed
    assert.equal(up.requests.length, 1, 'not retried after the client left')
  })
})
