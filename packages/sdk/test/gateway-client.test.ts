/**
 * The agent client end to end against a real `4runr start` process and the fake tool upstreams:
 * token exchange and renewal, DPoP-bound tokens, the typed helpers, and every typed error as the
 * gateway really answers it (auth, scope, policy, quota, approval, upstream failure and timeout).
 */
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { runCliAsync } from '../../../test/support/process.ts'
import {
  ApprovalRequired,
  AuthError,
  CircuitOpenError,
  GatewayClient,
  type GatewayClientOptions,
  GatewayError,
  NetworkError,
  PolicyError,
  QuotaError,
  RateLimitError,
  TimeoutError,
  UpstreamError,
} from '../src/index.ts'
import {
  loseAnswer,
  refusal,
  rejection,
  type SdkGateway,
  startFront,
  startSdkGateway,
  testAdminKey,
} from './support.ts'

const scope = 'serpapi:search openai:chat openai:embeddings gmail:send gmail:profile http_fetch:get'

let gw: SdkGateway

before(async () => {
  gw = await startSdkGateway({
    tools: {
      serpapi: { timeoutMs: 400 },
      http_fetch: { rateLimit: { by: 'agent', limit: 1, period: '2s', burst: 1 } },
    },
    policies: [
      {
        name: 'sdk-agents',
        agents: { all: true },
        allow: [
          { name: 'search', tool: 'serpapi', actions: ['search'] },
          { name: 'llm', tool: 'openai', actions: ['chat', 'embeddings'] },
          { name: 'mailbox', tool: 'gmail', actions: ['profile'], quota: { limit: 2, period: '1h' } },
          { name: 'mail', tool: 'gmail', actions: ['send'], approval: 'required' },
          { name: 'fetch', tool: 'http_fetch', actions: ['get'], domains: { allow: ['127.0.0.1'] } },
        ],
      },
    ],
  })
})
after(() => gw.stop())

/** A new agent with a gateway-made key, and a client for it. */
async function agentClient(name: string, options: Partial<GatewayClientOptions> = {}, requireDpop = false) {
  const created = await gw.admin.agents.create({ name, requireDpop })
  const client = new GatewayClient({
    baseUrl: gw.publicUrl,
    agentId: created.id,
    privateKey: created.privateKeyJwk!,
    scope,
    ...options,
  })
  return { client, agent: created }
}

/** Counts the requests a client makes to `path`, passing them on to the real fetch. */
function counting(path: string) {
  const counter = {
    count: 0,
    fetch: ((input: string | URL | Request, init?: RequestInit) => {
      if (new URL(String(input)).pathname === path) counter.count++
      return fetch(input, init)
    }) as typeof fetch,
  }
  return counter
}

