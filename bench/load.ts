/**
 * Load generation: `wrk` for throughput when it is installed (autocannon otherwise),
 * bench/fixed-rate.ts at a fixed request rate for latency, and bench/token-exchange.ts for
 * `POST /v1/token`. All run as child processes pinned to the load CPU, so the generator never
 * shares a core with the proxy under test.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Pinning, pinPrefix, ROOT, runToEnd } from './proc.ts'
import type { TokenExchangeSetup } from './targets.ts'

/** One load run's result. Latencies are in milliseconds. */
export interface LoadResult {
  rps: number
  p50: number
  p99: number
  requests: number
  /** responses that were not 2xx/3xx */
  non2xx: number
  /** connect/read/write/timeout errors */
  errors: number
  /**
   * CPU time of the target's processes per request during the run, µs (run.ts fills it in for
   * throughput runs of targets it started): the route's work, whatever else shared the CPU
   */
  cpuUsPerRequest?: number
}

/** Converts a wrk duration (`812.00us`, `1.23ms`, `2.00s`, `1.00m`) to milliseconds. */
export function wrkDurationMs(text: string): number {
  const m = /^([\d.]+)(us|ms|s|m|h)$/.exec(text.trim())
  if (!m) throw new Error(`not a wrk duration: ${JSON.stringify(text)}`)
  const value = Number(m[1])
  switch (m[2]) {
    case 'us':
      return value / 1000
    case 'ms':
      return value
    case 's':
      return value * 1000
    case 'm':
      return value * 60_000
    default:
      return value * 3_600_000
  }
}

/** Parses the output of `wrk --latency`. Throws when Requests/sec or the distribution is missing. */
export function parseWrk(output: string): LoadResult {
  const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(output)
  const p50 = /^\s+50%\s+(\S+)/m.exec(output)
  const p99 = /^\s+99%\s+(\S+)/m.exec(output)
  if (!rps?.[1] || !p50?.[1] || !p99?.[1]) {
    throw new Error(`could not parse wrk output:\n${output.trim()}`)
  }
  const requests = /^\s+(\d+) requests in /m.exec(output)
  const non2xx = /^\s+Non-2xx or 3xx responses:\s+(\d+)/m.exec(output)
  const socket = /^\s+Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/m.exec(output)
  const errors = socket ? socket.slice(1, 5).reduce((sum, n) => sum + Number(n), 0) : 0
  return {
    rps: Number(rps[1]),
    p50: wrkDurationMs(p50[1]),
    p99: wrkDurationMs(p99[1]),
    requests: requests?.[1] ? Number(requests[1]) : 0,
    non2xx: non2xx?.[1] ? Number(non2xx[1]) : 0,
    errors,
  }
}

/** What a row asks every load generator to send: GET without a body unless it says otherwise. */
export interface LoadRequest {
  /** `GET` by default, `POST` when there is a body */
  method?: string
  /** sent with every request (may hold a bearer token: never logged) */
  headers?: Record<string, string>
  /** the request body, JSON unless `headers` name another content-type (may hold secrets too) */
  body?: string
}

/** A `LoadRequest` with its defaults applied: what goes on the wire. */
export interface RequestSpec {
  method: string
  headers: Record<string, string>
  body?: string
}

export interface LoadOptions extends LoadRequest {
  url: string
  durationSec: number
  connections: number
  pinning: Pinning
}

/**
 * The request every generator sends for `r`: the method defaults to GET, or POST with a body; a
 * body is JSON (`content-type: application/json`) unless the row set its own content-type.
 * Errors name the method, never a header or the body.
 */
export function requestOf(r: LoadRequest): RequestSpec {
  const body = r.body === '' ? undefined : r.body
  const method = r.method ?? (body === undefined ? 'GET' : 'POST')
  if (!/^[A-Z]{1,16}$/.test(method)) throw new Error(`not an HTTP method: ${JSON.stringify(method)}`)
  if (body !== undefined && (method === 'GET' || method === 'HEAD')) {
    throw new Error(`a ${method} request cannot carry a body`)
  }
  const headers: Record<string, string> = {}
  for (const [name, value] of Object.entries(r.headers ?? {})) headers[name.toLowerCase()] = value
  if (body !== undefined && headers['content-type'] === undefined)
    headers['content-type'] = 'application/json'
  return body === undefined ? { method, headers } : { method, headers, body }
}

