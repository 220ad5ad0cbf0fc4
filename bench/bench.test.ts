/**
 * The benchmark's own tests: the wrk output parser on real wrk output, the rows / table /
 * acceptance computation, the generated configs (the policy set decided in process), how each
 * load generator sends a row's method, headers and body (to a recording server, a few requests
 * each), and smoke tests that the upstream and the bare-Node proxy start as child processes and
 * pass a request through, and that the gateway-auth and tool rows start with working tokens that
 * their load generators send. No load to speak of is generated (a few hundred requests).
 */
import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { compileConfig } from '../packages/server/src/config/compile.ts'
import { parseConfigText } from '../packages/server/src/config/load.ts'
import { type AgentFacts, type DecisionInput, PolicySet } from '../packages/server/src/policy/policy-set.ts'
import { headersFromEnv, requestFromEnv } from './fixed-rate.ts'
import {
  BODY_ENV,
  type ExchangeResult,
  HEADERS_ENV,
  luaString,
  METHOD_ENV,
  parseWrk,
  requestEnv,
  requestOf,
  runFixedRate,
  runTokenExchange,
  runWrk,
  wrkDurationMs,
  wrkScript,
} from './load.ts'
import {
  freePort,
  hasCommand,
  httpGet,
  type Pinning,
  type Proc,
  parseCpuList,
  startProcess,
  statCpuTicks,
  stopAll,
  waitForHttp,
} from './proc.ts'
import {
  acceptanceChecks,
  buildRows,
  formatCheck,
  formatExchange,
  formatTable,
  median,
  pairedToolPolicyCheck,
  type TargetSamples,
  tableCells,
  toolChecks,
} from './report.ts'
import {
  type BenchContext,
  describeRequest,
  GATEWAY_CLI,
  GENERATED_POLICIES,
  gatewayAuth,
  gatewayConfig,
  nginxConfig,
  OPENAI_AGENT,
  OPENAI_BODY,
  OPENAI_PATH,
  openaiPassthrough,
  POLICY_AGENT,
  POLICY_AGENT_LABELS,
  POLICY_INTENT,
  policiesSelecting,
  type Running,
  startUpstream,
  TARGETS,
  TOOL_AGENT,
  TOOL_BODY,
  TOOL_PATH,
  tool,
  toolPolicy,
} from './targets.ts'
import { presignCount } from './token-exchange.ts'
import { BODY } from './upstream.ts'

// Captured from `wrk -t1 -c50 -d3s --latency` against bench/upstream.ts (node:http) on CPU 1.
const WRK_MS = `Running 3s test @ http://127.0.0.1:18999/bench/hello
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.61ms    2.93ms  76.47ms   98.15%
    Req/Sec    37.31k     9.98k   54.66k    73.33%
  Latency Distribution
     50%    1.23ms
     75%    1.67ms
     90%    2.08ms
     99%    7.08ms
  111086 requests in 3.00s, 26.48MB read
Requests/sec:  37017.55
Transfer/sec:      8.83MB
`

// Captured from `wrk -t1 -c10 -d2s --latency` against the raw upstream: microsecond units.
const WRK_US = `Running 2s test @ http://127.0.0.1:18999/bench/hello
  1 threads and 10 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   132.51us  292.06us   5.60ms   97.10%
    Req/Sec   105.03k    21.21k  121.14k    95.00%
  Latency Distribution
     50%   71.00us
     75%  105.00us
     90%  157.00us
     99%    1.67ms
  208177 requests in 2.00s, 38.91MB read
Requests/sec: 104071.85
Transfer/sec:     19.45MB
`

// Captured from wrk against a server answering every third request 404 and resetting some.
const WRK_ERRORS = `Running 1s test @ http://127.0.0.1:18996/
  1 threads and 20 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   741.28us    1.97ms  35.59ms   96.67%
    Req/Sec    44.77k    16.41k   57.81k    81.82%
  Latency Distribution
     50%  350.00us
     75%  504.00us
     90%    1.08ms
     99%    8.96ms
  48861 requests in 1.10s, 5.89MB read
  Socket errors: connect 0, read 97, write 0, timeout 0
  Non-2xx or 3xx responses: 16287
Requests/sec:  44426.89
Transfer/sec:      5.35MB
`

describe('wrk output', () => {
  it('converts wrk durations to milliseconds', () => {
    assert.equal(wrkDurationMs('812.00us'), 0.812)
    assert.equal(wrkDurationMs('1.23ms'), 1.23)
    assert.equal(wrkDurationMs('2.00s'), 2000)
    assert.equal(wrkDurationMs('1.50m'), 90_000)
    assert.throws(() => wrkDurationMs('fast'), /not a wrk duration/)
  })

  it('parses requests/sec and the 50%/99% latency (ms units)', () => {
    assert.deepEqual(parseWrk(WRK_MS), {
      rps: 37017.55,
      p50: 1.23,
      p99: 7.08,
      requests: 111086,
      non2xx: 0,
      errors: 0,
    })
  })

  it('parses microsecond latencies', () => {
    const r = parseWrk(WRK_US)
    assert.equal(r.rps, 104071.85)
    assert.equal(r.p50, 0.071)
    assert.equal(r.p99, 1.67)
  })

  it('counts non-2xx responses and socket errors', () => {
    const r = parseWrk(WRK_ERRORS)
    assert.equal(r.non2xx, 16287)
    assert.equal(r.errors, 97)
    assert.equal(r.p50, 0.35)
  })

  it('refuses output without results', () => {
    assert.throws(() => parseWrk('unable to connect to 127.0.0.1:1 Connection refused\n'), /could not parse/)
  })
})

