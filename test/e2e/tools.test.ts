/**
 * Every tool end to end (issue 6): a real gateway in this process, the fake SerpAPI, OpenAI and
 * Gmail upstreams and a local web site, policies allowing the calls, and the credentials set
 * through the admin API as an operator would. The fakes accept only the real credentials, so a
 * call that works proves the gateway injected them; the agent only ever holds its own token.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, beforeEach, describe, it } from 'node:test'
import { type FakeUpstreams, startFakeUpstreams } from '../../packages/server/src/fakes/index.ts'
import { type ConnectionWatch, watchConnections } from '../../packages/server/src/tools/test-helpers.ts'
import { startTestGateway, type TestGateway } from '../support/gateway.ts'
import { agentToken, deleteSecret, expectError, putSecret } from '../support/tools.ts'

const credentials = {
  serpapi: `serp-${randomBytes(12).toString('hex')}`,
  openai: `sk-${randomBytes(12).toString('hex')}`,
  gmail: `ya29.${randomBytes(12).toString('hex')}`,
}
const allScopes = [
  'serpapi:search',
  'openai:chat',
  'openai:embeddings',
  'gmail:send',
  'gmail:profile',
  'http_fetch:get',
  'http_fetch:head',
  'http_fetch:post',
].join(' ')

interface ToolAnswer<T = unknown> {
  data: T
  metadata: {
    tool: string
    action: string
    correlationId: string
    cached: boolean
    attempts: number
    upstreamStatus: number
    durationMs: number
  }
}

/** The problems listed by a 400 answer. */
function problemsOf(error: { details?: Record<string, unknown> }): Array<{ path: string; message: string }> {
  const problems = error.details?.['problems']
  assert.ok(Array.isArray(problems), JSON.stringify(error))
  return problems as Array<{ path: string; message: string }>
}

/** A small web site on 127.0.0.1 for http_fetch. */
async function startSite(): Promise<{ url: string; port: number; server: Server }> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (c: string) => {
      body += c
    })
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://site')
      if (url.pathname === '/page') {
        res
          .writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'set-cookie': 'a=1' })
          .end('<h1>hi</h1>')
      } else if (url.pathname === '/echo') {
        res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(JSON.stringify({ method: req.method, body }))
      } else if (url.pathname === '/redirect') {
        res.writeHead(302, { location: url.searchParams.get('to') ?? '/page' }).end()
      } else if (url.pathname === '/big') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('x'.repeat(10_000))
      } else {
        res.writeHead(404).end()
      }
    })
  })
  await new Promise<void>((ready) => server.listen(0, '127.0.0.1', ready))
  const { port } = server.address() as AddressInfo
  return { url: `http://127.0.0.1:${port}`, port, server }
}

