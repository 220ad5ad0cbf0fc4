/**
 * The compiled policy set and its decisions (DESIGN §7). Default deny: a call is allowed only when
 * the token's scope names the target AND an allow rule of a policy that selects the agent matches
 * it; any matching deny rule wins over every allow.
 *
 * Built once per set of policy versions. Policies are indexed by how they select agents (name, id,
 * one label pair, everyone), so finding an agent's policies costs a few map lookups whatever the
 * number of policies; an agent's rules are then grouped by target once and memoised on the agent
 * record (the directory replaces the record when the agent changes, which drops the memo).
 */

import { type CompiledPolicy, type CompiledPolicyRule, pathMatches } from './compile.ts'
import { combineFilters, type ResponseFilter } from './filters/response-filter.ts'
import { hostFromUrl } from './guards/domains.ts'

/** The facts about an agent that selectors and CEL read. */
export interface AgentFacts {
  readonly id: string
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly roles: readonly string[]
}

export type DecisionTarget =
  | { kind: 'tool'; tool: string; action: string }
  | { kind: 'channel'; channel: string; path: string; method: string }

export interface DecisionInput {
  agent: AgentFacts
  /** The token's space-separated scope; undefined skips the scope check (explaining a policy alone). */
  scope: string | undefined
  intent: string | undefined
  /** The verified token claims, for CEL's `token`. */
  claims?: Readonly<Record<string, unknown>> | undefined
  target: DecisionTarget
  /** Tool parameters (JSON), or a channel request's query parameters. */
  args: unknown
  request: { method: string; path: string; bytes: number | undefined; ip: string }
  now: number
}

/** Stable reason codes: metrics and error details carry them; `reasons` carries the prose. */
export type DecisionReason =
  | 'allowed'
  | 'approval_required'
  | 'scope_missing'
  | 'no_policy'
  | 'no_matching_rule'
  | 'denied_by_rule'

export interface Decision {
  decision: 'allow' | 'deny' | 'approval_required'
  reason: DecisionReason
  /** The deciding policy and rule (`policy/rule`), null when no rule decided (default deny). */
  policy: string | null
  rule: string | null
  reasons: string[]
  /** The rule that decided, for its quota, loop guard and approval. */
  deciding: CompiledPolicyRule | null
  /** Redaction for the answer: every allow rule for this agent and target that has a filter. */
  filter: ResponseFilter | null
}

export interface Candidate {
  policy: string
  rule: string
  effect: 'allow' | 'deny'
  matched: boolean
  reasons: string[]
}

export interface Explanation extends Omit<Decision, 'deciding' | 'filter'> {
  candidates: Candidate[]
}

interface RuleList {
  deny: CompiledPolicyRule[]
  allow: CompiledPolicyRule[]
  filter: ResponseFilter | null
}

interface AgentRules {
  policies: CompiledPolicy[]
  /** Rule lists by tool then action, and by channel: nested maps, so a lookup builds no key string. */
  byTool: Map<string, Map<string, RuleList>>
  byChannel: Map<string, RuleList>
  /** How many lists are memoised (bounded: names come from requests). */
  size: number
}

const emptyRules: RuleList = Object.freeze({ deny: [], allow: [], filter: null }) as unknown as RuleList

function ruleCoversTarget(rule: CompiledPolicyRule, target: DecisionTarget): boolean {
  const t = rule.target
  if (t.kind === 'tool') {
    return (
      target.kind === 'tool' && t.tool === target.tool && (t.actions === null || t.actions.has(target.action))
    )
  }
  return target.kind === 'channel' && t.channel === target.channel
}

/** True when the space-separated `scope` holds `token` as a whole word. */
export function scopeHas(scope: string, token: string): boolean {
  let at = scope.indexOf(token)
  while (at >= 0) {
    const end = at + token.length
    if (
      (at === 0 || scope.charCodeAt(at - 1) === 0x20) &&
      (end === scope.length || scope.charCodeAt(end) === 0x20)
    )
      return true
    at = scope.indexOf(token, at + 1)
  }
  return false
}

