import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { RetryPolicy } from './policy.ts'
import { backoffMs, nextDelayMs, RetryBudget, retryAfterMs, sleep } from './retry.ts'

const policy: RetryPolicy = {
  attempts: 5,
  on: new Set([503]),
  baseMs: 100,
  maxBackoffMs: 1_000,
  maxRetryAfterMs: 3_000,
  budget: 0.2,
}

describe('retry timing and budget', () => {
  it('backs off exponentially with full jitter, capped', () => {
    assert.equal(
      backoffMs(policy, 1, () => 0.999),
      99,
    )
    assert.equal(
      backoffMs(policy, 3, () => 0.5),
      200,
    )
    assert.equal(
      backoffMs(policy, 10, () => 0.999),
      999,
    )
    assert.equal(
      backoffMs(policy, 2, () => 0),
      0,
    )
  })

  it('reads Retry-After as seconds or as an HTTP date', () => {
    const now = Date.parse('2026-01-01T00:00:00Z')
    assert.equal(retryAfterMs('2', now), 2_000)
    assert.equal(retryAfterMs('Thu, 01 Jan 2026 00:00:05 GMT', now), 5_000)
    assert.equal(retryAfterMs('soon', now), undefined)
    assert.equal(retryAfterMs(undefined, now), undefined)
  })

  it('waits as long as Retry-After asks up to the cap, and gives up beyond it', () => {
    assert.equal(
      nextDelayMs(policy, 1, '2', () => 0.5, 0),
      2_000,
    )
    assert.equal(
      nextDelayMs(policy, 1, '4', () => 0.5, 0),
      undefined,
    )
    assert.equal(
      nextDelayMs(policy, 1, undefined, () => 0.5, 0),
      50,
    )
  })

  it('keeps retries to the budget fraction of calls beyond its reserve', () => {
    const budget = new RetryBudget(0.2)
    let retries = 0
    for (let call = 0; call < 1_000; call++) {
      budget.deposit()
      while (budget.withdraw()) retries++
    }
    assert.ok(retries <= 0.2 * 1_000 + 10, `${retries} retries`)
    assert.ok(retries >= 0.2 * 1_000 - 1, `${retries} retries`)
  })

  it('stops sleeping when the caller goes away', async () => {
    let fire = (): void => {}
    const abort = {
      aborted: false,
      onAbort(fn: () => void) {
        fire = fn
        return () => {}
      },
    }
    const started = Date.now()
    const slept = sleep(10_000, abort, () => new Error('gone'))
    fire()
    await assert.rejects(slept, /gone/)
    assert.ok(Date.now() - started < 1_000)
  })
})
