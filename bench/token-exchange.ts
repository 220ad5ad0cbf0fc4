/**
 * Token exchanges per second: `POST /v1/token` (jwt-bearer) against the gateway-auth gateway,
 * printed as one JSON line (`ExchangeResult` in load.ts). run.ts starts it as a child process
 * pinned to the load CPU after the rows, with the agent in BENCH_EXCHANGE (JSON: publicUrl,
 * issuer, agent, scope; it holds the agent's private key, so it is not an argument).
 *
 *   node --import tsx bench/token-exchange.ts DURATION_S CONCURRENCY
 *
 * Every assertion's jti is single-use, so each request needs a fresh signed assertion. Signing
 * costs about as much as verifying, so all of them are signed before the clock starts: a 1 s
 * unrecorded warm-up measures the rate, then rate × duration × 3 (+ a margin) are signed, with
 * exp 4 minutes ahead (the gateway refuses more than 5). CONCURRENCY workers then send them
 * back to back (closed loop) over an undici pool of as many connections. If the signed ones
 * run out before the clock does, the run stops early and says so.
 *
 * Latency runs from the moment a request is handed to the pool to the end of its answer.
 * Every answer that is not 200 is counted by status and error code, and reported.
 */
import { pathToFileURL } from 'node:url'
import { Pool } from 'undici'
import { quantile } from './fixed-rate.ts'
import { assertionSigner, refusal, tokenRequestBody } from './identity.ts'
import { EXCHANGE_ENV, type ExchangeResult, type ExchangeTally } from './load.ts'
import type { TokenExchangeSetup } from './targets.ts'

const WARMUP_S = 1
/** Long enough for signing plus the run; the gateway refuses assertions living over 5 minutes. */
const ASSERTION_LIFETIME_S = 240
const MAX_PRESIGNED = 200_000

/** How many assertions to sign for a run of `durationSec` after a warm-up at `warmRate`/s. */
export function presignCount(warmRate: number, durationSec: number, concurrency: number): number {
  // Three times the warm rate: the warm-up runs on colder code (measured: 480/s warm, 750/s in
  // the run that followed). Signing is cheap next to the exchange (~7,000/s on one core).
  const wanted = Math.ceil(Math.max(warmRate, 100) * durationSec * 3) + concurrency * 4
  return Math.min(MAX_PRESIGNED, wanted)
}

/** Signs `n` request bodies, a bounded number at a time. */
async function presign(sign: (lifetimeSec: number) => Promise<string>, n: number, scope: string) {
  const bodies: string[] = []
  while (bodies.length < n) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(512, n - bodies.length) }, () => sign(ASSERTION_LIFETIME_S)),
    )
    for (const assertion of batch) bodies.push(tokenRequestBody(assertion, scope))
  }
  return bodies
}

interface Run extends ExchangeTally {
  elapsedMs: number
  latencies: number[]
  perSecond: number[]
  exhausted: boolean
}

