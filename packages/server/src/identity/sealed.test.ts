import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import { open, parseMasterKey, SealedDataError, seal } from './sealed.ts'

const key = randomBytes(32)

function openFailure(sealed: string, withKey = key, aad = 'ctx'): SealedDataError {
  try {
    open(withKey, sealed, aad)
  } catch (err) {
    assert.ok(err instanceof SealedDataError, String(err))
    return err
  }
  assert.fail('sealed data opened')
}

function flipByte(text: string, index: number): string {
  const bytes = Buffer.from(text, 'base64url')
  bytes[index]! ^= 0x01
  return bytes.toString('base64url')
}

describe('seal and open', () => {
  it('round-trips strings, buffers and empty plaintexts', () => {
    assert.equal(open(key, seal(key, 'hello ✓', 'ctx'), 'ctx').toString('utf8'), 'hello ✓')
    const bytes = randomBytes(100)
    assert.deepEqual(open(key, seal(key, bytes, 'ctx'), 'ctx'), bytes)
    assert.equal(open(key, seal(key, '', 'ctx'), 'ctx').length, 0)
  })

  it('writes v1, a 12-byte nonce and the ciphertext with its 16-byte tag', () => {
    const [version, nonce, body, ...rest] = seal(key, 'abc', 'ctx').split('.')
    assert.equal(version, 'v1')
    assert.equal(Buffer.from(nonce!, 'base64url').length, 12)
    assert.equal(Buffer.from(body!, 'base64url').length, 3 + 16)
    assert.deepEqual(rest, [])
  })

  it('uses a fresh nonce for every seal, so equal plaintexts do not look equal', () => {
    assert.notEqual(seal(key, 'same', 'ctx'), seal(key, 'same', 'ctx'))
  })

  it('refuses to open with another master key', () => {
    assert.equal(openFailure(seal(key, 'secret', 'ctx'), randomBytes(32)).reason, 'unauthentic')
  })

  it('refuses to open under other associated data, so a value moved to another record fails', () => {
    assert.equal(openFailure(seal(key, 'secret', 'kid-a'), key, 'kid-b').reason, 'unauthentic')
  })

  it('detects a changed ciphertext, tag or nonce', () => {
    const [, nonce, body] = seal(key, 'secret value', 'ctx').split('.') as [string, string, string]
    const bodyLength = Buffer.from(body, 'base64url').length
    assert.equal(openFailure(`v1.${nonce}.${flipByte(body, 0)}`).reason, 'unauthentic')
    assert.equal(openFailure(`v1.${nonce}.${flipByte(body, bodyLength - 1)}`).reason, 'unauthentic')
    assert.equal(openFailure(`v1.${flipByte(nonce, 0)}.${body}`).reason, 'unauthentic')
  })

  it('refuses malformed input as bad_format without trying to decrypt', () => {
    const good = seal(key, 'x', 'ctx')
    const [, nonce, body] = good.split('.') as [string, string, string]
    for (const bad of [
      '',
      'v1',
      `v2.${nonce}.${body}`,
      `v1.${nonce}`,
      `${good}.extra`,
      `v1.${nonce}.${body}=`,
      `v1.${nonce}.${body.slice(0, 10)}`,
      `v1.${Buffer.alloc(16).toString('base64url')}.${body}`,
      `v1.${nonce}.+/+/${body}`,
    ]) {
      const err = openFailure(bad)
      assert.equal(err.reason, 'bad_format', bad)
      assert.ok(!err.message.includes(body))
    }
  })

  it('throws a RangeError for a master key that is not 32 bytes, a wiring mistake', () => {
    assert.throws(() => seal(randomBytes(16), 'x', 'ctx'), RangeError)
    assert.throws(() => open(randomBytes(16), seal(key, 'x', 'ctx'), 'ctx'), RangeError)
  })
})

describe('parseMasterKey', () => {
  it('reads base64 with or without padding, base64url, and ignores surrounding whitespace', () => {
    const raw = Buffer.from('fb'.repeat(32), 'hex')
    assert.deepEqual(parseMasterKey(raw.toString('base64')), raw)
    assert.deepEqual(parseMasterKey(raw.toString('base64').replace(/=$/, '')), raw)
    assert.deepEqual(parseMasterKey(raw.toString('base64url')), raw)
    assert.deepEqual(parseMasterKey(`  ${raw.toString('base64')}\n`), raw)
  })

  it('refuses values that are not exactly 32 bytes, without repeating them', () => {
    for (const text of [
      '',
      randomBytes(16).toString('base64'),
      randomBytes(33).toString('base64'),
      randomBytes(32).toString('hex'),
      'correct horse battery staple and some more words',
      `${randomBytes(32).toString('base64').slice(0, 42)}!=`,
    ]) {
      assert.throws(
        () => parseMasterKey(text),
        (err: Error) => /32 random bytes/.test(err.message) && (text === '' || !err.message.includes(text)),
        text,
      )
    }
  })
})
