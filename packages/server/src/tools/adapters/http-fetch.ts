/**
 * `http_fetch`: fetch any http(s) URL the policy allows, through the SSRF-safe fetch (DESIGN §6):
 * the host resolved and checked, the checked address connected to, every redirect checked again,
 * the body read under `tools.http_fetch.maxBytes`. The answer carries the status, a few safe
 * headers and the body: parsed JSON, text, or base64 for anything else.
 *
 * Request headers: the ones that frame the request or name its target (Host, Content-Length,
 * Transfer-Encoding, Connection, …) are the HTTP client's; proxy and forwarding headers
 * (Proxy-Authorization, Forwarded, X-Forwarded-*, X-Real-IP) would let an agent speak for the
 * gateway or its clients; Accept-Encoding would make the body unreadable (it is never decoded).
 * All are refused. An agent's own Authorization or Cookie for the site it fetches is passed, and
 * dropped when a redirect leaves that origin.
 */
import { Type } from 'typebox'
import { GatewayError } from '../../errors/gateway-error.ts'
import { type AllowNetworks, parseNetworks } from '../../net/allow-networks.ts'
import { RESERVED_HEADERS, type SafeFetchResult, safeFetch, toGatewayError } from '../../net/safe-fetch.ts'
import type { Resolver } from '../../net/safe-lookup.ts'
import type { ParamProblem, ToolAction, ToolCallContext, ToolDefinition, ToolResult } from '../types.ts'

const defaultMaxBytes = 1024 * 1024
const defaultMaxRedirects = 3
const headerName = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
const refusedHeaders = new Map<string, string>([
  ...[...RESERVED_HEADERS].map((name): [string, string] => [name, 'is set by the gateway']),
  ...[
    'proxy-authorization',
    'forwarded',
    'x-forwarded-for',
    'x-forwarded-host',
    'x-forwarded-proto',
    'x-real-ip',
  ].map((name): [string, string] => [name, 'would speak for the gateway or its clients']),
  ['accept-encoding', 'is not accepted: answers are read uncompressed'],
])
/** The answer headers an agent sees; cookies and everything else stay behind. */
const answerHeaders = [
  'content-type',
  'content-length',
  'content-language',
  'content-encoding',
  'content-disposition',
  'last-modified',
  'etag',
  'cache-control',
  'expires',
  'age',
  'retry-after',
  'location',
]

const Url = Type.String({ minLength: 1, maxLength: 8192, description: 'an http or https URL' })
const Headers = Type.Record(Type.String(), Type.String({ maxLength: 8192 }), {
  maxProperties: 64,
  description: 'request headers (name: value)',
})
const ReadParams = Type.Object({ url: Url, headers: Type.Optional(Headers) }, { additionalProperties: false })
const PostParams = Type.Object(
  {
    url: Url,
    headers: Type.Optional(Headers),
    body: Type.Optional(
      Type.Union(
        [Type.String(), Type.Object({}, { additionalProperties: true }), Type.Array(Type.Unknown())],
        {
          description: 'a string is sent as is (text/plain unless content-type says otherwise); JSON as JSON',
        },
      ),
    ),
  },
  { additionalProperties: false },
)

interface FetchParams {
  url: string
  headers?: Record<string, string>
  body?: unknown
}

export interface HttpFetchOptions {
  /** Resolves host names (tests point a name at loopback); the system resolver by default. */
  resolve?: Resolver
}

function headerProblems(params: FetchParams): ParamProblem[] {
  const problems: ParamProblem[] = []
  for (const [name, value] of Object.entries(params.headers ?? {})) {
    const path = `headers.${name}`
    const lower = name.toLowerCase()
    if (!headerName.test(name) || name.length > 128) problems.push({ path, message: 'is not a header name' })
    else if (refusedHeaders.has(lower)) problems.push({ path, message: refusedHeaders.get(lower)! })
    if (/[\r\n\0]/.test(value)) problems.push({ path, message: 'must not contain CR, LF or NUL' })
  }
  return problems
}

function settingNumber(options: Readonly<Record<string, unknown>>, name: string, fallback: number): number {
  const value = options[name]
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : fallback
}

const noNetworks: AllowNetworks = Object.freeze({ cidrs: Object.freeze([]), contains: () => false })

function charsetOf(type: string): string {
  return /charset="?([^";\s]+)"?/i.exec(type)?.[1] ?? 'utf-8'
}

function decodeText(bytes: Buffer, type: string): string {
  try {
    return new TextDecoder(charsetOf(type)).decode(bytes)
  } catch {
    return bytes.toString('utf8')
  }
}

