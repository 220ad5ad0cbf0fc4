/**
 * The Python SDK (`sdk-python`, package runrgateway) end to end (issue 9): a real gateway process
 * with the fake SerpAPI, OpenAI and Gmail upstreams, two agents made through the admin API (one
 * with the key file `4runr agent create` writes, one with the PEM of `/api/create-agent`), then the
 * SDK's own unittest suite run by /usr/bin/python3 against it. The Python tests break the fakes
 * through a small control endpoint here, to meet the gateway's real upstream errors and timeouts.
 *
 * Without python3 or its `cryptography` package the test is skipped, unless
 * RUNR_TEST_REQUIRE_SERVICES=1 (CI), where that is a failure: `scripts/setup-python.sh` installs them.
 */
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { stringify } from 'yaml'
import { type FakeUpstreams, type Fault, startFakeUpstreams } from '../../packages/server/src/fakes/index.ts'
import { demoConfigIn, root, runCli, type Started, startGatewayProcess } from '../support/process.ts'

const python = process.env['RUNR_TEST_PYTHON'] ?? '/usr/bin/python3'
const adminKey = `sdk-py-admin-${randomBytes(12).toString('hex')}`
const credentials = {
  serpapi: `serp-${randomBytes(12).toString('hex')}`,
  openai: `sk-${randomBytes(12).toString('hex')}`,
  gmail: `ya29.${randomBytes(12).toString('hex')}`,
}

/** Why the Python SDK cannot run here, or undefined when it can. */
function pythonProblem(): string | undefined {
  const probe = spawnSync(python, ['-c', 'import cryptography, json, http.server'], { encoding: 'utf8' })
  if (probe.error !== undefined) return `${python} cannot run: ${probe.error.message}`
  if (probe.status !== 0)
    return `${python} lacks the cryptography package (scripts/setup-python.sh installs it)`
  return undefined
}

/** Lets the Python tests queue faults on the fakes: `POST /faults/{serpapi|openai|gmail}`. */
async function startFaultControl(fakes: FakeUpstreams): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (chunk: string) => {
      body += chunk
    })
    req.on('end', () => {
      const name = /^\/faults\/(serpapi|openai|gmail)$/.exec(req.url ?? '')?.[1] as keyof FakeUpstreams
      try {
        if (req.method !== 'POST' || name === undefined) throw new Error('POST /faults/{fake}')
        const { fault, options } = JSON.parse(body) as { fault: Fault; options?: { path?: string } }
        ;(fakes[name] as FakeUpstreams['serpapi']).faults.add(fault, options)
        res.writeHead(204).end()
      } catch (err) {
        res.writeHead(400, { 'content-type': 'text/plain' }).end((err as Error).message)
      }
    })
  })
  await new Promise<void>((ready) => server.listen(0, '127.0.0.1', ready))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server }
}

const problem = pythonProblem()

/** Fail in CI, skip elsewhere: answers whether the Python side can run. */
function pythonAvailable(): boolean {
  if (problem === undefined) return true
  if (process.env['RUNR_TEST_REQUIRE_SERVICES'] === '1') {
    throw new Error(`the Python SDK tests are required (RUNR_TEST_REQUIRE_SERVICES=1): ${problem}`)
  }
  return false
}

