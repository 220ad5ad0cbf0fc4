import assert from 'node:assert/strict'
import type { IncomingMessage } from 'node:http'
import { describe, it } from 'node:test'
import { parseNetworks } from '../net/allow-networks.ts'
import { clientAddress } from './client-ip.ts'

function withForwardedFor(value: string | undefined): IncomingMessage {
  return { headers: value === undefined ? {} : { 'x-forwarded-for': value } } as IncomingMessage
}

const parsed = parseNetworks(['10.0.0.0/8', '::1'])
assert.ok(parsed.ok)
const trusted = parsed.networks

describe('the client address of a rate limit by ip', () => {
  it('is the peer when no proxy is trusted, whatever X-Forwarded-For claims', () => {
    assert.equal(clientAddress(withForwardedFor('1.2.3.4'), '10.1.1.1', undefined), '10.1.1.1')
  })

  it('is the peer when the peer is not a trusted proxy', () => {
    assert.equal(clientAddress(withForwardedFor('1.2.3.4'), '192.0.2.7', trusted), '192.0.2.7')
  })

  it('is the nearest untrusted hop of X-Forwarded-For when the peer is a trusted proxy', () => {
    assert.equal(clientAddress(withForwardedFor('1.2.3.4'), '10.1.1.1', trusted), '1.2.3.4')
    // A client's own forged first entry is left of the address our proxy saw: it is not believed.
    assert.equal(
      clientAddress(withForwardedFor('6.6.6.6, 1.2.3.4, 10.9.9.9'), '10.1.1.1', trusted),
      '1.2.3.4',
    )
    assert.equal(clientAddress(withForwardedFor('2001:db8::5'), '::1', trusted), '2001:db8:0:0::/64')
  })

  it('stops at a hop that is not an address, and is the peer without the header', () => {
    assert.equal(
      clientAddress(withForwardedFor('1.2.3.4, not-an-ip, 10.2.2.2'), '10.1.1.1', trusted),
      '10.2.2.2',
    )
    assert.equal(clientAddress(withForwardedFor(undefined), '10.1.1.1', trusted), '10.1.1.1')
  })

  it('counts an IPv6 client by its /64, so rotating addresses inside it buys no fresh budget', () => {
    const a = clientAddress(withForwardedFor(undefined), '2001:db8:1:2::a', undefined)
    const b = clientAddress(withForwardedFor(undefined), '2001:db8:1:2:ffff:1:2:3', undefined)
    const other = clientAddress(withForwardedFor(undefined), '2001:db8:1:3::a', undefined)
    assert.equal(a, '2001:db8:1:2::/64')
    assert.equal(b, a)
    assert.notEqual(other, a)
  })

  it('counts an IPv4-mapped IPv6 peer as its IPv4 address', () => {
    assert.equal(clientAddress(withForwardedFor(undefined), '::ffff:192.0.2.1', undefined), '192.0.2.1')
    assert.equal(clientAddress(withForwardedFor('1.2.3.4'), '::ffff:10.0.0.1', trusted), '1.2.3.4')
  })
})