/** Environment variables that hand the request to fixed-rate.ts: headers as JSON, method, body. */
export const HEADERS_ENV = 'BENCH_LOAD_HEADERS'
export const METHOD_ENV = 'BENCH_LOAD_METHOD'
export const BODY_ENV = 'BENCH_LOAD_BODY'

/** The environment that hands `r` to fixed-rate.ts (never its argv: `ps` shows argv to everyone). */
export function requestEnv(r: LoadRequest): Record<string, string> {
  const spec = requestOf(r)
  return {
    [METHOD_ENV]: spec.method,
    ...(Object.keys(spec.headers).length > 0 ? { [HEADERS_ENV]: JSON.stringify(spec.headers) } : {}),
    ...(spec.body === undefined ? {} : { [BODY_ENV]: spec.body }),
  }
}

/**
 * A Lua string literal of `text`'s UTF-8 bytes: printable ASCII as is, every other byte (and the
 * quote and backslash) as a three-digit decimal escape, which wrk's LuaJIT reads in any context
 * (JSON's `\uXXXX` escapes are not Lua).
 */
export function luaString(text: string): string {
  let out = '"'
  for (const byte of Buffer.from(text, 'utf8')) {
    out +=
      byte >= 0x20 && byte < 0x7f && byte !== 0x22 && byte !== 0x5c
        ? String.fromCharCode(byte)
        : `\\${String(byte).padStart(3, '0')}`
  }
  return `${out}"`
}

/**
 * A wrk Lua script that sets the method, the body and the headers of every request, or '' for a
 * plain GET. A script rather than `-H`/`-s` arguments, because a command line is visible to every
 * user in `ps` and the headers may hold a bearer token. wrk adds the Content-Length of the body.
 */
export function wrkScript(r: LoadRequest): string {
  const spec = requestOf(r)
  const lines: string[] = []
  if (spec.method !== 'GET') lines.push(`wrk.method = ${luaString(spec.method)}`)
  if (spec.body !== undefined) lines.push(`wrk.body = ${luaString(spec.body)}`)
  for (const [name, value] of Object.entries(spec.headers)) {
    lines.push(`wrk.headers[${luaString(name)}] = ${luaString(value)}`)
  }
  return lines.join('\n')
}

/** `wrk -t1 -cN -dDs --latency [-s request.lua] URL`, pinned to the load CPU. */
export async function runWrk(options: LoadOptions): Promise<LoadResult> {
  let scriptDir: string | undefined
  const scriptArgs: string[] = []
  const script = wrkScript(options)
  if (script !== '') {
    scriptDir = mkdtempSync(join(tmpdir(), 'runr-wrk-'))
    const file = join(scriptDir, 'request.lua')
    writeFileSync(file, script, { mode: 0o600 })
    scriptArgs.push('-s', file)
  }
  const argv = [
    ...pinPrefix(options.pinning, 'load'),
    'wrk',
    '-t1',
    `-c${options.connections}`,
    `-d${options.durationSec}s`,
    '--latency',
    ...scriptArgs,
    options.url,
  ]
  try {
    const { code, stdout, stderr } = await runToEnd('wrk', argv, {
      timeoutMs: (options.durationSec + 30) * 1000,
    })
    if (code !== 0) throw new Error(`wrk exited ${code}: ${stderr.trim() || stdout.trim()}`)
    return parseWrk(stdout)
  } finally {
    if (scriptDir !== undefined) rmSync(scriptDir, { recursive: true, force: true })
  }
}

