/**
 * The TypeScript SDK's own cost per tool call, next to a raw `fetch` of the same route with the
 * same token: what an agent pays for `client.tools.call()` (token cache lookup, idempotency key,
 * body serialisation, answer parsing and checks, and with `dpop` a signed proof per call) over
 * writing the request by hand.
 *
 * Calls are made one at a time (closed loop, one connection's worth of keep-alive), in
 * alternating blocks of raw and SDK calls so drift on a shared machine lands on both. Reported:
 * median and p99 latency, and the client process's CPU time per call (process.cpuUsage, so the
 * gateway's work, in another process, is not in it). The CPU difference is the SDK's overhead;
 * the latency difference also holds the gateway's extra work for DPoP proofs.
 *
 * As a library (run.ts): `measureSdkOverhead({ publicUrl, agent, scope, tool, action, params })`
 * with an agent that a policy lets call `tool.action`. Alone:
 *
 *   node --import tsx bench/sdk-overhead.ts [CALLS_PER_BLOCK] [BLOCKS]
 *
 * starts `4runr start` (from the sources, `tools.demo` fakes inside the gateway process), creates
 * an agent allowed SerpAPI search, and prints the table.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { stringify } from 'yaml'
import { GatewayClient } from '../packages/sdk/src/index.ts'
import { startGatewayProcess } from '../test/support/process.ts'
import { quantile } from './fixed-rate.ts'
import { type BenchAgent, createAgent } from './identity.ts'

export interface SdkOverheadOptions {
  /** The gateway's public URL. */
  publicUrl: string
  /** An agent with its private key (bench/identity.ts createAgent). */
  agent: BenchAgent
  /** The token's scope; must cover `tool:action`. */
  scope: string
  tool: string
  action: string
  params: Record<string, unknown>
  /** Calls per block (default 200). */
  block?: number
  /** Blocks of each kind, alternating (default 10). */
  blocks?: number
  /** Also measure a DPoP-bound client (a signed proof per call). Default true. */
  dpop?: boolean
}

/** One kind of call: latency in µs and the client's CPU µs per call. */
export interface SeriesResult {
  calls: number
  medianUs: number
  p99Us: number
  cpuUsPerCall: number
}

export interface SdkOverheadResult {
  raw: SeriesResult
  sdk: SeriesResult
  sdkDpop: SeriesResult | undefined
  /** `sdk − raw`: median latency and CPU per call, µs. */
  overhead: { medianUs: number; cpuUsPerCall: number }
  overheadDpop: { medianUs: number; cpuUsPerCall: number } | undefined
}

type Call = () => Promise<unknown>

class Series {
  readonly latencies: number[] = []
  cpuUs = 0

  constructor(readonly call: Call) {}

  async run(n: number): Promise<void> {
    const cpu = process.cpuUsage()
    for (let i = 0; i < n; i++) {
      const started = performance.now()
      await this.call()
      this.latencies.push((performance.now() - started) * 1000)
    }
    const used = process.cpuUsage(cpu)
    this.cpuUs += used.user + used.system
  }

  result(): SeriesResult {
    const sorted = Float64Array.from(this.latencies).sort()
    return {
      calls: sorted.length,
      medianUs: quantile(sorted, 0.5),
      p99Us: quantile(sorted, 0.99),
      cpuUsPerCall: this.cpuUs / sorted.length,
    }
  }
}

const difference = (sdk: SeriesResult, raw: SeriesResult) => ({
  medianUs: sdk.medianUs - raw.medianUs,
  cpuUsPerCall: sdk.cpuUsPerCall - raw.cpuUsPerCall,
})

