import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { canonicalJson, checkArgsShape } from './args-shape.ts'

function nested(depth: number): unknown {
  let value: unknown = 1
  for (let i = 0; i < depth; i++) value = i % 2 === 0 ? [value] : { a: value }
  return value
}

describe('checkArgsShape', () => {
  it('accepts scalars and values within the limits', () => {
    for (const value of [null, 1, 'text', true, {}, [], { a: [1, 2, { b: 'c' }] }]) {
      assert.deepEqual(checkArgsShape(value), { ok: true }, JSON.stringify(value))
    }
  })

  it('counts container nesting as depth: maxDepth levels pass, one more is too_deep', () => {
    assert.deepEqual(checkArgsShape(nested(32)), { ok: true })
    assert.deepEqual(checkArgsShape(nested(33)), { ok: false, reason: 'too_deep' })
    assert.deepEqual(checkArgsShape(nested(3), { maxDepth: 3 }), { ok: true })
    assert.deepEqual(checkArgsShape(nested(4), { maxDepth: 3 }), { ok: false, reason: 'too_deep' })
    assert.deepEqual(checkArgsShape({}, { maxDepth: 0 }), { ok: false, reason: 'too_deep' })
  })

  it('refuses a value nested a million levels deep without overflowing the stack', () => {
    assert.deepEqual(checkArgsShape(nested(1_000_000), { maxDepth: 64 }), { ok: false, reason: 'too_deep' })
    assert.deepEqual(checkArgsShape(nested(1_000_000), { maxDepth: 2_000_000, maxNodes: 10_000_000 }), {
      ok: true,
    })
  })

  it('counts every value, the root included, against maxNodes', () => {
    // The root array plus 9,999 numbers is exactly 10,000 values.
    assert.deepEqual(checkArgsShape(new Array(9_999).fill(0)), { ok: true })
    assert.deepEqual(checkArgsShape(new Array(10_000).fill(0)), { ok: false, reason: 'too_many_nodes' })
    assert.deepEqual(checkArgsShape({ a: 1, b: [2, 3] }, { maxNodes: 5 }), { ok: true })
    assert.deepEqual(checkArgsShape({ a: 1, b: [2, 3] }, { maxNodes: 4 }), {
      ok: false,
      reason: 'too_many_nodes',
    })
  })

  it('ends on a cyclic value instead of looping', () => {
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    assert.equal(checkArgsShape(cyclic, { maxDepth: 1_000_000 }).ok, false)
  })
})

describe('canonicalJson', () => {
  it('writes object keys sorted, at every depth, whatever their insertion order', () => {
    const a = { b: 1, a: { d: [3, { z: 1, y: 2 }], c: null } }
    const b = { a: { c: null, d: [3, { y: 2, z: 1 }] }, b: 1 }
    assert.equal(canonicalJson(a), '{"a":{"c":null,"d":[3,{"y":2,"z":1}]},"b":1}')
    assert.equal(canonicalJson(a), canonicalJson(b))
  })

  it('agrees with JSON.stringify on values whose keys are already sorted', () => {
    const values: unknown[] = [
      null,
      true,
      0,
      -1.5e-7,
      1e21,
      'quote " backslash \\ newline \n tab \t unicode é 😀 lone \ud800',
      [],
      {},
      [1, 'two', [3], { four: 4 }],
      { a: '', b: [null, false], c: { d: 0.1 } },
    ]
    for (const value of values) assert.equal(canonicalJson(value), JSON.stringify(value))
  })

  it('orders keys by UTF-16 code units, as RFC 8785 does (U+FB33 after an emoji)', () => {
    assert.equal(
      canonicalJson({ b: 1, B: 2, '€': 3, '😀': 4, '\ufb33': 5, a: 6, '1': 7, '': 8 }),
      '{"":8,"1":7,"B":2,"a":6,"b":1,"€":3,"😀":4,"\ufb33":5}',
    )
  })

  it('follows JSON.stringify for undefined, functions, non-finite numbers and toJSON', () => {
    const value = {
      u: undefined,
      f: () => 1,
      n: Number.NaN,
      i: Number.POSITIVE_INFINITY,
      list: [undefined, () => 1],
      d: new Date(0),
    }
    assert.equal(
      canonicalJson(value),
      '{"d":"1970-01-01T00:00:00.000Z","i":null,"list":[null,null],"n":null}',
    )
    assert.equal(canonicalJson({ big: 12345678901234567890n }), '{"big":12345678901234567890}')
  })

  it('keeps a "__proto__" member parsed from JSON', () => {
    assert.equal(canonicalJson(JSON.parse('{"z":1,"__proto__":{"x":1}}')), '{"__proto__":{"x":1},"z":1}')
  })

  it('writes a value nested 100,000 levels deep without overflowing the stack', () => {
    const text = canonicalJson(nested(100_000))
    assert.equal(text.length, 100_000 * 2 + 1 + 50_000 * 4)
  })

  it('refuses a cyclic value with a TypeError but accepts shared references', () => {
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    assert.throws(() => canonicalJson(cyclic), TypeError)
    const shared = { x: 1 }
    assert.equal(canonicalJson([shared, shared]), '[{"x":1},{"x":1}]')
  })
})
