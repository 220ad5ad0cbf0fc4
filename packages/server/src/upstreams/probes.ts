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
  hello?: string,
  expect?: RegExp,
): Promise<string | undefined> {
  const parsed = new URL(url)
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

/** The reasons the gateway's dependencies are not ready; empty when all answered. */
export async function probeDependencies(config: CompiledConfig, timeoutMs = 1000): Promise<string[]> {
  const checks: Array<Promise<string | undefined>> = []
  const { redis, store } = config.raw
  if (redis !== undefined) {
    // Any RESP answer to PING proves a Redis server; -NOAUTH still means reachable.
    checks.push(probe(redis.url, 6379, timeoutMs, 'PING\r\n', /^[+-]/).then((p) => p && `redis: ${p}`))
  }
  if (store?.kind === 'postgres') {
    checks.push(probe(store.url, 5432, timeoutMs).then((p) => p && `store (postgres): ${p}`))
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
