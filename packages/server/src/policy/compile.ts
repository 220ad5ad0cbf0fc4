/**
 * Policy compilation (DESIGN §7): a policy document, from the config file or the admin API, becomes
 * rules whose every guard is already parsed (CEL, time windows, domain lists, redaction), so a
 * decision never parses anything. A document with any problem is refused whole, with the path of
 * each problem, and never half-applied.
 */
import { durationMs } from '../config/duration.ts'
import type { RawPolicy, RawPolicyRule } from '../config/schema.ts'
import { compileResponseFilter, type ResponseFilter } from './filters/response-filter.ts'
import { type CompiledCondition, compileCondition } from './guards/cel.ts'
import { compileDomainGuard, type DomainGuard } from './guards/domains.ts'
import { compileTimeWindows, type TimeWindows } from './guards/time-window.ts'

export interface PolicyProblem {
  /** Relative to the policy document, e.g. `allow[0].when`. */
  path: string
  message: string
}

export type PathPattern = { kind: 'all' } | { kind: 'exact'; path: string } | { kind: 'prefix'; base: string }

export type RuleTarget =
  | { kind: 'tool'; tool: string; actions: ReadonlySet<string> | null }
  | {
      kind: 'channel'
      channel: string
      paths: readonly PathPattern[] | null
      methods: ReadonlySet<string> | null
    }

export interface CompiledQuota {
  /** Calls per period, or null when the quota only budgets LLM tokens. */
  limit: number | null
  periodMs: number
  tokens: number | null
}

export interface CompiledPolicyRule {
  /** `policy/rule`, stable across reloads: what decisions, metrics and audit name. */
  id: string
  policy: string
  /** The rule's name within its policy: its `name`, else `allow[N]` / `deny[N]`. */
  name: string
  effect: 'allow' | 'deny'
  target: RuleTarget
  intents: ReadonlySet<string> | null
  when: CompiledCondition | null
  timeWindows: TimeWindows | null
  domains: DomainGuard | null
  maxRequestBytes: number | null
  quota: CompiledQuota | null
  maxRepeats: { count: number; periodMs: number } | null
  filter: ResponseFilter | null
  approval: boolean
}

export interface AgentSelector {
  all: boolean
  names: ReadonlySet<string>
  ids: ReadonlySet<string>
  /** Every pair must match; empty: labels select nothing. */
  labels: readonly (readonly [string, string])[]
}

export interface CompiledPolicy {
  name: string
  source: 'config' | 'api'
  /** Config policies carry the config version; API policies their stored version number. */
  version: string | number
  selector: AgentSelector
  rules: readonly CompiledPolicyRule[]
  document: RawPolicy
}

export type CompileResult = { ok: true; policy: CompiledPolicy } | { ok: false; problems: PolicyProblem[] }

const ruleKeysForAllowOnly = ['maxRequestBytes', 'quota', 'maxRepeats', 'responseFilter', 'approval'] as const

function compilePathPattern(pattern: string): PathPattern | undefined {
  if (pattern === '*' || pattern === '/*') return { kind: 'all' }
  if (!pattern.startsWith('/') || pattern.includes('//')) return undefined
  const star = pattern.indexOf('*')
  if (star < 0) return { kind: 'exact', path: pattern.length > 1 ? pattern.replace(/\/$/, '') : pattern }
  // Only a trailing `/*` is a pattern; a star anywhere else would be read literally by nobody.
  if (star !== pattern.length - 1 || pattern[star - 1] !== '/') return undefined
  return { kind: 'prefix', base: pattern.slice(0, -2) }
}

/** True when the channel-relative `path` matches one of `patterns` (null: every path). */
export function pathMatches(patterns: readonly PathPattern[] | null, path: string): boolean {
  if (patterns === null) return true
  const p = path === '' ? '/' : path
  for (const pattern of patterns) {
    if (pattern.kind === 'all') return true
    if (pattern.kind === 'exact') {
      if (p === pattern.path) return true
    } else if (
      p === pattern.base ||
      (p.startsWith(pattern.base) && p.charCodeAt(pattern.base.length) === 0x2f)
    ) {
      return true
    }
  }
  return false
}

