/**
 * OpenAI (https://platform.openai.com/docs/api-reference): `chat` posts the chat completion body
 * to `/v1/chat/completions` (answered whole, or with `stream: true` as the upstream's server-sent
 * events), `embeddings` posts to `/v1/embeddings`. The key goes as `Authorization: Bearer`. Usage
 * is metered against `quota.tokens`: from the answer, or from the final usage chunk of a stream,
 * which the gateway always asks for and still passes on.
 */
import { Type } from 'typebox'
import { GatewayError } from '../../errors/gateway-error.ts'
import { relayWithUsage, usageOf } from '../sse-usage.ts'
import type { ToolCallContext, ToolDefinition, ToolResult } from '../types.ts'
import { expectJson } from '../upstream-answer.ts'

const open = { additionalProperties: true }

const Message = Type.Object(
  {
    role: Type.String({
      minLength: 1,
      maxLength: 32,
      description: 'system, developer, user, assistant, tool',
    }),
    content: Type.Optional(
      Type.Union([Type.String(), Type.Array(Type.Object({}, open)), Type.Null()], {
        description: 'text, or an array of content parts',
      }),
    ),
  },
  open,
)

const ChatParams = Type.Object(
  {
    model: Type.String({ minLength: 1, maxLength: 256, description: 'the model, e.g. gpt-4o-mini' }),
    messages: Type.Array(Message, { minItems: 1, maxItems: 4096 }),
    stream: Type.Optional(Type.Boolean({ description: 'answer with server-sent events as they arrive' })),
    stream_options: Type.Optional(Type.Object({ include_usage: Type.Optional(Type.Boolean()) }, open)),
  },
  { ...open, description: 'the OpenAI chat completion body; fields not listed pass through unchanged' },
)

const EmbeddingsParams = Type.Object(
  {
    model: Type.String({ minLength: 1, maxLength: 256, description: 'e.g. text-embedding-3-small' }),
    input: Type.Union(
      [
        Type.String({ minLength: 1 }),
        Type.Array(Type.String({ minLength: 1 }), { minItems: 1, maxItems: 2048 }),
        Type.Array(Type.Integer({ minimum: 0 }), { minItems: 1 }),
        Type.Array(Type.Array(Type.Integer({ minimum: 0 }), { minItems: 1 }), {
          minItems: 1,
          maxItems: 2048,
        }),
      ],
      { description: 'text, texts, or token arrays to embed' },
    ),
    encoding_format: Type.Optional(Type.Union([Type.Literal('float'), Type.Literal('base64')])),
    dimensions: Type.Optional(Type.Integer({ minimum: 1 })),
  },
  { ...open, description: 'the OpenAI embeddings body; fields not listed pass through unchanged' },
)

type Body = Record<string, unknown>

function jsonHeaders(call: ToolCallContext<unknown>, accept: string): Record<string, string> {
  return {
    authorization: `Bearer ${call.secret ?? ''}`,
    'content-type': 'application/json',
    accept,
  }
}

async function post(call: ToolCallContext<unknown>, path: string, body: Body): Promise<ToolResult> {
  const answer = await call.upstream({
    method: 'POST',
    path,
    headers: jsonHeaders(call, 'application/json'),
    body: JSON.stringify(body),
  })
  const data = expectJson('openai', answer)
  const usage = usageOf((data as { usage?: unknown } | null)?.usage)
  return usage === undefined
    ? { data, upstreamStatus: answer.status }
    : { data, upstreamStatus: answer.status, usage }
}

async function stream(call: ToolCallContext<unknown>, body: Body): Promise<ToolResult> {
  const asked = body['stream_options']
  // The usage chunk is how a stream is metered: ask for it whatever the agent asked.
  const upstreamBody = {
    ...body,
    stream_options: { ...(typeof asked === 'object' && asked !== null ? asked : {}), include_usage: true },
  }
  const answer = await call.upstreamStream({
    method: 'POST',
    path: '/v1/chat/completions',
    headers: jsonHeaders(call, 'text/event-stream'),
    body: JSON.stringify(upstreamBody),
  })
  const type = String(answer.headers['content-type'] ?? '').toLowerCase()
  if (answer.status < 200 || answer.status > 299 || !type.startsWith('text/event-stream')) {
    // Its error text is not passed on (it can echo the key); close the connection instead of reading it.
    await answer.body[Symbol.asyncIterator]().return?.()
    throw new GatewayError(
      'upstream_error',
      answer.status < 200 || answer.status > 299
        ? `The openai upstream answered ${answer.status}.`
        : 'The openai upstream did not answer with an event stream.',
      { details: { upstreamStatus: answer.status } },
    )
  }
  return {
    stream: relayWithUsage(answer.body, {
      dropUsageChunk: false,
      onEnd: (usage) => {
        if (usage !== undefined) call.reportUsage(usage)
      },
    }),
    headers: { 'content-type': 'text/event-stream; charset=utf-8' },
    upstreamStatus: answer.status,
  }
}

export const openai: ToolDefinition = {
  name: 'openai',
  description: 'OpenAI-compatible chat completions and embeddings.',
  defaultUrl: 'https://api.openai.com',
  defaultSecret: 'openai_key',
  actions: {
    chat: {
      description:
        'Create a chat completion; answers the completion, or with stream: true the server-sent events.',
      params: ChatParams,
      // Each call is billed and answers differently: never repeated on the agent's behalf.
      idempotent: false,
      streams: (params) => (params as Body)['stream'] === true,
      execute(call) {
        const body = call.params as Body
        return body['stream'] === true ? stream(call, body) : post(call, '/v1/chat/completions', body)
      },
    },
    embeddings: {
      description: 'Embed text; answers the OpenAI list of embeddings.',
      params: EmbeddingsParams,
      idempotent: true,
      execute: (call) => post(call, '/v1/embeddings', call.params as Body),
    },
  },
}