const run = (rps: number, p50: number, p99: number) => ({ rps, p50, p99, requests: 0, non2xx: 0, errors: 0 })

describe('rows and table', () => {
  it('takes medians', () => {
    assert.equal(median([]), null)
    assert.equal(median([3, 1, 2]), 2)
    assert.equal(median([4, 1, 3, 2]), 2.5)
  })

  const samples: TargetSamples[] = [
    {
      name: 'direct',
      throughput: [run(60_000, 0.8, 1.5), run(62_000, 0.8, 1.4), run(58_000, 0.9, 1.6)],
      fixedRate: [run(2000, 0.1, 0.3), run(2000, 0.1, 0.5), run(2000, 0.1, 0.4)],
    },
    {
      name: 'nginx',
      throughput: [parseWrk(WRK_MS), run(50_000, 1, 2), run(55_000, 0.9, 1.8)],
      fixedRate: [run(2000, 0.2, 0.6), run(2000, 0.2, 0.5), run(2000, 0.2, 0.7)],
    },
    {
      name: 'bare-node',
      throughput: [run(18_000, 2.7, 4), run(19_000, 2.6, 3.9), run(20_000, 2.5, 3.5)],
      fixedRate: [run(2000, 0.3, 0.9), run(2000, 0.3, 1.1), run(2000, 0.3, 1)],
    },
    {
      name: 'gateway',
      throughput: [run(15_000, 3.3, 5), run(16_000, 3.1, 4.5), run(14_000, 3.5, 6)],
      fixedRate: [run(2000, 0.4, 1.4), run(2000, 0.4, 1.9), run(2000, 0.4, 1.6)],
    },
  ]

  it('computes medians, the ratio to nginx and the p99 difference', () => {
    const rows = buildRows(samples)
    const nginx = rows.find((r) => r.name === 'nginx')!
    const gateway = rows.find((r) => r.name === 'gateway')!
    assert.equal(nginx.rps, 50_000)
    assert.equal(nginx.p99, 2)
    assert.equal(nginx.ratio, 1)
    assert.equal(gateway.rps, 15_000)
    assert.equal(gateway.p50, 3.3)
    assert.equal(gateway.ratio, 0.3)
    assert.equal(gateway.fixedP99, 1.6)
    assert.ok(Math.abs(gateway.fixedP99MinusRef! - 1.0) < 1e-9)
    assert.equal(rows.find((r) => r.name === 'bare-node')!.ratio, 0.38)
  })

  it('prints the table', () => {
    const table = formatTable(buildRows(samples))
    const lines = table.split('\n')
    assert.equal(lines.length, 6)
    assert.match(lines[0]!, /^\| target +\| +RPS \| p50 ms \| p99 ms \| ratio to nginx \(RPS\) \|/)
    assert.match(lines[0]!, /fixed-rate p50 \| fixed-rate p99 \| p99 minus nginx p99 \| CPU µs\/req \|$/)
    assert.deepEqual(tableCells(buildRows(samples))[3], [
      'gateway',
      '15,000',
      '3.30',
      '5.00',
      '0.30×',
      '0.40',
      '1.60',
      '+1.00',
      '–',
    ])
    const withCpu = samples.map((s) =>
      s.name === 'gateway'
        ? { ...s, throughput: s.throughput.map((r, i) => ({ ...r, cpuUsPerRequest: [70, 64.4, 90][i]! })) }
        : s,
    )
    assert.equal(buildRows(withCpu)[3]!.cpuUsPerRequest, 70)
    assert.equal(tableCells(buildRows(withCpu))[3]!.at(-1), '70')
    // Every line is as wide as the header.
    for (const line of lines) assert.equal(line.length, lines[0]!.length)
  })

  it('checks the acceptance thresholds (inclusive)', () => {
    const checks = acceptanceChecks(buildRows(samples))
    assert.deepEqual(
      checks.map((c) => c.pass),
      [true, true, null],
    )
    assert.equal(formatCheck(checks[0]!), 'PASS  gateway RPS ≥ 30% of nginx: 30.00% (15,000 vs 50,000)')
    const slower = samples.map((s) =>
      s.name === 'gateway' ? { ...s, throughput: [run(10_000, 5, 8)], fixedRate: [run(2000, 0.5, 2.5)] } : s,
    )
    assert.deepEqual(
      acceptanceChecks(buildRows(slower)).map((c) => c.pass),
      [false, false, null],
    )
  })

  const withAuth = (rps: number, extra: Partial<TargetSamples> = {}): TargetSamples[] => [
    ...samples,
    {
      name: 'gateway-auth',
      throughput: [run(rps, 3.4, 5.2), run(rps + 500, 3.3, 5), run(rps - 500, 3.5, 5.5)],
      fixedRate: [run(2000, 0.4, 1.5), run(2000, 0.4, 1.9), run(2000, 0.4, 1.7)],
      ...extra,
    },
  ]

  it('checks gateway-auth RPS against the gateway at 90% (inclusive)', () => {
    const at90 = acceptanceChecks(buildRows(withAuth(13_500)))
    assert.equal(at90.length, 3)
    assert.equal(at90[2]!.pass, true)
    assert.equal(formatCheck(at90[2]!), 'PASS  gateway-auth RPS ≥ 90% of gateway: 90.00% (13,500 vs 15,000)')
    const below = acceptanceChecks(buildRows(withAuth(13_400)))[2]!
    assert.equal(below.pass, false)
    assert.equal(formatCheck(below), 'FAIL  gateway-auth RPS ≥ 90% of gateway: 89.33% (13,400 vs 15,000)')
    // The nginx checks are about the gateway row only.
    assert.deepEqual(
      acceptanceChecks(buildRows(withAuth(13_400)))
        .slice(0, 2)
        .map((c) => c.pass),
      [true, true],
    )
  })

  it('fails gateway-auth when any of its requests was refused, however fast', () => {
    const refused = withAuth(40_000, {
      throughput: [{ ...run(40_000, 1, 2), non2xx: 120_000 }],
      fixedRate: [run(2000, 0.3, 1)],
    })
    const check = acceptanceChecks(buildRows(refused))[2]!
    assert.equal(check.pass, false)
    assert.match(formatCheck(check), /^FAIL .*266\.67% .*120,000 non-2xx answers and 0 errors/)
    assert.match(formatTable(buildRows(refused)), /\| gateway-auth \(120000 non-2xx, 0 errors\) /)
  })

  it('skips the gateway-auth check when either row did not run', () => {
    const notBuilt = withAuth(14_000, { skipped: 'not built (npm run build)', throughput: [], fixedRate: [] })
    assert.match(
      formatCheck(acceptanceChecks(buildRows(notBuilt))[2]!),
      /^SKIP {2}gateway-auth RPS ≥ 90% of gateway: gateway-auth: not built/,
    )
    assert.match(
      formatCheck(acceptanceChecks(buildRows(samples))[2]!),
      /^SKIP {2}gateway-auth RPS ≥ 90% of gateway: gateway-auth: no row$/,
    )
    const noGateway = buildRows(withAuth(14_000).filter((s) => s.name !== 'gateway'))
    assert.match(formatCheck(acceptanceChecks(noGateway)[2]!), /^SKIP .*: gateway: no row$/)
  })

  it('shows a target that did not run, and skips the checks that need it', () => {
    const rows = buildRows(
      samples.map((s) =>
        s.name === 'gateway'
          ? { ...s, skipped: 'not built (npm run build)', throughput: [], fixedRate: [] }
          : s,
      ),
    )
    const gateway = rows.find((r) => r.name === 'gateway')!
    assert.equal(gateway.rps, null)
    assert.equal(gateway.ratio, null)
    assert.match(formatTable(rows), /\| gateway +\| not built \(npm run build\) \|/)
    const checks = acceptanceChecks(rows)
    assert.deepEqual(
      checks.map((c) => c.pass),
      [null, null, null],
    )
    assert.match(formatCheck(checks[0]!), /^SKIP .*gateway: not built/)
  })

  it('has no ratios without an nginx row', () => {
    const rows = buildRows(samples.filter((s) => s.name !== 'nginx'))
    assert.equal(rows[0]!.ratio, null)
    assert.equal(acceptanceChecks(rows)[0]!.pass, null)
  })
})

