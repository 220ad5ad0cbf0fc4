/**
 * Reachability probes for `/ready`: the infrastructure the config depends on (Redis, a Postgres
 * store, NATS systems). Each speaks just enough of its protocol to know a real server answered.
 * Backends behind channels are not probed: one slow backend must not take the gateway out of a
 * load balancer for every other channel.
 */
import { connect } from 'node:net'
import type { CompiledConfig } from '../config/compile.ts'

/** Connect to `url`'s host and port, optionally send `hello`, and wait for a reply matching `expect`. */
function probe(
  url: string,
  defaultPort: number,
  timeoutMs: number,
  hello?: string | Buffer,
  expect?: RegExp,
): Promise<string | undefined> {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    // The schema checks only the scheme; an unparsable URL is a reason, not a 500 from /ready.
    return Promise.resolve('invalid URL')
  }
  const host = parsed.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1'
  const port = Number(parsed.port || defaultPort)
  return new Promise((done) => {
    const socket = connect({ host, port })
    let received = ''
    const finish = (problem: string | undefined): void => {
      socket.destroy()
      done(problem)
    }
    socket.setTimeout(timeoutMs, () => finish(`no answer within ${timeoutMs} ms`))
    socket.once('error', (err: NodeJS.ErrnoException) => finish(err.code ?? err.message))
    socket.once('connect', () => {
      if (expect === undefined) return finish(undefined)
      if (hello !== undefined) socket.write(hello)
    })
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1')
      if (expect?.test(received)) finish(undefined)
      else if (received.length > 4096) finish('unexpected answer')
    })
    socket.once('end', () => finish('connection closed without the expected answer'))
  })
}

const sslRequest = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])

/** The reasons the gateway's dependencies are not ready; empty when all answered. */
export async function probeDependencies(config: CompiledConfig, timeoutMs = 1000): Promise<string[]> {
  const checks: Array<Promise<string | undefined>> = []
  const { redis, store } = config.raw
  if (redis !== undefined) {
    // Any RESP answer to PING proves a Redis server; -NOAUTH still means reachable.
    checks.push(probe(redis.url, 6379, timeoutMs, 'PING\r\n', /^[+-]/).then((p) => p && `redis: ${p}`))
  }
  if (store?.kind === 'postgres') {
    // A bare TCP connect let any listener on the port pass for Postgres. An SSLRequest (length 8,
    // code 80877103, the frontend/backend protocol's first message) is answered with one byte,
    // S or N, by every server version before authentication, so no credentials are needed.
    checks.push(
      probe(store.url, 5432, timeoutMs, sslRequest, /^[SN]/).then((p) => p && `store (postgres): ${p}`),
    )
  }
  for (const system of config.systems.values()) {
    if (system.kind !== 'nats') continue
    // A NATS server greets every connection with an INFO line.
    checks.push(
      probe(system.url, 4222, timeoutMs, undefined, /^INFO /).then(
        (p) => p && `system ${system.name} (nats): ${p}`,
      ),
    )
  }
  const results = await Promise.all(checks)
  return results.filter((r): r is string => r !== undefined)
}
