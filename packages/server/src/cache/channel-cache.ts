/**
 * Stage 6 for channel routes that opt in (`rules[].cache`): GET answers served from the response
 * cache, and a bounded copy of a fresh 2xx answer kept while it streams to the client.
 *
 * Channel answers stream (upstreams/http-proxy.ts) and stage 7 (breaker, retries, timeouts) wraps
 * that proxy; rather than a second, buffering code path beside it, the cache tees the response
 * the proxy writes: `writeHead`, `write` and `end` are wrapped on this one response object, for
 * opted-in routes only. The copy stops (and nothing is kept) past `cache.maxEntryBytes`. A 5xx
 * head, or a failure before any head (upstream error, timeout, open breaker), is answered with a
 * stale entry when one is within its stale-if-error window.
 */
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { CompiledChannel } from '../config/compile.ts'
import { toGatewayError } from '../errors/gateway-error.ts'
import { contextValue, type RequestContext, requestIdHeaderFor } from '../http/context.ts'
import { addLimitHeaders } from '../ratelimit/limiter.ts'
import type { ProxyResult } from '../upstreams/http-proxy.ts'
import type { CachePolicy } from './compile-cache.ts'
import { type CacheProbe, cacheDirectives, type ResponseCache, type StoredAnswer } from './response-cache.ts'
import { isUpstreamFailure } from './tool-cache.ts'

/** Stage 7 for this request: calls the upstream, writing the answer to the response, then `done`. */
export type ChannelCall = (done: (result: ProxyResult) => void) => void

/** Per-request headers and the cache's own: never kept in an entry, written fresh on each answer. */
const unkept = new Set([
  'x-correlation-id',
  'date',
  'age',
  'x-cache',
  'content-length',
  'ratelimit-limit',
  'ratelimit-remaining',
  'ratelimit-reset',
])

function headerText(value: OutgoingHttpHeaders[string]): string | undefined {
  if (value === undefined) return undefined
  return Array.isArray(value) ? value.join(', ') : String(value)
}

/** The upstream's headers worth keeping, or undefined when the answer must not be kept. */
function keptHeaders(headers: OutgoingHttpHeaders, ctx: RequestContext, channel: CompiledChannel) {
  const control = headerText(headers['cache-control'])?.toLowerCase() ?? ''
  // An answer for one client (cookies, private) or one its origin forbids keeping is not shared.
  if (headers['set-cookie'] !== undefined || /no-store|private/.test(control)) return undefined
  if (headerText(headers['vary'])?.includes('*')) return undefined
  const idHeader = ctx.config.gateway.requestId.header
  const templated = new Set(channel.responseHeaders.set.map(([name]) => name))
  const kept: Record<string, string> = {}
  for (const name in headers) {
    if (unkept.has(name) || name === idHeader || templated.has(name)) continue
    const value = headerText(headers[name])
    if (value !== undefined) kept[name] = value
  }
  return kept
}

/** Write a kept answer: its headers, the channel's templated headers and this request's ids. */
function writeStored(
  res: ServerResponse,
  ctx: RequestContext,
  stored: StoredAnswer,
  result: 'HIT' | 'STALE',
): void {
  const headers: OutgoingHttpHeaders = { ...stored.headers }
  for (const [name, template] of ctx.channel!.responseHeaders.set) {
    const value = template.literal ?? template.render((n) => contextValue(ctx, n))
    if (value !== undefined) headers[name] = value
  }
  headers['x-cache'] = result
  headers['age'] = String(Math.max(0, Math.floor((Date.now() - stored.storedAt) / 1000)))
  headers['content-length'] = stored.body.length
  headers['x-correlation-id'] = ctx.correlationId
  const idHeader = requestIdHeaderFor(ctx, stored.status)
  if (idHeader !== undefined) headers[idHeader] = ctx.requestId
  if (ctx.rateLimit !== undefined) addLimitHeaders(headers, ctx.rateLimit)
  ctx.status = stored.status
  res.writeHead(stored.status, headers)
  res.end(ctx.method === 'HEAD' ? undefined : stored.body)
}

/** Sorted query pairs: `?b=2&a=1` and `?a=1&b=2` are one entry. */
function queryArgs(query: string): string[][] {
  if (query === '') return []
  return [...new URLSearchParams(query)].sort((x, y) =>
    x[0] === y[0] ? (x[1]! < y[1]! ? -1 : 1) : x[0]! < y[0]! ? -1 : 1,
  )
}

/**
 * Serve a GET or HEAD of an opted-in rule: from a fresh entry, else through `call`, keeping a
 * copy of a fresh 2xx GET answer; `done` gets the outcome as the proxy's would be.
 */