describe('token exchange report', () => {
  const result: ExchangeResult = {
    durationSec: 5,
    concurrency: 16,
    elapsedSec: 5.01,
    rps: 1234.4,
    p50: 12.345,
    p99: 30.1,
    ok: 6184,
    non200: {},
    errors: 0,
    errorKinds: {},
    perSecond: [1200, 1250, 1240, 1244, 1250],
    presigned: 9000,
    signSec: 0.8,
    exhausted: false,
    warmup: { ok: 800, non200: {}, errors: 0, errorKinds: {}, rps: 900 },
  }

  it('prints the rate and latencies on one line', () => {
    assert.equal(
      formatExchange(result),
      'token exchange: 1,234/s (p50 12.35 ms, p99 30.10 ms)  [6,184 tokens in 5.01 s, 16 concurrent]',
    )
  })

  it('shows every answer that was not a 200, warm-up included, and running out of assertions', () => {
    const text = formatExchange({
      ...result,
      non200: { '400 invalid_grant/replayed_jti': 3, '503 not_ready': 7 },
      errors: 2,
      errorKinds: { ECONNRESET: 2 },
      exhausted: true,
      warmup: { ...result.warmup, non200: { '400 invalid_grant/expired': 1 } },
    })
    const lines = text.split('\n')
    assert.match(lines[0]!, /^token exchange: 1,234\/s/)
    assert.deepEqual(lines.slice(1), [
      '  10 non-200: 503 not_ready ×7, 400 invalid_grant/replayed_jti ×3',
      '  2 errors: ECONNRESET ×2',
      '  warm-up: 1 non-200: 400 invalid_grant/expired ×1',
      '  ran out of the 9,000 pre-signed assertions before 5 s',
    ])
  })

  it('signs enough assertions for three times the warm-up rate', () => {
    assert.equal(presignCount(1000, 5, 16), 15_064)
    // A slow or failed warm-up still signs for 100/s.
    assert.equal(presignCount(0, 2, 10), 640)
    assert.equal(presignCount(1e9, 5, 16), 200_000)
  })
})

