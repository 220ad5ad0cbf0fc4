import assert from 'node:assert/strict'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { gatewayRejection } from '../../../../../test/support/rejection.ts'
import type { ResolvedAddress } from '../../net/safe-lookup.ts'
import { compilePolicy } from '../../policy/compile.ts'
import { PolicySet } from '../../policy/policy-set.ts'
import { type ActionRunner, createActionRunner } from '../test-helpers.ts'
import type { ToolDefinition } from '../types.ts'
import { createHttpFetch } from './http-fetch.ts'

interface Seen {
  method: string
  url: string
  headers: IncomingMessage['headers']
  body: string
}

interface Site {
  origin: string
  port: number
  seen: Seen[]
  close(): Promise<void>
}

function routes(req: IncomingMessage, res: ServerResponse, body: string): void {
  const url = new URL(req.url ?? '/', 'http://x')
  switch (url.pathname) {
    case '/json':
      res.setHeader('set-cookie', 'session=abc')
      res.setHeader('etag', '"v1"')
      res.setHeader('x-internal', 'leaky')
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ hello: 'world' }))
      return
    case '/echo':
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ method: req.method, headers: req.headers, body }))
      return
    case '/latin1':
      res
        .writeHead(200, { 'content-type': 'text/plain; charset=iso-8859-1' })
        .end(Buffer.from([0x63, 0x61, 0x66, 0xe9]))
      return
    case '/binary':
      res.writeHead(200, { 'content-type': 'image/png' }).end(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 1, 2]))
      return
    case '/broken-json':
      res.writeHead(200, { 'content-type': 'application/json' }).end('{not json')
      return
    case '/missing':
      res.writeHead(404, { 'content-type': 'text/plain' }).end('no such page')
      return
    case '/big':
      res.writeHead(200, { 'content-type': 'text/plain' }).end('x'.repeat(4096))
      return
    case '/redirect':
      res.writeHead(302, { location: url.searchParams.get('to') ?? '/json' }).end()
      return
    case '/hang':
      return
    default:
      res.writeHead(404).end()
  }
}

async function startSite(host = '127.0.0.1'): Promise<Site> {
  const seen: Seen[] = []
  const server: Server = createServer((req, res) => {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (chunk: string) => {
      body += chunk
    })
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body })
      routes(req, res, body)
    })
  })
  await new Promise<void>((ready) => server.listen(0, host, ready))
  const { port } = server.address() as AddressInfo
  return {
    origin: `http://${host}:${port}`,
    port,
    seen,
    async close() {
      server.closeAllConnections()
      await new Promise((done) => server.close(done))
    },
  }
}

type Data = {
  status: number
  url: string
  redirects: number
  headers: Record<string, string>
  bodyType: string
  body: unknown
}

