import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { compileResilience, type RawResilience } from './policy.ts'
import { createResilience } from './registry.ts'

const policy = (raw: RawResilience) => compileResilience(raw, 'systems.x', [])

describe('resilience registry', () => {
  it('keeps a breaker open across a reload that leaves its settings unchanged', () => {
    const registry = createResilience({ now: () => 1_000 })
    const before = registry.target('system', 'x', policy({ breaker: { failures: 1, openMs: 60_000 } }))
    before.breaker!.failure(false)
    // A reload that changes another key compiles a new policy with the same breaker settings.
    const after = registry.target(
      'system',
      'x',
      policy({ breaker: { failures: 1, openMs: 60_000 }, retry: { attempts: 1 } }),
    )
    assert.equal(after.breaker, before.breaker)
    assert.equal(after.breaker!.state, 'open')
    assert.deepEqual(registry.breakerStates(), [{ kind: 'system', name: 'x', value: 1 }])
  })

  it('starts a changed breaker closed, and keeps the bulkhead whose slots calls still hold', () => {
    const registry = createResilience({ now: () => 1_000 })
    const first = registry.target(
      'tool',
      'serpapi',
      policy({ breaker: { failures: 1, openMs: 60_000 }, bulkhead: { maxConcurrent: 1 } }),
    )
    first.breaker!.failure(false)
    assert.equal(first.bulkhead!.acquire(), true)
    const second = registry.target(
      'tool',
      'serpapi',
      policy({ breaker: { failures: 2, openMs: 60_000 }, bulkhead: { maxConcurrent: 2 } }),
    )
    assert.equal(second.breaker!.state, 'closed')
    assert.equal(second.bulkhead, first.bulkhead)
    assert.equal(second.bulkhead!.inUse, 1)
    assert.equal(second.bulkhead!.acquire(), true, 'the new limit of 2 applies at once')
  })

  it('forgets systems and tools a reload removed', () => {
    const registry = createResilience()
    const p = policy({ breaker: { failures: 1, openMs: 1_000 } })
    registry.target('system', 'gone', p)
    registry.target('system', 'kept', p)
    registry.target('tool', 'gmail', p)
    registry.retain({ systems: new Map([['kept', {}]]), toolResilience: new Map() })
    assert.deepEqual(registry.breakerStates(), [{ kind: 'system', name: 'kept', value: 0 }])
  })

  it('keeps systems and tools of the same name apart', () => {
    const registry = createResilience()
    const p = policy({ breaker: { failures: 1, openMs: 1_000 } })
    assert.notEqual(registry.target('system', 'openai', p), registry.target('tool', 'openai', p))
  })
})
