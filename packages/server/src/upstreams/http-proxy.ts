/**
 * Streams one channel request to its HTTP system and the answer back (DESIGN §8), through
 * undici's `dispatch`: no per-request stream.pipeline, no buffering, backpressure both ways.
 * Request bodies are piped from the client socket; response chunks are written as they arrive and
 * the upstream is paused while the client is slow.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Dispatcher } from 'undici'
import type { CompiledChannel } from '../config/compile.ts'
import { GatewayError } from '../errors/gateway-error.ts'
import { contextValue, type RequestContext } from '../http/context.ts'

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

/** Map an undici or socket error to the gateway's code: timeouts are 504, the rest 502. */
export function upstreamFailure(err: unknown): GatewayError {
  const code = (err as { code?: string }).code
  if (
    code === 'UND_ERR_HEADERS_TIMEOUT' ||
    code === 'UND_ERR_BODY_TIMEOUT' ||
    code === 'UND_ERR_CONNECT_TIMEOUT'
  ) {
    return new GatewayError('upstream_timeout', undefined, { cause: err })
  }
  return new GatewayError('upstream_error', undefined, { cause: err })
}

/** Names listed in a Connection header are hop-by-hop for this message too. */
function connectionTokens(value: string | string[] | undefined): Set<string> | undefined {
  if (value === undefined) return undefined
  const joined = Array.isArray(value) ? value.join(',') : value
  return new Set(joined.split(',').map((t) => t.trim().toLowerCase()))
}

