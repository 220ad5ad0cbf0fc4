/**
 * The outbound fetch behind the `http_fetch` tool (DESIGN §6): http(s) only, no credentials in
 * the URL, every hop's host canonicalised and its address checked at connect time by the safe
 * lookup, redirects followed by hand so each one is checked again, the body read under a byte
 * cap, and one deadline over the whole exchange.
 */
import { isIP } from 'node:net'
import { Agent, type Dispatcher, request } from 'undici'
import type { AllowNetworks } from './allow-networks.ts'
import { NetFetchError } from './fetch-error.ts'
import { canonicalHost } from './host.ts'
import { checkAddress, createSafeLookup, type Resolver, type SafeLookupOptions } from './safe-lookup.ts'

export { NetFetchError, toGatewayError } from './fetch-error.ts'

/** What to fetch. */
export interface SafeFetchInput {
  readonly url: string
  readonly method: 'GET' | 'HEAD' | 'POST'
  readonly headers?: Readonly<Record<string, string>>
  readonly body?: string | Uint8Array
}

/** How to fetch it. */
export interface SafeFetchOptions extends SafeLookupOptions {
  /** The most body bytes accepted; the fetch fails with `too_large` past it. */
  readonly maxBytes: number
  /** The most redirects followed; one more fails with `too_many_redirects`. */
  readonly maxRedirects: number
  /** The deadline for the whole exchange, redirects and body included. */
  readonly timeoutMs: number
  /** The deadline for one TCP (and TLS) connection; 10 s unless set. */
  readonly connectTimeoutMs?: number
  /** Aborts the fetch and the upstream call, e.g. when the agent's client disconnects. */
  readonly signal?: AbortSignal
  /** Where to keep keep-alive connection pools between calls; without it each call has its own. */
  readonly dispatcherCache?: DispatcherCache
  /**
   * Asked for every redirect's canonical host after the SSRF checks passed: false refuses the hop
   * (`redirect_refused`), so a host the caller allows cannot hand the fetch on to one it does not.
   */
  readonly allowRedirectHost?: (host: string) => boolean
}

/** The upstream's final answer. */
export interface SafeFetchResult {
  readonly status: number
  readonly headers: Record<string, string | string[]>
  readonly body: Buffer
  /** The URL that answered, after redirects; never carries userinfo. */
  readonly finalUrl: string
  readonly redirects: number
}

/** Keep-alive dispatchers shared by fetches with the same SSRF settings. */
export interface DispatcherCache {
  /** The dispatcher for these settings, created on first use. */
  get(options: SafeLookupOptions & { readonly connectTimeoutMs?: number }): Dispatcher
  /** Close every dispatcher, letting requests in flight finish. */
  close(): Promise<void>
}

const DEFAULT_CONNECT_TIMEOUT_MS = 10_000
const MAX_URL_LENGTH = 8192
// setTimeout fires at once for delays past 2^31 - 1 ms.
const MAX_TIMER_MS = 2 ** 31 - 1
const REDIRECTS = new Set([301, 302, 303, 307, 308])
// Set by the HTTP client from the URL and body; a caller setting them could desynchronise
// framing (request smuggling) or the virtual host from the checked connection.
export const RESERVED_HEADERS: ReadonlySet<string> = new Set([
  'host',
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'content-length',
  'upgrade',
  'te',
  'trailer',
  'expect',
  'http2-settings',
])
// Fetch standard §4.4 (HTTP-redirect fetch): credentials never follow a request to another origin.
const CREDENTIAL_HEADERS = ['authorization', 'cookie', 'proxy-authorization']
// Fetch standard: the request-body-header names dropped when a redirect turns a request into GET.
const BODY_HEADERS = ['content-type', 'content-encoding', 'content-language', 'content-location']
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
const BAD_VALUE = /[\r\n\0]/
const CONNECT_CODES = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  'ENOTFOUND',
  'EAI_AGAIN',
])
const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'])

function createAgent(options: SafeLookupOptions, connectTimeoutMs: number | undefined): Agent {
  return new Agent({
    connect: { lookup: createSafeLookup(options) },
    connectTimeout: connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
  })
}

/**
 * A cache of one undici Agent per (allowNetworks, resolver, connect timeout), so fetches reuse
 * keep-alive connections. At most `max` agents are kept; the oldest is closed beyond that
 * (config reloads can leave settings nobody uses any more).
 */
export function createDispatcherCache(max = 16): DispatcherCache {
  const agents = new Map<string, Agent>()
  const resolverIds = new WeakMap<Resolver, number>()
  let nextResolverId = 1
  return {
    get(options) {
      let resolverId = 0
      if (options.resolve !== undefined) {
        resolverId = resolverIds.get(options.resolve) ?? nextResolverId++
        resolverIds.set(options.resolve, resolverId)
      }
      const key = `${options.allowNetworks.cidrs.join(',')}|${resolverId}|${options.connectTimeoutMs ?? ''}`
      let agent = agents.get(key)
      if (agent === undefined) {
        agent = createAgent(options, options.connectTimeoutMs)
        agents.set(key, agent)
        if (agents.size > max) {
          const [oldestKey, oldest] = agents.entries().next().value!
          agents.delete(oldestKey)
          void oldest.close()
        }
      }
      return agent
    },
    async close() {
      const all = [...agents.values()]
      agents.clear()
      await Promise.all(all.map((a) => a.close()))
    },
  }
}

