/**
 * The OpenAI passthrough with the official `openai` client, unmodified (issue 6 item 4): its
 * `baseURL` is the gateway's `/v1/openai` and its `apiKey` an agent token. The fake OpenAI accepts
 * only the real key, so every answer proves the gateway swapped the agent token for it. Usage is
 * metered against `quota.tokens`, and a policy condition on `args.model` pins the model.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import OpenAI from 'openai'
import type { FakeServer } from '../../packages/server/src/fakes/fake-server.ts'
import { startFakeOpenAI } from '../../packages/server/src/fakes/openai.ts'
import { type ConnectionWatch, watchConnections } from '../../packages/server/src/tools/test-helpers.ts'
import { startTestGateway, type TestGateway } from '../support/gateway.ts'
import { agentToken, putSecret } from '../support/tools.ts'

const realKey = `sk-real-${randomBytes(12).toString('hex')}`
const scope = 'openai:chat openai:embeddings openai:models'
const budget = 120

/** What the client threw, as an OpenAI APIError. */
async function apiError(promise: Promise<unknown>): Promise<InstanceType<typeof OpenAI.APIError>> {
  try {
    await promise
  } catch (err) {
    assert.ok(err instanceof OpenAI.APIError, String(err))
    return err
  }
  assert.fail('the call succeeded')
}