describe('targets and configs', () => {
  it('lists the rows in report order with unique names', () => {
    assert.deepEqual(
      TARGETS.map((t) => t.name),
      [
        'direct',
        'nginx',
        'bare-node',
        'gateway',
        'gateway-auth',
        'tool',
        'tool-policy',
        'openai-passthrough',
        'tool-audit-off',
      ],
    )
  })

  it('passes request headers to wrk as a Lua script (never on its command line) and to fixed-rate.ts as JSON', () => {
    assert.equal(
      wrkScript({ headers: { authorization: 'Bearer abc' } }),
      'wrk.headers["authorization"] = "Bearer abc"',
    )
    assert.equal(wrkScript({}), '')
    assert.equal(wrkScript({ headers: {} }), '')
    assert.deepEqual(headersFromEnv(undefined), {})
    assert.deepEqual(headersFromEnv('{"Authorization":"Bearer abc"}'), { authorization: 'Bearer abc' })
    // A malformed value is a mistake to report, but never to echo: it may hold a token.
    assert.throws(
      () => headersFromEnv('{"authorization":"Bearer secret"'),
      (err: Error) => /not JSON/.test(err.message) && !err.message.includes('secret'),
    )
    assert.throws(() => headersFromEnv('{"authorization":42}'), /not a string/)
  })

  it('writes an nginx config with one worker and upstream keep-alive', () => {
    const conf = nginxConfig('/tmp/x', 8000, 9000)
    for (const line of [
      'worker_processes 1;',
      'daemon off;',
      'pid /tmp/x/nginx.pid;',
      'access_log off;',
      'server 127.0.0.1:9000;',
      'keepalive 64;',
      'listen 127.0.0.1:8000;',
      'proxy_http_version 1.1;',
      'proxy_set_header Connection "";',
    ]) {
      assert.ok(conf.includes(line), line)
    }
  })

  it('writes one gateway config with the public /bench channel and /bench-auth behind a token', () => {
    const yaml = gatewayConfig({ port: 8000, adminPort: 8001, upstreamPort: 9000, tmpDir: '/tmp/x' })
    assert.match(yaml, /listen: \{ host: 127\.0\.0\.1, port: 8000 \}/)
    assert.match(yaml, /admin: \{ host: 127\.0\.0\.1, port: 8001 \}/)
    assert.match(yaml, /store: \{ kind: sqlite, path: "\/tmp\/x\/4runr\.db" \}/)
    assert.match(yaml, /url: "http:\/\/127\.0\.0\.1:9000"/)
    assert.match(
      yaml,
      /name: bench, prefix: \/bench, system: up, rules: \[ \{ path: "\*", public: true \} \]/,
    )
    assert.match(yaml, /name: bench-auth, prefix: \/bench-auth, system: up, rules: \[ \{ path: "\*" \} \]/)
    assert.match(yaml, /^tokens: \{ ttl: 1h, maxTtl: 1h \}$/m)
  })

  it('expands CPU lists', () => {
    assert.deepEqual(parseCpuList('0-3,6\n'), [0, 1, 2, 3, 6])
    assert.deepEqual(parseCpuList('1'), [1])
  })
})

describe('tool route checks', () => {
  const rowSamples = (name: string, rps: number, extra: Partial<TargetSamples> = {}): TargetSamples => ({
    name,
    throughput: [run(rps, 3, 5), run(rps + 100, 3, 5), run(rps - 100, 3, 5)],
    fixedRate: [run(2000, 0.5, 1.5)],
    ...extra,
  })
  const gatewayRows = (tool: number, toolPolicy: number, passthrough: number, extra: TargetSamples[] = []) =>
    buildRows([
      rowSamples('nginx', 50_000),
      rowSamples('gateway', 16_000),
      rowSamples('gateway-auth', 15_000),
      rowSamples('tool', tool),
      rowSamples('tool-policy', toolPolicy),
      rowSamples('openai-passthrough', passthrough),
      ...extra,
    ])

  it('compares tool-policy to tool at 95%, and tool (60%) and the passthrough (75%) to gateway-auth, inclusive', () => {
    const checks = toolChecks(gatewayRows(9_000, 8_550, 11_250))
    assert.deepEqual(checks.map(formatCheck), [
      'PASS  tool-policy RPS ≥ 95% of tool (realistic policy set: 1,000 policies, label selector, intent, CEL guard, vs one allow rule naming the agent): 95.00% (8,550 vs 9,000)',
      'PASS  tool RPS ≥ 60% of gateway-auth (the token-protected channel route): 60.00% (9,000 vs 15,000); 56.25% of gateway (public channel route, 16,000)',
      'PASS  openai-passthrough RPS ≥ 75% of gateway-auth (the token-protected channel route): 75.00% (11,250 vs 15,000); 70.31% of gateway (public channel route, 16,000)',
    ])
    assert.deepEqual(
      toolChecks(gatewayRows(8_990, 8_540, 11_240)).map((c) => c.pass),
      [false, false, false],
    )
  })

  it('judges tool-policy against tool on the median of alternating pairs, keeping the rounds for comparison', () => {
    const [fromRounds] = toolChecks(gatewayRows(9_000, 8_000, 11_250))
    assert.equal(fromRounds!.pass, false)
    const odd = pairedToolPolicyCheck([0.97, 0.9, 1.02], fromRounds!)
    assert.equal(odd.pass, true)
    assert.match(odd.name, /median of 3 alternating pairs/)
    assert.match(odd.detail, /^97\.0% \(pairs 90\.0%, 97\.0%, 102\.0%\); rounds: 88\.89%/)
    assert.equal(
      pairedToolPolicyCheck([0.93, 0.96], fromRounds!).pass,
      false,
      'even count: the mean of the middle two, 94.5%',
    )
    assert.equal(pairedToolPolicyCheck([0.94, 0.96], fromRounds!).pass, true, '95.0% is inclusive')
    assert.equal(pairedToolPolicyCheck([], fromRounds!), fromRounds, 'without pairs, the rounds decide')
  })

  it('adds the same comparison by CPU time per request when it was measured', () => {
    const cpu = (name: string, rps: number, us: number) =>
      rowSamples(name, rps, { throughput: [{ ...run(rps, 3, 5), cpuUsPerRequest: us }] })
    const [policy] = toolChecks(buildRows([cpu('tool', 9_000, 200), cpu('tool-policy', 8_000, 210)]))
    assert.equal(policy!.pass, false, 'the verdict stays on throughput')
    assert.match(
      formatCheck(policy!),
      /: 88\.89% \(8,000 vs 9,000\); by CPU per request 95\.24% \(210 vs 200 µs\)$/,
    )
  })

  it('fails a tool row whose requests were refused under load, however fast', () => {
    const rows = buildRows([
      rowSamples('gateway-auth', 15_000),
      rowSamples('tool', 9_000),
      rowSamples('tool-policy', 20_000, { throughput: [{ ...run(20_000, 1, 2), non2xx: 60_000 }] }),
    ])
    const [policy] = toolChecks(rows)
    assert.equal(policy!.pass, false)
    assert.match(formatCheck(policy!), /^FAIL .*222\.22% .*60,000 non-2xx answers and 0 errors$/)
  })

  it('skips with the reason when a row did not run, and leaves out the public ratio without a gateway row', () => {
    const rows = buildRows([
      rowSamples('gateway-auth', 15_000),
      rowSamples('tool', 9_000),
      { name: 'tool-policy', skipped: 'failed to start', throughput: [], fixedRate: [] },
    ])
    const [policy, toolCheck, passthrough] = toolChecks(rows)
    assert.match(
      formatCheck(policy!),
      /^SKIP {2}tool-policy RPS ≥ 95% of tool .*: tool-policy: failed to start$/,
    )
    assert.equal(formatCheck(toolCheck!).endsWith(': 60.00% (9,000 vs 15,000)'), true)
    assert.match(formatCheck(passthrough!), /: openai-passthrough: no row$/)
  })
})

