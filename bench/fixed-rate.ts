/**
 * One latency run at a fixed request rate, printed as one JSON line (`AutocannonResult` in
 * load.ts). run.ts starts it as a child process pinned to the load CPU.
 *
 *   node --import tsx bench/fixed-rate.ts URL RATE DURATION_S CONNECTIONS [paced|autocannon]
 *
 * Two generators:
 * - `paced` (default): open loop, requests spread evenly over each second (every 1 ms timer
 *   tick sends the requests that are due: 2 per tick at 2,000/s) over an undici Pool of up to
 *   CONNECTIONS keep-alive connections. Latency runs from the moment a request is handed to the
 *   pool, so time waiting for a free connection counts.
 * - `autocannon`: autocannon's `overallRate`. autocannon splits the rate over the connections
 *   and each connection sends its share of the second back to back, then waits for the next
 *   second: the whole second's requests leave in one burst of ~100 ms at full concurrency
 *   (measured: 2,000 requests within 100–150 ms, then nothing). Its p99 is then the latency of
 *   a saturated 50-connection burst, close to the throughput run's, not the latency at a
 *   steady 2,000/s. Kept for comparison (BENCH_RATE_TOOL=autocannon).
 * RATE 0 runs autocannon as fast as it can: the throughput fallback when wrk is missing.
 * The request comes in the environment, so it never appears in argv: the method in
 * BENCH_LOAD_METHOD (GET, or POST with a body), extra headers (an agent's bearer token) as JSON
 * in BENCH_LOAD_HEADERS, the body in BENCH_LOAD_BODY (JSON unless a content-type header says
 * otherwise). See `requestOf` in load.ts.
 *
 * Percentiles come from every response's own time with sub-millisecond precision
 * (autocannon's histogram keeps whole milliseconds, too coarse for a 1 ms comparison; its
 * values are included for reference in autocannon mode).
 * A 1 s unrecorded run first warms this process's own code.
 */
import { pathToFileURL } from 'node:url'
import autocannon, { type Options, type Result } from 'autocannon'
import { type Dispatcher, Pool } from 'undici'
import { BODY_ENV, HEADERS_ENV, type LoadResult, METHOD_ENV, type RequestSpec, requestOf } from './load.ts'

export type RateTool = 'paced' | 'autocannon'

const WARMUP_S = 1

/** The extra request headers from `BENCH_LOAD_HEADERS` (a JSON object of strings), or {}. */
export function headersFromEnv(raw: string | undefined): Record<string, string> {
  if (raw === undefined || raw === '') return {}
  let parsed: unknown
  try {
    parsed = JSON.parse(raw)
  } catch {
    // The value may be a secret: say what is wrong, not what it is.
    throw new Error(`${HEADERS_ENV} is not JSON`)
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new Error(`${HEADERS_ENV} must be a JSON object`)
  }
  const out: Record<string, string> = {}
  for (const [name, value] of Object.entries(parsed)) {
    if (typeof value !== 'string') throw new Error(`${HEADERS_ENV}: header ${name} is not a string`)
    out[name.toLowerCase()] = value
  }
  return out
}

/** The request from the environment (see the file comment), defaults applied. */
export function requestFromEnv(env: NodeJS.ProcessEnv): RequestSpec {
  const method = env[METHOD_ENV]
  const body = env[BODY_ENV]
  return requestOf({
    headers: headersFromEnv(env[HEADERS_ENV]),
    ...(method === undefined || method === '' ? {} : { method }),
    ...(body === undefined ? {} : { body }),
  })
}

/** The q-quantile (0..1) of ascending `sorted` (nearest rank). */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return 0
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))
  return sorted[rank]!
}

interface Output extends LoadResult {
  rate: number
  tool: RateTool
  autocannon?: { p50: number; p97_5: number; p99: number }
}

/** Growable list of latencies (ms). */
class Samples {
  private data = new Float64Array(1 << 14)
  count = 0
  push(ms: number): void {
    if (this.count === this.data.length) {
      const bigger = new Float64Array(this.data.length * 2)
      bigger.set(this.data)
      this.data = bigger
    }
    this.data[this.count++] = ms
  }
  sorted(): Float64Array {
    return this.data.subarray(0, this.count).sort()
  }
}

