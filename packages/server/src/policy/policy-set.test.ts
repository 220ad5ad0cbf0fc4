import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { RawPolicy } from '../config/schema.ts'
import { compilePolicy } from './compile.ts'
import { type AgentFacts, type DecisionInput, type DecisionTarget, PolicySet } from './policy-set.ts'

const research: AgentFacts = {
  id: 'agt_research',
  name: 'research-bot',
  labels: { team: 'growth', env: 'prod' },
  roles: ['reader'],
}
const ops: AgentFacts = { id: 'agt_ops', name: 'ops-bot', labels: { team: 'ops' }, roles: [] }
const lonely: AgentFacts = { id: 'agt_lonely', name: 'lonely', labels: {}, roles: [] }
const byId: AgentFacts = { id: 'agt_special', name: 'special', labels: {}, roles: [] }
const staging: AgentFacts = {
  id: 'agt_staging',
  name: 'stage-bot',
  labels: { team: 'growth', env: 'staging' },
  roles: [],
}

const policies: RawPolicy[] = [
  {
    name: 'research',
    agents: { labels: { team: 'growth' } },
    allow: [
      {
        name: 'search',
        tool: 'serpapi',
        actions: ['search'],
        intents: ['research'],
        when: 'args.num <= 10',
        quota: { limit: 3, period: '1m' },
      },
      {
        name: 'fetch-wiki',
        tool: 'http_fetch',
        actions: ['get'],
        domains: {
          allow: ['*.wikipedia.org', 'example.com', 'bücher.example'],
          deny: ['secret.wikipedia.org'],
        },
        responseFilter: { redact: ['email', 'card'] },
      },
      {
        name: 'chat',
        tool: 'openai',
        actions: ['chat'],
        maxRequestBytes: 100,
        timeWindows: [
          { days: ['mon', 'tue', 'wed', 'thu', 'fri'], from: '09:00', to: '17:00', tz: 'Europe/Paris' },
        ],
      },
      { name: 'orders-read', channel: 'orders', paths: ['/orders/*'], methods: ['GET'] },
      { name: 'mail', tool: 'gmail', actions: ['send'], approval: 'required' },
      {
        name: 'labelled',
        tool: 'openai',
        actions: ['embeddings'],
        when: 'agent.labels.env == "prod" && token.intent == "index" && request.bytes < 1000',
      },
    ],
    deny: [
      {
        name: 'no-competitor-mail',
        tool: 'gmail',
        actions: ['send'],
        when: 'args.to.endsWith("@competitor.com")',
      },
    ],
  },
  {
    name: 'ops',
    agents: { names: ['ops-bot'] },
    allow: [
      { tool: 'serpapi' },
      { tool: 'http_fetch', actions: ['get'] },
      { channel: 'orders', methods: ['DELETE'] },
    ],
    deny: [{ tool: 'http_fetch', domains: { deny: ['*.internal.example'] } }],
  },
  {
    name: 'special',
    agents: { ids: ['agt_special'] },
    allow: [{ channel: 'billing', paths: ['/invoices', '/reports/*'] }],
  },
  {
    name: 'staging-only',
    agents: { labels: { team: 'growth', env: 'staging' } },
    allow: [{ tool: 'gmail', actions: ['profile'] }],
  },
  {
    name: 'everyone',
    agents: { all: true },
    deny: [{ name: 'no-delete', channel: 'orders', methods: ['DELETE'] }],
  },
]

function compileAll(list: RawPolicy[]): PolicySet {
  return new PolicySet(
    list.map((document) => {
      const result = compilePolicy(document, 'config', 'test')
      if (!result.ok) throw new Error(`${document.name}: ${JSON.stringify(result.problems)}`)
      return result.policy
    }),
    'test',
  )
}

const set = compileAll(policies)

// Wednesday 2026-11-25 10:00 in Paris (UTC+1 in winter).
const wednesdayMorning = Date.parse('2026-11-25T09:00:00Z')

const tool = (name: string, action: string): DecisionTarget => ({ kind: 'tool', tool: name, action })
const channel = (name: string, method: string, path: string): DecisionTarget => ({
  kind: 'channel',
  channel: name,
  method,
  path,
})

