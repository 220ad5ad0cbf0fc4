/**
 * How tools reach their configured upstream (`tools.NAME.url`): one keep-alive pool for every
 * tool call, trace headers on every request, a bounded read of the answer, and one mapping of
 * what can go wrong to gateway errors (`upstream_error` carrying the upstream status when there
 * was one, `upstream_timeout`).
 *
 * `call`, on every tool call's path, uses undici's `dispatch` with a handler that collects the
 * body: `request()` would build a Readable body stream and an async iterator over it, some 40 µs
 * more per call on this path. `open` hands the body over as a stream, so it keeps `request()`.
 */
import { Agent, type Dispatcher } from 'undici'
import { GatewayError } from '../errors/gateway-error.ts'
import { upstreamFailure } from '../upstreams/http-proxy.ts'
import type { CallAbort } from './call-abort.ts'
import type { ToolSettings, UpstreamAnswer, UpstreamRequest, UpstreamStream } from './types.ts'

/** Calls a tool's upstream; `close` ends the keep-alive pool. */
export interface UpstreamClient {
  /** Send `request` and read the whole answer (at most `maxAnswerBytes`). */
  call(
    settings: ToolSettings,
    request: UpstreamRequest,
    abort: CallAbort,
    traceHeaders: Readonly<Record<string, string>>,
  ): Promise<UpstreamAnswer>
  /** Send `request` and hand over the body unread (streams); the caller must drain or cancel it. */
  open(
    settings: ToolSettings,
    request: UpstreamRequest,
    abort: CallAbort,
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

function tooLarge(limit: number, upstreamStatus: number): GatewayError {
  return new GatewayError('upstream_error', `The upstream answer is larger than ${limit} bytes.`, {
    details: { reason: 'too_large', upstreamStatus },
  })
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

  const requestOf = (
    settings: ToolSettings,
    request: UpstreamRequest,
    traceHeaders: Readonly<Record<string, string>>,
  ): Dispatcher.DispatchOptions => {
    const base = baseOf(settings.url)
    return {
      origin: base.origin,
      path: base.path + request.path,
      method: request.method,
      headers: { ...traceHeaders, accept: 'application/json', ...request.headers },
      body: request.body ?? null,
      headersTimeout: settings.timeoutMs,
      bodyTimeout: settings.timeoutMs,
    }
  }

  return {
    call(settings, request, abort, traceHeaders) {
      return new Promise<UpstreamAnswer>((resolve, reject) => {
        const options = requestOf(settings, request, traceHeaders)
        let controller: Dispatcher.DispatchController | undefined
        let status = 0
        let headers: Record<string, string | string[] | undefined> = {}
        const chunks: Buffer[] = []
        let size = 0
        let settled = false
        const settle = (error: GatewayError | undefined): void => {
          if (settled) return
          settled = true
          stopListening()
          if (error !== undefined) {
            reject(error)
            return
          }
          const text = (chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)).toString('utf8')
          const type = String(headers['content-type'] ?? '').toLowerCase()
          let json: unknown
          if (type.includes('json')) {
            try {
              json = JSON.parse(text)
            } catch {
              json = undefined
            }
          }
          resolve({ status, headers, json, text })
        }
        // Aborting reaches onResponseError, which settles with the mapped error.
        const stopListening = abort.onAbort(() => controller?.abort(new Error('the client went away')))
        const handler: Dispatcher.DispatchHandler = {
          onRequestStart(c) {
            controller = c
            if (abort.aborted) c.abort(new Error('the client went away'))
          },
          onResponseStart(c, statusCode, responseHeaders) {
            status = statusCode
            headers = responseHeaders as Record<string, string | string[] | undefined>
            const declared = Number(headers['content-length'])
            // Refused before a byte of it is read; aborting closes that connection.
            if (Number.isFinite(declared) && declared > maxAnswerBytes) {
              const error = tooLarge(maxAnswerBytes, statusCode)
              c.abort(error)
              settle(error)
            }
          },
          onResponseData(c, chunk) {
            if (settled) return
            size += chunk.length
            if (size > maxAnswerBytes) {
              const error = tooLarge(maxAnswerBytes, status)
              c.abort(error)
              settle(error)
              return
            }
            chunks.push(chunk)
          },
          onResponseEnd() {
            settle(undefined)
          },
          onResponseError(_c, err) {
            settle(mapped(err))
          },
        }
        try {
          dispatcher.dispatch(options, handler)
        } catch (err) {
          settle(mapped(err))
        }
      })
    },

    async open(settings, request, abort, traceHeaders) {
      const response = await dispatcher
        .request({ ...requestOf(settings, request, traceHeaders), signal: abort.signal })
        .catch((err: unknown) => {
          throw mapped(err)
        })
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
