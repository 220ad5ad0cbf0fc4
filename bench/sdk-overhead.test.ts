/**
 * The SDK overhead measurement on a few calls against a real gateway (in this process: only the
 * shape of the result is checked here, not its numbers): every series makes its calls, and a
 * refused call fails the measurement instead of being timed.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { type FakeUpstreams, startFakeUpstreams } from '../packages/server/src/fakes/index.ts'
import { startTestGateway, type TestGateway, testAdminKey } from '../test/support/gateway.ts'
import { putSecret } from '../test/support/tools.ts'
import { type BenchAgent, createAgent } from './identity.ts'
import { formatSdkOverhead, measureSdkOverhead } from './sdk-overhead.ts'

describe('sdk overhead measurement', () => {
  let fakes: FakeUpstreams
  let gw: TestGateway
  let agent: BenchAgent
  const key = `serp-${randomBytes(8).toString('hex')}`

  before(async () => {
    fakes = await startFakeUpstreams({ credentials: { serpapi: key, openai: 'sk-x', gmail: 'ya29.x' } })
    gw = await startTestGateway({
      tools: { serpapi: { url: fakes.serpapi.url } },
      policies: [
        {
          name: 'bench',
          agents: { names: ['sdk-bench'] },
          allow: [{ tool: 'serpapi', actions: ['search'] }],
        },
      ],
    })
    await putSecret(gw, 'serpapi_key', key)
    agent = await createAgent(gw.adminUrl, testAdminKey, 'sdk-bench')
  })
  after(async () => {
    await gw.stop()
    await fakes.close()
  })

  const options = () => ({
    publicUrl: gw.publicUrl,
    agent,
    scope: 'serpapi:search',
    tool: 'serpapi',
    action: 'search',
    params: { q: 'bench', num: 2 },
    block: 5,
    blocks: 2,
  })

  it('times raw fetch, the SDK and the SDK with DPoP on the same route and prints them', async () => {
    const result = await measureSdkOverhead(options())
    for (const series of [result.raw, result.sdk, result.sdkDpop!]) {
      assert.equal(series.calls, 10)
      assert.ok(series.medianUs > 0 && series.p99Us >= series.medianUs && series.cpuUsPerCall > 0)
    }
    assert.equal(result.overhead.cpuUsPerCall, result.sdk.cpuUsPerCall - result.raw.cpuUsPerCall)
    const table = formatSdkOverhead(result)
    assert.match(table, /^raw fetch +\d+ +\d+ +\d+ +10$/m)
    assert.match(table, /^sdk \+ dpop +\d+/m)
    assert.match(table, /^sdk overhead: -?\d+ µs CPU/m)
  })

  it('fails when the gateway refuses the calls', async () => {
    await assert.rejects(
      measureSdkOverhead({ ...options(), tool: 'openai', action: 'chat', scope: 'serpapi:search' }),
    )
  })
})
