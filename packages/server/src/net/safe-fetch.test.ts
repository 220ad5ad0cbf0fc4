import assert from 'node:assert/strict'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { type AllowNetworks, parseNetworks } from './allow-networks.ts'
import {
  createDispatcherCache,
  NetFetchError,
  type SafeFetchInput,
  type SafeFetchOptions,
  safeFetch,
  toGatewayError,
} from './safe-fetch.ts'
import type { ResolvedAddress, Resolver } from './safe-lookup.ts'

interface Seen {
  method: string
  url: string
  headers: IncomingMessage['headers']
  body: string
  remotePort: number | undefined
}

interface TestServer {
  port: number
  origin: string
  seen: Seen[]
  close(): Promise<void>
}

type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => void

async function startServer(handler: Handler, host = '127.0.0.1'): Promise<TestServer> {
  const seen: Seen[] = []
  const server = createServer((req, res) => {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (chunk: string) => {
      body += chunk
    })
    req.on('end', () => {
      seen.push({
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body,
        remotePort: req.socket.remotePort,
      })
      handler(req, res, body)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, host, resolve))
  const port = (server.address() as { port: number }).port
  return {
    port,
    origin: `http://${host}:${port}`,
    seen,
    async close() {
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}

function allow(...cidrs: string[]): AllowNetworks {
  const result = parseNetworks(cidrs)
  assert.ok(result.ok)
  return result.networks
}

function resolverOf(answers: Record<string, string[]>): Resolver & { calls: string[] } {
  const calls: string[] = []
  const resolve = async (host: string): Promise<ResolvedAddress[]> => {
    calls.push(host)
    const addresses = answers[host]
    if (addresses === undefined) throw Object.assign(new Error(`ENOTFOUND ${host}`), { code: 'ENOTFOUND' })
    return addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }))
  }
  return Object.assign(resolve, { calls })
}

const LOCAL = allow('127.0.0.1/32')

function options(overrides: Partial<SafeFetchOptions> = {}): SafeFetchOptions {
  return { allowNetworks: LOCAL, maxBytes: 1_000_000, maxRedirects: 3, timeoutMs: 5_000, ...overrides }
}

async function failure(input: SafeFetchInput, opts: SafeFetchOptions): Promise<NetFetchError> {
  try {
    await safeFetch(input, opts)
  } catch (err) {
    assert.ok(err instanceof NetFetchError, String(err))
    return err
  }
  assert.fail(`${input.url} was fetched`)
}

function json(res: ServerResponse, status: number, value: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(value))
}

/** The routes every test server answers. */
const routes: Handler = (req, res, body) => {
  const url = new URL(req.url ?? '/', 'http://x')
  const path = url.pathname
  if (path === '/echo') {
    res.setHeader('set-cookie', ['a=1', 'b=2'])
    json(res, 200, { method: req.method, url: req.url, headers: req.headers, body })
  } else if (path === '/redirect') {
    res.writeHead(Number(url.searchParams.get('status') ?? 302), {
      location: url.searchParams.get('to') ?? '/',
    })
    res.end('moved')
  } else if (path.startsWith('/chain/')) {
    const n = Number(path.slice('/chain/'.length))
    if (n === 0) res.end('end of chain')
    else res.writeHead(302, { location: `/chain/${n - 1}` }).end()
  } else if (path === '/no-location') {
    res.writeHead(302).end('nowhere to go')
  } else if (path.startsWith('/size/')) {
    const n = Number(path.slice('/size/'.length))
    res.writeHead(200, { 'content-length': String(n) }).end('x'.repeat(n))
  } else if (path.startsWith('/chunked/')) {
    const n = Number(path.slice('/chunked/'.length))
    res.writeHead(200)
    res.write('y'.repeat(Math.floor(n / 2)))
    res.end('y'.repeat(n - Math.floor(n / 2)))
  } else if (path === '/hang') {
    // Never answers: the client's deadline or signal has to end the exchange.
  } else {
    res.writeHead(404).end('not found')
  }
}