describe('tools end to end', () => {
  let fakes: FakeUpstreams
  let openaiWatch: ConnectionWatch
  let site: Awaited<ReturnType<typeof startSite>>
  let gw: TestGateway
  let token: string

  const call = (path: string, body: unknown, bearer = token, headers: Record<string, string> = {}) =>
    fetch(`${gw.publicUrl}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json', ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    })
  const tool = async <T>(
    name: string,
    action: string,
    params: unknown,
    bearer = token,
  ): Promise<ToolAnswer<T>> => {
    const res = await call(`/v1/tools/${name}/${action}`, params, bearer)
    const text = await res.text()
    assert.equal(res.status, 200, text)
    for (const value of Object.values(credentials))
      assert.ok(!text.includes(value), 'no credential in the answer')
    return JSON.parse(text) as ToolAnswer<T>
  }

  before(async () => {
    fakes = await startFakeUpstreams({ credentials })
    openaiWatch = await watchConnections(fakes.openai.url)
    site = await startSite()
    gw = await startTestGateway({
      gateway: { logLevel: 'info' },
      tools: {
        serpapi: { url: fakes.serpapi.url },
        openai: { url: openaiWatch.url },
        gmail: { url: fakes.gmail.url },
        http_fetch: { allowNetworks: ['127.0.0.1/32'], maxBytes: 4096 },
      },
      policies: [
        {
          name: 'tool-users',
          agents: { names: ['tool-bot', 'narrow-bot'] },
          allow: [
            { tool: 'serpapi', actions: ['search'] },
            { tool: 'openai', actions: ['chat', 'embeddings'] },
            { tool: 'gmail', actions: ['send', 'profile'] },
            { tool: 'http_fetch', actions: ['get', 'head', 'post'] },
          ],
        },
        {
          name: 'redacted-search',
          agents: { names: ['redact-bot', 'redact-bot-2'] },
          allow: [
            { tool: 'serpapi', actions: ['search'], responseFilter: { redact: ['email', 'phone', 'card'] } },
            { tool: 'openai', actions: ['chat'], responseFilter: { redact: ['email'] } },
          ],
        },
      ],
    })
    token = await agentToken(gw, 'tool-bot', allScopes)
    await putSecret(gw, 'serpapi_key', credentials.serpapi)
    await putSecret(gw, 'openai_key', credentials.openai)
    await putSecret(gw, 'gmail_token', credentials.gmail)
  })
  after(async () => {
    await gw?.stop()
    await openaiWatch?.close()
    await fakes?.close()
    site?.server.closeAllConnections()
    await new Promise((done) => site?.server.close(done))
  })
  beforeEach(() => {
    fakes.serpapi.faults.clear()
    fakes.openai.faults.clear()
    fakes.gmail.faults.clear()
  })

  describe('every action of every tool', () => {
    it('serpapi.search answers the search, with the key injected as api_key', async () => {
      const answer = await tool<{ organic_results: unknown[] }>('serpapi', 'search', {
        q: 'gateways',
        num: 4,
      })
      assert.equal(answer.data.organic_results.length, 4)
      assert.deepEqual(
        [answer.metadata.tool, answer.metadata.action, answer.metadata.cached, answer.metadata.attempts],
        ['serpapi', 'search', false, 1],
      )
      assert.equal(answer.metadata.upstreamStatus, 200)
      assert.equal(typeof answer.metadata.durationMs, 'number')
      assert.equal(typeof answer.metadata.correlationId, 'string')
      const seen = fakes.serpapi.requests.at(-1)!
      assert.equal(seen.authorized, true, 'the fake saw the real key')
      assert.equal(seen.query['q'], 'gateways')
    })

    it('openai.chat answers the completion, with the key injected as a bearer token', async () => {
      const answer = await tool<{ choices: Array<{ message: { content: string } }> }>('openai', 'chat', {
        model: 'gpt-4o-mini',
        messages: [{ role: 'user', content: 'ping' }],
      })
      assert.equal(answer.data.choices[0]!.message.content, 'Echo: ping')
      assert.equal(fakes.openai.requests.at(-1)!.authorized, true)
    })

    it('openai.chat with stream: true answers the upstream server-sent events, usage chunk included', async () => {
      const res = await call('/v1/tools/openai/chat', {
        model: 'gpt-4o-mini',
        messages: [{ role: 'user', content: 'stream me' }],
        stream: true,
      })
      assert.equal(res.status, 200)
      assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/)
      const text = await res.text()
      assert.ok(text.endsWith('data: [DONE]\n\n'))
      const chunks = text
        .split('\n\n')
        .filter((e) => e.startsWith('data: {'))
        .map(
          (e) =>
            JSON.parse(e.slice(6)) as { choices: Array<{ delta: { content?: string } }>; usage?: unknown },
        )
      assert.equal(chunks.map((c) => c.choices[0]?.delta.content ?? '').join(''), 'Echo: stream me')
      assert.ok(chunks.at(-1)!.usage, 'the usage chunk is passed on')
    })

    it('openai.embeddings answers the vectors', async () => {
      const answer = await tool<{ data: Array<{ embedding: number[] }> }>('openai', 'embeddings', {
        model: 'text-embedding-3-small',
        input: 'hello',
      })
      assert.equal(answer.data.data[0]!.embedding.length, 8)
      assert.equal(fakes.openai.requests.at(-1)!.path, '/v1/embeddings')
    })

    it('gmail.send sends the message the mailbox decodes, with the token injected', async () => {
      const answer = await tool<{ id: string }>('gmail', 'send', {
        to: 'team@example.com',
        subject: 'Statusbericht für Q3 ✓',
        text: 'All green.\nSee you.',
      })
      const sent = fakes.gmail.sent.at(-1)!
      assert.equal(sent.id, answer.data.id)
      assert.deepEqual(
        [sent.to, sent.subject, sent.body],
        ['team@example.com', 'Statusbericht für Q3 ✓', 'All green.\r\nSee you.'],
      )
      assert.equal(fakes.gmail.requests.at(-1)!.authorized, true)
    })

    it('gmail.profile answers the mailbox address', async () => {
      const answer = await tool<{ emailAddress: string }>('gmail', 'profile', {})
      assert.equal(answer.data.emailAddress, 'agent@example.com')
    })

    it('http_fetch.get, head and post reach a site in an allowed network', async () => {
      const got = await tool<{ status: number; body: string; headers: Record<string, string> }>(
        'http_fetch',
        'get',
        {
          url: `${site.url}/page`,
        },
      )
      assert.deepEqual([got.data.status, got.data.body], [200, '<h1>hi</h1>'])
      assert.equal(got.data.headers['set-cookie'], undefined)
      const head = await tool<{ status: number; body: null }>('http_fetch', 'head', {
        url: `${site.url}/page`,
      })
      assert.deepEqual([head.data.status, head.data.body], [200, null])
      const posted = await tool<{ body: { method: string; body: string } }>('http_fetch', 'post', {
        url: `${site.url}/echo`,
        body: { n: 1 },
      })
      assert.deepEqual(posted.data.body, { method: 'POST', body: '{"n":1}' })
    })
  })

  it('lists only the tools and actions the token and policies permit, with their parameter schemas', async () => {
    const list = async (bearer: string) => {
      const res = await fetch(`${gw.publicUrl}/v1/tools`, { headers: { authorization: `Bearer ${bearer}` } })
      assert.equal(res.status, 200)
      const body = (await res.json()) as {
        tools: Array<{ name: string; actions: Array<{ name: string; params: { type: string } }> }>
      }
      return body.tools
    }
    const all = await list(token)
    assert.deepEqual(all.map((t) => `${t.name}:${t.actions.map((a) => a.name).join(',')}`).sort(), [
      'gmail:send,profile',
      'http_fetch:get,head,post',
      'openai:chat,embeddings',
      'serpapi:search',
    ])
    assert.equal(all.find((t) => t.name === 'serpapi')!.actions[0]!.params.type, 'object')
    const narrow = await list(await agentToken(gw, 'narrow-bot', 'serpapi:search gmail:profile'))
    assert.deepEqual(
      narrow.map((t) => `${t.name}:${t.actions.map((a) => a.name).join(',')}`),
      ['serpapi:search', 'gmail:profile'],
    )
  })

  it('serves POST /api/proxy-request like the tool route, with the token in the body', async () => {
    const proxy = (body: unknown) =>
      fetch(`${gw.publicUrl}/api/proxy-request`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      })
    const res = await proxy({
      agent_token: token,
      tool: 'serpapi',
      action: 'search',
      params: { q: 'compat' },
    })
    const text = await res.text()
    assert.equal(res.status, 200, text)
    const answer = JSON.parse(text) as ToolAnswer<{ search_parameters: { q: string } }>
    assert.equal(answer.data.search_parameters.q, 'compat')
    assert.deepEqual([answer.metadata.tool, answer.metadata.action], ['serpapi', 'search'])
    assert.equal(fakes.serpapi.requests.at(-1)!.authorized, true)

    await expectError(
      await proxy({ tool: 'serpapi', action: 'search', params: { q: 'x' } }),
      401,
      'unauthenticated',
    )
    await expectError(
      await proxy({ agent_token: 'not-a-token', tool: 'serpapi', action: 'search' }),
      401,
      'unauthenticated',
    )
    await expectError(await proxy({ agent_token: token, tool: 'nope', action: 'x' }), 404, 'not_found')
    const invalid = await expectError(
      await proxy({ agent_token: token, tool: 'serpapi', action: 'search', params: { num: 'ten' } }),
      400,
      'bad_request',
    )
    assert.equal(problemsOf(invalid).length, 2)
    const stream = await expectError(
      await proxy({
        agent_token: token,
        tool: 'openai',
        action: 'chat',
        params: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }], stream: true },
      }),
      400,
      'bad_request',
    )
    assert.equal(stream.details?.['reason'], 'stream_unsupported')
  })

  it('redacts the e-mail, phone and card numbers of an answer under a responseFilter policy', async () => {
    const plain = JSON.stringify((await tool('serpapi', 'search', { q: 'contact' })).data)
    assert.match(plain, /contact@example\.com/)
    assert.match(plain, /4111 1111 1111 1111/)
    const redactToken = await agentToken(gw, 'redact-bot', 'serpapi:search')
    const redacted = JSON.stringify((await tool('serpapi', 'search', { q: 'contact' }, redactToken)).data)
    assert.doesNotMatch(redacted, /contact@example\.com|billing@example\.org/)
    assert.doesNotMatch(redacted, /4111 1111 1111 1111/)
    assert.doesNotMatch(redacted, /555\) 010-0199/)
    assert.match(redacted, /Result 2 of a fake search/, 'the rest of the answer is intact')
  })

  it('refuses to stream an answer a response filter applies to, before calling the upstream', async () => {
    const redactToken = await agentToken(gw, 'redact-bot-2', 'openai:chat')
    const before = fakes.openai.requests.length
    const error = await expectError(
      await call(
        '/v1/tools/openai/chat',
        { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }], stream: true },
        redactToken,
      ),
      403,
      'policy_denied',
    )
    assert.equal(error.details?.['reason'], 'stream_filtered')
    assert.equal(fakes.openai.requests.length, before)
  })

  it('refuses the SSRF battery through the tool route with 403 ssrf_blocked', async () => {
    const p = site.port
    const targets = [
      'http://169.254.169.254/latest/meta-data/',
      'http://10.0.0.1/',
      'http://192.168.1.1/',
      `http://127.0.0.2:${p}/page`,
      `http://0x7f000002:${p}/page`,
      `http://[::1]:${p}/page`,
      `http://[::ffff:127.0.0.2]:${p}/page`,
      `${site.url}/redirect?to=${encodeURIComponent('http://169.254.169.254/latest/meta-data/')}`,
      'file:///etc/passwd',
    ]
    for (const url of targets) {
      const error = await expectError(await call('/v1/tools/http_fetch/get', { url }), 403, 'forbidden')
      assert.equal(error.details?.['reason'], 'ssrf_blocked', url)
    }
  })

  describe('bad input', () => {
    it('refuses oversized parameters with 413 and deeply nested ones with 400, and stays up', async () => {
      const huge = { q: 'x'.repeat(2 * 1024 * 1024) }
      await expectError(await call('/v1/tools/serpapi/search', huge), 413, 'payload_too_large')
      const nested = (levels: number) =>
        `{"q":"x","deep":${'{"d":'.repeat(levels)}"leaf"${'}'.repeat(levels)}}`
      const error = await expectError(await call('/v1/tools/serpapi/search', nested(200)), 400, 'bad_request')
      assert.equal(error.details?.['reason'], 'too_deep')
      // Deeper than a recursive parser's stack: still a clear 400, never a crash.
      await expectError(await call('/v1/tools/serpapi/search', nested(100_000)), 400, 'bad_request')
      await expectError(await call('/v1/tools/serpapi/search', '{"q":'), 400, 'bad_request')
      await expectError(await call('/v1/tools/serpapi/search', '[1,2]'), 400, 'bad_request')
      assert.equal((await fetch(`${gw.publicUrl}/health`)).status, 200)
    })

    it('answers 404 for an unknown tool or action', async () => {
      await expectError(await call('/v1/tools/nope/search', {}), 404, 'not_found')
      await expectError(await call('/v1/tools/serpapi/delete', {}), 404, 'not_found')
      await expectError(await call('/v1/tools/serpapi/constructor', {}), 404, 'not_found')
    })

    it('answers 400 listing every problem of invalid parameters', async () => {
      const error = await expectError(
        await call('/v1/tools/gmail/send', {
          to: 'not-an-address',
          subject: 'a\r\nBcc: x@example.com',
          extra: 1,
        }),
        400,
        'bad_request',
      )
      const paths = problemsOf(error)
        .map((p) => p.path)
        .sort()
      assert.deepEqual(paths, ['(root)', 'extra', 'subject'])
      const headers = await expectError(
        await call('/v1/tools/http_fetch/get', {
          url: `${site.url}/page`,
          headers: { Host: 'x', 'X-Forwarded-For': '1' },
        }),
        400,
        'bad_request',
      )
      assert.equal(problemsOf(headers).length, 2)
      await expectError(await call('/v1/tools/serpapi/search', '{not json'), 400, 'bad_request')
    })

    it('answers 503 tool_unavailable naming a secret that is not set, never a value', async () => {
      await deleteSecret(gw, 'gmail_token')
      try {
        const error = await expectError(await call('/v1/tools/gmail/profile', {}), 503, 'tool_unavailable')
        assert.match(error.message, /gmail_token/)
        assert.equal(error.details?.['secret'], 'gmail_token')
      } finally {
        await putSecret(gw, 'gmail_token', credentials.gmail)
      }
    })

    it('answers 502 upstream_error with the upstream status for non-JSON and oversize answers', async () => {
      fakes.serpapi.faults.add({ kind: 'non-json' })
      let error = await expectError(await call('/v1/tools/serpapi/search', { q: 'x' }), 502, 'upstream_error')
      assert.equal(error.details?.['upstreamStatus'], 200)
      fakes.serpapi.faults.add({ kind: 'status', status: 500 })
      error = await expectError(await call('/v1/tools/serpapi/search', { q: 'x' }), 502, 'upstream_error')
      assert.equal(error.details?.['upstreamStatus'], 500)
      fakes.serpapi.faults.add({ kind: 'oversize', bytes: 11 * 1024 * 1024 })
      error = await expectError(await call('/v1/tools/serpapi/search', { q: 'x' }), 502, 'upstream_error')
      assert.equal(error.details?.['upstreamStatus'], 200)
      error = await expectError(
        await call('/v1/tools/http_fetch/get', { url: `${site.url}/big` }),
        502,
        'upstream_error',
      )
      assert.equal(error.details?.['upstreamStatus'], 200)
    })

    it('aborts the upstream call when the client disconnects mid-stream', async () => {
      fakes.openai.faults.add({ kind: 'slow-body', chunkDelayMs: 100 }, { path: '/v1/chat/completions' })
      const closedBefore = openaiWatch.closed
      const { hostname, port } = new URL(gw.publicUrl)
      const body = JSON.stringify({
        model: 'gpt-4o-mini',
        messages: [{ role: 'user', content: 'a long answer please' }],
        stream: true,
      })
      const req = request({
        hostname,
        port,
        path: '/v1/tools/openai/chat',
        method: 'POST',
        agent: false,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      })
      const first = new Promise<string>((resolve, reject) => {
        req.on('response', (res) => {
          res.once('data', (chunk: Buffer) => resolve(chunk.toString('utf8')))
        })
        req.on('error', reject)
      })
      req.end(body)
      assert.match(await first, /^data: /)
      req.destroy()
      await openaiWatch.closedAtLeast(closedBefore + 1)
    })
  })

  it('never writes a credential to the logs, the metrics, the running config or the secrets list', async () => {
    const logs = gw.rawLogs()
    assert.ok(logs.length > 0)
    const metrics = await (await gw.admin('/metrics')).text()
    const config = await (await gw.admin('/v1/config')).text()
    const listed = await (await gw.admin('/v1/secrets')).text()
    assert.match(listed, /serpapi_key/)
    for (const value of Object.values(credentials)) {
      for (const [where, text] of Object.entries({ logs, metrics, config, listed }))
        assert.ok(!text.includes(value), `a credential in ${where}`)
    }
  })
})
