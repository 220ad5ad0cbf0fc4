/**
 * Stage 5 of the pipeline, authorize (DESIGN §4, §7): the decision plus what it sets in motion.
 * A denial becomes a typed error; an allow passes the loop guard and the quota of the deciding rule
 * (counted here, before the call); a rule that requires approval parks the call, and a replay
 * carrying an approved `X-Approval-Id` executes it once.
 *
 * Quota counters live where they survive what they must: the store in the embedded mode (a
 * restart keeps them), Redis in a cluster (every instance shares them, one atomic script per
 * check). The loop guard's counters are short-lived and live in the shared state.
 */
import { createHash, randomUUID } from 'node:crypto'
import { GatewayError } from '../errors/gateway-error.ts'
import type { Metrics } from '../observability/metrics.ts'
import type { SharedState } from '../state/types.ts'
import type { Approval, Store } from '../store/types.ts'
import type { CompiledPolicyRule } from './compile.ts'
import type { ResponseFilter } from './filters/response-filter.ts'
import { canonicalJson } from './guards/args-shape.ts'
import type { PolicyService } from './policy-service.ts'
import { type Decision, type DecisionInput, describeTarget, requiredScope } from './policy-set.ts'

export type Authorized =
  /** Go ahead; apply `filter` to the answer; report LLM usage through `recordTokens`. */
  | { kind: 'proceed'; decision: Decision; filter: ResponseFilter | null; rule: CompiledPolicyRule | null }
  /** Parked: answer 202 with the approval. */
  | { kind: 'parked'; decision: Decision; approval: Approval }

export interface EnforcerDeps {
  policies: PolicyService
  store: Store
  state: SharedState
  metrics: Metrics
  approvalTtlMs(): number
  now?: () => number
}

function windowOf(now: number, periodMs: number): { windowStart: number; windowEnd: number } {
  const windowStart = Math.floor(now / periodMs) * periodMs
  return { windowStart, windowEnd: windowStart + periodMs }
}

function retryAfter(ms: number): Record<string, string> {
  return { 'retry-after': String(Math.max(1, Math.ceil(ms / 1000))) }
}

/** The body and headers of the `202` that parks a call: where to poll and until when. */
export function parkedReply(approval: Approval): {
  body: Record<string, unknown>
  headers: Record<string, string>
} {
  return {
    body: {
      approvalId: approval.id,
      status: approval.status,
      expiresAt: new Date(approval.expiresAt).toISOString(),
      policy: approval.policy,
      rule: approval.rule,
      poll: `/v1/approvals/${approval.id}`,
    },
    headers: { location: `/v1/approvals/${approval.id}` },
  }
}

/** The identity of a call for approvals and the loop guard: agent, target and canonical arguments. */
export function callHash(input: Pick<DecisionInput, 'agent' | 'target' | 'args'>): string {
  const { target } = input
  const what =
    target.kind === 'tool'
      ? ['tool', target.tool, target.action]
      : ['channel', target.channel, target.method, target.path]
  return createHash('sha256')
    .update(`${input.agent.id}\n${what.join('\n')}\n${canonicalJson(input.args ?? null)}`)
    .digest('base64url')
}

export class PolicyEnforcer {
  private readonly now: () => number

  constructor(private readonly deps: EnforcerDeps) {
    this.now = deps.now ?? Date.now
  }

  /**
   * Authorize one call. Synchronous when the deciding rule has no quota, loop guard or approval
   * (the common case costs no promise); throws a GatewayError on a refusal.
   */
  authorize(input: DecisionInput, approvalId?: string): Authorized | Promise<Authorized> {
    const decision = this.deps.policies.current().decide(input)
    this.deps.metrics.policyDecision(decision.decision, decision.reason)
    if (decision.decision === 'deny') throw refusal(decision, input)
    const rule = decision.deciding!
    if (decision.decision === 'approval_required') return this.approval(input, decision, rule, approvalId)
    if (rule.maxRepeats === null && rule.quota === null)
      return { kind: 'proceed', decision, filter: decision.filter, rule }
    return this.count(input, decision, rule)
  }

  private async count(
    input: DecisionInput,
    decision: Decision,
    rule: CompiledPolicyRule,
  ): Promise<Authorized> {
    const now = this.now()
    if (rule.maxRepeats !== null) {
      const { count, periodMs } = rule.maxRepeats
      const { windowStart, windowEnd } = windowOf(now, periodMs)
      const key = `repeat:${rule.id}:${callHash(input)}:${windowStart}`
      const seen = await this.deps.state.increment(key, periodMs)
      if (seen > count) {
        this.deps.metrics.quotaRefused('repeats')
        throw new GatewayError(
          'rate_limited',
          `The same call was made more than ${count} times in ${periodMs / 1000}s; the loop guard refuses it.`,
          {
            details: { reason: 'repeat_limit', policy: rule.policy, rule: rule.id, limit: count },
            headers: retryAfter(windowEnd - now),
          },
        )
      }
    }
    const quota = rule.quota
    if (quota !== null) {
      const window = windowOf(now, quota.periodMs)
      const base = `quota:${rule.id}:${input.agent.id}`
      if (quota.tokens !== null) {
        const used = await this.getCount(`${base}:tokens`, window)
        if (used >= quota.tokens)
          throw this.exhausted('tokens', rule, quota.tokens, used, window.windowEnd, now)
      }
      if (quota.limit !== null) {
        const result = await this.consume(`${base}:calls`, quota.limit, window, now)
        if (!result.allowed)
          throw this.exhausted('calls', rule, quota.limit, result.used, window.windowEnd, now)
      }
    }
    return { kind: 'proceed', decision, filter: decision.filter, rule }
  }

