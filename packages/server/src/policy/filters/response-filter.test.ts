import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  combineFilters,
  compileResponseFilter,
  type ResponseFilter,
  type ResponseFilterSpec,
} from './response-filter.ts'

function filter(spec: ResponseFilterSpec): ResponseFilter {
  const result = compileResponseFilter(spec)
  if (!result.ok) assert.fail(`refused: ${JSON.stringify(result.problems)}`)
  return result.filter
}

function deepFreeze<T>(value: T): T {
  const stack: unknown[] = [value]
  while (stack.length > 0) {
    const item = stack.pop()
    if (typeof item === 'object' && item !== null && !Object.isFrozen(item)) {
      Object.freeze(item)
      stack.push(...Object.values(item))
    }
  }
  return value
}

describe('compileResponseFilter', () => {
  it('redacts detector hits in place inside strings, counting each kind', () => {
    const f = filter({ redact: ['email', 'card'] })
    const input = deepFreeze({
      user: { note: 'reach me at ann@example.com or bob@example.org', card: '4111 1111 1111 1111' },
      list: ['plain', 'x 5555555555554444 y'],
      n: 3,
      flag: true,
      none: null,
    })
    const { value, redactions } = f.apply(input)
    assert.deepEqual(value, {
      user: { note: 'reach me at [REDACTED:email] or [REDACTED:email]', card: '[REDACTED:card]' },
      list: ['plain', 'x [REDACTED:card] y'],
      n: 3,
      flag: true,
      none: null,
    })
    assert.deepEqual(redactions, { email: 2, card: 2 })
  })

  it('does not redact a Luhn-failing 16-digit number', () => {
    const { value, redactions } = filter({ redact: ['card'] }).apply({
      id: '4111 1111 1111 1112',
      n: 4111111111111112,
    })
    assert.deepEqual(value, { id: '4111 1111 1111 1112', n: 4111111111111112 })
    assert.deepEqual(redactions, {})
  })

  it('redacts a card number sent as a JSON number, leaving smaller numbers alone', () => {
    const { value, redactions } = filter({ redact: ['card'] }).apply({
      pan: 4111111111111111,
      count: 123456789012,
    })
    assert.deepEqual(value, { pan: '[REDACTED:card]', count: 123456789012 })
    assert.deepEqual(redactions, { card: 1 })
  })

  it('replaces whatever a JSON path selects, whole, by [REDACTED:path]', () => {
    const f = filter({ paths: ['$.a.b', '$.items[*].email', '$..password', '$.list[0]'] })
    const input = deepFreeze({
      a: { b: { deep: 'object' }, c: 1 },
      items: [{ email: 'x', id: 1 }, { email: null }, { id: 3 }],
      nested: { k: { password: 42 } },
      password: 'top',
      list: ['first', 'second'],
    })
    const { value, redactions } = f.apply(input)
    assert.deepEqual(value, {
      a: { b: '[REDACTED:path]', c: 1 },
      items: [{ email: '[REDACTED:path]', id: 1 }, { email: '[REDACTED:path]' }, { id: 3 }],
      nested: { k: { password: '[REDACTED:path]' } },
      password: '[REDACTED:path]',
      list: ['[REDACTED:path]', 'second'],
    })
    assert.deepEqual(redactions, { path: 6 })
  })

  it('never mutates the input and returns untouched branches as the same objects', () => {
    const input = { secret: { email: 'a@b.io' }, keep: { big: [1, 2, 3] } }
    const snapshot = structuredClone(input)
    const { value } = filter({ redact: ['email'] }).apply(input) as { value: typeof input }
    assert.deepEqual(input, snapshot)
    assert.notEqual(value, input)
    assert.notEqual(value.secret, input.secret)
    assert.equal(value.keep, input.keep)
    const untouched = { a: [1, { b: 'nothing here' }] }
    assert.equal(filter({ redact: ['email'], paths: ['$.zzz'] }).apply(untouched).value, untouched)
  })

  it('redacts object keys, keeping colliding names apart', () => {
    const { value, redactions } = filter({ redact: ['email'] }).apply({
      'ann@example.com': { role: 'admin' },
      'bob@example.com': { role: 'user' },
      '[REDACTED:email] (2)': 'an existing key',
      other: 1,
    })
    assert.deepEqual(value, {
      '[REDACTED:email]': { role: 'admin' },
      '[REDACTED:email] (3)': { role: 'user' },
      '[REDACTED:email] (2)': 'an existing key',
      other: 1,
    })
    assert.deepEqual(redactions, { email: 2 })
  })

  it('keeps a "__proto__" member as data', () => {
    const input = JSON.parse('{"__proto__": {"mail": "a@b.io"}, "x": 1}')
    const { value } = filter({ redact: ['email'] }).apply(input)
    assert.equal(Object.getPrototypeOf(value), Object.prototype)
    assert.equal(JSON.stringify(value), '{"__proto__":{"mail":"[REDACTED:email]"},"x":1}')
  })

  it('filters scalars at the root and leaves other values alone', () => {
    const f = filter({ redact: ['email'], paths: ['$.x'] })
    assert.deepEqual(f.apply('a@b.io'), { value: '[REDACTED:email]', redactions: { email: 1 } })
    assert.deepEqual(f.apply(7), { value: 7, redactions: {} })
    assert.deepEqual(f.apply(null), { value: null, redactions: {} })
    assert.deepEqual(f.apply(undefined), { value: undefined, redactions: {} })
  })

  it('redacts text bodies with detectors through applyText', () => {
    const f = filter({ redact: ['email', 'phone'], patterns: { order_id: 'ORD-\\d{6}' } })
    assert.deepEqual(f.applyText('ann@example.com called +44 20 7946 0958 about ORD-123456'), {
      value: '[REDACTED:email] called [REDACTED:phone] about [REDACTED:order_id]',
      redactions: { email: 1, phone: 1, order_id: 1 },
    })
  })

  it('applies custom patterns whether or not redact names them', () => {
    const f = filter({ patterns: { ticket: 'TCK-\\d{4}' } })
    assert.deepEqual(f.apply({ t: 'see TCK-1234' }).value, { t: 'see [REDACTED:ticket]' })
    const named = filter({ redact: ['ticket', 'email'], patterns: { ticket: 'TCK-\\d{4}' } })
    assert.deepEqual(named.apply({ t: 'TCK-1234 a@b.io' }).value, { t: '[REDACTED:ticket] [REDACTED:email]' })
  })

  it('redacts each built-in kind', () => {
    const f = filter({ redact: ['email', 'card', 'phone', 'api_key', 'jwt'] })
    const aws = ['AKIA', 'IOSFODNN7EXAMPLE'].join('')
    const { value, redactions } = f.apply({
      email: 'a@b.io',
      card: '4111-1111-1111-1111',
      phone: '(415) 555-2671',
      key: `aws ${aws}`,
      token: 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln',
    })
    assert.deepEqual(value, {
      email: '[REDACTED:email]',
      card: '[REDACTED:card]',
      phone: '[REDACTED:phone]',
      key: 'aws [REDACTED:api_key]',
      token: '[REDACTED:jwt]',
    })
    assert.deepEqual(redactions, { email: 1, card: 1, phone: 1, api_key: 1, jwt: 1 })
  })

  it('filters a value nested 100,000 levels deep without overflowing the stack', () => {
    let input: unknown = { mail: 'a@b.io', password: 'p' }
    for (let i = 0; i < 100_000; i++) input = i % 2 === 0 ? { n: input } : [input]
    const { redactions } = filter({ redact: ['email'], paths: ['$..password'] }).apply(input)
    assert.deepEqual(redactions, { email: 1, path: 1 })
  })

  it('accepts an empty filter, which changes nothing', () => {
    const input = { a: 'a@b.io' }
    assert.deepEqual(filter({}).apply(input), { value: input, redactions: {} })
  })

  it('refuses unknown detectors, bad paths and bad patterns, each with its path', () => {
    const result = compileResponseFilter({
      redact: ['email', 'ssn', 'path'],
      paths: ['$.ok', 'no-dollar', '$'],
      patterns: { bad: '(x', card: '\\d' },
    })
    assert.ok(!result.ok)
    assert.deepEqual(
      result.problems.map((p) => p.path),
      ['patterns.bad', 'patterns.card', 'redact[1]', 'redact[2]', 'paths[1]', 'paths[2]'],
    )
    assert.match(result.problems[2]?.reason ?? '', /unknown detector "ssn"/)
  })

  it('refuses fields of the wrong type', () => {
    const result = compileResponseFilter({
      redact: 'email',
      paths: '$.a',
      patterns: ['x'],
    } as unknown as ResponseFilterSpec)
    assert.ok(!result.ok)
    assert.deepEqual(
      result.problems.map((p) => p.path),
      ['patterns', 'redact', 'paths'],
    )
  })
})

