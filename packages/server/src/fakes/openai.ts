/**
 * A fake OpenAI API: chat completions (JSON and SSE streaming, with the usage chunk), embeddings
 * (float or base64, as the official client asks by default) and the model list, in the field
 * names the official `openai` client reads. Answers are deterministic:
 *
 * - the assistant says `Echo: <text of the last user message>`;
 * - a token is a run of letters or digits, or one other non-space character, with the spaces
 *   before it (`countTokens`); streamed content pieces are exactly these tokens;
 * - prompt tokens are 3 per message plus its content's tokens, plus 3 to prime the answer
 *   (the shape of OpenAI's own counting recipe, not its tokenizer);
 * - `max_tokens`/`max_completion_tokens` cut the answer and finish it with `length`;
 * - embeddings are unit vectors hashed from the model and input (8 dimensions unless
 *   `dimensions` says otherwise), rounded to float32 so both encodings agree.
 */
import { createHash } from 'node:crypto'
import {
  bearerToken,
  checkSecret,
  type FakeReply,
  type FakeRequest,
  type FakeServer,
  startFakeServer,
} from './fake-server.ts'

export interface FakeOpenAIOptions {
  /** The key the gateway must send as `Authorization: Bearer <apiKey>`. */
  apiKey: string
  host?: string
  port?: number
}

const models = [
  { id: 'gpt-4o-mini', object: 'model', created: 1721172741, owned_by: 'system' },
  { id: 'text-embedding-3-small', object: 'model', created: 1705948997, owned_by: 'system' },
]
const roles = ['system', 'developer', 'user', 'assistant', 'tool', 'function']
const defaultDimensions = 8
const maxDimensions = 3072
const fingerprint = 'fp_fake0001'

/** Split text into the fake's tokens; joined again they give the text back. */
export function countTokens(text: string): number {
  return tokenize(text).length
}

function tokenize(text: string): string[] {
  return text.match(/\s*(?:[\p{L}\p{N}]+|[^\s\p{L}\p{N}])|\s+$/gu) ?? []
}

function error(
  status: number,
  message: string,
  type: string,
  param: string | null = null,
  code: string | null = null,
): FakeReply {
  return { status, body: { error: { message, type, param, code } } }
}

function invalid(message: string, param: string | null = null, code: string | null = null): FakeReply {
  return error(400, message, 'invalid_request_error', param, code)
}

function typeName(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (typeof value === 'number') return Number.isInteger(value) ? 'an integer' : 'a decimal'
  if (typeof value === 'object') return 'an object'
  return `a ${typeof value}`
}

function wrongType(param: string, expected: string, value: unknown): FakeReply {
  return invalid(
    `Invalid type for '${param}': expected ${expected}, but got ${typeName(value)} instead.`,
    param,
    'invalid_type',
  )
}

function missing(param: string): FakeReply {
  return invalid(`Missing required parameter: '${param}'.`, param, 'missing_required_parameter')
}

/** The text of a message's content: a string, or the `text` of its text parts. */
function contentText(content: unknown): string {
  if (typeof content === 'string') return content
  if (!Array.isArray(content)) return ''
  return content
    .map((part) =>
      part !== null && typeof part === 'object' && typeof (part as { text?: unknown }).text === 'string'
        ? (part as { text: string }).text
        : '',
    )
    .join('')
}

function positiveInteger(
  body: Record<string, unknown>,
  name: string,
  max: number,
): number | FakeReply | undefined {
  const value = body[name]
  if (value === undefined || value === null) return undefined
  if (typeof value !== 'number' || !Number.isInteger(value)) return wrongType(name, 'an integer', value)
  if (value < 1 || value > max) {
    return invalid(`Invalid '${name}': integer must be between 1 and ${max}.`, name, 'integer_out_of_range')
  }
  return value
}

function jsonObject(req: FakeRequest): Record<string, unknown> | undefined {
  const body = req.body
  return body !== null && typeof body === 'object' && !Array.isArray(body)
    ? (body as Record<string, unknown>)
    : undefined
}

const unparsable = invalid(
  "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your " +
    'HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)',
)

interface ChatPlan {
  model: string
  pieces: string[]
  finishReason: 'stop' | 'length'
  choices: number
  promptTokens: number
  stream: boolean
  includeUsage: boolean
}

