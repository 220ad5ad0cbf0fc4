import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { after, before, beforeEach, describe, it } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { compileConfig } from '../config/compile.ts'
import { createLogger } from '../observability/logger.ts'
import { createMetrics } from '../observability/metrics.ts'
import { type MasterKeySource, MasterKeys, masterKeyId } from '../secrets/master-keys.ts'
import { SecretService } from '../secrets/secret-service.ts'
import { createMemoryState } from '../state/memory-state.ts'
import { openStore } from '../store/open-store.ts'
import type { Store } from '../store/types.ts'
import { resolveAdminKeys } from './admin-keys.ts'
import { createAdminServer } from './admin-server.ts'
import { secretAdminRoutes } from './secret-routes.ts'

const adminKey = 'secret-routes-admin-key-0123456789'

/** Every field the routes answer with; each test reads the ones its route sends. */
interface Answer {
  error: { code: string; message: string }
  secrets: Array<{ name: string; agent: string | null; keyId: string; createdAt: string; rotatedAt: string }>
  keyId: string
  previousKeyId: string
  resealed: number
  keyFile: string
  next: string[]
}
const canary = `canary-${randomBytes(8).toString('hex')}`

describe('the secrets admin API', () => {
  let dir: string
  let store: Store
  let app: FastifyInstance
  let base: string
  let secrets: SecretService
  let oldKey: Buffer
  let logs = ''

  let config: ReturnType<typeof compileConfig>
  let keys: Awaited<ReturnType<typeof resolveAdminKeys>>
  const logger = createLogger(
    'trace',
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        logs += chunk.toString('utf8')
        done()
      },
    }),
  )

  /** A fresh service and admin listener over the shared store. */
  let afterRotation: (() => Promise<unknown>) | undefined
  async function serve(source: MasterKeySource = { kind: 'env' }, keyFile?: string): Promise<void> {
    await app?.close()
    secrets?.close()
    oldKey = randomBytes(32)
    secrets = new SecretService({
      store: store.secrets,
      state: createMemoryState(),
      keys: new MasterKeys(oldKey),
      ...(keyFile === undefined ? {} : { keyFile }),
    })
    app = createAdminServer({
      currentConfig: () => config,
      keys,
      metrics: createMetrics(),
      logger,
      readiness: async () => ({ ready: true, reasons: [] }),
      routes: [
        secretAdminRoutes({
          secrets,
          agents: store.agents,
          masterKey: source,
          onMasterRotated: () => afterRotation?.() ?? Promise.resolve(),
        }),
      ],
    })
    base = await app.listen({ host: '127.0.0.1', port: 0 })
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'runr-secret-routes-'))
    store = await openStore({ kind: 'sqlite', path: join(dir, 'gateway.db') })
    await store.agents.create({ id: 'agt_bot', name: 'bot' })
    config = compileConfig({}, '')
    keys = await resolveAdminKeys([], { RUNR_ADMIN_KEY: adminKey }, dir)
  })
  after(async () => {
    await app.close()
    secrets.close()
    await store.close()
    await rm(dir, { recursive: true, force: true })
  })
  beforeEach(async () => {
    afterRotation = undefined
    for (const s of await store.secrets.list()) await store.secrets.delete(s.name, s.agentId)
    await serve()
  })

  const call = async (method: string, path: string, body?: unknown, raw?: string) => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${adminKey}`,
        ...(body === undefined && raw === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(raw !== undefined ? { body: raw } : body === undefined ? {} : { body: JSON.stringify(body) }),
    })
    const text = await res.text()
    return {
      status: res.status,
      text,
      json: text === '' ? undefined : (JSON.parse(text) as Answer),
    }
  }

  it('sets a secret with 204, and lists its name and metadata but never its value', async () => {
    assert.equal((await call('PUT', '/v1/secrets/serpapi_key', { value: canary })).status, 204)
    const listed = await call('GET', '/v1/secrets')
    assert.equal(listed.status, 200)
    const [secret, ...rest] = listed.json!['secrets']
    assert.ok(secret !== undefined)
    assert.deepEqual(rest, [])
    assert.deepEqual(Object.keys(secret).sort(), ['agent', 'createdAt', 'keyId', 'name', 'rotatedAt'])
    assert.equal(secret.name, 'serpapi_key')
    assert.equal(secret.agent, null)
    assert.equal(secret.keyId, masterKeyId(oldKey))
    assert.equal(new Date(secret.createdAt).toISOString(), secret.createdAt)
    assert.equal(secret.rotatedAt, null)
    assert.ok(!listed.text.includes(canary))
    assert.equal(await secrets.resolve('serpapi_key', 'agt_any'), canary)
    await call('PUT', '/v1/secrets/serpapi_key', { value: 'replaced' })
    const [replaced] = (await call('GET', '/v1/secrets')).json!['secrets']
    assert.ok(replaced !== undefined)
    assert.equal(new Date(replaced.rotatedAt).toISOString(), replaced.rotatedAt)
  })

  it('sets an agent’s own value by agent name or id, and refuses an unknown agent with 404', async () => {
    assert.equal((await call('PUT', '/v1/secrets/k', { value: 'for-bot', agent: 'bot' })).status, 204)
    assert.equal(await secrets.resolve('k', 'agt_bot'), 'for-bot')
    assert.equal((await call('PUT', '/v1/secrets/k', { value: 'by-id', agent: 'agt_bot' })).status, 204)
    assert.equal(await secrets.resolve('k', 'agt_bot'), 'by-id')
    const unknown = await call('PUT', '/v1/secrets/k', { value: canary, agent: 'nobody' })
    assert.equal(unknown.status, 404)
    assert.equal(unknown.json!['error'].code, 'not_found')
    assert.ok(!unknown.text.includes(canary))
    assert.deepEqual(
      (await call('GET', '/v1/secrets')).json!['secrets'].map((s: { agent: string | null }) => s.agent),
      ['agt_bot'],
    )
  })

  it('deletes a value with 204 and answers 404 when there is none', async () => {
    await call('PUT', '/v1/secrets/k', { value: 'tool' })
    await call('PUT', '/v1/secrets/k', { value: 'own', agent: 'bot' })
    assert.equal((await call('DELETE', '/v1/secrets/k?agent=bot')).status, 204)
    assert.equal(await secrets.resolve('k', 'agt_bot'), 'tool')
    const again = await call('DELETE', '/v1/secrets/k?agent=bot')
    assert.equal(again.status, 404)
    assert.match(again.json!['error'].message, /No secret "k" is set for agent "bot"/)
    assert.equal((await call('DELETE', '/v1/secrets/k')).status, 204)
    assert.equal((await call('DELETE', '/v1/secrets/k')).status, 404)
  })

  it('deletes the override of an agent that no longer exists by the id it had', async () => {
    await secrets.put('k', 'orphan', 'agt_deleted')
    assert.equal((await call('DELETE', '/v1/secrets/k?agent=agt_deleted')).status, 204)
    assert.deepEqual(await secrets.list(), [])
  })

  it('refuses bad input with 400 and a clear message that never repeats the value', async () => {
    const cases: Array<[string, string, unknown, string?]> = [
      ['bad name', '/v1/secrets/has%20space', { value: canary }],
      ['empty value', '/v1/secrets/k', { value: '' }],
      ['oversized value', '/v1/secrets/k', { value: `${canary}${'x'.repeat(64 * 1024)}` }],
      ['no value', '/v1/secrets/k', { agent: 'bot' }],
      ['unknown field', '/v1/secrets/k', { value: canary, values: canary }],
      ['not an object', '/v1/secrets/k', [canary]],
      ['malformed JSON', '/v1/secrets/k', undefined, `{"value": "${canary}", oops}`],
    ]
    for (const [what, path, body, raw] of cases) {
      const res = await call('PUT', path, body, raw)
      assert.equal(res.status, 400, `${what}: ${res.text}`)
      assert.equal(res.json!['error'].code, 'bad_request', what)
      assert.ok(res.json!['error'].message.length > 0, what)
      assert.ok(!res.text.includes(canary), `${what}: the error repeats the value`)
    }
    assert.deepEqual(await secrets.list(), [])
    assert.equal((await call('DELETE', '/v1/secrets/k?agent=')).status, 400)
  })

  it('requires the admin key', async () => {
    const res = await fetch(`${base}/v1/secrets/k`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ value: canary }),
    })
    assert.equal(res.status, 401)
    assert.equal((await fetch(`${base}/v1/secrets`)).status, 401)
    assert.deepEqual(await secrets.list(), [])
  })

  it('rotates to a given master key, and says what to set before the next restart', async () => {
    await call('PUT', '/v1/secrets/a', { value: 'value-a' })
    await call('PUT', '/v1/secrets/b', { value: 'value-b', agent: 'bot' })
    const newKey = randomBytes(32)
    const res = await call('POST', '/v1/secrets/rotate-master', { key: newKey.toString('base64') })
    assert.equal(res.status, 200, res.text)
    assert.equal(res.json!['keyId'], masterKeyId(newKey))
    assert.equal(res.json!['previousKeyId'], masterKeyId(oldKey))
    assert.equal(res.json!['resealed'], 2)
    assert.match(res.json!['next'].join('\n'), /set RUNR_MASTER_KEY to the new key/)
    assert.ok(!res.text.includes(newKey.toString('base64')), 'the answer never shows the key')
    const listed = (await call('GET', '/v1/secrets')).json!['secrets']
    assert.deepEqual(
      listed.map((s: { keyId: string }) => s.keyId),
      [masterKeyId(newKey), masterKeyId(newKey)],
    )
    const withNewKeyOnly = new SecretService({
      store: store.secrets,
      state: createMemoryState(),
      keys: new MasterKeys(newKey),
    })
    assert.equal(await withNewKeyOnly.resolve('b', 'agt_bot'), 'value-b')
    withNewKeyOnly.close()
  })

  it('runs the follow-up step after a rotation that changed the key, and reports its failure without failing', async () => {
    let runs = 0
    afterRotation = async () => {
      runs++
      if (runs === 2) throw new Error('store is down')
    }
    assert.equal((await call('POST', '/v1/secrets/rotate-master')).status, 200)
    assert.equal(runs, 0, 'nothing changed, so nothing to follow up')
    const first = await call('POST', '/v1/secrets/rotate-master', { key: randomBytes(32).toString('base64') })
    assert.equal(first.status, 200)
    assert.equal(runs, 1)
    const second = await call('POST', '/v1/secrets/rotate-master', {
      key: randomBytes(32).toString('base64'),
    })
    assert.equal(second.status, 200)
    assert.equal(runs, 2)
    assert.match(
      second.json!['next'].at(-1)!,
      /follow-up step failed \(store is down\); run `4runr keys rotate`/,
    )
  })

  it('with an operator-managed key and no new key, only explains how to rotate', async () => {
    await call('PUT', '/v1/secrets/a', { value: 'value-a' })
    const res = await call('POST', '/v1/secrets/rotate-master')
    assert.equal(res.status, 200, res.text)
    assert.equal(res.json!['resealed'], 0)
    assert.equal(res.json!['keyId'], masterKeyId(oldKey))
    assert.match(res.json!['next'].join('\n'), /Nothing to do.*\n.*--key-stdin/)
  })

  it('with the generated key file, generates the new key, writes it, and names the file', async () => {
    const file = join(dir, 'master.key')
    await serve({ kind: 'dataDir', file, generatedNow: false }, file)
    await call('PUT', '/v1/secrets/a', { value: 'value-a' })
    const res = await call('POST', '/v1/secrets/rotate-master', {})
    assert.equal(res.status, 200, res.text)
    assert.equal(res.json!['keyFile'], file)
    assert.notEqual(res.json!['keyId'], masterKeyId(oldKey))
    assert.match(res.json!['next'][0]!, /back it up/)
  })

  it('refuses a malformed new master key with 400, not repeating it, and changes nothing', async () => {
    await call('PUT', '/v1/secrets/a', { value: 'value-a' })
    for (const key of [canary, 'c2hvcnQ=', '', 'x'.repeat(300)]) {
      const res = await call('POST', '/v1/secrets/rotate-master', { key })
      assert.equal(res.status, 400, res.text)
      assert.ok(key === '' || !res.text.includes(key))
    }
    assert.equal(secrets.currentKeyId, masterKeyId(oldKey))
  })

  it('never writes a value or a master key into a log line', async () => {
    const newKey = randomBytes(32).toString('base64')
    await call('PUT', '/v1/secrets/logged', { value: canary })
    await call('PUT', '/v1/secrets/bad%20name', { value: canary })
    await call('PUT', '/v1/secrets/k', undefined, `{"value": "${canary}" oops`)
    await call('POST', '/v1/secrets/rotate-master', { key: newKey })
    await call('POST', '/v1/secrets/rotate-master', { key: `${canary}` })
    assert.match(logs, /"route":"\/v1\/secrets\/:name"/)
    assert.ok(!logs.includes(canary))
    assert.ok(!logs.includes(newKey))
  })
})