/**
 * Parse and check one hop's URL. An IP-literal host is checked here because the socket never
 * consults the lookup for it; a name is checked by the safe lookup when the socket connects.
 */
function target(text: string, base: URL | undefined, allowNetworks: AllowNetworks): URL {
  // A bad URL from the agent is its mistake (bad_url); one from an upstream's redirect is the
  // upstream's (upstream_failed).
  const fail = (what: string) =>
    base === undefined
      ? new NetFetchError('bad_url', `The URL ${what}.`)
      : new NetFetchError('upstream_failed', `${hostOf(base)} redirected to a URL that ${what}.`, {
          host: hostOf(base),
        })
  if (text.length > MAX_URL_LENGTH) throw fail(`is longer than ${MAX_URL_LENGTH} characters`)
  let url: URL
  try {
    url = new URL(text, base)
  } catch {
    throw fail('is not valid')
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    const scheme = url.protocol.slice(0, -1).slice(0, 20)
    const from = base === undefined ? {} : { host: hostOf(base) }
    throw new NetFetchError('bad_scheme', `Only http and https URLs can be fetched, not ${scheme}.`, from)
  }
  if (url.username !== '' || url.password !== '') {
    // The agent's own URL is refused so it learns to use a header; an upstream's redirect
    // is only stripped, as browsers do, since the agent cannot change it.
    if (base === undefined) {
      throw fail('carries credentials (user:password@), which are not accepted; send an Authorization header')
    }
    url.username = ''
    url.password = ''
  }
  const host = canonicalHost(url.hostname)
  if (host === undefined) throw fail('has an invalid host')
  const family = isIP(host)
  url.hostname = family === 6 ? `[${host}]` : host
  url.hash = ''
  if (family !== 0) checkAddress(host, host, allowNetworks)
  return url
}

/** The canonical host of a URL that went through `target`, IPv6 without brackets. */
function hostOf(url: URL): string {
  return url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname
}

function requestHeaders(headers: Readonly<Record<string, string>> | undefined): Record<string, string> {
  const out: Record<string, string> = {}
  if (headers === undefined) return out
  if (typeof headers !== 'object' || headers === null || Array.isArray(headers)) {
    throw new NetFetchError('bad_request', 'The headers must be an object of names to values.')
  }
  for (const [rawName, value] of Object.entries(headers)) {
    const name = rawName.toLowerCase()
    const shown = JSON.stringify(rawName.slice(0, 64))
    if (!TOKEN.test(name)) throw new NetFetchError('bad_request', `${shown} is not a valid header name.`)
    if (RESERVED_HEADERS.has(name)) {
      throw new NetFetchError('bad_request', `Header ${shown} is set by the gateway and cannot be sent.`)
    }
    if (typeof value !== 'string' || BAD_VALUE.test(value)) {
      throw new NetFetchError('bad_request', `Header ${shown} has an invalid value.`)
    }
    out[name] = value
  }
  return out
}

function responseHeaders(
  raw: Record<string, string | string[] | undefined>,
): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  for (const [name, value] of Object.entries(raw)) if (value !== undefined) out[name] = value
  return out
}

async function readCapped(res: Dispatcher.ResponseData, maxBytes: number, host: string): Promise<Buffer> {
  const tooLarge = () =>
    new NetFetchError('too_large', `The answer from ${host} is larger than ${maxBytes} bytes.`, {
      host,
      upstreamStatus: res.statusCode,
    })
  const declared = Number(res.headers['content-length'])
  if (Number.isFinite(declared) && declared > maxBytes) {
    // Destroying an unread body emits an abort error; nobody else listens for it.
    res.body.on('error', () => {}).destroy()
    throw tooLarge()
  }
  const chunks: Buffer[] = []
  let total = 0
  // Leaving the loop by throwing destroys the stream, which closes the upstream connection.
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    total += chunk.length
    if (total > maxBytes) throw tooLarge()
    chunks.push(chunk)
  }
  return Buffer.concat(chunks, total)
}

function errorCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : undefined
}

/** Turn whatever the HTTP client threw into a NetFetchError that names the host only. */
function netError(err: unknown, host: string, state: { timedOut: boolean; aborted: boolean }): NetFetchError {
  if (err instanceof NetFetchError) return err
  if ((err as { cause?: unknown } | null)?.cause instanceof NetFetchError)
    return (err as Error).cause as NetFetchError
  if (state.timedOut)
    return new NetFetchError('timeout', `${host} did not answer in time.`, { host, cause: err })
  if (state.aborted)
    return new NetFetchError('aborted', `The fetch from ${host} was aborted.`, { host, cause: err })
  const code = errorCode(err)
  if (code !== undefined && TIMEOUT_CODES.has(code)) {
    return new NetFetchError('timeout', `${host} did not answer in time (${code}).`, { host, cause: err })
  }
  if (code !== undefined && CONNECT_CODES.has(code)) {
    return new NetFetchError('connect_failed', `Could not connect to ${host} (${code}).`, {
      host,
      cause: err,
    })
  }
  if (code === 'UND_ERR_INVALID_ARG') {
    return new NetFetchError('bad_request', `The request to ${host} is not valid.`, { host, cause: err })
  }
  return new NetFetchError(
    'upstream_failed',
    `The exchange with ${host} failed${code ? ` (${code})` : ''}.`,
    {
      host,
      cause: err,
    },
  )
}

