import assert from 'node:assert/strict'
import { after, before, beforeEach, describe, it } from 'node:test'
import { gatewayRejection } from '../../../../../test/support/rejection.ts'
import type { FakeServer } from '../../fakes/fake-server.ts'
import { startFakeSerpApi } from '../../fakes/serpapi.ts'
import { type ActionRunner, createActionRunner } from '../test-helpers.ts'
import { serpapi } from './serpapi.ts'

const key = 'serp-adapter-test-key-0123'

describe('the serpapi tool', () => {
  let fake: FakeServer
  let runner: ActionRunner
  const run = (params: unknown, secret = key) =>
    runner.run(serpapi, 'search', params, { settings: { url: fake.url }, secret })

  before(async () => {
    fake = await startFakeSerpApi({ apiKey: key })
    runner = createActionRunner()
  })
  after(async () => {
    await runner.close()
    await fake.close()
  })
  beforeEach(() => fake.faults.clear())

  it('searches with the key as api_key and answers the SerpAPI JSON', async () => {
    const result = await run({ q: 'coffee', num: 3, location: 'Austin, Texas' })
    assert.ok('data' in result)
    const data = result.data as { organic_results: unknown[]; search_parameters: { q: string } }
    assert.equal(data.organic_results.length, 3)
    assert.equal(data.search_parameters.q, 'coffee')
    const seen = fake.requests.at(-1)!
    assert.equal(seen.authorized, true)
    assert.deepEqual(seen.query, { engine: 'google', q: 'coffee', num: '3', location: 'Austin, Texas' })
  })

  it('lists every problem of bad search parameters', () => {
    const problems = runner.problems(serpapi, 'search', { num: 0, engine: 'Bad Engine', extra: 1 })
    assert.deepEqual(problems.map((p) => p.path).sort(), ['(root)', 'engine', 'extra', 'num'])
  })

  it('turns a refused key and upstream faults into 502 upstream_error with the status', async () => {
    let err = await gatewayRejection(run({ q: 'x' }, 'wrong-key'))
    assert.deepEqual([err.code, err.details?.['upstreamStatus']], ['upstream_error', 401])
    assert.doesNotMatch(err.message, /wrong-key/)
    fake.faults.add({ kind: 'non-json' })
    err = await gatewayRejection(run({ q: 'x' }))
    assert.deepEqual([err.code, err.details?.['upstreamStatus']], ['upstream_error', 200])
    fake.faults.add({ kind: 'reset' })
    err = await gatewayRejection(run({ q: 'x' }))
    assert.equal(err.code, 'upstream_error')
  })
})
