/** Real local HTTP servers standing in for backends, on random ports. */
import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface TestUpstream {
  readonly url: string
  readonly port: number
  readonly server: Server
  /** Every request seen, with its body. */
  readonly requests: Array<{ method: string; url: string; headers: IncomingMessage['headers']; body: Buffer }>
  close(): Promise<void>
}

/**
 * Start an upstream. Without a handler it echoes the request as JSON. The handler runs after the
 * body has been read unless `streaming` is set, in which case it gets the request as it arrives.
 */
export async function startUpstream(
  handler?: (req: IncomingMessage, res: ServerResponse, body: Buffer) => void,
  options: { streaming?: boolean } = {},
): Promise<TestUpstream> {
  const requests: TestUpstream['requests'] = []
  const server = createServer((req, res) => {
    if (options.streaming === true && handler !== undefined) {
      requests.push({
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.alloc(0),
      })
      handler(req, res, Buffer.alloc(0))
      return
    }
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body })
      if (handler !== undefined) return handler(req, res, body)
      const text = JSON.stringify({
        method: req.method,
        url: req.url,
        headers: req.headers,
        body: body.toString('utf8'),
      })
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
      res.end(text)
    })
  })
  await new Promise<void>((ready) => server.listen(0, '127.0.0.1', ready))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    server,
    requests,
    close: () =>
      new Promise((done) => {
        server.close(() => done())
        server.closeAllConnections()
      }),
  }
}

/** A port with nothing listening on it. */
export async function closedPort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((ready) => server.listen(0, '127.0.0.1', ready))
  const { port } = server.address() as AddressInfo
  await new Promise((done) => server.close(done))
  return port
}

/** A GET through node:http, which (unlike fetch) sends hop-by-hop headers as given. */
export function rawRequest(
  url: string,
  headers: Record<string, string>,
  method = 'GET',
): Promise<{ status: number; headers: IncomingMessage['headers']; body: string }> {
  return new Promise((done, fail) => {
    const req = request(url, { method, headers, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => {
        body += c
      })
      res.on('end', () => done({ status: res.statusCode ?? 0, headers: res.headers, body }))
      res.on('error', fail)
    })
    req.on('error', fail)
    req.end()
  })
}

/**
 * An upstream that answers `body` after `delayMs`, and a promise that settles when its first
 * request arrives, so a test can act while that request is in flight.
 */
export async function startSlowUpstream(
  delayMs: number,
  body: string,
): Promise<{ upstream: TestUpstream; arrived: Promise<void> }> {
  let signal: () => void = () => {}
  const arrived = new Promise<void>((resolve) => {
    signal = resolve
  })
  const upstream = await startUpstream((_req, res) => {
    signal()
    setTimeout(() => res.end(body), delayMs)
  })
  return { upstream, arrived }
}
