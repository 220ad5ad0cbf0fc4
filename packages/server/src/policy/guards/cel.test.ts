import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { type CelVars, compileCondition, maxExpressionLength } from './cel.ts'

function vars(args: unknown, overrides: Partial<CelVars> = {}): CelVars {
  return {
    args,
    agent: { id: 'agt_1', name: 'research-bot', labels: { team: 'growth' }, roles: ['reader'] },
    token: { scope: ['serpapi:search'], intent: 'research', jti: 'jti-1', sub: 'agt_1' },
    request: {
      method: 'POST',
      path: '/v1/tools/serpapi/search',
      bytes: 120,
      ip: '10.0.0.7',
      tool: 'serpapi',
      action: 'search',
    },
    now: new Date('2024-01-15T14:30:00Z'),
    ...overrides,
  }
}

function compiled(expression: string) {
  const result = compileCondition(expression)
  if (!result.ok) assert.fail(`${expression} was refused: ${result.reason}`)
  return result.condition
}

function refused(expression: string): string {
  const result = compileCondition(expression)
  if (result.ok) assert.fail(`${expression} was accepted`)
  return result.reason
}

function evaluate(expression: string, input: CelVars) {
  return compiled(expression).evaluate(input)
}

describe('compileCondition', () => {
  const cases: [string, unknown, boolean][] = [
    ['args.num <= 10', { num: 5 }, true],
    ['args.num <= 10', { num: 5.5 }, true],
    ['args.num <= 10', { num: 10 }, true],
    ['args.num <= 10', { num: 10.5 }, false],
    ['args.num == 5', { num: 5 }, true],
    ['args.num > 2.5', { num: 3 }, true],
    ['args.q.size() < 200', { q: 'penguins' }, true],
    ['args.q.size() < 200', { q: 'x'.repeat(200) }, false],
    ['"x" in args.tags', { tags: ['y', 'x'] }, true],
    ['"x" in args.tags', { tags: ['y'] }, false],
    ['1 in args.ids', { ids: [1, 2] }, true],
    ['args.num <= 10 && args.q.size() < 200', { num: 3, q: 'a' }, true],
    ['has(args.num) && args.num < 3', {}, false],
    ['args.items.all(i, i.price < 100.0)', { items: [{ price: 10 }, { price: 99.5 }] }, true],
    [
      'args.items.exists(i, i.tags.exists(t, t == "vip"))',
      { items: [{ tags: [] }, { tags: ['vip'] }] },
      true,
    ],
    ['args.url.startsWith("https://")', { url: 'http://x' }, false],
    ['args.q.matches("^[a-z ]+$")', { q: 'plain words' }, true],
    ['int(args.num) + 1 == 6', { num: 5 }, true],
    ['args.num + 1.0 == 6.0', { num: 5 }, true],
  ]
  for (const [expression, args, expected] of cases) {
    it(`evaluates ${expression} over ${JSON.stringify(args)} to ${expected}`, () => {
      assert.deepEqual(evaluate(expression, vars(args)), { ok: true, value: expected })
    })
  }

  it('reads agent labels and roles, token claims and the request', () => {
    const input = vars({})
    for (const expression of [
      'agent.labels.team == "growth"',
      '"reader" in agent.roles',
      'agent.name == "research-bot" && agent.id == "agt_1"',
      'token.intent == "research" && "serpapi:search" in token.scope',
      'token.sub == agent.id',
      'request.method == "POST" && request.bytes < 1024 && request.tool == "serpapi"',
      'request.ip.startsWith("10.")',
    ]) {
      assert.deepEqual(evaluate(expression, input), { ok: true, value: true }, expression)
    }
  })

  it('compares now as a timestamp and reads its hours in UTC or a named zone', () => {
    const input = vars({})
    assert.deepEqual(evaluate('now.getHours() == 14', input), { ok: true, value: true })
    assert.deepEqual(evaluate('now.getHours("Europe/Paris") == 15', input), { ok: true, value: true })
    assert.deepEqual(evaluate('now.getDayOfWeek() == 1', input), { ok: true, value: true })
    assert.deepEqual(evaluate('now > timestamp("2024-01-01T00:00:00Z")', input), { ok: true, value: true })
    assert.deepEqual(evaluate('now < timestamp("2024-01-15T14:00:00Z")', input), { ok: true, value: false })
  })

  it('checks an absent optional token intent with has()', () => {
    const input = vars({}, { token: { scope: [], jti: 'j' } })
    assert.deepEqual(evaluate('!has(token.intent) || token.intent == "x"', input), { ok: true, value: true })
  })

  it('evaluates one compiled condition many times with different inputs', () => {
    const condition = compiled('args.num <= 10')
    assert.equal(condition.source, 'args.num <= 10')
    assert.deepEqual(condition.evaluate(vars({ num: 1 })), { ok: true, value: true })
    assert.deepEqual(condition.evaluate(vars({ num: 11 })), { ok: true, value: false })
    assert.deepEqual(condition.evaluate(vars({ num: 2 })), { ok: true, value: true })
  })

  it('refuses a syntax error with its column', () => {
    assert.match(refused('args.num <='), /Unexpected token.*column 12/)
    assert.match(refused('"unterminated'), /Unterminated string/)
    assert.match(refused('args.a ? 1'), /Expected COLON/)
  })

  it('refuses an unknown variable or function', () => {
    assert.match(refused('nope == 1'), /Unknown variable: nope/)
    assert.match(refused('secretOf(args) == "x"'), /no matching overload/)
  })

  it('refuses an expression whose type is known not to be a bool', () => {
    assert.match(refused('1 + 2'), /must be a bool, it is int/)
    assert.match(refused('"text"'), /must be a bool, it is string/)
    assert.match(refused('"a" + 1 == "a1"'), /no such overload/)
  })

  it('refuses empty, non-string and over-long expressions', () => {
    assert.match(refused(''), /non-empty/)
    assert.match(refused('   '), /non-empty/)
    assert.match(refused(42 as unknown as string), /non-empty/)
    assert.match(refused(`true && ${'true && '.repeat(maxExpressionLength / 8)}true`), /longer than/)
  })

  it('refuses an expression with too many nodes or too deep a nesting', () => {
    assert.match(refused(Array.from({ length: 300 }, () => 'args.a').join(' || ')), /maxAstNodes/)
    assert.match(refused(`${'('.repeat(40)}true${')'.repeat(40)}`), /maxDepth/)
  })

  it('refuses matches() with a non-literal, catastrophic or invalid pattern', () => {
    assert.match(refused('args.q.matches(args.re)'), /string literal pattern/)
    assert.match(refused('args.q.matches("(a+)+$")'), /nested quantifier/)
    assert.match(refused('args.q.matches("(a|ab)*c")'), /repeated alternation/)
    assert.match(refused('args.q.matches("(")'), /invalid/)
  })

  it('refuses a nested comprehension ranging over args again, but not over the outer element', () => {
    assert.match(refused('args.a.all(x, args.b.exists(y, y == x))'), /square of the input/)
    assert.ok(compileCondition('args.a.all(x, x.tags.exists(t, t == "v"))').ok)
    assert.ok(compileCondition('args.a.all(x, ["a", "b"].exists(t, t == x))').ok)
    assert.ok(compileCondition('args.a.filter(x, x > 1.0).size() < 3 && args.b.exists(y, y == 2)').ok)
  })

  it('fails closed with a reason on a missing key, a wrong type or a non-bool result', () => {
    const missing = evaluate('args.nope == 1', vars({}))
    assert.equal(missing.ok, false)
    assert.match(!missing.ok ? missing.reason : '', /No such key: nope/)
    const wrongType = evaluate('args.q.size() < 200', vars({ q: 7 }))
    assert.equal(wrongType.ok, false)
    assert.match(!wrongType.ok ? wrongType.reason : '', /overload/)
    assert.deepEqual(evaluate('args.flag', vars({ flag: 'yes' })), {
      ok: false,
      reason: 'expression returned a string, not a bool',
    })
    assert.deepEqual(evaluate('args.flag', vars({ flag: null })), {
      ok: false,
      reason: 'expression returned null, not a bool',
    })
    assert.deepEqual(evaluate('args.flag', vars({ flag: true })), { ok: true, value: true })
  })

  it('fails closed when args is not an object, or on a bad time zone at run time', () => {
    assert.equal(evaluate('args.num < 3', vars('text')).ok, false)
    assert.equal(evaluate('args.num < 3', vars(null)).ok, false)
    assert.equal(evaluate('now.getHours(args.tz) == 1', vars({ tz: 'Nope/Zone' })).ok, false)
  })

  it('does not reach JavaScript prototype members through args', () => {
    for (const expression of ['args.constructor == 1', 'args.toString == 1', 'args.__proto__ == 1']) {
      assert.equal(evaluate(expression, vars({})).ok, false, expression)
    }
    assert.deepEqual(evaluate('has(args.constructor)', vars({})), { ok: true, value: false })
  })

  it('evaluates over deeply nested args without overflowing', () => {
    let nested: unknown = { leaf: 1 }
    for (let i = 0; i < 10_000; i++) nested = { n: nested }
    assert.deepEqual(evaluate('has(args.n.n.n)', vars(nested)), { ok: true, value: true })
  })

  it('keeps reasons short', () => {
    const result = evaluate('args.q.matches("x")', vars({ q: 1 }))
    assert.ok(!result.ok && result.reason.length <= 201)
  })
})
