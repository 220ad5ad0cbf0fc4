/**
 * Idempotency-Key on tool calls (issue 7): the first call runs once, a repeat gets its answer, a
 * concurrent repeat waits for it or gets 409, a repeat asking something else gets 422, keys are
 * per agent; on SQLite in one gateway, and across two gateways sharing one Postgres.
 */
import assert from 'node:assert/strict'
import { randomBytes, randomUUID } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { type FakeUpstreams, startFakeUpstreams } from '../../packages/server/src/fakes/index.ts'
import { claimsOf } from '../support/agents.ts'
import { startTestGateway, type TestGateway } from '../support/gateway.ts'
import { dropSchemaAndKeys, requireService, serviceUrls } from '../support/services.ts'
import { agentToken, expectError, issueToken, putSecret } from '../support/tools.ts'
import { closedPort, startUpstream, type TestUpstream } from '../support/upstream.ts'

const gmailToken = `ya29.${randomBytes(12).toString('hex')}`
const credentials = { serpapi: 'unused-serp', openai: 'unused-openai', gmail: gmailToken }

function configFor(fakes: FakeUpstreams, extra: Record<string, unknown> = {}) {
  return {
    gateway: { logLevel: 'warn', issuer: 'http://gateway.idempotency.test' },
    tools: { gmail: { url: fakes.gmail.url } },
    idempotency: { wait: '2s' },
    policies: [{ name: 'mail', agents: { all: true }, allow: [{ tool: 'gmail' }] }],
    ...extra,
  }
}

