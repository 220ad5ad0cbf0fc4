import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { compileConfig } from '../config/compile.ts'
import { matchChannel, matchRule, upstreamPath } from './route-match.ts'

const config = compileConfig(
  {
    systems: {
      s: { kind: 'http', url: 'http://127.0.0.1:9000' },
      b: { kind: 'http', url: 'http://127.0.0.1:9000/v2' },
    },
    channels: [
      {
        name: 'orders',
        prefix: '/orders',
        system: 's',
        rules: [
          { path: '/public/*', public: true },
          { path: '/exact' },
          { path: '/admin/*', disabled: true },
        ],
      },
      { name: 'deep', prefix: '/orders/deep', system: 'b', rules: [{ path: '*' }] },
      { name: 'ci', prefix: '/Shop', system: 's', caseInsensitive: true, rules: [{ path: '/Cart/*' }] },
      { name: 'kept', prefix: '/kept', system: 'b', stripPrefix: false },
    ],
  },
  '',
)

function route(path: string) {
  const match = matchChannel(config, path)
  return match && { channel: match.channel.name, remainder: match.remainder, viaPrefix: match.viaPrefix }
}

describe('channel matching', () => {
  it('matches the prefix itself and paths below it, but not a longer segment', () => {
    assert.deepEqual(route('/orders'), { channel: 'orders', remainder: '', viaPrefix: true })
    assert.deepEqual(route('/orders/1'), { channel: 'orders', remainder: '/1', viaPrefix: true })
    assert.equal(route('/ordersx'), undefined)
  })
  it('prefers the longest prefix', () => {
    assert.deepEqual(route('/orders/deep/x'), { channel: 'deep', remainder: '/x', viaPrefix: true })
  })
  it('serves every channel under /api/request/{name}', () => {
    assert.deepEqual(route('/api/request/orders/1'), { channel: 'orders', remainder: '/1', viaPrefix: false })
    assert.deepEqual(route('/api/request/orders'), { channel: 'orders', remainder: '', viaPrefix: false })
    assert.equal(route('/api/request/unknown/1'), undefined)
  })
  it('is case-sensitive unless the channel says otherwise', () => {
    assert.equal(route('/ORDERS/1'), undefined)
    assert.deepEqual(route('/SHOP/cart/1'), { channel: 'ci', remainder: '/cart/1', viaPrefix: true })
  })
})

describe('rule matching', () => {
  const orders = config.byName.get('orders')!
  it('takes the first rule that matches', () => {
    assert.equal(matchRule(orders, '/public/a/b')?.path, '/public/*')
    assert.equal(matchRule(orders, '/public')?.path, '/public/*')
    assert.equal(matchRule(orders, '/exact')?.path, '/exact')
  })
  it('does not let a prefix rule match a longer segment, nor an exact rule a sub-path', () => {
    assert.equal(matchRule(orders, '/publicity'), undefined)
    assert.equal(matchRule(orders, '/exact/more'), undefined)
  })
  it('matches rules case-insensitively on a case-insensitive channel', () => {
    assert.equal(matchRule(config.byName.get('ci')!, '/CART/x')?.path, '/Cart/*')
  })
})

describe('upstream path', () => {
  it('appends the remainder to the base path, or / when both are empty', () => {
    assert.equal(upstreamPath(matchChannel(config, '/orders')!, '/orders'), '/')
    assert.equal(upstreamPath(matchChannel(config, '/orders/deep/x')!, '/orders/deep/x'), '/v2/x')
  })
  it('keeps the prefix when stripPrefix is false, also through /api/request', () => {
    assert.equal(upstreamPath(matchChannel(config, '/kept/a')!, '/kept/a'), '/v2/kept/a')
    assert.equal(
      upstreamPath(matchChannel(config, '/api/request/kept/a')!, '/api/request/kept/a'),
      '/v2/kept/a',
    )
  })
})