function input(
  agent: AgentFacts,
  target: DecisionTarget,
  more: Partial<Omit<DecisionInput, 'agent' | 'target'>> = {},
): DecisionInput {
  const scope = target.kind === 'tool' ? `${target.tool}:${target.action}` : `channel:${target.channel}`
  return {
    agent,
    target,
    scope,
    intent: undefined,
    args: {},
    request: { method: 'POST', path: '/v1/tools', bytes: 10, ip: '127.0.0.1' },
    now: wednesdayMorning,
    ...more,
  }
}

type Expect = { decision: 'allow' | 'deny' | 'approval_required'; reason?: string; rule?: string | null }
type Case = [string, DecisionInput, Expect]

const allow = (rule: string): Expect => ({ decision: 'allow', reason: 'allowed', rule })
const denied = (reason: string, rule: string | null = null): Expect => ({ decision: 'deny', reason, rule })
const fetchGet = (agent: AgentFacts, url: unknown) =>
  input(agent, tool('http_fetch', 'get'), { args: { url } })

const cases: Case[] = [
  // Scope and selection
  [
    'allows a search with the research intent and a small num',
    input(research, tool('serpapi', 'search'), { intent: 'research', args: { q: 'x', num: 5 } }),
    allow('research/search'),
  ],
  [
    'refuses a token whose scope lacks the target',
    input(research, tool('serpapi', 'search'), {
      intent: 'research',
      args: { num: 5 },
      scope: 'channel:orders',
    }),
    denied('scope_missing'),
  ],
  [
    'accepts tool:* in the scope for any action',
    input(research, tool('serpapi', 'search'), { intent: 'research', args: { num: 5 }, scope: 'serpapi:*' }),
    allow('research/search'),
  ],
  [
    'matches scope tokens whole: serpapi:searchx does not grant serpapi:search',
    input(research, tool('serpapi', 'search'), {
      intent: 'research',
      args: { num: 5 },
      scope: 'serpapi:searchx',
    }),
    denied('scope_missing'),
  ],
  [
    'finds a scope token in the middle of the scope string',
    input(research, tool('serpapi', 'search'), {
      intent: 'research',
      args: { num: 5 },
      scope: 'channel:a serpapi:search channel:b',
    }),
    allow('research/search'),
  ],
  [
    'skips the scope check when explaining without a token',
    input(research, tool('serpapi', 'search'), { intent: 'research', args: { num: 5 }, scope: undefined }),
    allow('research/search'),
  ],
  [
    'denies an agent whose policies allow nothing (default deny)',
    input(lonely, tool('serpapi', 'search'), { args: { num: 1 } }),
    denied('no_matching_rule'),
  ],
  [
    'selects by name: ops-bot may search without an intent',
    input(ops, tool('serpapi', 'search'), { args: { q: 'x' } }),
    allow('ops/allow[0]'),
  ],
  [
    'a rule without actions covers every action of its tool',
    input(ops, tool('serpapi', 'locations')),
    allow('ops/allow[0]'),
  ],
  ['selects by id', input(byId, channel('billing', 'GET', '/invoices')), allow('special/allow[0]')],
  [
    'selects by labels only when every label matches',
    input(research, tool('gmail', 'profile')),
    denied('no_matching_rule'),
  ],
  [
    'selects the agent whose labels all match',
    input(staging, tool('gmail', 'profile')),
    allow('staging-only/allow[0]'),
  ],
  [
    'denies a tool no rule of the agent covers',
    input(research, tool('http_fetch', 'post'), { args: { url: 'https://example.com' } }),
    denied('no_matching_rule'),
  ],
  // Intents
  [
    'denies a token without an intent when the rule needs one',
    input(research, tool('serpapi', 'search'), { args: { num: 5 } }),
    denied('no_matching_rule'),
  ],
  [
    'denies a token with another intent',
    input(research, tool('serpapi', 'search'), { intent: 'shopping', args: { num: 5 } }),
    denied('no_matching_rule'),
  ],
  // CEL
  [
    'denies when the CEL guard is false',
    input(research, tool('serpapi', 'search'), { intent: 'research', args: { num: 11 } }),
    denied('no_matching_rule'),
  ],
  [
    'allows at the CEL boundary (num == 10)',
    input(research, tool('serpapi', 'search'), { intent: 'research', args: { num: 10 } }),
    allow('research/search'),
  ],
  [
    'compares JSON doubles with int literals',
    input(research, tool('serpapi', 'search'), { intent: 'research', args: { num: 9.5 } }),
    allow('research/search'),
  ],
  [
    'fails closed when the CEL guard errors (missing argument)',
    input(research, tool('serpapi', 'search'), { intent: 'research', args: { q: 'x' } }),
    denied('no_matching_rule'),
  ],
  [
    'fails closed when an argument has the wrong type',
    input(research, tool('serpapi', 'search'), { intent: 'research', args: { num: 'five' } }),
    denied('no_matching_rule'),
  ],
  [
    'reads agent labels, token intent and request size in CEL',
    input(research, tool('openai', 'embeddings'), {
      intent: 'index',
      request: { method: 'POST', path: '/', bytes: 500, ip: '' },
    }),
    allow('research/labelled'),
  ],
  [
    'denies when any CEL term is false (request too big)',
    input(research, tool('openai', 'embeddings'), {
      intent: 'index',
      request: { method: 'POST', path: '/', bytes: 5000, ip: '' },
    }),
    denied('no_matching_rule'),
  ],
  // Domains
  [
    'allows a subdomain of a wildcard domain',
    fetchGet(research, 'https://en.wikipedia.org/wiki/CEL'),
    allow('research/fetch-wiki'),
  ],
  [
    'a wildcard does not cover the bare domain',
    fetchGet(research, 'https://wikipedia.org/'),
    denied('no_matching_rule'),
  ],
  [
    'a denied domain wins over an allowed wildcard',
    fetchGet(research, 'https://secret.wikipedia.org/x'),
    denied('no_matching_rule'),
  ],
  ['allows an exact domain', fetchGet(research, 'https://example.com/page'), allow('research/fetch-wiki')],
  [
    'does not treat an exact domain as a wildcard',
    fetchGet(research, 'https://www.example.com/page'),
    denied('no_matching_rule'),
  ],
  [
    'normalises case and a trailing dot',
    fetchGet(research, 'https://EN.Wikipedia.ORG./x'),
    allow('research/fetch-wiki'),
  ],
  [
    'ignores userinfo when judging the host',
    fetchGet(research, 'https://user:pw@en.wikipedia.org/x'),
    allow('research/fetch-wiki'),
  ],
  [
    'is not fooled by a host hidden in userinfo',
    fetchGet(research, 'https://en.wikipedia.org@evil.test/x'),
    denied('no_matching_rule'),
  ],
  [
    'matches IDN hosts in punycode and in Unicode',
    fetchGet(research, 'https://xn--bcher-kva.example/'),
    allow('research/fetch-wiki'),
  ],
  [
    'refuses a look-alike suffix (notwikipedia.org)',
    fetchGet(research, 'https://en.notwikipedia.org/'),
    denied('no_matching_rule'),
  ],
  [
    'refuses a call without a url when the rule guards domains',
    input(research, tool('http_fetch', 'get'), { args: {} }),
    denied('no_matching_rule'),
  ],
  ['refuses a non-http url', fetchGet(research, 'file:///etc/passwd'), denied('no_matching_rule')],
  [
    'a deny rule refuses its domains',
    fetchGet(ops, 'https://db.internal.example/'),
    denied('denied_by_rule', 'ops/deny[0]'),
  ],
  [
    'a deny rule leaves other domains to the allow rules',
    fetchGet(ops, 'https://example.org/'),
    allow('ops/allow[1]'),
  ],
  [
    'a deny rule with domains fails closed without a url',
    input(ops, tool('http_fetch', 'get'), { args: { url: 42 } }),
    denied('denied_by_rule', 'ops/deny[0]'),
  ],
  // Size and time windows
  [
    'allows a request within maxRequestBytes in the window',
    input(research, tool('openai', 'chat'), { request: { method: 'POST', path: '/', bytes: 100, ip: '' } }),
    allow('research/chat'),
  ],
  [
    'refuses a request over maxRequestBytes',
    input(research, tool('openai', 'chat'), { request: { method: 'POST', path: '/', bytes: 101, ip: '' } }),
    denied('no_matching_rule'),
  ],
  [
    'refuses a request of unknown size under maxRequestBytes',
    input(research, tool('openai', 'chat'), {
      request: { method: 'POST', path: '/', bytes: undefined, ip: '' },
    }),
    denied('no_matching_rule'),
  ],
  [
    'refuses outside the days of the window (Saturday)',
    input(research, tool('openai', 'chat'), { now: Date.parse('2026-11-28T10:00:00Z') }),
    denied('no_matching_rule'),
  ],
  [
    'the window starts inclusive (09:00 Paris)',
    input(research, tool('openai', 'chat'), { now: Date.parse('2026-11-25T08:00:00Z') }),
    allow('research/chat'),
  ],
  [
    'the window ends exclusive (17:00 Paris)',
    input(research, tool('openai', 'chat'), { now: Date.parse('2026-11-25T16:00:00Z') }),
    denied('no_matching_rule'),
  ],
  [
    'refuses just before the window (08:59 Paris)',
    input(research, tool('openai', 'chat'), { now: Date.parse('2026-11-25T07:59:00Z') }),
    denied('no_matching_rule'),
  ],
  [
    'follows summer time: 09:30 Paris in July is 07:30 UTC',
    input(research, tool('openai', 'chat'), { now: Date.parse('2026-07-15T07:30:00Z') }),
    allow('research/chat'),
  ],
  [
    'follows summer time: 08:30 UTC in July is 10:30 Paris, 16:30 UTC is 18:30',
    input(research, tool('openai', 'chat'), { now: Date.parse('2026-07-15T16:30:00Z') }),
    denied('no_matching_rule'),
  ],
  // Channels
  [
    'allows a channel path and method the rule lists',
    input(research, channel('orders', 'GET', '/orders/17')),
    allow('research/orders-read'),
  ],
  [
    'a prefix pattern covers its base path',
    input(research, channel('orders', 'GET', '/orders')),
    allow('research/orders-read'),
  ],
  [
    'refuses a method the rule does not list',
    input(research, channel('orders', 'POST', '/orders/17')),
    denied('no_matching_rule'),
  ],
  [
    'refuses a path outside the patterns',
    input(research, channel('orders', 'GET', '/admin')),
    denied('no_matching_rule'),
  ],
  [
    'a prefix pattern does not cover a longer segment (/ordersX)',
    input(research, channel('orders', 'GET', '/ordersX')),
    denied('no_matching_rule'),
  ],
  [
    'an exact path pattern matches only itself',
    input(byId, channel('billing', 'GET', '/invoices/1')),
    denied('no_matching_rule'),
  ],
  [
    'a deny rule wins over an allow rule of another policy',
    input(ops, channel('orders', 'DELETE', '/orders/1')),
    denied('denied_by_rule', 'everyone/no-delete'),
  ],
  [
    'a deny rule refuses even without any allow rule',
    input(research, channel('orders', 'DELETE', '/orders/1')),
    denied('denied_by_rule', 'everyone/no-delete'),
  ],
  [
    'a channel scope is needed for a channel',
    input(research, channel('orders', 'GET', '/orders/1'), { scope: 'serpapi:search' }),
    denied('scope_missing'),
  ],
  // Approvals and deny-wins
  [
    'parks a call whose rule requires approval',
    input(research, tool('gmail', 'send'), { args: { to: 'friend@example.com' } }),
    { decision: 'approval_required', reason: 'approval_required', rule: 'research/mail' },
  ],
  [
    'a deny rule wins over an approval rule',
    input(research, tool('gmail', 'send'), { args: { to: 'ceo@competitor.com' } }),
    denied('denied_by_rule', 'research/no-competitor-mail'),
  ],
  [
    'a deny rule whose CEL errors fails closed',
    input(research, tool('gmail', 'send'), { args: { subject: 'no recipient' } }),
    denied('denied_by_rule', 'research/no-competitor-mail'),
  ],
]

