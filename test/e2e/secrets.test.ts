/**
 * The secret store as an operator runs it: `4runr start`, secrets set through the CLI (stdin) and
 * the admin API, listed, the master key rotated without a restart, then the gateway restarted on
 * the rotated key. Canary values are planted on every path, including the error paths, and must
 * never appear in the gateway's logs (stdout and stderr), error bodies, `/metrics`, `GET
 * /v1/config`, or the CLI's own output.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { parse, stringify } from 'yaml'
import { masterKeyId } from '../../packages/server/src/secrets/master-keys.ts'
import { cli, demoConfigIn, root, type Started, startGatewayProcess, tsx } from '../support/process.ts'

const adminKey = 'e2e-secrets-admin-key-0123456789'

/** A canary: a value that must only ever travel sealed. */
const canary = (what: string) => `canary-${what}-${randomBytes(9).toString('base64url')}`

/** Run a `4runr` command with `input` on its stdin. */
function cliWith(args: string[], env: NodeJS.ProcessEnv, input = '') {
  return spawnSync(process.execPath, ['--import', tsx, cli, ...args], {
    cwd: root,
    encoding: 'utf8',
    input,
    env: { ...process.env, ...env },
  })
}

/** Gateways still running: a failed assertion must not leave one behind to hold the run open. */
const running = new Set<Started>()
after(() => {
  for (const gw of running) gw.child.kill('SIGKILL')
})

/** `4runr start` with everything it writes to stdout and stderr kept. */
async function start(file: string, env: NodeJS.ProcessEnv, cwd: string) {
  const gw = await startGatewayProcess(
    file,
    { RUNR_ADMIN_KEY: adminKey, RUNR_LOG_LEVEL: 'trace', ...env },
    cwd,
  )
  running.add(gw)
  let stdout = ''
  gw.child.stdout!.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8')
  })
  const admin = (path: string, init: RequestInit = {}) =>
    fetch(`${gw.adminUrl}${path}`, {
      ...init,
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json', ...init.headers },
    })
  const cliEnv = { RUNR_ADMIN_KEY: adminKey, RUNR_ADMIN_URL: gw.adminUrl }
  return { gw, admin, cliEnv, output: () => stdout + gw.stderr() }
}

async function stop(gw: Started): Promise<void> {
  gw.child.kill('SIGTERM')
  const code = await gw.exited
  running.delete(gw)
  assert.equal(code, 0)
}

/** Start a gateway that is expected to refuse to start; returns what it said. */
async function refusedStart(file: string, env: NodeJS.ProcessEnv, cwd: string): Promise<string> {
  const failed = await startGatewayProcess(file, { RUNR_ADMIN_KEY: adminKey, ...env }, cwd).then(
    async (gw) => {
      await stop(gw)
      return undefined
    },
    (err: Error) => err.message,
  )
  assert.ok(failed !== undefined, 'the gateway started')
  return failed
}

type Listed = {
  secrets: Array<{ name: string; agent: string | null; keyId: string; rotatedAt: string | null }>
}