describe('the official OpenAI client through the gateway', () => {
  let fake: FakeServer
  /** Between the gateway and the fake: shows when the gateway drops its upstream connection. */
  let watch: ConnectionWatch
  let gw: TestGateway
  let client: OpenAI
  const clientFor = (apiKey: string) =>
    new OpenAI({ baseURL: `${gw.publicUrl}/v1/openai`, apiKey, maxRetries: 0, timeout: 10_000 })

  before(async () => {
    fake = await startFakeOpenAI({ apiKey: realKey })
    watch = await watchConnections(fake.url)
    gw = await startTestGateway({
      gateway: { logLevel: 'warn' },
      tools: { openai: { url: watch.url } },
      policies: [
        {
          name: 'llm',
          agents: { names: ['llm-bot'] },
          allow: [
            { tool: 'openai', actions: ['chat'], when: 'args.model == "gpt-4o-mini"' },
            { tool: 'openai', actions: ['embeddings', 'models'] },
          ],
        },
        {
          name: 'budgeted',
          agents: { names: ['budget-bot'] },
          allow: [{ tool: 'openai', actions: ['chat'], quota: { tokens: budget, period: '1h' } }],
        },
      ],
    })
    await putSecret(gw, 'openai_key', realKey)
    client = clientFor(await agentToken(gw, 'llm-bot', scope))
  })
  after(async () => {
    await gw?.stop()
    await watch?.close()
    await fake?.close()
  })

  it('completes chat.completions.create, with the real key injected upstream', async () => {
    const completion = await client.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'Hello gateway' }],
    })
    assert.equal(completion.choices[0]!.message.content, 'Echo: Hello gateway')
    assert.ok(completion.usage!.prompt_tokens > 0)
    const seen = fake.requests.at(-1)!
    assert.equal(seen.authorized, true, 'the fake saw the real key, not the agent token')
    assert.equal(seen.path, '/v1/chat/completions')
  })

  it('streams chat.completions.create with stream: true, without a usage chunk it did not ask for', async () => {
    const stream = await client.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'Stream this' }],
      stream: true,
    })
    let content = ''
    let chunks = 0
    for await (const chunk of stream) {
      chunks++
      assert.ok(chunk.choices.length > 0, 'every chunk has a choice')
      content += chunk.choices[0]!.delta.content ?? ''
    }
    assert.equal(content, 'Echo: Stream this')
    assert.ok(chunks > 2)
    const upstream = fake.requests.at(-1)!.body as { stream_options: { include_usage: boolean } }
    assert.equal(upstream.stream_options.include_usage, true, 'the gateway asked for usage to meter it')
  })

  it('stops the upstream call when the client stops reading a stream', async () => {
    fake.faults.add({ kind: 'slow-body', chunkDelayMs: 100 }, { path: '/v1/chat/completions' })
    const closed = watch.closed
    const stream = await client.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'a long and slow answer' }],
      stream: true,
    })
    for await (const chunk of stream) {
      assert.equal(chunk.object, 'chat.completion.chunk')
      break
    }
    await watch.closedAtLeast(closed + 1)
  })

  it('passes the usage chunk on to a client that asked for it', async () => {
    const stream = await client.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'Count me' }],
      stream: true,
      stream_options: { include_usage: true },
    })
    let usage: OpenAI.CompletionUsage | null | undefined
    for await (const chunk of stream) if (chunk.usage) usage = chunk.usage
    assert.ok(usage !== undefined && usage !== null && usage.completion_tokens > 0)
  })

  it('completes embeddings.create and lists the models', async () => {
    const embeddings = await client.embeddings.create({ model: 'text-embedding-3-small', input: ['a', 'b'] })
    assert.equal(embeddings.data.length, 2)
    assert.equal(embeddings.data[0]!.embedding.length, 8)
    assert.ok(embeddings.data[0]!.embedding.every((v) => typeof v === 'number'))
    const models = []
    for await (const model of client.models.list()) models.push(model.id)
    assert.ok(models.includes('gpt-4o-mini'))
  })

  it('refuses a model the policy does not allow with 403, before reaching the upstream', async () => {
    const before = fake.requests.length
    const err = await apiError(
      client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }),
    )
    assert.equal(err.status, 403)
    assert.equal(err.code, 'policy_denied')
    assert.equal(fake.requests.length, before)
  })

  it('refuses a bad agent token with 401 and never forwards it', async () => {
    const err = await apiError(
      clientFor('not-a-token').chat.completions.create({
        model: 'gpt-4o-mini',
        messages: [{ role: 'user', content: 'x' }],
      }),
    )
    assert.equal(err.status, 401)
  })

  it('passes the upstream OpenAI error through for a bad request', async () => {
    const err = await apiError(
      client.chat.completions.create({
        model: 'gpt-4o-mini',
        messages: [{ role: 'wizard' as 'user', content: 'x' }],
      }),
    )
    assert.equal(err.status, 400)
    assert.match(err.message, /Invalid value: 'wizard'/)
  })

  it('counts usage, streamed and not, against the tokens quota until 429 quota_exceeded', async () => {
    const budgeted = clientFor(await agentToken(gw, 'budget-bot', 'openai:chat'))
    const messages: OpenAI.ChatCompletionMessageParam[] = [
      { role: 'user', content: 'spend some tokens please' },
    ]
    let used = 0
    /** The spend after each call that was let through. */
    const spent: number[] = []
    let refusal: InstanceType<typeof OpenAI.APIError> | undefined
    for (let i = 0; i < 40 && refusal === undefined; i++) {
      try {
        if (i % 2 === 0) {
          const completion = await budgeted.chat.completions.create({ model: 'gpt-4o-mini', messages })
          used += completion.usage!.total_tokens
        } else {
          const stream = await budgeted.chat.completions.create({
            model: 'gpt-4o-mini',
            messages,
            stream: true,
            stream_options: { include_usage: true },
          })
          for await (const chunk of stream) if (chunk.usage) used += chunk.usage.total_tokens
          // A stream is metered as it ends, just after the client has read it.
          await new Promise((r) => setTimeout(r, 50))
        }
        spent.push(used)
      } catch (err) {
        assert.ok(err instanceof OpenAI.APIError, String(err))
        refusal = err
      }
    }
    assert.ok(refusal !== undefined, 'the budget ran out')
    assert.equal(refusal.status, 429)
    assert.equal(refusal.code, 'quota_exceeded')
    assert.ok(used >= budget, `refused only once the budget was spent (${used} of ${budget})`)
    // The last call let through started under budget: the refusal came as soon as it was spent.
    assert.ok(spent.length >= 3 && spent.at(-2)! < budget, `spent ${spent.join(', ')}`)
  })

  it('answers 404 for an endpoint the passthrough does not serve', async () => {
    const err = await apiError(client.completions.create({ model: 'gpt-4o-mini', prompt: 'x' }))
    assert.equal(err.status, 404)
  })
})