/** A server that records each request's method, path, headers and body, and answers 200 `{}`. */
async function recordingServer(): Promise<{
  url: string
  seen: { method: string; url: string; headers: IncomingMessage['headers']; body: string }[]
  server: Server
}> {
  const seen: { method: string; url: string; headers: IncomingMessage['headers']; body: string }[] = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      seen.push({
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString(),
      })
      // Slow answers keep wrk's one connection to a handful of requests a second.
      setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'), 100)
    })
  })
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res))
  const address = server.address()
  const port = typeof address === 'object' && address ? address.port : 0
  return { url: `http://127.0.0.1:${port}`, seen, server }
}

describe('the request a row sends', () => {
  const body = '{"q":"bench","num":5}'
  const token = 'Bearer secret-token-value'

  it('defaults to GET, to POST with a body, and to a JSON content-type for a body', () => {
    assert.deepEqual(requestOf({}), { method: 'GET', headers: {} })
    assert.deepEqual(requestOf({ body, headers: { Authorization: token } }), {
      method: 'POST',
      headers: { authorization: token, 'content-type': 'application/json' },
      body,
    })
    assert.deepEqual(requestOf({ method: 'PUT', body: 'a=1', headers: { 'Content-Type': 'text/plain' } }), {
      method: 'PUT',
      headers: { 'content-type': 'text/plain' },
      body: 'a=1',
    })
    assert.throws(() => requestOf({ method: 'GET', body }), /a GET request cannot carry a body/)
    assert.throws(
      () => requestOf({ method: 'post', headers: { authorization: token } }),
      (err: Error) => /not an HTTP method/.test(err.message) && !err.message.includes('secret'),
    )
  })

  it('writes the method, body and headers into the wrk script as Lua strings', () => {
    assert.equal(
      wrkScript({ method: 'POST', body, headers: { authorization: 'Bearer abc' } }),
      [
        'wrk.method = "POST"',
        'wrk.body = "{\\034q\\034:\\034bench\\034,\\034num\\034:5}"',
        'wrk.headers["authorization"] = "Bearer abc"',
        'wrk.headers["content-type"] = "application/json"',
      ].join('\n'),
    )
    // Backslashes, newlines and non-ASCII bytes as three-digit decimal escapes (Lua has no \u).
    assert.equal(luaString('a\\b\n"é1'), '"a\\092b\\010\\034\\195\\1691"')
  })

  it('hands the request to fixed-rate.ts in its environment and reads it back', () => {
    const env = requestEnv({ body, headers: { authorization: token } })
    assert.deepEqual(Object.keys(env).sort(), [BODY_ENV, HEADERS_ENV, METHOD_ENV].sort())
    assert.deepEqual(requestFromEnv(env), requestOf({ body, headers: { authorization: token } }))
    assert.deepEqual(requestFromEnv({}), { method: 'GET', headers: {} })
    assert.deepEqual(requestEnv({}), { [METHOD_ENV]: 'GET' })
  })

  it('describes a row by method, URL, body size and header names, never their values', () => {
    const line = describeRequest({
      url: 'http://127.0.0.1:1/v1/tools/serpapi/search',
      method: 'POST',
      body,
      headers: { authorization: token },
    })
    assert.equal(
      line,
      'POST http://127.0.0.1:1/v1/tools/serpapi/search (21-byte body, with authorization on every request)',
    )
    assert.equal(
      describeRequest({ url: 'http://127.0.0.1:1/bench/hello' }),
      'GET http://127.0.0.1:1/bench/hello',
    )
  })

  const pinning: Pinning = { enabled: false, reason: 'test' }
  const expectPosts = (seen: Awaited<ReturnType<typeof recordingServer>>['seen']) => {
    assert.ok(seen.length > 0)
    for (const r of seen) {
      assert.equal(r.method, 'POST')
      assert.equal(r.url, '/v1/tools/serpapi/search')
      assert.equal(r.headers['content-type'], 'application/json')
      assert.equal(r.headers['content-length'], String(body.length))
      assert.equal(r.headers['authorization'], token)
      assert.equal(r.body, body)
    }
  }

  for (const rateTool of ['paced', 'autocannon'] as const) {
    it(`the ${rateTool} generator sends the method, headers and body of every request`, async () => {
      const { url, seen, server } = await recordingServer()
      try {
        const r = await runFixedRate({
          url: `${url}/v1/tools/serpapi/search`,
          method: 'POST',
          body,
          headers: { authorization: token },
          durationSec: 1,
          connections: 4,
          pinning,
          rate: 20,
          tool: rateTool,
        })
        assert.equal(r.non2xx + r.errors, 0)
        assert.ok(r.requests > 0)
        expectPosts(seen)
        assert.equal(JSON.stringify(r).includes('secret-token-value'), false)
      } finally {
        server.close()
      }
    })
  }

  it('wrk sends the method, headers and body of every request', {
    skip: hasCommand('wrk') ? false : 'wrk not installed (bench/setup)',
  }, async () => {
    const { url, seen, server } = await recordingServer()
    try {
      const r = await runWrk({
        url: `${url}/v1/tools/serpapi/search`,
        method: 'POST',
        body,
        headers: { authorization: token },
        durationSec: 1,
        connections: 1,
        pinning,
      })
      assert.equal(r.non2xx + r.errors, 0)
      assert.ok(r.requests > 0 && r.requests < 50, `${r.requests} requests`)
      expectPosts(seen)
    } finally {
      server.closeAllConnections()
      server.close()
    }
  })
})

