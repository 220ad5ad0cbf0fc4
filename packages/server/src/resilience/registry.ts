/**
 * The resilience state of every system and tool: one breaker, retry budget and bulkhead each,
 * made on first use and kept across reloads while their settings stay the same. State is per
 * gateway process (DESIGN §14 lists what instances share; breakers are not in it): each instance
 * judges an upstream by what it sees itself, the way Envoy's outlier detection does.
 */
import { type BreakerState, breakerStateValue, CircuitBreaker } from './breaker.ts'
import { Bulkhead } from './bulkhead.ts'
import type { ResiliencePolicy } from './policy.ts'
import { RetryBudget } from './retry.ts'

export type TargetKind = 'system' | 'tool'

/** The live state behind one system's or tool's policy. */
export interface Target {
  readonly kind: TargetKind
  readonly name: string
  readonly policy: ResiliencePolicy
  readonly breaker: CircuitBreaker | undefined
  readonly budget: RetryBudget | undefined
  readonly bulkhead: Bulkhead | undefined
}

export interface ResilienceDeps {
  now?: () => number
  random?: () => number
  /** A breaker changed state (for the log). */
  onBreakerChange?: (kind: TargetKind, name: string, state: BreakerState) => void
  /** One retry was made (for the metrics). */
  onRetry?: (kind: TargetKind, name: string) => void
}

export interface Resilience {
  /** The state for `name` under `policy`; unchanged settings find the same state. */
  target(kind: TargetKind, name: string, policy: ResiliencePolicy): Target
  /** Forget systems and tools a reloaded config no longer has (their breakers leave /metrics). */
  retain(config: {
    systems: ReadonlyMap<string, unknown>
    toolResilience: ReadonlyMap<string, unknown>
  }): void
  /** Every breaker's state as a gauge value (0 closed, 1 open, 2 half-open). */
  breakerStates(): Array<{ kind: TargetKind; name: string; value: number }>
  readonly now: () => number
  readonly random: () => number
  readonly onRetry: (kind: TargetKind, name: string) => void
}

interface Entry extends Target {
  signature: string
}

/** Create the registry; one per gateway. */
export function createResilience(deps: ResilienceDeps = {}): Resilience {
  const now = deps.now ?? Date.now
  const random = deps.random ?? Math.random
  const maps: Record<TargetKind, Map<string, Entry>> = { system: new Map(), tool: new Map() }

  function build(kind: TargetKind, name: string, policy: ResiliencePolicy, previous?: Entry): Entry {
    const keepBreaker =
      previous?.breaker !== undefined &&
      policy.breaker !== undefined &&
      JSON.stringify(previous.breaker.policy) === JSON.stringify(policy.breaker)
    let budget: RetryBudget | undefined
    if (policy.retry !== undefined) {
      budget = previous?.budget ?? new RetryBudget(policy.retry.budget)
      budget.setRatio(policy.retry.budget)
    }
    let bulkhead: Bulkhead | undefined
    if (policy.bulkhead !== undefined) {
      // The same object, so calls holding a slot give it back where the next call looks.
      bulkhead = previous?.bulkhead ?? new Bulkhead(policy.bulkhead, `${kind}:${name}`)
      bulkhead.policy = policy.bulkhead
    }
    return {
      kind,
      name,
      policy,
      signature: policy.signature,
      breaker: keepBreaker
        ? previous.breaker
        : policy.breaker === undefined
          ? undefined
          : new CircuitBreaker(policy.breaker, now, (state) => deps.onBreakerChange?.(kind, name, state)),
      budget,
      bulkhead,
    }
  }

  return {
    now,
    random,
    onRetry: deps.onRetry ?? (() => {}),
    target(kind, name, policy) {
      const map = maps[kind]
      const found = map.get(name)
      if (found !== undefined && found.signature === policy.signature) return found
      const entry = build(kind, name, policy, found)
      map.set(name, entry)
      return entry
    },
    retain(config) {
      for (const name of maps.system.keys()) if (!config.systems.has(name)) maps.system.delete(name)
      for (const name of maps.tool.keys()) if (!config.toolResilience.has(name)) maps.tool.delete(name)
    },
    breakerStates() {
      const out: Array<{ kind: TargetKind; name: string; value: number }> = []
      for (const kind of ['system', 'tool'] as const)
        for (const entry of maps[kind].values())
          if (entry.breaker !== undefined)
            out.push({ kind, name: entry.name, value: breakerStateValue[entry.breaker.state] })
      return out
    },
  }
}