function planChat(body: Record<string, unknown>): ChatPlan | FakeReply {
  const { model, messages, stream, stream_options: streamOptions } = body
  if (model === undefined) return invalid('you must provide a model parameter')
  if (typeof model !== 'string') return wrongType('model', 'a string', model)
  if (messages === undefined) return missing('messages')
  if (!Array.isArray(messages)) return wrongType('messages', 'an array', messages)
  if (messages.length === 0) return invalid("[] is too short - 'messages'", 'messages', 'empty_array')
  let promptTokens = 3
  let lastUser = ''
  for (const [i, message] of messages.entries()) {
    const at = `messages[${i}]`
    if (message === null || typeof message !== 'object' || Array.isArray(message)) {
      return wrongType(at, 'an object', message)
    }
    const { role, content } = message as Record<string, unknown>
    if (role === undefined) return missing(`${at}.role`)
    if (typeof role !== 'string' || !roles.includes(role)) {
      return invalid(
        `Invalid value: '${String(role)}'. Supported values are: 'system', 'assistant', 'user', 'function', ` +
          "'tool', and 'developer'.",
        `${at}.role`,
        'invalid_value',
      )
    }
    if (content === undefined && role !== 'assistant') return missing(`${at}.content`)
    if (content !== undefined && content !== null && typeof content !== 'string' && !Array.isArray(content)) {
      return wrongType(`${at}.content`, 'one of a string or array of objects', content)
    }
    const text = contentText(content)
    promptTokens += 3 + countTokens(text)
    if (role === 'user') lastUser = text
  }
  if (stream !== undefined && stream !== null && typeof stream !== 'boolean') {
    return wrongType('stream', 'a boolean', stream)
  }
  let includeUsage = false
  if (streamOptions !== undefined && streamOptions !== null) {
    if (stream !== true) {
      return invalid(
        "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
        'stream_options',
        'invalid_value',
      )
    }
    if (typeof streamOptions !== 'object' || Array.isArray(streamOptions)) {
      return wrongType('stream_options', 'an object', streamOptions)
    }
    includeUsage = (streamOptions as { include_usage?: unknown }).include_usage === true
  }
  const n = positiveInteger(body, 'n', 128)
  if (typeof n === 'object') return n
  let limit = positiveInteger(body, 'max_completion_tokens', 1_000_000)
  if (typeof limit === 'object') return limit
  if (limit === undefined) {
    limit = positiveInteger(body, 'max_tokens', 1_000_000)
    if (typeof limit === 'object') return limit
  }
  const all = tokenize(`Echo: ${lastUser}`)
  const cut = limit !== undefined && all.length > limit
  return {
    model,
    pieces: cut ? all.slice(0, limit) : all,
    finishReason: cut ? 'length' : 'stop',
    choices: n ?? 1,
    promptTokens,
    stream: stream === true,
    includeUsage,
  }
}

function usage(promptTokens: number, completionTokens: number) {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
    prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
    completion_tokens_details: {
      reasoning_tokens: 0,
      audio_tokens: 0,
      accepted_prediction_tokens: 0,
      rejected_prediction_tokens: 0,
    },
  }
}