/** The scope token a target needs: `channel:NAME` or `tool:action` (`tool:*` also grants it). */
export function requiredScope(target: DecisionTarget): string {
  return target.kind === 'channel' ? `channel:${target.channel}` : `${target.tool}:${target.action}`
}

function scopeGrants(scope: string, target: DecisionTarget): boolean {
  if (target.kind === 'channel') return scopeHas(scope, `channel:${target.channel}`)
  return scopeHas(scope, `${target.tool}:${target.action}`) || scopeHas(scope, `${target.tool}:*`)
}

function selects(policy: CompiledPolicy, agent: AgentFacts): boolean {
  const s = policy.selector
  if (s.all || s.names.has(agent.name) || s.ids.has(agent.id)) return true
  if (s.labels.length === 0) return false
  for (const [key, value] of s.labels) if (agent.labels[key] !== value) return false
  return true
}

type TokenVar = Readonly<Record<string, unknown>> & { scope: string[]; intent: string; jti: string }

/**
 * CEL's `token`, built once per verified token: the verifier hands out one claims object per
 * token, so a repeated token costs a WeakMap lookup rather than a copy of its claims.
 */
const tokenVars = new WeakMap<object, TokenVar>()
function tokenVar(input: DecisionInput): TokenVar {
  const claims = input.claims
  const known = claims === undefined ? undefined : tokenVars.get(claims)
  if (known !== undefined) return known
  const built: TokenVar = {
    ...claims,
    scope: input.scope === undefined ? [] : input.scope.split(' ').filter((s) => s !== ''),
    intent: input.intent ?? '',
    jti: typeof claims?.['jti'] === 'string' ? claims['jti'] : '',
  }
  // Only when the claims say what the input says: the same claims with another scope (explain)
  // must not reuse a var built for a different one.
  if (
    claims !== undefined &&
    claims['scope'] === input.scope &&
    (claims['intent'] ?? undefined) === input.intent
  )
    tokenVars.set(claims, built)
  return built
}

/** CEL's `agent`: the documented fields only, built once per agent record. */
const agentVars = new WeakMap<AgentFacts, AgentFacts>()
function agentVar(agent: AgentFacts): AgentFacts {
  let built = agentVars.get(agent)
  if (built === undefined) {
    built = { id: agent.id, name: agent.name, labels: agent.labels, roles: agent.roles }
    agentVars.set(agent, built)
  }
  return built
}

/** What CEL sees; built only when a rule has a `when`, once per decision. */
function celVars(input: DecisionInput) {
  const { request, target } = input
  return {
    args: input.args ?? {},
    agent: agentVar(input.agent),
    token: tokenVar(input),
    request: {
      method: request.method,
      path: request.path,
      bytes: request.bytes ?? -1,
      ip: request.ip,
      ...(target.kind === 'tool'
        ? { tool: target.tool, action: target.action }
        : { channel: target.channel }),
    },
    now: new Date(input.now),
  }
}

/** Per-decision lazy values shared by the rules evaluated for it. */
class Facts {
  private vars: ReturnType<typeof celVars> | undefined
  private host: string | null | undefined
  constructor(readonly input: DecisionInput) {}
  cel(): ReturnType<typeof celVars> {
    this.vars ??= celVars(this.input)
    return this.vars
  }
  /** The http_fetch URL's canonical host; null when the arguments carry no valid URL. */
  urlHost(): string | null {
    if (this.host === undefined) {
      const args = this.input.args as { url?: unknown } | null | undefined
      const url = typeof args === 'object' && args !== null ? args.url : undefined
      this.host = typeof url === 'string' ? (hostFromUrl(url) ?? null) : null
    }
    return this.host
  }
}

