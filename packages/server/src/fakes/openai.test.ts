import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { request } from 'undici'
import type { FakeServer } from './fake-server.ts'
import { countTokens, startFakeOpenAI } from './openai.ts'

const apiKey = 'sk-fake-test-key-abcdef0123456789'

interface Completion {
  id: string
  object: string
  created: number
  model: string
  choices: Array<{
    index: number
    message: { role: string; content: string; refusal: null }
    finish_reason: string
    logprobs: null
  }>
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number }
}

interface Chunk {
  id: string
  object: string
  model: string
  choices: Array<{ index: number; delta: { role?: string; content?: string }; finish_reason: string | null }>
  usage?: Completion['usage'] | null
}

interface OpenAIError {
  error: { message: string; type: string; param: string | null; code: string | null }
}

describe('the fake OpenAI API', () => {
  let fake: FakeServer
  const post = async (path: string, body: unknown, key: string | null = apiKey) => {
    const res = await request(`${fake.url}${path}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        ...(key === null ? {} : { authorization: `Bearer ${key}` }),
      },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    })
    return { status: res.statusCode, headers: res.headers, text: await res.body.text() }
  }
  const chat = (body: unknown) => post('/v1/chat/completions', body)
  const sse = (text: string): string[] => {
    assert.ok(text.endsWith('\n\n'), 'events end with a blank line')
    return text
      .slice(0, -2)
      .split('\n\n')
      .map((event) => {
        assert.match(event, /^data: /)
        return event.slice('data: '.length)
      })
  }

  before(async () => {
    fake = await startFakeOpenAI({ apiKey })
  })
  after(() => fake.close())

  it('counts a token per word, number or other non-space character', () => {
    assert.equal(countTokens('Hello, world!'), 4)
    assert.equal(countTokens('Echo: 42 cats'), 4)
    assert.equal(countTokens(''), 0)
  })

  it('answers a chat completion echoing the last user message, with deterministic usage', async () => {
    const { status, headers, text } = await chat({
      model: 'gpt-4o-mini',
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'first question' },
        { role: 'assistant', content: 'an answer' },
        { role: 'user', content: [{ type: 'text', text: 'Hello there, fake!' }] },
      ],
    })
    assert.equal(status, 200)
    assert.match(String(headers['content-type']), /^application\/json/)
    assert.match(String(headers['x-request-id']), /^req_/)
    const body = JSON.parse(text) as Completion
    assert.match(body.id, /^chatcmpl-/)
    assert.equal(body.object, 'chat.completion')
    assert.equal(body.model, 'gpt-4o-mini')
    assert.ok(Number.isInteger(body.created))
    assert.equal(body.choices.length, 1)
    const [choice] = body.choices
    assert.deepEqual(
      { ...choice, message: { ...choice!.message, annotations: undefined } },
      {
        index: 0,
        message: {
          role: 'assistant',
          content: 'Echo: Hello there, fake!',
          refusal: null,
          annotations: undefined,
        },
        logprobs: null,
        finish_reason: 'stop',
      },
    )
    // 3 to prime the answer, 3 per message, plus each content's tokens.
    const contents = ['Be brief.', 'first question', 'an answer', 'Hello there, fake!']
    const prompt = 3 + contents.reduce((sum, text) => sum + 3 + countTokens(text), 0)
    assert.equal(body.usage.prompt_tokens, prompt)
    assert.equal(body.usage.completion_tokens, countTokens('Echo: Hello there, fake!'))
    assert.equal(body.usage.total_tokens, body.usage.prompt_tokens + body.usage.completion_tokens)
  })

  it('gives every completion its own id', async () => {
    const body = { model: 'm', messages: [{ role: 'user', content: 'same' }] }
    const a = JSON.parse((await chat(body)).text) as Completion
    const b = JSON.parse((await chat(body)).text) as Completion
    assert.notEqual(a.id, b.id)
    assert.deepEqual(a.choices, b.choices)
  })

  it('cuts the answer at max_tokens and finishes it with length', async () => {
    const { text } = await chat({
      model: 'm',
      max_tokens: 3,
      messages: [{ role: 'user', content: 'one two three' }],
    })
    const body = JSON.parse(text) as Completion
    assert.equal(body.choices[0]!.message.content, 'Echo: one')
    assert.equal(body.choices[0]!.finish_reason, 'length')
    assert.equal(body.usage.completion_tokens, 3)
  })

  it('answers n choices', async () => {
    const body = JSON.parse(
      (await chat({ model: 'm', n: 2, messages: [{ role: 'user', content: 'hi' }] })).text,
    )
    assert.deepEqual(
      (body as Completion).choices.map((c) => [c.index, c.message.content]),
      [
        [0, 'Echo: hi'],
        [1, 'Echo: hi'],
      ],
    )
    assert.equal((body as Completion).usage.completion_tokens, 2 * countTokens('Echo: hi'))
  })

  it('streams chunks as SSE: role first, then the content tokens, then finish_reason, then [DONE]', async () => {
    const { status, headers, text } = await chat({
      model: 'gpt-4o-mini',
      stream: true,
      messages: [{ role: 'user', content: 'stream me, please' }],
    })
    assert.equal(status, 200)
    assert.match(String(headers['content-type']), /^text\/event-stream/)
    assert.equal(headers['content-length'], undefined)
    const events = sse(text)
    assert.equal(events.at(-1), '[DONE]')
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as Chunk)
    assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === chunks[0]!.id))
    assert.ok(
      chunks.every((c) => !('usage' in c)),
      'no usage field unless asked for',
    )
    assert.deepEqual(chunks[0]!.choices[0]!.delta, { role: 'assistant', content: '', refusal: null })
    const pieces = chunks.slice(1, -1).map((c) => c.choices[0]!.delta.content)
    assert.deepEqual(pieces, ['Echo', ':', ' stream', ' me', ',', ' please'])
    assert.ok(chunks.slice(0, -1).every((c) => c.choices[0]!.finish_reason === null))
    assert.deepEqual(chunks.at(-1)!.choices[0]!.delta, {})
    assert.equal(chunks.at(-1)!.choices[0]!.finish_reason, 'stop')
  })

  it('ends the stream with a usage chunk without choices when include_usage is set', async () => {
    const { text } = await chat({
      model: 'gpt-4o-mini',
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'count me' }],
    })
    const events = sse(text)
    assert.equal(events.at(-1), '[DONE]')
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as Chunk)
    const last = chunks.at(-1)!
    assert.deepEqual(last.choices, [])
    assert.deepEqual(
      {
        prompt: last.usage!.prompt_tokens,
        completion: last.usage!.completion_tokens,
        total: last.usage!.total_tokens,
      },
      {
        prompt: 3 + 3 + 2,
        completion: countTokens('Echo: count me'),
        total: 8 + countTokens('Echo: count me'),
      },
    )
    assert.ok(chunks.slice(0, -1).every((c) => c.usage === null))
  })

  it('refuses invalid chat bodies with 400 in the OpenAI error shape', async () => {
    const cases: Array<[unknown, RegExp, string | null]> = [
      ['{not json', /could not parse the JSON body/, null],
      [{ messages: [{ role: 'user', content: 'x' }] }, /must provide a model/, null],
      [{ model: 7, messages: [{ role: 'user', content: 'x' }] }, /Invalid type for 'model'/, 'model'],
      [{ model: 'm' }, /Missing required parameter: 'messages'/, 'messages'],
      [{ model: 'm', messages: 'hi' }, /Invalid type for 'messages'/, 'messages'],
      [{ model: 'm', messages: [] }, /too short/, 'messages'],
      [
        { model: 'm', messages: [{ role: 'robot', content: 'x' }] },
        /Invalid value: 'robot'/,
        'messages[0].role',
      ],
      [{ model: 'm', messages: [{ role: 'user' }] }, /Missing required parameter/, 'messages[0].content'],
      [{ model: 'm', messages: [{ role: 'user', content: 'x' }], stream: 'yes' }, /Invalid type/, 'stream'],
      [
        { model: 'm', messages: [{ role: 'user', content: 'x' }], stream_options: { include_usage: true } },
        /only allowed when 'stream' is enabled/,
        'stream_options',
      ],
      [
        { model: 'm', messages: [{ role: 'user', content: 'x' }], max_tokens: 0 },
        /between 1 and/,
        'max_tokens',
      ],
    ]
    for (const [body, message, param] of cases) {
      const res = await chat(body)
      assert.equal(res.status, 400, JSON.stringify(body))
      const { error } = JSON.parse(res.text) as OpenAIError
      assert.match(error.message, message)
      assert.equal(error.type, 'invalid_request_error')
      assert.equal(error.param, param, JSON.stringify(body))
      assert.ok('code' in error)
    }
  })

  it('answers embeddings for a string or an array of strings, deterministic unit vectors of 8 dims', async () => {
    const one = JSON.parse(
      (await post('/v1/embeddings', { model: 'text-embedding-3-small', input: 'hello' })).text,
    )
    assert.equal(one.object, 'list')
    assert.equal(one.model, 'text-embedding-3-small')
    assert.equal(one.data.length, 1)
    assert.equal(one.data[0].object, 'embedding')
    assert.equal(one.data[0].index, 0)
    const vector = one.data[0].embedding as number[]
    assert.equal(vector.length, 8)
    assert.ok(Math.abs(Math.hypot(...vector) - 1) < 1e-5)
    assert.deepEqual(one.usage, { prompt_tokens: 1, total_tokens: 1 })

    const many = JSON.parse(
      (
        await post('/v1/embeddings', {
          model: 'text-embedding-3-small',
          input: ['hello', 'good bye'],
          dimensions: 4,
        })
      ).text,
    )
    assert.deepEqual(
      many.data.map((d: { index: number; embedding: number[] }) => [d.index, d.embedding.length]),
      [
        [0, 4],
        [1, 4],
      ],
    )
    assert.notDeepEqual(many.data[0].embedding, many.data[1].embedding)
    assert.deepEqual(many.usage, { prompt_tokens: 3, total_tokens: 3 })
    const again = JSON.parse(
      (await post('/v1/embeddings', { model: 'text-embedding-3-small', input: 'hello' })).text,
    )
    assert.deepEqual(again.data, one.data)
  })

  it('encodes embeddings as base64 float32 when asked, as the official client does by default', async () => {
    const asFloat = JSON.parse((await post('/v1/embeddings', { model: 'e', input: 'x' })).text)
    const asBase64 = JSON.parse(
      (await post('/v1/embeddings', { model: 'e', input: 'x', encoding_format: 'base64' })).text,
    )
    const bytes = Buffer.from(asBase64.data[0].embedding as string, 'base64')
    const decoded = Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4))
    assert.deepEqual(decoded, asFloat.data[0].embedding)
  })

  it('refuses invalid embedding bodies with 400', async () => {
    for (const body of [
      { input: 'x' },
      { model: 'e' },
      { model: 'e', input: '' },
      { model: 'e', input: [] },
      { model: 'e', input: ['ok', 3] },
      { model: 'e', input: 'x', encoding_format: 'int8' },
      { model: 'e', input: 'x', dimensions: 0 },
    ]) {
      const res = await post('/v1/embeddings', body)
      assert.equal(res.status, 400, JSON.stringify(body))
      assert.equal((JSON.parse(res.text) as OpenAIError).error.type, 'invalid_request_error')
    }
  })

  it('lists its models and answers one, or 404 model_not_found', async () => {
    const headers = { authorization: `Bearer ${apiKey}` }
    const list = (await (await request(`${fake.url}/v1/models`, { headers })).body.json()) as {
      object: string
      data: Array<{ id: string; object: string }>
    }
    assert.equal(list.object, 'list')
    assert.ok(list.data.length >= 2)
    assert.ok(list.data.every((m) => m.object === 'model'))
    const one = await request(`${fake.url}/v1/models/gpt-4o-mini`, { headers })
    assert.equal(((await one.body.json()) as { id: string }).id, 'gpt-4o-mini')
    const none = await request(`${fake.url}/v1/models/gpt-0`, { headers })
    assert.equal(none.statusCode, 404)
    assert.equal(((await none.body.json()) as OpenAIError).error.code, 'model_not_found')
  })

  it('answers 404 Invalid URL in its error shape for unknown paths and methods', async () => {
    for (const [method, path] of [
      ['GET', '/v1/nothing'],
      ['GET', '/v1/chat/completions'],
      ['POST', '/v2/chat/completions'],
    ] as const) {
      const res = await request(`${fake.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${apiKey}` },
      })
      assert.equal(res.statusCode, 404)
      const { error } = (await res.body.json()) as OpenAIError
      assert.equal(error.message, `Invalid URL (${method} ${path})`)
      assert.equal(error.type, 'invalid_request_error')
    }
  })

  it('refuses a wrong key with invalid_api_key without echoing it, and a missing key with its own message', async () => {
    const wrong = await post('/v1/chat/completions', { model: 'm', messages: [] }, 'sk-wrong-key-9876543210')
    assert.equal(wrong.status, 401)
    const body = JSON.parse(wrong.text) as OpenAIError
    assert.deepEqual(
      { type: body.error.type, param: body.error.param, code: body.error.code },
      { type: 'invalid_request_error', param: null, code: 'invalid_api_key' },
    )
    assert.match(body.error.message, /^Incorrect API key provided/)
    assert.ok(!wrong.text.includes('wrong-key') && !wrong.text.includes('3210'))

    const none = await post('/v1/embeddings', { model: 'e', input: 'x' }, null)
    assert.equal(none.status, 401)
    assert.match((JSON.parse(none.text) as OpenAIError).error.message, /didn't provide an API key/)
    assert.equal(fake.requests.at(-1)!.authorized, false)
    assert.ok(!JSON.stringify(fake.requests).includes(apiKey))
  })

  it('answers an injected 503 as a server_error with Retry-After', async () => {
    fake.faults.add({ kind: 'status', status: 503, headers: { 'retry-after': '3' } })
    const res = await chat({ model: 'm', messages: [{ role: 'user', content: 'x' }] })
    assert.equal(res.status, 503)
    assert.equal(res.headers['retry-after'], '3')
    assert.equal((JSON.parse(res.text) as OpenAIError).error.type, 'server_error')
  })

  it('cuts a stream short on a truncate fault, before [DONE]', async () => {
    fake.faults.add({ kind: 'truncate' })
    const res = await request(`${fake.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}` },
      body: JSON.stringify({
        model: 'm',
        stream: true,
        messages: [{ role: 'user', content: 'long answer here' }],
      }),
    })
    assert.equal(res.statusCode, 200)
    let received = ''
    await assert.rejects(async () => {
      for await (const chunk of res.body) received += String(chunk)
    })
    assert.ok(!received.includes('[DONE]'))
  })
})