/** Measure raw fetch, the SDK and (optionally) the SDK with DPoP on the same tool route. */
export async function measureSdkOverhead(options: SdkOverheadOptions): Promise<SdkOverheadResult> {
  const { publicUrl, agent, scope, tool, action, params } = options
  const block = options.block ?? 200
  const blocks = options.blocks ?? 10
  const clientOptions = { baseUrl: publicUrl, agentId: agent.id, privateKey: agent.privateKeyJwk, scope }
  // No retries: a refusal must fail the measurement, not hide in it.
  const client = new GatewayClient({ ...clientOptions, retry: false })
  const token = await client.accessToken()
  const url = `${publicUrl}/v1/tools/${tool}/${action}`
  const body = JSON.stringify(params)
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' }

  const series = [
    new Series(async () => {
      const res = await fetch(url, { method: 'POST', headers, body })
      if (res.status !== 200) throw new Error(`raw fetch of ${tool}.${action}: ${res.status}`)
      return res.json()
    }),
    new Series(() => client.tools.call(tool, action, params)),
  ]
  if (options.dpop !== false) {
    const bound = new GatewayClient({ ...clientOptions, retry: false, dpop: true })
    series.push(new Series(() => bound.tools.call(tool, action, params)))
  }
  // Warm-up: JIT, keep-alive connections, the gateway's verified-token cache, each client's token.
  for (const s of series) for (let i = 0; i < Math.min(block, 100); i++) await s.call()
  for (let b = 0; b < blocks; b++) {
    // Alternating order per block, so neither kind always runs right after the other.
    const order = b % 2 === 0 ? series : [...series].reverse()
    for (const s of order) await s.run(block)
  }
  const [raw, sdk, sdkDpop] = series.map((s) => s.result()) as [SeriesResult, SeriesResult, SeriesResult?]
  return {
    raw,
    sdk,
    sdkDpop,
    overhead: difference(sdk, raw),
    overheadDpop: sdkDpop === undefined ? undefined : difference(sdkDpop, raw),
  }
}

/** The result as a small table, microseconds. */
export function formatSdkOverhead(result: SdkOverheadResult): string {
  const us = (n: number) => n.toFixed(0).padStart(8)
  const row = (name: string, s: SeriesResult) =>
    `${name.padEnd(16)}${us(s.medianUs)}${us(s.p99Us)}${us(s.cpuUsPerCall)}${String(s.calls).padStart(8)}`
  const lines = [
    `${'client'.padEnd(16)}${'p50 µs'.padStart(8)}${'p99 µs'.padStart(8)}${'cpu µs'.padStart(8)}${'calls'.padStart(8)}`,
    row('raw fetch', result.raw),
    row('sdk', result.sdk),
  ]
  if (result.sdkDpop !== undefined) lines.push(row('sdk + dpop', result.sdkDpop))
  lines.push(
    `sdk overhead: ${result.overhead.cpuUsPerCall.toFixed(0)} µs CPU, ${result.overhead.medianUs.toFixed(0)} µs p50 per call`,
  )
  if (result.overheadDpop !== undefined) {
    lines.push(
      `sdk + dpop overhead: ${result.overheadDpop.cpuUsPerCall.toFixed(0)} µs CPU, ${result.overheadDpop.medianUs.toFixed(0)} µs p50 per call`,
    )
  }
  return lines.join('\n')
}

const adminKey = 'sdk-bench-admin-key-0123456789'

async function main(): Promise<void> {
  const block = Number(process.argv[2] ?? 200)
  const blocks = Number(process.argv[3] ?? 10)
  const dir = await mkdtemp(join(tmpdir(), 'runr-sdk-bench-'))
  const config = {
    gateway: {
      logLevel: 'warn',
      listen: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0 },
    },
    store: { kind: 'sqlite', path: join(dir, '4runr.db') },
    tools: { demo: true },
    policies: [
      {
        name: 'sdk-bench',
        agents: { names: ['sdk-bench'] },
        allow: [{ tool: 'serpapi', actions: ['search'] }],
      },
    ],
  }
  await writeFile(join(dir, '4runr.yaml'), stringify(config))
  const gateway = await startGatewayProcess(join(dir, '4runr.yaml'), { RUNR_ADMIN_KEY: adminKey }, dir)
  try {
    const agent = await createAgent(gateway.adminUrl, adminKey, 'sdk-bench')
    const result = await measureSdkOverhead({
      publicUrl: gateway.publicUrl,
      agent,
      scope: 'serpapi:search',
      tool: 'serpapi',
      action: 'search',
      params: { q: 'bench', num: 5 },
      block,
      blocks,
    })
    console.log(formatSdkOverhead(result))
  } finally {
    gateway.child.kill('SIGTERM')
    await gateway.exited
    await rm(dir, { recursive: true, force: true })
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    console.error(err)
    process.exit(1)
  })
}