/**
 * Does `rule` match beyond its target? Allow rules: every guard must pass. Deny rules: every
 * listed condition must hold, and a condition that cannot be judged (a CEL error, a missing URL)
 * counts as holding: a deny fails closed. `why` collects the prose when explaining.
 */
function ruleMatches(rule: CompiledPolicyRule, facts: Facts, why: string[] | undefined): boolean {
  const { input } = facts
  const deny = rule.effect === 'deny'
  const target = rule.target
  if (target.kind === 'channel' && input.target.kind === 'channel') {
    if (target.methods !== null && !target.methods.has(input.target.method)) {
      why?.push(`method ${input.target.method} is not among ${[...target.methods].join(', ')}`)
      return false
    }
    if (!pathMatches(target.paths, input.target.path)) {
      why?.push(`path ${input.target.path || '/'} matches none of the rule's paths`)
      return false
    }
  }
  if (rule.intents !== null && (input.intent === undefined || !rule.intents.has(input.intent))) {
    why?.push(
      input.intent === undefined
        ? `the token carries no intent; the rule needs one of ${[...rule.intents].join(', ')}`
        : `intent "${input.intent}" is not among ${[...rule.intents].join(', ')}`,
    )
    return false
  }
  if (rule.timeWindows !== null && !rule.timeWindows.matches(new Date(input.now))) {
    why?.push(`outside the rule's time windows (${rule.timeWindows.describe()})`)
    return false
  }
  if (rule.domains !== null) {
    const host = facts.urlHost()
    if (host === null) {
      why?.push('the arguments carry no valid http(s) url for the domain guard')
      if (!deny) return false
    } else {
      const verdict = rule.domains.check(host)
      if (deny) {
        if (verdict.ok || verdict.reason !== 'domain_denied') {
          why?.push(`host ${host} is not among the rule's denied domains`)
          return false
        }
      } else if (!verdict.ok) {
        why?.push(
          verdict.reason === 'domain_denied'
            ? `host ${host} is a denied domain`
            : `host ${host} is not among the allowed domains`,
        )
        return false
      }
    }
  }
  if (rule.maxRequestBytes !== null) {
    const bytes = input.request.bytes
    if (bytes === undefined || bytes > rule.maxRequestBytes) {
      why?.push(
        bytes === undefined
          ? `the request size is unknown (no Content-Length); the rule allows at most ${rule.maxRequestBytes} bytes`
          : `the request has ${bytes} bytes; the rule allows at most ${rule.maxRequestBytes}`,
      )
      return false
    }
  }
  if (rule.when !== null) {
    const result = rule.when.evaluate(facts.cel())
    if (!result.ok) {
      why?.push(`when: ${result.reason}${deny ? ' (a deny rule fails closed)' : ''}`)
      return deny
    }
    if (!result.value) {
      why?.push(`when: "${rule.when.source}" is false`)
      return false
    }
  }
  return true
}

export class PolicySet {
  readonly policies: readonly CompiledPolicy[]
  private readonly byName = new Map<string, CompiledPolicy[]>()
  private readonly byId = new Map<string, CompiledPolicy[]>()
  private readonly byLabel = new Map<string, CompiledPolicy[]>()
  private readonly forAll: CompiledPolicy[] = []
  private readonly order = new Map<CompiledPolicy, number>()
  private memo = new WeakMap<AgentFacts, AgentRules>()
  /** Identifies this set in logs and /v1/policies: changes whenever a policy version does. */
  readonly version: string

  constructor(policies: readonly CompiledPolicy[], version: string) {
    this.policies = policies
    this.version = version
    const add = (map: Map<string, CompiledPolicy[]>, key: string, policy: CompiledPolicy): void => {
      const list = map.get(key)
      if (list === undefined) map.set(key, [policy])
      else if (list.at(-1) !== policy) list.push(policy)
    }
    policies.forEach((policy, index) => {
      this.order.set(policy, index)
      const s = policy.selector
      if (s.all) {
        this.forAll.push(policy)
        return
      }
      for (const name of s.names) add(this.byName, name, policy)
      for (const id of s.ids) add(this.byId, id, policy)
      // One pair is enough to find the policy; selects() checks the others.
      const first = s.labels[0]
      if (first !== undefined) add(this.byLabel, `${first[0]}\0${first[1]}`, policy)
    })
  }