describe('GatewayClient against a running gateway', () => {
  it('exchanges a signed assertion for a token and calls a tool with it', async () => {
    const { client } = await agentClient('search-bot')
    const { data, metadata } = await client.serpapi.search({ q: 'agent security', num: 3 })
    assert.equal(data.organic_results?.length, 3)
    assert.match(data.organic_results![0]!.title, /agent security/)
    assert.equal(metadata.tool, 'serpapi')
    assert.equal(metadata.action, 'search')
    assert.equal(metadata.upstreamStatus, 200)
  })

  it('shares one token exchange between concurrent calls and reuses the token after', async () => {
    const tokens = counting('/v1/token')
    const { client } = await agentClient('busy-bot', { fetch: tokens.fetch })
    await Promise.all(Array.from({ length: 5 }, (_, i) => client.serpapi.search({ q: `topic ${i}` })))
    await client.openai.embeddings({ model: 'text-embedding-3-small', input: 'hello' })
    assert.equal(tokens.count, 1)
  })

  it('renews a short-lived token before it expires', async () => {
    const tokens = counting('/v1/token')
    const { client } = await agentClient('short-bot', { ttl: 4, fetch: tokens.fetch })
    const first = await client.accessToken()
    await client.serpapi.search({ q: 'one' })
    // Renewed once three quarters of the lifetime (at most 3 s) have passed.
    await new Promise((done) => setTimeout(done, 3100))
    const { data } = await client.serpapi.search({ q: 'two' })
    assert.ok(data.organic_results!.length > 0)
    const second = await client.accessToken()
    assert.notEqual(second, first)
    // Two on an idle machine; a very slow exchange can make the first one due at once.
    assert.ok(tokens.count >= 2, String(tokens.count))
  })

  it('replaces a token that expired on the way and repeats the call once', async () => {
    const tokens = counting('/v1/token')
    let delayed = false
    // A slow network: the first tool call leaves with a token that is dead when it arrives.
    const slow = (async (input: string | URL | Request, init?: RequestInit) => {
      if (!delayed && new URL(String(input)).pathname.startsWith('/v1/tools/')) {
        delayed = true
        await new Promise((done) => setTimeout(done, 3200))
      }
      return tokens.fetch(input, init)
    }) as typeof fetch
    // The gateway counts a lifetime from the whole second it issues in: 3 s is at least 2.
    const { client } = await agentClient('slow-bot', { ttl: 3, fetch: slow })
    const { metadata } = await client.serpapi.search({ q: 'late' })
    assert.equal(metadata.upstreamStatus, 200)
    assert.equal(tokens.count, 2)
  })

  it('binds the token to the agent key with dpop and proves the key on every call', async () => {
    const { client } = await agentClient('bound-bot', { dpop: true })
    await client.serpapi.search({ q: 'bound' })
    await client.serpapi.search({ q: 'bound again' })
    const token = await client.accessToken()
    const introspected = await gw.admin.tokens.introspect(token)
    assert.equal(introspected.active, true)
    assert.equal(introspected['token_type'], 'DPoP')
    // Without a proof the stolen token is refused.
    const stolen = await fetch(`${gw.publicUrl}/v1/tools/serpapi/search`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: '{"q":"stolen"}',
    })
    assert.equal(stolen.status, 401)
  })

  it('binds its tokens on its own when the agent requires key-bound tokens', async () => {
    const { client } = await agentClient('strict-bot', {}, true)
    const { metadata } = await client.serpapi.search({ q: 'strict' })
    assert.equal(metadata.upstreamStatus, 200)
    assert.equal((await gw.admin.tokens.introspect(await client.accessToken()))['token_type'], 'DPoP')
  })

  it('calls every typed helper and lists the tools of its scope', async () => {
    const { client } = await agentClient('helper-bot')
    const chat = await client.openai.chat({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'hi' }],
    })
    assert.equal(chat.data.choices[0]!.message.role, 'assistant')
    const embedded = await client.openai.embeddings({ model: 'text-embedding-3-small', input: ['a', 'b'] })
    assert.equal(embedded.data.data.length, 2)
    const profile = await client.gmail.profile()
    assert.equal(typeof profile.data.emailAddress, 'string')
    const page = await client.httpFetch.get(`${gw.publicUrl}/.well-known/jwks.json`)
    assert.equal(page.data.status, 200)
    assert.equal(page.data.bodyType, 'json')
    const tools = await client.tools.list()
    assert.deepEqual(tools.map((t) => t.name).sort(), ['gmail', 'http_fetch', 'openai', 'serpapi'])
    const generic = await client.tools.call<{ organic_results: unknown[] }>('serpapi', 'search', {
      q: 'x',
      num: 1,
    })
    assert.equal(generic.data.organic_results.length, 1)
  })

  it('echoes the correlation id it is given', async () => {
    const { client } = await agentClient('correlated-bot')
    const { metadata } = await client.serpapi.search({ q: 'c' }, { correlationId: 'research-42' })
    assert.equal(metadata.correlationId, 'research-42')
  })

  it('throws AuthError invalid_grant for a key the agent does not have', async () => {
    const { agent } = await agentClient('victim-bot')
    const other = await gw.admin.agents.create({ name: 'other-bot' })
    const client = new GatewayClient({
      baseUrl: gw.publicUrl,
      agentId: agent.id,
      privateKey: other.privateKeyJwk!,
      scope,
    })
    const err = await rejection(client.serpapi.search({ q: 'x' }))
    assert.ok(err instanceof AuthError)
    assert.equal(err.code, 'invalid_grant')
    assert.equal(err.status, 400)
    assert.ok(['unknown_key', 'bad_signature'].includes(String(err.details?.['reason'])))
    assert.ok(err.requestId)
  })

  it('throws AuthError token_revoked with status 401 once the agent is revoked', async () => {
    const { client, agent } = await agentClient('revoked-bot')
    await client.serpapi.search({ q: 'before' })
    await gw.admin.revocations.create({ agentId: agent.id, reason: 'test' })
    const err = await rejection(client.serpapi.search({ q: 'after' }))
    assert.ok(err instanceof AuthError)
    assert.equal(err.status, 401)
    assert.equal(err.code, 'token_revoked')
  })

  it('throws AuthError invalid_scope when no policy could grant the scope asked for', async () => {
    const { client } = await agentClient('greedy-bot', { scope: 'gmail:send http_fetch:post' })
    const err = await rejection(client.gmail.profile())
    assert.ok(err instanceof AuthError)
    assert.equal(err.code, 'invalid_scope')
  })

  it('throws PolicyError forbidden when the token lacks the scope', async () => {
    const { client } = await agentClient('narrow-bot', { scope: 'serpapi:search' })
    const err = await rejection(client.openai.embeddings({ model: 'm', input: 'x' }))
    assert.ok(err instanceof PolicyError)
    assert.equal(err.status, 403)
    assert.equal(err.code, 'forbidden')
  })

  it('throws PolicyError policy_denied for a domain the policy does not allow', async () => {
    const { client } = await agentClient('curious-bot')
    const err = await rejection(client.httpFetch.get('https://example.com/'))
    assert.ok(err instanceof PolicyError)
    assert.equal(err.code, 'policy_denied')
    assert.equal(err.status, 403)
  })

  it('throws QuotaError with Retry-After when the policy quota is used up, without waiting an hour', async () => {
    const { client } = await agentClient('quota-bot')
    await client.gmail.profile()
    await client.gmail.profile()
    const started = Date.now()
    const err = await rejection(client.gmail.profile())
    assert.ok(err instanceof QuotaError)
    assert.equal(err.status, 429)
    assert.equal(err.code, 'quota_exceeded')
    assert.ok(
      err.retryAfter !== undefined && err.retryAfter >= 1 && err.retryAfter <= 3600,
      String(err.retryAfter),
    )
    assert.ok(Date.now() - started < 5000)
  })

  it('waits out a rate limit the gateway answers with Retry-After, then succeeds', async () => {
    const fetches = counting('/v1/tools/http_fetch/get')
    const { client } = await agentClient('eager-bot', { fetch: fetches.fetch })
    const page = `${gw.publicUrl}/.well-known/jwks.json`
    await client.httpFetch.get(page)
    const { data } = await client.httpFetch.get(page)
    assert.equal(data.status, 200)
    // The second call was refused once, then sent again after the Retry-After.
    assert.equal(fetches.count, 3)
  })

  it('throws RateLimitError with retryAfter when it may not retry', async () => {
    const { client } = await agentClient('hurried-fetch-bot')
    const page = `${gw.publicUrl}/.well-known/jwks.json`
    await client.httpFetch.get(page)
    const err = await rejection(client.httpFetch.get(page, { retry: false }))
    assert.ok(err instanceof RateLimitError)
    assert.equal(err.code, 'rate_limited')
    assert.equal(err.status, 429)
    assert.ok(err.retryAfter !== undefined && err.retryAfter >= 1)
  })

  it('throws UpstreamError when the upstream fails', async () => {
    const { client } = await agentClient('unlucky-bot')
    gw.fakes.openai.faults.add({ kind: 'status', status: 500 }, { times: Number.POSITIVE_INFINITY })
    try {
      const err = await rejection(client.openai.embeddings({ model: 'm', input: 'x' }))
      assert.ok(err instanceof UpstreamError)
      assert.equal(err.status, 502)
      assert.equal(err.code, 'upstream_error')
    } finally {
      gw.fakes.openai.faults.clear()
    }
  })

  it('throws TimeoutError upstream_timeout when the upstream is slower than the tool timeout', async () => {
    const { client } = await agentClient('patient-bot')
    gw.fakes.serpapi.faults.add({ kind: 'latency', ms: 1500 })
    const err = await rejection(client.serpapi.search({ q: 'slow' }))
    assert.ok(err instanceof TimeoutError)
    assert.equal(err.status, 504)
    assert.equal(err.code, 'upstream_timeout')
  })

  it('throws TimeoutError timeout when the call outlives its own timeoutMs', async () => {
    const { client } = await agentClient('hasty-bot')
    await client.accessToken()
    gw.fakes.serpapi.faults.add({ kind: 'latency', ms: 300 })
    const err = await rejection(client.serpapi.search({ q: 'hasty' }, { timeoutMs: 100 }))
    assert.ok(err instanceof TimeoutError)
    assert.equal(err.code, 'timeout')
    assert.equal(err.status, 0)
  })

  it('parks a call for approval, waits for the operator, then sends the mail once', async () => {
    const { client, agent } = await agentClient('mail-bot')
    const mail = { to: 'ops@example.com', subject: 'weekly report', text: 'All green.' }
    const parked = await rejection(client.gmail.send(mail))
    assert.ok(parked instanceof ApprovalRequired)
    assert.equal(parked.status, 202)
    assert.match(parked.approvalId, /^apr_/)
    const before = gw.fakes.gmail.sent.length
    const waiting = parked.wait<{ id: string }>({ intervalMs: 50 })
    const pending = await gw.admin.approvals.list({ status: 'pending', agent: agent.id })
    assert.deepEqual(
      pending.approvals.map((a) => a.id),
      [parked.approvalId],
    )
    await gw.admin.approvals.approve(parked.approvalId, 'fine')
    const sent = await waiting
    assert.equal(typeof sent.data.id, 'string')
    assert.equal(gw.fakes.gmail.sent.length, before + 1)
    assert.equal((await gw.admin.approvals.get(parked.approvalId)).status, 'used')
  })

  it('turns a rejected approval into PolicyError approval_rejected', async () => {
    const { client } = await agentClient('spam-bot')
    const parked = await rejection(client.gmail.send({ to: 'all@example.com', subject: 'buy', text: 'now' }))
    assert.ok(parked instanceof ApprovalRequired)
    await gw.admin.approvals.reject(parked.approvalId, 'no spam')
    const err = await rejection(parked.wait({ intervalMs: 50 }))
    assert.ok(err instanceof PolicyError)
    assert.equal(err.details?.['reason'], 'approval_rejected')
  })

  it('gives up waiting with TimeoutError approval_timeout while nobody decides', async () => {
    const { client } = await agentClient('waiting-bot')
    const parked = await rejection(client.gmail.send({ to: 'a@example.com', subject: 's', text: 't' }))
    assert.ok(parked instanceof ApprovalRequired)
    const err = await rejection(parked.wait({ intervalMs: 50, timeoutMs: 200 }))
    assert.ok(err instanceof TimeoutError)
    assert.equal(err.code, 'approval_timeout')
  })

  it('refuses a tool that does not exist with GatewayError not_found', async () => {
    const { client } = await agentClient('lost-bot')
    const err = await rejection(client.tools.call('nope', 'nothing', {}))
    assert.equal(err.constructor, GatewayError)
    assert.equal(err.code, 'not_found')
    assert.equal(err.status, 404)
  })

  it('refuses bad parameters with GatewayError bad_request listing the problems', async () => {
    const { client } = await agentClient('sloppy-bot')
    const err = await rejection(client.tools.call('serpapi', 'search', { q: '', num: 1000 }))
    assert.equal(err.code, 'bad_request')
    assert.ok(Array.isArray(err.details?.['problems']))
  })
})

