/**
 * The agent client end to end against a real `4runr start` process and the fake tool upstreams:
 * token exchange and renewal, DPoP-bound tokens, the typed helpers, and every typed error as the
 * gateway really answers it (auth, scope, policy, quota, approval, upstream failure and timeout).
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import {
  ApprovalRequired,
  AuthError,
  GatewayClient,
  type GatewayClientOptions,
  GatewayError,
  PolicyError,
  QuotaError,
  TimeoutError,
  UpstreamError,
} from '../src/index.ts'
import { type SdkGateway, startSdkGateway } from './support.ts'

const scope = 'serpapi:search openai:chat openai:embeddings gmail:send gmail:profile http_fetch:get'

describe('GatewayClient against a running gateway', () => {
  let gw: SdkGateway

  before(async () => {
    gw = await startSdkGateway({
      tools: { serpapi: { timeoutMs: 400 } },
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
    const { client } = await agentClient('short-bot', { ttl: 2, fetch: tokens.fetch })
    const first = await client.accessToken()
    await client.serpapi.search({ q: 'one' })
    // Renewed once three quarters of the lifetime (1.5 s) have passed.
    await new Promise((done) => setTimeout(done, 1600))
    const { data } = await client.serpapi.search({ q: 'two' })
    assert.ok(data.organic_results!.length > 0)
    const second = await client.accessToken()
    assert.notEqual(second, first)
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
    assert.ok(Date.now() - started < 2000)
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

/** The GatewayError a promise rejects with. */
export async function rejection(promise: Promise<unknown>): Promise<GatewayError> {
  try {
    await promise
  } catch (err) {
    assert.ok(err instanceof GatewayError, String(err))
    return err
  }
  assert.fail('the call succeeded')
}
