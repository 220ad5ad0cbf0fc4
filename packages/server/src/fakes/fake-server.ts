/**
 * Plumbing shared by the fake upstreams (SerpAPI, OpenAI, Gmail): a node:http server that reads
 * and records each request without its credentials, asks the service whether the credential was
 * right, and can be told to misbehave (status codes, latency, resets, slow, truncated, non-JSON
 * or oversize bodies) so the gateway's resilience and error paths meet real sockets in tests.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type ServerResponse,
  STATUS_CODES,
} from 'node:http'
import type { AddressInfo } from 'node:net'

/** One request as the fake saw it, minus every credential (header or query parameter). */
export interface RecordedRequest {
  readonly method: string
  /** The path without the query string. */
  readonly path: string
  /** Query parameters, first value wins; credential parameters (e.g. SerpAPI's `api_key`) are dropped. */
  readonly query: Record<string, string>
  /** Lower-case header names; `authorization`, `cookie` and API-key headers are dropped. */
  readonly headers: Record<string, string>
  /** Parsed JSON when the content type is JSON and it parses, the text otherwise, `undefined` when empty. */
  readonly body: unknown
  /** Whether the request carried the credential this fake expects. */
  readonly authorized: boolean
}

/**
 * A way for a fake to misbehave on one request. `status`, `reset`, `non-json` and `oversize`
 * answer without running the service, so nothing is sent or stored (a Gmail message); `latency`,
 * `slow-body` and `truncate` run it and then spoil only the answer, as a real lost reply does.
 */
export type Fault =
  /** Answer this status instead; `body` defaults to the service's own error shape. */
  | { kind: 'status'; status: number; body?: unknown; headers?: Record<string, string> }
  /** Wait, then answer normally. */
  | { kind: 'latency'; ms: number }
  /** Reset the connection (TCP RST) without answering. */
  | { kind: 'reset' }
  /**
   * Answer normally but trickle the body: one piece every `chunkDelayMs`, the first one too.
   * Pieces are `chunkBytes` long, by default an eighth of the body (an SSE stream: one event each).
   */
  | { kind: 'slow-body'; chunkDelayMs: number; chunkBytes?: number }
  /** Declare a longer `content-length` than sent, send half the body, then close the connection. */
  | { kind: 'truncate' }
  /** 200 with an HTML page, as a captive portal or a misrouted proxy would answer. */
  | { kind: 'non-json' }
  /** 200 with a valid JSON body of exactly `bytes` bytes. */
  | { kind: 'oversize'; bytes: number }

/** Which requests a queued fault applies to, and how many times. */
export interface FaultOptions {
  /** How many matching requests get the fault (default 1; `Infinity` until cleared). */
  times?: number
  /** Exact path (no query string); any path when absent. */
  path?: string
  /** HTTP method, any case; any method when absent. */
  method?: string
}

/** Faults waiting for requests, consumed in the order they were added. */
export interface FaultQueue {
  add(fault: Fault, options?: FaultOptions): void
  clear(): void
  /** How many queued faults still have uses left. */
  readonly size: number
}

/** A running fake: where it listens, what it saw, how to break it, how to stop it. */
export interface FakeServer {
  /** `http://host:port`, without a trailing slash. */
  readonly url: string
  /** The most recent requests, oldest first (bounded). */
  readonly requests: RecordedRequest[]
  readonly faults: FaultQueue
  /** Stop listening and destroy every connection, idle keep-alive ones included. */
  close(): Promise<void>
}

/** Whether a request presented the expected credential, another one, or none. */
export type Credential = 'valid' | 'invalid' | 'missing'

/** What a service handler sees: the recorded request, its raw bytes and how its credential fared. */
export interface FakeRequest extends RecordedRequest {
  readonly rawBody: Buffer
  readonly credential: Credential
}

/**
 * A service's answer. `body`: a Buffer or string is sent as is (give `content-type`), anything
 * else as JSON. `events`: a streamed answer (SSE), each piece written separately, no length.
 */
export interface FakeReply {
  status: number
  headers?: Record<string, string>
  body?: unknown
  events?: readonly string[]
}

/** How a service plugs into the plumbing. */
export interface FakeServerOptions {
  host?: string
  port?: number
  /** Check the request's credential; the only code that sees credential values. */
  authorize(headers: IncomingHttpHeaders, query: URLSearchParams): Credential
  handle(req: FakeRequest): FakeReply | Promise<FakeReply>
  /** The service's own error body for a status (injected faults, oversized requests, crashes). */
  errorBody(status: number, message: string): unknown
  /** Query parameters that carry credentials, never recorded. */
  secretQueryParams?: readonly string[]
  /** How many requests the log keeps (default 1000). */
  maxRecorded?: number
  /** The largest request body accepted, larger ones get 413 (default 16 MiB). */
  maxBodyBytes?: number
}

