/**
 * How tools reach their configured upstream (`tools.NAME.url`): one keep-alive pool for every
 * tool call, trace headers on every request, a bounded read of the answer, and one mapping of
 * what can go wrong to gateway errors (`upstream_error` carrying the upstream status when there
 * was one, `upstream_timeout`).
 */
import { Agent, type Dispatcher } from 'undici'
import { GatewayError } from '../errors/gateway-error.ts'
import { upstreamFailure } from '../upstreams/http-proxy.ts'
import type { ToolSettings, UpstreamAnswer, UpstreamRequest, UpstreamStream } from './types.ts'

/** Calls a tool's upstream; `close` ends the keep-alive pool. */
export interface UpstreamClient {
  /** Send `request` and read the whole answer (at most `maxAnswerBytes`). */
  call(
    settings: ToolSettings,
    request: UpstreamRequest,
    signal: AbortSignal,
    traceHeaders: Readonly<Record<string, string>>,
  ): Promise<UpstreamAnswer>
  /** Send `request` and hand over the body unread (streams); the caller must drain or cancel it. */
  open(
    settings: ToolSettings,
    request: UpstreamRequest,
    signal: AbortSignal,
    traceHeaders: Readonly<Record<string, string>>,
  ): Promise<UpstreamStream>
  close(): Promise<void>
}

export interface UpstreamClientOptions {
  /** Largest answer `call` reads, bytes (default 10 MiB); larger is a 502. */
  maxAnswerBytes?: number
}

interface Base {
  origin: string
  path: string
}

/** Read a bounded body; too big is an upstream error, never an unbounded buffer. */
async function readAnswer(response: Dispatcher.ResponseData, limit: number): Promise<Buffer> {
  const tooLarge = () =>
    new GatewayError('upstream_error', `The upstream answer is larger than ${limit} bytes.`, {
      details: { reason: 'too_large', upstreamStatus: response.statusCode },
    })
  const declared = Number(response.headers['content-length'])
  if (Number.isFinite(declared) && declared > limit) {
    response.body.on('error', () => {}).destroy()
    throw tooLarge()
  }
  const chunks: Buffer[] = []
  let size = 0
  // Leaving the loop by throwing destroys the body, which closes that connection.
  for await (const chunk of response.body as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > limit) throw tooLarge()
    chunks.push(chunk)
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)
}

function mapped(err: unknown): GatewayError {
  return err instanceof GatewayError ? err : upstreamFailure(err)
}

/** Create the client tools share; one per tool service. */
export function createUpstreamClient(options: UpstreamClientOptions = {}): UpstreamClient {
  const maxAnswerBytes = options.maxAnswerBytes ?? 10 * 1024 * 1024
  const dispatcher = new Agent({ connections: 128, keepAliveTimeout: 4_000, pipelining: 1 })
  // Parsed once per configured url; bounded since reloads can leave urls nobody uses any more.
  const bases = new Map<string, Base>()
  const baseOf = (url: string): Base => {
    let base = bases.get(url)
    if (base === undefined) {
      let parsed: URL
      try {
        parsed = new URL(url)
      } catch {
        throw new GatewayError('tool_unavailable', 'The tool has no valid upstream url configured.')
      }
      base = { origin: parsed.origin, path: parsed.pathname.replace(/\/+$/, '') }
      if (bases.size >= 64) bases.clear()
      bases.set(url, base)
    }
    return base
  }

  function send(
    settings: ToolSettings,
    request: UpstreamRequest,
    signal: AbortSignal,
    traceHeaders: Readonly<Record<string, string>>,
  ): Promise<Dispatcher.ResponseData> {
    const base = baseOf(settings.url)
    return dispatcher
      .request({
        origin: base.origin,
        path: base.path + request.path,
        method: request.method,
        headers: { ...traceHeaders, accept: 'application/json', ...request.headers },
        body: request.body,
        signal,
        headersTimeout: settings.timeoutMs,
        bodyTimeout: settings.timeoutMs,
      })
      .catch((err: unknown) => {
        throw mapped(err)
      })
  }

  return {
    async call(settings, request, signal, traceHeaders) {
      const response = await send(settings, request, signal, traceHeaders)
      let buffer: Buffer
      try {
        buffer = await readAnswer(response, maxAnswerBytes)
      } catch (err) {
        throw mapped(err)
      }
      const text = buffer.toString('utf8')
      const type = String(response.headers['content-type'] ?? '').toLowerCase()
      let json: unknown
      if (type.includes('json')) {
        try {
          json = JSON.parse(text)
        } catch {
          json = undefined
        }
      }
      return { status: response.statusCode, headers: response.headers, json, text }
    },

    async open(settings, request, signal, traceHeaders) {
      const response = await send(settings, request, signal, traceHeaders)
      // A body error after the caller stopped listening must not become an unhandled 'error'.
      response.body.on('error', () => {})
      return { status: response.statusCode, headers: response.headers, body: readBody(response.body) }
    },

    close: () => dispatcher.close(),
  }
}

/**
 * The body as an iterable whose failures are gateway errors. `return()` destroys the body even
 * when iteration never started, so the upstream sees its connection close at once.
 */
function readBody(body: Dispatcher.ResponseData['body']): AsyncIterable<Uint8Array> {
  return {
    [Symbol.asyncIterator]() {
      const inner = (body as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]()
      return {
        async next() {
          try {
            return await inner.next()
          } catch (err) {
            throw mapped(err)
          }
        },
        async return() {
          body.destroy()
          return { done: true, value: undefined }
        },
      }
    },
  }
}
