import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { type AllowNetworks, parseNetworks } from './allow-networks.ts'

function networks(list: readonly unknown[]): AllowNetworks {
  const result = parseNetworks(list)
  assert.ok(result.ok, JSON.stringify(result))
  return result.networks
}

function problems(list: readonly unknown[]): { index: number; reason: string }[] {
  const result = parseNetworks(list)
  assert.ok(!result.ok, `${JSON.stringify(list)} was accepted`)
  return [...result.problems]
}

describe('parseNetworks', () => {
  it('matches addresses inside IPv4 and IPv6 CIDR networks and nothing outside them', () => {
    const allow = networks(['127.0.0.0/8', '10.1.0.0/16', 'fd00::/8', '::1/128'])
    for (const inside of ['127.0.0.1', '127.255.0.9', '10.1.200.3', 'fd12:3456::1', '::1']) {
      assert.equal(allow.contains(inside), true, inside)
    }
    for (const outside of ['128.0.0.1', '10.2.0.1', 'fc00::1', '::2', '8.8.8.8', 'not-an-ip']) {
      assert.equal(allow.contains(outside), false, outside)
    }
  })

  it('reads a bare address as a single-address network', () => {
    const allow = networks(['10.1.2.3', '2001:db8::7'])
    assert.equal(allow.contains('10.1.2.3'), true)
    assert.equal(allow.contains('10.1.2.4'), false)
    assert.equal(allow.contains('2001:db8::7'), true)
    assert.equal(allow.contains('2001:db8::8'), false)
    assert.deepEqual(allow.cidrs, ['10.1.2.3/32', '2001:db8::7/128'])
  })

  it('matches an IPv4-mapped IPv6 address against IPv4 networks, and the reverse', () => {
    const v4 = networks(['127.0.0.0/8'])
    assert.equal(v4.contains('::ffff:127.0.0.1'), true)
    assert.equal(v4.contains('::ffff:7f00:1'), true)
    const mapped = networks(['::ffff:10.0.0.0/104'])
    assert.deepEqual(mapped.cidrs, ['10.0.0.0/8'])
    assert.equal(mapped.contains('10.9.9.9'), true)
  })

  it('treats /0 as every address of its family', () => {
    const all4 = networks(['0.0.0.0/0'])
    assert.equal(all4.contains('192.168.0.1'), true)
    assert.equal(all4.contains('::1'), false)
  })

  it('keys equal networks equally, whatever their spelling', () => {
    assert.deepEqual(networks([' 10.0.0.0/8 ', '10.0.0.0/8', '2001:DB8:0:0::/32', '::1']).cidrs, [
      '10.0.0.0/8',
      '2001:db8::/32',
      '::1/128',
    ])
    assert.deepEqual(networks(['fe80:0:0:1::/64']).cidrs, ['fe80:0:0:1::/64'])
  })

  it('opens nothing when the list is empty', () => {
    const none = networks([])
    assert.equal(none.contains('127.0.0.1'), false)
    assert.deepEqual(none.cidrs, [])
  })

  it('reports every bad entry with its index and a reason quoting it', () => {
    const found = problems(['10.0.0.0/8', 'example.com', '10.0.0.0/33', '::1/129', 'fe80::1%eth0/128', 7, ''])
    assert.deepEqual(
      found.map((p) => p.index),
      [1, 2, 3, 4, 5, 6],
    )
    assert.match(found[0]!.reason, /"example\.com" is not an IPv4 or IPv6 address/)
    assert.match(found[1]!.reason, /"10\.0\.0\.0\/33" has an invalid prefix length \(0 to 32\)/)
    assert.match(found[2]!.reason, /"::1\/129" has an invalid prefix length \(0 to 128\)/)
    assert.match(found[3]!.reason, /zone/)
    assert.match(found[4]!.reason, /number is not a network/)
    assert.match(found[5]!.reason, /empty/)
  })

  it('refuses prefix lengths that are not plain decimal numbers', () => {
    for (const entry of [
      '10.0.0.0/',
      '10.0.0.0/+8',
      '10.0.0.0/0x8',
      '10.0.0.0/8/8',
      '10.0.0.0/ 8',
      '10.0.0.0/0008',
    ]) {
      assert.equal(problems([entry]).length, 1, entry)
    }
  })

  it('refuses an entry with host bits set and suggests the network', () => {
    assert.match(
      problems(['10.1.2.3/8'])[0]!.reason,
      /"10\.1\.2\.3\/8" has host bits set; did you mean 10\.0\.0\.0\/8\?/,
    )
    assert.match(problems(['fd00::1/8'])[0]!.reason, /did you mean fd00::\/8\?/)
  })

  it('refuses non-decimal IPv4 notations, which are host names rather than addresses', () => {
    for (const entry of ['0x7f000001', '2130706433', '0177.0.0.1/32', '127.1']) {
      assert.equal(problems([entry]).length, 1, entry)
    }
  })

  it('shortens a very long entry in its reason', () => {
    const reason = problems([`${'x'.repeat(500)}/8`])[0]!.reason
    assert.ok(reason.length < 150, reason)
  })
})