  /** The policies that select `agent`, in set order. */
  policiesFor(agent: AgentFacts): CompiledPolicy[] {
    return this.agentRules(agent).policies
  }

  private agentRules(agent: AgentFacts): AgentRules {
    let rules = this.memo.get(agent)
    if (rules !== undefined) return rules
    const found = new Set<CompiledPolicy>(this.forAll)
    for (const p of this.byName.get(agent.name) ?? []) found.add(p)
    for (const p of this.byId.get(agent.id) ?? []) found.add(p)
    for (const [key, value] of Object.entries(agent.labels)) {
      for (const p of this.byLabel.get(`${key}\0${value}`) ?? []) if (selects(p, agent)) found.add(p)
    }
    const policies = [...found].sort((a, b) => this.order.get(a)! - this.order.get(b)!)
    rules = { policies, byTool: new Map(), byChannel: new Map(), size: 0 }
    this.memo.set(agent, rules)
    return rules
  }

  private rulesFor(agent: AgentFacts, target: DecisionTarget): RuleList {
    const rules = this.agentRules(agent)
    let actions: Map<string, RuleList> | undefined
    if (target.kind === 'tool') {
      actions = rules.byTool.get(target.tool)
      const known = actions?.get(target.action)
      if (known !== undefined) return known
    } else {
      const known = rules.byChannel.get(target.channel)
      if (known !== undefined) return known
    }
    const deny: CompiledPolicyRule[] = []
    const allow: CompiledPolicyRule[] = []
    for (const policy of rules.policies) {
      for (const rule of policy.rules) {
        if (!ruleCoversTarget(rule, target)) continue
        ;(rule.effect === 'deny' ? deny : allow).push(rule)
      }
    }
    const filters = allow.flatMap((rule) => (rule.filter === null ? [] : [rule.filter]))
    const list =
      deny.length === 0 && allow.length === 0
        ? emptyRules
        : { deny, allow, filter: filters.length === 0 ? null : combineFilters(filters) }
    // Bounded: an agent touches few targets, but the names come from requests.
    if (rules.size >= 1024) return list
    rules.size++
    if (target.kind === 'channel') {
      rules.byChannel.set(target.channel, list)
    } else {
      if (actions === undefined) {
        actions = new Map()
        rules.byTool.set(target.tool, actions)
      }
      actions.set(target.action, list)
    }
    return list
  }

  /** The decision for one call. Cheap on the allow path: no strings are built unless it denies. */
  decide(input: DecisionInput): Decision {
    if (input.scope !== undefined && !scopeGrants(input.scope, input.target)) {
      return deny('scope_missing', null, [
        `the token's scope does not include ${requiredScope(input.target)}`,
      ])
    }
    const list = this.rulesFor(input.agent, input.target)
    const facts = new Facts(input)
    for (const rule of list.deny) {
      if (ruleMatches(rule, facts, undefined)) {
        const why: string[] = []
        ruleMatches(rule, facts, why)
        return deny('denied_by_rule', rule, [`denied by ${rule.id}`, ...why])
      }
    }
    for (const rule of list.allow) {
      if (!ruleMatches(rule, facts, undefined)) continue
      return {
        decision: rule.approval ? 'approval_required' : 'allow',
        reason: rule.approval ? 'approval_required' : 'allowed',
        policy: rule.policy,
        rule: rule.id,
        reasons: [],
        deciding: rule,
        filter: list.filter,
      }
    }
    if (list.allow.length === 0) {
      const none = this.agentRules(input.agent).policies.length === 0
      return deny(none ? 'no_policy' : 'no_matching_rule', null, [
        none
          ? `no policy selects agent ${input.agent.name}`
          : `no allow rule for agent ${input.agent.name} covers ${describeTarget(input.target)}`,
      ])
    }
    const reasons: string[] = []
    for (const rule of list.allow) {
      const why: string[] = []
      ruleMatches(rule, facts, why)
      reasons.push(`${rule.id}: ${why.join('; ')}`)
    }
    return deny('no_matching_rule', null, reasons)
  }

