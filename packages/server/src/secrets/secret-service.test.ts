import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, beforeEach, describe, it } from 'node:test'
import { GatewayError } from '../errors/gateway-error.ts'
import { parseMasterKey } from '../identity/sealed.ts'
import { createMemoryState } from '../state/memory-state.ts'
import type { SharedState } from '../state/types.ts'
import { openStore } from '../store/open-store.ts'
import type { SecretStore, Store } from '../store/types.ts'
import { MasterKeys, masterKeyId, resolveMasterKeys } from './master-keys.ts'
import { openSecretService, SecretService, type SecretServiceOptions } from './secret-service.ts'

const ttl = 30_000

function clock() {
  let t = 1_000
  return { now: () => t, advance: (ms: number) => (t += ms) }
}

/** Lets the in-process pub/sub deliver what was published. */
const delivered = () => new Promise((done) => setImmediate(done))

function isCode(code: string, ...forbidden: string[]) {
  return (err: unknown) => {
    assert.ok(err instanceof GatewayError, `expected a GatewayError, got ${String(err)}`)
    assert.equal(err.code, code)
    for (const text of forbidden) assert.ok(!err.message.includes(text), 'the error repeats the value')
    return true
  }
}

describe('SecretService over a SQLite store', () => {
  let dir: string
  let store: Store
  let state: SharedState
  let oldKey: Buffer
  const opened: SecretService[] = []

  const make = (options: Partial<SecretServiceOptions> = {}) => {
    const service = new SecretService({
      store: store.secrets,
      state,
      keys: new MasterKeys(oldKey),
      cacheTtlMs: ttl,
      ...options,
    })
    opened.push(service)
    return service
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'runr-secrets-'))
    store = await openStore({ kind: 'sqlite', path: join(dir, 'gateway.db') })
  })
  after(async () => {
    await store.close()
    await rm(dir, { recursive: true, force: true })
  })
  beforeEach(async () => {
    for (const service of opened.splice(0)) service.close()
    for (const secret of await store.secrets.list()) await store.secrets.delete(secret.name, secret.agentId)
    state = createMemoryState()
    oldKey = randomBytes(32)
  })

  it('resolves an agent’s own value first and the tool-wide value for every other agent', async () => {
    const secrets = make()
    await secrets.put('serpapi_key', 'tool-wide-value')
    await secrets.put('serpapi_key', 'bot-own-value', 'agt_bot')
    assert.equal(await secrets.resolve('serpapi_key', 'agt_bot'), 'bot-own-value')
    assert.equal(await secrets.resolve('serpapi_key', 'agt_other'), 'tool-wide-value')
    assert.equal(await secrets.resolve('openai_key', 'agt_bot'), undefined)
  })

  it('stores only ciphertext, tagged with the id of the master key that sealed it', async () => {
    const secrets = make()
    const value = `canary-${randomBytes(8).toString('hex')}`
    await secrets.put('gmail_token', value)
    const record = await store.secrets.get('gmail_token', null)
    assert.ok(record !== undefined)
    assert.equal(record.keyId, masterKeyId(oldKey))
    assert.equal(secrets.currentKeyId, record.keyId)
    for (const encoding of ['utf8', 'base64', 'base64url', 'hex'] as const) {
      assert.ok(!record.sealedValue.includes(Buffer.from(value).toString(encoding)))
    }
  })

  it('seals the same value differently every time (a random nonce per value)', async () => {
    const secrets = make()
    await secrets.put('k', 'same value')
    const first = (await store.secrets.get('k', null))!.sealedValue
    await secrets.put('k', 'same value')
    const second = (await store.secrets.get('k', null))!.sealedValue
    assert.notEqual(first, second)
  })

  it('lists names and metadata, never a value', async () => {
    const secrets = make()
    await secrets.put('b_key', 'value-of-b')
    await secrets.put('a_key', 'value-of-a', 'agt_1')
    const listed = await secrets.list()
    assert.deepEqual(
      listed.map((s) => [s.name, s.agentId, s.keyId]),
      [
        ['a_key', 'agt_1', masterKeyId(oldKey)],
        ['b_key', null, masterKeyId(oldKey)],
      ],
    )
    const text = JSON.stringify(listed)
    assert.ok(!text.includes('value-of') && !text.includes('sealed'))
  })

  it('marks a replaced value as rotated and keeps when it was created', async () => {
    const secrets = make()
    const first = await secrets.put('k', 'one')
    assert.equal(first.rotatedAt, null)
    const second = await secrets.put('k', 'two')
    assert.equal(second.createdAt, first.createdAt)
    assert.ok(second.rotatedAt !== null && second.rotatedAt >= first.createdAt)
  })

  it('refuses bad names, empty or oversized values and bad agent ids with bad_request, never repeating the value', async () => {
    const secrets = make()
    const value = 'canary-value-9f8e7d'
    await assert.rejects(secrets.put('', value), isCode('bad_request', value))
    await assert.rejects(secrets.put('has space', value), isCode('bad_request', value))
    await assert.rejects(secrets.put('a/b', value), isCode('bad_request', value))
    await assert.rejects(secrets.put('x'.repeat(129), value), isCode('bad_request', value))
    await assert.rejects(secrets.put('ok', ''), isCode('bad_request'))
    await assert.rejects(secrets.put('ok', 42 as unknown as string), isCode('bad_request'))
    const big = `canary${'é'.repeat(32 * 1024)}`
    await assert.rejects(secrets.put('ok', big), isCode('bad_request', 'canary'))
    await assert.rejects(secrets.put('ok', value, ''), isCode('bad_request', value))
    await assert.rejects(secrets.delete('bad name'), isCode('bad_request'))
    assert.deepEqual(await secrets.list(), [])
    // The limit is bytes of UTF-8: exactly 64 KiB is accepted.
    await secrets.put('ok', 'x'.repeat(64 * 1024))
    assert.equal((await secrets.resolve('ok', 'agt'))?.length, 64 * 1024)
  })

  it('does not open a sealed value copied to another secret or another agent', async () => {
    const secrets = make()
    await secrets.put('serpapi_key', 'the-real-key', 'agt_owner')
    const record = (await store.secrets.get('serpapi_key', 'agt_owner'))!
    await store.secrets.put({ ...record, agentId: 'agt_thief' })
    await store.secrets.put({ ...record, name: 'other_key', agentId: null })
    await assert.rejects(
      secrets.resolve('serpapi_key', 'agt_thief'),
      isCode('tool_unavailable', 'the-real-key'),
    )
    await assert.rejects(
      secrets.resolve('other_key', 'agt_owner'),
      isCode('tool_unavailable', 'the-real-key'),
    )
    assert.equal(await secrets.resolve('serpapi_key', 'agt_owner'), 'the-real-key')
  })

  it('deletes one value: an agent’s override, then the tool-wide one', async () => {
    const secrets = make()
    await secrets.put('k', 'tool')
    await secrets.put('k', 'own', 'agt_1')
    assert.equal(await secrets.delete('k', 'agt_1'), true)
    assert.equal(await secrets.resolve('k', 'agt_1'), 'tool')
    assert.equal(await secrets.delete('k', 'agt_1'), false)
    assert.equal(await secrets.delete('k'), true)
    assert.equal(await secrets.resolve('k', 'agt_1'), undefined)
  })

  it('serves a cached value until its ttl passes when nobody tells it about a change', async () => {
    const time = clock()
    const reader = make({ now: time.now })
    // Another instance with its own shared state: its change reaches this one only through the store.
    const writer = make({ state: createMemoryState() })
    await writer.put('k', 'old')
    assert.equal(await reader.resolve('k', 'agt'), 'old')
    await writer.put('k', 'new')
    time.advance(ttl - 1)
    assert.equal(await reader.resolve('k', 'agt'), 'old')
    time.advance(2)
    assert.equal(await reader.resolve('k', 'agt'), 'new')
  })

  it('uses a changed value on the next call: its own change at once, another instance’s on its message', async () => {
    const time = clock()
    const one = make({ now: time.now })
    const two = make({ now: time.now })
    await one.put('k', 'v1')
    assert.equal(await one.resolve('k', 'agt'), 'v1')
    assert.equal(await two.resolve('k', 'agt'), 'v1')
    await one.put('k', 'v2')
    assert.equal(await one.resolve('k', 'agt'), 'v2')
    await delivered()
    assert.equal(await two.resolve('k', 'agt'), 'v2')
    // A tool-wide change reaches agents that had an answer cached, including "not set".
    assert.equal(await two.resolve('fresh', 'agt'), undefined)
    await one.put('fresh', 'now set')
    await delivered()
    assert.equal(await two.resolve('fresh', 'agt'), 'now set')
    await one.delete('k')
    await delivered()
    assert.equal(await two.resolve('k', 'agt'), undefined)
  })

  it('shares one store read between concurrent resolves, and never caches what a read begun before a change found', async () => {
    let gate: (() => void) | undefined
    let reads = 0
    const real = store.secrets
    const slow: SecretStore = {
      put: (s, now) => real.put(s, now),
      // Holds the first tool-wide read after it has read, as a slow database would.
      get: async (name, agentId) => {
        const record = await real.get(name, agentId)
        if (agentId !== null) return record
        reads++
        if (gate === undefined) await new Promise<void>((open) => (gate = open))
        return record
      },
      list: () => real.list(),
      delete: (name, agentId) => real.delete(name, agentId),
      all: () => real.all(),
      reseal: (changes) => real.reseal(changes),
    }
    const secrets = make({ store: slow })
    await make().put('k', 'before')
    const first = secrets.resolve('k', 'agt_1')
    const second = secrets.resolve('k', 'agt_1')
    while (gate === undefined) await delivered()
    assert.equal(reads, 1)
    await secrets.put('k', 'after')
    gate!()
    assert.equal(await first, 'before')
    assert.equal(await second, 'before')
    assert.equal(await secrets.resolve('k', 'agt_1'), 'after')
  })

  it('rotates to a new master key: every value is sealed again and opens with the new key alone', async () => {
    const secrets = make()
    await secrets.put('a', 'value-a')
    await secrets.put('a', 'value-a-own', 'agt_1')
    await secrets.put('b', 'value-b')
    const newKey = randomBytes(32)
    const rotation = await secrets.rotateMaster(newKey)
    assert.deepEqual(rotation, {
      keyId: masterKeyId(newKey),
      previousKeyId: masterKeyId(oldKey),
      resealed: 3,
      keyFile: undefined,
    })
    assert.deepEqual(
      (await store.secrets.list()).map((s) => s.keyId),
      [masterKeyId(newKey), masterKeyId(newKey), masterKeyId(newKey)],
    )
    const fresh = make({ keys: new MasterKeys(newKey) })
    assert.equal(await fresh.resolve('a', 'agt_1'), 'value-a-own')
    assert.equal(await fresh.resolve('b', 'agt_1'), 'value-b')
    // createdAt and rotatedAt describe the values, which did not change.
    assert.ok((await store.secrets.list()).every((s) => s.rotatedAt === null))
  })

  it('keeps opening values sealed under the old key while another instance still writes with it', async () => {
    const rotating = make()
    const lagging = make({ state: createMemoryState() })
    await rotating.put('a', 'value-a')
    await rotating.rotateMaster(randomBytes(32))
    await lagging.put('b', 'written-with-the-old-key')
    assert.equal(await rotating.resolve('b', 'agt'), 'written-with-the-old-key')
    // Running it again without a key carries the straggler over.
    const again = await rotating.rotateMaster()
    assert.equal(again.resealed, 1)
    assert.equal(again.keyId, again.previousKeyId)
  })

  it('retries a rotation when a value changed between reading and re-sealing, and loses no write', async () => {
    const real = store.secrets
    const other = make({ state: createMemoryState() })
    let interfered = false
    const racing: SecretStore = {
      put: (s, now) => real.put(s, now),
      get: (name, agentId) => real.get(name, agentId),
      list: () => real.list(),
      delete: (name, agentId) => real.delete(name, agentId),
      all: () => real.all(),
      reseal: async (changes) => {
        if (!interfered) {
          interfered = true
          await other.put('a', 'written-during-rotation')
        }
        return real.reseal(changes)
      },
    }
    const secrets = make({ store: racing })
    await secrets.put('a', 'original')
    await secrets.put('b', 'untouched')
    const newKey = randomBytes(32)
    const rotation = await secrets.rotateMaster(newKey)
    assert.equal(rotation.resealed, 2)
    const fresh = make({ keys: new MasterKeys(newKey) })
    assert.equal(await fresh.resolve('a', 'agt'), 'written-during-rotation')
    assert.equal(await fresh.resolve('b', 'agt'), 'untouched')
  })

  it('moves values still under a previous key to the current one when rotated without a new key', async () => {
    await make().put('a', 'sealed-with-old')
    const newKey = randomBytes(32)
    const secrets = make({ keys: new MasterKeys(newKey, [oldKey]) })
    assert.equal(await secrets.resolve('a', 'agt'), 'sealed-with-old')
    const rotation = await secrets.rotateMaster()
    assert.equal(rotation.resealed, 1)
    assert.equal(rotation.keyId, masterKeyId(newKey))
    assert.equal(rotation.keyId, rotation.previousKeyId)
    assert.equal(await make({ keys: new MasterKeys(newKey) }).resolve('a', 'agt'), 'sealed-with-old')
  })

  it('refuses to rotate, changing nothing, when a value is sealed under a key it does not hold', async () => {
    await make({ keys: new MasterKeys(randomBytes(32)) }).put('foreign', 'x')
    const secrets = make()
    await secrets.put('mine', 'y')
    const before = await store.secrets.all()
    await assert.rejects(secrets.rotateMaster(randomBytes(32)), isCode('conflict'))
    assert.equal(secrets.currentKeyId, masterKeyId(oldKey))
    assert.deepEqual(await store.secrets.all(), before)
    await assert.rejects(secrets.resolve('foreign', 'agt'), isCode('tool_unavailable'))
  })

  it('refuses the key in use as the new master key', async () => {
    await assert.rejects(make().rotateMaster(Buffer.from(oldKey)), isCode('bad_request'))
  })

  it('with a generated key file, generates the new key and writes it (0600) before sealing with it', async () => {
    const dataDir = join(dir, `data-${randomBytes(4).toString('hex')}`)
    const resolved = await resolveMasterKeys({ env: {}, dataDir })
    assert.equal(resolved.source.kind, 'dataDir')
    const keyFile = join(dataDir, 'master.key')
    const secrets = make({ keys: resolved.keys, keyFile })
    await secrets.put('a', 'value-a')
    const firstId = secrets.currentKeyId
    const rotation = await secrets.rotateMaster()
    assert.equal(rotation.keyFile, keyFile)
    assert.equal(rotation.resealed, 1)
    assert.notEqual(rotation.keyId, firstId)
    assert.equal(masterKeyId(parseMasterKey(await readFile(keyFile, 'utf8'))), rotation.keyId)
    assert.equal((await stat(keyFile)).mode & 0o777, 0o600)
    assert.equal((await stat(`${keyFile}.previous`)).mode & 0o777, 0o600)
    // A restart finds the new key current and the replaced one still able to open.
    const restarted = await resolveMasterKeys({ env: {}, dataDir })
    assert.equal(restarted.keys.current.id, rotation.keyId)
    assert.ok(restarted.keys.get(firstId) !== undefined)
    assert.equal(await make({ keys: restarted.keys }).resolve('a', 'agt'), 'value-a')
  })

  it('refuses to open when stored values need a master key it does not hold, naming the key and no value', async () => {
    const foreign = randomBytes(32)
    await make({ keys: new MasterKeys(foreign) }).put('k', 'canary-start-value')
    await assert.rejects(
      openSecretService({ store: store.secrets, state, keys: new MasterKeys(oldKey) }),
      (err: Error) => err.message.includes(masterKeyId(foreign)) && !err.message.includes('canary'),
    )
    const service = await openSecretService({
      store: store.secrets,
      state,
      keys: new MasterKeys(oldKey, [foreign]),
    })
    assert.equal(await service.resolve('k', 'agt'), 'canary-start-value')
    service.close()
  })
})
