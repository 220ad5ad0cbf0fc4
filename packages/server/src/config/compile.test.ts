import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { compileConfig } from './compile.ts'
import { ConfigError } from './load.ts'
import type { RawConfig } from './schema.ts'

const systems: RawConfig['systems'] = {
  orders: { kind: 'http', url: 'http://127.0.0.1:9000/base/' },
  events: { kind: 'nats', url: 'nats://127.0.0.1:4222' },
}

function problems(config: RawConfig): string[] {
  try {
    compileConfig(config, 'text')
  } catch (err) {
    assert.ok(err instanceof ConfigError)
    return err.problems.map((p) => `${p.path}: ${p.message}`)
  }
  assert.fail('expected the config to be refused')
}

describe('compileConfig', () => {
  it('applies the documented defaults', () => {
    const config = compileConfig({}, '')
    assert.deepEqual(config.gateway.listen, { host: '0.0.0.0', port: 8080 })
    assert.deepEqual(config.gateway.admin, { host: '127.0.0.1', port: 8081, keys: [] })
    assert.deepEqual(config.gateway.requestId, { header: 'x-request-id', on: 'always' })
    assert.equal(config.gateway.refreshMs, 15_000)
    assert.equal(config.gateway.bodyLimitBytes, 1_048_576)
    assert.equal(config.gateway.issuer, 'http://127.0.0.1:8080')
    assert.equal(config.dataDir, './data')
  })

  it('resolves systems into origin and base path, and channels onto them', () => {
    const config = compileConfig(
      { systems, channels: [{ name: 'o', prefix: '/Orders/', system: 'orders', caseInsensitive: true }] },
      '',
    )
    const channel = config.byName.get('o')!
    assert.equal(channel.system.origin, 'http://127.0.0.1:9000')
    assert.equal(channel.system.basePath, '/base')
    assert.equal(channel.prefix, '/orders', 'trailing slash dropped, lower-cased when case-insensitive')
    assert.equal(channel.prefixAsWritten, '/Orders')
    assert.equal(channel.rules.length, 1, 'a channel without rules gets one * rule')
    assert.equal(channel.rules[0]!.public, false, 'and it is not public: default deny')
  })

  it('orders prefixed channels longest first', () => {
    const config = compileConfig(
      {
        systems,
        channels: [
          { name: 'a', prefix: '/a', system: 'orders' },
          { name: 'ab', prefix: '/a/b', system: 'orders' },
        ],
      },
      '',
    )
    assert.deepEqual(
      config.prefixed.map((c) => c.name),
      ['ab', 'a'],
    )
  })

  it('lets GET imply HEAD and lists allowed methods for 405 answers', () => {
    const config = compileConfig(
      {
        systems,
        channels: [
          {
            name: 'o',
            system: 'orders',
            rules: [
              { path: '/r/*', methods: ['GET'] },
              { path: '*', methods: { GET: ['reader'], POST: ['writer'] } },
            ],
          },
        ],
      },
      '',
    )
    const [byList, byRoles] = config.byName.get('o')!.rules
    assert.equal(byList!.allow, 'GET, HEAD')
    assert.equal(byRoles!.allow, 'GET, HEAD, POST')
    assert.deepEqual(byRoles!.roles?.get('HEAD'), ['reader'])
  })

  it('refuses a channel that names an unknown or a nats system', () => {
    assert.deepEqual(problems({ systems, channels: [{ name: 'x', system: 'nowhere' }] }), [
      'channels[0].system: unknown system "nowhere"',
    ])
    assert.match(problems({ systems, channels: [{ name: 'x', system: 'events' }] })[0]!, /nats system/)
  })

  it('refuses duplicate channel names and prefixes', () => {
    const found = problems({
      systems,
      channels: [
        { name: 'x', prefix: '/x', system: 'orders' },
        { name: 'x', prefix: '/x/', system: 'orders' },
      ],
    })
    assert.ok(found.some((p) => p.startsWith('channels[1].name: duplicate channel name')))
    assert.ok(found.some((p) => p.startsWith('channels[1].prefix: prefix "/x/" is already used')))
  })

  it('refuses prefixes that shadow built-in routes or are not normalised', () => {
    for (const prefix of ['/', '/health', '/v1', '/v1/tools', '/api', '/metrics', '/.well-known']) {
      assert.equal(
        problems({ systems, channels: [{ name: 'x', prefix, system: 'orders' }] }).length,
        1,
        prefix,
      )
    }
    for (const prefix of ['/a/../b', '/a//b', '/a%2fb', '/a/./b']) {
      assert.match(
        problems({ systems, channels: [{ name: 'x', prefix, system: 'orders' }] })[0]!,
        /normalised/,
      )
    }
  })

  it('refuses a wildcard anywhere but the end, and roles on a public rule', () => {
    assert.match(
      problems({ systems, channels: [{ name: 'x', system: 'orders', rules: [{ path: '/a/*/b' }] }] })[0]!,
      /trailing \/\*/,
    )
    assert.match(
      problems({
        systems,
        channels: [
          { name: 'x', system: 'orders', rules: [{ path: '*', public: true, methods: { GET: ['r'] } }] },
        ],
      })[0]!,
      /public rule cannot require roles/,
    )
  })

  it('refuses a malformed header template with its path', () => {
    const found = problems({
      systems,
      channels: [{ name: 'x', system: 'orders', requestHeaders: { set: { 'X-A': '{{sub' } } }],
    })
    assert.deepEqual(
      found.map((p) => p.split(':')[0]),
      ['channels[0].requestHeaders.set.X-A'],
    )
  })

  it('gives the same source the same version and a changed source a new one', () => {
    assert.equal(compileConfig({}, 'a').version, compileConfig({}, 'a').version)
    assert.notEqual(compileConfig({}, 'a').version, compileConfig({}, 'b').version)
  })
  it('refuses a bad http_fetch allowNetworks entry and a bad policy at load, with their paths', () => {
    const found = problems({
      tools: { http_fetch: { allowNetworks: ['10.0.0.0/8', 'not-a-network'] } },
      policies: [{ name: 'p', agents: { all: true }, allow: [{ tool: 't', when: 'args.x <' }] }],
    })
    assert.deepEqual(
      found.map((p) => p.split(':')[0]),
      ['policies[0].allow[0].when', 'tools.http_fetch.allowNetworks[1]'],
    )
  })

  it('refuses two policies with one name', () => {
    const found = problems({
      policies: [
        { name: 'p', agents: { all: true }, allow: [{ tool: 't' }] },
        { name: 'p', agents: { all: true }, allow: [{ tool: 'u' }] },
      ],
    })
    assert.deepEqual(
      found.map((p) => p.split(':')[0]),
      ['policies[1].name'],
    )
  })
})