/** The header that injects a fault into the request carrying it (a JSON `Fault`). */
export const faultHeader = 'x-fake-fault'

const secretHeaders = new Set([
  'authorization',
  'proxy-authorization',
  'cookie',
  'x-api-key',
  'api-key',
  'x-goog-api-key',
])
const maxDelayMs = 5 * 60_000
const minOversizeBytes = '{"padding":""}'.length
const maxOversizeBytes = 64 * 1024 * 1024
const headerName = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/

const htmlPage =
  '<!DOCTYPE html>\n<html><head><title>Service Unavailable</title></head>' +
  '<body><h1>Service Unavailable</h1><p>The upstream is being maintained. Please try again later.</p>' +
  '</body></html>\n'

/** Compare a presented credential with the expected one without leaking its length or prefix by timing. */
export function checkSecret(presented: string | undefined, expected: string): Credential {
  if (presented === undefined || presented === '') return 'missing'
  const a = createHash('sha256').update(presented).digest()
  const b = createHash('sha256').update(expected).digest()
  return timingSafeEqual(a, b) ? 'valid' : 'invalid'
}

/** The token of an `Authorization: Bearer <token>` header (scheme in any case), if there is one. */
export function bearerToken(headers: IncomingHttpHeaders): string | undefined {
  const match = /^bearer +(\S+) *$/i.exec(headers.authorization ?? '')
  return match?.[1]
}

/**
 * Check a fault's shape and bounds. Throws a TypeError naming the problem, so a wrong
 * `faults.add()` fails loudly and a wrong `x-fake-fault` header gets a clear 400.
 */
function parseFault(value: unknown): Fault {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new TypeError('a fault must be an object with a kind')
  }
  const f = value as Record<string, unknown>
  const number = (name: string, min: number, max: number): number => {
    const n = f[name]
    if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
      throw new TypeError(`fault ${String(f.kind)}: ${name} must be an integer from ${min} to ${max}`)
    }
    return n
  }
  switch (f.kind) {
    case 'status': {
      const status = number('status', 200, 599)
      const headers = f.headers
      if (headers !== undefined) {
        if (headers === null || typeof headers !== 'object' || Array.isArray(headers)) {
          throw new TypeError('fault status: headers must be an object of strings')
        }
        for (const [name, v] of Object.entries(headers)) {
          if (!headerName.test(name) || typeof v !== 'string' || /[\r\n\0]/.test(v)) {
            throw new TypeError(`fault status: invalid header ${JSON.stringify(name)}`)
          }
        }
      }
      return {
        kind: 'status',
        status,
        ...(f.body === undefined ? {} : { body: f.body }),
        ...(headers === undefined ? {} : { headers: { ...(headers as Record<string, string>) } }),
      }
    }
    case 'latency':
      return { kind: 'latency', ms: number('ms', 0, maxDelayMs) }
    case 'slow-body':
      return {
        kind: 'slow-body',
        chunkDelayMs: number('chunkDelayMs', 0, maxDelayMs),
        ...(f.chunkBytes === undefined ? {} : { chunkBytes: number('chunkBytes', 1, maxOversizeBytes) }),
      }
    case 'oversize':
      return { kind: 'oversize', bytes: number('bytes', minOversizeBytes, maxOversizeBytes) }
    case 'reset':
    case 'truncate':
    case 'non-json':
      return { kind: f.kind }
    default:
      throw new TypeError(
        'fault kind must be one of status, latency, reset, slow-body, truncate, non-json, oversize',
      )
  }
}

interface QueuedFault {
  fault: Fault
  left: number
  path: string | undefined
  method: string | undefined
}

function createFaultQueue(): FaultQueue & { take(method: string, path: string): Fault | undefined } {
  let queue: QueuedFault[] = []
  return {
    add(fault, options = {}) {
      const times = options.times ?? 1
      if (!(times === Number.POSITIVE_INFINITY || (Number.isInteger(times) && times >= 1))) {
        throw new TypeError('fault times must be a positive integer or Infinity')
      }
      queue.push({
        fault: parseFault(fault),
        left: times,
        path: options.path,
        method: options.method?.toUpperCase(),
      })
    },
    clear() {
      queue = []
    },
    get size() {
      return queue.length
    },
    take(method, path) {
      const entry = queue.find(
        (q) => (q.path === undefined || q.path === path) && (q.method === undefined || q.method === method),
      )
      if (entry === undefined) return undefined
      entry.left -= 1
      if (entry.left <= 0) queue = queue.filter((q) => q !== entry)
      return entry.fault
    },
  }
}

