/**
 * `npm run bench`: the gateway (public and behind agent tokens) against nginx, the bare-Node
 * ceiling and the upstream itself, and the same gateway's tool route (with a minimal and with a
 * realistic policy set) and OpenAI passthrough, the tool route with the audit ledger off (a
 * second process), the rate-limit rows (memory and Redis) and the cache rows (ratelimit-cache.ts),
 * back to back in one run, interleaved over several rounds; then alternating pairs for the small
 * costs (PAIR_SPECS in report.ts), token exchanges per second, the policy decision
 * micro-benchmark, the TypeScript SDK's overhead per call, and the audit ledger's append rate
 * (SQLite, Postgres). Prints a table of medians, those figures and the acceptance checks, and
 * writes bench/results/latest.json.
 *
 * Environment:
 *   BENCH_ROUNDS=3          rounds (each round loads every target once, in order)
 *   BENCH_DURATION=10       seconds per throughput run (wrk -t1 -c50 --latency)
 *   BENCH_WARMUP=3          seconds of unrecorded load per target before the first round
 *   BENCH_RATE=2000         requests/s of the fixed-rate latency run (autocannon overallRate)
 *   BENCH_RATE_DURATION=10  seconds per fixed-rate run
 *   BENCH_RATE_TOOL=paced   paced (even, open loop) or autocannon (overallRate: one burst a second);
 *                           see fixed-rate.ts
 *   BENCH_LOAD_TOOL=wrk     throughput generator: wrk when installed, else autocannon
 *   BENCH_UPSTREAM=raw      raw (node:net responder) or http (node:http); see upstream.ts
 *   BENCH_CONNECTIONS=50    connections, both kinds of run
 *   BENCH_TARGETS=a,b       only these targets (nginx is kept as the reference when present)
 *   BENCH_EXCHANGE_DURATION=5     seconds of POST /v1/token after the rows (gateway-auth's gateway)
 *   BENCH_EXCHANGE_CONCURRENCY=16 concurrent token requests
 *   BENCH_PAIRS=10          alternating pairs of short runs per small cost (PAIR_SPECS in report.ts)
 *   BENCH_PAIR_DURATION=4   seconds per run of a pair
 *   BENCH_QUICK=1           smoke test: 1 round of 3 s (warm-up 2 s, fixed-rate 3 s, exchange 2 s)
 *   BENCH_STRICT=1          exit 1 when an acceptance check fails
 *   BENCH_NO_PIN=1          do not pin with taskset
 */
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, cpus, loadavg, release, tmpdir, totalmem } from 'node:os'
import { join } from 'node:path'
import { formatAuditLedger, measureAuditLedger } from './audit-ledger.ts'
import { createAgent } from './identity.ts'
import {
  type ExchangeResult,
  type LoadRequest,
  type LoadResult,
  runFixedRate,
  runTokenExchange,
  runWrk,
} from './load.ts'
import { formatPolicyDecision, measurePolicyDecision, POLICY_MEDIAN_LIMIT_US } from './policy-decision.ts'
import { detectPinning, hasCommand, killAllNow, type Pinning, ROOT, stopAll } from './proc.ts'
import { RATE_LIMIT_CACHE_TARGETS } from './ratelimit-cache.ts'
import {
  acceptanceChecks,
  buildRows,
  formatCheck,
  formatExchange,
  formatTable,
  PAIR_SPECS,
  type PairSpec,
  pairedCheck,
  pairRoundsCheck,
  reportLines,
  type TargetSamples,
  toolChecks,
} from './report.ts'
import { formatSdkOverhead, measureSdkOverhead, type SdkOverheadResult } from './sdk-overhead.ts'
import {
  type BenchContext,
  describeRequest,
  GATEWAY_ADMIN_KEY,
  type Running,
  SDK_AGENT,
  startUpstream,
  TARGETS,
  type Target,
  TOOL_BODY,
  TOOL_SCOPE,
} from './targets.ts'
import { upstreamKind } from './upstream.ts'

