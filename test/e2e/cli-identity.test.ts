/**
 * The README's identity walk-through, as a newcomer runs it: start the demo, create an agent with
 * the CLI, get a token, call the demo's private path, revoke the token, see it refused.
 */
import assert from 'node:assert/strict'
import { mkdtemp, readFile, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { demoConfigIn, runCli, type Started, startGatewayProcess } from '../support/process.ts'

const adminKey = 'cli-identity-admin-key-0123456789'

describe('the identity commands of the 4runr CLI', () => {
  let gw: Started
  let dir: string
  let env: NodeJS.ProcessEnv

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'runr-cli-id-'))
    const file = await demoConfigIn(dir)
    gw = await startGatewayProcess(file, { RUNR_ADMIN_KEY: adminKey }, dir)
    env = { RUNR_ADMIN_KEY: adminKey, RUNR_ADMIN_URL: gw.adminUrl, RUNR_URL: gw.publicUrl }
  })
  after(async () => {
    gw.child.kill('SIGTERM')
    assert.equal(await gw.exited, 0)
  })

  it('creates an agent, gets a token, calls the private demo path, and is refused after revoking it', async () => {
    const keyFile = join(dir, 'bot.key.json')
    const created = runCli(['agent', 'create', '--name', 'bot', '--roles', 'reader', '--out', keyFile], env)
    assert.equal(created.status, 0, created.stderr)
    assert.match(created.stdout.trim(), /^agt_/)
    assert.equal((await stat(keyFile)).mode & 0o777, 0o600)
    const saved = JSON.parse(await readFile(keyFile, 'utf8')) as { privateKeyJwk: { d: string } }
    assert.equal(typeof saved.privateKeyJwk.d, 'string')

    // The key file remembers the gateway's URL: no flags needed.
    const got = runCli(['token', 'get', '--key', keyFile, '--scope', 'channel:demo'], { RUNR_URL: undefined })
    assert.equal(got.status, 0, got.stderr)
    const token = got.stdout.trim()
    const call = () =>
      fetch(`${gw.publicUrl}/demo/private/report`, { headers: { authorization: `Bearer ${token}` } })
    assert.equal((await call()).status, 200)
    assert.equal((await fetch(`${gw.publicUrl}/demo/private/report`)).status, 401)

    const revoked = runCli(['token', 'revoke', token], env)
    assert.equal(revoked.status, 0, revoked.stderr)
    const refused = await call()
    assert.equal(refused.status, 401)
    assert.equal(((await refused.json()) as { error: { code: string } }).error.code, 'token_revoked')

    const json = runCli(['token', 'get', '--key', keyFile, '--scope', 'channel:demo', '--json'], env)
    assert.equal((JSON.parse(json.stdout) as { token_type: string }).token_type, 'Bearer')
    const killed = runCli(['token', 'revoke', '--agent', created.stdout.trim()], env)
    assert.equal(killed.status, 0, killed.stderr)
  })

  it('rotates the signing key', async () => {
    const rotated = runCli(['keys', 'rotate'], env)
    assert.equal(rotated.status, 0, rotated.stderr)
    const jwks = (await (await fetch(`${gw.publicUrl}/.well-known/jwks.json`)).json()) as {
      keys: Array<{ kid: string }>
    }
    assert.ok(jwks.keys.some((k) => k.kid === rotated.stdout.trim()))
  })

  it('says what is wrong, with exit code 1, for a missing admin key, key file or gateway', () => {
    const noKey = runCli(['agent', 'create', '--name', 'x'], { ...env, RUNR_ADMIN_KEY: '' })
    assert.equal(noKey.status, 1)
    assert.match(noKey.stderr, /RUNR_ADMIN_KEY/)
    const wrongKey = runCli(['agent', 'create', '--name', 'x', '--out', join(dir, 'x.json')], {
      ...env,
      RUNR_ADMIN_KEY: 'wrong-key-0123456789',
    })
    assert.equal(wrongKey.status, 1)
    assert.match(wrongKey.stderr, /401 unauthenticated/)
    assert.doesNotMatch(wrongKey.stderr, /wrong-key-0123456789/)
    const noFile = runCli(['token', 'get', '--key', join(dir, 'missing.json')], env)
    assert.equal(noFile.status, 1)
    assert.match(noFile.stderr, /cannot read key file/)
    const down = runCli(['keys', 'rotate', '--admin', 'http://127.0.0.1:1'], env)
    assert.equal(down.status, 1)
    assert.match(down.stderr, /cannot reach/)
    const nothing = runCli(['token', 'revoke'], env)
    assert.equal(nothing.status, 1)
  })
})
