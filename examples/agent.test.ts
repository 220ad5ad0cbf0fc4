/**
 * examples/agent.ts run as its header tells a newcomer to: the demo config in a real gateway
 * process, an agent key file from `4runr agent create`, then the example itself. The demo's search
 * quota is lowered to two calls so the run meets the quota as well as the policy denial.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { parse, stringify } from 'yaml'
import { testAdminKey } from '../test/support/gateway.ts'
import {
  demoConfigIn,
  root,
  runCliAsync,
  type Started,
  startGatewayProcess,
  tsx,
} from '../test/support/process.ts'

type Rule = { name?: string; quota?: { limit?: number } }
type Demo = { policies: Array<{ allow: Rule[] }> }

function runExample(
  env: NodeJS.ProcessEnv,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', tsx, join(root, 'examples/agent.ts')], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8')
  })
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8')
  })
  return new Promise((done) => child.once('close', (status) => done({ status, stdout, stderr })))
}

describe('examples/agent.ts against the demo', () => {
  let dir: string
  let gateway: Started

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'runr-example-'))
    const file = await demoConfigIn(dir)
    const demo = parse(await readFile(file, 'utf8')) as Demo
    const search = demo.policies[0]!.allow.find((rule) => rule.name === 'search')!
    search.quota = { ...search.quota, limit: 2 }
    await writeFile(file, stringify(demo))
    gateway = await startGatewayProcess(file, { RUNR_ADMIN_KEY: testAdminKey }, dir)
  })
  after(async () => {
    gateway.child.kill('SIGTERM')
    await gateway.exited
    await rm(dir, { recursive: true, force: true })
  })

  it('searches, reads a page after a policy denial, and stops cleanly at the quota', async () => {
    const keyFile = join(dir, 'research-bot.key.json')
    const env = { RUNR_ADMIN_KEY: testAdminKey }
    const created = await runCliAsync(
      [
        'agent',
        'create',
        '--name',
        'research-bot',
        '--out',
        keyFile,
        '--url',
        gateway.publicUrl,
        '--admin',
        gateway.adminUrl,
      ],
      env,
    )
    assert.equal(created.status, 0, created.stderr)
    const run = await runExample({ RUNR_URL: gateway.publicUrl, RUNR_AGENT_KEY: keyFile })
    assert.equal(run.status, 0, run.stderr)
    const out = run.stdout
    assert.match(
      out,
      /researching "agent security"\n {2}result: agent security: result 1 <https:\/\/example\.com\//,
    )
    assert.match(out, /policy denied reading https:\/\/example\.com\/\S+: policy_denied: .*\(request \S+\)/)
    assert.match(out, /page: 200 http:\/\/127\.0\.0\.1:\d+\/demo\/notes\/agent%20security \(fallback\)/)
    assert.match(out, /researching "api gateways"/)
    assert.match(out, /quota for search is used up; it resets in \d+ s\. Stopping here\./)
    assert.doesNotMatch(out, /researching "dpop"\n {2}result/)
    assert.match(out, /done\n$/)
  })
})