/** `concurrency` workers send `bodies` back to back until `durationMs` has passed or none are left. */
async function closedLoop(pool: Pool, bodies: string[], concurrency: number, durationMs: number) {
  const run: Run = {
    ok: 0,
    non200: {},
    errors: 0,
    errorKinds: {},
    elapsedMs: 0,
    latencies: [],
    perSecond: [],
    exhausted: false,
  }
  let next = 0
  const start = performance.now()
  const deadline = start + durationMs
  const worker = async () => {
    while (performance.now() < deadline) {
      if (next >= bodies.length) {
        run.exhausted = true
        return
      }
      const body = bodies[next++]!
      const t0 = performance.now()
      try {
        const res = await pool.request({
          method: 'POST',
          path: '/v1/token',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body,
        })
        // Read to the end either way (the 200 body is the token: kept nowhere).
        const text = await res.body.text()
        const t1 = performance.now()
        if (res.statusCode === 200) {
          run.ok++
          run.latencies.push(t1 - t0)
          const second = Math.floor((t1 - start) / 1000)
          run.perSecond[second] = (run.perSecond[second] ?? 0) + 1
        } else {
          const key = refusal(res.statusCode, text)
          run.non200[key] = (run.non200[key] ?? 0) + 1
        }
      } catch (err) {
        run.errors++
        const kind = (err as { code?: string }).code ?? (err as Error).name
        run.errorKinds[kind] = (run.errorKinds[kind] ?? 0) + 1
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  run.elapsedMs = performance.now() - start
  run.perSecond = Array.from(run.perSecond, (n) => n ?? 0)
  return run
}

const tally = (r: Run): ExchangeTally => ({
  ok: r.ok,
  non200: r.non200,
  errors: r.errors,
  errorKinds: r.errorKinds,
})

export async function measureExchange(
  setup: TokenExchangeSetup,
  durationSec: number,
  concurrency: number,
): Promise<ExchangeResult> {
  const sign = await assertionSigner(setup.agent, setup.issuer)
  const pool = new Pool(setup.publicUrl, {
    connections: concurrency,
    pipelining: 1,
    keepAliveTimeout: 60_000,
  })
  try {
    const warmBodies = await presign(sign, concurrency * 50, setup.scope)
    const warm = await closedLoop(pool, warmBodies, concurrency, WARMUP_S * 1000)
    const warmRate = warm.ok / (warm.elapsedMs / 1000)
    const signStart = performance.now()
    const bodies = await presign(sign, presignCount(warmRate, durationSec, concurrency), setup.scope)
    const signMs = performance.now() - signStart
    const run = await closedLoop(pool, bodies, concurrency, durationSec * 1000)
    const sorted = Float64Array.from(run.latencies).sort()
    return {
      durationSec,
      concurrency,
      elapsedSec: run.elapsedMs / 1000,
      rps: run.ok / (run.elapsedMs / 1000),
      p50: quantile(sorted, 0.5),
      p99: quantile(sorted, 0.99),
      ...tally(run),
      perSecond: run.perSecond,
      presigned: bodies.length,
      signSec: signMs / 1000,
      exhausted: run.exhausted,
      warmup: { ...tally(warm), rps: warmRate },
    }
  } finally {
    await pool.destroy()
  }
}

/** The setup from BENCH_EXCHANGE; errors never quote the value (it holds a private key). */
export function setupFromEnv(raw: string | undefined): TokenExchangeSetup {
  if (raw === undefined || raw === '') throw new Error(`${EXCHANGE_ENV} is not set`)
  let setup: TokenExchangeSetup
  try {
    setup = JSON.parse(raw) as TokenExchangeSetup
  } catch {
    throw new Error(`${EXCHANGE_ENV} is not JSON`)
  }
  for (const field of ['publicUrl', 'issuer', 'scope'] as const) {
    if (typeof setup[field] !== 'string') throw new Error(`${EXCHANGE_ENV}: ${field} is missing`)
  }
  if (typeof setup.agent?.id !== 'string' || typeof setup.agent.privateKeyJwk !== 'object') {
    throw new Error(`${EXCHANGE_ENV}: agent is missing`)
  }
  return setup
}

async function main(): Promise<void> {
  const [durationArg = '5', concurrencyArg = '16'] = process.argv.slice(2)
  const durationSec = Number(durationArg)
  const concurrency = Number(concurrencyArg)
  if (!(durationSec > 0) || !Number.isInteger(concurrency) || concurrency < 1) {
    process.stderr.write('usage: token-exchange.ts DURATION_S CONCURRENCY (agent in BENCH_EXCHANGE)\n')
    process.exit(2)
  }
  const out = await measureExchange(setupFromEnv(process.env[EXCHANGE_ENV]), durationSec, concurrency)
  process.stdout.write(`${JSON.stringify(out)}\n`)
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: Error) => {
    process.stderr.write(`${err.stack ?? err.message}\n`)
    process.exit(1)
  })
}