describe('the http_fetch tool', () => {
  let site: Site
  let runner: ActionRunner
  const resolved: Record<string, string[]> = {
    'loopback.test': ['127.0.0.1'],
    'internal.test': ['10.0.0.1'],
    'wiki.test': ['127.0.0.1'],
    'elsewhere.test': ['127.0.0.1'],
  }
  const tool: ToolDefinition = createHttpFetch({
    resolve: async (host): Promise<ResolvedAddress[]> => {
      const addresses = resolved[host]
      if (addresses === undefined) throw Object.assign(new Error(`ENOTFOUND ${host}`), { code: 'ENOTFOUND' })
      return addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }))
    },
  })
  const local = { allowNetworks: ['127.0.0.1/32'] }
  const fetchData = async (
    action: string,
    params: Record<string, unknown>,
    options: Record<string, unknown> = local,
    timeoutMs = 5_000,
  ): Promise<{ data: Data; upstreamStatus: number }> => {
    const result = await runner.run(tool, action, params, { settings: { options, timeoutMs } })
    assert.ok('data' in result)
    return { data: result.data as Data, upstreamStatus: result.upstreamStatus }
  }

  before(async () => {
    site = await startSite()
    runner = createActionRunner()
  })
  after(async () => {
    await runner.close()
    await site.close()
  })

  it('answers JSON parsed, with the status and only the safe headers', async () => {
    const { data, upstreamStatus } = await fetchData('get', { url: `${site.origin}/json` })
    assert.equal(upstreamStatus, 200)
    assert.equal(data.status, 200)
    assert.equal(data.bodyType, 'json')
    assert.deepEqual(data.body, { hello: 'world' })
    assert.equal(data.headers['content-type'], 'application/json')
    assert.equal(data.headers['etag'], '"v1"')
    assert.equal(data.headers['set-cookie'], undefined)
    assert.equal(data.headers['x-internal'], undefined)
    assert.equal(data.url, `${site.origin}/json`)
  })

  it('answers text in its charset, bytes as base64, and bad JSON as text', async () => {
    let { data } = await fetchData('get', { url: `${site.origin}/latin1` })
    assert.deepEqual([data.bodyType, data.body], ['text', 'café'])
    ;({ data } = await fetchData('get', { url: `${site.origin}/binary` }))
    assert.equal(data.bodyType, 'base64')
    assert.deepEqual(data.body, { base64: Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 1, 2]).toString('base64') })
    ;({ data } = await fetchData('get', { url: `${site.origin}/broken-json` }))
    assert.deepEqual([data.bodyType, data.body], ['text', '{not json'])
  })

  it('answers an upstream 404 as data, not as an error', async () => {
    const { data, upstreamStatus } = await fetchData('get', { url: `${site.origin}/missing` })
    assert.equal(upstreamStatus, 404)
    assert.deepEqual([data.status, data.body], [404, 'no such page'])
  })

  it('answers HEAD with the status and headers and no body', async () => {
    const { data } = await fetchData('head', { url: `${site.origin}/json` })
    assert.deepEqual([data.status, data.bodyType, data.body], [200, 'none', null])
    assert.equal(site.seen.at(-1)!.method, 'HEAD')
  })

  it('posts a JSON body as JSON and a string as text, with the headers given', async () => {
    let { data } = await fetchData('post', {
      url: `${site.origin}/echo`,
      headers: { 'X-Trace': 'abc', Authorization: 'Bearer agent-own-token' },
      body: { a: [1, 2] },
    })
    let echo = data.body as { method: string; headers: Record<string, string>; body: string }
    assert.equal(echo.method, 'POST')
    assert.equal(echo.headers['content-type'], 'application/json; charset=utf-8')
    assert.equal(echo.headers['x-trace'], 'abc')
    assert.equal(echo.headers['authorization'], 'Bearer agent-own-token')
    assert.equal(echo.headers['user-agent'], '4runr-gateway')
    assert.equal(echo.body, '{"a":[1,2]}')
    ;({ data } = await fetchData('post', {
      url: `${site.origin}/echo`,
      headers: { 'content-type': 'application/xml' },
      body: '<a/>',
    }))
    echo = data.body as typeof echo
    assert.deepEqual([echo.headers['content-type'], echo.body], ['application/xml', '<a/>'])
    assert.equal(tool.actions['post']!.idempotent, false)
    assert.equal(tool.actions['get']!.idempotent, true)
  })

  it('follows redirects up to maxRedirects and fails past it with 502', async () => {
    const { data } = await fetchData('get', { url: `${site.origin}/redirect?to=/json` })
    assert.deepEqual([data.redirects, data.url], [1, `${site.origin}/json`])
    const err = await gatewayRejection(
      runner.run(
        tool,
        'get',
        { url: `${site.origin}/redirect?to=/json` },
        {
          settings: { options: { ...local, maxRedirects: 0 } },
        },
      ),
    )
    assert.deepEqual([err.code, err.details?.['reason']], ['upstream_error', 'too_many_redirects'])
  })

  it('refuses an answer over maxBytes with 502 and the upstream status', async () => {
    const err = await gatewayRejection(
      runner.run(
        tool,
        'get',
        { url: `${site.origin}/big` },
        { settings: { options: { ...local, maxBytes: 1024 } } },
      ),
    )
    assert.deepEqual(
      [err.code, err.status, err.details?.['reason'], err.details?.['upstreamStatus']],
      ['upstream_error', 502, 'too_large', 200],
    )
  })

  it('gives up at the deadline with 504 and stops when the call is aborted', async () => {
    let err = await gatewayRejection(
      runner.run(
        tool,
        'get',
        { url: `${site.origin}/hang` },
        { settings: { options: local, timeoutMs: 150 } },
      ),
    )
    assert.equal(err.code, 'upstream_timeout')
    const abort = new AbortController()
    setTimeout(() => abort.abort(), 50)
    err = await gatewayRejection(
      runner.run(
        tool,
        'get',
        { url: `${site.origin}/hang` },
        { settings: { options: local }, signal: abort.signal },
      ),
    )
    assert.deepEqual([err.code, err.details?.['reason']], ['upstream_error', 'aborted'])
  })

  it('lists every refused or malformed request header before anything is fetched', () => {
    const problems = runner.problems(tool, 'get', {
      url: 'http://example.com/',
      headers: {
        Host: 'internal',
        'Proxy-Authorization': 'x',
        'X-Forwarded-For': '10.0.0.1',
        'accept-encoding': 'gzip',
        'bad name': 'x',
        'x-ok': 'one\r\nInjected: yes',
        Authorization: 'Bearer mine',
      },
    })
    assert.deepEqual(
      problems.map((p) => p.path),
      [
        'headers.Host',
        'headers.Proxy-Authorization',
        'headers.X-Forwarded-For',
        'headers.accept-encoding',
        'headers.bad name',
        'headers.x-ok',
      ],
    )
    assert.deepEqual(runner.problems(tool, 'get', { url: 'http://example.com/', body: 'x' }).length, 1)
  })

  it('refuses the SSRF battery with 403 ssrf_blocked without reaching any server', async () => {
    const p = site.port
    const battery = [
      `http://127.0.0.1:${p}/json`,
      `http://localhost:${p}/json`,
      `http://[::1]:${p}/json`,
      `http://0.0.0.0:${p}/json`,
      'http://10.0.0.1/',
      'http://172.16.0.1/',
      'http://192.168.1.1/',
      'http://169.254.169.254/latest/meta-data/',
      `http://[::ffff:127.0.0.1]:${p}/json`,
      `http://2130706433:${p}/json`,
      `http://0x7f000001:${p}/json`,
      `http://0177.0.0.1:${p}/json`,
      'http://[fc00::1]/',
      'http://[fe80::1]/',
    ]
    const before = site.seen.length
    // The system resolver for real names (localhost); the injected one for a name it points at loopback.
    const systemResolver = createHttpFetch()
    const cases = [
      ...battery.map((url): [ToolDefinition, string] => [systemResolver, url]),
      [tool, `http://loopback.test:${p}/json`] as [ToolDefinition, string],
    ]
    for (const [fetcher, url] of cases) {
      const err = await gatewayRejection(runner.run(fetcher, 'get', { url }, { settings: { options: {} } }))
      assert.deepEqual(
        [err.code, err.status, err.details?.['reason']],
        ['forbidden', 403, 'ssrf_blocked'],
        url,
      )
    }
    assert.equal(site.seen.length, before, 'no request reached the local server')
  })

  it('refuses a redirect from an allowed host to a private one, without contacting it', async () => {
    const other = await startSite('127.0.0.2')
    try {
      for (const to of [`${other.origin}/json`, 'http://169.254.169.254/', `http://internal.test/`]) {
        const err = await gatewayRejection(
          runner.run(
            tool,
            'get',
            { url: `${site.origin}/redirect?to=${encodeURIComponent(to)}` },
            {
              settings: { options: local },
            },
          ),
        )
        assert.deepEqual([err.code, err.details?.['reason']], ['forbidden', 'ssrf_blocked'], to)
      }
      assert.deepEqual(other.seen, [])
    } finally {
      await other.close()
    }
  })

  it('refuses non-http schemes as ssrf_blocked', async () => {
    const err = await gatewayRejection(
      runner.run(tool, 'get', { url: 'file:///etc/passwd' }, { settings: { options: {} } }),
    )
    assert.deepEqual([err.code, err.details?.['reason']], ['forbidden', 'ssrf_blocked'])
  })

  it('says the tool is misconfigured when allowNetworks holds something that is not a network', async () => {
    const err = await gatewayRejection(
      runner.run(
        tool,
        'get',
        { url: `${site.origin}/json` },
        { settings: { options: { allowNetworks: ['nope'] } } },
      ),
    )
    assert.equal(err.code, 'tool_unavailable')
    assert.match(err.message, /allowNetworks\[0\]/)
  })
  it("judges every redirect hop against the policy's domain lists", async () => {
    const compiled = compilePolicy(
      {
        name: 'wiki',
        agents: { all: true },
        allow: [{ tool: 'http_fetch', actions: ['get'], domains: { allow: ['wiki.test', 'loopback.test'] } }],
        deny: [{ tool: 'http_fetch', domains: { deny: ['loopback.test'] } }],
      },
      'config',
      'test',
    )
    assert.ok(compiled.ok)
    const set = new PolicySet([compiled.policy], 'test')
    const agent = { id: 'a', name: 'a', labels: {}, roles: [] }
    const target = { kind: 'tool' as const, tool: 'http_fetch', action: 'get' }
    const decision = set.decide({
      agent,
      scope: 'http_fetch:get',
      intent: undefined,
      target,
      args: { url: `http://wiki.test:${site.port}/json` },
      request: { method: 'POST', path: '/', bytes: 0, ip: '' },
      now: Date.now(),
    })
    assert.equal(decision.decision, 'allow')
    const allowRedirectHost = set.redirectHostCheck(agent, target, decision.deciding)!
    const run = (to: string) =>
      runner.run(
        tool,
        'get',
        { url: `http://wiki.test:${site.port}/redirect?to=${encodeURIComponent(to)}` },
        { settings: { options: local }, allowRedirectHost },
      )
    // Within the allowed domain: followed.
    const ok = await run(`http://wiki.test:${site.port}/json`)
    assert.ok('data' in ok)
    assert.equal((ok.data as Data).redirects, 1)
    // Allowed by SSRF (same address), but not by the policy: refused before the hop is requested.
    const seen = site.seen.length
    const outside = await gatewayRejection(run(`http://elsewhere.test:${site.port}/json`))
    assert.equal(outside.code, 'policy_denied')
    assert.equal(outside.details?.['reason'], 'redirect_refused')
    assert.equal(outside.details?.['host'], 'elsewhere.test')
    // A domain a deny rule lists is refused even though the allow rule lists it too.
    const denied = await gatewayRejection(run(`http://loopback.test:${site.port}/json`))
    assert.equal(denied.details?.['reason'], 'redirect_refused')
    assert.equal(site.seen.length, seen + 2, 'only the redirecting requests reached the site')
  })
})