describe('combineFilters', () => {
  it('applies several filters in one pass, with their detectors, patterns and paths', () => {
    const a = filter({ redact: ['email'], paths: ['$.secret'] })
    const b = filter({ redact: ['card', 'email'], patterns: { emp: 'EMP-\\d{4}' } })
    const c = filter({ paths: ['$..token'] })
    const combined = combineFilters([a, b, c])
    const { value, redactions } = combined.apply({
      secret: 'x',
      note: 'a@b.io paid with 4111111111111111 for EMP-1234',
      deep: [{ token: 't' }],
    })
    assert.deepEqual(value, {
      secret: '[REDACTED:path]',
      note: '[REDACTED:email] paid with [REDACTED:card] for [REDACTED:emp]',
      deep: [{ token: '[REDACTED:path]' }],
    })
    assert.deepEqual(redactions, { email: 1, card: 1, emp: 1, path: 2 })
    assert.deepEqual(combined.applyText('a@b.io EMP-0001'), {
      value: '[REDACTED:email] [REDACTED:emp]',
      redactions: { email: 1, emp: 1 },
    })
  })

  it('returns a single filter as is and an identity filter for none', () => {
    const a = filter({ redact: ['email'] })
    assert.equal(combineFilters([a]), a)
    const input = { a: 'a@b.io' }
    assert.deepEqual(combineFilters([]).apply(input), { value: input, redactions: {} })
  })

  it('runs a filter it did not build after the merged ones, adding up the counts', () => {
    const upper: ResponseFilter = {
      apply: (value) => ({
        value: JSON.parse(JSON.stringify(value).toUpperCase()),
        redactions: { upper: 1 },
      }),
      applyText: (text) => ({ value: text.toUpperCase(), redactions: { upper: 1, email: 1 } }),
    }
    const combined = combineFilters([filter({ redact: ['email'] }), upper])
    assert.deepEqual(combined.apply({ m: 'a@b.io x' }), {
      value: { M: '[REDACTED:EMAIL] X' },
      redactions: { email: 1, upper: 1 },
    })
    assert.deepEqual(combined.applyText('a@b.io'), {
      value: '[REDACTED:EMAIL]',
      redactions: { email: 2, upper: 1 },
    })
  })
})