describe('retries through a server in front of the gateway', () => {
  let front: Awaited<ReturnType<typeof startFront>>
  before(async () => {
    front = await startFront(gw.publicUrl)
  })
  after(() => front.close())

  async function frontClient(name: string, options: Partial<GatewayClientOptions> = {}) {
    return (await agentClient(name, { baseUrl: front.url, ...options })).client
  }
  const toolCalls = () => front.requests('/v1/tools/')

  it('retries a tool call after 429 with Retry-After and 503, sending the same Idempotency-Key each time', async () => {
    const client = await frontClient('retry-bot')
    await client.accessToken()
    const before = toolCalls().length
    front.answer(
      '/v1/tools/',
      refusal(429, 'rate_limited', { 'retry-after': '1' }),
      refusal(503, 'bulkhead_full'),
    )
    const started = Date.now()
    const { metadata } = await client.serpapi.search({ q: 'persistent' })
    assert.equal(metadata.upstreamStatus, 200)
    assert.ok(Date.now() - started >= 1000, 'waited for Retry-After')
    const keys = toolCalls()
      .slice(before)
      .map((r) => r.headers['idempotency-key'])
    assert.equal(keys.length, 3)
    assert.match(String(keys[0]), /^[0-9a-f-]{36}$/)
    assert.deepEqual(new Set(keys).size, 1)
  })

  it('retries a call whose answer was lost with the same key, and the gateway runs it once', async () => {
    const client = await frontClient('lossy-bot')
    await client.accessToken()
    const chats = () => gw.fakes.openai.requests.filter((r) => r.path === '/v1/chat/completions').length
    const upstreamBefore = chats()
    const before = toolCalls().length
    front.answer('/v1/tools/', loseAnswer)
    const { data } = await client.openai.chat({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'once' }],
    })
    assert.equal(data.choices[0]!.message.role, 'assistant')
    const keys = toolCalls()
      .slice(before)
      .map((r) => r.headers['idempotency-key'])
    assert.equal(keys.length, 2)
    assert.equal(keys[0], keys[1])
    assert.equal(chats() - upstreamBefore, 1, 'the upstream was called once')
    assert.equal(front.answers.at(-1)!.headers.get('idempotent-replayed'), 'true')
  })

  it('retries while the first attempt still runs, and the gateway runs the call once', async () => {
    const client = await frontClient('hurried-bot')
    await client.accessToken()
    const chats = () => gw.fakes.openai.requests.filter((r) => r.path === '/v1/chat/completions').length
    const upstreamBefore = chats()
    gw.fakes.openai.faults.add({ kind: 'latency', ms: 800 })
    // The connection drops at once, while the gateway goes on with the slow call.
    front.answer('/v1/tools/', (res, forward) => {
      forward().catch(() => {})
      res.socket!.destroy()
    })
    const { data } = await client.openai.chat({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'slow' }],
    })
    assert.equal(data.choices[0]!.message.role, 'assistant')
    assert.equal(chats() - upstreamBefore, 1, 'the upstream was called once')
    assert.equal(front.answers.at(-1)!.headers.get('idempotent-replayed'), 'true')
  })

  it('sends the caller’s idempotency key on every attempt', async () => {
    const client = await frontClient('keyed-bot')
    await client.accessToken()
    const before = toolCalls().length
    front.answer('/v1/tools/', refusal(503, 'circuit_open'))
    await client.serpapi.search({ q: 'keyed' }, { idempotencyKey: 'order-7' })
    assert.deepEqual(
      toolCalls()
        .slice(before)
        .map((r) => r.headers['idempotency-key']),
      ['order-7', 'order-7'],
    )
  })

  it('stops at the attempt cap with the last error typed', async () => {
    const client = await frontClient('capped-bot', { retry: { retries: 2, baseDelayMs: 5 } })
    await client.accessToken()
    const before = toolCalls().length
    front.answer('/v1/tools/', ...Array.from({ length: 3 }, () => refusal(503, 'circuit_open')))
    const err = await rejection(client.serpapi.search({ q: 'down' }))
    assert.ok(err instanceof CircuitOpenError)
    assert.equal(err.status, 503)
    assert.equal(toolCalls().length - before, 3)
  })

  it('throws at once when Retry-After is longer than it may wait', async () => {
    const client = await frontClient('impatient-bot')
    await client.accessToken()
    const before = toolCalls().length
    front.answer('/v1/tools/', refusal(429, 'rate_limited', { 'retry-after': '120' }))
    const err = await rejection(client.serpapi.search({ q: 'later' }))
    assert.ok(err instanceof RateLimitError)
    assert.equal(err.retryAfter, 120)
    assert.equal(toolCalls().length - before, 1)
  })

  it('makes one attempt only with retry: false', async () => {
    const client = await frontClient('single-bot')
    await client.accessToken()
    const before = toolCalls().length
    front.answer('/v1/tools/', refusal(503, 'bulkhead_full'))
    const err = await rejection(client.serpapi.search({ q: 'once' }, { retry: false }))
    assert.equal(err.code, 'bulkhead_full')
    assert.equal(toolCalls().length - before, 1)
  })

  it('signs a fresh DPoP proof for each attempt, valid for the issuer whatever URL reaches the gateway', async () => {
    const client = await frontClient('proving-bot', { dpop: true })
    await client.accessToken()
    const before = toolCalls().length
    front.answer('/v1/tools/', refusal(503, 'not_ready'))
    await client.serpapi.search({ q: 'proof' })
    const proofs = toolCalls()
      .slice(before)
      .map((r) => r.headers['dpop'])
    assert.equal(proofs.length, 2)
    assert.notEqual(proofs[0], proofs[1])
  })

  it('retries the token exchange after a reset connection, with a new assertion', async () => {
    const client = await frontClient('reset-bot')
    const before = front.requests('/v1/token').length
    front.answer('/v1/token', (res) => res.socket!.destroy())
    await client.serpapi.search({ q: 'after reset' })
    assert.equal(front.requests('/v1/token').length - before, 2)
  })

  it('cancels the backoff when the caller aborts', async () => {
    const client = await frontClient('abort-bot')
    await client.accessToken()
    front.answer('/v1/tools/', refusal(429, 'rate_limited', { 'retry-after': '5' }))
    const started = Date.now()
    await assert.rejects(client.serpapi.search({ q: 'abort' }, { signal: AbortSignal.timeout(150) }), {
      name: 'TimeoutError',
    })
    assert.ok(Date.now() - started < 4000)
  })

  it('reports an HTML error page from a proxy as UpstreamError invalid_response', async () => {
    const client = await frontClient('proxied-bot')
    await client.accessToken()
    front.answer('/v1/tools/', (res) =>
      res.writeHead(502, { 'content-type': 'text/html' }).end('<html><h1>502 Bad Gateway</h1></html>'),
    )
    const err = await rejection(client.serpapi.search({ q: 'html' }))
    assert.ok(err instanceof UpstreamError)
    assert.equal(err.code, 'invalid_response')
    assert.equal(err.status, 502)
  })

  it('reports a 200 that is not JSON as GatewayError invalid_response', async () => {
    const client = await frontClient('portal-bot')
    await client.accessToken()
    front.answer('/v1/tools/', (res) =>
      res.writeHead(200, { 'content-type': 'text/html' }).end('<html>login</html>'),
    )
    const err = await rejection(client.serpapi.search({ q: 'portal' }))
    assert.equal(err.code, 'invalid_response')
    assert.equal(err.status, 200)
  })

  it('refuses a base URL whose discovery is not a gateway’s', async () => {
    const client = await frontClient('misdirected-bot')
    front.answer('/.well-known/', (res) =>
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}'),
    )
    const err = await rejection(client.serpapi.search({ q: 'where' }))
    assert.equal(err.code, 'invalid_response')
  })

  it('throws TimeoutError timeout when nothing answers within timeoutMs', async () => {
    const client = await frontClient('stuck-bot')
    await client.accessToken()
    front.answer('/v1/tools/', () => {})
    const err = await rejection(client.serpapi.search({ q: 'stuck' }, { timeoutMs: 300 }))
    assert.ok(err instanceof TimeoutError)
    assert.equal(err.code, 'timeout')
  })

  it('throws NetworkError when nothing listens at the base URL', async () => {
    const created = await gw.admin.agents.create({ name: 'lonely-bot' })
    const client = new GatewayClient({
      baseUrl: 'http://127.0.0.1:9',
      agentId: created.id,
      privateKey: created.privateKeyJwk!,
      retry: { retries: 1, baseDelayMs: 5 },
    })
    const err = await rejection(client.serpapi.search({ q: 'anyone' }))
    assert.ok(err instanceof NetworkError)
    assert.equal(err.code, 'network_error')
    assert.equal(err.status, 0)
  })

  it('refuses options that cannot work at construction', () => {
    const privateKey = { kty: 'OKP', crv: 'Ed25519', d: 'x', x: 'y' }
    assert.throws(() => new GatewayClient({ baseUrl: 'not a url', privateKey }), TypeError)
    assert.throws(() => new GatewayClient({ baseUrl: 'ftp://127.0.0.1', privateKey }), TypeError)
    assert.throws(() => new GatewayClient({ baseUrl: gw.publicUrl }), TypeError)
    assert.throws(
      () => new GatewayClient({ baseUrl: gw.publicUrl, privateKey, keyFile: 'k.json' }),
      TypeError,
    )
    assert.throws(() => new GatewayClient({ baseUrl: gw.publicUrl, privateKey, ttl: 0.5 }), TypeError)
    assert.throws(
      () => new GatewayClient({ baseUrl: gw.publicUrl, privateKey, retry: { retries: -1 } }),
      TypeError,
    )
  })
})

