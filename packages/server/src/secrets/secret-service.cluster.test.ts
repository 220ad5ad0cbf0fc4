/**
 * Two gateway instances' secret services over one Postgres schema and one Redis: a change made on
 * one is used by the other on its next call, well before the cache would have expired.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, beforeEach, describe, it, type TestContext } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import { dropSchemaAndKeys, requireService, serviceUrls } from '../../../../test/support/services.ts'
import { createRedisState } from '../state/redis-state.ts'
import type { SharedState } from '../state/types.ts'
import { openStore } from '../store/open-store.ts'
import type { Store } from '../store/types.ts'
import { MasterKeys, masterKeyId } from './master-keys.ts'
import { SecretService } from './secret-service.ts'

const schema = `runr_test_secrets_${randomBytes(6).toString('hex')}`
const prefix = `runr_test_secrets_${randomBytes(6).toString('hex')}:`
// Long enough that only the pub/sub message can explain a fresh value.
const hour = 3_600_000

async function eventually<T>(read: () => Promise<T>, expected: T, what: string): Promise<void> {
  const deadline = Date.now() + 3000
  let last: T = await read()
  while (last !== expected) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what} (last: ${String(last)})`)
    await delay(10)
    last = await read()
  }
}

describe('SecretService across instances (Postgres and Redis)', () => {
  let available = false
  const stores: Store[] = []
  const states: SharedState[] = []
  const services: SecretService[] = []

  before(async () => {
    available =
      (await requireService('postgres', serviceUrls.postgres)) &&
      (await requireService('redis', serviceUrls.redis))
  })
  beforeEach(async () => {
    // Tests share the schema: each starts with no secrets.
    const store = stores[0]
    if (store === undefined) return
    for (const { name, agentId } of await store.secrets.list()) await store.secrets.delete(name, agentId)
  })
  after(async () => {
    for (const service of services) service.close()
    for (const state of states) await state.close()
    for (const store of stores) await store.close()
    if (available) await dropSchemaAndKeys(schema, prefix)
  })

  /** A gateway instance's secret service with its own connections. */
  async function instance(
    keys: MasterKeys,
    onError: (err: unknown, what: string) => void = () => {},
  ): Promise<SecretService> {
    const store = await openStore({ kind: 'postgres', url: serviceUrls.postgres }, { postgresSchema: schema })
    stores.push(store)
    const state = await createRedisState({ url: serviceUrls.redis, prefix })
    states.push(state)
    const service = new SecretService({ store: store.secrets, state, keys, cacheTtlMs: hour, onError })
    services.push(service)
    return service
  }

  const skipUnlessAvailable = (t: TestContext) => {
    if (!available) t.skip('postgres or redis not running')
    return available
  }

  it('uses a value changed on another instance on the next call, and forgets a deleted one', async (t) => {
    if (!skipUnlessAvailable(t)) return
    const key = randomBytes(32)
    const one = await instance(new MasterKeys(key))
    const two = await instance(new MasterKeys(key))
    await one.put('serpapi_key', 'first-value')
    assert.equal(await two.resolve('serpapi_key', 'agt_x'), 'first-value')
    await one.put('serpapi_key', 'second-value')
    await eventually(() => two.resolve('serpapi_key', 'agt_x'), 'second-value', 'the new value is used')
    await one.put('serpapi_key', 'own-value', 'agt_x')
    await eventually(() => two.resolve('serpapi_key', 'agt_x'), 'own-value', 'the override is used')
    await one.delete('serpapi_key', 'agt_x')
    await one.delete('serpapi_key')
    await eventually(() => two.resolve('serpapi_key', 'agt_x'), undefined, 'the deleted value is gone')
  })

  it('keeps every instance resolving through a cluster rotation: new key first, then one re-seal', async (t) => {
    if (!skipUnlessAvailable(t)) return
    const [oldKey, newKey] = [randomBytes(32), randomBytes(32)]
    await (await instance(new MasterKeys(oldKey))).put('openai_key', 'sealed-with-the-old-key')
    // Phase 1: every instance restarted with the new key current and the old one previous.
    const one = await instance(new MasterKeys(newKey, [oldKey]))
    const two = await instance(new MasterKeys(newKey, [oldKey]))
    await two.put('gmail_token', 'sealed-with-the-new-key')
    assert.equal(await one.resolve('openai_key', 'agt'), 'sealed-with-the-old-key')
    // Phase 2: one instance re-seals everything under the current key.
    const rotation = await one.rotateMaster()
    assert.deepEqual([rotation.keyId, rotation.resealed], [masterKeyId(newKey), 1])
    const onlyNew = await instance(new MasterKeys(newKey))
    assert.equal(await onlyNew.resolve('openai_key', 'agt'), 'sealed-with-the-old-key')
    assert.equal(await two.resolve('gmail_token', 'agt'), 'sealed-with-the-new-key')
  })

  it('warns an instance that does not hold the key another instance rotated to', async (t) => {
    if (!skipUnlessAvailable(t)) return
    const key = randomBytes(32)
    const warnings: string[] = []
    const lagging = await instance(new MasterKeys(key), (_err, what) => warnings.push(what))
    const rotating = await instance(new MasterKeys(key))
    await rotating.rotateMaster(randomBytes(32))
    await eventually(
      async () => warnings.includes('master key rotated elsewhere'),
      true,
      'the warning arrives',
    )
    assert.equal(lagging.currentKeyId, masterKeyId(key))
  })
})
