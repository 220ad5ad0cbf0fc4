/**
 * A TCP proxy in front of Redis for tests of Redis going away: stall it (connections stay open,
 * replies are dropped), cut it (connections drop, new ones are refused) and restore it on the
 * same port, without touching the Redis that other tests share.
 */
import { connect, createServer, type Socket } from 'node:net'
import type { TestContext } from 'node:test'

/** A TCP proxy in front of Redis that a test can stall, cut and restore. */
export interface RedisProxy {
  readonly url: string
  /** Keep connections open but drop every reply, as a hung Redis would. */
  stall(): void
  /** Drop every connection and refuse new ones, as a Redis that went away. */
  cut(): Promise<void>
  /** Accept connections again on the same port. */
  restore(): Promise<void>
}

export async function startRedisProxy(t: TestContext, target: string): Promise<RedisProxy> {
  const parsed = new URL(target)
  const host = parsed.hostname.replace(/^\[|\]$/g, '')
  const port = Number(parsed.port || 6379)
  const sockets = new Set<Socket>()
  let stalled = false
  const server = createServer((client) => {
    const upstream = connect(port, host)
    for (const socket of [client, upstream]) {
      sockets.add(socket)
      socket.on('error', () => {})
      socket.on('close', () => {
        sockets.delete(socket)
        client.destroy()
        upstream.destroy()
      })
    }
    client.pipe(upstream)
    upstream.on('data', (chunk: Buffer) => {
      if (!stalled) client.write(chunk)
    })
  })
  const listen = (at: number): Promise<void> => new Promise((done) => server.listen(at, '127.0.0.1', done))
  await listen(0)
  const proxyPort = (server.address() as { port: number }).port
  const cut = async (): Promise<void> => {
    const closed = new Promise((done) => server.close(done))
    for (const socket of sockets) socket.destroy()
    await closed
  }
  t.after(() => (server.listening ? cut() : undefined))
  const url = new URL(target)
  url.host = `127.0.0.1:${proxyPort}`
  return {
    url: url.toString(),
    stall: () => {
      stalled = true
    },
    cut,
    restore: () => listen(proxyPort),
  }
}