/** Run python3 with `env` without blocking this process (fakes may answer from it). */
async function runPython(
  args: string[],
  env: Record<string, string>,
): Promise<{ status: number | null; output: string }> {
  const child = spawn(python, args, {
    cwd: root,
    env: { ...process.env, ...env, PYTHONDONTWRITEBYTECODE: '1', PYTHONPATH: join(root, 'sdk-python') },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  const collect = (chunk: Buffer) => {
    output += chunk.toString('utf8')
  }
  child.stdout!.on('data', collect)
  child.stderr!.on('data', collect)
  const status = await new Promise<number | null>((done) => child.once('close', done))
  return { status, output }
}

describe('the Python SDK against a real gateway process', () => {
  let dir: string
  let fakes: FakeUpstreams
  let control: Awaited<ReturnType<typeof startFaultControl>>
  let gateway: Started
  let demo: Started
  let demoDir: string
  const env: Record<string, string> = {}

  const admin = async (path: string, body?: unknown): Promise<Record<string, unknown>> => {
    const res = await fetch(`${gateway.adminUrl}${path}`, {
      method: body === undefined ? 'GET' : 'POST',
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
    const text = await res.text()
    assert.ok(res.ok, `${path}: ${res.status} ${text}`)
    return text === '' ? {} : (JSON.parse(text) as Record<string, unknown>)
  }
  const putSecret = async (name: string, value: string) => {
    const res = await fetch(`${gateway.adminUrl}/v1/secrets/${name}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ value }),
    })
    assert.equal(res.status, 204, await res.text())
  }

  // The demo for examples/agent.py starts beside the test gateway: both take seconds.
  const startDemo = async () => {
    demoDir = await mkdtemp(join(tmpdir(), 'runr-sdk-py-demo-'))
    demo = await startGatewayProcess(await demoConfigIn(demoDir), { RUNR_ADMIN_KEY: adminKey }, demoDir)
  }

  const startTestGateway = async () => {
    dir = await mkdtemp(join(tmpdir(), 'runr-sdk-py-'))
    fakes = await startFakeUpstreams({ credentials })
    control = await startFaultControl(fakes)
    const config = {
      gateway: {
        listen: { host: '127.0.0.1', port: 0 },
        admin: { host: '127.0.0.1', port: 0 },
        logLevel: 'warn',
      },
      store: { kind: 'sqlite', path: join(dir, '4runr.db') },
      tools: {
        serpapi: { url: fakes.serpapi.url, timeoutMs: 1500 },
        // One failure opens OpenAI's breaker for 2 s: the CircuitOpenError test, which waits it out.
        openai: { url: fakes.openai.url, breaker: { failures: 1, openMs: '2s' } },
        gmail: { url: fakes.gmail.url },
        http_fetch: { allowNetworks: ['127.0.0.1/32'], timeoutMs: 1500 },
      },
      policies: [
        {
          name: 'sdk-agents',
          agents: { labels: { team: 'sdk' } },
          allow: [
            { name: 'search', tool: 'serpapi', actions: ['search'], maxRepeats: { count: 2, period: '1h' } },
            { name: 'llm', tool: 'openai', actions: ['chat'] },
            { name: 'mailbox', tool: 'gmail', actions: ['profile'] },
            { name: 'mail', tool: 'gmail', actions: ['send'], approval: 'required' },
            { name: 'fetch', tool: 'http_fetch', actions: ['get'], domains: { allow: ['127.0.0.1'] } },
          ],
        },
        {
          name: 'sdk-quota',
          agents: { labels: { team: 'sdk-quota' } },
          allow: [
            { name: 'search', tool: 'serpapi', actions: ['search'], quota: { limit: 2, period: '1h' } },
          ],
        },
      ],
    }
    const configFile = join(dir, '4runr.yaml')
    await writeFile(configFile, stringify(config))
    gateway = await startGatewayProcess(configFile, { RUNR_ADMIN_KEY: adminKey }, dir)
    await putSecret('serpapi_key', credentials.serpapi)
    await putSecret('openai_key', credentials.openai)
    await putSecret('gmail_token', credentials.gmail)

    const { issuer } = (await (
      await fetch(`${gateway.publicUrl}/.well-known/oauth-authorization-server`)
    ).json()) as { issuer: string }
    // The key file `4runr agent create` writes.
    const bot = await admin('/v1/agents', { name: 'py-bot', labels: { team: 'sdk' } })
    const keyFile = join(dir, 'py-bot.key.json')
    await writeFile(
      keyFile,
      JSON.stringify({
        agentId: bot['id'],
        name: bot['name'],
        kid: bot['kid'],
        privateKeyJwk: bot['privateKeyJwk'],
        gatewayUrl: gateway.publicUrl,
        issuer,
      }),
      { mode: 0o600 },
    )
    // The original 4Runr API answers a PKCS#8 PEM, which the SDK takes as it is.
    const old = await admin('/api/create-agent', { name: 'py-pem-bot' })
    const pemFile = join(dir, 'py-pem-bot.pem')
    await writeFile(pemFile, old['private_key'] as string, { mode: 0o600 })
    const labelled = await fetch(`${gateway.adminUrl}/v1/agents/${old['agent_id']}`, {
      method: 'PATCH',
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ labels: { team: 'sdk' } }),
    })
    assert.equal(labelled.status, 200, await labelled.text())

    Object.assign(env, {
      RUNR_SDK_TEST_REQUIRE_GATEWAY: '1',
      RUNR_SDK_TEST_URL: gateway.publicUrl,
      RUNR_SDK_TEST_ADMIN_URL: gateway.adminUrl,
      RUNR_SDK_TEST_ADMIN_KEY: adminKey,
      RUNR_SDK_TEST_FAULTS_URL: control.url,
      RUNR_SDK_TEST_KEY_FILE: keyFile,
      RUNR_SDK_TEST_PEM_FILE: pemFile,
      RUNR_SDK_TEST_PEM_AGENT: old['agent_id'] as string,
    })
  }

  before(async () => {
    if (!pythonAvailable()) return
    await Promise.all([startDemo(), startTestGateway()])
  })

  after(async () => {
    for (const started of [gateway, demo]) {
      if (started === undefined) continue
      started.child.kill('SIGTERM')
      await started.exited
    }
    await fakes?.close()
    control?.server.close()
    for (const path of [dir, demoDir])
      if (path !== undefined) await rm(path, { recursive: true, force: true })
  })

  it('runs examples/agent.py: it searches, skips the pages policy denies, and stops politely at the loop guard', async (t) => {
    if (problem !== undefined) {
      t.skip(problem)
      return
    }
    const question = `example ${randomBytes(4).toString('hex')}`
    const args = [join(root, 'examples/agent.py'), env['RUNR_SDK_TEST_KEY_FILE']!, question]
    const first = await runPython(args, env)
    assert.equal(first.status, 0, first.output)
    assert.match(first.output, /3 results/)
    assert.match(first.output, /not allowed \(policy_denied/)
    assert.match(first.output, /fetched http:\/\/127\.0\.0\.1:\d+\/demo\/hello: HTTP 404/)
    assert.equal((await runPython(args, env)).status, 0)
    // The policy's loop guard allows the same search twice an hour.
    const third = await runPython(args, env)
    assert.equal(third.status, 0, third.output)
    assert.match(third.output, /search: rate_limited, next try possible in \d+s; stopping here/)
  })

  it('passes the SDK unittest suite: tokens, DPoP, typed errors, retries, approvals, admin, wheel', async (t) => {
    if (problem !== undefined) {
      t.skip(problem)
      return
    }
    const { status, output } = await runPython(
      ['-m', 'unittest', 'discover', '-s', 'sdk-python/tests', '-v'],
      env,
    )
    assert.equal(status, 0, `python -m unittest failed:\n${output}`)
    assert.match(output, /\nOK\s*$/, output)
    assert.doesNotMatch(output, /skipped/, `no Python test may be skipped here:\n${output}`)
    const ran = Number(/Ran (\d+) tests?/.exec(output)?.[1] ?? 0)
    assert.ok(ran >= 30, `only ${ran} Python tests ran:\n${output}`)
    // The credentials the gateway injects never reach the agent side.
    for (const value of Object.values(credentials)) assert.ok(!output.includes(value))
  })

  it('runs examples/agent.py on the demo as its docstring says: redacted search, denied links, the demo page', async (t) => {
    if (problem !== undefined) {
      t.skip(problem)
      return
    }
    const keyFile = join(demoDir, 'research-bot.key.json')
    const created = runCli(['agent', 'create', '--name', 'research-bot', '--out', keyFile], {
      RUNR_ADMIN_KEY: adminKey,
      RUNR_ADMIN_URL: demo.adminUrl,
      RUNR_URL: demo.publicUrl,
    })
    assert.equal(created.status, 0, created.stderr)
    const run = await runPython([join(root, 'examples/agent.py'), keyFile, '4runr gateway'], {})
    assert.equal(run.status, 0, run.output)
    assert.match(run.output, /3 results/)
    assert.doesNotMatch(run.output, /contact@example\.com/, 'the demo policy redacts e-mail addresses')
    assert.match(run.output, /fetch https:\/\/example\.com\/4runr-gateway\/1: not allowed \(policy_denied/)
    assert.match(run.output, /fetched http:\/\/127\.0\.0\.1:\d+\/demo\/hello: HTTP 200/)
  })
})
