import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { performance } from 'node:perf_hooks'
import { after, before, beforeEach, describe, it } from 'node:test'
import { Agent, request } from 'undici'
import { checkSecret, type FakeServer, startFakeServer } from './fake-server.ts'

const key = 'plumbing-secret-value'

// A minimal service: the credential is an `x-api-key` header or a `key` query parameter, and the
// answer is a JSON document long enough to be cut into pieces.
function startEcho(): Promise<FakeServer> {
  return startFakeServer({
    secretQueryParams: ['key'],
    authorize: (headers, query) =>
      checkSecret((headers['x-api-key'] as string | undefined) ?? query.get('key') ?? undefined, key),
    errorBody: (status, message) => ({ error: { status, message } }),
    handle: (req) =>
      req.path === '/events'
        ? {
            status: 200,
            headers: { 'content-type': 'text/event-stream' },
            events: ['a\n\n', 'b\n\n', 'c\n\n'],
          }
        : { status: 200, body: { ok: true, path: req.path, padding: 'p'.repeat(200) } },
  })
}

async function timed<T>(run: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const start = performance.now()
  const value = await run()
  return { value, ms: performance.now() - start }
}

describe('the fake server plumbing', () => {
  let fake: FakeServer

  before(async () => {
    fake = await startEcho()
  })
  after(() => fake.close())
  beforeEach(() => fake.faults.clear())

  it('listens on loopback and gives its url without a trailing slash', () => {
    assert.match(fake.url, /^http:\/\/127\.0\.0\.1:\d+$/)
  })

  it('records method, path, query, headers and parsed body, without any credential', async () => {
    const res = await request(`${fake.url}/things?key=${key}&a=1&a=2&b=x`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        authorization: `Bearer ${key}`,
        cookie: `session=${key}`,
        'x-api-key': key,
        'x-trace': 't1',
      },
      body: JSON.stringify({ hello: 'world' }),
    })
    await res.body.dump()
    const seen = fake.requests.at(-1)!
    assert.equal(seen.method, 'POST')
    assert.equal(seen.path, '/things')
    assert.deepEqual(seen.query, { a: '1', b: 'x' })
    assert.deepEqual(seen.body, { hello: 'world' })
    assert.equal(seen.headers['x-trace'], 't1')
    assert.equal(seen.authorized, true)
    for (const name of ['authorization', 'cookie', 'x-api-key']) assert.equal(seen.headers[name], undefined)
    assert.ok(!JSON.stringify(seen).includes(key), 'a credential was recorded')
  })

  it('records a body that is not JSON as text, and marks a request without the credential unauthorized', async () => {
    await (await request(`${fake.url}/t`, { method: 'POST', body: 'plain words' })).body.dump()
    const seen = fake.requests.at(-1)!
    assert.equal(seen.body, 'plain words')
    assert.equal(seen.authorized, false)
    await (
      await request(`${fake.url}/t`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{broken',
      })
    ).body.dump()
    assert.equal(fake.requests.at(-1)!.body, '{broken')
  })

  it('keeps only the most recent requests', async () => {
    const small = await startFakeServer({
      maxRecorded: 3,
      authorize: () => 'valid',
      errorBody: () => ({}),
      handle: () => ({ status: 204 }),
    })
    try {
      for (let i = 0; i < 5; i++) await (await request(`${small.url}/n${i}`)).body.dump()
      assert.deepEqual(
        small.requests.map((r) => r.path),
        ['/n2', '/n3', '/n4'],
      )
    } finally {
      await small.close()
    }
  })

  it('answers an injected status with its headers and the service error shape, once by default', async () => {
    fake.faults.add({ kind: 'status', status: 503, headers: { 'Retry-After': '2' } })
    const first = await request(`${fake.url}/x`)
    assert.equal(first.statusCode, 503)
    assert.equal(first.headers['retry-after'], '2')
    assert.deepEqual(await first.body.json(), { error: { status: 503, message: 'Service Unavailable' } })
    const second = await request(`${fake.url}/x`)
    assert.equal(second.statusCode, 200)
    await second.body.dump()
    assert.equal(fake.faults.size, 0)
  })

  it('answers an injected status with a given body', async () => {
    fake.faults.add({ kind: 'status', status: 429, body: { custom: true } })
    const res = await request(`${fake.url}/x`)
    assert.equal(res.statusCode, 429)
    assert.deepEqual(await res.body.json(), { custom: true })
  })

  it('applies a fault the given number of times, only to its path and method', async () => {
    fake.faults.add({ kind: 'status', status: 500 }, { times: 2, path: '/only', method: 'get' })
    const statuses: number[] = []
    for (const [method, path] of [
      ['GET', '/other'],
      ['POST', '/only'],
      ['GET', '/only'],
      ['GET', '/only'],
      ['GET', '/only'],
    ] as const) {
      const res = await request(`${fake.url}${path}`, { method })
      await res.body.dump()
      statuses.push(res.statusCode)
    }
    assert.deepEqual(statuses, [200, 200, 500, 500, 200])
  })

  it('keeps an Infinity fault until cleared', async () => {
    fake.faults.add({ kind: 'status', status: 502 }, { times: Number.POSITIVE_INFINITY })
    for (let i = 0; i < 3; i++) {
      const res = await request(`${fake.url}/x`)
      await res.body.dump()
      assert.equal(res.statusCode, 502)
    }
    fake.faults.clear()
    const res = await request(`${fake.url}/x`)
    await res.body.dump()
    assert.equal(res.statusCode, 200)
  })

  it('consumes queued faults in the order they were added', async () => {
    fake.faults.add({ kind: 'status', status: 500 })
    fake.faults.add({ kind: 'status', status: 503 })
    const a = await request(`${fake.url}/x`)
    const b = await request(`${fake.url}/x`)
    await Promise.all([a.body.dump(), b.body.dump()])
    assert.deepEqual([a.statusCode, b.statusCode], [500, 503])
  })

  it('delays an answer by at least the injected latency, then answers normally', async () => {
    fake.faults.add({ kind: 'latency', ms: 150 })
    const { value, ms } = await timed(async () => {
      const res = await request(`${fake.url}/slow`)
      return { status: res.statusCode, body: (await res.body.json()) as { ok: boolean } }
    })
    assert.equal(value.status, 200)
    assert.equal(value.body.ok, true)
    assert.ok(ms >= 145, `answered after ${ms} ms`)
  })

  it('resets the connection without answering', async () => {
    fake.faults.add({ kind: 'reset' })
    await assert.rejects(request(`${fake.url}/x`), (err: Error & { code?: string }) => {
      assert.ok(['ECONNRESET', 'UND_ERR_SOCKET'].includes(err.code ?? ''), String(err.code))
      return true
    })
    assert.equal(fake.requests.at(-1)!.path, '/x')
  })

  it('trickles a slow body in eight pieces by default, sending the headers first', async () => {
    fake.faults.add({ kind: 'slow-body', chunkDelayMs: 25 })
    const start = performance.now()
    const res = await request(`${fake.url}/x`)
    const headersAt = performance.now() - start
    const body = (await res.body.json()) as { ok: boolean; padding: string }
    const doneAt = performance.now() - start
    assert.equal(body.ok, true)
    assert.equal(body.padding.length, 200)
    assert.ok(doneAt - headersAt >= 7 * 25 - 5, `body took ${doneAt - headersAt} ms after the headers`)
  })

  it('trickles a streamed answer one event at a time', async () => {
    fake.faults.add({ kind: 'slow-body', chunkDelayMs: 30 })
    const { value, ms } = await timed(async () => (await request(`${fake.url}/events`)).body.text())
    assert.equal(value, 'a\n\nb\n\nc\n\n')
    assert.ok(ms >= 3 * 30 - 5, `took ${ms} ms`)
  })

  it('truncates a body: the headers promise more than arrives and the client sees an aborted body', async () => {
    fake.faults.add({ kind: 'truncate' })
    const res = await request(`${fake.url}/x`)
    assert.equal(res.statusCode, 200)
    assert.ok(Number(res.headers['content-length']) > 0)
    await assert.rejects(res.body.text())
  })

  it('answers 200 with an HTML page for a non-json fault', async () => {
    fake.faults.add({ kind: 'non-json' })
    const res = await request(`${fake.url}/x`)
    assert.equal(res.statusCode, 200)
    assert.match(String(res.headers['content-type']), /^text\/html/)
    const text = await res.body.text()
    assert.match(text, /^<!DOCTYPE html>/)
    assert.throws(() => JSON.parse(text))
  })

  it('answers a valid JSON body of exactly the asked size for an oversize fault', async () => {
    fake.faults.add({ kind: 'oversize', bytes: 3 * 1024 * 1024 })
    const res = await request(`${fake.url}/x`)
    assert.equal(res.statusCode, 200)
    assert.equal(res.headers['content-length'], String(3 * 1024 * 1024))
    const text = await res.body.text()
    assert.equal(Buffer.byteLength(text), 3 * 1024 * 1024)
    assert.equal(typeof (JSON.parse(text) as { padding: string }).padding, 'string')
  })

  it('takes a fault from the x-fake-fault header of one request, leaving the queue alone', async () => {
    fake.faults.add({ kind: 'status', status: 500 })
    const res = await request(`${fake.url}/x`, {
      headers: {
        'x-fake-fault': JSON.stringify({ kind: 'status', status: 418, headers: { 'x-why': 'test' } }),
      },
    })
    assert.equal(res.statusCode, 418)
    assert.equal(res.headers['x-why'], 'test')
    await res.body.dump()
    assert.equal(fake.faults.size, 1)
    const reset = request(`${fake.url}/x`, { headers: { 'x-fake-fault': '{"kind":"reset"}' } })
    await assert.rejects(reset)
  })

  it('refuses a malformed x-fake-fault header with a 400 naming the problem', async () => {
    for (const [header, problem] of [
      ['not json', /not valid JSON/],
      ['{"kind":"explode"}', /kind must be one of/],
      ['{"kind":"latency","ms":-1}', /ms must be an integer/],
      ['{"kind":"oversize","bytes":3}', /bytes must be an integer/],
      ['{"kind":"status","status":503,"headers":{"bad name":"x"}}', /invalid header/],
    ] as const) {
      const res = await request(`${fake.url}/x`, { headers: { 'x-fake-fault': header } })
      assert.equal(res.statusCode, 400, header)
      const body = (await res.body.json()) as { error: { message: string } }
      assert.match(body.error.message, problem)
    }
  })

  it('throws on a malformed fault or count given to faults.add', () => {
    assert.throws(() => fake.faults.add({ kind: 'status', status: 99 }), TypeError)
    assert.throws(() => fake.faults.add({ kind: 'nope' } as never), TypeError)
    assert.throws(() => fake.faults.add({ kind: 'reset' }, { times: 0 }), TypeError)
    assert.throws(() => fake.faults.add({ kind: 'reset' }, { times: 1.5 }), TypeError)
    assert.equal(fake.faults.size, 0)
  })

  it('answers an injected 204 without a body', async () => {
    fake.faults.add({ kind: 'status', status: 204 })
    const res = await request(`${fake.url}/x`)
    assert.equal(res.statusCode, 204)
    assert.equal(res.headers['content-length'], undefined)
    assert.equal(await res.body.text(), '')
  })

  it('keeps a path that starts with two slashes a path', async () => {
    await (await request(`${fake.url}//double/slash`)).body.dump()
    assert.equal(fake.requests.at(-1)!.path, '//double/slash')
  })

  it('refuses a request body over the limit with 413 in the service shape', async () => {
    const small = await startFakeServer({
      maxBodyBytes: 1024,
      authorize: () => 'valid',
      errorBody: (status, message) => ({ status, message }),
      handle: () => ({ status: 200, body: 'accepted' }),
    })
    try {
      const res = await request(`${small.url}/up`, { method: 'POST', body: 'x'.repeat(4096) })
      assert.equal(res.statusCode, 413)
      assert.deepEqual(await res.body.json(), { status: 413, message: 'The request body is too large.' })
      assert.equal(small.requests.length, 0)
      const fits = await request(`${small.url}/up`, { method: 'POST', body: 'x'.repeat(1024) })
      assert.equal(await fits.body.text(), 'accepted')
    } finally {
      await small.close()
    }
  })

  it('answers 500 in the service shape when the handler throws, and keeps serving', async () => {
    const crashing = await startFakeServer({
      authorize: () => 'valid',
      errorBody: (status, message) => ({ status, message }),
      handle: (req) => {
        if (req.path === '/boom') throw new Error('handler bug')
        return { status: 200, body: 'fine' }
      },
    })
    try {
      const res = await request(`${crashing.url}/boom`)
      assert.equal(res.statusCode, 500)
      assert.deepEqual(await res.body.json(), {
        status: 500,
        message: 'The fake upstream failed to handle the request.',
      })
      assert.equal(await (await request(`${crashing.url}/ok`)).body.text(), 'fine')
    } finally {
      await crashing.close()
    }
  })
})