describe('secrets through the CLI and the admin API, with the master key in the data directory', () => {
  let dir: string
  let file: string
  const planted: string[] = []
  const seen: string[] = []

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'runr-e2e-secrets-'))
    // The secret store alone: without the demo's fake tools, which store secrets of their own.
    file = await demoConfigIn(dir, { toolFakes: false })
  })
  after(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('sets, lists, rotates and survives a restart, and no canary escapes anywhere', async () => {
    const { gw, admin, cliEnv, output } = await start(file, {}, dir)
    const keyFile = join(dir, 'data', 'master.key')
    const firstKey = await readFile(keyFile, 'utf8')
    planted.push(firstKey.trim())

    // An agent with its own value.
    const created = await admin('/v1/agents', {
      method: 'POST',
      body: JSON.stringify({ name: 'research-bot' }),
    })
    assert.equal(created.status, 201)
    const agentId = ((await created.json()) as { id: string }).id

    // Set through the CLI, from stdin, tool-wide and for the agent by name.
    const serpapi = canary('serpapi')
    const own = canary('own')
    planted.push(serpapi, own)
    const set = cliWith(['secrets', 'set', 'serpapi_key'], cliEnv, `${serpapi}\n`)
    assert.equal(set.status, 0, set.stderr)
    const setOwn = cliWith(['secrets', 'set', 'serpapi_key', '--agent', 'research-bot'], cliEnv, own)
    assert.equal(setOwn.status, 0, setOwn.stderr)
    seen.push(set.stdout, set.stderr, setOwn.stdout, setOwn.stderr)

    // Set through the API.
    const openai = canary('openai')
    planted.push(openai)
    const put = await admin('/v1/secrets/openai_key', {
      method: 'PUT',
      body: JSON.stringify({ value: openai }),
    })
    assert.equal(put.status, 204)

    // Bad input carrying canaries: refused, and the refusal does not repeat them.
    const refused: Array<[string, RequestInit]> = []
    for (const what of ['bad-name', 'malformed', 'oversized', 'unknown-agent', 'bad-key']) {
      planted.push(canary(what))
    }
    const [badName, malformed, oversized, unknownAgent, badKey] = planted.slice(-5) as string[]
    refused.push(
      ['/v1/secrets/not%20a%20name', { method: 'PUT', body: JSON.stringify({ value: badName }) }],
      ['/v1/secrets/x', { method: 'PUT', body: `{"value":"${malformed}",}` }],
      [
        '/v1/secrets/x',
        { method: 'PUT', body: JSON.stringify({ value: `${oversized}${'.'.repeat(70_000)}` }) },
      ],
      ['/v1/secrets/x', { method: 'PUT', body: JSON.stringify({ value: unknownAgent, agent: 'nobody' }) }],
      ['/v1/secrets/rotate-master', { method: 'POST', body: JSON.stringify({ key: badKey }) }],
    )
    for (const [path, init] of refused) {
      const res = await admin(path, init)
      assert.ok(res.status === 400 || res.status === 404, `${path}: ${res.status}`)
      seen.push(await res.text())
    }
    // The CLI refuses an empty value before calling the gateway.
    const empty = cliWith(['secrets', 'set', 'x'], cliEnv, '')
    assert.equal(empty.status, 1)
    assert.match(empty.stderr, /no value on stdin/)
    seen.push(empty.stdout, empty.stderr)

    // Listed with metadata, never values.
    const listed = cliWith(['secrets', 'list'], cliEnv)
    assert.equal(listed.status, 0, listed.stderr)
    seen.push(listed.stdout, listed.stderr)
    const lines = listed.stdout.trim().split('\n')
    assert.match(lines[0]!, /^NAME\s+AGENT\s+MASTER KEY\s+CREATED\s+ROTATED$/)
    assert.deepEqual(
      lines.slice(1).map((line) => line.split(/\s+/).slice(0, 2)),
      [
        ['openai_key', '*'],
        ['serpapi_key', '*'],
        ['serpapi_key', agentId],
      ],
    )
    const api = (await (await admin('/v1/secrets')).json()) as Listed
    assert.deepEqual(
      api.secrets.map((s) => s.keyId),
      Array(3).fill(masterKeyId(Buffer.from(firstKey.trim(), 'base64'))),
    )

    // Rotate: the gateway generates the new key, writes it over the old one, and re-seals everything.
    const rotated = cliWith(['secrets', 'rotate-master'], cliEnv)
    assert.equal(rotated.status, 0, rotated.stderr)
    seen.push(rotated.stdout, rotated.stderr)
    assert.match(rotated.stderr, /3 secret value\(s\) sealed again/)
    const newKey = (await readFile(keyFile, 'utf8')).trim()
    planted.push(newKey)
    assert.notEqual(newKey, firstKey.trim())
    assert.equal(rotated.stdout.trim(), masterKeyId(Buffer.from(newKey, 'base64')))
    assert.equal((await stat(keyFile)).mode & 0o777, 0o600)
    const after = (await (await admin('/v1/secrets')).json()) as Listed
    assert.deepEqual(
      after.secrets.map((s) => s.keyId),
      Array(3).fill(rotated.stdout.trim()),
    )

    // Deleting through the CLI.
    const deleted = cliWith(['secrets', 'delete', 'openai_key'], cliEnv)
    assert.equal(deleted.status, 0, deleted.stderr)
    assert.equal((await admin('/v1/secrets/openai_key', { method: 'DELETE' })).status, 404)

    // Where values must never show.
    seen.push(await (await admin('/metrics')).text())
    seen.push(await (await admin('/v1/config')).text())
    seen.push(JSON.stringify(after))

    await stop(gw)
    seen.push(output())

    // The restarted gateway opens the secrets with the rotated key.
    const again = await start(file, {}, dir)
    const relisted = (await (await again.admin('/v1/secrets')).json()) as Listed
    assert.deepEqual(
      relisted.secrets.map((s) => [s.name, s.agent, s.keyId]),
      [
        ['serpapi_key', null, rotated.stdout.trim()],
        ['serpapi_key', agentId, rotated.stdout.trim()],
      ],
    )
    await stop(again.gw)
    seen.push(again.output())

    const everything = seen.join('\n')
    assert.ok(everything.includes('"route":"/v1/secrets/:name"'), 'the admin requests were logged')
    for (const value of planted)
      assert.ok(!everything.includes(value), `a planted value escaped: ${value.slice(0, 14)}`)
  })
})