function compileRule(
  policy: string,
  rule: RawPolicyRule,
  effect: 'allow' | 'deny',
  index: number,
  problems: PolicyProblem[],
): CompiledPolicyRule | undefined {
  const at = `${effect}[${index}]`
  const before = problems.length
  const problem = (path: string, message: string): void => {
    problems.push({ path: path === '' ? at : `${at}.${path}`, message })
  }

  let target: RuleTarget | undefined
  if (rule.tool !== undefined && rule.channel !== undefined) {
    problem('', 'a rule covers a tool or a channel, not both')
  } else if (rule.tool !== undefined) {
    if (rule.paths !== undefined) problem('paths', 'paths belong to channel rules')
    if (rule.methods !== undefined) problem('methods', 'methods belong to channel rules')
    if (rule.actions !== undefined && rule.actions.length === 0) problem('actions', 'must not be empty')
    const actions = rule.actions === undefined || rule.actions.includes('*') ? null : new Set(rule.actions)
    target = { kind: 'tool', tool: rule.tool, actions }
  } else if (rule.channel !== undefined) {
    if (rule.actions !== undefined) problem('actions', 'actions belong to tool rules')
    if (rule.domains !== undefined) problem('domains', 'domains guard http_fetch URLs: a tool rule')
    // Channel answers stream through unbuffered; redaction needs the whole JSON answer.
    if (rule.responseFilter !== undefined)
      problem('responseFilter', 'response filters apply to tool answers; channel answers stream unchanged')
    const paths: PathPattern[] = []
    ;(rule.paths ?? []).forEach((text, i) => {
      const compiled = compilePathPattern(text)
      if (compiled === undefined) problem(`paths[${i}]`, `"${text}" is not "*", "/exact" or "/prefix/*"`)
      else paths.push(compiled)
    })
    if (rule.paths !== undefined && rule.paths.length === 0) problem('paths', 'must not be empty')
    target = {
      kind: 'channel',
      channel: rule.channel,
      paths: rule.paths === undefined ? null : paths,
      methods: rule.methods === undefined ? null : new Set<string>(rule.methods),
    }
  } else {
    problem('', 'a rule must name a tool or a channel')
  }

  if (effect === 'deny') {
    for (const key of ruleKeysForAllowOnly) {
      if (rule[key] !== undefined) problem(key, `${key} belongs to allow rules; a deny rule only refuses`)
    }
    if (rule.domains?.allow !== undefined)
      problem('domains.allow', 'a deny rule lists the domains it refuses in domains.deny')
  }
  if (rule.intents !== undefined && rule.intents.length === 0) problem('intents', 'must not be empty')

  let when: CompiledCondition | null = null
  if (rule.when !== undefined) {
    const compiled = compileCondition(rule.when)
    if (compiled.ok) when = compiled.condition
    else problem('when', compiled.reason)
  }
  let timeWindows: TimeWindows | null = null
  if (rule.timeWindows !== undefined) {
    const compiled = compileTimeWindows(rule.timeWindows)
    if (compiled.ok) timeWindows = compiled
    else
      for (const p of compiled.problems)
        problem(`timeWindows[${p.index}]${p.path ? `.${p.path}` : ''}`, p.reason)
  }
  let domains: DomainGuard | null = null
  if (rule.domains !== undefined) {
    if (rule.tool !== undefined && rule.tool !== 'http_fetch')
      problem('domains', 'domains guard the URLs of http_fetch only')
    const compiled = compileDomainGuard(rule.domains)
    if (compiled.ok) domains = compiled
    else for (const p of compiled.problems) problem(`domains.${p.path}`, p.reason)
  }
  let filter: ResponseFilter | null = null
  if (rule.responseFilter !== undefined) {
    const compiled = compileResponseFilter(rule.responseFilter)
    if (compiled.ok) filter = compiled.filter
    else for (const p of compiled.problems) problem(`responseFilter.${p.path}`, p.reason)
  }
  let quota: CompiledQuota | null = null
  if (rule.quota !== undefined) {
    const periodMs = durationMs(rule.quota.period)
    if (periodMs < 1000) problem('quota.period', 'must be at least 1s')
    if (rule.quota.limit === undefined && rule.quota.tokens === undefined)
      problem('quota', 'set limit (calls), tokens (LLM tokens) or both')
    quota = { limit: rule.quota.limit ?? null, periodMs, tokens: rule.quota.tokens ?? null }
  }
  let maxRepeats: CompiledPolicyRule['maxRepeats'] = null
  if (rule.maxRepeats !== undefined) {
    const periodMs = durationMs(rule.maxRepeats.period)
    if (periodMs < 1000) problem('maxRepeats.period', 'must be at least 1s')
    maxRepeats = { count: rule.maxRepeats.count, periodMs }
  }

  if (problems.length > before || target === undefined) return undefined
  const name = rule.name ?? at
  return {
    id: `${policy}/${name}`,
    policy,
    name,
    effect,
    target,
    intents: rule.intents === undefined ? null : new Set(rule.intents),
    when,
    timeWindows,
    domains,
    maxRequestBytes: rule.maxRequestBytes ?? null,
    quota,
    maxRepeats,
    filter,
    approval: rule.approval === 'required',
  }
}

/** Compile one policy document (already valid against PolicySchema). */
export function compilePolicy(
  document: RawPolicy,
  source: 'config' | 'api',
  version: string | number,
): CompileResult {
  const problems: PolicyProblem[] = []
  const { agents } = document
  const labels = Object.entries(agents.labels ?? {})
  if (
    agents.all !== true &&
    (agents.names ?? []).length === 0 &&
    (agents.ids ?? []).length === 0 &&
    labels.length === 0
  ) {
    problems.push({ path: 'agents', message: 'name the agents: names, ids, labels, or all: true' })
  }
  if (agents.all === false) problems.push({ path: 'agents.all', message: 'omit it rather than set it false' })
  const rules: CompiledPolicyRule[] = []
  const names = new Set<string>()
  for (const effect of ['deny', 'allow'] as const) {
    ;(document[effect] ?? []).forEach((raw, index) => {
      const rule = compileRule(document.name, raw, effect, index, problems)
      if (rule === undefined) return
      if (names.has(rule.name))
        problems.push({ path: `${effect}[${index}].name`, message: `duplicate rule name "${rule.name}"` })
      names.add(rule.name)
      rules.push(rule)
    })
  }
  if ((document.allow ?? []).length === 0 && (document.deny ?? []).length === 0)
    problems.push({ path: '', message: 'a policy needs at least one allow or deny rule' })
  if (problems.length > 0) return { ok: false, problems }
  return {
    ok: true,
    policy: {
      name: document.name,
      source,
      version,
      selector: {
        all: agents.all === true,
        names: new Set(agents.names ?? []),
        ids: new Set(agents.ids ?? []),
        labels,
      },
      rules,
      document,
    },
  }
}
