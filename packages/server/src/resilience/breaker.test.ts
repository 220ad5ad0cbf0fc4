import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { CircuitBreaker } from './breaker.ts'
import type { BreakerPolicy } from './policy.ts'

const consecutive: BreakerPolicy = {
  mode: 'consecutive',
  failures: 3,
  rate: 1,
  windowMs: 10_000,
  minCalls: 1,
  openMs: 5_000,
  halfOpenProbes: 2,
}

function clock(start = 1_000_000) {
  let t = start
  return { now: () => t, advance: (ms: number) => (t += ms) }
}

describe('circuit breaker', () => {
  it('opens after the configured consecutive failures and refuses with the time left', () => {
    const c = clock()
    const b = new CircuitBreaker(consecutive, c.now)
    b.failure(false)
    b.failure(false)
    b.success(false)
    b.failure(false)
    b.failure(false)
    assert.equal(b.state, 'closed', 'a success in between restarts the count')
    b.failure(false)
    assert.equal(b.state, 'open')
    c.advance(1_500)
    assert.deepEqual(b.acquire(), { ok: false, retryAfterMs: 3_500 })
  })

  it('half-opens after openMs, lets only the probes through, and closes when they all succeed', () => {
    const c = clock()
    const changes: string[] = []
    const b = new CircuitBreaker(consecutive, c.now, (s) => changes.push(s))
    for (let i = 0; i < 3; i++) b.failure(false)
    c.advance(5_000)
    assert.equal(b.state, 'half_open')
    const first = b.acquire()
    const second = b.acquire()
    assert.deepEqual(
      [first, second],
      [
        { ok: true, probe: true },
        { ok: true, probe: true },
      ],
    )
    assert.equal(b.acquire().ok, false, 'a third call waits for the probes')
    b.success(true)
    assert.equal(b.state, 'half_open')
    b.success(true)
    assert.equal(b.state, 'closed')
    assert.deepEqual(changes, ['open', 'half_open', 'closed'])
  })

  it('opens again when a half-open probe fails', () => {
    const c = clock()
    const b = new CircuitBreaker(consecutive, c.now)
    for (let i = 0; i < 3; i++) b.failure(false)
    c.advance(5_000)
    assert.equal(b.acquire().ok, true)
    b.failure(true)
    assert.equal(b.state, 'open')
    assert.deepEqual(b.acquire(), { ok: false, retryAfterMs: 5_000 })
  })

  it('gives a probe back when its call told nothing, so another may try', () => {
    const c = clock()
    const b = new CircuitBreaker({ ...consecutive, halfOpenProbes: 1 }, c.now)
    for (let i = 0; i < 3; i++) b.failure(false)
    c.advance(5_000)
    assert.equal(b.acquire().ok, true)
    assert.equal(b.acquire().ok, false)
    b.release(true)
    assert.equal(b.acquire().ok, true)
  })

  it('in rate mode opens when the failure rate over the window reaches the threshold after minCalls', () => {
    const c = clock()
    const b = new CircuitBreaker({ ...consecutive, mode: 'rate', rate: 0.5, minCalls: 10 }, c.now)
    for (let i = 0; i < 4; i++) {
      b.success(false)
      b.failure(false)
    }
    assert.equal(b.state, 'closed', '8 calls are fewer than minCalls')
    b.success(false)
    b.failure(false)
    assert.equal(b.state, 'open', '5 failures in 10 calls is a rate of 0.5')
  })

  it('in rate mode forgets failures that left the rolling window', () => {
    const c = clock()
    const b = new CircuitBreaker({ ...consecutive, mode: 'rate', rate: 0.5, minCalls: 4 }, c.now)
    b.failure(false)
    b.failure(false)
    b.failure(false)
    c.advance(11_000)
    b.success(false)
    b.success(false)
    b.success(false)
    b.failure(false)
    assert.equal(b.state, 'closed', 'only the last four calls count: one failure in four')
  })
})
