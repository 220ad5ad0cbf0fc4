/**
 * The benchmark's own tests: the wrk output parser on real wrk output, the rows / table /
 * acceptance computation, the generated configs, and a smoke test that the upstream and the
 * bare-Node proxy start as child processes and pass a request through. No load is generated.
 */
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { parseWrk, wrkDurationMs } from './load.ts'
import { freePort, httpGet, type Proc, parseCpuList, startProcess, stopAll, waitForHttp } from './proc.ts'
import {
  acceptanceChecks,
  buildRows,
  formatCheck,
  formatTable,
  median,
  type TargetSamples,
  tableCells,
} from './report.ts'
import { gatewayConfig, nginxConfig, TARGETS } from './targets.ts'
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
    assert.match(lines[0]!, /fixed-rate p50 \| fixed-rate p99 \| p99 minus nginx p99 \|$/)
    assert.deepEqual(tableCells(buildRows(samples))[3], [
      'gateway',
      '15,000',
      '3.30',
      '5.00',
      '0.30×',
      '0.40',
      '1.60',
      '+1.00',
    ])
    // Every line is as wide as the header.
    for (const line of lines) assert.equal(line.length, lines[0]!.length)
  })

  it('checks the acceptance thresholds (inclusive)', () => {
    const checks = acceptanceChecks(buildRows(samples))
    assert.deepEqual(
      checks.map((c) => c.pass),
      [true, true],
    )
    assert.equal(formatCheck(checks[0]!), 'PASS  gateway RPS ≥ 30% of nginx: 30.00% (15,000 vs 50,000)')
    const slower = samples.map((s) =>
      s.name === 'gateway' ? { ...s, throughput: [run(10_000, 5, 8)], fixedRate: [run(2000, 0.5, 2.5)] } : s,
    )
    assert.deepEqual(
      acceptanceChecks(buildRows(slower)).map((c) => c.pass),
      [false, false],
    )
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
      [null, null],
    )
    assert.match(formatCheck(checks[0]!), /^SKIP .*gateway: not built/)
  })

  it('has no ratios without an nginx row', () => {
    const rows = buildRows(samples.filter((s) => s.name !== 'nginx'))
    assert.equal(rows[0]!.ratio, null)
    assert.equal(acceptanceChecks(rows)[0]!.pass, null)
  })
})

describe('targets and configs', () => {
  it('lists the rows in report order with unique names', () => {
    assert.deepEqual(
      TARGETS.map((t) => t.name),
      ['direct', 'nginx', 'bare-node', 'gateway'],
    )
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

  it('writes the gateway config with a public /bench channel', () => {
    const yaml = gatewayConfig({ port: 8000, adminPort: 8001, upstreamPort: 9000, tmpDir: '/tmp/x' })
    assert.match(yaml, /listen: \{ host: 127\.0\.0\.1, port: 8000 \}/)
    assert.match(yaml, /admin: \{ host: 127\.0\.0\.1, port: 8001 \}/)
    assert.match(yaml, /store: \{ kind: sqlite, path: "\/tmp\/x\/4runr\.db" \}/)
    assert.match(yaml, /url: "http:\/\/127\.0\.0\.1:9000"/)
    assert.match(yaml, /prefix: \/bench, system: up, rules: \[ \{ path: "\*", public: true \} \]/)
  })

  it('expands CPU lists', () => {
    assert.deepEqual(parseCpuList('0-3,6\n'), [0, 1, 2, 3, 6])
    assert.deepEqual(parseCpuList('1'), [1])
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