describe('rotating a master key that comes from the config (secrets.masterKey)', () => {
  let dir: string
  let file: string

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'runr-e2e-secrets-config-'))
    // The secret store alone: without the demo's fake tools, which store secrets of their own.
    file = await demoConfigIn(dir, { toolFakes: false })
    const config = parse(await readFile(file, 'utf8')) as Record<string, unknown>
    config['secrets'] = { masterKey: '${env:E2E_MASTER_KEY}' }
    await writeFile(file, stringify(config))
  })
  after(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('re-seals under a key read from stdin, then needs that key to start', async () => {
    const oldKey = randomBytes(32).toString('base64')
    const newKey = randomBytes(32).toString('base64')
    const { gw, admin, cliEnv, output } = await start(file, { E2E_MASTER_KEY: oldKey }, dir)
    const value = canary('config')
    assert.equal(cliWith(['secrets', 'set', 'gmail_token'], cliEnv, value).status, 0)
    const rotated = cliWith(['secrets', 'rotate-master', '--key-stdin'], cliEnv, `${newKey}\n`)
    assert.equal(rotated.status, 0, rotated.stderr)
    const newId = masterKeyId(Buffer.from(newKey, 'base64'))
    assert.equal(rotated.stdout.trim(), newId)
    assert.match(rotated.stderr, /set secrets.masterKey to the new key/)
    const shown = [await (await admin('/v1/config')).text(), await (await admin('/metrics')).text()]
    await stop(gw)
    const everything = [output(), rotated.stdout, rotated.stderr, ...shown].join('\n')
    for (const secret of [value, oldKey, newKey]) assert.ok(!everything.includes(secret))

    // Started with the old key alone, the gateway refuses: it could open neither the secrets nor
    // the signing key made after the rotation.
    const refusal = await refusedStart(file, { E2E_MASTER_KEY: oldKey }, dir)
    assert.match(refusal, /cannot start: the master key does not (match|open) the stored/)
    for (const secret of [value, oldKey, newKey]) assert.ok(!refusal.includes(secret))

    // With the new key (and the old one for what it still sealed), it starts.
    const again = await start(file, { E2E_MASTER_KEY: newKey, RUNR_PREVIOUS_MASTER_KEY: oldKey }, dir)
    const listed = (await (await again.admin('/v1/secrets')).json()) as Listed
    assert.deepEqual(
      listed.secrets.map((s) => [s.name, s.keyId]),
      [['gmail_token', newId]],
    )
    await stop(again.gw)
  })
})
