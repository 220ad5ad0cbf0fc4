/**
 * The benchmark's upstream: answers every request (`GET /bench/...`, `GET /...`, anything)
 * with the same 100-byte JSON body and a content-length, on keep-alive connections, so every
 * row of the benchmark measures the proxy in front of it, not the upstream.
 *
 * Two implementations, same answer:
 * - `raw` (default): a minimal HTTP/1.1 responder on `node:net` that writes one prebuilt
 *   response per request head. It shares its CPU with the load generator, and must stay well
 *   above the fastest proxy: nginx does ~55k RPS here, while a `node:http` upstream on that
 *   shared core tops out near 36k and would cap nginx's row (and flatter every ratio to it).
 * - `http`: a plain `node:http` server (BENCH_UPSTREAM=http), for comparison.
 *
 * The raw responder skips Content-Length request bodies and answers `transfer-encoding`
 * (chunked) requests with 501 and a close: the benchmark only sends GETs.
 *
 * Run as a child process: `node --import tsx bench/upstream.ts PORT [raw|http]`
 * (or BENCH_PORT, BENCH_UPSTREAM). Prints `listening PORT` once ready.
 */
import { createServer as createHttpServer } from 'node:http'
import { createServer as createNetServer, type Server, type Socket } from 'node:net'
import { pathToFileURL } from 'node:url'

export type UpstreamKind = 'raw' | 'http'

/** The fixed response body: 100 bytes of JSON. */
export const BODY = Buffer.from(
  JSON.stringify({
    ok: true,
    service: 'bench-upstream',
    message: 'hello from the bench upstream!',
    n: 12345678901234,
  }),
)

const HEAD = `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${BODY.length}\r\nconnection: keep-alive\r\n\r\n`
const RESPONSE = Buffer.concat([Buffer.from(HEAD, 'latin1'), BODY])
const HEAD_ONLY = Buffer.from(HEAD, 'latin1')
const NOT_IMPLEMENTED = Buffer.from(
  'HTTP/1.1 501 Not Implemented\r\ncontent-length: 0\r\nconnection: close\r\n\r\n',
  'latin1',
)
const BAD_REQUEST = Buffer.from('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n')
const END_OF_HEAD = Buffer.from('\r\n\r\n', 'latin1')
const MAX_HEAD = 64 * 1024

/** One connection of the raw responder: finds request heads, skips bodies, answers each. */
function serveRaw(socket: Socket): void {
  socket.setNoDelay(true)
  socket.on('error', () => socket.destroy())
  let pending: Buffer | null = null
  let bodyLeft = 0
  let closeAfter = false
  socket.on('data', (chunk: Buffer) => {
    const buf: Buffer = pending ? Buffer.concat([pending, chunk]) : chunk
    pending = null
    let offset = 0
    const out: Buffer[] = []
    while (offset < buf.length) {
      if (bodyLeft > 0) {
        const take = Math.min(bodyLeft, buf.length - offset)
        offset += take
        bodyLeft -= take
        continue
      }
      const end = buf.indexOf(END_OF_HEAD, offset)
      if (end === -1) break
      const head = buf.toString('latin1', offset, end)
      offset = end + 4
      if (/\r\ntransfer-encoding:/i.test(head)) {
        socket.end(NOT_IMPLEMENTED)
        return
      }
      const length = /\r\ncontent-length:[ \t]*(\d+)/i.exec(head)
      if (length?.[1]) bodyLeft = Number(length[1])
      if (/\r\nconnection:[ \t]*close/i.test(head)) closeAfter = true
      out.push(head.startsWith('HEAD ') ? HEAD_ONLY : RESPONSE)
      if (closeAfter) break
    }
    if (offset < buf.length && bodyLeft === 0 && !closeAfter) {
      pending = buf.subarray(offset)
      if (pending.length > MAX_HEAD) {
        socket.end(BAD_REQUEST)
        return
      }
    }
    // A response may go out before its request body has fully arrived; fine for a benchmark.
    if (out.length === 1) socket.write(out[0]!)
    else if (out.length > 1) socket.write(Buffer.concat(out))
    if (closeAfter) socket.end()
  })
}

/** A flat [name, value, …] list: the cheapest form `writeHead` accepts. */
const HTTP_HEADERS = ['content-type', 'application/json', 'content-length', String(BODY.length)]

export function createUpstream(kind: UpstreamKind = 'raw'): Server {
  if (kind === 'raw') return createNetServer(serveRaw)
  const server = createHttpServer((req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') req.resume()
    res.writeHead(200, HTTP_HEADERS)
    res.end(req.method === 'HEAD' ? undefined : BODY)
  })
  // Proxies keep pooled connections open: never be the side that closes an idle one first.
  server.keepAliveTimeout = 120_000
  server.headersTimeout = 130_000
  server.requestTimeout = 0
  return server
}

export function upstreamKind(value: string | undefined): UpstreamKind {
  if (value === undefined || value === '' || value === 'raw') return 'raw'
  if (value === 'http') return 'http'
  throw new Error(`upstream kind must be raw or http, got ${value}`)
}

function main(): void {
  const port = Number(process.argv[2] ?? process.env['BENCH_PORT'] ?? 0)
  const kind = upstreamKind(process.argv[3] ?? process.env['BENCH_UPSTREAM'])
  const server = createUpstream(kind)
  server.listen(port, process.env['BENCH_HOST'] ?? '127.0.0.1', () => {
    const address = server.address()
    process.stdout.write(
      `listening ${typeof address === 'object' && address ? address.port : port} (${kind})\n`,
    )
  })
  // Stateless: nothing to drain, and idle keep-alive connections would hold a graceful close.
  const stop = () => process.exit(0)
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main()
