import assert from 'node:assert/strict'
import { eachStore } from './test-helpers.ts'
import { type SecretRecord, StoreConflictError } from './types.ts'

function secret(name: string, agentId: string | null, sealedValue: string, keyId = 'mk1') {
  return { name, agentId, sealedValue, keyId }
}

eachStore('secret store', ['secrets'], ({ store, behaves }) => {
  const secrets = () => store().secrets

  behaves('keeps a tool-wide value and an agent override apart, with no fallback between them', async () => {
    const toolWide = await secrets().put(secret('serpapi', null, 'sealed-tool'), 1_000)
    assert.deepEqual(toolWide, {
      ...secret('serpapi', null, 'sealed-tool'),
      createdAt: 1_000,
      rotatedAt: null,
    })
    const override = await secrets().put(secret('serpapi', 'agent-1', 'sealed-agent'), 2_000)
    assert.deepEqual(override, {
      ...secret('serpapi', 'agent-1', 'sealed-agent'),
      createdAt: 2_000,
      rotatedAt: null,
    })
    assert.deepEqual(await secrets().get('serpapi', null), toolWide)
    assert.deepEqual(await secrets().get('serpapi', 'agent-1'), override)
    assert.equal(await secrets().get('serpapi', 'agent-2'), undefined)
    assert.equal(await secrets().get('openai', null), undefined)
  })

  behaves('keeps createdAt and stamps rotatedAt when a value is replaced', async () => {
    await secrets().put(secret('openai', null, 'v1'), 1_000)
    const replaced = await secrets().put(secret('openai', null, 'v2', 'mk2'), 5_000)
    assert.deepEqual(replaced, { ...secret('openai', null, 'v2', 'mk2'), createdAt: 1_000, rotatedAt: 5_000 })
    assert.deepEqual(await secrets().get('openai', null), replaced)
  })

  behaves('lists metadata without values, by name with the tool-wide value first', async () => {
    await secrets().put(secret('serpapi', 'b-agent', 's1'), 1_000)
    await secrets().put(secret('serpapi', null, 's2'), 1_000)
    await secrets().put(secret('gmail', 'a-agent', 's3'), 1_000)
    await secrets().put(secret('serpapi', 'B-agent', 's4'), 1_000)
    const listed = await secrets().list()
    assert.deepEqual(listed, [
      { name: 'gmail', agentId: 'a-agent', keyId: 'mk1', createdAt: 1_000, rotatedAt: null },
      { name: 'serpapi', agentId: null, keyId: 'mk1', createdAt: 1_000, rotatedAt: null },
      { name: 'serpapi', agentId: 'B-agent', keyId: 'mk1', createdAt: 1_000, rotatedAt: null },
      { name: 'serpapi', agentId: 'b-agent', keyId: 'mk1', createdAt: 1_000, rotatedAt: null },
    ])
    assert.doesNotMatch(JSON.stringify(listed), /s[1-4]"/)
    assert.deepEqual(
      (await secrets().all()).map((record) => record.sealedValue),
      ['s3', 's2', 's4', 's1'],
    )
  })

  behaves('deletes one value at a time, the tool-wide one when no agent is named', async () => {
    await secrets().put(secret('serpapi', null, 'tool'), 1_000)
    await secrets().put(secret('serpapi', 'agent-1', 'agent'), 1_000)
    assert.equal(await secrets().delete('serpapi'), true)
    assert.equal(await secrets().get('serpapi', null), undefined)
    assert.equal((await secrets().get('serpapi', 'agent-1'))?.sealedValue, 'agent')
    assert.equal(await secrets().delete('serpapi', null), false)
    assert.equal(await secrets().delete('serpapi', 'agent-1'), true)
    assert.equal(await secrets().delete('serpapi', 'agent-1'), false)
    assert.deepEqual(await secrets().all(), [])
  })

  behaves('reseals values under a new key, keeping their times', async () => {
    await secrets().put(secret('a', null, 'old-a'), 1_000)
    await secrets().put(secret('b', 'agent-1', 'old-b'), 1_000)
    await secrets().put(secret('b', 'agent-1', 'old-b2'), 2_000)
    const before = await secrets().all()
    await secrets().reseal(
      before.map((record) => ({
        name: record.name,
        agentId: record.agentId,
        previousSealedValue: record.sealedValue,
        sealedValue: `new-${record.sealedValue}`,
        keyId: 'mk2',
      })),
    )
    assert.deepEqual(
      await secrets().all(),
      before.map(
        (record): SecretRecord => ({ ...record, sealedValue: `new-${record.sealedValue}`, keyId: 'mk2' }),
      ),
    )
  })

  behaves('refuses a reseal when any value changed or went since it was read, changing none', async () => {
    await secrets().put(secret('a', null, 'old-a'), 1_000)
    await secrets().put(secret('b', null, 'old-b'), 1_000)
    await secrets().put(secret('c', null, 'old-c'), 1_000)
    const before = await secrets().all()
    const changes = before.map((record) => ({
      name: record.name,
      agentId: record.agentId,
      previousSealedValue: record.sealedValue,
      sealedValue: `new-${record.sealedValue}`,
      keyId: 'mk2',
    }))
    // Written by another instance between the read and the reseal.
    await secrets().put(secret('b', null, 'fresh-b'), 2_000)
    await assert.rejects(secrets().reseal(changes), (err: unknown) => {
      assert.ok(err instanceof StoreConflictError)
      assert.equal(err.message, 'secret "b" changed since it was read')
      return true
    })
    assert.deepEqual(
      (await secrets().all()).map((record) => [record.sealedValue, record.keyId]),
      [
        ['old-a', 'mk1'],
        ['fresh-b', 'mk1'],
        ['old-c', 'mk1'],
      ],
    )

    await secrets().delete('c')
    await assert.rejects(secrets().reseal(changes.slice(0, 1).concat(changes.slice(2))), StoreConflictError)
    assert.equal((await secrets().get('a', null))?.sealedValue, 'old-a')
  })

  behaves('refuses an empty agent id, which would stand for the tool-wide value', async () => {
    const message = 'a secret agentId must be a non-empty string or null'
    await assert.rejects(secrets().put(secret('a', '', 'x')), { name: 'TypeError', message })
    await assert.rejects(secrets().get('a', ''), { name: 'TypeError', message })
    await assert.rejects(secrets().delete('a', ''), { name: 'TypeError', message })
    assert.deepEqual(await secrets().all(), [])
  })
})
