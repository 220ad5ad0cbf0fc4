/**
 * Streams one channel request to its HTTP system and the answer back (DESIGN §8), through
 * undici's `dispatch`: no per-request stream.pipeline, no buffering, backpressure both ways.
 * Request bodies are piped from the client socket; response chunks are written as they arrive and
 * the upstream is paused while the client is slow.
 */
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { Dispatcher } from 'undici'
import type { CompiledChannel } from '../config/compile.ts'
import { GatewayError } from '../errors/gateway-error.ts'
import { contextValue, type RequestContext } from '../http/context.ts'
import { addLimitHeaders } from '../ratelimit/limiter.ts'

/** Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus ones we rebuild. */
const hopByHop = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
])

/** Request headers the gateway sets itself; a client's copy is never passed on. */
const rebuiltRequestHeaders = new Set([
  'host',
  'expect',
  'traceparent',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-correlation-id',
  'forwarded',
])

/** How a forwarded request ended, for the record stage. */
export interface ProxyResult {
  status: number
  upstreamMs: number | undefined
  error: GatewayError | undefined
}

/** An answer held back before its head was written, for the resilience layer to retry or pass on. */
export interface HeldAnswer {
  status: number
  retryAfter: string | string[] | undefined
  /** Write the head and stream the body as usual; `done` runs when it ends. */
  deliver(): void
  /** Drop the answer and its connection; `done` never runs for this exchange. */
  discard(): void
}

/** Optional steps of the resilience layer (resilience/channel-call.ts). */
export interface ProxyHooks {
  /** Whether an answer with this status is held back (worth a retry) instead of written. */
  hold(status: number): boolean
  onHold(answer: HeldAnswer): void
}

/** Which timeout an undici error code is (DESIGN §10: connect, headers; body is the idle timeout). */
const timeoutKinds: Readonly<Record<string, string>> = {
  UND_ERR_CONNECT_TIMEOUT: 'connect',
  UND_ERR_HEADERS_TIMEOUT: 'headers',
  UND_ERR_BODY_TIMEOUT: 'body',
}

/** Map an undici or socket error to the gateway's code: timeouts are 504, the rest 502. */
export function upstreamFailure(err: unknown): GatewayError {
  const kind = timeoutKinds[(err as { code?: string }).code ?? '']
  if (kind !== undefined) {
    return new GatewayError('upstream_timeout', undefined, { cause: err, details: { timeout: kind } })
  }
  return new GatewayError('upstream_error', undefined, { cause: err })
}

/**
 * Names listed in a Connection header are hop-by-hop for this message too. The usual values,
 * `keep-alive` and `close`, list no other header and cost nothing.
 */
function connectionTokens(value: string | string[] | undefined): Set<string> | undefined {
  if (value === undefined || value === 'keep-alive' || value === 'close' || value === 'Keep-Alive')
    return undefined
  const joined = Array.isArray(value) ? value.join(',') : value
  return new Set(joined.split(',').map((t) => t.trim().toLowerCase()))
}

/**
 * Lower-cased header names, remembered: clients send the same few names on every request, so
 * this saves a string allocation per header. Bounded, since names are client-controlled.
 */
const lowerNames = new Map<string, string>()
function lowerName(name: string): string {
  let lower = lowerNames.get(name)
  if (lower === undefined) {
    lower = name.toLowerCase()
    if (lowerNames.size < 1024) lowerNames.set(name, lower)
  }
  return lower
}

