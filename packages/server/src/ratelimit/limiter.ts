/**
 * Stage 4 of the pipeline (DESIGN §4, §9): checks a request against the compiled limits that
 * apply to its route, in the shared state. A request must pass every limit; the answer's
 * `RateLimit-*` headers describe the tightest one, and a refusal is `429 rate_limited` with
 * `Retry-After`. With the memory state the whole check is synchronous: no promise on the hot path.
 *
 * When the shared state cannot answer (Redis down, the memory table full), each limit's
 * `failOpen` decides: admit (the default) or refuse. Either is counted and logged, at most once
 * per interval; the state reconnects by itself, so the limits work again without a restart.
 */
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import { GatewayError } from '../errors/gateway-error.ts'
import type { RequestContext } from '../http/context.ts'
import type { Logger } from '../observability/logger.ts'
import type { RateDecision, SharedState } from '../state/types.ts'
import { clientAddress } from './client-ip.ts'
import type { CompiledLimit } from './compile-limits.ts'
import type { LimitMetrics } from './limit-metrics.ts'

/** What the answer's headers say: the tightest limit the request passed. */
export interface LimitVerdict {
  limit: number
  remaining: number
  resetMs: number
}

/** A check's answer: undefined when no limit applied (no principal for a per-agent limit…). */
export type LimitCheck = LimitVerdict | undefined | Promise<LimitVerdict | undefined>

export interface RateLimiter {
  /** Check `ctx` against `limits`; throws (or rejects with) `rate_limited` when one refuses. */
  check(limits: readonly CompiledLimit[], ctx: RequestContext, req: IncomingMessage): LimitCheck
  /**
   * The limits of tool `tool` (its own, and the gateway's agent_tool ones), checked where the
   * tool is known: the tool routes. Keeps the tighter verdict in `ctx.rateLimit`.
   */
  checkTool(ctx: RequestContext, req: IncomingMessage, tool: string): undefined | Promise<void>
}

export interface RateLimiterDeps {
  state: SharedState
  logger: Logger
  metrics: LimitMetrics
  /** Milliseconds since the epoch (log throttling only). */
  now?: () => number
}

// One warning per this interval while the state is failing, with how many it stood for.
const warnEveryMs = 10_000

/**
 * The `RateLimit-*` headers of `verdict`, added to the headers object an answer's writeHead gets.
 * Not through setHeader: once one header is set that way, writeHead puts every other header
 * through setHeader too, which costs a proxied answer more than the whole limit check.
 */
export function addLimitHeaders(headers: OutgoingHttpHeaders, verdict: LimitVerdict): void {
  headers['ratelimit-limit'] = verdict.limit
  headers['ratelimit-remaining'] = verdict.remaining
  headers['ratelimit-reset'] = Math.ceil(verdict.resetMs / 1000)
}

/** The `RateLimit-*` headers on `res`, for answers off the hot path (errors). */
export function setLimitHeaders(res: ServerResponse, verdict: LimitVerdict): void {
  res.setHeader('ratelimit-limit', verdict.limit)
  res.setHeader('ratelimit-remaining', verdict.remaining)
  res.setHeader('ratelimit-reset', Math.ceil(verdict.resetMs / 1000))
}

const keyedByPrincipal = new WeakMap<readonly CompiledLimit[], readonly CompiledLimit[]>()

/**
 * The limits of `limits` keyed by the principal (agent, user): for routes that learn who calls
 * only after stage 4 ran without a principal (`/api/proxy-request` reads the token from its body).
 * Worked out once per compiled list.
 */
export function principalKeyed(limits: readonly CompiledLimit[]): readonly CompiledLimit[] {
  let keyed = keyedByPrincipal.get(limits)
  if (keyed === undefined) {
    keyed = limits.filter((l) => l.by === 'agent' || l.by === 'user')
    keyedByPrincipal.set(limits, keyed)
  }
  return keyed
}

/** The tighter of two verdicts: fewer requests left, or, as many, the later reset. */
export function tighter(a: LimitVerdict | undefined, b: LimitVerdict | undefined): LimitVerdict | undefined {
  if (a === undefined) return b
  if (b === undefined) return a
  if (a.remaining !== b.remaining) return a.remaining < b.remaining ? a : b
  return a.resetMs >= b.resetMs ? a : b
}

function refusal(limit: CompiledLimit, decision: RateDecision): GatewayError {
  const retryAfter = Math.max(1, Math.ceil(decision.retryAfterMs / 1000))
  return new GatewayError('rate_limited', undefined, {
    details: { by: limit.by, limit: limit.source, retryAfterSeconds: retryAfter },
    headers: {
      'retry-after': String(retryAfter),
      'ratelimit-limit': String(limit.limit),
      'ratelimit-remaining': '0',
      'ratelimit-reset': String(Math.ceil(decision.resetMs / 1000)),
    },
  })
}