function send(gw: TestGateway, token: string, key: string | undefined, message: Record<string, unknown>) {
  return fetch(`${gw.publicUrl}/v1/tools/gmail/send`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${token}`,
      'content-type': 'application/json',
      ...(key === undefined ? {} : { 'idempotency-key': key }),
    },
    body: JSON.stringify(message),
  })
}

const mail = (subject: string) => ({ to: 'ops@example.com', subject, text: 'once only' })

describe('Idempotency-Key on tool calls (SQLite)', () => {
  let fakes: FakeUpstreams
  let gw: TestGateway
  let token: string
  let otherToken: string

  before(async () => {
    fakes = await startFakeUpstreams({ credentials })
    gw = await startTestGateway(configFor(fakes))
    token = await agentToken(gw, 'mailer', 'gmail:send gmail:profile')
    otherToken = await agentToken(gw, 'other-mailer', 'gmail:send')
    await putSecret(gw, 'gmail_token', gmailToken)
  })
  after(async () => {
    await gw?.stop()
    await fakes?.close()
  })

  it('sends once and answers a repeat with the first status and body, marked as replayed', async () => {
    const key = randomUUID()
    const sent = fakes.gmail.sent.length
    const first = await send(gw, token, key, mail('hello'))
    const firstBody = await first.text()
    assert.equal(first.status, 200, firstBody)
    assert.equal(first.headers.get('idempotent-replayed'), null)
    const repeat = await send(gw, token, key, mail('hello'))
    assert.equal(repeat.status, 200)
    assert.equal(repeat.headers.get('idempotent-replayed'), 'true')
    assert.deepEqual(JSON.parse(await repeat.text()), JSON.parse(firstBody))
    assert.equal(fakes.gmail.sent.length, sent + 1, 'one message reached the mailbox')
  })

  it('authorizes a repeat before answering it: a token without the scope gets 403, not the stored answer', async () => {
    const key = randomUUID()
    assert.equal((await send(gw, token, key, mail('scoped'))).status, 200)
    const narrower = await issueToken(gw, String(claimsOf(token)['sub']), 'gmail:profile')
    const refused = await expectError(await send(gw, narrower, key, mail('scoped')), 403, 'forbidden')
    assert.equal(refused.details?.['reason'], 'scope_missing')
  })

  it('refuses a repeat with a different body with 422 unprocessable', async () => {
    const key = randomUUID()
    assert.equal((await send(gw, token, key, mail('one'))).status, 200)
    const error = await expectError(await send(gw, token, key, mail('two')), 422, 'unprocessable')
    assert.equal(error.details?.['reason'], 'idempotency_key_reused')
  })

  it('makes a concurrent repeat wait for the first call and answers it the same', async () => {
    const key = randomUUID()
    const sent = fakes.gmail.sent.length
    fakes.gmail.faults.add({ kind: 'latency', ms: 400 }, { method: 'POST' })
    const [a, b] = await Promise.all([send(gw, token, key, mail('slow')), send(gw, token, key, mail('slow'))])
    assert.deepEqual([a.status, b.status], [200, 200])
    assert.deepEqual(await a.json(), await b.json())
    assert.equal(fakes.gmail.sent.length, sent + 1)
  })

  it('answers 409 conflict when the first call outlasts the wait', async () => {
    const quick = await startTestGateway(configFor(fakes, { idempotency: { wait: '100ms' } }))
    try {
      const t = await agentToken(quick, 'impatient', 'gmail:send')
      await putSecret(quick, 'gmail_token', gmailToken)
      const key = randomUUID()
      fakes.gmail.faults.add({ kind: 'latency', ms: 1_500 }, { method: 'POST' })
      const first = send(quick, t, key, mail('slow'))
      await new Promise((r) => setTimeout(r, 100))
      const second = await send(quick, t, key, mail('slow'))
      assert.equal(second.headers.get('retry-after'), '1')
      await expectError(second, 409, 'conflict')
      assert.equal((await first).status, 200)
    } finally {
      await quick.stop()
    }
  })

  it("keeps keys per agent: another agent's call with the same key runs on its own", async () => {
    const key = randomUUID()
    const sent = fakes.gmail.sent.length
    assert.equal((await send(gw, token, key, mail('mine'))).status, 200)
    const theirs = await send(gw, otherToken, key, mail('theirs'))
    assert.equal(theirs.status, 200)
    assert.equal(theirs.headers.get('idempotent-replayed'), null)
    assert.equal(fakes.gmail.sent.length, sent + 2)
  })

  it('keeps an upstream failure as the answer: the repeat does not send', async () => {
    const key = randomUUID()
    fakes.gmail.faults.add({ kind: 'status', status: 500 }, { method: 'POST' })
    const first = await expectError(await send(gw, token, key, mail('failing')), 502, 'upstream_error')
    const sent = fakes.gmail.sent.length
    const repeat = await send(gw, token, key, mail('failing'))
    assert.equal(repeat.headers.get('idempotent-replayed'), 'true')
    assert.deepEqual(await expectError(repeat, 502, 'upstream_error'), first)
    assert.equal(fakes.gmail.sent.length, sent)
  })

  it('frees the key when the call is refused before the upstream (bad parameters)', async () => {
    const key = randomUUID()
    await expectError(await send(gw, token, key, { to: 'not an address' }), 400, 'bad_request')
    assert.equal(
      (await send(gw, token, key, { to: 'not an address' })).headers.get('idempotent-replayed'),
      null,
    )
    assert.equal((await send(gw, token, randomUUID(), mail('fine'))).status, 200)
  })

  it('refuses a malformed key with 400 bad_request and sends nothing', async () => {
    const sent = fakes.gmail.sent.length
    await expectError(await send(gw, token, 'x'.repeat(256), mail('long key')), 400, 'bad_request')
    await expectError(await send(gw, token, 'with space', mail('spaced key')), 400, 'bad_request')
    assert.equal(fakes.gmail.sent.length, sent)
  })
})

describe('Idempotency-Key on a channel POST', () => {
  let orders: TestUpstream
  let gw: TestGateway
  let port: number
  let created = 0
  let token: string
  let otherToken: string

  const post = (key: string | undefined, body: string, path = '/orders/new', bearer: string | null = token) =>
    fetch(`${gw.publicUrl}${path}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        ...(bearer === null ? {} : { authorization: `Bearer ${bearer}` }),
        ...(key === undefined ? {} : { 'idempotency-key': key }),
      },
      body,
    })

  before(async () => {
    orders = await startUpstream((req, res, body) => {
      const delay = req.url?.includes('slow') ? 300 : 0
      setTimeout(() => {
        created++
        res.writeHead(201, {
          'content-type': 'application/json',
          location: `/orders/${created}`,
          ...(req.url?.includes('cookie')
            ? { 'set-cookie': ['session=s3cr3t; HttpOnly', 'theme=dark'] }
            : {}),
        })
        res.end(JSON.stringify({ id: created, got: body.toString('utf8') }))
      }, delay)
    })
    port = await closedPort()
    gw = await startTestGateway({
      gateway: { logLevel: 'warn' },
      systems: {
        orders: { kind: 'http', url: orders.url },
        down: { kind: 'http', url: `http://127.0.0.1:${port}` },
      },
      channels: [
        {
          name: 'orders',
          prefix: '/orders',
          system: 'orders',
          rules: [{ path: '/public/*', public: true }, { path: '*' }],
        },
        { name: 'down', prefix: '/down', system: 'down', rules: [{ path: '*' }] },
      ],
      policies: [
        {
          name: 'order-agents',
          agents: { all: true },
          allow: [{ channel: 'orders' }, { channel: 'down' }],
        },
      ],
    })
    token = await agentToken(gw, 'ordering-agent', 'channel:orders channel:down')
    otherToken = await agentToken(gw, 'other-ordering-agent', 'channel:orders')
  })
  after(async () => {
    await gw?.stop()
    await orders?.close()
  })

  it('creates once and answers a repeat with the first status, headers and body', async () => {
    const key = randomUUID()
    const before = orders.requests.length
    const first = await post(key, '{"item":"tea"}')
    const firstBody = await first.text()
    assert.equal(first.status, 201, firstBody)
    const repeat = await post(key, '{"item":"tea"}')
    assert.equal(repeat.status, 201)
    assert.equal(repeat.headers.get('idempotent-replayed'), 'true')
    assert.equal(repeat.headers.get('location'), first.headers.get('location'))
    assert.equal(await repeat.text(), firstBody)
    assert.equal(orders.requests.length - before, 1)
    assert.equal(orders.requests.at(-1)?.headers['idempotency-key'], key, 'the key reaches the backend too')
  })

  it('passes cookies to the first answer only and keeps them out of the store', async () => {
    const key = randomUUID()
    const first = await post(key, '{}', '/orders/cookie')
    assert.deepEqual(first.headers.getSetCookie(), ['session=s3cr3t; HttpOnly', 'theme=dark'])
    const body = await first.text()
    const repeat = await post(key, '{}', '/orders/cookie')
    assert.equal(repeat.headers.get('idempotent-replayed'), 'true')
    assert.deepEqual(repeat.headers.getSetCookie(), [])
    assert.equal(await repeat.text(), body)
  })

  it('refuses the same key with another body with 422, and a POST without a key streams as before', async () => {
    const key = randomUUID()
    assert.equal((await post(key, '{"item":"tea"}')).status, 201)
    await expectError(await post(key, '{"item":"coffee"}'), 422, 'unprocessable')
    const before = orders.requests.length
    assert.equal((await post(undefined, '{"item":"tea"}')).status, 201)
    assert.equal((await post(undefined, '{"item":"tea"}')).status, 201)
    assert.equal(orders.requests.length - before, 2)
  })

  it('makes a concurrent repeat wait for the first POST', async () => {
    const key = randomUUID()
    const before = orders.requests.length
    const [a, b] = await Promise.all([post(key, '{}', '/orders/slow'), post(key, '{}', '/orders/slow')])
    assert.deepEqual([a.status, b.status], [201, 201])
    assert.equal(await a.text(), await b.text())
    assert.equal(orders.requests.length - before, 1)
  })

  it('frees the key when the backend could not be reached, so a repeat tries again', async () => {
    const key = randomUUID()
    await expectError(await post(key, '{}', '/down/x'), 502, 'upstream_error')
    const again = await post(key, '{}', '/down/x')
    assert.equal(again.headers.get('idempotent-replayed'), null)
    await expectError(again, 502, 'upstream_error')
  })

  it('keeps one agent’s answer from another agent using the same key', async () => {
    const key = randomUUID()
    const before = orders.requests.length
    const mine = await post(key, '{"item":"tea"}')
    assert.equal(mine.status, 201)
    const theirs = await post(key, '{"item":"tea"}', '/orders/new', otherToken)
    assert.equal(theirs.status, 201)
    assert.equal(theirs.headers.get('idempotent-replayed'), null)
    assert.notEqual(await theirs.text(), await mine.text())
    assert.equal(orders.requests.length - before, 2)
  })

  it('passes an anonymous caller’s key on a public rule to the backend and keeps nothing', async () => {
    // Nothing tells anonymous callers apart (an address is shared behind a proxy): deduplicating
    // them would let one replay another's answer by guessing its key.
    const key = randomUUID()
    const before = orders.requests.length
    const a = await post(key, '{}', '/orders/public/new', null)
    const b = await post(key, '{}', '/orders/public/new', null)
    assert.deepEqual([a.status, b.status], [201, 201])
    assert.equal(b.headers.get('idempotent-replayed'), null)
    assert.notEqual(await a.text(), await b.text())
    assert.equal(orders.requests.length - before, 2)
    assert.equal(orders.requests.at(-1)?.headers['idempotency-key'], key)
  })

  it('refuses a body over the limit with 413 and keeps nothing', async () => {
    const key = randomUUID()
    await expectError(await post(key, 'x'.repeat(2 * 1024 * 1024)), 413, 'payload_too_large')
    assert.equal((await post(key, '{}')).status, 201)
  })
})

