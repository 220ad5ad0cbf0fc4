import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { gatewayRejection } from '../../../../test/support/rejection.ts'
import { dropSchemaAndKeys, requireService, serviceUrls } from '../../../../test/support/services.ts'
import type { CompiledConfig } from '../config/compile.ts'
import type { RawPolicy } from '../config/schema.ts'
import type { GatewayError } from '../errors/gateway-error.ts'
import { createMetrics } from '../observability/metrics.ts'
import { createMemoryState } from '../state/memory-state.ts'
import { createRedisState } from '../state/redis-state.ts'
import type { SharedState } from '../state/types.ts'
import { openStore } from '../store/open-store.ts'
import type { Store } from '../store/types.ts'
import { compilePolicy } from './compile.ts'
import { PolicyEnforcer } from './enforcer.ts'
import { PolicyService } from './policy-service.ts'
import type { AgentFacts, DecisionInput } from './policy-set.ts'

const bot: AgentFacts = { id: 'agt_bot', name: 'bot', labels: { team: 'growth' }, roles: [] }
const other: AgentFacts = { id: 'agt_other', name: 'other', labels: { team: 'growth' }, roles: [] }

const configPolicies: RawPolicy[] = [
  {
    name: 'limits',
    agents: { labels: { team: 'growth' } },
    allow: [
      { name: 'search', tool: 'serpapi', actions: ['search'], quota: { limit: 3, period: '1m' } },
      { name: 'chat', tool: 'openai', actions: ['chat'], quota: { tokens: 150, period: '1h' } },
      { name: 'fetch', tool: 'http_fetch', actions: ['get'], maxRepeats: { count: 2, period: '1m' } },
      {
        name: 'mail',
        tool: 'gmail',
        actions: ['send'],
        approval: 'required',
        quota: { limit: 5, period: '1h' },
      },
    ],
  },
]

function configWith(policies: RawPolicy[]): CompiledConfig {
  const compiled = policies.map((p) => {
    const result = compilePolicy(p, 'config', 'v1')
    if (!result.ok) throw new Error(JSON.stringify(result.problems))
    return result.policy
  })
  // The policy service and enforcer read only these fields of the running config.
  return { policies: compiled, approvalTtlMs: 3_600_000 } as unknown as CompiledConfig
}

function call(
  agent: AgentFacts,
  tool: string,
  action: string,
  args: unknown = {},
  now = Date.now(),
): DecisionInput {
  return {
    agent,
    scope: `${tool}:${action}`,
    intent: undefined,
    target: { kind: 'tool', tool, action },
    args,
    request: { method: 'POST', path: `/v1/tools/${tool}/${action}`, bytes: 2, ip: '127.0.0.1' },
    now,
  }
}

interface World {
  store: Store
  state: SharedState
  policies: PolicyService
  enforcer: PolicyEnforcer
  clock: { now: number }
  close(): Promise<void>
}

type Backend = {
  name: string
  available(): Promise<boolean>
  /** Open a world on the backend's shared database and state (a second instance or a restart). */
  world(): Promise<World>
  cleanUp(): Promise<void>
}

async function worldOn(store: Store, state: SharedState, ownsState = true): Promise<World> {
  const clock = { now: Date.parse('2026-11-25T10:00:10Z') }
  const config = configWith(configPolicies)
  const policies = new PolicyService(
    store,
    state,
    () => config,
    (err) => {
      throw err
    },
  )
  await policies.start(60_000)
  const enforcer = new PolicyEnforcer({
    policies,
    store,
    state,
    metrics: createMetrics(),
    approvalTtlMs: () => 3_600_000,
    now: () => clock.now,
  })
  return {
    store,
    state,
    policies,
    enforcer,
    clock,
    async close() {
      policies.stop()
      if (ownsState) await state.close()
      await store.close()
    },
  }
}

function sqliteBackend(): Backend {
  let dir = ''
  // One process: the memory state is shared by the instances of a test, as it would be.
  const state = createMemoryState()
  return {
    name: 'SQLite and memory',
    available: async () => true,
    async world() {
      dir ||= await mkdtemp(join(tmpdir(), 'runr-enforcer-'))
      return worldOn(await openStore({ kind: 'sqlite', path: join(dir, 'g.db') }), state, false)
    },
    async cleanUp() {
      await state.close()
      if (dir !== '') await rm(dir, { recursive: true, force: true })
    },
  }
}

