/**
 * The built-in demo upstream behind `kind: demo` systems, so `npm start` has something to proxy
 * to: it greets on `/hello` and echoes any other request (method, path, query, the headers the
 * gateway forwarded, body size) as JSON. Loopback only.
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

/** Headers worth showing a newcomer: what the gateway added or passed on. */
const shown = [
  'host',
  'user-agent',
  'accept',
  'content-type',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-request-id',
  'x-correlation-id',
  'traceparent',
]

export interface DemoUpstream {
  readonly origin: string
  close(): Promise<void>
}

/** Start the demo upstream on a free loopback port. */
export async function startDemoUpstream(): Promise<DemoUpstream> {
  const server: Server = createServer((req, res) => {
    let bytes = 0
    req.on('data', (chunk: Buffer) => {
      bytes += chunk.length
    })
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://demo')
      const body =
        url.pathname === '/hello'
          ? { message: 'Hello from the 4Runr demo upstream, reached through the gateway.' }
          : {
              method: req.method,
              path: url.pathname,
              query: Object.fromEntries(url.searchParams),
              headers: Object.fromEntries(
                shown.filter((h) => req.headers[h] !== undefined).map((h) => [h, req.headers[h]]),
              ),
              bodyBytes: bytes,
            }
      const text = JSON.stringify(body)
      res.writeHead(200, {
        'content-type': 'application/json; charset=utf-8',
        'content-length': Buffer.byteLength(text),
      })
      res.end(text)
    })
  })
  await new Promise<void>((ready, fail) => {
    server.once('error', fail)
    server.listen(0, '127.0.0.1', ready)
  })
  const { port } = server.address() as AddressInfo
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((done) => {
        server.close(() => done())
        server.closeAllConnections()
      }),
  }
}
