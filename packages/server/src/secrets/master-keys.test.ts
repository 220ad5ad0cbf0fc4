import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { parseMasterKey } from '../identity/sealed.ts'
import { MasterKeys, masterKeyId, resolveMasterKeys, writeDataDirMasterKey } from './master-keys.ts'

const b64 = (key: Buffer) => key.toString('base64')

describe('master key ids', () => {
  it('names a key the same way every time, and different keys differently', () => {
    const key = randomBytes(32)
    assert.equal(masterKeyId(key), masterKeyId(Buffer.from(key)))
    assert.notEqual(masterKeyId(key), masterKeyId(randomBytes(32)))
    assert.match(masterKeyId(key), /^mk_[A-Za-z0-9_-]{16}$/)
  })

  it('contains no part of the key in any common encoding', () => {
    const key = randomBytes(32)
    const id = masterKeyId(key).slice(3)
    for (const encoding of ['base64url', 'hex'] as const) {
      const text = key.toString(encoding)
      for (let i = 0; i + 8 <= text.length; i++) assert.ok(!id.includes(text.slice(i, i + 8)))
    }
  })
})

describe('MasterKeys', () => {
  it('seals with the promoted key and keeps every replaced key for opening, newest first', () => {
    const [k1, k2, k3] = [randomBytes(32), randomBytes(32), randomBytes(32)]
    const keys = new MasterKeys(k1)
    keys.promote(k2)
    keys.promote(k3)
    assert.equal(keys.current.id, masterKeyId(k3))
    assert.deepEqual(keys.previous(), [k2, k1])
    assert.equal(keys.get(masterKeyId(k1)), k1)
    assert.equal(keys.get('mk_unknown'), undefined)
    // Promoting a previous key back makes it current without losing the others.
    keys.promote(k1)
    assert.deepEqual(keys.previous(), [k3, k2])
  })
})

describe('resolveMasterKeys', () => {
  let dir: string
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'runr-master-keys-'))
  })
  after(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('takes RUNR_MASTER_KEY as current and every key of RUNR_PREVIOUS_MASTER_KEY as previous', async () => {
    const [current, p1, p2] = [randomBytes(32), randomBytes(32), randomBytes(32)]
    const { keys, source } = await resolveMasterKeys({
      env: {
        RUNR_MASTER_KEY: b64(current),
        RUNR_PREVIOUS_MASTER_KEY: ` ${b64(p1)}, ${p2.toString('base64url')}\n`,
      },
      dataDir: join(dir, 'env'),
    })
    assert.deepEqual(source, { kind: 'env' })
    assert.equal(keys.current.id, masterKeyId(current))
    assert.ok(keys.get(masterKeyId(p1))?.equals(p1))
    assert.ok(keys.get(masterKeyId(p2))?.equals(p2))
  })

  it('says where the key came from: config, a configured key file, or the data directory', async () => {
    const key = randomBytes(32)
    assert.deepEqual(
      (await resolveMasterKeys({ env: {}, configured: { masterKey: b64(key) }, dataDir: join(dir, 'c') }))
        .source,
      { kind: 'config' },
    )
    const file = join(dir, 'configured.key')
    await writeFile(file, b64(key))
    assert.deepEqual(
      (await resolveMasterKeys({ env: {}, configured: { masterKeyFile: file }, dataDir: join(dir, 'f') }))
        .source,
      { kind: 'keyFile', file },
    )
    const dataDir = join(dir, 'generated')
    const first = await resolveMasterKeys({ env: {}, dataDir })
    assert.deepEqual(first.source, { kind: 'dataDir', file: join(dataDir, 'master.key'), generatedNow: true })
    const second = await resolveMasterKeys({ env: {}, dataDir })
    assert.deepEqual(second.source, {
      kind: 'dataDir',
      file: join(dataDir, 'master.key'),
      generatedNow: false,
    })
    assert.equal(second.keys.current.id, first.keys.current.id)
  })

  it('refuses a malformed previous key, naming where it is and not what it is', async () => {
    const bad = 'not-a-key-canary-0123'
    await assert.rejects(
      resolveMasterKeys({
        env: {
          RUNR_MASTER_KEY: b64(randomBytes(32)),
          RUNR_PREVIOUS_MASTER_KEY: `${b64(randomBytes(32))},${bad}`,
        },
        dataDir: join(dir, 'bad'),
      }),
      (err: Error) =>
        err.message.startsWith('RUNR_PREVIOUS_MASTER_KEY, key 2:') && !err.message.includes(bad),
    )
  })
})

describe('writeDataDirMasterKey', () => {
  it('writes the new key and the replaced ones, both files 0600, readable by the next start', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'runr-master-write-'))
    try {
      const { keys, source } = await resolveMasterKeys({ env: {}, dataDir: dir })
      assert.equal(source.kind, 'dataDir')
      const file = join(dir, 'master.key')
      const next = randomBytes(32)
      await writeDataDirMasterKey(file, next, [keys.current.key])
      assert.ok(parseMasterKey(await readFile(file, 'utf8')).equals(next))
      for (const path of [file, `${file}.previous`]) assert.equal((await stat(path)).mode & 0o777, 0o600)
      const again = await resolveMasterKeys({ env: {}, dataDir: dir })
      assert.equal(again.keys.current.id, masterKeyId(next))
      assert.deepEqual(again.keys.previous(), [keys.current.key])
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