export function createRateLimiter(deps: RateLimiterDeps): RateLimiter {
  const now = deps.now ?? Date.now
  let lastWarning = Number.NEGATIVE_INFINITY
  let unreported = 0

  /** The limit could not be checked: admit (undefined) or refuse, as its failOpen says. */
  function unavailable(limit: CompiledLimit, err: unknown): undefined {
    deps.metrics.unavailable(limit.failOpen ? 'admitted' : 'refused')
    unreported++
    const at = now()
    if (at - lastWarning >= warnEveryMs) {
      deps.logger.warn(
        { err, limit: limit.source, failOpen: limit.failOpen, checks: unreported },
        limit.failOpen
          ? 'rate limits cannot be checked; admitting (failOpen)'
          : 'rate limits cannot be checked; refusing',
      )
      lastWarning = at
      unreported = 0
    }
    if (limit.failOpen) return undefined
    throw new GatewayError('rate_limited', 'The rate limit cannot be checked right now.', {
      details: { by: limit.by, limit: limit.source, reason: 'state_unavailable' },
      headers: { 'retry-after': '1' },
    })
  }

  /** Fold one limit's decision into the verdict so far; throws on a refusal. */
  function fold(
    verdict: LimitVerdict | undefined,
    limit: CompiledLimit,
    decision: RateDecision | undefined,
  ): LimitVerdict | undefined {
    if (decision === undefined) return verdict
    if (!decision.allowed) {
      deps.metrics.refused(limit.by)
      throw refusal(limit, decision)
    }
    return tighter(verdict, { limit: limit.limit, remaining: decision.remaining, resetMs: decision.resetMs })
  }

  function subjectOf(limit: CompiledLimit, ctx: RequestContext, req: IncomingMessage): string | undefined {
    switch (limit.by) {
      case 'global':
        return ''
      case 'channel':
        return ctx.channel?.name
      case 'path':
        return ctx.path
      case 'agent':
      case 'agent_tool':
        // agent_tool buckets are per tool already (compile-limits.ts): the agent is the subject.
        return ctx.principal?.kind === 'agent' ? ctx.principal.id : undefined
      case 'user':
        return ctx.principal?.kind === 'user' ? ctx.principal.id : undefined
      case 'ip':
        return clientAddress(req, ctx.clientIp, ctx.config.rateLimits.trustedProxies)
    }
  }

  async function settleAll(
    limits: readonly CompiledLimit[],
    pending: Array<RateDecision | Promise<RateDecision> | undefined>,
  ): Promise<LimitVerdict | undefined> {
    const decisions = await Promise.all(
      pending.map((p, i) =>
        p instanceof Promise ? p.catch((err: unknown) => unavailable(limits[i]!, err)) : p,
      ),
    )
    let verdict: LimitVerdict | undefined
    for (let i = 0; i < limits.length; i++) verdict = fold(verdict, limits[i]!, decisions[i])
    return verdict
  }

  function check(limits: readonly CompiledLimit[], ctx: RequestContext, req: IncomingMessage): LimitCheck {
    let verdict: LimitVerdict | undefined
    let pending: Array<RateDecision | Promise<RateDecision> | undefined> | undefined
    for (let i = 0; i < limits.length; i++) {
      const limit = limits[i]!
      const subject = subjectOf(limit, ctx, req)
      let decision: RateDecision | Promise<RateDecision> | undefined
      if (subject !== undefined) {
        try {
          decision = deps.state.rateLimit(limit.bucket, subject, limit.rate)
        } catch (err) {
          decision = unavailable(limit, err)
        }
      }
      if (pending === undefined && !(decision instanceof Promise)) {
        verdict = fold(verdict, limit, decision)
        continue
      }
      // The state answers asynchronously (Redis): gather the rest and settle them together.
      pending ??= new Array(i).fill(undefined)
      pending.push(decision)
    }
    if (pending === undefined) return verdict
    // The limits checked synchronously before the first promise are already in `verdict`.
    return settleAll(limits, pending).then((rest) => tighter(verdict, rest))
  }

  return {
    check,
    checkTool(ctx, req, tool) {
      const limits = ctx.config.rateLimits.tools.get(tool)
      if (limits === undefined || limits.length === 0) return undefined
      const checked = check(limits, ctx, req)
      if (checked instanceof Promise) {
        return checked.then((verdict) => {
          ctx.rateLimit = tighter(ctx.rateLimit, verdict)
        })
      }
      ctx.rateLimit = tighter(ctx.rateLimit, checked)
      return undefined
    },
  }
}
