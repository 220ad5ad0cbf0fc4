/**
 * examples/agent.ts run as its header tells a newcomer to: the demo config in a real gateway
 * process, an agent key file as `4runr agent create` writes it, then the example itself. The demo's search
 * quota is lowered to two calls so the run meets the quota as well as the policy denial.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { parse, stringify } from 'yaml'
import { AdminClient } from '../packages/sdk/src/index.ts'
import { testAdminKey } from '../test/support/gateway.ts'
import { demoConfigIn, root, type Started, startGatewayProcess, tsx } from '../test/support/process.ts'

type Rule = { name?: string; quota?: { limit?: number } }
type Demo = { policies: Array<{ allow: Rule[] }> }

/**
 * The key file `4runr agent create --name research-bot` writes, made over the admin API (one
 * process fewer to start; the SDK's own tests read a key file written by the CLI itself).
 */
async function agentKeyFile(gateway: Started) {
  const admin = new AdminClient({ baseUrl: gateway.adminUrl, adminKey: testAdminKey })
  const agent = await admin.agents.create({ name: 'research-bot' })
  const meta = (await (
    await fetch(`${gateway.publicUrl}/.well-known/oauth-authorization-server`)
  ).json()) as {
    issuer: string
  }
  return {
    agentId: agent.id,
    name: agent.name,
    kid: agent.kid,
    privateKeyJwk: agent.privateKeyJwk,
    gatewayUrl: gateway.publicUrl,
    issuer: meta.issuer,
  }
}

/** Run the example; killed after a minute so a hang fails with its output rather than silently. */
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
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
  return new Promise((done) =>
    child.once('close', (status) => {
      clearTimeout(timer)
      done({ status, stdout, stderr })
    }),
  )
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
    await writeFile(keyFile, JSON.stringify(await agentKeyFile(gateway)))
    const run = await runExample({ RUNR_URL: gateway.publicUrl, RUNR_AGENT_KEY: keyFile })
    assert.equal(run.status, 0, `${run.stdout}\n${run.stderr}`)
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