describe('Idempotency-Key across two gateways sharing Postgres', () => {
  const schema = `runr_test_${randomBytes(6).toString('hex')}`
  // Redis carries the agent directory between the instances; the keys live in Postgres.
  const prefix = `${schema}:`
  let available = false
  let fakes: FakeUpstreams
  let a: TestGateway
  let b: TestGateway
  let token: string

  before(async () => {
    available =
      (await requireService('postgres', serviceUrls.postgres)) &&
      (await requireService('redis', serviceUrls.redis))
    if (!available) return
    fakes = await startFakeUpstreams({ credentials })
    const env = { RUNR_MASTER_KEY: randomBytes(32).toString('base64') }
    const config = configFor(fakes, {
      store: { kind: 'postgres', url: serviceUrls.postgres, schema },
      redis: { url: serviceUrls.redis, prefix },
    })
    a = await startTestGateway(config, { env })
    b = await startTestGateway(config, { env })
    token = await agentToken(a, 'cluster-mailer', 'gmail:send')
    await putSecret(a, 'gmail_token', gmailToken)
  })
  after(async () => {
    if (!available) return
    await a?.stop()
    await b?.stop()
    await fakes?.close()
    await dropSchemaAndKeys(schema, prefix)
  })

  it("answers a repeat sent to the other instance with the first one's answer", async (t) => {
    if (!available) return t.skip('postgres not running')
    const key = randomUUID()
    const sent = fakes.gmail.sent.length
    const first = await send(a, token, key, mail('cluster'))
    assert.equal(first.status, 200, await first.clone().text())
    const repeat = await send(b, token, key, mail('cluster'))
    assert.equal(repeat.headers.get('idempotent-replayed'), 'true')
    assert.deepEqual(await repeat.json(), await first.json())
    assert.equal(fakes.gmail.sent.length, sent + 1)
    await expectError(await send(b, token, key, mail('changed')), 422, 'unprocessable')
  })

  it('makes a concurrent repeat on the other instance wait for the first call', async (t) => {
    if (!available) return t.skip('postgres not running')
    const key = randomUUID()
    const sent = fakes.gmail.sent.length
    fakes.gmail.faults.add({ kind: 'latency', ms: 400 }, { method: 'POST' })
    const [x, y] = await Promise.all([send(a, token, key, mail('race')), send(b, token, key, mail('race'))])
    assert.deepEqual([x.status, y.status], [200, 200])
    assert.deepEqual(await x.json(), await y.json())
    assert.equal(fakes.gmail.sent.length, sent + 1)
  })
})