  /**
   * The decision with the reasoning behind it: every rule of every policy that selects the
   * agent, whether it matched, and why not.
   */
  explain(input: DecisionInput): Explanation {
    const decision = this.decide(input)
    const facts = new Facts(input)
    const candidates: Candidate[] = []
    for (const policy of this.agentRules(input.agent).policies) {
      for (const rule of policy.rules) {
        const reasons: string[] = []
        let matched = false
        if (!ruleCoversTarget(rule, input.target)) {
          reasons.push(`covers ${describeRuleTarget(rule)}, not ${describeTarget(input.target)}`)
        } else {
          matched = ruleMatches(rule, facts, reasons)
        }
        candidates.push({ policy: rule.policy, rule: rule.id, effect: rule.effect, matched, reasons })
      }
    }
    const { deciding: _deciding, filter: _filter, ...rest } = decision
    return { ...rest, candidates }
  }

  /**
   * The domain check for the hops an http_fetch call is redirected to: the deciding rule's domain
   * list and every deny rule's denied domains for this agent and target, judged on each hop's host
   * (the other conditions of a deny rule are not re-judged: a redirect only ever refuses more).
   * Undefined when no rule involved lists domains.
   */
  redirectHostCheck(
    agent: AgentFacts,
    target: DecisionTarget,
    deciding: CompiledPolicyRule | null,
  ): ((host: string) => boolean) | undefined {
    const denies = this.rulesFor(agent, target).deny.filter((rule) => rule.domains !== null)
    const allowed = deciding?.domains ?? null
    if (denies.length === 0 && allowed === null) return undefined
    return (host) => {
      if (allowed !== null && !allowed.check(host).ok) return false
      for (const rule of denies) {
        const verdict = rule.domains!.check(host)
        if (!verdict.ok && verdict.reason === 'domain_denied') return false
      }
      return true
    }
  }

  /**
   * Could any policy ever allow `agent` the scope token (`tool:action`, `tool:*`, `channel:NAME`)?
   * Token issuance refuses a scope that cannot ever be used.
   */
  canEverGrant(agent: AgentFacts, scopeToken: string): boolean {
    const colon = scopeToken.indexOf(':')
    const kind = scopeToken.slice(0, colon)
    const name = scopeToken.slice(colon + 1)
    for (const policy of this.agentRules(agent).policies) {
      for (const rule of policy.rules) {
        if (rule.effect !== 'allow') continue
        const t = rule.target
        if (kind === 'channel') {
          if (t.kind === 'channel' && t.channel === name) return true
        } else if (
          t.kind === 'tool' &&
          t.tool === kind &&
          (name === '*' || t.actions === null || t.actions.has(name))
        ) {
          return true
        }
      }
    }
    return false
  }
}

function deny(reason: DecisionReason, rule: CompiledPolicyRule | null, reasons: string[]): Decision {
  return {
    decision: 'deny',
    reason,
    policy: rule?.policy ?? null,
    rule: rule?.id ?? null,
    reasons,
    deciding: rule,
    filter: null,
  }
}

export function describeTarget(target: DecisionTarget): string {
  return target.kind === 'tool'
    ? `tool ${target.tool}.${target.action}`
    : `channel ${target.channel} ${target.method} ${target.path || '/'}`
}

function describeRuleTarget(rule: CompiledPolicyRule): string {
  const t = rule.target
  if (t.kind === 'tool') return `tool ${t.tool}${t.actions === null ? '' : `.{${[...t.actions].join(',')}}`}`
  return `channel ${t.channel}`
}
