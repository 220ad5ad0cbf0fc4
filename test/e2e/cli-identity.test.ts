/**
 * The README's identity walk-through, as a newcomer runs it: start the demo, create an agent with
 * the CLI, get a token, call the demo's private path, revoke the token, see it refused.
 */
import assert from 'node:assert/strict'
import { mkdtemp, readFile, stat, symlink, writeFile } from 'node:fs/promises'
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
  const agentNames = async () => {
    const res = await fetch(`${gw.adminUrl}/v1/agents?limit=500`, {
      headers: { authorization: `Bearer ${adminKey}` },
    })
    assert.equal(res.status, 200)
    return ((await res.json()) as { agents: Array<{ name: string }> }).agents.map((a) => a.name)
  }
  const gatewayIssuer = async () =>
    (
      (await (await fetch(`${gw.publicUrl}/.well-known/oauth-authorization-server`)).json()) as {
        issuer: string
      }
    ).issuer
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
    const saved = JSON.parse(await readFile(keyFile, 'utf8')) as {
      privateKeyJwk: { d: string }
      issuer: string
    }
    assert.equal(typeof saved.privateKeyJwk.d, 'string')
    assert.doesNotMatch(created.stdout + created.stderr, new RegExp(saved.privateKeyJwk.d))
    // The gateway's issuer is pinned in the key file at creation.
    assert.equal(saved.issuer, await gatewayIssuer())

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

  it('calls every demo tool through the gateway with the credentials it stored for the local fakes', async () => {
    const keyFile = join(dir, 'tools-bot.key.json')
    assert.equal(runCli(['agent', 'create', '--name', 'tools-bot', '--out', keyFile], env).status, 0)
    const scope = 'serpapi:search openai:chat openai:embeddings gmail:profile gmail:send http_fetch:get'
    const got = runCli(['token', 'get', '--key', keyFile, '--scope', scope], env)
    assert.equal(got.status, 0, got.stderr)
    const token = got.stdout.trim()
    const tool = (path: string, params: unknown) =>
      fetch(`${gw.publicUrl}/v1/tools/${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify(params),
      })
    const search = await tool('serpapi/search', { q: 'espresso', num: 4 })
    assert.equal(search.status, 200)
    const text = await search.text()
    // The demo policy redacts what the fake's results carry.
    assert.match(text, /\[REDACTED:email\]/)
    assert.match(text, /\[REDACTED:card\]/)
    assert.doesNotMatch(text, /4111 1111 1111 1111/)
    const chat = await tool('openai/chat', {
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'hi' }],
    })
    assert.equal(chat.status, 200)
    assert.equal(
      ((await chat.json()) as { data: { choices: { message: { content: string } }[] } }).data.choices[0]!
        .message.content,
      'Echo: hi',
    )
    assert.equal(
      (await tool('openai/embeddings', { model: 'text-embedding-3-small', input: 'x' })).status,
      200,
    )
    assert.equal((await tool('gmail/profile', {})).status, 200)
    assert.equal((await tool('http_fetch/get', { url: `${gw.publicUrl}/demo/hello` })).status, 200)
    // Sending mail waits for an operator.
    const mail = await tool('gmail/send', { to: 'a@example.com', subject: 'hi', text: 'hello' })
    assert.equal(mail.status, 202)
    // Outside the demo policy's domains.
    assert.equal((await tool('http_fetch/get', { url: 'https://example.com/' })).status, 403)
  })

  it('never overwrites an existing --out file, nor follows a symlink there, and creates no agent then', async () => {
    const existing = join(dir, 'existing.key.json')
    await writeFile(existing, 'precious\n', { mode: 0o644 })
    const refused = runCli(['agent', 'create', '--name', 'clobber', '--out', existing], env)
    assert.equal(refused.status, 1)
    assert.match(refused.stderr, /existing\.key\.json exists; choose another --out or remove it/)
    assert.equal(await readFile(existing, 'utf8'), 'precious\n')
    assert.equal((await stat(existing)).mode & 0o777, 0o644)

    const target = join(dir, 'symlink-target.json')
    const link = join(dir, 'link.key.json')
    await symlink(target, link)
    const viaLink = runCli(['agent', 'create', '--name', 'clobber', '--out', link], env)
    assert.equal(viaLink.status, 1)
    assert.match(viaLink.stderr, /exists; choose another --out/)
    await assert.rejects(stat(target), { code: 'ENOENT' })

    assert.ok(!(await agentNames()).includes('clobber'))
  })

  it('fails before creating the agent when the key file cannot be created or the issuer read', async () => {
    const missingDir = join(dir, 'no-such-dir', 'k.key.json')
    const noDir = runCli(['agent', 'create', '--name', 'lost-key', '--out', missingDir], env)
    assert.equal(noDir.status, 1)
    assert.match(noDir.stderr, /cannot create key file .*no-such-dir/)

    const out = join(dir, 'unreachable.key.json')
    const noPublic = runCli(
      ['agent', 'create', '--name', 'lost-key', '--out', out, '--url', 'http://127.0.0.1:1'],
      env,
    )
    assert.equal(noPublic.status, 1)
    assert.match(noPublic.stderr, /cannot read the gateway's issuer .*cannot reach/)
    await assert.rejects(stat(out), { code: 'ENOENT' })

    assert.ok(!(await agentNames()).includes('lost-key'))
    // Nothing was left behind: the same name and file work now.
    const retried = runCli(['agent', 'create', '--name', 'lost-key', '--out', out], env)
    assert.equal(retried.status, 0, retried.stderr)
  })

  it('signs only for the issuer recorded in the key file, and warns for a key file without one', async () => {
    const keyFile = join(dir, 'pinned.key.json')
    const created = runCli(['agent', 'create', '--name', 'pinned', '--out', keyFile], env)
    assert.equal(created.status, 0, created.stderr)
    const saved = JSON.parse(await readFile(keyFile, 'utf8')) as Record<string, unknown>

    const edited = join(dir, 'edited.key.json')
    await writeFile(edited, JSON.stringify({ ...saved, issuer: 'https://gateway.elsewhere.example' }))
    const refused = runCli(['token', 'get', '--key', edited], env)
    assert.equal(refused.status, 1)
    assert.match(refused.stderr, /claims issuer ".*" but .*edited\.key\.json was created for issuer/)
    assert.match(refused.stderr, /https:\/\/gateway\.elsewhere\.example/)
    assert.equal(refused.stdout, '')

    const { issuer: _, ...older } = saved
    const old = join(dir, 'old.key.json')
    await writeFile(old, JSON.stringify(older))
    const got = runCli(['token', 'get', '--key', old], env)
    assert.equal(got.status, 0, got.stderr)
    assert.match(got.stderr, /warning: .*old\.key\.json records no issuer/)
    assert.match(got.stdout.trim(), /^eyJ/)
  })

  it('rotates the signing key', async () => {
    const rotated = runCli(['keys', 'rotate'], env)
    assert.equal(rotated.status, 0, rotated.stderr)
    const jwks = (await (await fetch(`${gw.publicUrl}/.well-known/jwks.json`)).json()) as {
      keys: Array<{ kid: string }>
    }
    assert.ok(jwks.keys.some((k) => k.kid === rotated.stdout.trim()))
  })

  it('says what is wrong, with exit code 1, for a missing admin key, key file or gateway', async () => {
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
    // The refused creation leaves no empty key file to block the next attempt.
    await assert.rejects(stat(join(dir, 'x.json')), { code: 'ENOENT' })
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