describe('safeFetch refuses the SSRF battery with ssrf_blocked (403 forbidden)', () => {
  let server: TestServer
  before(async () => {
    server = await startServer(routes)
  })
  after(() => server.close())

  it('refuses every loopback, private, link-local, metadata and unspecified spelling', async () => {
    const p = server.port
    const resolve = resolverOf({
      'loopback.test': ['127.0.0.1'],
      'mixed.test': ['93.184.215.14', '10.0.0.1'],
    })
    const battery: [string, string, Resolver | undefined][] = [
      [`http://127.0.0.1:${p}/echo`, 'loopback', undefined],
      [`http://localhost:${p}/echo`, 'loopback', undefined],
      [`http://[::1]:${p}/echo`, 'loopback', undefined],
      [`http://0.0.0.0:${p}/echo`, 'unspecified', undefined],
      ['http://10.0.0.1/', 'private', undefined],
      ['http://172.16.0.1/', 'private', undefined],
      ['http://192.168.1.1/', 'private', undefined],
      ['http://169.254.169.254/latest/meta-data/', 'metadata', undefined],
      [`http://[::ffff:127.0.0.1]:${p}/echo`, 'loopback', undefined],
      [`http://2130706433:${p}/echo`, 'loopback', undefined],
      [`http://0x7f000001:${p}/echo`, 'loopback', undefined],
      [`http://0177.0.0.1:${p}/echo`, 'loopback', undefined],
      ['http://[fc00::1]/', 'unique_local', undefined],
      ['http://[fe80::1]/', 'link_local', undefined],
      [`http://loopback.test:${p}/echo`, 'loopback', resolve],
      [`http://mixed.test:${p}/echo`, 'private', resolve],
      [`https://127.0.0.1:${p}/echo`, 'loopback', undefined],
    ]
    for (const [url, category, resolver] of battery) {
      const opts = options({ allowNetworks: allow(), ...(resolver ? { resolve: resolver } : {}) })
      const err = await failure({ url, method: 'GET' }, opts)
      assert.equal(err.reason, 'ssrf_blocked', url)
      assert.equal(err.category, category, url)
      const gateway = toGatewayError(err)
      assert.equal(gateway.code, 'forbidden', url)
      assert.equal(gateway.status, 403, url)
      assert.equal(gateway.details?.reason, 'ssrf_blocked', url)
      assert.equal(gateway.details?.category, category, url)
    }
    assert.deepEqual(server.seen, [], 'no request reached the local server')
  })

  it('refuses a redirect from an allowed host to a private one, without connecting to it', async () => {
    const other = await startServer(routes, '127.0.0.2')
    try {
      const resolve = resolverOf({ 'internal.test': ['10.0.0.1'] })
      for (const [to, category] of [
        [`http://[::1]:${server.port}/echo`, 'loopback'],
        ['http://10.0.0.1/', 'private'],
        ['http://169.254.169.254/latest/meta-data/iam/', 'metadata'],
        [`${other.origin}/echo`, 'loopback'],
        ['http://internal.test/', 'private'],
      ] as const) {
        const url = `${server.origin}/redirect?to=${encodeURIComponent(to)}`
        const err = await failure({ url, method: 'GET' }, options({ resolve }))
        assert.equal(err.reason, 'ssrf_blocked', to)
        assert.equal(err.category, category, to)
        assert.equal(toGatewayError(err).status, 403)
      }
      assert.deepEqual(other.seen, [], 'the private target was never contacted')
    } finally {
      await other.close()
    }
  })

  it('refuses non-http schemes as forbidden, in the request and in a redirect', async () => {
    for (const url of [
      'file:///etc/passwd',
      'ftp://127.0.0.1/',
      'gopher://127.0.0.1:70/_x',
      'data:text/plain,x',
    ]) {
      const err = await failure({ url, method: 'GET' }, options())
      assert.equal(err.reason, 'bad_scheme', url)
      const gateway = toGatewayError(err)
      assert.equal(gateway.code, 'forbidden')
      assert.equal(gateway.details?.reason, 'ssrf_blocked')
    }
    const url = `${server.origin}/redirect?to=${encodeURIComponent('file:///etc/passwd')}`
    assert.equal((await failure({ url, method: 'GET' }, options())).reason, 'bad_scheme')
  })

  it('connects only to the address it checked, even when DNS answers differently next time', async () => {
    // A rebinding DNS: harmless on the first answer, private ever after.
    let calls = 0
    const rebinding: Resolver = async () => {
      calls++
      return [{ address: calls === 1 ? '127.0.0.1' : '10.0.0.1', family: 4 }]
    }
    const before = server.seen.length
    const res = await safeFetch(
      { url: `http://rebind.test:${server.port}/echo`, method: 'GET' },
      options({ resolve: rebinding }),
    )
    assert.equal(res.status, 200)
    assert.equal(calls, 1, 'the name was resolved exactly once')
    assert.equal(server.seen.length, before + 1, 'the checked address received the request')
    assert.equal(JSON.parse(res.body.toString()).headers.host, `rebind.test:${server.port}`)

    // And the other way round: a private first answer is refused, never retried.
    let second = 0
    const flipping: Resolver = async () => {
      second++
      return [{ address: second === 1 ? '10.0.0.1' : '127.0.0.1', family: 4 }]
    }
    const err = await failure(
      { url: `http://flip.test:${server.port}/echo`, method: 'GET' },
      options({ resolve: flipping }),
    )
    assert.equal(err.reason, 'ssrf_blocked')
    assert.equal(second, 1)
    assert.equal(server.seen.length, before + 1)
  })
})

