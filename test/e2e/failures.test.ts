/**
 * Bad input and failing backends (issue 3, "Bad input"; DESIGN §15): every failure ends in the
 * common error body or a cut connection, never a crash, a stack trace or a clean short answer.
 * Requests whose exact bytes matter go out through node:http, which (unlike fetch) neither
 * normalises dot segments nor retries.
 */
import assert from 'node:assert/strict'
import { type IncomingHttpHeaders, type IncomingMessage, request, type ServerResponse } from 'node:http'
import { connect } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { startTestGateway, type TestGateway } from '../support/gateway.ts'
import { closedPort, startUpstream, type TestUpstream } from '../support/upstream.ts'

/** What a client saw of one exchange. */
interface Outcome {
  status: number
  headers: IncomingHttpHeaders
  body: string
  /** True only when the whole response message arrived and ended cleanly. */
  complete: boolean
  /** Set when the request failed before any response arrived (e.g. the connection was cut). */
  error?: NodeJS.ErrnoException
}

interface SendOptions {
  method?: string
  headers?: Record<string, string>
  /** A body sent in one piece (with its content-length unless a header says otherwise). */
  body?: Buffer | string
}

/** One exchange over a fresh connection with node:http; `path` goes on the wire as given. */
function send(base: string, path: string, options: SendOptions = {}): Promise<Outcome> {
  const { hostname, port } = new URL(base)
  return new Promise((done) => {
    let settled = false
    const settle = (outcome: Outcome): void => {
      if (settled) return
      settled = true
      done(outcome)
    }
    const req = request(
      { hostname, port, path, method: options.method ?? 'GET', headers: options.headers, agent: false },
      (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => {
          body += chunk
        })
        res.on('error', () => {})
        // 'close' comes after 'end' on a clean message and after 'aborted'/'error' on a cut one.
        res.on('close', () =>
          settle({ status: res.statusCode ?? 0, headers: res.headers, body, complete: res.complete }),
        )
      },
    )
    req.on('error', (error: NodeJS.ErrnoException) =>
      settle({ status: 0, headers: {}, body: '', complete: false, error }),
    )
    req.end(options.body)
  })
}

/** Assert the common error body (DESIGN §15) with no internals in it, and return it. */
function assertError(
  outcome: Outcome,
  status: number,
  code: string,
): { code: string; message: string; status: number; requestId: string } {
  assert.equal(outcome.error, undefined, `expected a ${status} answer, got ${outcome.error?.message}`)
  assert.equal(outcome.status, status, `status for ${code}: ${outcome.body}`)
  assert.match(String(outcome.headers['content-type']), /^application\/json/)
  const { error } = JSON.parse(outcome.body) as {
    error: { code: string; message: string; status: number; requestId: string }
  }
  assert.equal(error.code, code)
  assert.equal(error.status, status)
  assert.equal(typeof error.requestId, 'string')
  assert.ok(error.requestId.length > 0)
  assertNoInternals(outcome.body)
  return error
}

/** No stack frame, error class name or low-level error code in what the client reads. */
function assertNoInternals(body: string): void {
  const { error } = JSON.parse(body) as { error: Record<string, unknown> }
  const message = String(error['message'])
  assert.ok(!message.includes('Error:'), `error class in message: ${message}`)
  assert.ok(!/\bat\s/.test(message), `stack frame in message: ${message}`)
  for (const leak of ['stack', 'cause', 'ECONNREFUSED', 'ECONNRESET', 'UND_ERR', 'undici', 'node:', '.ts:'])
    assert.ok(!body.includes(leak), `"${leak}" leaked into the error body: ${body}`)
}

/** How a streamed upstream request ended. */
interface UpstreamEnd {
  url: string
  bytes: number
  /** 'end': the body arrived whole; 'aborted': the connection closed before its end. */
  how: 'end' | 'aborted'
}

/** Count a streamed upstream request's body and report how it ended; answers 200 on a clean end. */
function observe(req: IncomingMessage, res: ServerResponse, report: (end: UpstreamEnd) => void): void {
  let bytes = 0
  let ended = false
  req.on('data', (chunk: Buffer) => {
    bytes += chunk.length
  })
  req.on('end', () => {
    ended = true
    report({ url: req.url ?? '', bytes, how: 'end' })
    res.writeHead(200, { 'content-type': 'text/plain' }).end(`got ${bytes}`)
  })
  req.on('error', () => {})
  req.on('close', () => {
    if (!ended) report({ url: req.url ?? '', bytes, how: 'aborted' })
  })
}

