import assert from 'node:assert/strict'
import { mkdtemp, readFile, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { generatedKeyFile, resolveAdminKeys } from './admin-keys.ts'

describe('admin keys', () => {
  it('accepts RUNR_ADMIN_KEY and every configured key, and nothing else', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'runr-keys-'))
    const keys = await resolveAdminKeys(
      ['configured-key-0123456789'],
      { RUNR_ADMIN_KEY: 'env-key-0123456789abc' },
      dir,
    )
    assert.equal(keys.count, 2)
    assert.equal(keys.verify('configured-key-0123456789'), true)
    assert.equal(keys.verify('env-key-0123456789abc'), true)
    assert.equal(keys.verify('env-key-0123456789ab'), false)
    assert.equal(keys.verify(''), false)
    assert.equal(keys.generated, undefined)
  })

  it('generates one key on the first start, keeps only its digest, and accepts it on the next start', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'runr-keys-'))
    const first = await resolveAdminKeys([], {}, dir)
    assert.ok(first.generated?.startsWith('runr_admin_'))
    const stored = await readFile(join(dir, generatedKeyFile), 'utf8')
    assert.ok(!stored.includes(first.generated!), 'the key itself is never written')
    assert.equal(((await stat(join(dir, generatedKeyFile))).mode & 0o777).toString(8), '600')
    const second = await resolveAdminKeys([], {}, dir)
    assert.equal(second.generated, undefined, 'the key is printed once, on the first start only')
    assert.equal(second.verify(first.generated!), true)
    assert.equal(second.verify('runr_admin_wrong'), false)
  })
})