describe('safeFetch against local servers in an allowed network', () => {
  let server: TestServer
  let other: TestServer
  before(async () => {
    server = await startServer(routes)
    other = await startServer(routes)
  })
  after(async () => {
    await server.close()
    await other.close()
  })

  it('GETs status, headers (repeated ones as arrays), body and the final URL without its fragment', async () => {
    const res = await safeFetch({ url: `${server.origin}/echo?q=1#frag`, method: 'GET' }, options())
    assert.equal(res.status, 200)
    assert.equal(res.redirects, 0)
    assert.equal(res.finalUrl, `${server.origin}/echo?q=1`)
    assert.deepEqual(res.headers['set-cookie'], ['a=1', 'b=2'])
    assert.equal(res.headers['content-type'], 'application/json')
    const echoed = JSON.parse(res.body.toString())
    assert.equal(echoed.method, 'GET')
    assert.equal(echoed.url, '/echo?q=1')
  })

  it('sends HEAD and returns the headers with an empty body', async () => {
    const res = await safeFetch({ url: `${server.origin}/size/1234`, method: 'HEAD' }, options())
    assert.equal(res.status, 200)
    assert.equal(res.headers['content-length'], '1234')
    assert.equal(res.body.length, 0)
    assert.equal(server.seen.at(-1)?.method, 'HEAD')
  })

  it('POSTs a string or byte body with the caller headers', async () => {
    const res = await safeFetch(
      {
        url: `${server.origin}/echo`,
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-Trace': 'abc' },
        body: '{"a":1}',
      },
      options(),
    )
    const echoed = JSON.parse(res.body.toString())
    assert.equal(echoed.method, 'POST')
    assert.equal(echoed.body, '{"a":1}')
    assert.equal(echoed.headers['content-type'], 'application/json')
    assert.equal(echoed.headers['x-trace'], 'abc')
    const bytes = await safeFetch(
      { url: `${server.origin}/echo`, method: 'POST', body: new TextEncoder().encode('raw bytes') },
      options(),
    )
    assert.equal(JSON.parse(bytes.body.toString()).body, 'raw bytes')
  })

  it('follows a redirect chain up to maxRedirects and counts the hops', async () => {
    const res = await safeFetch(
      { url: `${server.origin}/chain/3`, method: 'GET' },
      options({ maxRedirects: 3 }),
    )
    assert.equal(res.status, 200)
    assert.equal(res.body.toString(), 'end of chain')
    assert.equal(res.redirects, 3)
    assert.equal(res.finalUrl, `${server.origin}/chain/0`)
  })

  it('fails with too_many_redirects (502) one redirect past the cap', async () => {
    const err = await failure(
      { url: `${server.origin}/chain/3`, method: 'GET' },
      options({ maxRedirects: 2 }),
    )
    assert.equal(err.reason, 'too_many_redirects')
    assert.equal(toGatewayError(err).code, 'upstream_error')
    const none = await failure(
      { url: `${server.origin}/chain/1`, method: 'GET' },
      options({ maxRedirects: 0 }),
    )
    assert.equal(none.reason, 'too_many_redirects')
  })

  it('returns a redirect status without a Location as the answer', async () => {
    const res = await safeFetch({ url: `${server.origin}/no-location`, method: 'GET' }, options())
    assert.equal(res.status, 302)
    assert.equal(res.body.toString(), 'nowhere to go')
  })

  it('turns a POST into a bodiless GET on 303, 301 and 302, and keeps it on 307 and 308', async () => {
    for (const [status, method, body] of [
      [303, 'GET', ''],
      [301, 'GET', ''],
      [302, 'GET', ''],
      [307, 'POST', 'payload'],
      [308, 'POST', 'payload'],
    ] as const) {
      const url = `${server.origin}/redirect?status=${status}&to=/echo`
      const res = await safeFetch(
        { url, method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'payload' },
        options(),
      )
      const echoed = JSON.parse(res.body.toString())
      assert.equal(echoed.method, method, String(status))
      assert.equal(echoed.body, body, String(status))
      assert.equal(
        echoed.headers['content-type'],
        method === 'GET' ? undefined : 'text/plain',
        String(status),
      )
      assert.equal(res.redirects, 1)
    }
    const head = await safeFetch(
      { url: `${server.origin}/redirect?status=303&to=/echo`, method: 'HEAD' },
      options(),
    )
    assert.equal(head.status, 200)
    assert.equal(server.seen.at(-1)?.method, 'HEAD')
  })

  it('drops Authorization and Cookie on a cross-origin redirect and keeps them on a same-origin one', async () => {
    const headers = { authorization: 'Bearer sekrit', cookie: 'sid=sekrit', 'x-keep': 'yes' }
    const same = await safeFetch(
      { url: `${server.origin}/redirect?to=/echo`, method: 'GET', headers },
      options(),
    )
    const sameSeen = JSON.parse(same.body.toString()).headers
    assert.equal(sameSeen.authorization, 'Bearer sekrit')
    assert.equal(sameSeen.cookie, 'sid=sekrit')

    const cross = await safeFetch(
      {
        url: `${server.origin}/redirect?to=${encodeURIComponent(`${other.origin}/redirect?to=${encodeURIComponent(`${server.origin}/echo`)}`)}`,
        method: 'GET',
        headers,
      },
      options(),
    )
    assert.equal(cross.redirects, 2)
    const crossSeen = JSON.parse(cross.body.toString()).headers
    assert.equal(crossSeen.authorization, undefined, 'not restored on the way back')
    assert.equal(crossSeen.cookie, undefined)
    assert.equal(crossSeen['x-keep'], 'yes')
    assert.equal(other.seen.at(-1)?.headers.authorization, undefined)
  })

  it('strips userinfo from a redirect target instead of sending it', async () => {
    const to = `http://user:pw@127.0.0.1:${server.port}/echo`
    const res = await safeFetch(
      { url: `${server.origin}/redirect?to=${encodeURIComponent(to)}`, method: 'GET' },
      options(),
    )
    assert.equal(JSON.parse(res.body.toString()).headers.authorization, undefined)
    assert.equal(res.finalUrl, `${server.origin}/echo`)
  })

  it('refuses a URL with userinfo as bad_url, without echoing it', async () => {
    const before = server.seen.length
    const err = await failure(
      { url: `http://user:s3cret@127.0.0.1:${server.port}/echo`, method: 'GET' },
      options(),
    )
    assert.equal(err.reason, 'bad_url')
    assert.equal(toGatewayError(err).code, 'bad_request')
    assert.doesNotMatch(err.message, /s3cret/)
    assert.equal(server.seen.length, before)
  })

  it('accepts a body of exactly maxBytes and refuses one byte more with too_large (502)', async () => {
    const res = await safeFetch(
      { url: `${server.origin}/chunked/1000`, method: 'GET' },
      options({ maxBytes: 1000 }),
    )
    assert.equal(res.body.length, 1000)
    for (const path of ['/chunked/1001', '/size/1001']) {
      const err = await failure(
        { url: `${server.origin}${path}?token=s3cret`, method: 'GET' },
        options({ maxBytes: 1000 }),
      )
      assert.equal(err.reason, 'too_large', path)
      assert.equal(err.upstreamStatus, 200)
      assert.doesNotMatch(err.message, /s3cret/)
      const gateway = toGatewayError(err)
      assert.equal(gateway.code, 'upstream_error')
      assert.equal(gateway.details?.upstreamStatus, 200)
    }
  })

  it('aborts an endless upstream body as soon as it passes maxBytes', async () => {
    let written = 0
    let closed!: () => void
    const upstreamClosed = new Promise<void>((resolve) => {
      closed = resolve
    })
    const endless = await startServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' })
      const chunk = Buffer.alloc(16 * 1024, 1)
      const timer = setInterval(() => {
        written += chunk.length
        res.write(chunk)
      }, 2)
      res.on('close', () => {
        clearInterval(timer)
        closed()
      })
    })
    try {
      const err = await failure({ url: `${endless.origin}/`, method: 'GET' }, options({ maxBytes: 100_000 }))
      assert.equal(err.reason, 'too_large')
      await upstreamClosed
      assert.ok(written < 1_000_000, `the upstream wrote ${written} bytes before being cut off`)
    } finally {
      await endless.close()
    }
  })

  it('fails with timeout (504) when the upstream does not answer before the deadline', async () => {
    const started = Date.now()
    const err = await failure(
      { url: `${server.origin}/hang?token=s3cret`, method: 'GET' },
      options({ timeoutMs: 200 }),
    )
    assert.equal(err.reason, 'timeout')
    assert.ok(Date.now() - started < 2_000)
    assert.doesNotMatch(err.message, /s3cret/)
    const gateway = toGatewayError(err)
    assert.equal(gateway.code, 'upstream_timeout')
    assert.equal(gateway.status, 504)
  })

  it('counts a slowly trickling body against the same deadline', async () => {
    const trickle = await startServer((_req, res) => {
      res.writeHead(200)
      const timer = setInterval(() => res.write('.'), 50)
      res.on('close', () => clearInterval(timer))
    })
    try {
      const started = Date.now()
      const err = await failure({ url: `${trickle.origin}/`, method: 'GET' }, options({ timeoutMs: 300 }))
      assert.equal(err.reason, 'timeout')
      assert.ok(Date.now() - started < 2_000)
    } finally {
      await trickle.close()
    }
  })

  it('fails with aborted when the caller signal fires, and does not start when it already has', async () => {
    const controller = new AbortController()
    const pending = failure(
      { url: `${server.origin}/hang`, method: 'GET' },
      options({ signal: controller.signal }),
    )
    await sleep(50)
    controller.abort()
    const err = await pending
    assert.equal(err.reason, 'aborted')
    assert.equal(toGatewayError(err).code, 'upstream_error')

    const before = server.seen.length
    const early = await failure(
      { url: `${server.origin}/echo`, method: 'GET' },
      options({ signal: AbortSignal.abort() }),
    )
    assert.equal(early.reason, 'aborted')
    assert.equal(server.seen.length, before)
  })

  it('fails with connect_failed (502) when nothing listens at the address', async () => {
    const gone = await startServer(routes)
    await gone.close()
    const err = await failure({ url: `${gone.origin}/`, method: 'GET' }, options())
    assert.equal(err.reason, 'connect_failed')
    assert.equal(toGatewayError(err).code, 'upstream_error')
    const unknown = await failure(
      { url: 'http://nowhere.test/', method: 'GET' },
      options({ resolve: resolverOf({}) }),
    )
    assert.equal(unknown.reason, 'connect_failed')
    assert.match(unknown.message, /nowhere\.test/)
  })

  it('refuses malformed URLs with bad_url (400)', async () => {
    for (const url of [
      'not a url',
      'http://',
      '//example.com/',
      'http://exa mple.com/',
      'http://a..b/',
      `http://x.test/${'a'.repeat(9000)}`,
    ]) {
      const err = await failure({ url, method: 'GET' }, options())
      assert.equal(err.reason, 'bad_url', url.slice(0, 40))
      assert.equal(toGatewayError(err).code, 'bad_request')
    }
  })

  it('refuses framing headers, bad header names or values and a body on GET with bad_request', async () => {
    const cases: SafeFetchInput[] = [
      { url: `${server.origin}/echo`, method: 'GET', headers: { Host: 'metadata.internal' } },
      {
        url: `${server.origin}/echo`,
        method: 'POST',
        headers: { 'Transfer-Encoding': 'chunked' },
        body: 'x',
      },
      { url: `${server.origin}/echo`, method: 'GET', headers: { 'bad name': 'x' } },
      { url: `${server.origin}/echo`, method: 'GET', headers: { 'x-a': 'v\r\nx-injected: s3cret' } },
      { url: `${server.origin}/echo`, method: 'GET', body: 'x' },
      { url: `${server.origin}/echo`, method: 'DELETE' as 'GET' },
    ]
    const before = server.seen.length
    for (const input of cases) {
      const err = await failure(input, options())
      assert.equal(err.reason, 'bad_request', JSON.stringify(input.headers ?? input.method))
      assert.doesNotMatch(err.message, /s3cret/)
      assert.equal(toGatewayError(err).code, 'bad_request')
    }
    assert.equal(server.seen.length, before)
  })
})

