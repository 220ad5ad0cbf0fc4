import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { type AddressCategory, classifyAddress, inPrefix, parseIp } from './address.ts'

function category(address: string): AddressCategory | 'allowed' {
  const verdict = classifyAddress(address)
  return verdict.allowed ? 'allowed' : verdict.category
}

function assertCategories(table: Record<string, AddressCategory | 'allowed'>): void {
  for (const [address, expected] of Object.entries(table)) {
    assert.equal(category(address), expected, address)
  }
}

describe('classifyAddress', () => {
  it('allows globally routable IPv4 and IPv6 unicast', () => {
    assertCategories({
      '8.8.8.8': 'allowed',
      '1.1.1.1': 'allowed',
      '93.184.215.14': 'allowed',
      '172.15.255.255': 'allowed',
      '172.32.0.0': 'allowed',
      '100.63.255.255': 'allowed',
      '100.128.0.0': 'allowed',
      '192.169.0.1': 'allowed',
      '223.255.255.255': 'allowed',
      '2606:4700:4700::1111': 'allowed',
      '2a00:1450:4001:81c::200e': 'allowed',
    })
  })

  it('refuses every special-purpose IPv4 range with its category', () => {
    assertCategories({
      '0.0.0.0': 'unspecified',
      '0.255.255.255': 'unspecified',
      '10.0.0.1': 'private',
      '10.255.255.255': 'private',
      '100.64.0.1': 'shared',
      '100.127.255.255': 'shared',
      '127.0.0.1': 'loopback',
      '127.255.255.254': 'loopback',
      '169.254.0.1': 'link_local',
      '169.254.169.254': 'metadata',
      '169.254.170.2': 'metadata',
      '100.100.100.200': 'metadata',
      '168.63.129.16': 'metadata',
      '172.16.0.1': 'private',
      '172.31.255.255': 'private',
      '192.0.0.8': 'reserved',
      '192.0.2.1': 'documentation',
      '192.88.99.1': 'reserved',
      '192.168.1.1': 'private',
      '198.18.0.1': 'benchmarking',
      '198.19.255.255': 'benchmarking',
      '198.51.100.7': 'documentation',
      '203.0.113.9': 'documentation',
      '224.0.0.1': 'multicast',
      '239.255.255.255': 'multicast',
      '240.0.0.1': 'reserved',
      '255.255.255.254': 'reserved',
      '255.255.255.255': 'broadcast',
    })
  })

  it('refuses special-purpose IPv6 ranges with their category', () => {
    assertCategories({
      '::': 'unspecified',
      '::1': 'loopback',
      '0:0:0:0:0:0:0:1': 'loopback',
      'fc00::1': 'unique_local',
      'fdff:ffff::1': 'unique_local',
      'fd00:ec2::254': 'metadata',
      'fe80::1': 'link_local',
      'febf::1': 'link_local',
      'fec0::1': 'private',
      'ff02::1': 'multicast',
      'ff0e::1': 'multicast',
      '2001:db8::1': 'documentation',
      '3fff::1': 'documentation',
      '2001::1': 'reserved',
      '2001:2::1': 'reserved',
      '100::1': 'reserved',
      '64:ff9b:1::a00:1': 'private',
      '4000::1': 'reserved',
      '::ffff:0:0:1': 'reserved',
    })
  })

  it('judges IPv4-mapped, NAT64 and 6to4 addresses by the IPv4 address they carry', () => {
    assertCategories({
      '::ffff:127.0.0.1': 'loopback',
      '::ffff:7f00:1': 'loopback',
      '::FFFF:169.254.169.254': 'metadata',
      '::ffff:10.1.2.3': 'private',
      '::ffff:8.8.8.8': 'allowed',
      '64:ff9b::127.0.0.1': 'loopback',
      '64:ff9b::a9fe:a9fe': 'metadata',
      '64:ff9b::8.8.8.8': 'allowed',
      '2002:7f00:1::': 'loopback',
      '2002:c0a8:101::1': 'private',
      '2002:0808:0808::1': 'allowed',
    })
  })

  it('refuses IPv4-compatible addresses, naming the IPv4 category when it has one', () => {
    assertCategories({
      '::127.0.0.1': 'loopback',
      '::10.0.0.1': 'private',
      '::8.8.8.8': 'reserved',
      '::2': 'unspecified',
    })
  })

  it('judges a link-local address with a zone like the address without it', () => {
    assert.equal(category('fe80::1%eth0'), 'link_local')
    assert.equal(category('2606:4700::1%1'), 'allowed')
  })

  it('refuses what is not an IP address in the notations DNS returns as invalid', () => {
    for (const text of [
      '',
      'localhost',
      '2130706433',
      '0x7f000001',
      '0177.0.0.1',
      '127.1',
      '127.0.0.1 ',
      '[::1]',
      '1.2.3.4.5',
      '256.0.0.1',
      ':::1',
      '::ffff:127.0.0.1.',
    ]) {
      assert.equal(category(text), 'invalid', JSON.stringify(text))
    }
  })
})

describe('parseIp', () => {
  it('reads IPv4 as four bytes and IPv6, compressed or with a dotted tail, as sixteen', () => {
    assert.deepEqual(parseIp('192.0.2.1'), { family: 4, bytes: Uint8Array.of(192, 0, 2, 1) })
    const v6 = parseIp('2001:db8::ffff:1.2.3.4')
    assert.equal(v6?.family, 6)
    assert.deepEqual([...v6!.bytes], [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4])
    assert.deepEqual([...parseIp('1::')!.bytes], [0, 1, ...new Array(14).fill(0)])
    assert.deepEqual([...parseIp('::')!.bytes], new Array(16).fill(0))
  })
})

describe('inPrefix', () => {
  it('compares whole and partial bytes of the prefix only', () => {
    const net = Uint8Array.of(172, 16, 0, 0)
    assert.equal(inPrefix(Uint8Array.of(172, 31, 9, 9), net, 12), true)
    assert.equal(inPrefix(Uint8Array.of(172, 32, 0, 0), net, 12), false)
    assert.equal(inPrefix(Uint8Array.of(1, 2, 3, 4), net, 0), true)
  })
})