function envNumber(name: string, fallback: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const n = Number(raw)
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, got ${raw}`)
  return n
}

const quick = process.env['BENCH_QUICK'] === '1'
const params = {
  quick,
  rounds: envNumber('BENCH_ROUNDS', quick ? 1 : 3),
  pairs: Math.round(envNumber('BENCH_PAIRS', quick ? 2 : 10)),
  pairSec: envNumber('BENCH_PAIR_DURATION', quick ? 2 : 4),
  durationSec: envNumber('BENCH_DURATION', quick ? 3 : 10),
  warmupSec: envNumber('BENCH_WARMUP', quick ? 2 : 3),
  rate: envNumber('BENCH_RATE', 2000),
  rateDurationSec: envNumber('BENCH_RATE_DURATION', quick ? 3 : 10),
  connections: envNumber('BENCH_CONNECTIONS', 50),
  exchangeDurationSec: envNumber('BENCH_EXCHANGE_DURATION', quick ? 2 : 5),
  exchangeConcurrency: Math.round(envNumber('BENCH_EXCHANGE_CONCURRENCY', 16)),
  threads: 1,
  path: '/bench/hello',
  loadGenerator: loadToolFromEnv(process.env['BENCH_LOAD_TOOL']),
  rateTool: rateToolFromEnv(process.env['BENCH_RATE_TOOL']),
  upstream: upstreamKind(process.env['BENCH_UPSTREAM']),
}

function loadToolFromEnv(value: string | undefined): 'wrk' | 'autocannon' {
  if (value === 'autocannon' || value === 'wrk') return value
  if (value) throw new Error(`BENCH_LOAD_TOOL must be wrk or autocannon, got ${value}`)
  return hasCommand('wrk') ? 'wrk' : 'autocannon'
}

function rateToolFromEnv(value: string | undefined): 'paced' | 'autocannon' {
  if (value === undefined || value === '' || value === 'paced') return 'paced'
  if (value === 'autocannon') return 'autocannon'
  throw new Error(`BENCH_RATE_TOOL must be paced or autocannon, got ${value}`)
}

function commandOutput(argv: string[]): string | null {
  const [cmd, ...args] = argv
  const r = spawnSync(cmd!, args, { cwd: ROOT, encoding: 'utf8' })
  if (r.status !== 0 && !r.stdout && !r.stderr) return null
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n')[0] ?? null
}

function machineInfo(pinning: Pinning) {
  return {
    cpuModel: cpus()[0]?.model ?? 'unknown',
    nproc: availableParallelism(),
    memGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    os: `${process.platform} ${release()}`,
    node: process.version,
    commit: commandOutput(['git', 'rev-parse', '--short', 'HEAD']) ?? 'unknown',
    dirty: (commandOutput(['git', 'status', '--porcelain']) ?? '') !== '',
    date: new Date().toISOString(),
    /** 1-minute load average before the run: above ~0.5, something else is using the CPUs */
    loadBefore: Math.round(loadavg()[0]! * 100) / 100,
    nginx: hasCommand('nginx') ? commandOutput(['nginx', '-v']) : null,
    wrk: hasCommand('wrk') ? commandOutput(['wrk', '-v']) : null,
    pinning,
  }
}

const log = (line = '') => process.stdout.write(`${line}\n`)
const fmt = (r: LoadResult) =>
  `${Math.round(r.rps).toLocaleString('en-US').padStart(7)} rps  p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms` +
  (r.cpuUsPerRequest === undefined ? '' : `  CPU ${r.cpuUsPerRequest.toFixed(0)} µs/req`) +
  (r.non2xx + r.errors > 0 ? `  (${r.non2xx} non-2xx, ${r.errors} errors)` : '')

/** The load request of a row: its method, headers and body, as the generators take them. */
function requestOfRow(running: Running): LoadRequest {
  return {
    ...(running.method === undefined ? {} : { method: running.method }),
    ...(running.headers === undefined ? {} : { headers: running.headers }),
    ...(running.body === undefined ? {} : { body: running.body }),
  }
}

interface Live {
  target: Target
  running: Running
  samples: TargetSamples
}

let cleanup: (() => Promise<void>) | undefined
let cleaningUp = false

async function main(): Promise<number> {
  const pinning = detectPinning()
  const machine = machineInfo(pinning)
  const tmpDir = mkdtempSync(join(tmpdir(), 'runr-bench-'))
  const started: Running[] = []
  cleanup = async () => {
    await Promise.allSettled(started.map((r) => r.stop()))
    await stopAll()
    rmSync(tmpDir, { recursive: true, force: true })
  }

  log(
    `4runr bench: ${machine.cpuModel}, ${machine.nproc} CPUs, Node ${machine.node}, commit ${machine.commit}`,
  )
  if (machine.loadBefore > 0.5) {
    log(
      `warning: load average ${machine.loadBefore} before the run: other processes are using the CPUs and will make the numbers noisy`,
    )
  }
  log(
    pinning.enabled
      ? `pinning: proxy under test on CPU ${pinning.proxyCpu}; upstream and load generator on CPU ${pinning.loadCpu}`
      : `pinning unavailable (${pinning.reason}): processes share all CPUs, numbers are noisier`,
  )
  if (params.loadGenerator === 'wrk') {
    log(`throughput: wrk -t${params.threads} -c${params.connections} -d${params.durationSec}s --latency`)
  } else {
    log(
      hasCommand('wrk')
        ? 'throughput measured with autocannon (BENCH_LOAD_TOOL=autocannon);'
        : 'wrk not found: throughput measured with autocannon instead (run bench/setup as root to install wrk);',
    )
    log('  autocannon is slower than wrk, so the fastest rows may be limited by the load generator')
  }
  log(
    params.rateTool === 'paced'
      ? `latency: ${params.rate} requests/s paced evenly (open loop, undici pool of up to ${params.connections} connections), ${params.rateDurationSec}s`
      : `latency: autocannon overallRate ${params.rate}/s, ${params.connections} connections, ${params.rateDurationSec}s (sent in one burst per second)`,
  )
  log(`upstream: ${params.upstream === 'raw' ? 'raw node:net responder' : 'node:http server'}`)
  log(
    `${params.rounds} round(s), ${params.warmupSec}s warm-up per target${params.quick ? ' (BENCH_QUICK)' : ''}`,
  )
  log()

  const upstream = await startUpstream(pinning, params.upstream)
  started.push(upstream)
  const ctx: BenchContext = {
    tmpDir,
    upstreamUrl: upstream.url,
    upstreamPort: upstream.port,
    pinning,
    path: params.path,
  }

  const only = process.env['BENCH_TARGETS']?.split(',').map((s) => s.trim())
  const targets = [...TARGETS, ...RATE_LIMIT_CACHE_TARGETS]
  const chosen = only ? targets.filter((t) => only.includes(t.name) || t.name === 'nginx') : targets
  const all: TargetSamples[] = []
  const live: Live[] = []
  for (const target of chosen) {
    const samples: TargetSamples = { name: target.name, about: target.about, throughput: [], fixedRate: [] }
    all.push(samples)
    const reason = target.unavailable?.(ctx) ?? null
    if (reason) {
      samples.skipped = reason
      log(`${target.name}: ${reason}`)
      continue
    }
    try {
      const running = await target.start(ctx)
      started.push(running)
      samples.url = running.url
      if (running.method !== undefined) samples.method = running.method
      live.push({ target, running, samples })
      log(`${target.name}: ${describeRequest(running)}`)
    } catch (err) {
      samples.skipped = 'failed to start'
      log(`${target.name}: failed to start: ${(err as Error).message}`)
    }
  }
  log()
  const namePad = Math.max(12, ...live.map((l) => l.target.name.length))

  const throughputRun = (running: Running, durationSec: number) => {
    const options = {
      url: running.url,
      ...requestOfRow(running),
      durationSec,
      connections: params.connections,
      pinning,
    }
    return params.loadGenerator === 'wrk' ? runWrk(options) : runFixedRate({ ...options, rate: 0 })
  }

  /**
   * Runs `fn` for a live target with every other target paused (SIGSTOP): the proxies share one
   * CPU, and an idle Node process still runs timers and, after a load run, the garbage
   * collector's memory reducer (mark-compacts of 10–35 ms, measured), which landed inside the
   * measured target's run as latency spikes that were not its own. A failure takes the target
   * out of the run with the reason.
   */
  const attempt = async (l: Live, what: string, fn: () => Promise<void>) => {
    if (l.samples.skipped) return
    for (const other of live) if (other.running.proc !== l?.running.proc) other.running.proc?.pause()
    try {
      await fn()
    } catch (err) {
      l.samples.skipped = `failed during ${what}`
      const output = l.running.proc?.output().trim()
      log(`  ${l.target.name}: ${what} failed: ${(err as Error).message}${output ? `\n${output}` : ''}`)
    } finally {
      for (const other of live) if (other.running.proc !== l?.running.proc) other.running.proc?.resume()
    }
  }

  /** `spec`'s variant and base rows in alternating pairs of short runs; the ratio of each pair. */
  async function runPairs(spec: PairSpec): Promise<number[]> {
    const base = live.find((l) => l.target.name === spec.base)
    const variant = live.find((l) => l.target.name === spec.variant)
    if (base === undefined || variant === undefined || params.pairs === 0) return []
    log(`pairs: ${spec.base} and ${spec.variant} alternating, ${params.pairs} × ${params.pairSec}s each`)
    const ratios: number[] = []
    for (let i = 0; i < params.pairs; i++) {
      const rps = new Map<Live, number>()
      for (const l of i % 2 === 0 ? [base, variant] : [variant, base]) {
        await attempt(l, `pair ${i + 1}`, async () => {
          const r = await throughputRun(l.running, params.pairSec)
          // A refused request would make a cheap row look fast.
          if (r.non2xx === 0 && r.errors === 0) rps.set(l, r.rps)
        })
      }
      const a = rps.get(base)
      const b = rps.get(variant)
      if (a !== undefined && b !== undefined && a > 0) {
        ratios.push(b / a)
        log(
          `  pair ${i + 1}: ${spec.base} ${Math.round(a)} RPS, ${spec.variant} ${Math.round(b)} RPS (${((b / a) * 100).toFixed(1)}%)`,
        )
      }
    }
    return ratios
  }

  log(`warm-up (${params.warmupSec}s each)`)
  for (const l of live) {
    await attempt(l, 'warm-up', async () => {
      await throughputRun(l.running, params.warmupSec)
    })
  }

  for (let round = 1; round <= params.rounds; round++) {
    // Every other round in reverse (A B C, C B A, …): a drift over the run (another process
    // starting, the gateway's heap growing) then weighs on every row alike, not on the last ones.
    const order = round % 2 === 1 ? live : [...live].reverse()
    log(`round ${round}/${params.rounds}: throughput${round % 2 === 0 ? ' (rows in reverse order)' : ''}`)
    for (const l of order) {
      await attempt(l, `round ${round} throughput`, async () => {
        const cpuBefore = l.running.proc?.cpuSeconds() ?? null
        const r = await throughputRun(l.running, params.durationSec)
        const cpuAfter = l.running.proc?.cpuSeconds() ?? null
        if (cpuBefore !== null && cpuAfter !== null && r.requests > 0) {
          r.cpuUsPerRequest = ((cpuAfter - cpuBefore) * 1e6) / r.requests
        }
        l.samples.throughput.push(r)
        log(`  ${l.target.name.padEnd(namePad)} ${fmt(r)}`)
      })
    }
    log(`round ${round}/${params.rounds}: fixed rate ${params.rate}/s`)
    for (const l of order) {
      if (l.target.fixedRate === false) continue
      await attempt(l, `round ${round} fixed rate`, async () => {
        const r = await runFixedRate({
          url: l.running.url,
          ...requestOfRow(l.running),
          durationSec: params.rateDurationSec,
          connections: params.connections,
          pinning,
          rate: params.rate,
          tool: params.rateTool,
        })
        l.samples.fixedRate.push(r)
        log(`  ${l.target.name.padEnd(namePad)} ${fmt(r)}`)
      })
    }
  }

  const pairRatios = new Map<PairSpec, number[]>()
  for (const spec of PAIR_SPECS) pairRatios.set(spec, await runPairs(spec))
  const tokenExchange = await measureTokenExchange(live, all, pinning)
  const sdkOverhead = await measureSdk(live)

  // In process and CPU-bound: measured after the load runs, while the targets sit idle.
  const policyDecision = measurePolicyDecision()
  const auditLedger = [await measureAuditLedger('sqlite'), await measureAuditLedger('postgres')]
  const rows = buildRows(all)
  const checks = [
    ...acceptanceChecks(rows),
    ...toolChecks(rows).filter((c) => !c.name.startsWith('tool-policy')),
    ...PAIR_SPECS.map((spec) => pairedCheck(spec, pairRatios.get(spec) ?? [], pairRoundsCheck(rows, spec))),
    {
      name: `policy decision median under ${POLICY_MEDIAN_LIMIT_US} µs (1,000 policies, 10,000 agents, CEL guard)`,
      pass: policyDecision.medianUs < POLICY_MEDIAN_LIMIT_US,
      detail: `${policyDecision.medianUs.toFixed(2)} µs (p99 ${policyDecision.p99Us.toFixed(2)} µs)`,
    },
  ]
  log()
  log(`medians over ${params.rounds} round(s); latencies in ms; fixed rate = ${params.rate} requests/s`)
  log(formatTable(rows))
  log(`p99 minus nginx p99: the fixed-rate p99 minus nginx's fixed-rate p99 (ms)`)
  log()
  log(
    'skipped' in tokenExchange
      ? `token exchange: skipped (${tokenExchange.skipped})`
      : formatExchange(tokenExchange),
  )
  log(formatPolicyDecision(policyDecision))
  log()
  log(
    'skipped' in sdkOverhead
      ? `SDK overhead: skipped (${sdkOverhead.skipped})`
      : formatSdkOverhead(sdkOverhead),
  )
  log()
  for (const r of auditLedger) log(formatAuditLedger(r))
  log()
  for (const c of checks) log(formatCheck(c))
  log()
  for (const line of reportLines(rows)) log(line)

  const resultsDir = join(ROOT, 'bench', 'results')
  mkdirSync(resultsDir, { recursive: true })
  const file = join(resultsDir, 'latest.json')
  writeFileSync(
    file,
    `${JSON.stringify({ machine, parameters: params, rows, tokenExchange, policyDecision, sdkOverhead, auditLedger, checks }, null, 2)}\n`,
  )
  log()
  log(`wrote ${file}`)
  return process.env['BENCH_STRICT'] === '1' && checks.some((c) => c.pass === false) ? 1 : 0
}

