import assert from 'node:assert/strict'
import { eachStore } from './test-helpers.ts'
import { StoreConflictError } from './types.ts'

eachStore('policy store', ['policies', 'policy_versions'], ({ store, peer, behaves }) => {
  const policies = () => store().policies

  behaves(
    'creates version 1 of a new policy and returns its document as stored, key order included',
    async () => {
      const document = {
        rules: [{ tool: 'serpapi', actions: ['search'] }],
        b: 1,
        a: { z: 'x\u0000y', y: null },
      }
      const created = await policies().put('search', document, { now: 1_000 })
      const expected = { name: 'search', version: 1, document, createdAt: 1_000, updatedAt: 1_000 }
      assert.deepEqual(created, expected)
      const read = await policies().get('search')
      assert.deepEqual(read, expected)
      assert.equal(JSON.stringify(read?.document), JSON.stringify(document))
      assert.equal(await policies().get('other'), undefined)
    },
  )

  behaves('returns fresh documents that callers may change freely', async () => {
    await policies().put('p', { rules: ['a'] }, { now: 1_000 })
    const read = (await policies().get('p'))!
    ;(read.document as { rules: string[] }).rules.push('changed')
    const [listed] = await policies().list()
    assert.deepEqual(listed?.document, { rules: ['a'] })
    assert.deepEqual((await policies().history('p'))[0]?.document, { rules: ['a'] })
  })

  behaves('writes a new version on each put, keeping createdAt, with the history newest first', async () => {
    await policies().put('p', { v: 1 }, { now: 1_000 })
    await policies().put('p', { v: 2 }, { now: 2_000 })
    const third = await policies().put('p', { v: 3 }, { now: 3_000 })
    assert.deepEqual(third, { name: 'p', version: 3, document: { v: 3 }, createdAt: 1_000, updatedAt: 3_000 })
    assert.deepEqual(await policies().get('p'), third)
    const history = await policies().history('p')
    assert.deepEqual(history, [
      third,
      { name: 'p', version: 2, document: { v: 2 }, createdAt: 1_000, updatedAt: 2_000 },
      { name: 'p', version: 1, document: { v: 1 }, createdAt: 1_000, updatedAt: 1_000 },
    ])
    assert.deepEqual(await policies().history('p', { limit: 2 }), history.slice(0, 2))
    assert.deepEqual(await policies().history('nope'), [])
  })

  behaves('lists the current version of every policy, ordered bytewise by name', async () => {
    for (const name of ['b', 'B', 'a-2', 'a']) await policies().put(name, { name }, { now: 1_000 })
    await policies().put('a', { name: 'a', again: true }, { now: 2_000 })
    const listed = await policies().list()
    assert.deepEqual(
      listed.map((policy) => [policy.name, policy.version]),
      [
        ['B', 1],
        ['a', 2],
        ['a-2', 1],
        ['b', 1],
      ],
    )
    assert.deepEqual(listed[1]?.document, { name: 'a', again: true })
  })

  behaves('refuses a put whose expectedVersion is not the current one, writing nothing', async () => {
    assert.equal((await policies().put('p', { v: 1 }, { expectedVersion: 0, now: 1_000 })).version, 1)
    const before = await policies().fingerprint()
    await assert.rejects(policies().put('p', { v: 'x' }, { expectedVersion: 0 }), {
      name: 'StoreConflictError',
      message: 'policy "p" already exists (version 1)',
    })
    assert.equal((await policies().put('p', { v: 2 }, { expectedVersion: 1, now: 2_000 })).version, 2)
    await assert.rejects(policies().put('p', { v: 'x' }, { expectedVersion: 1 }), (err: unknown) => {
      assert.ok(err instanceof StoreConflictError)
      assert.equal(err.message, 'policy "p" is at version 2, expected 1')
      return true
    })
    await assert.rejects(policies().put('q', { v: 'x' }, { expectedVersion: 3 }), {
      name: 'StoreConflictError',
      message: 'policy "q" does not exist (expected version 3)',
    })
    assert.deepEqual(
      (await policies().history('p')).map((policy) => policy.document),
      [{ v: 2 }, { v: 1 }],
    )
    assert.equal(await policies().get('q'), undefined)
    assert.notEqual(await policies().fingerprint(), before)
    const after = await policies().fingerprint()
    await assert.rejects(policies().put('p', { v: 'x' }, { expectedVersion: 7 }), StoreConflictError)
    assert.equal(await policies().fingerprint(), after)
  })

  behaves(
    'deletes the current version but keeps the history, and numbering goes on after a re-create',
    async () => {
      await policies().put('p', { v: 1 }, { now: 1_000 })
      await policies().put('p', { v: 2 }, { now: 2_000 })
      assert.equal(await policies().delete('p'), true)
      assert.equal(await policies().get('p'), undefined)
      assert.deepEqual(await policies().list(), [])
      assert.equal(await policies().delete('p'), false)
      assert.equal((await policies().history('p')).length, 2)

      const recreated = await policies().put('p', { v: 3 }, { expectedVersion: 0, now: 5_000 })
      assert.deepEqual(recreated, {
        name: 'p',
        version: 3,
        document: { v: 3 },
        createdAt: 5_000,
        updatedAt: 5_000,
      })
      assert.deepEqual(
        (await policies().history('p')).map((policy) => [policy.version, policy.createdAt]),
        [
          [3, 5_000],
          [2, 1_000],
          [1, 1_000],
        ],
      )
    },
  )

  behaves(
    'changes the fingerprint on every put and every delete that removed something, for every instance',
    async () => {
      const other = await peer()
      const initial = await policies().fingerprint()
      assert.equal(typeof initial, 'string')
      await policies().put('p', { v: 1 })
      const afterPut = await policies().fingerprint()
      assert.notEqual(afterPut, initial)
      assert.equal(await other.policies.fingerprint(), afterPut)

      await policies().get('p')
      await policies().list()
      assert.equal(await policies().delete('missing'), false)
      assert.equal(await policies().fingerprint(), afterPut)

      await other.policies.put('p', { v: 2 })
      const afterOtherPut = await policies().fingerprint()
      assert.notEqual(afterOtherPut, afterPut)
      assert.equal(await other.policies.delete('p'), true)
      assert.notEqual(await policies().fingerprint(), afterOtherPut)
    },
  )

  behaves('gives each of many concurrent puts from two instances its own version', async () => {
    const other = await peer()
    const written = await Promise.all(
      Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? policies() : other.policies).put('p', { i })),
    )
    assert.deepEqual(
      written.map((policy) => policy.version).sort((a, b) => a - b),
      Array.from({ length: 20 }, (_, i) => i + 1),
    )
    assert.equal((await policies().history('p')).length, 20)
    assert.equal((await policies().get('p'))?.version, 20)
  })

  behaves('lets exactly one of many concurrent creates that expect no policy win', async () => {
    const other = await peer()
    const results = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) =>
        (i % 2 === 0 ? policies() : other.policies).put('p', { i }, { expectedVersion: 0 }),
      ),
    )
    const won = results.filter((result) => result.status === 'fulfilled')
    assert.equal(won.length, 1)
    for (const result of results)
      if (result.status === 'rejected') assert.ok(result.reason instanceof StoreConflictError)
    assert.deepEqual((await policies().history('p')).length, 1)
  })

  behaves('refuses a document that is not a JSON object, storing nothing', async () => {
    for (const document of [[], null, 'text', 1, undefined])
      await assert.rejects(policies().put('p', document), {
        name: 'TypeError',
        message: 'a policy document must be a JSON object',
      })
    await assert.rejects(policies().put('p', { big: 1n }), TypeError)
    const cycle: Record<string, unknown> = {}
    cycle['self'] = cycle
    await assert.rejects(policies().put('p', cycle), TypeError)
    assert.deepEqual(await policies().history('p'), [])
  })

  behaves('rejects a negative or fractional expectedVersion and page size', async () => {
    await assert.rejects(policies().put('p', {}, { expectedVersion: -1 }), RangeError)
    await assert.rejects(policies().put('p', {}, { expectedVersion: 1.5 }), RangeError)
    await assert.rejects(policies().history('p', { limit: -1 }), RangeError)
  })
})