/** The headers sent upstream for `req` (also used by the idempotent POST path, resilience/). */
export function requestHeaders(
  req: IncomingMessage,
  ctx: RequestContext,
  channel: CompiledChannel,
): string[] {
  const { gateway } = ctx.config
  // With requestId.on: none the gateway leaves the header alone: a client's copy passes through.
  const idHeader = gateway.requestId.on === 'none' ? undefined : gateway.requestId.header
  const remove = channel.requestHeaders.remove
  const listed = connectionTokens(req.headers.connection)
  const raw = req.rawHeaders
  const out: string[] = []
  let forwardedFor: string | undefined
  let forwardedProto: string | undefined
  let forwardedHost: string | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    const lower = lowerName(name)
    if (hopByHop.has(lower) || rebuiltRequestHeaders.has(lower) || lower === idHeader || remove.has(lower)) {
      if (gateway.trustProxy) {
        if (lower === 'x-forwarded-for')
          forwardedFor = forwardedFor === undefined ? raw[i + 1] : `${forwardedFor}, ${raw[i + 1]}`
        else if (lower === 'x-forwarded-proto') forwardedProto ??= raw[i + 1]
        else if (lower === 'x-forwarded-host') forwardedHost ??= raw[i + 1]
      }
      continue
    }
    if (listed?.has(lower)) continue
    out.push(name, raw[i + 1]!)
  }
  // Without trustProxy a client could claim any address; the gateway states what it saw.
  out.push('x-forwarded-for', forwardedFor === undefined ? ctx.clientIp : `${forwardedFor}, ${ctx.clientIp}`)
  out.push(
    'x-forwarded-proto',
    forwardedProto ?? ((req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http'),
  )
  const host = forwardedHost ?? req.headers.host
  if (host !== undefined) out.push('x-forwarded-host', host)
  out.push('traceparent', `00-${ctx.traceId}-${ctx.spanId}-${ctx.traceFlags}`)
  if (idHeader !== undefined) out.push(idHeader, ctx.requestId)
  out.push('x-correlation-id', ctx.correlationId)
  for (const [name, template] of channel.requestHeaders.set) {
    const value = template.literal ?? template.render((n) => contextValue(ctx, n))
    if (value !== undefined) out.push(name, value)
  }
  return out
}

/** The headers sent to the client for an upstream answer. */
export function responseHeaders(
  upstream: Record<string, string | string[] | undefined>,
  ctx: RequestContext,
  channel: CompiledChannel,
): OutgoingHttpHeaders {
  const remove = channel.responseHeaders.remove
  const listed = connectionTokens(upstream['connection'])
  const out: OutgoingHttpHeaders = {}
  for (const name in upstream) {
    if (hopByHop.has(name) || remove.has(name) || listed?.has(name)) continue
    out[name] = upstream[name]
  }
  for (const [name, template] of channel.responseHeaders.set) {
    const value = template.literal ?? template.render((n) => contextValue(ctx, n))
    if (value !== undefined) out[name] = value
  }
  const { header, on } = ctx.config.gateway.requestId
  if (on === 'always') out[header] = ctx.requestId
  out['x-correlation-id'] = ctx.correlationId
  if (ctx.rateLimit !== undefined) addLimitHeaders(out, ctx.rateLimit)
  return out
}

/** Write the head of an upstream answer and let the client's pace drive the upstream's. */
function startResponse(
  res: ServerResponse,
  ctx: RequestContext,
  channel: CompiledChannel,
  c: Dispatcher.DispatchController,
  statusCode: number,
  headers: Record<string, string | string[]>,
): void {
  res.writeHead(statusCode, responseHeaders(headers, ctx, channel))
  if (ctx.method === 'HEAD') return
  res.on('drain', () => c.resume())
}

/** True when the request carries a body (RFC 9112 §6.3): a length above zero, or chunked. */
function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length']
  if (length !== undefined) return length !== '0'
  return req.headers['transfer-encoding'] !== undefined
}

/**
 * Forward `req` to the channel's system on `dispatcher` and stream the answer into `res`.
 * `done` is called exactly once when the exchange ends, successfully or not. When the upstream
 * fails before the response starts, `done` gets the error and the caller writes it; after the
 * response started the connection is cut, since a status can no longer be changed. Answers
 * `abort`, which ends the exchange with an error (a total timeout).
 */