const EXCHANGE_ROW = 'gateway-auth'

/**
 * The TypeScript SDK's own cost per tool call (issue 9), next to a raw fetch of the tool row's
 * route on the same gateway, alone on the proxy CPU like every measurement.
 */
async function measureSdk(live: Live[]): Promise<SdkOverheadResult | { skipped: string }> {
  const l = live.find((x) => x.target.name === 'tool')
  const gateway = l?.running.gateway
  if (l === undefined || gateway === undefined || l.samples.skipped)
    return { skipped: 'the tool row is not running' }
  log(`SDK overhead: serpapi search one call at a time, raw fetch vs @4runr/gateway (and with DPoP)`)
  for (const other of live) if (other.running.proc !== l.running.proc) other.running.proc?.pause()
  try {
    const agent = await createAgent(gateway.adminUrl, GATEWAY_ADMIN_KEY, SDK_AGENT)
    return await measureSdkOverhead({
      publicUrl: gateway.publicUrl,
      agent,
      scope: TOOL_SCOPE,
      tool: 'serpapi',
      action: 'search',
      params: JSON.parse(TOOL_BODY) as Record<string, unknown>,
      block: params.quick ? 50 : 200,
      blocks: params.quick ? 2 : 10,
    })
  } catch (err) {
    log(`  SDK overhead failed: ${(err as Error).message}`)
    return { skipped: 'failed' }
  } finally {
    for (const other of live) if (other.running.proc !== l.running.proc) other.running.proc?.resume()
  }
}