// The limits come from validated config; a bad one is a bug to surface loudly, since a NaN cap
// would silently disable itself (`n >= NaN` is never true).
function checkLimits(options: SafeFetchOptions): void {
  for (const name of ['maxBytes', 'maxRedirects', 'timeoutMs'] as const) {
    const value = options[name]
    if (!Number.isFinite(value) || value < 0) throw new RangeError(`safeFetch: ${name} must be a number >= 0`)
  }
}

/**
 * Fetch `input.url` with the SSRF defence of DESIGN §6. Throws NetFetchError; map it with
 * `toGatewayError`. Redirects are followed by hand, each hop checked again: 303 (and 301/302
 * after a POST) become a GET without a body, and credential headers are dropped on a change of
 * origin (Fetch standard §4.4).
 */
export async function safeFetch(input: SafeFetchInput, options: SafeFetchOptions): Promise<SafeFetchResult> {
  let method: SafeFetchInput['method'] = input.method
  if (method !== 'GET' && method !== 'HEAD' && method !== 'POST') {
    throw new NetFetchError('bad_request', 'The method must be GET, HEAD or POST.')
  }
  if (typeof input.url !== 'string') throw new NetFetchError('bad_url', 'The URL must be a string.')
  let body = input.body
  if (body !== undefined && method !== 'POST') {
    throw new NetFetchError('bad_request', `A ${method} request cannot have a body.`)
  }
  if (body !== undefined && typeof body !== 'string' && !(body instanceof Uint8Array)) {
    throw new NetFetchError('bad_request', 'The body must be a string or bytes.')
  }
  checkLimits(options)
  const headers = requestHeaders(input.headers)
  let url = target(input.url, undefined, options.allowNetworks)

  const state = { timedOut: false, aborted: false }
  if (options.signal?.aborted) {
    throw new NetFetchError('aborted', `The fetch from ${hostOf(url)} was aborted.`, { host: hostOf(url) })
  }
  const controller = new AbortController()
  const timer = setTimeout(
    () => {
      state.timedOut = true
      controller.abort()
    },
    Math.min(options.timeoutMs, MAX_TIMER_MS),
  )
  const onAbort = () => {
    state.aborted = true
    controller.abort()
  }
  options.signal?.addEventListener('abort', onAbort, { once: true })
  const own =
    options.dispatcherCache === undefined ? createAgent(options, options.connectTimeoutMs) : undefined
  const dispatcher = own ?? options.dispatcherCache!.get(options)

  try {
    for (let redirects = 0; ; redirects++) {
      const res = await request(url, { method, headers, body, dispatcher, signal: controller.signal })
      const location = res.headers.location
      if (REDIRECTS.has(res.statusCode) && location !== undefined) {
        await res.body.dump({ limit: 64 * 1024 })
        if (redirects >= options.maxRedirects) {
          throw new NetFetchError(
            'too_many_redirects',
            `${hostOf(url)} redirected more than ${options.maxRedirects} times.`,
            { host: hostOf(url), upstreamStatus: res.statusCode },
          )
        }
        const next = target(Array.isArray(location) ? location[0]! : location, url, options.allowNetworks)
        if (options.allowRedirectHost !== undefined && !options.allowRedirectHost(hostOf(next))) {
          throw new NetFetchError(
            'redirect_refused',
            `${hostOf(url)} redirected to ${hostOf(next)}, which is not allowed here.`,
            { host: hostOf(next), upstreamStatus: res.statusCode },
          )
        }
        if (next.origin !== url.origin) for (const name of CREDENTIAL_HEADERS) delete headers[name]
        if (
          (res.statusCode === 303 && method !== 'HEAD') ||
          ((res.statusCode === 301 || res.statusCode === 302) && method === 'POST')
        ) {
          method = 'GET'
          body = undefined
          for (const name of BODY_HEADERS) delete headers[name]
        }
        url = next
        continue
      }
      const bytes = method === 'HEAD' ? Buffer.alloc(0) : await readCapped(res, options.maxBytes, hostOf(url))
      return {
        status: res.statusCode,
        headers: responseHeaders(res.headers),
        body: bytes,
        finalUrl: url.href,
        redirects,
      }
    }
  } catch (err) {
    throw netError(err, hostOf(url), state)
  } finally {
    clearTimeout(timer)
    options.signal?.removeEventListener('abort', onAbort)
    if (own !== undefined) await own.destroy()
  }
}
