/**
 * Turns the measured runs into rows (median per target over the rounds), the printed table,
 * and the acceptance checks. Pure functions, tested in bench.test.ts.
 */
import type { ExchangeResult, ExchangeTally, LoadResult } from './load.ts'

/** Everything measured for one target in one run. */
export interface TargetSamples {
  name: string
  about?: string
  url?: string
  /** the request method when not GET (the tool rows POST) */
  method?: string
  /** why the target did not run (not built, not installed, failed to start) */
  skipped?: string
  /** one throughput result per round */
  throughput: LoadResult[]
  /** one fixed-rate latency result per round */
  fixedRate: LoadResult[]
}

export interface Row {
  name: string
  about?: string
  url?: string
  method?: string
  skipped?: string
  /** medians over the rounds; null when nothing was measured */
  rps: number | null
  p50: number | null
  p99: number | null
  /** rps / reference rps */
  ratio: number | null
  /** the target's CPU time per request in the throughput runs, µs (median; null when not measured) */
  cpuUsPerRequest: number | null
  fixedP50: number | null
  fixedP99: number | null
  /** fixed-rate p99 minus the reference's fixed-rate p99, ms */
  fixedP99MinusRef: number | null
  /** non-2xx responses and socket errors over all runs (should be 0) */
  non2xx: number
  errors: number
  throughput: LoadResult[]
  fixedRate: LoadResult[]
}

