/**
 * The package as it ships: `tsc` builds dist/ with declarations, the `exports` map resolves under
 * plain Node (no tsx), and the core imports nothing from Node (only the key-file reader loads
 * `node:fs/promises`, dynamically), so it runs wherever fetch and WebCrypto do.
 */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { cp, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'

const sdk = fileURLToPath(new URL('..', import.meta.url))
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')

describe('the built package', () => {
  let dir: string
  let pkg: string

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'runr-sdk-build-'))
    pkg = join(dir, 'node_modules/@4runr/gateway')
    await mkdir(pkg, { recursive: true })
    await cp(join(sdk, 'package.json'), join(pkg, 'package.json'))
    execFileSync(process.execPath, [
      tsc,
      '-p',
      join(sdk, 'tsconfig.build.json'),
      '--outDir',
      join(pkg, 'dist'),
    ])
  })
  after(() => rm(dir, { recursive: true, force: true }))

  it('emits JavaScript and declarations for the entry point', async () => {
    const files = await readdir(join(pkg, 'dist'))
    assert.ok(files.includes('index.js'))
    assert.ok(files.includes('index.d.ts'))
    const types = await readFile(join(pkg, 'dist/index.d.ts'), 'utf8')
    assert.match(types, /GatewayClient/)
    assert.match(types, /AdminClient/)
  })

  it('loads through its exports map under plain Node and builds a client', () => {
    const script = `
      const sdk = await import('@4runr/gateway')
      const client = new sdk.GatewayClient({ baseUrl: 'http://127.0.0.1:1', agentId: 'a', privateKey: '{}' })
      const err = await client.serpapi.search({ q: 'x' }).catch((e) => e)
      console.log(JSON.stringify({ names: Object.keys(sdk).sort(), error: err.name, code: err.code }))`
    const out = JSON.parse(
      execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: dir, encoding: 'utf8' }),
    )
    for (const name of ['GatewayClient', 'AdminClient', 'GatewayError', 'ApprovalRequired', 'NetworkError']) {
      assert.ok(out.names.includes(name), name)
    }
    assert.deepEqual([out.error, out.code], ['AuthError', 'invalid_key'])
  })

  it('has no static import of a Node module', async () => {
    for (const file of await readdir(join(pkg, 'dist'))) {
      if (!file.endsWith('.js')) continue
      const text = await readFile(join(pkg, 'dist', file), 'utf8')
      assert.doesNotMatch(text, /^import .* from ['"]node:/m, file)
    }
  })
})