/** Sends `rate` requests/s evenly for `durationSec`, open loop; resolves when all answered. */
async function pacedRun(
  pool: Pool,
  path: string,
  request: RequestSpec,
  rate: number,
  durationSec: number,
  samples: Samples | null,
): Promise<{ non2xx: number; errors: number; elapsedMs: number }> {
  const total = Math.max(1, Math.round(rate * durationSec))
  const intervalMs = 1000 / rate
  let sent = 0
  let done = 0
  let non2xx = 0
  let errors = 0
  let allAnswered: () => void = () => {}
  const answered = new Promise<void>((res) => {
    allAnswered = res
  })
  const finish = () => {
    if (++done === total) allAnswered()
  }
  const send = () => {
    const t0 = performance.now()
    let status = 0
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart() {},
      onResponseStart(_c, statusCode) {
        status = statusCode
      },
      onResponseData() {},
      onResponseEnd() {
        if (status >= 200 && status < 400) samples?.push(performance.now() - t0)
        else non2xx++
        finish()
      },
      onResponseError() {
        errors++
        finish()
      },
    }
    pool.dispatch(
      {
        method: request.method as Dispatcher.HttpMethod,
        path,
        headers: request.headers,
        ...(request.body === undefined ? {} : { body: request.body }),
      },
      handler,
    )
  }
  const start = performance.now()
  await new Promise<void>((res) => {
    const tick = () => {
      const due = Math.min(total, Math.floor((performance.now() - start) / intervalMs) + 1)
      while (sent < due) {
        sent++
        send()
      }
      if (sent >= total) {
        clearInterval(timer)
        res()
      }
    }
    const timer = setInterval(tick, 1)
    tick()
  })
  const timeout = new Promise<void>((res) => setTimeout(res, 15_000).unref())
  await Promise.race([answered, timeout])
  errors += total - done // never answered
  return { non2xx, errors, elapsedMs: performance.now() - start }
}

async function paced(
  url: string,
  rate: number,
  durationSec: number,
  connections: number,
  request: RequestSpec,
): Promise<Output> {
  const target = new URL(url)
  const pool = new Pool(target.origin, { connections, pipelining: 1, keepAliveTimeout: 60_000 })
  const path = target.pathname + target.search
  const sent = { ...request, headers: { 'user-agent': 'runr-bench-paced', ...request.headers } }
  try {
    await pacedRun(pool, path, sent, rate, WARMUP_S, null)
    const samples = new Samples()
    const r = await pacedRun(pool, path, sent, rate, durationSec, samples)
    const sorted = samples.sorted()
    return {
      rate,
      tool: 'paced',
      rps: (samples.count + r.non2xx) / (r.elapsedMs / 1000),
      p50: quantile(sorted, 0.5),
      p99: quantile(sorted, 0.99),
      requests: samples.count,
      non2xx: r.non2xx,
      errors: r.errors,
    }
  } finally {
    await pool.destroy()
  }
}

function autocannonRun(options: Options, samples: Samples | null) {
  return new Promise<{ result: Result; count: number }>((res, rej) => {
    const instance = autocannon(options, (err, result) => (err ? rej(err) : res({ result, count })))
    let count = 0
    instance.on('response', (_client, status, _bytes, ms) => {
      if (status < 200 || status >= 400) return
      count++
      samples?.push(ms)
    })
    process.once('SIGTERM', () => instance.stop())
  })
}

async function withAutocannon(
  url: string,
  rate: number,
  durationSec: number,
  connections: number,
  request: RequestSpec,
): Promise<Output> {
  const options: Options = {
    url,
    connections,
    timeout: 10,
    method: request.method,
    headers: request.headers,
    ...(request.body === undefined ? {} : { body: request.body }),
    ...(rate > 0 ? { overallRate: rate } : {}),
  }
  await autocannonRun({ ...options, duration: WARMUP_S }, null)
  const samples = new Samples()
  const { result, count } = await autocannonRun({ ...options, duration: durationSec }, samples)
  const sorted = samples.sorted()
  return {
    rate,
    tool: 'autocannon',
    rps: count / result.duration,
    p50: quantile(sorted, 0.5),
    p99: quantile(sorted, 0.99),
    requests: count,
    non2xx: result.non2xx,
    errors: result.errors + result.timeouts,
    autocannon: { p50: result.latency.p50, p97_5: result.latency.p97_5, p99: result.latency.p99 },
  }
}

export function rateTool(value: string | undefined): RateTool {
  if (value === undefined || value === '' || value === 'paced') return 'paced'
  if (value === 'autocannon') return 'autocannon'
  throw new Error(`rate tool must be paced or autocannon, got ${value}`)
}

async function main(): Promise<void> {
  const [url, rateArg = '2000', durationArg = '10', connectionsArg = '50', toolArg] = process.argv.slice(2)
  if (!url) {
    process.stderr.write('usage: fixed-rate.ts URL [RATE] [DURATION_S] [CONNECTIONS] [paced|autocannon]\n')
    process.exit(2)
  }
  const rate = Number(rateArg)
  const duration = Number(durationArg)
  const connections = Number(connectionsArg)
  const tool = rate > 0 ? rateTool(toolArg) : 'autocannon'
  const request = requestFromEnv(process.env)
  const out =
    tool === 'paced'
      ? await paced(url, rate, duration, connections, request)
      : await withAutocannon(url, rate, duration, connections, request)
  process.stdout.write(`${JSON.stringify(out)}\n`)
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: Error) => {
    process.stderr.write(`${err.stack ?? err.message}\n`)
    process.exit(1)
  })
}