const wait = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/**
 * Write raw bytes on one connection (`then` is sent once the first answer bytes arrive, if given)
 * and collect everything the gateway sends back until it closes the connection.
 */
function rawExchange(base: string, first: string, then?: string): Promise<string> {
  const { hostname, port } = new URL(base)
  return new Promise((done) => {
    const socket = connect(Number(port), hostname)
    let received = ''
    socket.on('data', (chunk: Buffer) => {
      const wasEmpty = received === ''
      received += chunk.toString('latin1')
      if (wasEmpty && then !== undefined) socket.write(then)
    })
    socket.on('error', () => {})
    socket.on('close', () => done(received))
    socket.write(first)
  })
}

/** The error body at the end of a raw HTTP/1.1 answer. */
function rawErrorBody(raw: string): string {
  return raw.slice(raw.indexOf('\r\n\r\n') + 4)
}

describe('failing upstreams and bad input end in clean errors', () => {
  let upstream: TestUpstream
  let gw: TestGateway
  /** Streamed-request reports, and waiters for the next one per upstream path. */
  const ends: UpstreamEnd[] = []
  const waiting = new Map<string, (end: UpstreamEnd) => void>()
  const nextEnd = (url: string): Promise<UpstreamEnd> =>
    new Promise((resolve) => {
      waiting.set(url, resolve)
    })
  /** Upstream paths that saw their first body byte, and waiters for that. */
  const started = new Map<string, () => void>()

  before(async () => {
    upstream = await startUpstream(
      (req, res) => {
        const url = req.url ?? ''
        if (url === '/reset') {
          req.socket.destroy()
          return
        }
        if (url === '/slow') {
          const timer = setTimeout(() => res.end('late'), 3_000)
          res.on('close', () => clearTimeout(timer))
          req.resume()
          return
        }
        if (url === '/truncated') {
          res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': '1000' })
          res.write(Buffer.alloc(10, 1), () => setTimeout(() => req.socket.destroy(), 20))
          return
        }
        if (url === '/pending') {
          const timer = setTimeout(() => res.end('pending-done'), 300)
          res.on('close', () => clearTimeout(timer))
          return
        }
        if (url === '/midbody') {
          res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '20' })
          res.write('first-half')
          const timer = setTimeout(() => res.end('other-half'), 300)
          res.on('close', () => clearTimeout(timer))
          return
        }
        if (url === '/stall') {
          res.writeHead(200, { 'content-type': 'application/octet-stream' })
          res.write(Buffer.alloc(100, 1))
          // ...and nothing more: the gateway's body timeout must cut this.
          return
        }
        if (url === '/upload' || url === '/grow' || url === '/small') {
          req.once('data', () => started.get(url)?.())
          observe(req, res, (end) => {
            ends.push(end)
            waiting.get(url)?.(end)
            waiting.delete(url)
          })
          return
        }
        // Everything else: echo method and path once the body has been read.
        req.resume()
        req.on('end', () => {
          const text = JSON.stringify({ method: req.method, url: req.url })
          res.writeHead(200, {
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(text),
          })
          res.end(text)
        })
      },
      { streaming: true },
    )
    const down = await closedPort()
    const pathRules = [
      { path: '/admin/*', disabled: true },
      { path: '/private/*', methods: { GET: ['reader'] } },
      { path: '/readonly/*', methods: ['GET'], public: true },
      { path: '*', public: true },
    ]
    gw = await startTestGateway({
      systems: {
        app: { kind: 'http', url: upstream.url },
        down: { kind: 'http', url: `http://127.0.0.1:${down}` },
      },
      channels: [
        { name: 'app', prefix: '/app', system: 'app', timeoutMs: 200, rules: pathRules },
        { name: 'ci', prefix: '/ci', system: 'app', caseInsensitive: true, rules: pathRules },
        { name: 'down', prefix: '/down', system: 'down', rules: [{ path: '*', public: true }] },
        {
          name: 'limited',
          prefix: '/limited',
          system: 'app',
          maxBodyBytes: 1024,
          rules: [{ path: '*', public: true }],
        },
      ],
    })
  })
  after(async () => {
    await gw.stop()
    await upstream.close()
  })

  describe('a failing upstream', () => {
    it('answers 502 upstream_error when nothing listens on the upstream port', async () => {
      assertError(await send(gw.publicUrl, '/down/x'), 502, 'upstream_error')
    })

    it('answers 502 upstream_error when the upstream resets the connection before answering', async () => {
      assertError(await send(gw.publicUrl, '/app/reset'), 502, 'upstream_error')
    })

    it('answers 504 upstream_timeout when the upstream is slower than the channel timeoutMs', async () => {
      const started = performance.now()
      const outcome = await send(gw.publicUrl, '/app/slow')
      assertError(outcome, 504, 'upstream_timeout')
      // undici runs headers/body timeouts on its coarse timer (~500 ms ticks): 200 ms fires within ~1 s.
      assert.ok(performance.now() - started < 2_000, 'the 200 ms timeout fired, not the 3 s upstream answer')
    })

    it('cuts the client connection when the upstream body is truncated, never a clean short 200', async () => {
      const outcome = await send(gw.publicUrl, '/app/truncated')
      assert.equal(outcome.status, 200, 'the head had already been forwarded')
      assert.equal(outcome.headers['content-length'], '1000')
      assert.equal(outcome.complete, false, 'the client must see an aborted message')
      assert.ok(outcome.body.length < 1000)

      // fetch sees the same thing as a rejected body read.
      const res = await fetch(`${gw.publicUrl}/app/truncated`)
      assert.equal(res.status, 200)
      await assert.rejects(res.arrayBuffer())
    })

    it('cuts the client connection when the upstream stalls mid-body beyond timeoutMs', async () => {
      const started = performance.now()
      const outcome = await send(gw.publicUrl, '/app/stall')
      assert.equal(outcome.status, 200)
      assert.equal(outcome.complete, false, 'a stalled body must not end cleanly')
      assert.equal(outcome.body.length, 100)
      assert.ok(performance.now() - started < 3_000, 'cut by the body timeout, not by the test')
    })

    it('keeps serving normal requests after every failure above', async () => {
      for (const path of ['/down/x', '/app/reset', '/app/slow', '/app/truncated', '/app/stall'])
        await send(gw.publicUrl, path)
      const res = await fetch(`${gw.publicUrl}/app/ok`)
      assert.equal(res.status, 200)
      assert.deepEqual(await res.json(), { method: 'GET', url: '/ok' })
    })
  })

  describe('a client that goes away', () => {
    it('aborts the upstream request when the client disconnects mid-upload, and keeps serving', async () => {
      const { hostname, port } = new URL(gw.publicUrl)
      const upstreamEnd = nextEnd('/upload')
      const upstreamStarted = new Promise<void>((resolve) => started.set('/upload', resolve))
      const req = request({
        hostname,
        port,
        path: '/app/upload',
        method: 'POST',
        agent: false,
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(1024 * 1024) },
      })
      req.on('error', () => {})
      req.write(Buffer.alloc(16 * 1024, 1))
      await upstreamStarted
      req.write(Buffer.alloc(16 * 1024, 2))
      await wait(20)
      req.destroy()

      const end = await upstreamEnd
      assert.equal(end.how, 'aborted', 'the upstream must not see a complete body')
      assert.ok(end.bytes < 1024 * 1024)

      // Recorded as the client's doing (499), not as a failing upstream.
      await wait(20)
      const line = gw.logs.find((l) => l['msg'] === 'request' && l['path'] === '/app/upload')
      assert.ok(line, 'the request was logged')
      assert.equal(line['status'], 499)
      assert.equal(line['error'], undefined)

      const res = await fetch(`${gw.publicUrl}/app/ok`)
      assert.equal(res.status, 200)
      await res.arrayBuffer()
    })
  })

  describe('oversized input', () => {
    it('answers 431 headers_too_large to a 20 KB header with the default limit', async () => {
      const outcome = await send(gw.publicUrl, '/app/ok', { headers: { 'x-big': 'a'.repeat(20 * 1024) } })
      assertError(outcome, 431, 'headers_too_large')
    })

    it('accepts a 6 KB header by default', async () => {
      const outcome = await send(gw.publicUrl, '/app/ok', { headers: { 'x-big': 'a'.repeat(6 * 1024) } })
      assert.equal(outcome.status, 200)
    })

    it('lowers the bar with gateway.maxHeaderBytes', async () => {
      const small = await startTestGateway({
        gateway: { maxHeaderBytes: 4096 },
        systems: { app: { kind: 'http', url: upstream.url } },
        channels: [{ name: 'app', prefix: '/app', system: 'app', rules: [{ path: '*', public: true }] }],
      })
      try {
        const big = await send(small.publicUrl, '/app/ok', { headers: { 'x-big': 'a'.repeat(6 * 1024) } })
        assertError(big, 431, 'headers_too_large')
        const fits = await send(small.publicUrl, '/app/ok', { headers: { 'x-big': 'a'.repeat(2 * 1024) } })
        assert.equal(fits.status, 200)
      } finally {
        await small.stop()
      }
    })

    it('answers 413 payload_too_large to a declared length over maxBodyBytes without calling the upstream', async () => {
      const before = upstream.requests.length
      const outcome = await send(gw.publicUrl, '/limited/small', {
        method: 'POST',
        headers: { 'content-type': 'application/octet-stream' },
        body: Buffer.alloc(5000, 1),
      })
      assertError(outcome, 413, 'payload_too_large')
      await wait(50)
      assert.equal(upstream.requests.length, before, 'the upstream saw no request')
    })

    it('passes a body within maxBodyBytes', async () => {
      const end = nextEnd('/small')
      const outcome = await send(gw.publicUrl, '/limited/small', {
        method: 'POST',
        body: Buffer.alloc(1024, 1),
      })
      assert.equal(outcome.status, 200)
      assert.equal(outcome.body, 'got 1024')
      assert.deepEqual(await end, { url: '/small', bytes: 1024, how: 'end' })
    })

    it('stops a chunked body that grows past maxBodyBytes with 413 and aborts the upstream request', async () => {
      const { hostname, port } = new URL(gw.publicUrl)
      const upstreamEnd = nextEnd('/grow')
      const outcome = await new Promise<Outcome>((done) => {
        let answered = false
        const req = request(
          { hostname, port, path: '/limited/grow', method: 'POST', agent: false },
          (res) => {
            answered = true
            let body = ''
            res.setEncoding('utf8')
            res.on('data', (c: string) => {
              body += c
            })
            res.on('error', () => {})
            res.on('close', () =>
              done({ status: res.statusCode ?? 0, headers: res.headers, body, complete: res.complete }),
            )
          },
        )
        req.on('error', (error: NodeJS.ErrnoException) => {
          if (!answered) done({ status: 0, headers: {}, body: '', complete: false, error })
        })
        // No content-length: node:http sends this chunked, so the limit is only known while streaming.
        let sent = 0
        const timer = setInterval(() => {
          if (answered || req.destroyed || sent >= 16) {
            clearInterval(timer)
            if (!answered && !req.destroyed) req.end()
            return
          }
          req.write(Buffer.alloc(256, 1))
          sent++
        }, 10)
      })
      if (outcome.error === undefined) assertError(outcome, 413, 'payload_too_large')
      else assert.fail(`expected 413 before the response started, the connection was cut: ${outcome.error}`)

      const end = await upstreamEnd
      assert.equal(end.how, 'aborted', 'the upstream must not see the body end')
      assert.ok(end.bytes <= 1024, `the upstream received ${end.bytes} bytes, over the 1024 limit`)
    })
  })

  describe('path normalisation', () => {
    const seenAdmin = (): string[] =>
      upstream.requests.map((r) => r.url).filter((u) => /admin|private/i.test(decodeURIComponent(u)))

    for (const path of [
      '/app/admin/x',
      '/app/admin',
      '/app/public/../admin/x',
      '/app/public/%2e%2e/admin/x',
      '/app/public/%2E%2E/admin/x',
      '/app/public/.%2e/admin/x',
      '/app//admin/x',
      '/app/./admin/x',
      '/app/%61dmin/x',
      '/app/%61%64%6d%69%6e/x',
      '/app/public/../../app/admin/x',
    ]) {
      it(`answers 404 to ${path} and never forwards it`, async () => {
        const before = seenAdmin().length
        assertError(await send(gw.publicUrl, path), 404, 'not_found')
        assert.equal(seenAdmin().length, before)
      })
    }

    for (const path of [
      '/app/public/..%2fadmin/x',
      '/app/public/..%2Fadmin/x',
      '/app/public/..%5cadmin',
      '/app/public/..\\admin/x',
      '/app/public/..;/admin/x',
      '/app/a%00b',
      '/app/a%zzb',
    ]) {
      it(`answers 400 bad_request to ${path}`, async () => {
        const before = seenAdmin().length
        assertError(await send(gw.publicUrl, path), 400, 'bad_request')
        assert.equal(seenAdmin().length, before)
      })
    }

    it('forwards /ADMIN/x unchanged on a case-sensitive channel', async () => {
      const outcome = await send(gw.publicUrl, '/app/ADMIN/x')
      assert.equal(outcome.status, 200)
      assert.deepEqual(JSON.parse(outcome.body), { method: 'GET', url: '/ADMIN/x' })
    })

    it('answers 404 to /ADMIN/x on a caseInsensitive channel', async () => {
      const before = seenAdmin().length
      for (const path of ['/ci/ADMIN/x', '/CI/Admin/x', '/ci/%41dmin/x'])
        assertError(await send(gw.publicUrl, path), 404, 'not_found')
      assert.equal(seenAdmin().length, before)
    })

    it('answers 401 unauthenticated to a rule that needs a role', async () => {
      const before = seenAdmin().length
      const outcome = await send(gw.publicUrl, '/app/private/x')
      assertError(outcome, 401, 'unauthenticated')
      assert.equal(outcome.headers['www-authenticate'], 'Bearer, DPoP')
      assertError(await send(gw.publicUrl, '/app/public/../private/x'), 401, 'unauthenticated')
      assert.equal(seenAdmin().length, before)
    })
  })

  describe('requests Node cannot parse', () => {
    const good = 'GET /app/ok HTTP/1.1\r\nHost: gw\r\n\r\n'
    const malformed = 'GET /app/ok HTTP/1.1\r\nHost: gw\r\nNot A Header\r\n\r\n'
    const oversized = `GET /app/ok HTTP/1.1\r\nHost: gw\r\nx-big: ${'a'.repeat(20 * 1024)}\r\n\r\n`

    it('answers a malformed request head with 400 bad_request and closes', async () => {
      const raw = await rawExchange(gw.publicUrl, malformed)
      assert.match(raw, /^HTTP\/1\.1 400 /)
      assert.match(raw, /\r\nconnection: close\r\n/i)
      assert.equal(JSON.parse(rawErrorBody(raw)).error.code, 'bad_request')
      assertNoInternals(rawErrorBody(raw))
    })

    it('answers a bad request after a finished keep-alive exchange with 400 too', async () => {
      const raw = await rawExchange(gw.publicUrl, good, malformed)
      const second = raw.indexOf('HTTP/1.1 400 ')
      assert.match(raw, /^HTTP\/1\.1 200 /)
      assert.ok(second > 0, `no 400 after the first answer: ${raw}`)
      assert.equal(JSON.parse(rawErrorBody(raw.slice(second))).error.code, 'bad_request')
    })

    it('never answers a pipelined bad request in place of the pending good one', async () => {
      // The gateway must not write its 400/431 while /pending is still being answered: the client
      // would read it as the answer to the good request. Cutting the connection is honest.
      for (const bad of [malformed, oversized]) {
        const raw = await rawExchange(gw.publicUrl, `GET /app/pending HTTP/1.1\r\nHost: gw\r\n\r\n${bad}`)
        assert.ok(raw === '' || raw.startsWith('HTTP/1.1 200 '), `the good request got: ${raw.slice(0, 40)}`)
      }
    })

    it('never writes an error into the middle of a response being streamed', async () => {
      for (const bad of [malformed, oversized]) {
        const raw = await rawExchange(gw.publicUrl, 'GET /app/midbody HTTP/1.1\r\nHost: gw\r\n\r\n', bad)
        assert.match(raw, /^HTTP\/1\.1 200 /)
        const body = raw.slice(raw.indexOf('\r\n\r\n') + 4)
        assert.ok(!body.includes('HTTP/1.1'), `an error was written inside the body: ${body.slice(0, 60)}`)
      }
    })
  })

  describe('routing errors', () => {
    it('answers 404 not_found to an unknown channel', async () => {
      for (const path of ['/nope', '/api/request/nope/x', '/appx/y'])
        assertError(await send(gw.publicUrl, path), 404, 'not_found')
    })

    it('answers 405 method_not_allowed with Allow to a method outside the rule', async () => {
      const outcome = await send(gw.publicUrl, '/app/readonly/x', { method: 'POST', body: 'x' })
      assertError(outcome, 405, 'method_not_allowed')
      assert.equal(outcome.headers['allow'], 'GET, HEAD')
      const allowed = await send(gw.publicUrl, '/app/readonly/x')
      assert.equal(allowed.status, 200)
    })
  })

  describe('afterwards', () => {
    it('is still alive and answers a normal request 200', async () => {
      const res = await fetch(`${gw.publicUrl}/app/still-here`)
      assert.equal(res.status, 200)
      assert.deepEqual(await res.json(), { method: 'GET', url: '/still-here' })
      const health = await fetch(`${gw.publicUrl}/health`)
      assert.equal(health.status, 200)
      await health.arrayBuffer()
    })
  })
})
