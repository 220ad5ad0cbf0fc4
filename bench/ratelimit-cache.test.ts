/**
 * The rate-limit and cache rows' gateway configs compile as the gateway compiles them, with the
 * limit on the limited route only and the SerpAPI answers cached; and the rows come in pairs,
 * baseline first. Starting the rows needs the production build (run by the benchmark itself).
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { toolCachePolicy } from '../packages/server/src/cache/compile-cache.ts'
import { compileConfig } from '../packages/server/src/config/compile.ts'
import { parseConfigText } from '../packages/server/src/config/load.ts'
import { RATE_LIMIT_CACHE_TARGETS, rateLimitCacheConfig } from './ratelimit-cache.ts'

const options = {
  port: 8080,
  adminPort: 8081,
  upstreamPort: 9000,
  tmpDir: '/tmp/bench',
  redisPrefix: 'runr_bench_x:',
}

describe('the rate-limit and cache benchmark rows', () => {
  for (const mode of ['memory', 'redis'] as const) {
    it(`compile a ${mode} config with one limit on /bench-rl only and SerpAPI cached`, () => {
      const text = rateLimitCacheConfig({ ...options, mode })
      const config = compileConfig(parseConfigText(text), text)
      assert.equal(config.raw.redis !== undefined, mode === 'redis')
      assert.deepEqual(config.rateLimits.channels.get('bench-none'), [])
      const [limit] = config.rateLimits.channels.get('bench-rl')!
      assert.equal(limit!.by, 'ip')
      assert.equal(limit!.limit, 1_000_000_000)
      assert.equal(toolCachePolicy(config.cache, 'serpapi', 'search')?.ttlMs, 3_600_000)
    })
  }

  it('list each pair baseline first', () => {
    assert.deepEqual(
      RATE_LIMIT_CACHE_TARGETS.map((t) => t.name),
      ['rl-none', 'rl-memory', 'rl-redis-none', 'rl-redis', 'tool-cache-miss', 'tool-cache-hit'],
    )
  })
})