/**
 * `POST /v1/token` per second on the gateway-auth row's gateway, after every row has been
 * measured (it leaves thousands of spent jtis in that gateway's replay memory).
 */
async function measureTokenExchange(
  live: Live[],
  all: TargetSamples[],
  pinning: Pinning,
): Promise<ExchangeResult | { skipped: string }> {
  const samples = all.find((s) => s.name === EXCHANGE_ROW)
  const l = live.find((x) => x.target.name === EXCHANGE_ROW)
  const setup = l?.running.tokenExchange
  if (!samples) return { skipped: `${EXCHANGE_ROW} not in BENCH_TARGETS` }
  if (samples.skipped || !setup) return { skipped: `${EXCHANGE_ROW}: ${samples.skipped ?? 'no agent'}` }
  log(
    `token exchange: POST /v1/token, ${params.exchangeConcurrency} concurrent, ${params.exchangeDurationSec}s (assertions signed beforehand)`,
  )
  // Alone on the proxy CPU, like every other measurement (see `attempt`).
  for (const other of live) if (other.running.proc !== l?.running.proc) other.running.proc?.pause()
  try {
    return await runTokenExchange({
      setup,
      durationSec: params.exchangeDurationSec,
      concurrency: params.exchangeConcurrency,
      pinning,
    })
  } catch (err) {
    const output = l?.running.proc?.output().trim()
    log(`  token exchange failed: ${(err as Error).message}${output ? `\n${output}` : ''}`)
    return { skipped: 'failed' }
  } finally {
    for (const other of live) if (other.running.proc !== l?.running.proc) other.running.proc?.resume()
  }
}

async function shutdown(code: number): Promise<never> {
  if (!cleaningUp) {
    cleaningUp = true
    try {
      await cleanup?.()
    } catch (err) {
      process.stderr.write(`cleanup: ${(err as Error).message}\n`)
    }
  }
  process.exit(code)
}

process.on('exit', killAllNow)
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    process.stderr.write(`\n${signal}: stopping everything the benchmark started\n`)
    void shutdown(130)
  })
}

main().then(
  (code) => shutdown(code),
  (err: Error) => {
    process.stderr.write(`bench failed: ${err.stack ?? err.message}\n`)
    return shutdown(1)
  },
)