  /**
   * Count LLM tokens used by a call against its rule's `quota.tokens` (the tools layer reports them
   * once the upstream answered with its usage).
   */
  async recordTokens(rule: CompiledPolicyRule | null, agentId: string, tokens: number): Promise<void> {
    const quota = rule?.quota
    if (quota === null || quota === undefined || quota.tokens === null || tokens <= 0) return
    const window = windowOf(this.now(), quota.periodMs)
    const key = `quota:${rule!.id}:${agentId}:tokens`
    if (this.deps.state.kind === 'redis') {
      await this.deps.state.addQuota(`${key}:${window.windowStart}`, tokens, window.windowEnd - this.now())
    } else {
      await this.deps.store.quotas.add(key, tokens, window)
    }
  }

  private consume(
    key: string,
    limit: number,
    window: { windowStart: number; windowEnd: number },
    now: number,
  ): Promise<{ allowed: boolean; used: number }> {
    if (this.deps.state.kind === 'redis') {
      return this.deps.state.consumeQuota(`${key}:${window.windowStart}`, {
        limit,
        cost: 1,
        ttlMs: window.windowEnd - now,
      })
    }
    return this.deps.store.quotas.consume(key, { limit, cost: 1, ...window })
  }

  private getCount(key: string, window: { windowStart: number; windowEnd: number }): Promise<number> {
    if (this.deps.state.kind === 'redis') return this.deps.state.getQuota(`${key}:${window.windowStart}`)
    return this.deps.store.quotas.get(key, window.windowStart)
  }

  private exhausted(
    kind: 'calls' | 'tokens',
    rule: CompiledPolicyRule,
    limit: number,
    used: number,
    resetAt: number,
    now: number,
  ): GatewayError {
    this.deps.metrics.quotaRefused(kind)
    return new GatewayError(
      'quota_exceeded',
      kind === 'calls'
        ? `The quota of ${limit} calls per ${rule.quota!.periodMs / 1000}s of ${rule.id} is used up.`
        : `The budget of ${limit} LLM tokens per ${rule.quota!.periodMs / 1000}s of ${rule.id} is used up.`,
      {
        details: {
          reason: kind === 'calls' ? 'quota_calls' : 'quota_tokens',
          policy: rule.policy,
          rule: rule.id,
          limit,
          used,
          resetAt: new Date(resetAt).toISOString(),
        },
        headers: retryAfter(resetAt - now),
      },
    )
  }

  private async approval(
    input: DecisionInput,
    decision: Decision,
    rule: CompiledPolicyRule,
    approvalId: string | undefined,
  ): Promise<Authorized> {
    const approvals = this.deps.store.approvals
    const hash = callHash(input)
    const now = this.now()
    if (approvalId === undefined) {
      const ttl = this.deps.approvalTtlMs()
      const approval = await approvals.create({
        id: `apr_${randomUUID().replaceAll('-', '')}`,
        agentId: input.agent.id,
        target: input.target,
        requestHash: hash,
        summary: {
          agent: input.agent.name,
          call: describeTarget(input.target),
          intent: input.intent ?? null,
          args: input.args ?? null,
        },
        policy: rule.policy,
        rule: rule.id,
        createdAt: now,
        expiresAt: now + ttl,
      })
      return { kind: 'parked', decision, approval }
    }
    const approval = await approvals.get(approvalId, now)
    // Someone else's approval, or one for another call, is no approval at all: one answer for both,
    // so an agent cannot probe which approval ids exist.
    if (approval === undefined || approval.agentId !== input.agent.id || approval.requestHash !== hash) {
      throw new GatewayError('policy_denied', 'The approval does not exist or is for a different call.', {
        details: { reason: 'approval_mismatch', policy: rule.policy, rule: rule.id },
      })
    }
    switch (approval.status) {
      case 'pending':
        return { kind: 'parked', decision, approval }
      case 'rejected':
        throw new GatewayError('policy_denied', 'An operator rejected this call.', {
          details: { reason: 'approval_rejected', approvalId, note: approval.note },
        })
      case 'expired':
        throw new GatewayError('policy_denied', 'The approval expired before it was used.', {
          details: { reason: 'approval_expired', approvalId },
        })
      case 'used':
        throw new GatewayError('conflict', 'The approval was already used; it executes one call.', {
          details: { reason: 'approval_used', approvalId },
        })
      case 'approved':
        break
    }
    if (!(await approvals.consume(approvalId, now))) {
      throw new GatewayError('conflict', 'The approval was already used; it executes one call.', {
        details: { reason: 'approval_used', approvalId },
      })
    }
    const approved: Decision = { ...decision, decision: 'allow', reason: 'allowed' }
    if (rule.maxRepeats === null && rule.quota === null)
      return { kind: 'proceed', decision: approved, filter: decision.filter, rule }
    return this.count(input, approved, rule)
  }
}

function refusal(decision: Decision, input: DecisionInput): GatewayError {
  if (decision.reason === 'scope_missing') {
    const needed = requiredScope(input.target)
    return new GatewayError('forbidden', `The token's scope does not include ${needed}.`, {
      details: { reason: 'scope_missing', requiredScope: needed },
    })
  }
  return new GatewayError(
    'policy_denied',
    decision.reason === 'denied_by_rule'
      ? `Policy rule ${decision.rule} denies this call.`
      : decision.reason === 'no_policy'
        ? 'No policy applies to this agent (default deny).'
        : 'No policy rule allows this call (default deny).',
    {
      details: {
        reason: decision.reason,
        policy: decision.policy,
        rule: decision.rule,
        reasons: decision.reasons,
      },
    },
  )
}