function clusterBackend(): Backend {
  const suffix = randomBytes(6).toString('hex')
  const schema = `runr_test_${suffix}`
  const prefix = `runr_test_${suffix}:`
  return {
    name: 'Postgres and Redis',
    async available() {
      const pg = await requireService('postgres', serviceUrls.postgres)
      const redis = await requireService('redis', serviceUrls.redis)
      return pg && redis
    },
    async world() {
      const store = await openStore(
        { kind: 'postgres', url: serviceUrls.postgres },
        { postgresSchema: schema },
      )
      return worldOn(store, await createRedisState({ url: serviceUrls.redis, prefix }))
    },
    cleanUp: () => dropSchemaAndKeys(schema, prefix),
  }
}

for (const backend of [sqliteBackend(), clusterBackend()]) {
  describe(`policy enforcement on ${backend.name}`, () => {
    let up = false
    const worlds: World[] = []
    const open = async (): Promise<World> => {
      const world = await backend.world()
      worlds.push(world)
      return world
    }
    before(async () => {
      up = await backend.available()
    })
    after(async () => {
      for (const world of worlds) await world.close().catch(() => undefined)
      await backend.cleanUp()
    })

    it('admits exactly the quota, then refuses with 429, Retry-After and the reset time', async (t) => {
      if (!up) return t.skip('services not running')
      const w = await open()
      for (let i = 0; i < 3; i++) {
        const ok = await w.enforcer.authorize(call(bot, 'serpapi', 'search', { q: String(i) }, w.clock.now))
        assert.equal(ok.kind, 'proceed')
      }
      const err = await gatewayRejection(
        w.enforcer.authorize(call(bot, 'serpapi', 'search', { q: 'x' }, w.clock.now)),
      )
      assert.equal(err.code, 'quota_exceeded')
      assert.equal(err.status, 429)
      assert.equal(err.details?.['reason'], 'quota_calls')
      assert.equal(err.details?.['limit'], 3)
      assert.equal(err.details?.['resetAt'], '2026-11-25T10:01:00.000Z')
      assert.equal(err.headers?.['retry-after'], '50')
      // Another agent has its own count.
      assert.equal(
        (await w.enforcer.authorize(call(other, 'serpapi', 'search', {}, w.clock.now))).kind,
        'proceed',
      )
      // The next window starts from zero.
      w.clock.now = Date.parse('2026-11-25T10:01:00Z')
      assert.equal(
        (await w.enforcer.authorize(call(bot, 'serpapi', 'search', {}, w.clock.now))).kind,
        'proceed',
      )
    })

    it('keeps counting across a restart and across instances', async (t) => {
      if (!up) return t.skip('services not running')
      const first = await open()
      first.clock.now = Date.parse('2026-11-25T11:00:00Z')
      const agent: AgentFacts = { ...bot, id: 'agt_durable' }
      await first.enforcer.authorize(call(agent, 'serpapi', 'search', {}, first.clock.now))
      await first.enforcer.authorize(call(agent, 'serpapi', 'search', {}, first.clock.now))
      await first.close()
      worlds.splice(worlds.indexOf(first), 1)
      const restarted = await open()
      const peer = await open()
      restarted.clock.now = peer.clock.now = Date.parse('2026-11-25T11:00:30Z')
      assert.equal(
        (await restarted.enforcer.authorize(call(agent, 'serpapi', 'search', {}, restarted.clock.now))).kind,
        'proceed',
      )
      const err = await gatewayRejection(
        peer.enforcer.authorize(call(agent, 'serpapi', 'search', {}, peer.clock.now)),
      )
      assert.equal(err.code, 'quota_exceeded')
    })

    it('admits exactly the quota when many calls race', async (t) => {
      if (!up) return t.skip('services not running')
      const a = await open()
      const b = await open()
      const agent: AgentFacts = { ...bot, id: 'agt_racer' }
      const results = await Promise.allSettled(
        Array.from({ length: 20 }, (_, i) =>
          (i % 2 === 0 ? a : b).enforcer.authorize(call(agent, 'serpapi', 'search', {}, a.clock.now)),
        ),
      )
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 3)
    })

    it('refuses LLM calls once the token budget is spent', async (t) => {
      if (!up) return t.skip('services not running')
      const w = await open()
      const first = await w.enforcer.authorize(call(bot, 'openai', 'chat', {}, w.clock.now))
      assert.equal(first.kind, 'proceed')
      await w.enforcer.recordTokens(first.kind === 'proceed' ? first.rule : null, bot.id, 100)
      const second = await w.enforcer.authorize(call(bot, 'openai', 'chat', {}, w.clock.now))
      await w.enforcer.recordTokens(second.kind === 'proceed' ? second.rule : null, bot.id, 60)
      const err = await gatewayRejection(w.enforcer.authorize(call(bot, 'openai', 'chat', {}, w.clock.now)))
      assert.equal(err.code, 'quota_exceeded')
      assert.equal(err.details?.['reason'], 'quota_tokens')
      assert.equal(err.details?.['used'], 160)
    })

    it('refuses the same call repeated past maxRepeats, whatever the key order of its arguments', async (t) => {
      if (!up) return t.skip('services not running')
      const w = await open()
      const args = { url: 'https://example.com/a', headers: { a: '1', b: '2' } }
      const reordered = { headers: { b: '2', a: '1' }, url: 'https://example.com/a' }
      await w.enforcer.authorize(call(bot, 'http_fetch', 'get', args, w.clock.now))
      await w.enforcer.authorize(call(bot, 'http_fetch', 'get', reordered, w.clock.now))
      const err = await gatewayRejection(
        w.enforcer.authorize(call(bot, 'http_fetch', 'get', args, w.clock.now)),
      )
      assert.equal(err.code, 'rate_limited')
      assert.equal(err.details?.['reason'], 'repeat_limit')
      assert.ok(Number(err.headers?.['retry-after']) >= 1)
      // Different arguments are a different call.
      const otherUrl = { url: 'https://example.com/b' }
      assert.equal(
        (await w.enforcer.authorize(call(bot, 'http_fetch', 'get', otherUrl, w.clock.now))).kind,
        'proceed',
      )
    })

    it('parks a call for approval, runs the approved replay once, and refuses the rest', async (t) => {
      if (!up) return t.skip('services not running')
      const w = await open()
      const args = { to: 'a@example.com', subject: 'hi', text: 'hello' }
      const parked = await w.enforcer.authorize(call(bot, 'gmail', 'send', args, w.clock.now))
      assert.equal(parked.kind, 'parked')
      const id = parked.kind === 'parked' ? parked.approval.id : ''
      assert.equal(parked.kind === 'parked' && parked.approval.status, 'pending')
      // Still pending: parked again, no new approval.
      const again = await w.enforcer.authorize(call(bot, 'gmail', 'send', args, w.clock.now), id)
      assert.equal(again.kind === 'parked' && again.approval.id, id)
      // Someone else's call, or other arguments, cannot use it.
      assert.equal(
        (await gatewayRejection(w.enforcer.authorize(call(other, 'gmail', 'send', args, w.clock.now), id)))
          .details?.['reason'],
        'approval_mismatch',
      )
      const changed = { ...args, to: 'b@example.com' }
      assert.equal(
        (await gatewayRejection(w.enforcer.authorize(call(bot, 'gmail', 'send', changed, w.clock.now), id)))
          .details?.['reason'],
        'approval_mismatch',
      )
      const decided = await w.store.approvals.decide(id, 'approved', { by: 'test', now: w.clock.now })
      assert.equal(decided.outcome, 'decided')
      const run = await w.enforcer.authorize(call(bot, 'gmail', 'send', args, w.clock.now), id)
      assert.equal(run.kind, 'proceed')
      assert.equal(run.decision.decision, 'allow')
      const twice = await gatewayRejection(
        w.enforcer.authorize(call(bot, 'gmail', 'send', args, w.clock.now), id),
      )
      assert.equal(twice.code, 'conflict')
      assert.equal(twice.details?.['reason'], 'approval_used')
    })

    it('refuses a rejected approval and an expired one', async (t) => {
      if (!up) return t.skip('services not running')
      const w = await open()
      const args = { to: 'c@example.com', subject: 's', text: 't' }
      const rejected = await w.enforcer.authorize(call(bot, 'gmail', 'send', args, w.clock.now))
      const rejectedId = rejected.kind === 'parked' ? rejected.approval.id : ''
      await w.store.approvals.decide(rejectedId, 'rejected', {
        by: 'test',
        note: 'not today',
        now: w.clock.now,
      })
      const no = await gatewayRejection(
        w.enforcer.authorize(call(bot, 'gmail', 'send', args, w.clock.now), rejectedId),
      )
      assert.equal(no.code, 'policy_denied')
      assert.equal(no.details?.['reason'], 'approval_rejected')
      assert.equal(no.details?.['note'], 'not today')

      const later = await w.enforcer.authorize(call(bot, 'gmail', 'send', args, w.clock.now))
      const laterId = later.kind === 'parked' ? later.approval.id : ''
      await w.store.approvals.decide(laterId, 'approved', { by: 'test', now: w.clock.now })
      w.clock.now += 3_600_001
      const expired = await gatewayRejection(
        w.enforcer.authorize(call(bot, 'gmail', 'send', args, w.clock.now), laterId),
      )
      assert.equal(expired.details?.['reason'], 'approval_expired')
    })

    it('applies a policy put through the API at once, here and on another instance', async (t) => {
      if (!up) return t.skip('services not running')
      const a = await open()
      const b = await open()
      const agent: AgentFacts = { id: 'agt_api', name: 'api-bot', labels: {}, roles: [] }
      assert.equal(a.policies.current().decide(call(agent, 'serpapi', 'search')).decision, 'deny')
      const view = await a.policies.put('api-bots', {
        agents: { names: ['api-bot'] },
        allow: [{ tool: 'serpapi' }],
      })
      assert.equal(view.version, 1)
      assert.equal(a.policies.current().decide(call(agent, 'serpapi', 'search')).decision, 'allow')
      for (
        let i = 0;
        i < 100 && b.policies.current().decide(call(agent, 'serpapi', 'search')).decision !== 'allow';
        i++
      )
        await new Promise((r) => setTimeout(r, 20))
      assert.equal(b.policies.current().decide(call(agent, 'serpapi', 'search')).decision, 'allow')
      // A version conflict and a config policy's name are refused.
      await assert.rejects(
        a.policies.put('api-bots', { agents: { all: true }, allow: [{ tool: 'x' }] }, 0),
        (err: GatewayError) => err.code === 'conflict',
      )
      await assert.rejects(
        a.policies.put('limits', { agents: { all: true }, allow: [{ tool: 'x' }] }),
        (err: GatewayError) => err.code === 'conflict' && err.details?.['reason'] === 'config_policy',
      )
      await a.policies.delete('api-bots')
      assert.equal(a.policies.current().decide(call(agent, 'serpapi', 'search')).decision, 'deny')
    })

    it('refuses an invalid policy with every problem and its path, and keeps the running set', async (t) => {
      if (!up) return t.skip('services not running')
      const w = await open()
      const before = w.policies.current()
      const err = await gatewayRejection(
        w.policies.put('broken', {
          agents: { all: true },
          allow: [
            { tool: 'serpapi', when: 'args.num <=' },
            { tool: 't', timeWindows: [{ tz: 'Nowhere/Else' }] },
          ],
          extra: true,
        }) as never,
      )
      assert.equal(err.code, 'bad_request')
      const problems = err.details?.['problems'] as { path: string }[]
      assert.ok(
        problems.some((p) => p.path === '(root)' || p.path === 'extra'),
        JSON.stringify(problems),
      )
      const semantic = await gatewayRejection(
        w.policies.put('broken', {
          agents: { all: true },
          allow: [
            { tool: 'serpapi', when: 'args.num <=' },
            { tool: 't', timeWindows: [{ tz: 'Nowhere/Else' }] },
          ],
        }) as never,
      )
      const paths = (semantic.details!['problems'] as { path: string }[]).map((p) => p.path)
      assert.ok(paths.includes('allow[0].when'), JSON.stringify(paths))
      assert.ok(
        paths.some((p) => p.startsWith('allow[1].timeWindows[0]')),
        JSON.stringify(paths),
      )
      assert.equal(w.policies.current(), before)
    })
  })
}
