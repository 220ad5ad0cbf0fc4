/**
 * The local services some tests need (STACK.md: Postgres, Redis, NATS on their standard ports).
 * A test asks `requireService` first: when the service is down it is skipped on a developer's
 * machine, and fails in CI, where `.ci/run` sets RUNR_TEST_REQUIRE_SERVICES=1.
 */
import { connect } from 'node:net'

/** The service URLs tests use, from the environment or the STACK.md defaults. */
export const serviceUrls = {
  redis: process.env['RUNR_TEST_REDIS_URL'] ?? 'redis://127.0.0.1:6379',
  postgres: process.env['RUNR_TEST_POSTGRES_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test',
  nats: process.env['RUNR_TEST_NATS_URL'] ?? 'nats://127.0.0.1:4222',
}

const defaultPorts: Record<string, number> = {
  'redis:': 6379,
  'rediss:': 6379,
  'postgres:': 5432,
  'postgresql:': 5432,
  'nats:': 4222,
}

function reachable(url: string, timeoutMs: number): Promise<string | undefined> {
  const parsed = new URL(url)
  const host = parsed.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1'
  const port = Number(parsed.port || defaultPorts[parsed.protocol] || 0)
  return new Promise((done) => {
    const socket = connect({ host, port })
    const finish = (problem: string | undefined): void => {
      socket.destroy()
      done(problem)
    }
    socket.setTimeout(timeoutMs, () => finish(`no connection within ${timeoutMs} ms`))
    socket.once('connect', () => finish(undefined))
    socket.once('error', (err: NodeJS.ErrnoException) => finish(err.code ?? err.message))
  })
}

/**
 * True when `url` accepts a TCP connection. When it does not: throws if
 * RUNR_TEST_REQUIRE_SERVICES=1, else returns false so the caller can `t.skip('redis not running')`.
 */
export async function requireService(name: string, url: string, timeoutMs = 2000): Promise<boolean> {
  const problem = await reachable(url, timeoutMs)
  if (problem === undefined) return true
  if (process.env['RUNR_TEST_REQUIRE_SERVICES'] === '1') {
    // The URL may carry a password; name the host only.
    const { host } = new URL(url)
    throw new Error(
      `${name} is required (RUNR_TEST_REQUIRE_SERVICES=1) but ${host} is unreachable: ${problem}`,
    )
  }
  return false
}

/** Remove what a test left in the shared services: its Postgres schema and its Redis keys. */
export async function dropSchemaAndKeys(schema: string, redisPrefix: string): Promise<void> {
  const { default: postgres } = await import('postgres')
  const sql = postgres(serviceUrls.postgres, { max: 1, onnotice: () => {} })
  try {
    await sql.unsafe(`drop schema if exists "${schema.replaceAll('"', '')}" cascade`)
  } finally {
    await sql.end()
  }
  await dropRedisKeys(redisPrefix)
}

/** Remove what a test left in the shared Redis: every key under its prefix. */
export async function dropRedisKeys(prefix: string): Promise<void> {
  const { Redis } = await import('ioredis')
  const redis = new Redis(serviceUrls.redis)
  try {
    const keys = await redis.keys(`${prefix}*`)
    if (keys.length > 0) await redis.del(...keys)
  } finally {
    redis.disconnect()
  }
}