interface Prepared {
  status: number
  headers: Record<string, string | number>
  pieces: Buffer[]
  streamed: boolean
}

function prepare(reply: FakeReply): Prepared {
  const headers: Record<string, string | number> = {}
  for (const [name, value] of Object.entries(reply.headers ?? {})) headers[name.toLowerCase()] = value
  if (reply.events !== undefined) {
    return { status: reply.status, headers, pieces: reply.events.map((e) => Buffer.from(e)), streamed: true }
  }
  let bytes: Buffer
  if (Buffer.isBuffer(reply.body)) bytes = reply.body
  else if (typeof reply.body === 'string') {
    bytes = Buffer.from(reply.body)
    headers['content-type'] ??= 'text/plain; charset=utf-8'
  } else if (reply.body === undefined) bytes = Buffer.alloc(0)
  else {
    bytes = Buffer.from(JSON.stringify(reply.body))
    headers['content-type'] ??= 'application/json; charset=utf-8'
  }
  // 204 and 304 never carry a body (RFC 9110 §6.4.1), so neither may an injected one.
  if (reply.status === 204 || reply.status === 304) {
    delete headers['content-type']
    return { status: reply.status, headers, pieces: [], streamed: false }
  }
  headers['content-length'] = bytes.length
  return { status: reply.status, headers, pieces: [bytes], streamed: false }
}

function oversizeBody(bytes: number): Buffer {
  const body = Buffer.alloc(bytes, 'x')
  body.write('{"padding":"', 0)
  body.write('"}', bytes - 2)
  return body
}

function flatten(headers: IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || secretHeaders.has(name)) continue
    out[name] = Array.isArray(value) ? value.join(', ') : value
  }
  return out
}

function parseBody(raw: Buffer, contentType: string | undefined): unknown {
  if (raw.length === 0) return undefined
  const text = raw.toString('utf8')
  const type = (contentType ?? '').split(';')[0]!.trim().toLowerCase()
  if (type === 'application/json' || type.endsWith('+json')) {
    try {
      return JSON.parse(text)
    } catch {
      return text
    }
  }
  return text
}