/** Median (mean of the middle two for an even count); null for no values. */
export function median(values: number[]): number | null {
  if (values.length === 0) return null
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** One row per target; ratios and differences are relative to the `reference` row. */
export function buildRows(samples: TargetSamples[], reference = 'nginx'): Row[] {
  const base = samples.map((s) => ({
    name: s.name,
    about: s.about,
    url: s.url,
    ...(s.method === undefined ? {} : { method: s.method }),
    skipped: s.skipped,
    rps: median(s.throughput.map((r) => r.rps)),
    p50: median(s.throughput.map((r) => r.p50)),
    p99: median(s.throughput.map((r) => r.p99)),
    cpuUsPerRequest: median(
      s.throughput.flatMap((r) => (r.cpuUsPerRequest === undefined ? [] : [r.cpuUsPerRequest])),
    ),
    fixedP50: median(s.fixedRate.map((r) => r.p50)),
    fixedP99: median(s.fixedRate.map((r) => r.p99)),
    non2xx: [...s.throughput, ...s.fixedRate].reduce((sum, r) => sum + r.non2xx, 0),
    errors: [...s.throughput, ...s.fixedRate].reduce((sum, r) => sum + r.errors, 0),
    throughput: s.throughput,
    fixedRate: s.fixedRate,
  }))
  const ref = base.find((r) => r.name === reference)
  return base.map((r) => ({
    ...r,
    ratio: r.rps !== null && ref?.rps ? r.rps / ref.rps : null,
    fixedP99MinusRef: r.fixedP99 !== null && ref?.fixedP99 != null ? r.fixedP99 - ref.fixedP99 : null,
  }))
}

const dash = '–'
const fmtInt = (n: number | null) => (n === null ? dash : Math.round(n).toLocaleString('en-US'))
const fmtMs = (n: number | null) => (n === null ? dash : n.toFixed(2))
const fmtRatio = (n: number | null) => (n === null ? dash : `${n.toFixed(2)}×`)
const fmtDiff = (n: number | null) => (n === null ? dash : `${n >= 0 ? '+' : ''}${n.toFixed(2)}`)

export const COLUMNS = [
  'target',
  'RPS',
  'p50 ms',
  'p99 ms',
  'ratio to nginx (RPS)',
  'fixed-rate p50',
  'fixed-rate p99',
  'p99 minus nginx p99',
  'CPU µs/req',
]

/** The table's cells, one array per row (skipped rows say why in the RPS column). */
export function tableCells(rows: Row[]): string[][] {
  return rows.map((r) => {
    if (r.skipped) return [r.name, r.skipped, '', '', '', '', '', '', '']
    const flag = r.non2xx + r.errors > 0 ? ` (${r.non2xx} non-2xx, ${r.errors} errors)` : ''
    return [
      r.name + flag,
      fmtInt(r.rps),
      fmtMs(r.p50),
      fmtMs(r.p99),
      fmtRatio(r.ratio),
      fmtMs(r.fixedP50),
      fmtMs(r.fixedP99),
      fmtDiff(r.fixedP99MinusRef),
      r.cpuUsPerRequest === null ? dash : r.cpuUsPerRequest.toFixed(0),
    ]
  })
}

/** A Markdown table, columns padded so it also reads well in a terminal. */
export function formatTable(rows: Row[]): string {
  const cells = [COLUMNS, ...tableCells(rows)]
  const widths = COLUMNS.map((_, i) => Math.max(...cells.map((row) => (row[i] ?? '').length)))
  const line = (row: string[]) =>
    `| ${row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`
  const rule = `|${widths.map((w, i) => (i === 0 ? `${'-'.repeat(w + 1)}-` : `${'-'.repeat(w + 1)}:`)).join('|')}|`
  return [line(COLUMNS), rule, ...cells.slice(1).map(line)].join('\n')
}

export interface Check {
  name: string
  /** null: could not be evaluated (a row is missing) */
  pass: boolean | null
  detail: string
}

export const MIN_RPS_RATIO = 0.3
export const MAX_FIXED_P99_DIFF_MS = 1
/** What a bearer token on every request (verify from cache + revocation check) may cost. */
export const MIN_AUTH_RPS_RATIO = 0.9
/** Thresholds are inclusive; this keeps floating-point noise from deciding a check. */
const EPSILON = 1e-9

/** Why a check comparing `subject` to `reference` cannot be evaluated. */
function missingReason(rows: Row[], subject: string, reference: string, what: string): string {
  const s = rows.find((r) => r.name === subject)
  const ref = rows.find((r) => r.name === reference)
  return !s || s.skipped
    ? `${subject}: ${s?.skipped ?? 'no row'}`
    : !ref || ref.skipped
      ? `${reference}: ${ref?.skipped ?? 'no row'}`
      : `no ${what} measured`
}

const fmtPercent = (ratio: number) => `${(ratio * 100).toFixed(2)}%`

/**
 * `subject`'s median RPS is at least `min` of `reference`'s. With `answeredOnly`, any non-2xx
 * answer or error in `subject`'s runs fails it: wrk counts refusals as requests, and a row
 * answering 401 (an expired or refused token) is faster than one doing the work. `what` says in
 * the check's name what the two rows are; `also` adds, for information, the ratio to another row.
 */
export function rpsCheck(
  rows: Row[],
  subject: string,
  reference: string,
  min: number,
  options: { answeredOnly?: boolean; what?: string; also?: { row: string; what: string } } = {},
): Check {
  const s = rows.find((r) => r.name === subject)
  const ref = rows.find((r) => r.name === reference)
  const name = `${subject} RPS ≥ ${Math.round(min * 100)}% of ${reference}${options.what ? ` (${options.what})` : ''}`
  if (s?.rps == null || !ref?.rps) {
    return { name, pass: null, detail: missingReason(rows, subject, reference, 'RPS') }
  }
  const ratio = s.rps / ref.rps
  const other = options.also && rows.find((r) => r.name === options.also?.row)
  const also =
    options.also && other?.rps
      ? `; ${fmtPercent(s.rps / other.rps)} of ${options.also.row} (${options.also.what}, ${fmtInt(other.rps)})`
      : ''
  // The same comparison by CPU time per request: what the rate would be with the proxy's CPU
  // to itself, a cross-check on a machine where other processes take turns on that CPU.
  const cpu =
    s.cpuUsPerRequest != null && ref.cpuUsPerRequest != null && s.cpuUsPerRequest > 0
      ? `; by CPU per request ${fmtPercent(ref.cpuUsPerRequest / s.cpuUsPerRequest)} (${s.cpuUsPerRequest.toFixed(0)} vs ${ref.cpuUsPerRequest.toFixed(0)} µs)`
      : ''
  const detail = `${fmtPercent(ratio)} (${fmtInt(s.rps)} vs ${fmtInt(ref.rps)})${cpu}${also}`
  if (options.answeredOnly && s.non2xx + s.errors > 0) {
    return {
      name,
      pass: false,
      detail: `${detail}, but ${subject} had ${fmtInt(s.non2xx)} non-2xx answers and ${fmtInt(s.errors)} errors`,
    }
  }
  return { name, pass: ratio >= min - EPSILON, detail }
}

/**
 * The acceptance checks: `subject` against the reference row (throughput and fixed-rate p99),
 * then `gateway-auth` against `subject` (what agent tokens on every request cost).
 */
export function acceptanceChecks(rows: Row[], subject = 'gateway', reference = 'nginx'): Check[] {
  const s = rows.find((r) => r.name === subject)
  const ref = rows.find((r) => r.name === reference)
  const missing = (what: string) => missingReason(rows, subject, reference, what)
  const throughput = rpsCheck(rows, subject, reference, MIN_RPS_RATIO)
  const latency: Check =
    s?.fixedP99MinusRef != null && s.fixedP99 != null && ref?.fixedP99 != null
      ? {
          name: `${subject} fixed-rate p99 within ${MAX_FIXED_P99_DIFF_MS} ms of ${reference}`,
          pass: s.fixedP99MinusRef <= MAX_FIXED_P99_DIFF_MS + EPSILON,
          detail: `${fmtDiff(s.fixedP99MinusRef)} ms (${fmtMs(s.fixedP99)} vs ${fmtMs(ref.fixedP99)})`,
        }
      : {
          name: `${subject} fixed-rate p99 within ${MAX_FIXED_P99_DIFF_MS} ms of ${reference}`,
          pass: null,
          detail: missing('fixed-rate p99'),
        }
  return [
    throughput,
    latency,
    rpsCheck(rows, 'gateway-auth', subject, MIN_AUTH_RPS_RATIO, { answeredOnly: true }),
  ]
}

/** Issue 5: what a realistic policy set may cost the tool route, against a minimal one. */
export const MIN_TOOL_POLICY_RATIO = 0.95
/** Issue 6: the share of the channel route's throughput the tool route keeps. */
export const MIN_TOOL_RATIO = 0.6
/** Issue 6: the share of the channel route's throughput the OpenAI passthrough keeps. */
export const MIN_PASSTHROUGH_RATIO = 0.75
/**
 * "The channel route" of issue 6's targets: the token-protected channel route (gateway-auth),
 * which pays what the tool routes pay for the agent (token, revocation, policy decision). The
 * public channel row (gateway) is printed beside it for information.
 */
export const CHANNEL_ROW = 'gateway-auth'

/**
 * The tool route's checks, all on rows of the same gateway process in the same run, and failed
 * by any refusal under load (a 403 is cheaper than the work):
 * - `tool-policy` ≥ 95% of `tool` (issue 5): the same SerpAPI call decided by a generated policy
 *   of 1,000 (selected by labels, intent and CEL guard, deny rules evaluated) against one allow
 *   rule naming the agent. Policies cannot be switched off (default deny): the minimal policy is
 *   the baseline;
 * - `tool` ≥ 60% and `openai-passthrough` ≥ 75% of `gateway-auth` (issue 6).
 */
export function toolChecks(rows: Row[]): Check[] {
  const channel = { row: 'gateway', what: 'public channel route' }
  return [
    rpsCheck(rows, 'tool-policy', 'tool', MIN_TOOL_POLICY_RATIO, {
      answeredOnly: true,
      what: 'realistic policy set: 1,000 policies, label selector, intent, CEL guard, vs one allow rule naming the agent',
    }),
    rpsCheck(rows, 'tool', CHANNEL_ROW, MIN_TOOL_RATIO, {
      answeredOnly: true,
      what: 'the token-protected channel route',
      also: channel,
    }),
    rpsCheck(rows, 'openai-passthrough', CHANNEL_ROW, MIN_PASSTHROUGH_RATIO, {
      answeredOnly: true,
      what: 'the token-protected channel route',
      also: channel,
    }),
  ]
}

/** Issue 7: the share of a route's throughput kept with one rate limit (memory state) on it. */
export const MIN_RATE_LIMIT_RATIO = 0.97
/** Issue 8: the share of the tool route's throughput kept with the audit ledger on (batched). */
export const MIN_AUDIT_RATIO = 0.9

/** A cost judged on alternating pairs of short runs: `variant`'s RPS against `base`'s. */
export interface PairSpec {
  variant: string
  base: string
  min: number
  what: string
}

/**
 * The costs small enough that rows run minutes apart cannot resolve them (they swing ±10% on a
 * shared VM), so each is judged on the median ratio of alternating pairs of short runs (variant,
 * base, then the other way round), whose two runs share conditions:
 * - issue 5: a realistic policy set (1,000 policies, label selector, intent, CEL guard, deny
 *   rules evaluated) against one allow rule naming the agent, on the same process. Policies cannot
 *   be switched off (default deny): the minimal policy is the baseline;
 * - issue 7: one GCRA limit (memory state) on the public channel route against the same route
 *   without, on the same process;
 * - issue 8: the tool route with the audit ledger on (batched, the default) against a process
 *   with the same config but `audit.enabled: false`.
 */
export const PAIR_SPECS: readonly PairSpec[] = [
  {
    variant: 'tool-policy',
    base: 'tool',
    min: MIN_TOOL_POLICY_RATIO,
    what: 'realistic policy set: 1,000 policies, label selector, intent, CEL guard, vs one allow rule naming the agent',
  },
  {
    variant: 'rl-memory',
    base: 'rl-none',
    min: MIN_RATE_LIMIT_RATIO,
    what: 'one by-ip GCRA limit in memory vs the same public channel route without',
  },
  {
    variant: 'tool',
    base: 'tool-audit-off',
    min: MIN_AUDIT_RATIO,
    what: 'the tool route with the audit ledger on (batched) vs a gateway with audit.enabled: false',
  },
]

/** The rounds' check of a pair spec, which the pairs' median replaces when pairs ran. */
export function pairRoundsCheck(rows: Row[], spec: PairSpec): Check {
  return rpsCheck(rows, spec.variant, spec.base, spec.min, { answeredOnly: true, what: spec.what })
}

/** A pair spec judged on the median of its pairs' ratios; the rounds' ratio stays in the detail. */
export function pairedCheck(spec: PairSpec, ratios: readonly number[], fromRounds: Check): Check {
  const name = `${spec.variant} RPS ≥ ${Math.round(spec.min * 100)}% of ${spec.base}, median of ${ratios.length} alternating pairs (${spec.what})`
  if (ratios.length === 0) return fromRounds
  const sorted = [...ratios].sort((a, b) => a - b)
  const mid = sorted.length / 2
  const median = sorted.length % 2 === 1 ? sorted[Math.floor(mid)]! : (sorted[mid - 1]! + sorted[mid]!) / 2
  const pct = (r: number) => `${(r * 100).toFixed(1)}%`
  return {
    name,
    pass: median >= spec.min - EPSILON,
    detail: `${pct(median)} (pairs ${sorted.map(pct).join(', ')}); rounds: ${fromRounds.detail}`,
  }
}

/** The tool-policy check (issue 5) from its pairs. */
export function pairedToolPolicyCheck(ratios: readonly number[], fromRounds: Check): Check {
  return pairedCheck(PAIR_SPECS[0]!, ratios, fromRounds)
}

/**
 * Figures without a target, printed after the checks: the Redis rate limit's cost (issue 7), the
 * cache hit against a miss (issue 7), and the public channel route on a lean process (no policy
 * set) against nginx, beside issue 3's check on the bench process with its 1,000 policies.
 */
export function reportLines(rows: Row[]): string[] {
  const row = (name: string) => rows.find((r) => r.name === name)
  const ratio = (a: string, b: string, label: string): string => {
    const x = row(a)
    const y = row(b)
    if (x?.rps == null || !y?.rps) return `${label}: ${missingReason(rows, a, b, 'RPS')}`
    const cpu =
      x.cpuUsPerRequest != null && y.cpuUsPerRequest != null
        ? `; CPU ${x.cpuUsPerRequest.toFixed(0)} vs ${y.cpuUsPerRequest.toFixed(0)} µs/req`
        : ''
    return `${label}: ${fmtPercent(x.rps / y.rps)} (${fmtInt(x.rps)} vs ${fmtInt(y.rps)} RPS; p99 ${fmtMs(x.p99)} vs ${fmtMs(y.p99)} ms${cpu})`
  }
  const lean = row('rl-none')
  const nginx = row('nginx')
  const leanP99 =
    lean?.fixedP99MinusRef != null ? `, fixed-rate p99 ${fmtDiff(lean.fixedP99MinusRef)} ms over nginx` : ''
  const leanVsNginx =
    lean?.rps != null && nginx?.rps
      ? `public channel on a lean process (rl-none) vs nginx: ${fmtPercent(lean.rps / nginx.rps)} RPS${leanP99}`
      : 'public channel on a lean process (rl-none) vs nginx: not measured'
  return [
    ratio(
      'rl-redis',
      'rl-redis-none',
      'rate limit in Redis (one Lua script per request) vs none, same process',
    ),
    ratio(
      'tool-cache-hit',
      'tool-cache-miss',
      'tool call answered from the cache vs a miss (Cache-Control: no-cache)',
    ),
    leanVsNginx,
  ]
}

export function formatCheck(c: Check): string {
  const verdict = c.pass === null ? 'SKIP' : c.pass ? 'PASS' : 'FAIL'
  return `${verdict}  ${c.name}: ${c.detail}`
}

const fmtTally = (t: ExchangeTally) => {
  const parts = Object.entries(t.non200)
    .sort((a, b) => b[1] - a[1])
    .map(([kind, n]) => `${kind} ×${fmtInt(n)}`)
  const errors = Object.entries(t.errorKinds).map(([kind, n]) => `${kind} ×${fmtInt(n)}`)
  const non200 = Object.values(t.non200).reduce((sum, n) => sum + n, 0)
  return [
    ...(non200 > 0 ? [`${fmtInt(non200)} non-200: ${parts.join(', ')}`] : []),
    ...(t.errors > 0 ? [`${fmtInt(t.errors)} errors: ${errors.join(', ')}`] : []),
  ]
}

/**
 * The token exchange line: `token exchange: N/s (p50 …, p99 …)`, then how it was measured, and
 * every answer that was not a 200 (warm-up included), so a refusal can never pass for a rate.
 */
export function formatExchange(r: ExchangeResult): string {
  const head = `token exchange: ${fmtInt(r.rps)}/s (p50 ${fmtMs(r.p50)} ms, p99 ${fmtMs(r.p99)} ms)`
  const how = `${fmtInt(r.ok)} tokens in ${r.elapsedSec.toFixed(2)} s, ${r.concurrency} concurrent`
  const notes = [
    ...fmtTally(r),
    ...fmtTally(r.warmup).map((t) => `warm-up: ${t}`),
    ...(r.exhausted
      ? [`ran out of the ${fmtInt(r.presigned)} pre-signed assertions before ${r.durationSec} s`]
      : []),
  ]
  return `${head}  [${how}]${notes.length > 0 ? `\n  ${notes.join('\n  ')}` : ''}`
}
