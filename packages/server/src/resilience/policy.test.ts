import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { compileConfig } from '../config/compile.ts'
import { ConfigError, parseConfigText } from '../config/load.ts'
import { resilienceDefaults } from './policy.ts'

function refusal(yaml: string): string[] {
  try {
    compileConfig(parseConfigText(yaml), yaml)
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err))
    return err.problems.map((p) => `${p.path}: ${p.message}`)
  }
  assert.fail('expected the config to be refused')
}

const system = (keys: string) => `systems:\n  orders: { kind: http, url: http://127.0.0.1:9000, ${keys} }\n`

describe('resilience settings', () => {
  it('compiles retry, breaker, bulkhead and timeouts with the documented defaults', () => {
    const text = system(
      'retry: { attempts: 2 }, breaker: { failures: 5, openMs: 30s }, bulkhead: { maxConcurrent: 8 }',
    )
    const policy = compileConfig(parseConfigText(text), text).systems.get('orders')
    assert.ok(policy !== undefined && policy.kind === 'http')
    const { retry, breaker, bulkhead } = policy.resilience
    assert.deepEqual(
      { ...retry, on: [...retry!.on] },
      {
        attempts: 2,
        on: [...resilienceDefaults.retryOn],
        baseMs: 100,
        maxBackoffMs: 2_000,
        maxRetryAfterMs: 10_000,
        budget: 0.2,
      },
    )
    assert.deepEqual(breaker, {
      mode: 'consecutive',
      failures: 5,
      rate: 1,
      windowMs: 30_000,
      minCalls: 20,
      openMs: 30_000,
      halfOpenProbes: 1,
    })
    assert.deepEqual(bulkhead, { maxConcurrent: 8, maxQueue: 0, queueTimeoutMs: 1_000 })
  })

  it('leaves systems and tools without the keys with no resilience at all', () => {
    const text = `${system('timeoutMs: 100')}tools:\n  serpapi: { url: http://127.0.0.1:1 }\n`
    const config = compileConfig(parseConfigText(text), text)
    const orders = config.systems.get('orders')
    assert.ok(orders !== undefined && orders.kind === 'http')
    assert.equal(orders.resilience.signature, '')
    assert.equal(config.toolResilience.get('serpapi')?.signature, '')
  })

  it('refuses a breaker with neither failures nor rate, or with both, naming the path', () => {
    assert.deepEqual(refusal(system('breaker: { openMs: 1s }')), [
      'systems.orders.breaker: set failures (consecutive) or rate (failure rate)',
    ])
    assert.deepEqual(refusal(system('breaker: { failures: 3, rate: 0.5, openMs: 1s }')), [
      'systems.orders.breaker: set either failures or rate, not both',
    ])
  })

  it('refuses a maximum backoff shorter than the base', () => {
    assert.deepEqual(refusal(`tools:\n  gmail: { retry: { attempts: 1, backoff: 2s, maxBackoff: 1s } }\n`), [
      'tools.gmail.retry.maxBackoff: must not be shorter than retry.backoff',
    ])
  })

  it('refuses out-of-range values through the schema with their path', () => {
    for (const [keys, path] of [
      ['retry: { attempts: 11 }', 'systems.orders.retry.attempts'],
      ['retry: { attempts: 1, budget: 1.5 }', 'systems.orders.retry.budget'],
      ['breaker: { rate: 0, openMs: 1s }', 'systems.orders.breaker.rate'],
      ['bulkhead: { maxConcurrent: 0 }', 'systems.orders.bulkhead.maxConcurrent'],
      ['totalTimeoutMs: 0', 'systems.orders.totalTimeoutMs'],
      ['retry: { attempts: 1, sometimes: true }', 'systems.orders.retry'],
    ] as const) {
      const found = refusal(system(keys))
      assert.ok(
        found.some((p) => p.startsWith(path)),
        `${keys}: ${JSON.stringify(found)}`,
      )
    }
  })
})