/** The body as JSON when it says it is JSON and parses, text when it is text, else base64. */
function bodyOf(result: SafeFetchResult, method: string): { bodyType: string; body: unknown } {
  if (method === 'HEAD') return { bodyType: 'none', body: null }
  const header = result.headers['content-type']
  const type = (Array.isArray(header) ? header[0]! : (header ?? '')).toLowerCase()
  const mime = type.split(';')[0]!.trim()
  if (mime === 'application/json' || mime.endsWith('+json')) {
    const text = decodeText(result.body, type)
    try {
      return { bodyType: 'json', body: JSON.parse(text) }
    } catch {
      return { bodyType: 'text', body: text }
    }
  }
  if (
    mime.startsWith('text/') ||
    mime.endsWith('+xml') ||
    ['application/xml', 'application/javascript', 'application/x-www-form-urlencoded'].includes(mime) ||
    (mime === '' && result.body.length === 0)
  ) {
    return { bodyType: 'text', body: decodeText(result.body, type) }
  }
  return { bodyType: 'base64', body: { base64: result.body.toString('base64') } }
}

function selectedHeaders(headers: SafeFetchResult['headers']): Record<string, string> {
  const out: Record<string, string> = {}
  for (const name of answerHeaders) {
    const value = headers[name]
    if (value !== undefined) out[name] = Array.isArray(value) ? value.join(', ') : value
  }
  return out
}

/** The `http_fetch` tool; `options.resolve` replaces the system resolver (tests). */
export function createHttpFetch(options: HttpFetchOptions = {}): ToolDefinition {
  // Parsed once per config version: the settings object is the config's own, replaced on reload.
  const networks = new WeakMap<object, AllowNetworks>()
  const allowNetworksOf = (settings: Readonly<Record<string, unknown>>): AllowNetworks => {
    const list = settings['allowNetworks']
    if (!Array.isArray(list) || list.length === 0) return noNetworks
    let parsed = networks.get(settings)
    if (parsed === undefined) {
      const result = parseNetworks(list)
      if (!result.ok) {
        const first = result.problems[0]!
        throw new GatewayError(
          'tool_unavailable',
          `Tool http_fetch is misconfigured: tools.http_fetch.allowNetworks[${first.index}]: ${first.reason}.`,
        )
      }
      parsed = result.networks
      networks.set(settings, parsed)
    }
    return parsed
  }

  async function fetchFor(
    call: ToolCallContext<unknown>,
    method: 'GET' | 'HEAD' | 'POST',
  ): Promise<ToolResult> {
    const params = call.params as FetchParams
    const settings = call.settings.options
    const headers: Record<string, string> = { 'user-agent': '4runr-gateway', ...params.headers }
    let body: string | undefined
    if (typeof params.body === 'string') body = params.body
    else if (params.body !== undefined) body = JSON.stringify(params.body)
    const hasType = Object.keys(headers).some((name) => name.toLowerCase() === 'content-type')
    if (body !== undefined && !hasType) {
      headers['content-type'] =
        typeof params.body === 'string' ? 'text/plain; charset=utf-8' : 'application/json; charset=utf-8'
    }
    let result: SafeFetchResult
    try {
      result = await safeFetch(
        { url: params.url, method, headers, ...(body === undefined ? {} : { body }) },
        {
          allowNetworks: allowNetworksOf(settings),
          ...(options.resolve === undefined ? {} : { resolve: options.resolve }),
          maxBytes: settingNumber(settings, 'maxBytes', defaultMaxBytes),
          maxRedirects: settingNumber(settings, 'maxRedirects', defaultMaxRedirects),
          timeoutMs: call.settings.timeoutMs,
          signal: call.signal,
          dispatcherCache: call.dispatchers,
          ...(call.allowRedirectHost === undefined ? {} : { allowRedirectHost: call.allowRedirectHost }),
        },
      )
    } catch (err) {
      throw toGatewayError(err)
    }
    return {
      data: {
        status: result.status,
        url: result.finalUrl,
        redirects: result.redirects,
        headers: selectedHeaders(result.headers),
        ...bodyOf(result, method),
      },
      upstreamStatus: result.status,
    }
  }

  const action = (method: 'GET' | 'HEAD' | 'POST', description: string): ToolAction => ({
    description,
    params: method === 'POST' ? PostParams : ReadParams,
    idempotent: method !== 'POST',
    validate: (params) => headerProblems(params as FetchParams),
    execute: (call) => fetchFor(call, method),
  })

  return {
    name: 'http_fetch',
    description:
      'Fetch a public http(s) URL; answers {status, url, redirects, headers, bodyType, body} ' +
      '(body: JSON, text, or {base64}).',
    // No upstream of its own: every call names its URL.
    defaultUrl: '',
    defaultSecret: undefined,
    actions: {
      get: action('GET', 'GET a URL.'),
      head: action('HEAD', 'HEAD a URL: status and headers only.'),
      post: action('POST', 'POST a body to a URL (not repeated on failure).'),
    },
  }
}