describe('closing a fake server', () => {
  it('closes an idle keep-alive connection', async () => {
    const fake = await startEcho()
    const socket = connect(Number(new URL(fake.url).port), '127.0.0.1')
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()))
    socket.on('error', () => {})
    const answered = new Promise<string>((resolve) => {
      let text = ''
      socket.on('data', (chunk: Buffer) => {
        text += chunk.toString('utf8')
        if (text.includes('"ok":true')) resolve(text)
      })
    })
    socket.write('GET /x HTTP/1.1\r\nhost: fake\r\nconnection: keep-alive\r\n\r\n')
    assert.match(await answered, /^HTTP\/1\.1 200/)
    await fake.close()
    await closed
    assert.equal(socket.destroyed, true)
  })

  it('destroys a connection in the middle of a slow answer, and the client sees the abort', async () => {
    const fake = await startEcho()
    const agent = new Agent({ keepAliveTimeout: 60_000 })
    try {
      fake.faults.add({ kind: 'slow-body', chunkDelayMs: 60_000 })
      const res = await request(`${fake.url}/x`, { dispatcher: agent })
      assert.equal(res.statusCode, 200)
      const reading = res.body.text()
      await fake.close()
      await assert.rejects(reading)
    } finally {
      await agent.close()
    }
  })

  it('can be called twice and refuses new connections after', async () => {
    const fake = await startEcho()
    await Promise.all([fake.close(), fake.close()])
    await assert.rejects(request(`${fake.url}/x`))
  })
})
