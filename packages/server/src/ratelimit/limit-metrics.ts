/**
 * The rate limiter's metrics (DESIGN §16), registered on the gateway's registry: refusals by what
 * the refusing limit counts by, and checks the shared state could not answer, by what was done.
 */
import { Counter, type Registry } from 'prom-client'
import type { LimitBy } from './compile-limits.ts'

export interface LimitMetrics {
  refused(by: LimitBy): void
  /** The state could not answer; `outcome` is what the limit's failOpen made of it. */
  unavailable(outcome: 'admitted' | 'refused'): void
}

export function createLimitMetrics(registry: Registry): LimitMetrics {
  const refusals = new Counter({
    name: 'runr_rate_limited_total',
    help: 'Requests refused by a rate limit (429), by what the limit counts by.',
    labelNames: ['by'] as const,
    registers: [registry],
  })
  const failures = new Counter({
    name: 'runr_rate_limit_unavailable_total',
    help: 'Rate-limit checks the shared state (Redis) could not answer, by outcome (admitted: failOpen; refused).',
    labelNames: ['outcome'] as const,
    registers: [registry],
  })
  return {
    refused: (by) => refusals.labels(by).inc(),
    unavailable: (outcome) => failures.labels(outcome).inc(),
  }
}
