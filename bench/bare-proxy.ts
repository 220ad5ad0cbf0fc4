/**
 * The "bare-Node ceiling" row: the least a Node reverse proxy can do. A `node:http` server and
 * an undici `Pool` with keep-alive; each request is handed to `pool.dispatch` with a handler
 * that streams the upstream response straight into the client response (with backpressure),
 * hop-by-hop headers removed both ways. No routing, no logging, no metrics: whatever the
 * gateway costs above this row is the price of its framework and pipeline.
 *
 * (Per-request `stream.pipeline()` would halve the throughput on Node 20; `dispatch` avoids it.)
 *
 * Run: `node --import tsx bench/bare-proxy.ts PORT UPSTREAM_URL`
 *   or `BENCH_PORT=… BENCH_UPSTREAM=http://127.0.0.1:… node --import tsx bench/bare-proxy.ts`.
 * Prints `listening PORT` once ready.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { pathToFileURL } from 'node:url'
import { type Dispatcher, Pool } from 'undici'

/** Headers that describe one connection, not the message (RFC 9110 §7.6.1): never forwarded. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
])

/** Names listed in a `Connection` header are hop-by-hop for this message as well. */
function connectionTokens(value: string | string[] | undefined): Set<string> | undefined {
  if (value === undefined) return undefined
  const list = Array.isArray(value) ? value.join(',') : value
  const tokens = new Set<string>()
  for (const token of list.split(',')) {
    const name = token.trim().toLowerCase()
    if (name && name !== 'close' && name !== 'keep-alive') tokens.add(name)
  }
  return tokens.size > 0 ? tokens : undefined
}

/** The client's request headers (flat raw list) minus hop-by-hop ones. */
function requestHeaders(req: IncomingMessage): string[] {
  const raw = req.rawHeaders
  const extra = connectionTokens(req.headers.connection)
  const out: string[] = []
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    const lower = name.toLowerCase()
    if (HOP_BY_HOP.has(lower) || extra?.has(lower)) continue
    out.push(name, raw[i + 1]!)
  }
  return out
}

/** Streams one upstream response into `res`. */
class ProxyHandler implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | undefined

  constructor(
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
  ) {
    res.on('close', () => {
      if (!res.writableFinished) this.controller?.abort(new Error('client went away'))
    })
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller
    if (this.req.destroyed) controller.abort(new Error('client went away'))
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
    statusMessage?: string,
  ): void {
    if (statusCode < 200) return // 1xx: informational, wait for the final response
    const extra = connectionTokens(headers['connection'])
    const out: Record<string, string | string[]> = {}
    for (const name in headers) {
      const value = headers[name]
      if (value === undefined || HOP_BY_HOP.has(name) || extra?.has(name)) continue
      out[name] = value
    }
    this.res.writeHead(statusCode, statusMessage || undefined, out)
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.res.write(chunk)) {
      controller.pause()
      this.res.once('drain', () => controller.resume())
    }
  }

  onResponseEnd(): void {
    this.res.end()
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    const res = this.res
    if (res.headersSent) {
      res.destroy(error)
    } else if (!res.destroyed) {
      const body = JSON.stringify({ error: { code: 'upstream_error', message: error.message } })
      res.writeHead(502, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      res.end(body)
    }
  }
}

export interface BareProxy {
  server: Server
  pool: Pool
  close(): Promise<void>
}

export function createBareProxy(upstream: string): BareProxy {
  const pool = new Pool(upstream, {
    connections: 128,
    pipelining: 1,
    keepAliveTimeout: 60_000,
    keepAliveMaxTimeout: 600_000,
  })
  const server = createServer((req, res) => {
    const method = req.method ?? 'GET'
    const hasBody = method !== 'GET' && method !== 'HEAD'
    pool.dispatch(
      {
        method: method as Dispatcher.HttpMethod,
        path: req.url ?? '/',
        headers: requestHeaders(req),
        body: hasBody ? req : null,
      },
      new ProxyHandler(req, res),
    )
  })
  server.keepAliveTimeout = 120_000
  server.headersTimeout = 130_000
  server.requestTimeout = 0
  return {
    server,
    pool,
    close: async () => {
      await new Promise<void>((res) => server.close(() => res()))
      await pool.close()
    },
  }
}

function main(): void {
  const port = Number(process.argv[2] ?? process.env['BENCH_PORT'] ?? 0)
  const upstream = process.argv[3] ?? process.env['BENCH_UPSTREAM']
  if (!upstream) {
    process.stderr.write('usage: bare-proxy.ts PORT UPSTREAM_URL (or BENCH_PORT, BENCH_UPSTREAM)\n')
    process.exit(2)
  }
  const proxy = createBareProxy(upstream)
  proxy.server.listen(port, process.env['BENCH_HOST'] ?? '127.0.0.1', () => {
    const address = proxy.server.address()
    process.stdout.write(`listening ${typeof address === 'object' && address ? address.port : port}\n`)
  })
  const stop = () => {
    proxy.server.closeAllConnections()
    void proxy.close().then(() => process.exit(0))
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main()