function requestHeaders(req: IncomingMessage, ctx: RequestContext, channel: CompiledChannel): string[] {
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
    const lower = name.toLowerCase()
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

/**
 * The client's response head from the upstream's raw header list, as a flat [name, value, …] list
 * for writeHead: bytes kept as they came (latin1), hop-by-hop and removed headers dropped, the
 * channel's headers and the gateway's ids set.
 */
function responseHeaders(raw: Buffer[], ctx: RequestContext, channel: CompiledChannel): string[] {
  const remove = channel.responseHeaders.remove
  const { header: idHeader, on } = ctx.config.gateway.requestId
  const setsId = on === 'always'
  const out: string[] = []
  let connection: string | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toString('latin1')
    const lower = name.toLowerCase()
    if (hopByHop.has(lower)) {
      if (lower === 'connection') connection = raw[i + 1]!.toString('latin1')
      continue
    }
    if (remove.has(lower) || lower === 'x-correlation-id' || (setsId && lower === idHeader)) continue
    out.push(name, raw[i + 1]!.toString('latin1'))
  }
  // Headers named in Connection are hop-by-hop for this message (rare beyond keep-alive/close).
  const listed =
    connection === undefined || connection === 'keep-alive' || connection === 'close'
      ? undefined
      : connectionTokens(connection)
  const kept =
    listed === undefined ? out : out.filter((_v, i, all) => !listed.has(all[i - (i % 2)]!.toLowerCase()))
  for (const [name, template] of channel.responseHeaders.set) {
    const value = template.literal ?? template.render((n) => contextValue(ctx, n))
    if (value !== undefined) kept.push(name, value)
  }
  if (setsId) kept.push(idHeader, ctx.requestId)
  kept.push('x-correlation-id', ctx.correlationId)
  return kept
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
 * response started the connection is cut, since a status can no longer be changed.
 */
export function forwardRequest(
  req: IncomingMessage,
  res: ServerResponse,
  ctx: RequestContext,
  channel: CompiledChannel,
  path: string,
  dispatcher: Dispatcher,
  done: (result: ProxyResult) => void,
): void {
  const maxBody = channel.maxBodyBytes
  const declared = req.headers['content-length']
  if (maxBody !== undefined && declared !== undefined && Number(declared) > maxBody) {
    done({
      status: 413,
      upstreamMs: undefined,
      error: new GatewayError('payload_too_large', undefined, { details: { limitBytes: maxBody } }),
    })
    return
  }

  const exchange = new ProxyExchange(req, res, ctx, channel, done)
  const withBody = hasBody(req)
  if (withBody && maxBody !== undefined) exchange.countBody(maxBody)
  dispatcher.dispatch(
    {
      origin: channel.system.origin,
      path: path + ctx.query,
      method: ctx.method as Dispatcher.HttpMethod,
      headers: requestHeaders(req, ctx, channel),
      body: withBody ? req : null,
      headersTimeout: channel.timeoutMs,
      bodyTimeout: channel.timeoutMs,
    },
    exchange,
  )
}

/**
 * One forwarded exchange, as an undici dispatch handler. It uses undici's original handler
 * interface (onConnect/onHeaders/onData/onComplete/onError) rather than the controller-based one:
 * undici 7 adapts the newer interface with a wrapper, a controller and a parsed header object per
 * request, which this hot path does not need. A class keeps the per-request state in one object
 * instead of a closure per callback.
 */
class ProxyExchange implements Dispatcher.DispatchHandler {
  private readonly sentAt = performance.now()
  private abortUpstream: ((err: Error) => void) | undefined
  private finished = false
  private upstreamMs: number | undefined
  private status = 0
  private readonly onClientClose: () => void

  constructor(
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly ctx: RequestContext,
    private readonly channel: CompiledChannel,
    private readonly done: (result: ProxyResult) => void,
  ) {
    // The client went away: stop the upstream exchange too (no orphaned uploads or downloads).
    this.onClientClose = () => {
      if (this.finished || res.writableFinished) return
      // Finish before aborting: the abort reports an error to onError synchronously, which
      // would otherwise record the client's departure as a 502 upstream_error.
      this.status = 499
      this.finish(undefined)
      this.abortUpstream?.(new Error('client closed the connection'))
    }
    res.on('close', this.onClientClose)
  }

  /** Count the request body as it streams and end the exchange with 413 past `limit`. */
  countBody(limit: number): void {
    let received = 0
    // Pause first: a 'data' listener on a stream not explicitly paused switches it to flowing
    // mode at once, and chunks that arrive before undici attaches its own listener (once the
    // upstream connection is up) would be dropped. undici resumes the body when it is ready.
    this.req.pause()
    this.req.on('data', (chunk: Buffer) => {
      received += chunk.length
      if (received > limit && !this.finished) {
        const error = new GatewayError('payload_too_large', undefined, { details: { limitBytes: limit } })
        this.finish(error)
        this.abortUpstream?.(error)
      }
    })
  }

  private finish(error: GatewayError | undefined): void {
    if (this.finished) return
    this.finished = true
    this.res.off('close', this.onClientClose)
    this.done({
      status: error === undefined ? this.status : error.status,
      upstreamMs: this.upstreamMs,
      error,
    })
  }

  onConnect(abort: (err?: Error) => void): void {
    this.abortUpstream = abort
    if (this.finished) abort(new Error('request already finished'))
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    if (this.finished) return false
    // 1xx informational answers precede the final one; the client's own 100-continue is Node's.
    if (statusCode < 200) return true
    this.upstreamMs = performance.now() - this.sentAt
    this.status = statusCode
    this.res.writeHead(statusCode, responseHeaders(rawHeaders, this.ctx, this.channel))
    this.resumeUpstream = resume
    return true
  }

  private resumeUpstream: (() => void) | undefined

  onData(chunk: Buffer): boolean {
    if (this.finished) return false
    if (this.res.write(chunk)) return true
    // The client is slower than the upstream: pause the upstream until the client drains.
    const resume = this.resumeUpstream
    if (resume !== undefined) this.res.once('drain', resume)
    return false
  }

  onComplete(): void {
    if (this.finished) return
    this.res.end()
    this.finish(undefined)
  }

  onError(err: Error): void {
    if (this.finished) return
    // A failure after the head was sent cannot change the status: cut the connection so the
    // client sees a truncated message, not a clean end.
    if (this.res.headersSent) {
      this.res.destroy()
      this.finish(upstreamFailure(err))
      return
    }
    this.finish(err instanceof GatewayError ? err : upstreamFailure(err))
  }
}
