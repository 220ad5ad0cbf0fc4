import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { GatewayError } from '../errors/gateway-error.ts'
import { formatScope, hasChannel, isSubset, parseScope } from './scope.ts'

function invalid(text: string): string {
  try {
    parseScope(text)
  } catch (err) {
    assert.ok(err instanceof GatewayError)
    assert.equal(err.code, 'invalid_scope')
    return err.message
  }
  assert.fail(`${JSON.stringify(text)} was accepted`)
}

describe('parseScope', () => {
  it('reads tool:action, tool:* and channel:NAME tokens separated by spaces', () => {
    assert.deepEqual(parseScope('serpapi:search http_fetch:* channel:orders-v2'), [
      'serpapi:search',
      'http_fetch:*',
      'channel:orders-v2',
    ])
  })

  it('drops duplicates and extra spaces, keeping the first-seen order', () => {
    assert.deepEqual(parseScope('  b:x a:y  b:x a:y '), ['b:x', 'a:y'])
  })

  it('reads an absent or empty scope as no scopes', () => {
    assert.deepEqual(parseScope(undefined), [])
    assert.deepEqual(parseScope(''), [])
  })

  it('refuses tokens outside the grammar with invalid_scope', () => {
    for (const text of [
      'serpapi',
      'serpapi:',
      ':search',
      'a:b:c',
      'channel:*',
      '*:search',
      'tool:se*',
      'tool:a.b',
      'tool:search\tother:x',
      'tool:search,other:x',
      'tool:sëarch',
      `tool:${'a'.repeat(65)}`,
    ]) {
      invalid(text)
    }
  })

  it('quotes the offending token, shortened, in the message', () => {
    assert.match(invalid('ok:fine bad!token'), /"bad!token"/)
    assert.ok(invalid(`x${'!'.repeat(500)}`).length < 200)
  })

  it('refuses more than 256 distinct scopes', () => {
    const many = Array.from({ length: 257 }, (_, i) => `tool:a${i}`).join(' ')
    assert.match(invalid(many), /at most 256/)
    assert.equal(parseScope(many.split(' ').slice(0, 256).join(' ')).length, 256)
  })
})

describe('formatScope', () => {
  it('writes scopes back space-separated, so parse and format round-trip', () => {
    const scopes = ['serpapi:search', 'channel:orders']
    assert.equal(formatScope(scopes), 'serpapi:search channel:orders')
    assert.deepEqual(parseScope(formatScope(scopes)), scopes)
    assert.equal(formatScope([]), '')
  })
})

describe('isSubset', () => {
  const granted = ['serpapi:search', 'http_fetch:*', 'channel:orders']

  it('accepts requests for granted scopes, and the empty request', () => {
    assert.equal(isSubset(['serpapi:search', 'channel:orders'], granted), true)
    assert.equal(isSubset([], granted), true)
    assert.equal(isSubset([], []), true)
  })

  it('lets a tool:* grant cover any action of that tool, and itself', () => {
    assert.equal(isSubset(['http_fetch:get', 'http_fetch:post'], granted), true)
    assert.equal(isSubset(['http_fetch:*'], granted), true)
  })

  it('refuses to widen: tool:* is not covered by grants of single actions', () => {
    assert.equal(isSubset(['serpapi:*'], granted), false)
    assert.equal(isSubset(['serpapi:*'], ['serpapi:search', 'serpapi:other']), false)
  })

  it('refuses scopes of other tools, other actions and other channels', () => {
    assert.equal(isSubset(['openai:chat'], granted), false)
    assert.equal(isSubset(['serpapi:search', 'gmail:send'], granted), false)
    assert.equal(isSubset(['channel:billing'], granted), false)
    assert.equal(isSubset(['serpapi:search'], []), false)
  })

  it('never reads a channel grant as a wildcard', () => {
    assert.equal(isSubset(['channel:orders'], ['channel:*']), false)
  })
})

describe('hasChannel', () => {
  it('is true only for a channel named exactly in the scopes', () => {
    const scopes = ['channel:orders', 'orders:read']
    assert.equal(hasChannel(scopes, 'orders'), true)
    assert.equal(hasChannel(scopes, 'Orders'), false)
    assert.equal(hasChannel(scopes, 'read'), false)
    assert.equal(hasChannel([], 'orders'), false)
  })
})