describe('the bench gateway config', () => {
  const yaml = gatewayConfig({ port: 8000, adminPort: 8001, upstreamPort: 9000, tmpDir: '/tmp/x' })
  // Through the same path as `4runr config check`: parsed, validated, compiled.
  const config = compileConfig(parseConfigText(yaml), yaml)
  const set = new PolicySet(config.policies, 'test')
  const decide = (
    agent: AgentFacts,
    intent: string | undefined,
    args: unknown,
    tool = 'serpapi',
    action = 'search',
  ) =>
    set.decide({
      agent,
      scope: `${tool}:${action}`,
      intent,
      target: { kind: 'tool', tool, action },
      args,
      request: { method: 'POST', path: `/v1/tools/${tool}/${action}`, bytes: 21, ip: '127.0.0.1' },
      now: Date.now(),
    } satisfies DecisionInput)
  const agent = (name: string, labels: Record<string, string> = {}): AgentFacts => ({
    id: `agt_${name}`,
    name,
    labels,
    roles: [],
  })

  it('differs for the tool-audit-off process only by the audit ledger being off, and its own store', () => {
    const offYaml = gatewayConfig({
      port: 8000,
      adminPort: 8001,
      upstreamPort: 9000,
      tmpDir: '/tmp/x',
      audit: false,
    })
    const off = compileConfig(parseConfigText(offYaml), offYaml)
    assert.equal(config.raw.audit?.enabled, undefined)
    assert.equal(off.raw.audit?.enabled, false)
    assert.notEqual(JSON.stringify(off.raw.store), JSON.stringify(config.raw.store))
    const { audit: _audit, store: _store, ...rest } = off.raw
    const { audit: _a, store: _s, ...same } = config.raw
    assert.deepEqual(rest, same)
  })

  it('points the SerpAPI and OpenAI tools at the bench upstream', () => {
    const tools = config.raw.tools as Record<string, { url?: string }>
    assert.equal(tools['serpapi']?.url, 'http://127.0.0.1:9000')
    assert.equal(tools['openai']?.url, 'http://127.0.0.1:9000')
  })

  it('holds the rows’ four policies and 1,000 generated ones, four of which select the tool-policy agent by labels', () => {
    assert.equal(GENERATED_POLICIES, 1000)
    assert.equal(config.policies.length, 4 + GENERATED_POLICIES)
    assert.deepEqual(
      config.policies.slice(0, 4).map((p) => p.name),
      ['bench', 'bench-tool', 'bench-openai', 'bench-sdk'],
    )
    assert.deepEqual(policiesSelecting(POLICY_AGENT_LABELS), [7, 307, 607, 907])
    const generated = (config.raw.policies ?? [])[4 + 7]
    assert.deepEqual(generated?.agents, { labels: { team: 'team-7', tier: 't1' } })
    assert.equal(generated?.allow?.length, 3)
    assert.equal(generated?.deny?.length, 1)
  })

  it('lets the tool agent search by one rule naming it, and the OpenAI agent chat', () => {
    const byName = decide(agent(TOOL_AGENT), undefined, JSON.parse(TOOL_BODY))
    assert.equal(byName.decision, 'allow')
    assert.equal(byName.rule, 'bench-tool/search')
    const chat = decide(agent(OPENAI_AGENT), undefined, JSON.parse(OPENAI_BODY), 'openai', 'chat')
    assert.equal(chat.decision, 'allow')
    assert.equal(chat.rule, 'bench-openai/chat')
    assert.equal(decide(agent(TOOL_AGENT), undefined, {}, 'openai', 'chat').decision, 'deny')
  })

  it('decides the tool-policy agent’s call by a generated policy: labels, the research intent and the CEL guard', () => {
    const labelled = agent(POLICY_AGENT, { ...POLICY_AGENT_LABELS })
    const allowed = decide(labelled, POLICY_INTENT, JSON.parse(TOOL_BODY))
    assert.equal(allowed.decision, 'allow')
    assert.equal(allowed.rule, 'bench-gen-0007/search')
    assert.equal(decide(labelled, POLICY_INTENT, { q: 'bench', num: 50 }).decision, 'deny')
    assert.equal(decide(labelled, undefined, JSON.parse(TOOL_BODY)).decision, 'deny')
    const mail = decide(labelled, undefined, { to: 'ceo@competitor.example' }, 'gmail', 'send')
    assert.equal(mail.decision, 'deny')
    assert.equal(mail.rule, 'bench-gen-0007/competitor-mail')
    // The same name without the labels is selected by no policy that grants SerpAPI.
    assert.equal(decide(agent(POLICY_AGENT), POLICY_INTENT, JSON.parse(TOOL_BODY)).decision, 'deny')
  })
})