/** What `bench/fixed-rate.ts` prints (one JSON line). */
export interface RateResult extends LoadResult {
  /** the rate asked for (0: as fast as possible) */
  rate: number
  tool: 'paced' | 'autocannon'
  /** autocannon's own (whole-millisecond) histogram, for reference (autocannon runs only) */
  autocannon?: { p50: number; p97_5: number; p99: number }
}

/**
 * Runs `bench/fixed-rate.ts` in a child process pinned to the load CPU: `rate` requests/s
 * with `tool` (see fixed-rate.ts), or with `rate` 0 autocannon unthrottled, which is the
 * throughput fallback when wrk is missing.
 */
export async function runFixedRate(
  options: LoadOptions & { rate: number; tool?: 'paced' | 'autocannon' },
): Promise<RateResult> {
  const argv = [
    ...pinPrefix(options.pinning, 'load'),
    process.execPath,
    '--import',
    'tsx',
    join(ROOT, 'bench', 'fixed-rate.ts'),
    options.url,
    String(options.rate),
    String(options.durationSec),
    String(options.connections),
    options.tool ?? 'paced',
  ]
  // In the environment, not argv: argv shows up in `ps` and in error messages.
  const { code, stdout, stderr } = await runToEnd('fixed-rate', argv, {
    timeoutMs: (options.durationSec + 30) * 1000,
    env: requestEnv(options),
  })
  const line = stdout.trim().split('\n').pop() ?? ''
  if (code !== 0 || !line.startsWith('{')) {
    throw new Error(`fixed-rate.ts exited ${code}: ${stderr.trim() || stdout.trim()}`)
  }
  return JSON.parse(line) as RateResult
}

/** Answers of a token exchange run, by kind. */
export interface ExchangeTally {
  /** 200 answers: tokens issued */
  ok: number
  /** every other answer, by `status code/reason` (`400 invalid_grant/replayed_jti`) */
  non200: Record<string, number>
  /** requests without an answer (connection errors), by error code */
  errors: number
  errorKinds: Record<string, number>
}

/** What `bench/token-exchange.ts` prints (one JSON line). Latencies in ms, of the 200s. */
export interface ExchangeResult extends ExchangeTally {
  durationSec: number
  concurrency: number
  /** until the last answer, so slightly over durationSec */
  elapsedSec: number
  /** 200s per second over elapsedSec */
  rps: number
  p50: number
  p99: number
  /** 200s in each second of the run (answers in flight at the deadline land in a last, partial one) */
  perSecond: number[]
  /** assertions signed before the clock started, and how long that took */
  presigned: number
  signSec: number
  /** true when the signed assertions ran out before durationSec */
  exhausted: boolean
  /** the unrecorded 1 s warm-up that sized `presigned` */
  warmup: ExchangeTally & { rps: number }
}

/** Environment variable that hands the agent (JSON `TokenExchangeSetup`) to token-exchange.ts. */
export const EXCHANGE_ENV = 'BENCH_EXCHANGE'

/**
 * Runs `bench/token-exchange.ts` in a child process pinned to the load CPU. `setup` holds the
 * agent's private key: it travels in the child's environment, never in argv or output.
 */
export async function runTokenExchange(options: {
  setup: TokenExchangeSetup
  durationSec: number
  concurrency: number
  pinning: Pinning
}): Promise<ExchangeResult> {
  const argv = [
    ...pinPrefix(options.pinning, 'load'),
    process.execPath,
    '--import',
    'tsx',
    join(ROOT, 'bench', 'token-exchange.ts'),
    String(options.durationSec),
    String(options.concurrency),
  ]
  const { code, stdout, stderr } = await runToEnd('token-exchange', argv, {
    // Signing the assertions comes on top of the run.
    timeoutMs: (options.durationSec + 90) * 1000,
    env: { [EXCHANGE_ENV]: JSON.stringify(options.setup) },
  })
  const line = stdout.trim().split('\n').pop() ?? ''
  if (code !== 0 || !line.startsWith('{')) {
    throw new Error(`token-exchange.ts exited ${code}: ${stderr.trim() || stdout.trim()}`)
  }
  return JSON.parse(line) as ExchangeResult
}