/** Start a fake on `host` (default 127.0.0.1) and `port` (default 0, a free one). */
export async function startFakeServer(options: FakeServerOptions): Promise<FakeServer> {
  const host = options.host ?? '127.0.0.1'
  const maxRecorded = options.maxRecorded ?? 1000
  const maxBodyBytes = options.maxBodyBytes ?? 16 * 1024 * 1024
  const secretQuery = new Set(options.secretQueryParams ?? [])
  const requests: RecordedRequest[] = []
  const faults = createFaultQueue()
  const timers = new Set<NodeJS.Timeout>()
  let closing: Promise<void> | undefined

  const later = (ms: number, run: () => void): void => {
    // Nothing new may be scheduled once closing, or a pending delay would hold the process open.
    if (closing !== undefined) return
    const timer = setTimeout(() => {
      timers.delete(timer)
      run()
    }, ms)
    timers.add(timer)
  }

  const answerError = (res: ServerResponse, status: number, message: string): void => {
    write(res, prepare({ status, body: options.errorBody(status, message) }), undefined)
  }

  // Writes a prepared answer, shaped by a fault that acts on the body (slow-body, truncate); a write that throws (a bad header from a handler) drops the connection.
  const write = (res: ServerResponse, answer: Prepared, fault: Fault | undefined): void => {
    try {
      writeAnswer(res, answer, fault)
    } catch {
      res.destroy()
    }
  }

  const writeAnswer = (res: ServerResponse, answer: Prepared, fault: Fault | undefined): void => {
    if (res.destroyed) return
    if (fault?.kind === 'truncate') {
      const whole = Buffer.concat(answer.pieces)
      res.writeHead(answer.status, { ...answer.headers, 'content-length': whole.length * 2 + 16 })
      res.write(whole.subarray(0, Math.floor(whole.length / 2)), () => res.destroy())
      return
    }
    res.writeHead(answer.status, answer.headers)
    if (fault?.kind !== 'slow-body') {
      for (const piece of answer.pieces) res.write(piece)
      res.end()
      return
    }
    const whole = Buffer.concat(answer.pieces)
    let pieces = answer.pieces
    if (!answer.streamed || fault.chunkBytes !== undefined) {
      const size = fault.chunkBytes ?? Math.max(1, Math.ceil(whole.length / 8))
      pieces = []
      for (let at = 0; at < whole.length; at += size) pieces.push(whole.subarray(at, at + size))
    }
    // Headers go out at once, so a client sees a prompt start and a stalled body.
    res.flushHeaders()
    const next = (index: number): void => {
      if (res.destroyed) return
      if (index === pieces.length) {
        res.end()
        return
      }
      res.write(pieces[index]!)
      later(fault.chunkDelayMs, () => next(index + 1))
    }
    later(fault.chunkDelayMs, () => next(0))
  }

  const respond = async (req: FakeRequest, res: ServerResponse, fault: Fault | undefined): Promise<void> => {
    if (fault?.kind === 'reset') {
      res.socket?.resetAndDestroy()
      return
    }
    if (fault?.kind === 'status') {
      const { status, body, headers } = fault
      const reply: FakeReply = { status, body: body ?? options.errorBody(status, STATUS_CODES[status] ?? '') }
      if (headers !== undefined) reply.headers = headers
      write(res, prepare(reply), undefined)
      return
    }
    if (fault?.kind === 'non-json') {
      write(
        res,
        prepare({ status: 200, headers: { 'content-type': 'text/html; charset=utf-8' }, body: htmlPage }),
        undefined,
      )
      return
    }
    if (fault?.kind === 'oversize') {
      const body = oversizeBody(fault.bytes)
      write(res, prepare({ status: 200, headers: { 'content-type': 'application/json' }, body }), undefined)
      return
    }
    let reply: FakeReply
    try {
      reply = await options.handle(req)
    } catch {
      answerError(res, 500, 'The fake upstream failed to handle the request.')
      return
    }
    if (fault?.kind === 'latency') later(fault.ms, () => write(res, prepare(reply), undefined))
    else write(res, prepare(reply), fault)
  }

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    // A client that went away must not take the process with it.
    res.on('error', () => {})
    req.on('error', () => {})
    // Prefixing keeps a request target like `//x/y` a path instead of a host.
    const target = req.url ?? '/'
    const url = new URL(`http://fake${target.startsWith('/') ? '' : '/'}${target}`)
    const method = (req.method ?? 'GET').toUpperCase()
    const chunks: Buffer[] = []
    let size = 0
    let refused = false
    req.on('data', (chunk: Buffer) => {
      if (refused) return
      size += chunk.length
      if (size > maxBodyBytes) {
        refused = true
        res.setHeader('connection', 'close')
        answerError(res, 413, 'The request body is too large.')
        return
      }
      chunks.push(chunk)
    })
    req.on('end', () => {
      if (refused) return
      const rawBody = Buffer.concat(chunks, size)
      const query: Record<string, string> = {}
      for (const [key, value] of url.searchParams) {
        if (!secretQuery.has(key) && !(key in query)) query[key] = value
      }
      let credential: Credential = 'invalid'
      try {
        credential = options.authorize(req.headers, url.searchParams)
      } catch {
        credential = 'invalid'
      }
      const recorded: RecordedRequest = {
        method,
        path: url.pathname,
        query,
        headers: flatten(req.headers),
        body: parseBody(rawBody, req.headers['content-type']),
        authorized: credential === 'valid',
      }
      requests.push(recorded)
      if (requests.length > maxRecorded) requests.splice(0, requests.length - maxRecorded)

      let fault: Fault | undefined
      const fromHeader = req.headers[faultHeader]
      if (typeof fromHeader === 'string') {
        try {
          fault = parseFault(JSON.parse(fromHeader))
        } catch (err) {
          const why = err instanceof TypeError ? err.message : 'it is not valid JSON'
          answerError(res, 400, `The ${faultHeader} header is not a fault: ${why}.`)
          return
        }
      } else fault = faults.take(method, url.pathname)
      respond({ ...recorded, rawBody, credential }, res, fault).catch(() => res.destroy())
    })
  })
  await new Promise<void>((ready, fail) => {
    server.once('error', fail)
    server.listen(options.port ?? 0, host, () => {
      server.off('error', fail)
      ready()
    })
  })
  const { port } = server.address() as AddressInfo
  const shownHost = host.includes(':') ? `[${host}]` : host
  return {
    url: `http://${shownHost}:${port}`,
    requests,
    faults: {
      add: (fault, opts) => faults.add(fault, opts),
      clear: () => faults.clear(),
      get size() {
        return faults.size
      },
    },
    close() {
      closing ??= new Promise<void>((done) => {
        for (const timer of timers) clearTimeout(timer)
        timers.clear()
        server.close(() => done())
        server.closeAllConnections()
      })
      return closing
    },
  }
}
