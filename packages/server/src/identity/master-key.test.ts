import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { generatedMasterKeyFile, resolveMasterKey } from './master-key.ts'

const tempDir = () => mkdtemp(join(tmpdir(), 'runr-master-'))
const b64 = (key: Buffer) => key.toString('base64')

describe('resolveMasterKey', () => {
  it('prefers RUNR_MASTER_KEY over the configured key and file', async () => {
    const envKey = randomBytes(32)
    const resolved = await resolveMasterKey({
      env: { RUNR_MASTER_KEY: b64(envKey) },
      configured: { masterKey: b64(randomBytes(32)), masterKeyFile: '/nonexistent/master.key' },
      dataDir: await tempDir(),
    })
    assert.deepEqual(resolved, { key: envKey, source: 'env' })
  })

  it('treats an empty RUNR_MASTER_KEY as unset and uses secrets.masterKey', async () => {
    const configured = randomBytes(32)
    const resolved = await resolveMasterKey({
      env: { RUNR_MASTER_KEY: '' },
      configured: { masterKey: configured.toString('base64url') },
      dataDir: await tempDir(),
    })
    assert.deepEqual(resolved, { key: configured, source: 'config' })
  })

  it('reads secrets.masterKeyFile when no key is given inline', async () => {
    const dir = await tempDir()
    const file = join(dir, 'my.key')
    const key = randomBytes(32)
    await writeFile(file, `${b64(key)}\n`)
    assert.deepEqual(await resolveMasterKey({ env: {}, configured: { masterKeyFile: file }, dataDir: dir }), {
      key,
      source: 'file',
      file,
    })
  })

  it('names the setting when secrets.masterKeyFile cannot be read', async () => {
    await assert.rejects(
      resolveMasterKey({
        env: {},
        configured: { masterKeyFile: '/nonexistent/x.key' },
        dataDir: await tempDir(),
      }),
      /secrets\.masterKeyFile: cannot read \/nonexistent\/x\.key \(ENOENT\)/,
    )
  })

  it('refuses an invalid key naming where it came from but never the value', async () => {
    const bad = 'not-a-key-but-a-password'
    await assert.rejects(
      resolveMasterKey({ env: { RUNR_MASTER_KEY: bad }, dataDir: await tempDir() }),
      (err: Error) => err.message.startsWith('RUNR_MASTER_KEY: ') && !err.message.includes(bad),
    )
    await assert.rejects(
      resolveMasterKey({ env: {}, configured: { masterKey: '' }, dataDir: await tempDir() }),
      /^Error: secrets\.masterKey: /,
    )
  })

  it('generates <dataDir>/master.key with mode 0600 on the first start and reads it afterwards', async () => {
    const dataDir = join(await tempDir(), 'nested', 'data')
    const first = await resolveMasterKey({ env: {}, dataDir })
    const file = join(dataDir, generatedMasterKeyFile)
    assert.equal(first.source, 'generated')
    assert.equal(first.file, file)
    assert.equal(first.key.length, 32)
    assert.equal(((await stat(file)).mode & 0o777).toString(8), '600')
    assert.equal((await readFile(file, 'utf8')).trim(), b64(first.key))
    const second = await resolveMasterKey({ env: {}, configured: {}, dataDir })
    assert.deepEqual(second, { key: first.key, source: 'file', file })
  })

  it('gives two instances starting together on an empty data directory the same key', async () => {
    const dataDir = await tempDir()
    const results = await Promise.all([1, 2, 3].map(() => resolveMasterKey({ env: {}, dataDir })))
    assert.equal(results.filter((r) => r.source === 'generated').length, 1)
    for (const r of results) assert.deepEqual(r.key, results[0]!.key)
  })

  it('refuses a corrupt generated key file instead of replacing it', async () => {
    const dataDir = await tempDir()
    await writeFile(join(dataDir, generatedMasterKeyFile), 'garbage\n')
    await assert.rejects(resolveMasterKey({ env: {}, dataDir }), /generated master key file .*master\.key: /)
    assert.equal(await readFile(join(dataDir, generatedMasterKeyFile), 'utf8'), 'garbage\n')
  })
})