export function forwardRequest(
  req: IncomingMessage,
  res: ServerResponse,
  ctx: RequestContext,
  channel: CompiledChannel,
  path: string,
  dispatcher: Dispatcher,
  done: (result: ProxyResult) => void,
  hooks?: ProxyHooks,
): (error: GatewayError) => void {
  const maxBody = channel.maxBodyBytes
  const declared = req.headers['content-length']
  if (maxBody !== undefined && declared !== undefined && Number(declared) > maxBody) {
    done({
      status: 413,
      upstreamMs: undefined,
      error: new GatewayError('payload_too_large', undefined, { details: { limitBytes: maxBody } }),
    })
    return () => {}
  }

  const withBody = hasBody(req)
  const sentAt = performance.now()
  let controller: Dispatcher.DispatchController | undefined
  let finished = false
  let upstreamMs: number | undefined
  let status = 0

  const finish = (error: GatewayError | undefined): void => {
    if (finished) return
    finished = true
    res.off('close', onClientClose)
    done({ status: error === undefined ? status : error.status, upstreamMs, error })
  }

  // The client went away: stop the upstream exchange too (no orphaned uploads or downloads).
  const onClientClose = (): void => {
    if (finished || res.writableFinished) return
    // Finish before aborting: abort() calls onResponseError synchronously, which would otherwise
    // record the client's departure as a 502 upstream_error.
    status = 499
    finish(undefined)
    controller?.abort(new Error('client closed the connection'))
  }
  res.on('close', onClientClose)

  if (withBody && maxBody !== undefined) {
    let received = 0
    // Pause first: a 'data' listener on a stream not explicitly paused switches it to flowing
    // mode at once, and chunks that arrive before undici attaches its own listener (once the
    // upstream connection is up) would be dropped. undici resumes the body when it is ready.
    req.pause()
    req.on('data', (chunk: Buffer) => {
      received += chunk.length
      if (received > maxBody && !finished) {
        const error = new GatewayError('payload_too_large', undefined, { details: { limitBytes: maxBody } })
        controller?.abort(error)
        finish(error)
      }
    })
  }

  // Chunks that arrive while an answer is held (pause is advisory), and whether it ended meanwhile.
  let heldChunks: Buffer[] | undefined
  let heldEnded = false
  const timeout = channel.timeoutMs

  dispatcher.dispatch(
    {
      origin: channel.system.origin,
      path: path + ctx.query,
      method: ctx.method as Dispatcher.HttpMethod,
      headers: requestHeaders(req, ctx, channel),
      body: withBody ? req : null,
      headersTimeout: channel.system.resilience.headersTimeoutMs ?? timeout,
      bodyTimeout: timeout,
    },
    {
      onRequestStart(c) {
        controller = c
        if (finished) c.abort(new Error('request already finished'))
      },
      onResponseStart(c, statusCode, headers) {
        if (finished) return
        upstreamMs = performance.now() - sentAt
        status = statusCode
        const upstreamHeaders = headers as Record<string, string | string[]>
        if (hooks?.hold(statusCode) === true) {
          // Paused until the resilience layer decides: retried (discarded) or passed on.
          c.pause()
          heldChunks = []
          hooks.onHold({
            status: statusCode,
            retryAfter: upstreamHeaders['retry-after'],
            deliver() {
              if (finished || heldChunks === undefined) return
              const chunks = heldChunks
              heldChunks = undefined
              startResponse(res, ctx, channel, c, statusCode, upstreamHeaders)
              let room = true
              for (const chunk of chunks) room = res.write(chunk)
              if (heldEnded) {
                res.end()
                finish(undefined)
              } else if (room) c.resume()
            },
            discard() {
              if (finished) return
              finished = true
              res.off('close', onClientClose)
              c.abort(new Error('answer discarded for a retry'))
            },
          })
          return
        }
        startResponse(res, ctx, channel, c, statusCode, upstreamHeaders)
      },
      onResponseData(c, chunk) {
        if (finished) return
        if (heldChunks !== undefined) {
          heldChunks.push(chunk)
          return
        }
        if (!res.write(chunk)) c.pause()
      },
      onResponseEnd() {
        if (finished) return
        if (heldChunks !== undefined) {
          heldEnded = true
          return
        }
        res.end()
        finish(undefined)
      },
      onResponseError(_c, err) {
        if (finished) return
        // A failure after the head was sent cannot change the status: cut the connection so the
        // client sees a truncated message, not a clean end.
        if (res.headersSent) {
          res.destroy()
          finish(upstreamFailure(err))
          return
        }
        finish(err instanceof GatewayError ? err : upstreamFailure(err))
      },
    },
  )
  return (error) => {
    if (finished) return
    if (res.headersSent) res.destroy()
    finish(error)
    controller?.abort(error)
  }
}
