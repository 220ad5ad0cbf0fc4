import assert from 'node:assert/strict'
import { eachStore } from './test-helpers.ts'
import { type Approval, type NewApproval, StoreConflictError } from './types.ts'

function request(id: string, createdAt: number, extra: Partial<NewApproval> = {}): NewApproval {
  return {
    id,
    agentId: 'agent-1',
    target: { kind: 'tool', tool: 'gmail', action: 'send' },
    requestHash: `sha256-${id}`,
    summary: { to: 'ops@example.com', subject: 'Quarterly numbers' },
    policy: 'mail',
    rule: 'send-needs-approval',
    createdAt,
    expiresAt: createdAt + 3_600_000,
    ...extra,
  }
}

function pending(approval: NewApproval): Approval {
  return { ...approval, status: 'pending', decidedAt: null, decidedBy: null, note: null, usedAt: null }
}

eachStore('approval store', ['approvals'], ({ store, peer, behaves }) => {
  const approvals = () => store().approvals

  behaves('creates a pending approval and reads it back with its target and summary intact', async () => {
    const asked = request('ap1', 1_000, { summary: { b: [1, { c: null }], a: 'x\u0000y' } })
    const created = await approvals().create(asked)
    assert.deepEqual(created, pending(asked))
    const read = await approvals().get('ap1', 2_000)
    assert.deepEqual(read, pending(asked))
    assert.equal(JSON.stringify(read?.summary), JSON.stringify(asked.summary))
    assert.equal(await approvals().get('nope', 2_000), undefined)
  })

  behaves('refuses a second approval with the same id, keeping the first', async () => {
    await approvals().create(request('ap1', 1_000))
    await assert.rejects(approvals().create(request('ap1', 2_000, { agentId: 'other' })), (err: unknown) => {
      assert.ok(err instanceof StoreConflictError)
      assert.equal(err.message, 'approval id "ap1" is taken')
      return true
    })
    assert.equal((await approvals().get('ap1', 1_500))?.agentId, 'agent-1')
  })

  behaves('refuses a target or summary that JSON cannot carry', async () => {
    await assert.rejects(approvals().create(request('ap1', 1_000, { target: undefined })), TypeError)
    await assert.rejects(approvals().create(request('ap1', 1_000, { summary: { n: 1n } })), TypeError)
    assert.equal(await approvals().get('ap1', 1_000), undefined)
  })

  behaves(
    'reads a pending or approved approval as expired from its expiresAt on, and others as they are',
    async () => {
      for (const id of ['pending', 'approved', 'rejected', 'used'])
        await approvals().create(request(id, 1_000, { expiresAt: 5_000 }))
      await approvals().decide('approved', 'approved', { by: 'ops', now: 2_000 })
      await approvals().decide('rejected', 'rejected', { by: 'ops', now: 2_000 })
      await approvals().decide('used', 'approved', { by: 'ops', now: 2_000 })
      assert.equal(await approvals().consume('used', 3_000), true)
      const statuses = async (now: number) =>
        Promise.all(
          ['pending', 'approved', 'rejected', 'used'].map(
            async (id) => (await approvals().get(id, now))?.status,
          ),
        )
      assert.deepEqual(await statuses(4_999), ['pending', 'approved', 'rejected', 'used'])
      assert.deepEqual(await statuses(5_000), ['expired', 'expired', 'rejected', 'used'])
    },
  )

  behaves('approves a pending approval, recording who decided, when and why', async () => {
    await approvals().create(request('ap1', 1_000))
    const result = await approvals().decide('ap1', 'approved', {
      by: 'alice',
      note: 'looks fine',
      now: 2_000,
    })
    const decided = {
      ...pending(request('ap1', 1_000)),
      status: 'approved',
      decidedAt: 2_000,
      decidedBy: 'alice',
      note: 'looks fine',
    } as const
    assert.deepEqual(result, { outcome: 'decided', approval: decided })
    assert.deepEqual(await approvals().get('ap1', 2_500), decided)
  })

  behaves('rejects a pending approval, with a null note when none is given', async () => {
    await approvals().create(request('ap1', 1_000))
    const result = await approvals().decide('ap1', 'rejected', { by: 'bob', now: 2_000 })
    assert.equal(result.outcome, 'decided')
    assert.deepEqual(await approvals().get('ap1', 2_000), {
      ...pending(request('ap1', 1_000)),
      status: 'rejected',
      decidedAt: 2_000,
      decidedBy: 'bob',
      note: null,
    })
  })

  behaves(
    'tells a decision on an unknown, already decided or expired approval apart, changing nothing',
    async () => {
      assert.deepEqual(await approvals().decide('nope', 'approved', { by: 'ops', now: 1_000 }), {
        outcome: 'not_found',
      })

      await approvals().create(request('decided', 1_000))
      await approvals().decide('decided', 'approved', { by: 'alice', now: 2_000 })
      const again = await approvals().decide('decided', 'rejected', { by: 'bob', note: 'no', now: 3_000 })
      assert.equal(again.outcome, 'already_decided')
      assert.ok(again.outcome === 'already_decided')
      assert.equal(again.approval.status, 'approved')
      assert.equal(again.approval.decidedBy, 'alice')

      await approvals().create(request('late', 1_000, { expiresAt: 5_000 }))
      const late = await approvals().decide('late', 'approved', { by: 'ops', now: 5_000 })
      assert.ok(late.outcome === 'expired')
      assert.equal(late.approval.status, 'expired')
      assert.equal(late.approval.decidedAt, null)

      // Approved in time and then left unused: it was decided, even though it now reads expired.
      await approvals().create(request('unused', 1_000, { expiresAt: 5_000 }))
      await approvals().decide('unused', 'approved', { by: 'ops', now: 2_000 })
      const stale = await approvals().decide('unused', 'rejected', { by: 'ops', now: 6_000 })
      assert.ok(stale.outcome === 'already_decided')
      assert.equal(stale.approval.status, 'expired')
      assert.equal(stale.approval.decidedBy, 'ops')
    },
  )

  behaves('lets exactly one of two operators deciding at once on two instances win', async () => {
    const other = await peer()
    await approvals().create(request('ap1', 1_000))
    const [first, second] = await Promise.all([
      approvals().decide('ap1', 'approved', { by: 'alice', now: 2_000 }),
      other.approvals.decide('ap1', 'rejected', { by: 'bob', now: 2_000 }),
    ])
    const outcomes = [first.outcome, second.outcome].sort()
    assert.deepEqual(outcomes, ['already_decided', 'decided'])
    const winner = first.outcome === 'decided' ? first : second
    assert.ok(winner.outcome === 'decided')
    assert.equal((await approvals().get('ap1', 2_000))?.status, winner.approval.status)
  })

  behaves('consumes an approved approval once, and nothing else', async () => {
    for (const id of ['pending', 'approved', 'rejected', 'late'])
      await approvals().create(request(id, 1_000, { expiresAt: 5_000 }))
    await approvals().decide('approved', 'approved', { by: 'ops', now: 2_000 })
    await approvals().decide('rejected', 'rejected', { by: 'ops', now: 2_000 })
    await approvals().decide('late', 'approved', { by: 'ops', now: 2_000 })

    assert.equal(await approvals().consume('pending', 3_000), false)
    assert.equal(await approvals().consume('rejected', 3_000), false)
    assert.equal(await approvals().consume('late', 5_000), false)
    assert.equal(await approvals().consume('nope', 3_000), false)
    assert.equal(await approvals().consume('approved', 3_000), true)
    assert.equal(await approvals().consume('approved', 3_001), false)
    const used = await approvals().get('approved', 4_000)
    assert.equal(used?.status, 'used')
    assert.equal(used?.usedAt, 3_000)
    assert.equal((await approvals().get('late', 4_000))?.status, 'approved')
  })

  behaves('lets exactly one of many concurrent consumers on two instances use an approval', async () => {
    const other = await peer()
    await approvals().create(request('ap1', 1_000))
    await approvals().decide('ap1', 'approved', { by: 'ops', now: 2_000 })
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        (i % 2 === 0 ? approvals() : other.approvals).consume('ap1', 3_000),
      ),
    )
    assert.equal(results.filter(Boolean).length, 1)
  })

  behaves(
    'lists approvals newest first, by status as read at now and by agent, a page at a time',
    async () => {
      await approvals().create(request('a', 1_000, { expiresAt: 9_000 }))
      await approvals().create(request('b', 2_000, { expiresAt: 5_000 }))
      await approvals().create(request('c', 2_000, { expiresAt: 9_000, agentId: 'agent-2' }))
      await approvals().create(request('d', 3_000, { expiresAt: 9_000 }))
      await approvals().create(request('e', 4_000, { expiresAt: 5_000 }))
      await approvals().decide('d', 'approved', { by: 'ops', now: 4_000 })
      await approvals().decide('e', 'approved', { by: 'ops', now: 4_500 })
      await approvals().decide('a', 'rejected', { by: 'ops', now: 4_000 })

      const ids = async (options: Parameters<ReturnType<typeof approvals>['list']>[0]) =>
        (await approvals().list({ now: 6_000, ...options })).map(
          (approval) => `${approval.id}:${approval.status}`,
        )
      assert.deepEqual(await ids({}), ['e:expired', 'd:approved', 'c:pending', 'b:expired', 'a:rejected'])
      assert.deepEqual(await ids({ status: 'pending' }), ['c:pending'])
      assert.deepEqual(await ids({ status: 'expired' }), ['e:expired', 'b:expired'])
      assert.deepEqual(await ids({ status: 'approved' }), ['d:approved'])
      assert.deepEqual(await ids({ status: 'rejected' }), ['a:rejected'])
      assert.deepEqual(await ids({ status: 'used' }), [])
      assert.deepEqual(await ids({ status: 'pending', now: 4_900 }), ['c:pending', 'b:pending'])
      assert.deepEqual(await ids({ agentId: 'agent-2' }), ['c:pending'])
      assert.deepEqual(await ids({ agentId: 'agent-1', status: 'expired' }), ['e:expired', 'b:expired'])

      const pages: string[][] = []
      let after: string | undefined
      for (;;) {
        const page = await approvals().list({
          limit: 2,
          now: 6_000,
          ...(after === undefined ? {} : { after }),
        })
        if (page.length === 0) break
        pages.push(page.map((approval) => approval.id))
        after = page.at(-1)!.id
      }
      assert.deepEqual(pages, [['e', 'd'], ['c', 'b'], ['a']])
      assert.deepEqual(await ids({ agentId: 'agent-1', after: 'd' }), ['b:expired', 'a:rejected'])
      assert.deepEqual(await ids({ after: 'gone' }), [])
      assert.deepEqual(await ids({ limit: 0 }), [])
    },
  )

  behaves('rejects an unknown status filter and a bad page size', async () => {
    await assert.rejects(approvals().list({ status: 'lost' as never }), {
      name: 'TypeError',
      message: 'unknown approval status "lost"',
    })
    await assert.rejects(approvals().list({ limit: -1 }), RangeError)
  })

  behaves('prunes approvals that expired before the given instant, whatever their status', async () => {
    await approvals().create(request('old-pending', 1_000, { expiresAt: 2_000 }))
    await approvals().create(request('old-used', 1_000, { expiresAt: 3_000 }))
    await approvals().decide('old-used', 'approved', { by: 'ops', now: 1_500 })
    await approvals().consume('old-used', 1_600)
    await approvals().create(request('at-cutoff', 1_000, { expiresAt: 4_000 }))
    await approvals().create(request('live', 1_000, { expiresAt: 9_000 }))
    assert.equal(await approvals().prune(4_000), 2)
    assert.equal(await approvals().prune(4_000), 0)
    assert.deepEqual((await approvals().list({ now: 0 })).map((approval) => approval.id).sort(), [
      'at-cutoff',
      'live',
    ])
  })
})