describe('CPU time of a target', () => {
  it('reads user + system ticks of a /proc stat line in the process group, whatever its command name', () => {
    // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime …
    const line = '4242 (we ird) (name)) S 1 4000 4000 0 -1 4194560 10 0 0 0 150 25 0 0 20 0 1 0 99 0 0'
    assert.equal(statCpuTicks(line, 4000), 175)
    assert.equal(statCpuTicks(line, 4001), null)
  })

  it('counts the CPU seconds a busy process group uses while it lives', async () => {
    // Busy for 300 ms, then idle and alive: a process that exits takes its time with it.
    const proc = startProcess('busy', [
      process.execPath,
      '-e',
      'const end = Date.now() + 300; while (Date.now() < end); setInterval(() => {}, 1000)',
    ])
    try {
      const t0 = proc.cpuSeconds()
      assert.notEqual(t0, null)
      await new Promise((r) => setTimeout(r, 700))
      const used = (proc.cpuSeconds() ?? 0) - (t0 ?? 0)
      assert.ok(used >= 0.15 && used < 1.5, `${used} s`)
    } finally {
      await proc.stop()
    }
  })
})

describe('isolating the measured target', () => {
  it('pauses a process group so it runs nothing, and resumes it', async () => {
    const proc = startProcess('ticker', [
      process.execPath,
      '-e',
      'setInterval(() => process.stdout.write("x"), 5)',
    ])
    try {
      const ticks = () => proc.output().length
      for (let i = 0; i < 100 && ticks() < 3; i++) await new Promise((r) => setTimeout(r, 20))
      proc.pause()
      await new Promise((r) => setTimeout(r, 50))
      const paused = ticks()
      await new Promise((r) => setTimeout(r, 200))
      assert.equal(ticks(), paused, 'no output while paused')
      proc.resume()
      for (let i = 0; i < 100 && ticks() === paused; i++) await new Promise((r) => setTimeout(r, 20))
      assert.ok(ticks() > paused, 'output again once resumed')
      proc.pause()
    } finally {
      // stop() resumes a paused group first, so SIGTERM is not held.
      await proc.stop(2000)
    }
    assert.notEqual(await proc.exited, undefined)
  })
})

describe('smoke: upstream and bare proxy', () => {
  after(() => stopAll())

  const tsNode = (file: string, ...args: string[]) => [
    process.execPath,
    '--import',
    'tsx',
    `bench/${file}`,
    ...args,
  ]

  for (const kind of ['raw', 'http'] as const) {
    it(`passes a request through the bare proxy to the ${kind} upstream`, async () => {
      const upPort = await freePort()
      const proxyPort = await freePort()
      const procs: Proc[] = [startProcess(`upstream-${kind}`, tsNode('upstream.ts', String(upPort), kind))]
      try {
        await waitForHttp(`http://127.0.0.1:${upPort}/`, 20_000, procs[0])
        procs.push(
          startProcess('bare-node', tsNode('bare-proxy.ts', String(proxyPort), `http://127.0.0.1:${upPort}`)),
        )
        await waitForHttp(`http://127.0.0.1:${proxyPort}/bench/hello`, 20_000, procs[1])
        for (const path of ['/bench/hello', '/', '/bench/a?b=c']) {
          const direct = await httpGet(`http://127.0.0.1:${upPort}${path}`)
          const proxied = await httpGet(`http://127.0.0.1:${proxyPort}${path}`)
          assert.equal(direct.status, 200)
          assert.equal(proxied.status, 200)
          assert.equal(proxied.body, BODY.toString())
          assert.equal(JSON.parse(proxied.body).ok, true)
        }
        assert.equal(BODY.length, 100)
      } finally {
        await Promise.all(procs.map((p) => p.stop()))
      }
    })
  }

  it('answers 502 when the upstream is down', async () => {
    const deadPort = await freePort()
    const proxyPort = await freePort()
    const proxy = startProcess(
      'bare-node',
      tsNode('bare-proxy.ts', String(proxyPort), `http://127.0.0.1:${deadPort}`),
    )
    try {
      const deadline = Date.now() + 20_000
      let status = 0
      while (Date.now() < deadline) {
        try {
          status = (await httpGet(`http://127.0.0.1:${proxyPort}/bench/hello`)).status
          break
        } catch {
          await new Promise((r) => setTimeout(r, 100))
        }
      }
      assert.equal(status, 502)
    } finally {
      await proxy.stop()
    }
  })
})

