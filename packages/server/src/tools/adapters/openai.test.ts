import assert from 'node:assert/strict'
import { after, before, beforeEach, describe, it } from 'node:test'
import { gatewayRejection } from '../../../../../test/support/rejection.ts'
import { GatewayError } from '../../errors/gateway-error.ts'
import type { FakeServer } from '../../fakes/fake-server.ts'
import { startFakeOpenAI } from '../../fakes/openai.ts'
import { type ActionRunner, createActionRunner, watchConnections } from '../test-helpers.ts'
import type { ToolResult } from '../types.ts'
import { openai } from './openai.ts'

const key = 'sk-openai-adapter-test-0123456789'
const messages = [{ role: 'user', content: 'hello there' }]

async function collect(result: ToolResult): Promise<string> {
  assert.ok('stream' in result, 'a stream')
  let text = ''
  const decoder = new TextDecoder()
  for await (const chunk of result.stream) text += decoder.decode(chunk, { stream: true })
  return text
}

function events(text: string): unknown[] {
  return text
    .split('\n\n')
    .filter((e) => e.startsWith('data: ') && e !== 'data: [DONE]')
    .map((e) => JSON.parse(e.slice('data: '.length)))
}

describe('the openai tool', () => {
  let fake: FakeServer
  let runner: ActionRunner
  const run = (action: string, params: unknown, secret = key, url = fake.url) =>
    runner.run(openai, action, params, { settings: { url }, secret })

  before(async () => {
    fake = await startFakeOpenAI({ apiKey: key })
    runner = createActionRunner({ maxAnswerBytes: 64 * 1024 })
  })
  after(async () => {
    await runner.close()
    await fake.close()
  })
  beforeEach(() => {
    fake.faults.clear()
    runner.usage.length = 0
  })

  it('answers a chat completion with its usage, sending the key as a bearer token', async () => {
    const result = await run('chat', { model: 'gpt-4o-mini', messages, temperature: 0 })
    assert.ok('data' in result)
    const data = result.data as { choices: Array<{ message: { content: string } }>; usage: unknown }
    assert.equal(data.choices[0]!.message.content, 'Echo: hello there')
    assert.equal(result.upstreamStatus, 200)
    assert.ok(
      result.usage !== undefined && result.usage.promptTokens > 0 && result.usage.completionTokens > 0,
    )
    const seen = fake.requests.at(-1)!
    assert.equal(seen.authorized, true)
    assert.equal(seen.path, '/v1/chat/completions')
    assert.deepEqual(
      seen.body,
      { model: 'gpt-4o-mini', messages, temperature: 0 },
      'the body passes unchanged',
    )
    assert.equal(seen.headers['x-correlation-id'], 'test-correlation')
  })

  it('relays a streamed chat as the upstream sent it, asking for usage and reporting it from the last chunk', async () => {
    const result = await run('chat', { model: 'gpt-4o-mini', messages, stream: true })
    assert.ok('stream' in result)
    assert.equal(result.headers['content-type'], 'text/event-stream; charset=utf-8')
    const text = await collect(result)
    assert.ok(text.endsWith('data: [DONE]\n\n'))
    const chunks = events(text) as Array<{ choices: Array<{ delta: { content?: string } }>; usage?: unknown }>
    const content = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')
    assert.equal(content, 'Echo: hello there')
    const last = chunks.at(-1) as {
      choices: unknown[]
      usage: { prompt_tokens: number; completion_tokens: number }
    }
    assert.deepEqual(last.choices, [], 'the usage chunk reaches the agent too')
    assert.deepEqual(runner.usage, [
      { promptTokens: last.usage.prompt_tokens, completionTokens: last.usage.completion_tokens },
    ])
    const seen = fake.requests.at(-1)!.body as { stream_options: unknown }
    assert.deepEqual(seen.stream_options, { include_usage: true })
  })

  it('forces include_usage on even when the agent turned it off', async () => {
    const result = await run('chat', {
      model: 'gpt-4o-mini',
      messages,
      stream: true,
      stream_options: { include_usage: false },
    })
    await collect(result)
    assert.deepEqual((fake.requests.at(-1)!.body as { stream_options: unknown }).stream_options, {
      include_usage: true,
    })
    assert.equal(runner.usage.length, 1)
  })

  it('answers embeddings with their prompt tokens as usage', async () => {
    const result = await run('embeddings', { model: 'text-embedding-3-small', input: ['one', 'two words'] })
    assert.ok('data' in result)
    const data = result.data as { data: Array<{ embedding: number[] }> }
    assert.equal(data.data.length, 2)
    assert.equal(data.data[0]!.embedding.length, 8)
    assert.deepEqual(result.usage, { promptTokens: 3, completionTokens: 0 })
    assert.equal(fake.requests.at(-1)!.path, '/v1/embeddings')
  })

  it('lists every problem of a malformed chat body, and accepts fields it does not know', () => {
    const problems = runner.problems(openai, 'chat', { messages: [], stream: 'yes' })
    assert.deepEqual(problems.map((p) => p.path).sort(), ['(root)', 'messages', 'stream'])
    assert.ok(problems.some((p) => p.message.includes('"model"')))
    assert.deepEqual(runner.problems(openai, 'chat', { model: 'm', messages, seed: 7, tools: [] }), [])
    assert.deepEqual(runner.problems(openai, 'embeddings', { model: 'm', input: [1, 2, 3] }), [])
    assert.equal(runner.problems(openai, 'embeddings', { model: 'm', input: [] }).length, 1)
  })

  it('says which chat calls stream, so routes that cannot relay a stream refuse them first', () => {
    assert.equal(openai.actions['chat']!.streams?.({ stream: true }), true)
    assert.equal(openai.actions['chat']!.streams?.({ stream: false }), false)
    assert.equal(openai.actions['chat']!.idempotent, false)
    assert.equal(openai.actions['embeddings']!.idempotent, true)
  })

  it('turns a refused key into 502 upstream_error with the upstream status and without the key', async () => {
    const err = await gatewayRejection(run('chat', { model: 'gpt-4o-mini', messages }, 'sk-wrong-key-0000'))
    assert.equal(err.code, 'upstream_error')
    assert.equal(err.details?.['upstreamStatus'], 401)
    assert.doesNotMatch(JSON.stringify({ m: err.message, d: err.details }), /sk-/)
  })

  it('turns upstream faults into typed errors: status, non-JSON, oversize, reset, timeout', async () => {
    const chat = { model: 'gpt-4o-mini', messages }
    fake.faults.add({ kind: 'status', status: 500 })
    let err = await gatewayRejection(run('chat', chat))
    assert.deepEqual([err.code, err.details?.['upstreamStatus']], ['upstream_error', 500])

    fake.faults.add({ kind: 'non-json' })
    err = await gatewayRejection(run('chat', chat))
    assert.deepEqual([err.code, err.details?.['upstreamStatus']], ['upstream_error', 200])

    fake.faults.add({ kind: 'oversize', bytes: 100 * 1024 })
    err = await gatewayRejection(run('chat', chat))
    assert.deepEqual([err.code, err.details?.['upstreamStatus']], ['upstream_error', 200])

    fake.faults.add({ kind: 'reset' })
    err = await gatewayRejection(run('embeddings', { model: 'm', input: 'x' }))
    assert.equal(err.code, 'upstream_error')

    // undici's headers timer ticks about once a second: wait for more than that.
    fake.faults.add({ kind: 'latency', ms: 2_500 })
    err = await gatewayRejection(
      runner.run(openai, 'chat', chat, { settings: { url: fake.url, timeoutMs: 100 }, secret: key }),
    )
    assert.equal(err.code, 'upstream_timeout')
  })

  it('refuses a stream the upstream answered with an error status, with that status', async () => {
    fake.faults.add({ kind: 'status', status: 429 })
    const err = await gatewayRejection(run('chat', { model: 'gpt-4o-mini', messages, stream: true }))
    assert.deepEqual([err.code, err.details?.['upstreamStatus']], ['upstream_error', 429])
  })

  it('fails a stream the upstream cut short, counting the chunks that did arrive', async () => {
    fake.faults.add({ kind: 'truncate' })
    const result = await run('chat', { model: 'gpt-4o-mini', messages, stream: true })
    await assert.rejects(
      collect(result),
      (err: unknown) => err instanceof GatewayError && err.code === 'upstream_error',
    )
    assert.equal(runner.usage.length, 1)
    assert.equal(runner.usage[0]!.promptTokens, 0, 'no usage chunk arrived: only the chunks are counted')
    assert.ok(runner.usage[0]!.completionTokens > 0)
  })

  it('closes the upstream connection when the reader stops mid-stream', async () => {
    const watch = await watchConnections(fake.url)
    try {
      fake.faults.add({ kind: 'slow-body', chunkDelayMs: 50 })
      const result = await run('chat', { model: 'gpt-4o-mini', messages, stream: true }, key, watch.url)
      assert.ok('stream' in result)
      const iterator = result.stream[Symbol.asyncIterator]()
      const first = await iterator.next()
      assert.equal(first.done, false)
      assert.equal(watch.closed, 0)
      await iterator.return?.()
      await watch.closedAtLeast(1)
    } finally {
      await watch.close()
    }
  })
})