describe('private keys in the forms the gateway hands out', () => {
  it('uses the key file that 4runr agent create writes, agent id and issuer included', async () => {
    const file = join(gw.dir, 'cli-bot.key.json')
    const created = await runCliAsync(
      ['agent', 'create', '--name', 'cli-bot', '--out', file, '--url', gw.publicUrl, '--admin', gw.adminUrl],
      { RUNR_ADMIN_KEY: testAdminKey },
    )
    assert.equal(created.status, 0, created.stderr)
    const client = new GatewayClient({ baseUrl: gw.publicUrl, keyFile: file, scope: 'serpapi:search' })
    assert.equal((await client.serpapi.search({ q: 'from a key file' })).metadata.upstreamStatus, 200)
  })

  it('uses the PKCS#8 PEM and the whole answer of the original /api/create-agent', async () => {
    const res = await fetch(`${gw.adminUrl}/api/create-agent`, {
      method: 'POST',
      headers: { authorization: `Bearer ${testAdminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'legacy-bot' }),
    })
    const legacy = (await res.json()) as { agent_id: string; private_key: string }
    assert.match(legacy.private_key, /BEGIN PRIVATE KEY/)
    const pem = new GatewayClient({
      baseUrl: gw.publicUrl,
      agentId: legacy.agent_id,
      privateKey: legacy.private_key,
      scope,
    })
    await pem.serpapi.search({ q: 'pem' })
    const whole = new GatewayClient({ baseUrl: gw.publicUrl, privateKey: JSON.stringify(legacy), scope })
    await whole.serpapi.search({ q: 'compat' })
  })

  it('refuses a malformed key with AuthError invalid_key and never repeats the key', async () => {
    const secret = 'c2VjcmV0LWtleS1tYXRlcmlhbC10aGF0LW11c3Qtbm90LWxlYWs'
    const attempts = [
      { kty: 'OKP', crv: 'Ed25519', d: secret, x: 'short' },
      { kty: 'RSA', n: secret, e: 'AQAB', d: secret },
      `-----BEGIN PRIVATE KEY-----\n${secret}\n-----END PRIVATE KEY-----`,
      `-----BEGIN RSA PRIVATE KEY-----\n${secret}\n-----END RSA PRIVATE KEY-----`,
      'not a key at all',
    ]
    for (const privateKey of attempts) {
      const client = new GatewayClient({ baseUrl: gw.publicUrl, agentId: 'a', privateKey })
      const err = await rejection(client.serpapi.search({ q: 'x' }))
      assert.ok(err instanceof AuthError, String(err))
      assert.equal(err.code, 'invalid_key')
      assert.ok(!err.message.includes(secret), err.message)
    }
  })

  it('refuses a key file it cannot read', async () => {
    const client = new GatewayClient({ baseUrl: gw.publicUrl, keyFile: join(gw.dir, 'missing.key.json') })
    const err = await rejection(client.serpapi.search({ q: 'x' }))
    assert.equal(err.code, 'invalid_key')
    assert.match(err.message, /ENOENT/)
  })

  it('never signs an assertion for a gateway with another issuer than the key file names', async () => {
    const created = await gw.admin.agents.create({ name: 'pinned-bot' })
    const file = join(gw.dir, 'pinned.key.json')
    const keyFile = {
      agentId: created.id,
      kid: created.kid,
      privateKeyJwk: created.privateKeyJwk,
      gatewayUrl: gw.publicUrl,
      issuer: 'https://gateway.example.com',
    }
    await writeFile(file, JSON.stringify(keyFile))
    const tokens = counting('/v1/token')
    const client = new GatewayClient({ baseUrl: gw.publicUrl, keyFile: file, fetch: tokens.fetch })
    const err = await rejection(client.serpapi.search({ q: 'x' }))
    assert.ok(err instanceof AuthError)
    assert.equal(err.code, 'issuer_mismatch')
    assert.equal(tokens.count, 0)
  })
})

describe('GatewayClient against a tool whose circuit breaker opened', () => {
  let own: SdkGateway
  before(async () => {
    own = await startSdkGateway({
      tools: { serpapi: { breaker: { failures: 1, openMs: '1m' } } },
      policies: [
        { name: 'search', agents: { all: true }, allow: [{ tool: 'serpapi', actions: ['search'] }] },
      ],
    })
  })
  after(() => own.stop())

  it('throws CircuitOpenError with Retry-After from the gateway’s real 503 circuit_open', async () => {
    const created = await own.admin.agents.create({ name: 'breaker-bot' })
    const client = new GatewayClient({
      baseUrl: own.publicUrl,
      agentId: created.id,
      privateKey: created.privateKeyJwk!,
      scope: 'serpapi:search',
      retry: false,
    })
    own.fakes.serpapi.faults.add({ kind: 'status', status: 500 })
    const first = await rejection(client.serpapi.search({ q: 'fails once' }))
    assert.ok(first instanceof UpstreamError, String(first))
    const before = own.fakes.serpapi.requests.length
    const err = await rejection(client.serpapi.search({ q: 'refused at once' }))
    assert.ok(err instanceof CircuitOpenError, String(err))
    assert.equal(err.status, 503)
    assert.equal(err.code, 'circuit_open')
    assert.ok(err.retryAfter !== undefined && err.retryAfter >= 1)
    assert.equal(own.fakes.serpapi.requests.length, before, 'an open breaker does not reach the upstream')
  })
})