describe('smoke: the gateway rows', {
  skip: existsSync(GATEWAY_CLI) ? false : 'not built (npm run build)',
}, () => {
  const pinning: Pinning = { enabled: false, reason: 'test' }
  let tmpDir: string
  let upstream: Running & { port: number }
  let running: Running
  const toolRows = new Map<string, Running>()

  before(async () => {
    tmpDir = mkdtempSync(join(tmpdir(), 'runr-bench-test-'))
    upstream = await startUpstream(pinning)
    const ctx: BenchContext = {
      tmpDir,
      upstreamUrl: upstream.url,
      upstreamPort: upstream.port,
      pinning,
      path: '/bench/hello',
    }
    // start() itself refuses to return unless the route answers 401 without the token and 200
    // with it (and, for the tool rows, the upstream's JSON where the route puts it).
    running = await gatewayAuth.start(ctx)
    for (const row of [tool, toolPolicy, openaiPassthrough]) toolRows.set(row.name, await row.start(ctx))
  })
  after(async () => {
    await running?.stop()
    await upstream?.stop()
    await stopAll()
    rmSync(tmpDir, { recursive: true, force: true })
  })

  it('starts with a bearer token and the agent for the exchange measurement', () => {
    const auth = running.headers?.['authorization'] ?? ''
    assert.match(auth, /^Bearer [\w-]+\.[\w-]+\.[\w-]+$/)
    assert.equal(running.tokenExchange?.scope, 'channel:bench-auth')
    assert.match(running.tokenExchange?.agent.id ?? '', /^agt_/)
    assert.match(running.tokenExchange?.issuer ?? '', /^http:\/\/127\.0\.0\.1:\d+$/)
  })

  it('the paced generator sends the token on every request (and does not print it)', async () => {
    const r = await runFixedRate({
      url: running.url,
      headers: running.headers,
      durationSec: 1,
      connections: 4,
      pinning,
      rate: 100,
    })
    assert.equal(r.non2xx, 0)
    assert.equal(r.errors, 0)
    assert.equal(r.requests, 100)
    const token = running.headers!['authorization']!.slice('Bearer '.length)
    assert.equal(JSON.stringify(r).includes(token), false)
    const without = await runFixedRate({
      url: running.url,
      durationSec: 1,
      connections: 4,
      pinning,
      rate: 50,
    })
    assert.equal(without.non2xx, 50, 'without the header every request is refused')
  })

  it('measures token exchanges with every answer accounted for', async () => {
    const r = await runTokenExchange({
      setup: running.tokenExchange!,
      durationSec: 1,
      concurrency: 2,
      pinning,
    })
    assert.ok(r.ok > 0, formatExchange(r))
    assert.deepEqual(r.non200, {}, formatExchange(r))
    assert.equal(r.errors, 0)
    assert.deepEqual(r.warmup.non200, {})
    assert.equal(r.exhausted, false)
    assert.ok(r.presigned >= r.ok)
    assert.ok(r.p50 > 0 && r.p99 >= r.p50)
    assert.equal(
      r.perSecond.reduce((a, b) => a + b, 0),
      r.ok,
    )
    assert.equal(JSON.stringify(r).includes(running.tokenExchange!.agent.privateKeyJwk.d!), false)
  })

  it('starts the tool rows on the same gateway, each POSTing its JSON body with its own token', () => {
    const gatewayOrigin = new URL(running.url).origin
    const expected: Record<string, [string, string]> = {
      tool: [TOOL_PATH, TOOL_BODY],
      'tool-policy': [TOOL_PATH, TOOL_BODY],
      'openai-passthrough': [OPENAI_PATH, OPENAI_BODY],
    }
    const tokens = new Set<string>()
    for (const [name, [path, body]] of Object.entries(expected)) {
      const row = toolRows.get(name)!
      assert.equal(row.url, `${gatewayOrigin}${path}`, name)
      assert.equal(row.method, 'POST')
      assert.equal(row.body, body)
      assert.match(row.headers?.['authorization'] ?? '', /^Bearer [\w-]+\.[\w-]+\.[\w-]+$/)
      assert.equal(row.proc, running.proc, 'one gateway process serves every gateway row')
      tokens.add(row.headers!['authorization']!)
    }
    assert.equal(tokens.size, 3, 'one agent and token per row')
  })

  it('the paced generator sends each tool row’s call, answered 2xx every time', async () => {
    const runs = [...toolRows].map(async ([name, row]) => ({
      name,
      r: await runFixedRate({
        url: row.url,
        method: row.method,
        headers: row.headers,
        body: row.body,
        durationSec: 1,
        connections: 4,
        pinning,
        rate: 50,
      }),
    }))
    for (const { name, r } of await Promise.all(runs)) {
      assert.equal(r.non2xx, 0, name)
      assert.equal(r.errors, 0, name)
      assert.equal(r.requests, 50, name)
    }
  })

  it('refuses the tool-policy agent’s call over its CEL guard, and the tool agent’s token on the passthrough', async () => {
    const policyRow = toolRows.get('tool-policy')!
    const overGuard = await fetch(policyRow.url, {
      method: 'POST',
      headers: { ...policyRow.headers, 'content-type': 'application/json' },
      body: JSON.stringify({ q: 'bench', num: 50 }),
    })
    assert.equal(overGuard.status, 403)
    assert.equal(((await overGuard.json()) as { error: { code: string } }).error.code, 'policy_denied')
    const passthrough = toolRows.get('openai-passthrough')!
    const wrongScope = await fetch(passthrough.url, {
      method: 'POST',
      headers: { ...toolRows.get('tool')!.headers, 'content-type': 'application/json' },
      body: OPENAI_BODY,
    })
    assert.equal(wrongScope.status, 403)
    await wrongScope.arrayBuffer()
  })
})