export function serveCachedChannel(
  cache: ResponseCache,
  req: IncomingMessage,
  res: ServerResponse,
  ctx: RequestContext,
  policy: CachePolicy,
  call: ChannelCall,
  finish: (result: ProxyResult) => void,
): void {
  const channel = ctx.channel!
  // Once whatever happens: the request is recorded exactly once.
  let answered = false
  const done = (result: ProxyResult): void => {
    if (answered) return
    answered = true
    finish(result)
  }
  // A credential the gateway did not prove (a public rule forwarding Authorization or Cookie)
  // may change the answer, and no partition tells its holders apart (RFC 9111 §3.5): not cached.
  if (
    !policy.shared &&
    ctx.principal === undefined &&
    (req.headers.authorization !== undefined || req.headers.cookie !== undefined)
  ) {
    call(done)
    return
  }
  const directives = cacheDirectives(req)
  const key = cache.keyOf(
    `channel\n${channel.name}\n${channel.system.origin}${channel.system.basePath}`,
    policy.shared ? '*' : (ctx.principal?.id ?? ''),
    {
      path: ctx.path,
      query: queryArgs(ctx.query),
      accept: req.headers.accept ?? '',
      encoding: req.headers['accept-encoding'] ?? '',
    },
  )

  const miss = (probe: CacheProbe | undefined, noStore: boolean): void => {
    const stale = probe?.stale
    const keep = ctx.method === 'GET' && !noStore
    const tee = teeResponse(res, ctx, channel, stale, keep)
    call((result) => {
      if (tee.servedStale !== undefined) {
        cache.metrics.lookup('channel', 'stale')
        done({ status: tee.servedStale.status, upstreamMs: result.upstreamMs, error: undefined })
        return
      }
      tee.release()
      if (
        result.error !== undefined &&
        stale !== undefined &&
        isUpstreamFailure(result.error) &&
        !res.headersSent
      ) {
        cache.metrics.lookup('channel', 'stale')
        writeStored(res, ctx, stale, 'STALE')
        done({ status: stale.status, upstreamMs: result.upstreamMs, error: undefined })
        return
      }
      const copy = tee.copy()
      if (result.error === undefined && copy !== undefined) cache.store(key, copy, policy)
      done(result)
    })
  }

  if (directives.bypass) {
    cache.metrics.lookup('channel', 'bypass')
    miss(undefined, directives.noStore)
    return
  }
  cache
    .lookup(key)
    .then((probe) => {
      if (probe.fresh === undefined) {
        cache.metrics.lookup('channel', 'miss')
        miss(probe, false)
        return
      }
      cache.metrics.lookup('channel', 'hit')
      writeStored(res, ctx, probe.fresh, 'HIT')
      done({ status: probe.fresh.status, upstreamMs: undefined, error: undefined })
    })
    // A throw in there (a stored head Node refuses to write, say) is this request's 500, never an
    // unhandled rejection that ends the process.
    .catch((err: unknown) => done({ status: 500, upstreamMs: undefined, error: toGatewayError(err) }))
}

interface Tee {
  /** The stale entry written instead of a 5xx head, if that happened. */
  readonly servedStale: StoredAnswer | undefined
  /** The answer as written, when it may be kept and was whole within the bound. */
  copy(): StoredAnswer | undefined
  /** Put the response's own methods back. */
  release(): void
}

function teeResponse(
  res: ServerResponse,
  ctx: RequestContext,
  channel: CompiledChannel,
  stale: StoredAnswer | undefined,
  keep: boolean,
): Tee {
  const { writeHead, write, end } = res
  const limit = ctx.config.cache.maxEntryBytes
  let servedStale: StoredAnswer | undefined
  let status = 0
  let headers: Record<string, string> | undefined
  let chunks: Buffer[] | undefined
  let size = 0
  let ended = false

  const release = (): void => {
    res.writeHead = writeHead
    res.write = write
    res.end = end
  }
  const take = (chunk: unknown): void => {
    if (chunks === undefined || chunk === undefined || chunk === null || typeof chunk === 'function') return
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk as Uint8Array)
    size += bytes.length
    if (size > limit) chunks = undefined
    else chunks.push(bytes)
  }

  res.writeHead = function teeHead(this: ServerResponse, code: number, ...rest: unknown[]) {
    const given = (typeof rest[0] === 'string' ? rest[1] : rest[0]) as OutgoingHttpHeaders | undefined
    if (code >= 500 && stale !== undefined && !Array.isArray(given)) {
      // The upstream failed: the stale entry answers; what the proxy writes next goes nowhere.
      release()
      servedStale = stale
      writeStored(res, ctx, stale, 'STALE')
      res.write = () => true
      res.end = function swallow(this: ServerResponse) {
        return this
      } as ServerResponse['end']
      return this
    }
    const out: OutgoingHttpHeaders = { ...(given ?? {}), 'x-cache': 'MISS' }
    if (keep && code >= 200 && code <= 299 && !Array.isArray(given)) {
      headers = keptHeaders(given ?? {}, ctx, channel)
      if (headers !== undefined) {
        status = code
        chunks = []
      }
    }
    return writeHead.call(this, code, out)
  } as ServerResponse['writeHead']
  res.write = function teeWrite(this: ServerResponse, chunk: unknown, ...rest: unknown[]) {
    take(chunk)
    return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest)
  } as ServerResponse['write']
  res.end = function teeEnd(this: ServerResponse, ...args: unknown[]) {
    take(args[0])
    ended = true
    return (end as (...args: unknown[]) => ServerResponse).apply(this, args)
  } as ServerResponse['end']

  return {
    get servedStale() {
      return servedStale
    },
    copy() {
      if (!ended || chunks === undefined || headers === undefined) return undefined
      return { status, headers, body: Buffer.concat(chunks, size), storedAt: Date.now() }
    },
    release() {
      // Stale already released them and left swallowing stand-ins: the proxy may still write.
      if (servedStale === undefined) release()
    },
  }
}