function chat(plan: ChatPlan, id: string): FakeReply {
  const created = Math.floor(Date.now() / 1000)
  const indexes = Array.from({ length: plan.choices }, (_, i) => i)
  const total = usage(plan.promptTokens, plan.pieces.length * plan.choices)
  const headers = { 'x-request-id': `req_${id.slice('chatcmpl-'.length)}` }
  if (!plan.stream) {
    return {
      status: 200,
      headers,
      body: {
        id,
        object: 'chat.completion',
        created,
        model: plan.model,
        choices: indexes.map((index) => ({
          index,
          message: { role: 'assistant', content: plan.pieces.join(''), refusal: null, annotations: [] },
          logprobs: null,
          finish_reason: plan.finishReason,
        })),
        usage: total,
        service_tier: 'default',
        system_fingerprint: fingerprint,
      },
    }
  }
  // Every chunk carries `usage: null` when usage was asked for, as OpenAI's do; the usage itself
  // comes last in a chunk with no choices (the client must not expect a choice in it).
  const chunk = (choices: unknown[], extra: Record<string, unknown> = {}): string =>
    `data: ${JSON.stringify({
      id,
      object: 'chat.completion.chunk',
      created,
      model: plan.model,
      service_tier: 'default',
      system_fingerprint: fingerprint,
      choices,
      ...(plan.includeUsage ? { usage: null } : {}),
      ...extra,
    })}\n\n`
  const choice = (index: number, delta: Record<string, unknown>, finish: string | null = null) => ({
    index,
    delta,
    logprobs: null,
    finish_reason: finish,
  })
  const events: string[] = []
  for (const index of indexes) {
    events.push(chunk([choice(index, { role: 'assistant', content: '', refusal: null })]))
    for (const piece of plan.pieces) events.push(chunk([choice(index, { content: piece })]))
    events.push(chunk([choice(index, {}, plan.finishReason)]))
  }
  if (plan.includeUsage) events.push(chunk([], { usage: total }))
  events.push('data: [DONE]\n\n')
  return {
    status: 200,
    headers: { ...headers, 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' },
    events,
  }
}

/** A deterministic unit vector for `text`, with float32 precision. */
function embed(model: string, text: string, dimensions: number): number[] {
  const raw: number[] = []
  for (let block = 0; raw.length < dimensions; block++) {
    const digest = createHash('sha256').update(`${model}\0${text}\0${block}`).digest()
    for (let at = 0; at < digest.length && raw.length < dimensions; at += 4) {
      raw.push(digest.readUInt32BE(at) / 0xffffffff - 0.5)
    }
  }
  const norm = Math.hypot(...raw) || 1
  return raw.map((v) => Math.fround(v / norm))
}

function embeddings(body: Record<string, unknown>): FakeReply {
  const { model, input, encoding_format: format = 'float' } = body
  if (model === undefined) return invalid('you must provide a model parameter')
  if (typeof model !== 'string') return wrongType('model', 'a string', model)
  if (input === undefined) return missing('input')
  const inputs = typeof input === 'string' ? [input] : input
  const badInput = invalid(
    "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
  )
  if (!Array.isArray(inputs) || inputs.length === 0 || inputs.length > 2048) return badInput
  if (!inputs.every((item): item is string => typeof item === 'string' && item !== '')) return badInput
  if (format !== 'float' && format !== 'base64') {
    return invalid(
      `Invalid value: '${String(format)}'. Supported values are: 'float' and 'base64'.`,
      'encoding_format',
      'invalid_value',
    )
  }
  const dimensions = positiveInteger(body, 'dimensions', maxDimensions)
  if (typeof dimensions === 'object') return dimensions
  const promptTokens = inputs.reduce((sum, text) => sum + countTokens(text), 0)
  return {
    status: 200,
    body: {
      object: 'list',
      data: inputs.map((text, index) => {
        const vector = embed(model, text, dimensions ?? defaultDimensions)
        return {
          object: 'embedding',
          index,
          embedding:
            format === 'float' ? vector : Buffer.from(new Float32Array(vector).buffer).toString('base64'),
        }
      }),
      model,
      usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
    },
  }
}

/** Start a fake OpenAI API on a free loopback port (or `host`/`port`); it serves under `/v1`. */
export function startFakeOpenAI(options: FakeOpenAIOptions): Promise<FakeServer> {
  let served = 0
  return startFakeServer({
    host: options.host,
    port: options.port,
    authorize: (headers) => checkSecret(bearerToken(headers), options.apiKey),
    errorBody: (status, message) => ({
      error: {
        message,
        type: status >= 500 ? 'server_error' : 'invalid_request_error',
        param: null,
        code: null,
      },
    }),
    handle(req) {
      if (req.credential !== 'valid') {
        // Never echo the presented key, not even masked: it may be another system's secret.
        return req.credential === 'missing'
          ? error(
              401,
              "You didn't provide an API key. You need to provide your API key in an Authorization header " +
                'using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).',
              'invalid_request_error',
            )
          : error(
              401,
              'Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.',
              'invalid_request_error',
              null,
              'invalid_api_key',
            )
      }
      const route = `${req.method} ${req.path}`
      if (route === 'GET /v1/models') return { status: 200, body: { object: 'list', data: models } }
      const model = /^GET \/v1\/models\/([^/]+)$/.exec(route)
      if (model !== null) {
        const found = models.find((m) => m.id === decodeURIComponent(model[1]!))
        return found !== undefined
          ? { status: 200, body: found }
          : error(
              404,
              `The model '${decodeURIComponent(model[1]!)}' does not exist`,
              'invalid_request_error',
              'model',
              'model_not_found',
            )
      }
      if (route === 'POST /v1/chat/completions') {
        const body = jsonObject(req)
        if (body === undefined) return unparsable
        const plan = planChat(body)
        if ('status' in plan) return plan
        served += 1
        const id = `chatcmpl-fake${createHash('sha256').update(String(served)).digest('hex').slice(0, 24)}`
        return chat(plan, id)
      }
      if (route === 'POST /v1/embeddings') {
        const body = jsonObject(req)
        return body === undefined ? unparsable : embeddings(body)
      }
      return error(404, `Invalid URL (${req.method} ${req.path})`, 'invalid_request_error')
    },
  })
}
