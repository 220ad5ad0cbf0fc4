import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import { CompactSign, compactVerify } from 'jose'
import { jwkThumbprint } from './jwk.ts'
import { createKeyRing, type KeyRing, retiredKeyGraceMs } from './key-ring.ts'
import { open } from './sealed.ts'
import { memorySigningKeyStore, testClock } from './test-helpers.ts'

const hour = 3_600_000
const day = 24 * hour

function setup() {
  const store = memorySigningKeyStore()
  const clock = testClock()
  const masterKey = randomBytes(32)
  const make = () => createKeyRing({ store, masterKey, rotateEveryMs: day, maxTtlMs: hour, now: clock.now })
  return { store, clock, masterKey, make }
}

async function signsAndVerifies(ring: KeyRing, kid = ring.active().kid): Promise<boolean> {
  const { privateKey } = ring.active()
  const jws = await new CompactSign(Buffer.from('payload'))
    .setProtectedHeader({ alg: 'EdDSA' })
    .sign(privateKey)
  const key = ring.verificationKey(kid)
  if (key === undefined) return false
  return compactVerify(jws, key).then(
    () => true,
    () => false,
  )
}

describe('createKeyRing', () => {
  it('creates, seals and stores a first key when the store has none', async () => {
    const { store, clock, masterKey, make } = setup()
    const ring = await make()
    const [record, ...others] = await store.list()
    assert.deepEqual(others, [])
    assert.equal(record!.kid, ring.active().kid)
    assert.equal(record!.kid, jwkThumbprint(record!.publicJwk))
    assert.equal(record!.alg, 'EdDSA')
    assert.equal(record!.createdAt, clock.now())
    assert.equal(record!.retiredAt, null)
    const sealed = JSON.parse(open(masterKey, record!.sealedPrivateKey, record!.kid).toString('utf8'))
    assert.equal(sealed.x, record!.publicJwk.x)
    assert.ok(!record!.sealedPrivateKey.includes(sealed.d), 'the private key is stored sealed only')
    assert.ok(await signsAndVerifies(ring))
  })

  it('reuses the stored active key on the next start', async () => {
    const { store, make } = setup()
    const first = await make()
    const second = await make()
    assert.equal(second.active().kid, first.active().kid)
    assert.equal((await store.list()).length, 1)
  })

  it('refuses to start with a master key that does not match the stored keys', async () => {
    const { store, make } = setup()
    await make()
    await assert.rejects(
      createKeyRing({ store, masterKey: randomBytes(32), rotateEveryMs: day, maxTtlMs: hour }),
      /the master key does not match the stored signing keys/,
    )
  })
})

describe('KeyRing rotation', () => {
  it('rotates to a new key that signs while the old one keeps verifying through its grace', async () => {
    const { store, clock, make } = setup()
    const ring = await make()
    const oldKid = ring.active().kid
    clock.advance(1000)
    const newKid = await ring.rotate()
    assert.notEqual(newKid, oldKid)
    assert.equal(ring.active().kid, newKid)
    assert.ok(await signsAndVerifies(ring))
    const retired = (await store.list()).find((k) => k.kid === oldKid)!
    assert.equal(retired.retiredAt, clock.now())
    assert.ok(ring.verificationKey(oldKid))
    clock.advance(hour + retiredKeyGraceMs - 1)
    assert.ok(ring.verificationKey(oldKid), 'tokens it signed may still be alive')
    clock.advance(1)
    assert.equal(ring.verificationKey(oldKid), undefined, 'its last token has expired')
    assert.ok(ring.verificationKey(newKid))
  })

  it('publishes in the JWKS exactly the keys it verifies with, public members only', async () => {
    const { clock, make } = setup()
    const ring = await make()
    const first = ring.active().kid
    const kids = () => ring.jwks().keys.map((k) => k.kid)
    assert.deepEqual(kids(), [first])
    clock.advance(hour)
    const second = await ring.rotate()
    assert.deepEqual(kids(), [second, first])
    for (const jwk of ring.jwks().keys) {
      assert.deepEqual(Object.keys(jwk).sort(), ['alg', 'crv', 'kid', 'kty', 'use', 'x'])
      assert.equal(jwk.alg, 'EdDSA')
      assert.equal(jwk.use, 'sig')
      assert.equal(jwkThumbprint(jwk), jwk.kid)
    }
    clock.advance(30 * 60_000)
    const third = await ring.rotate()
    assert.deepEqual(kids(), [third, second, first])
    clock.advance(hour + retiredKeyGraceMs - 30 * 60_000)
    assert.deepEqual(kids(), [third, second], 'the first key left with its grace')
    assert.equal(ring.verificationKey(first), undefined)
    assert.equal(ring.verificationKey('no-such-kid'), undefined)
  })

  it('rotates only when the active key is older than rotateEveryMs', async () => {
    const { clock, make } = setup()
    const ring = await make()
    const kid = ring.active().kid
    clock.advance(day - 1)
    assert.equal(await ring.rotateIfDue(), false)
    assert.equal(ring.active().kid, kid)
    clock.advance(1)
    assert.equal(await ring.rotateIfDue(), true)
    assert.notEqual(ring.active().kid, kid)
  })

  it('picks up a rotation made by another instance on refresh, and does not rotate again', async () => {
    const { clock, make } = setup()
    const a = await make()
    const b = await make()
    clock.advance(day)
    const kid = await a.rotate()
    assert.notEqual(b.active().kid, kid)
    assert.equal(b.verificationKey(kid), undefined, 'b has not seen the new key yet')
    await b.refresh()
    assert.equal(b.active().kid, kid)
    assert.ok(await signsAndVerifies(a, kid))
    assert.equal(await b.rotateIfDue(), false)
  })

  it('settles on one active key when two instances create the first key at once', async () => {
    const { store, make } = setup()
    const [a, b] = await Promise.all([make(), make()])
    await Promise.all([a.refresh(), b.refresh()])
    assert.equal(a.active().kid, b.active().kid)
    assert.ok(b.verificationKey(a.active().kid))
    assert.ok((await store.list()).length >= 1)
  })

  it('makes a new key when concurrent rotations left none active', async () => {
    const { store, clock, make } = setup()
    const ring = await make()
    clock.advance(1000)
    await store.retireAllBut('nobody', clock.now())
    await ring.refresh()
    const active = (await store.list()).filter((k) => k.retiredAt === null)
    assert.deepEqual(
      active.map((k) => k.kid),
      [ring.active().kid],
    )
    assert.ok(await signsAndVerifies(ring))
  })

  it('prunes only the keys whose grace has ended', async () => {
    const { store, clock, make } = setup()
    const ring = await make()
    const first = ring.active().kid
    clock.advance(1000)
    const second = await ring.rotate()
    clock.advance(hour)
    const third = await ring.rotate()
    assert.equal(await ring.prune(), 0)
    clock.advance(retiredKeyGraceMs + 1)
    assert.equal(await ring.prune(), 1)
    assert.deepEqual(
      (await store.list()).map((k) => k.kid),
      [second, third],
    )
    assert.equal(ring.verificationKey(first), undefined)
    assert.ok(ring.verificationKey(second))
  })
})
