import assert from 'node:assert/strict'
import { type ChildProcess, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { stringify } from 'yaml'
import { demoConfigIn, root, runCli, startGatewayProcess as start } from '../support/process.ts'
import { startUpstream } from '../support/upstream.ts'

const pkg = JSON.parse(await readFile(join(root, 'packages/server/package.json'), 'utf8')) as {
  version: string
}

const run = (args: string[], env: NodeJS.ProcessEnv = {}) => runCli(args, env)

describe('the 4runr command', () => {
  const children: ChildProcess[] = []
  after(() => {
    for (const child of children) child.kill('SIGKILL')
  })

  it('runs as the installed 4runr command once built (executable, with its V8 flags)', (t) => {
    const bin = join(root, 'node_modules/.bin/4runr')
    // `npm run build` makes it; CI builds before testing.
    if (!existsSync(join(root, 'packages/server/dist/cli/index.js'))) return t.skip('not built')
    const ran = spawnSync(bin, ['--version'], { encoding: 'utf8' })
    assert.equal(ran.status, 0, ran.stderr)
    assert.equal(ran.stdout.trim(), pkg.version)
  })

  it('prints its version and help', () => {
    const version = run(['--version'])
    assert.equal(version.status, 0)
    assert.equal(version.stdout.trim(), pkg.version)
    const help = run(['--help'])
    assert.equal(help.status, 0)
    assert.match(help.stdout, /start/)
    assert.match(help.stdout, /config/)
  })

  it('checks every example config as valid', async () => {
    const files = (await readdir(join(root, 'examples'))).filter((f) => f.endsWith('.yaml'))
    assert.ok(files.includes('demo.yaml'))
    for (const file of files) {
      const result = run(['config', 'check', join('examples', file)])
      assert.equal(result.status, 0, `${file}: ${result.stderr}`)
      assert.match(result.stdout, /ok/)
    }
  })

  it('refuses an invalid config with the path, line and reason, and exit code 1', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'runr-cli-'))
    const file = join(dir, 'bad.yaml')
    await writeFile(
      file,
      'gateway:\n  listen: { port: "eighty" }\nchannels:\n  - { name: a, system: nowhere, bogus: 1 }\n',
    )
    const result = run(['config', 'check', file])
    assert.equal(result.status, 1)
    assert.match(result.stderr, /:2:\d+ gateway\.listen\.port: expected integer/)
    assert.match(result.stderr, /:4:\d+ channels\[0\]\.bogus: unknown key/)
    const started = run(['start', '--config', file])
    assert.equal(started.status, 1, 'start refuses the same file')
    assert.match(started.stderr, /gateway\.listen\.port/)
    assert.doesNotMatch(started.stderr, /\n\s+at /, 'no stack trace')
  })

  it('starts the demo, serves the demo route, and prints a generated admin key only once', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'runr-cli-'))
    const file = await demoConfigIn(dir)
    const first = await start(file, {}, dir)
    children.push(first.child)
    const hello = await fetch(`${first.publicUrl}/demo/hello`)
    assert.equal(hello.status, 200)
    assert.match(((await hello.json()) as { message: string }).message, /demo upstream/)
    assert.equal(hello.headers.get('x-served-by'), '4runr-demo')
    const key = /export RUNR_ADMIN_KEY=(\S+)/.exec(first.stderr())?.[1]
    assert.ok(key, 'the generated admin key is printed')
    const config = await fetch(`${first.adminUrl}/v1/config`, { headers: { authorization: `Bearer ${key}` } })
    assert.equal(config.status, 200)
    first.child.kill('SIGTERM')
    assert.equal(await first.exited, 0)

    const second = await start(file, {}, dir)
    children.push(second.child)
    assert.doesNotMatch(second.stderr(), /export RUNR_ADMIN_KEY=/, 'the key is shown on the first start only')
    const again = await fetch(`${second.adminUrl}/v1/config`, { headers: { authorization: `Bearer ${key}` } })
    assert.equal(again.status, 200, 'the generated key keeps working across restarts')
    second.child.kill('SIGTERM')
    assert.equal(await second.exited, 0)
  })

  it('drains in-flight requests on SIGTERM, then refuses new connections and exits 0', async () => {
    const slow = await startUpstream((_req, res) => {
      setTimeout(() => res.end('finished'), 700)
    })
    try {
      const dir = await mkdtemp(join(tmpdir(), 'runr-cli-'))
      const file = join(dir, '4runr.yaml')
      await writeFile(
        file,
        stringify({
          gateway: { listen: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 } },
          store: { kind: 'sqlite', path: join(dir, '4runr.db') },
          systems: { slow: { kind: 'http', url: slow.url } },
          channels: [{ name: 'slow', prefix: '/slow', system: 'slow', rules: [{ path: '*', public: true }] }],
        }),
      )
      const gw = await start(file, { RUNR_ADMIN_KEY: 'cli-test-admin-key-0123456789' }, dir)
      children.push(gw.child)
      const inflight = fetch(`${gw.publicUrl}/slow/x`)
      await new Promise((r) => setTimeout(r, 200))
      gw.child.kill('SIGTERM')
      const res = await inflight
      assert.equal(res.status, 200)
      assert.equal(await res.text(), 'finished')
      assert.equal(await gw.exited, 0)
      await assert.rejects(fetch(`${gw.publicUrl}/slow/x`), 'no longer accepting')
    } finally {
      await slow.close()
    }
  })
})
