import assert from 'node:assert/strict'
import type { LookupAddress } from 'node:dns'
import { connect, createServer, type LookupFunction, type Server, type Socket } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { type AllowNetworks, parseNetworks } from './allow-networks.ts'
import { NetFetchError } from './fetch-error.ts'
import { createSafeLookup, type ResolvedAddress, type Resolver, resolveChecked } from './safe-lookup.ts'

function allow(...cidrs: string[]): AllowNetworks {
  const result = parseNetworks(cidrs)
  assert.ok(result.ok)
  return result.networks
}

function fixed(...addresses: string[]): Resolver & { calls: string[] } {
  const calls: string[] = []
  const resolve = async (host: string): Promise<ResolvedAddress[]> => {
    calls.push(host)
    return addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }))
  }
  return Object.assign(resolve, { calls })
}

async function refusal(promise: Promise<unknown>): Promise<NetFetchError> {
  try {
    await promise
  } catch (err) {
    assert.ok(err instanceof NetFetchError, String(err))
    return err
  }
  assert.fail('the promise resolved')
}

function lookupOnce(
  lookup: LookupFunction,
  host: string,
  options: { family?: number; all?: boolean },
): Promise<{ address: string | LookupAddress[]; family: number | undefined }> {
  return new Promise((resolve, reject) => {
    lookup(host, options, (err, address, family) => (err ? reject(err) : resolve({ address, family })))
  })
}

describe('resolveChecked', () => {
  it('returns every address of an answer when all of them are allowed', async () => {
    const resolve = fixed('93.184.215.14', '2606:2800:21f:cb07:6820:80da:af6b:8b2c')
    assert.deepEqual(await resolveChecked('example.com', { allowNetworks: allow(), resolve }), [
      { address: '93.184.215.14', family: 4 },
      { address: '2606:2800:21f:cb07:6820:80da:af6b:8b2c', family: 6 },
    ])
  })

  it('refuses a whole answer when one of its addresses is private, whichever comes first', async () => {
    for (const order of [
      ['93.184.215.14', '10.0.0.1'],
      ['10.0.0.1', '93.184.215.14'],
    ]) {
      const err = await refusal(
        resolveChecked('mixed.test', { allowNetworks: allow(), resolve: fixed(...order) }),
      )
      assert.equal(err.reason, 'ssrf_blocked')
      assert.equal(err.category, 'private')
      assert.equal(err.host, 'mixed.test')
      assert.match(err.message, /mixed\.test: it resolves to a private address/)
      assert.doesNotMatch(err.message, /10\.0\.0\.1/)
    }
  })

  it('checks an IP literal as it is, without asking the resolver', async () => {
    const resolve = fixed('93.184.215.14')
    const err = await refusal(resolveChecked('169.254.169.254', { allowNetworks: allow(), resolve }))
    assert.equal(err.category, 'metadata')
    assert.match(err.message, /169\.254\.169\.254: it is a cloud metadata address/)
    assert.deepEqual(await resolveChecked('8.8.8.8', { allowNetworks: allow(), resolve }), [
      { address: '8.8.8.8', family: 4 },
    ])
    assert.deepEqual(resolve.calls, [])
  })

  it('lets an address through when an allowed network holds it, even a loopback one', async () => {
    const resolve = fixed('127.0.0.1')
    assert.deepEqual(await resolveChecked('app.test', { allowNetworks: allow('127.0.0.0/8'), resolve }), [
      { address: '127.0.0.1', family: 4 },
    ])
  })

  it('refuses a resolver answer that is not an IP address', async () => {
    const err = await refusal(
      resolveChecked('odd.test', { allowNetworks: allow(), resolve: fixed('0x7f000001') }),
    )
    assert.equal(err.category, 'invalid')
  })

  it('fails with connect_failed, naming the DNS code, when the name does not resolve', async () => {
    const resolve: Resolver = async () => {
      throw Object.assign(new Error('getaddrinfo ENOTFOUND nowhere.test'), { code: 'ENOTFOUND' })
    }
    const err = await refusal(resolveChecked('nowhere.test', { allowNetworks: allow(), resolve }))
    assert.equal(err.reason, 'connect_failed')
    assert.match(err.message, /Could not resolve nowhere\.test \(ENOTFOUND\)/)
    const empty = await refusal(resolveChecked('empty.test', { allowNetworks: allow(), resolve: fixed() }))
    assert.equal(empty.reason, 'connect_failed')
  })

  it('resolves localhost with the system resolver and refuses it as loopback', async () => {
    const err = await refusal(resolveChecked('localhost', { allowNetworks: allow() }))
    assert.equal(err.reason, 'ssrf_blocked')
    assert.equal(err.category, 'loopback')
  })
})

describe('createSafeLookup', () => {
  let server: Server
  let port: number
  const accepted: Socket[] = []

  before(async () => {
    server = createServer((socket) => {
      accepted.push(socket)
      socket.end('hello')
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    port = (server.address() as { port: number }).port
  })

  after(async () => {
    await new Promise((resolve) => server.close(resolve))
  })

  function dial(
    host: string,
    lookup: LookupFunction,
    autoSelectFamily: boolean,
  ): Promise<{ data: string; remote: string | undefined }> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host, port, lookup, autoSelectFamily })
      let data = ''
      socket.on('data', (chunk) => {
        data += chunk
      })
      socket.on('error', reject)
      socket.on('end', () => resolve({ data, remote: socket.remoteAddress }))
    })
  }

  for (const autoSelectFamily of [true, false]) {
    it(`connects net.connect to the checked address (autoSelectFamily ${autoSelectFamily})`, async () => {
      const resolve = fixed('127.0.0.1')
      const lookup = createSafeLookup({ allowNetworks: allow('127.0.0.1/32'), resolve })
      const before = accepted.length
      const { data, remote } = await dial('app.test', lookup, autoSelectFamily)
      assert.equal(data, 'hello')
      assert.equal(remote, '127.0.0.1')
      assert.equal(accepted.length, before + 1)
      assert.deepEqual(resolve.calls, ['app.test'])
    })

    it(`fails net.connect with ssrf_blocked before any connection (autoSelectFamily ${autoSelectFamily})`, async () => {
      const lookup = createSafeLookup({ allowNetworks: allow(), resolve: fixed('127.0.0.1') })
      const before = accepted.length
      const err = await refusal(dial('app.test', lookup, autoSelectFamily))
      assert.equal(err.reason, 'ssrf_blocked')
      assert.equal(err.category, 'loopback')
      assert.equal(accepted.length, before)
    })
  }

  it('answers with one address, or all of them when asked, keeping to a requested family', async () => {
    const lookup = createSafeLookup({
      allowNetworks: allow(),
      resolve: fixed('93.184.215.14', '2606:4700::1'),
    })
    assert.deepEqual(await lookupOnce(lookup, 'example.com', {}), { address: '93.184.215.14', family: 4 })
    assert.deepEqual(await lookupOnce(lookup, 'example.com', { family: 6 }), {
      address: '2606:4700::1',
      family: 6,
    })
    assert.deepEqual((await lookupOnce(lookup, 'example.com', { all: true })).address, [
      { address: '93.184.215.14', family: 4 },
      { address: '2606:4700::1', family: 6 },
    ])
    const v4only = createSafeLookup({ allowNetworks: allow(), resolve: fixed('93.184.215.14') })
    const err = await refusal(lookupOnce(v4only, 'example.com', { family: 6 }))
    assert.equal(err.reason, 'connect_failed')
  })
})
