import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { markPath, maxPathLength, parseJsonPath } from './json-path.ts'

/** The selected locations as `key` strings, in the order of `paths` over `value`. */
function selected(value: unknown, path: string): unknown[] {
  const parsed = parseJsonPath(path)
  if (!parsed.ok) assert.fail(`${path} refused: ${parsed.reason}`)
  const marks = new Map<object, Set<string | number>>()
  markPath(value, parsed.steps, marks)
  const found: unknown[] = []
  for (const [container, keys] of marks) {
    for (const key of keys) found.push((container as Record<string | number, unknown>)[key])
  }
  return found.sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)))
}

const doc = {
  a: { b: 'ab', password: 'p1' },
  items: [
    { email: 'e0', nested: { password: 'p2' } },
    { email: 'e1', email2: 'x' },
  ],
  'odd key': { "it's": 'quoted' },
  password: 'p0',
}

describe('parseJsonPath and markPath', () => {
  const cases: [string, unknown[]][] = [
    ['$.a.b', ['ab']],
    ["$['a']['b']", ['ab']],
    ['$["odd key"]["it\\\'s"]', ['quoted']],
    ["$['odd key']['it\\'s']", ['quoted']],
    ['$.items[*].email', ['e0', 'e1']],
    ['$.items.*.email', ['e0', 'e1']],
    ['$.items[0].email', ['e0']],
    ['$.items[-1].email', ['e1']],
    ['$.items[5].email', []],
    ['$..password', ['p0', 'p1', 'p2']],
    ['$..nested.password', ['p2']],
    ['$..[1].email', ['e1']],
    ['$.a.*', ['ab', 'p1']],
    ['$.missing.b', []],
    ['$.a.b.c', []],
    ['$.items.email', []],
  ]
  for (const [path, expected] of cases) {
    it(`selects ${JSON.stringify(expected)} with ${path}`, () => {
      assert.deepEqual(selected(doc, path), expected)
    })
  }

  it('selects through repeated recursive descent once per location', () => {
    const value = { a: { a: { b: 1 }, b: 2 } }
    assert.deepEqual(selected(value, '$..a..b'), [1, 2])
  })

  it('descends a value nested 100,000 levels deep without overflowing the stack', () => {
    let value: Record<string, unknown> = { password: 'deep' }
    for (let i = 0; i < 100_000; i++) value = { n: value }
    assert.deepEqual(selected(value, '$..password'), ['deep'])
  })

  it('selects nothing from a scalar', () => {
    assert.deepEqual(selected('text', '$..x'), [])
  })

  const refused: [string, RegExp][] = [
    ['a.b', /starts with \$/],
    ['$', /whole response/],
    ['$.', /member name at character 3/],
    ['$a', /expected \. or \[/],
    ['$[', /expected an index/],
    ['$[1', /expected \]/],
    ["$['a", /unterminated/],
    ['$.a b', /expected \. or \[/],
    [`$.${'a'.repeat(maxPathLength)}`, /longer than/],
  ]
  for (const [path, reason] of refused) {
    it(`refuses ${path.length > 20 ? 'an over-long path' : path}`, () => {
      const parsed = parseJsonPath(path)
      assert.equal(parsed.ok, false)
      assert.match(parsed.ok ? '' : parsed.reason, reason)
    })
  }
})