describe('createDispatcherCache', () => {
  it('reuses one keep-alive agent per SSRF settings, so a second fetch neither reconnects nor resolves', async () => {
    const server = await startServer(routes)
    const cache = createDispatcherCache()
    try {
      const resolve = resolverOf({ 'app.test': ['127.0.0.1'] })
      const opts = options({ resolve, dispatcherCache: cache })
      await safeFetch({ url: `http://app.test:${server.port}/echo`, method: 'GET' }, opts)
      // undici hands a connection back to its pool a moment after the body ends.
      await sleep(20)
      await safeFetch({ url: `http://app.test:${server.port}/echo`, method: 'GET' }, opts)
      assert.equal(server.seen.length, 2)
      assert.equal(server.seen[0]!.remotePort, server.seen[1]!.remotePort, 'one connection')
      assert.deepEqual(resolve.calls, ['app.test'])

      assert.equal(cache.get(opts), cache.get({ allowNetworks: allow('127.0.0.1'), resolve }))
      assert.notEqual(cache.get(opts), cache.get({ allowNetworks: allow('127.0.0.0/8'), resolve }))
      assert.notEqual(cache.get(opts), cache.get({ allowNetworks: LOCAL, resolve: resolverOf({}) }))
    } finally {
      await cache.close()
      await server.close()
    }
  })

  it('closes the oldest agent beyond its size', async () => {
    const cache = createDispatcherCache(2)
    const first = cache.get({ allowNetworks: allow('10.0.0.1') })
    cache.get({ allowNetworks: allow('10.0.0.2') })
    cache.get({ allowNetworks: allow('10.0.0.3') })
    await assert.rejects(first.request({ origin: 'http://10.0.0.1', path: '/', method: 'GET' }), {
      code: 'UND_ERR_CLOSED',
    })
    assert.notEqual(cache.get({ allowNetworks: allow('10.0.0.1') }), first)
    await cache.close()
  })
})