describe('policy decisions', () => {
  for (const [name, decisionInput, expected] of cases) {
    it(name, () => {
      const decision = set.decide(decisionInput)
      assert.equal(decision.decision, expected.decision, JSON.stringify(decision.reasons))
      if (expected.reason !== undefined) assert.equal(decision.reason, expected.reason)
      if (expected.rule !== undefined) assert.equal(decision.rule, expected.rule)
      if (decision.decision === 'deny') assert.ok(decision.reasons.length > 0, 'a denial says why')
    })
  }

  it('hands the response filter of the agent’s rules for the target to the caller', () => {
    const decision = set.decide(fetchGet(research, 'https://en.wikipedia.org/'))
    assert.ok(decision.filter !== null)
    const { value } = decision.filter.apply({ text: 'mail me at a@b.example, card 4111 1111 1111 1111' })
    assert.deepEqual(value, { text: 'mail me at [REDACTED:email], card [REDACTED:card]' })
    assert.equal(set.decide(input(ops, tool('serpapi', 'search'))).filter, null)
  })

  const redacting = compileAll([
    {
      name: 'redact',
      agents: { all: true },
      allow: [
        { tool: 'serpapi', responseFilter: { redact: ['email', 'phone'] } },
        {
          tool: 'serpapi',
          actions: ['search'],
          responseFilter: {
            redact: ['api_key', 'jwt', 'ticket'],
            paths: ['$.user.ssn', '$.items[*].secret'],
            patterns: { ticket: 'TCK-[0-9]{6}' },
          },
        },
        { tool: 'http_fetch', responseFilter: { redact: ['card'] } },
      ],
    },
  ])
  const redactionCases: [string, DecisionTarget, unknown, unknown][] = [
    [
      'an e-mail address',
      tool('serpapi', 'search'),
      { t: 'write to ops@example.com now' },
      { t: 'write to [REDACTED:email] now' },
    ],
    [
      'a phone number',
      tool('serpapi', 'search'),
      { t: 'call +1 (555) 010-0199 today' },
      { t: 'call [REDACTED:phone] today' },
    ],
    [
      'an API key',
      tool('serpapi', 'search'),
      { t: 'key sk-proj-abcdefghijklmnopqrstuvwxyz0123456789' },
      { t: 'key [REDACTED:api_key]' },
    ],
    [
      'a JWT',
      tool('serpapi', 'search'),
      { t: 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ' },
      { t: '[REDACTED:jwt]' },
    ],
    ['a custom pattern', tool('serpapi', 'search'), { t: 'see TCK-123456' }, { t: 'see [REDACTED:ticket]' }],
    [
      'a JSON path',
      tool('serpapi', 'search'),
      { user: { ssn: '078-05-1120', name: 'x' } },
      { user: { ssn: '[REDACTED:path]', name: 'x' } },
    ],
    [
      'a JSON path with a wildcard',
      tool('serpapi', 'search'),
      { items: [{ secret: 1 }, { secret: 2 }] },
      { items: [{ secret: '[REDACTED:path]' }, { secret: '[REDACTED:path]' }] },
    ],
    [
      'a card number that passes Luhn',
      tool('http_fetch', 'get'),
      { t: '4111 1111 1111 1111' },
      { t: '[REDACTED:card]' },
    ],
    [
      'nothing for a card number that fails Luhn',
      tool('http_fetch', 'get'),
      { t: '4111 1111 1111 1112' },
      { t: '4111 1111 1111 1112' },
    ],
    [
      'only the filters of rules covering the action',
      tool('serpapi', 'locations'),
      { t: 'sk-proj-abcdefghijklmnopqrstuvwxyz0123456789 a@b.example' },
      { t: 'sk-proj-abcdefghijklmnopqrstuvwxyz0123456789 [REDACTED:email]' },
    ],
  ]
  for (const [what, target, answer, expected] of redactionCases) {
    it(`redacts ${what} in the answer`, () => {
      const decision = redacting.decide(input(research, target, { args: { url: 'https://example.com' } }))
      assert.equal(decision.decision, 'allow')
      assert.deepEqual(decision.filter?.apply(answer).value, expected)
    })
  }

  it('names the deciding rule with its quota so the enforcer can count it', () => {
    const decision = set.decide(
      input(research, tool('serpapi', 'search'), { intent: 'research', args: { num: 1 } }),
    )
    assert.deepEqual(decision.deciding?.quota, { limit: 3, periodMs: 60_000, tokens: null })
  })

  it('explains every candidate rule of the agent and why it did not match', () => {
    const explained = set.explain(
      input(research, tool('serpapi', 'search'), { intent: 'shopping', args: { num: 50 } }),
    )
    assert.equal(explained.decision, 'deny')
    const search = explained.candidates.find((c) => c.rule === 'research/search')!
    assert.equal(search.matched, false)
    assert.match(search.reasons[0]!, /intent "shopping" is not among research/)
    const fetch = explained.candidates.find((c) => c.rule === 'research/fetch-wiki')!
    assert.match(fetch.reasons[0]!, /covers tool http_fetch.\{get\}, not tool serpapi.search/)
    const deny = explained.candidates.find((c) => c.rule === 'everyone/no-delete')!
    assert.equal(deny.effect, 'deny')
    // Only policies that select the agent are candidates.
    assert.ok(!explained.candidates.some((c) => c.policy === 'ops'))
  })

  it('explains a CEL guard that is false with its source', () => {
    const explained = set.explain(
      input(research, tool('serpapi', 'search'), { intent: 'research', args: { num: 50 } }),
    )
    const search = explained.candidates.find((c) => c.rule === 'research/search')!
    assert.deepEqual(search.reasons, ['when: "args.num <= 10" is false'])
    assert.deepEqual(explained.reasons, ['research/search: when: "args.num <= 10" is false'])
  })

  it('says which scopes a policy could ever grant the agent', () => {
    assert.equal(set.canEverGrant(research, 'serpapi:search'), true)
    assert.equal(set.canEverGrant(research, 'serpapi:*'), true)
    assert.equal(set.canEverGrant(research, 'gmail:send'), true)
    assert.equal(set.canEverGrant(research, 'gmail:profile'), false)
    assert.equal(set.canEverGrant(research, 'channel:orders'), true)
    assert.equal(set.canEverGrant(research, 'channel:billing'), false)
    assert.equal(set.canEverGrant(ops, 'serpapi:anything'), true)
    assert.equal(set.canEverGrant(lonely, 'serpapi:search'), false)
  })

  it('lets the first matching allow rule decide, in policy order', () => {
    const ordered = compileAll([
      {
        name: 'a',
        agents: { all: true },
        allow: [{ name: 'tight', tool: 't', when: 'args.n < 5', quota: { limit: 1, period: '1h' } }],
      },
      { name: 'b', agents: { all: true }, allow: [{ name: 'loose', tool: 't' }] },
    ])
    assert.equal(ordered.decide(input(research, tool('t', 'x'), { args: { n: 1 } })).rule, 'a/tight')
    assert.equal(ordered.decide(input(research, tool('t', 'x'), { args: { n: 9 } })).rule, 'b/loose')
  })

  it('follows a changed agent record: selection is memoised per record, not per id', () => {
    const moved: AgentFacts = { ...research, labels: { team: 'ops' } }
    assert.equal(
      set.decide(input(research, tool('serpapi', 'search'), { intent: 'research', args: { num: 1 } }))
        .decision,
      'allow',
    )
    assert.equal(
      set.decide(input(moved, tool('serpapi', 'search'), { intent: 'research', args: { num: 1 } })).decision,
      'deny',
    )
  })

  it('says so when no policy selects the agent at all', () => {
    const narrow = compileAll([{ name: 'x', agents: { names: ['someone'] }, allow: [{ tool: 't' }] }])
    const decision = narrow.decide(input(lonely, tool('t', 'a')))
    assert.equal(decision.reason, 'no_policy')
    assert.deepEqual(decision.reasons, ['no policy selects agent lonely'])
  })

  it('scales to a thousand policies: an agent is found through the selector index', () => {
    const many: RawPolicy[] = []
    for (let i = 0; i < 1000; i++) {
      many.push({
        name: `p${i}`,
        agents: { labels: { team: `t${i}` } },
        allow: [{ tool: 'serpapi', actions: ['search'], when: 'args.num <= 10' }],
      })
    }
    const big = compileAll(many)
    const agent: AgentFacts = { id: 'x', name: 'x', labels: { team: 't777' }, roles: [] }
    const decision = big.decide(input(agent, tool('serpapi', 'search'), { args: { num: 3 } }))
    assert.equal(decision.rule, 'p777/allow[0]')
    assert.deepEqual(
      big.policiesFor(agent).map((p) => p.name),
      ['p777'],
    )
  })
})

describe('policy compilation', () => {
  const problemsOf = (document: unknown): string[] => {
    const result = compilePolicy(document as RawPolicy, 'api', 1)
    return result.ok ? [] : result.problems.map((p) => `${p.path}: ${p.message}`)
  }
  const refusals: [string, unknown, RegExp][] = [
    [
      'a rule naming both a tool and a channel',
      { name: 'p', agents: { all: true }, allow: [{ tool: 't', channel: 'c' }] },
      /^allow\[0\]: a rule covers a tool or a channel, not both/,
    ],
    [
      'a rule naming neither',
      { name: 'p', agents: { all: true }, allow: [{ actions: ['x'] }] },
      /^allow\[0\]: a rule must name a tool or a channel/,
    ],
    [
      'a policy selecting nobody',
      { name: 'p', agents: {}, allow: [{ tool: 't' }] },
      /^agents: name the agents/,
    ],
    ['a policy without rules', { name: 'p', agents: { all: true } }, /at least one allow or deny rule/],
    [
      'a quota on a deny rule',
      { name: 'p', agents: { all: true }, deny: [{ tool: 't', quota: { limit: 1, period: '1m' } }] },
      /^deny\[0\]\.quota: quota belongs to allow rules/,
    ],
    [
      'domains.allow on a deny rule',
      { name: 'p', agents: { all: true }, deny: [{ tool: 'http_fetch', domains: { allow: ['a.com'] } }] },
      /^deny\[0\]\.domains\.allow/,
    ],
    [
      'domains on a tool other than http_fetch',
      { name: 'p', agents: { all: true }, allow: [{ tool: 'serpapi', domains: { allow: ['a.com'] } }] },
      /^allow\[0\]\.domains: domains guard the URLs of http_fetch only/,
    ],
    [
      'a CEL syntax error',
      { name: 'p', agents: { all: true }, allow: [{ tool: 't', when: 'args.num <=' }] },
      /^allow\[0\]\.when: /,
    ],
    [
      'a CEL condition that is not a bool',
      { name: 'p', agents: { all: true }, allow: [{ tool: 't', when: '1 + 2' }] },
      /^allow\[0\]\.when: /,
    ],
    [
      'a CEL unknown variable',
      { name: 'p', agents: { all: true }, allow: [{ tool: 't', when: 'nope == 1' }] },
      /^allow\[0\]\.when: /,
    ],
    [
      'an unknown time zone',
      { name: 'p', agents: { all: true }, allow: [{ tool: 't', timeWindows: [{ tz: 'Mars/Olympus' }] }] },
      /^allow\[0\]\.timeWindows\[0\]/,
    ],
    [
      'a bad time of day',
      { name: 'p', agents: { all: true }, allow: [{ tool: 't', timeWindows: [{ from: '25:00' }] }] },
      /^allow\[0\]\.timeWindows\[0\]/,
    ],
    [
      'a bad custom regex',
      {
        name: 'p',
        agents: { all: true },
        allow: [{ tool: 't', responseFilter: { patterns: { x: '(' }, redact: ['x'] } }],
      },
      /^allow\[0\]\.responseFilter/,
    ],
    [
      'an unknown detector',
      { name: 'p', agents: { all: true }, allow: [{ tool: 't', responseFilter: { redact: ['dna'] } }] },
      /^allow\[0\]\.responseFilter/,
    ],
    [
      'a bad path pattern',
      { name: 'p', agents: { all: true }, allow: [{ channel: 'c', paths: ['/a/*/b'] }] },
      /^allow\[0\]\.paths\[0\]/,
    ],
    [
      'a response filter on a channel rule',
      { name: 'p', agents: { all: true }, allow: [{ channel: 'c', responseFilter: { redact: ['email'] } }] },
      /^allow\[0\]\.responseFilter: response filters apply to tool answers/,
    ],
    [
      'two rules with one name',
      {
        name: 'p',
        agents: { all: true },
        allow: [
          { name: 'r', tool: 't' },
          { name: 'r', tool: 'u' },
        ],
      },
      /duplicate rule name "r"/,
    ],
    [
      'a quota with neither limit nor tokens',
      { name: 'p', agents: { all: true }, allow: [{ tool: 't', quota: { period: '1m' } }] },
      /^allow\[0\]\.quota: set limit/,
    ],
    [
      'a loop guard period under a second',
      { name: 'p', agents: { all: true }, allow: [{ tool: 't', maxRepeats: { count: 1, period: '10ms' } }] },
      /^allow\[0\]\.maxRepeats\.period/,
    ],
  ]
  for (const [what, document, expected] of refusals) {
    it(`refuses ${what} with the path`, () => {
      const problems = problemsOf(document)
      assert.ok(
        problems.some((p) => expected.test(p)),
        `got ${JSON.stringify(problems)}`,
      )
    })
  }

  it('reports every problem of a policy at once', () => {
    const problems = problemsOf({
      name: 'p',
      agents: { all: true },
      allow: [
        { tool: 't', when: '((' },
        { channel: 'c', paths: ['x'] },
      ],
      deny: [{ tool: 't', approval: 'required' }],
    })
    assert.equal(problems.length, 3, JSON.stringify(problems))
  })
})
