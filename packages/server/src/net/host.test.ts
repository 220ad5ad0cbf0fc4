import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { canonicalHost, hostOfUrl } from './host.ts'

describe('canonicalHost', () => {
  it('lower-cases names and drops one trailing dot', () => {
    assert.equal(canonicalHost('API.Example.COM'), 'api.example.com')
    assert.equal(canonicalHost('example.com.'), 'example.com')
    assert.equal(canonicalHost('localhost'), 'localhost')
  })

  it('encodes internationalised names as punycode, mapping UTS #46 look-alikes', () => {
    assert.equal(canonicalHost('Bücher.example'), 'xn--bcher-kva.example')
    assert.equal(canonicalHost('例え.テスト'), 'xn--r8jz45g.xn--zckzah')
    // Full-width letters and the ideographic full stop map to their ASCII forms.
    assert.equal(canonicalHost('ｅｘａｍｐｌｅ。com'), 'example.com')
  })

  it('writes every IPv4 number notation in dotted decimal', () => {
    for (const form of [
      '2130706433',
      '0x7f000001',
      '0177.0.0.1',
      '127.1',
      '0x7f.0.0.1',
      '127.0.0.1.',
      '017700000001',
    ]) {
      assert.equal(canonicalHost(form), '127.0.0.1', form)
    }
    assert.equal(canonicalHost('0'), '0.0.0.0')
    assert.equal(canonicalHost('169.254.169.254'), '169.254.169.254')
  })

  it('writes IPv6 compressed, lower case and without brackets, with or without them on input', () => {
    assert.equal(canonicalHost('[::1]'), '::1')
    assert.equal(canonicalHost('0:0:0:0:0:0:0:1'), '::1')
    assert.equal(canonicalHost('[FE80::1]'), 'fe80::1')
    assert.equal(canonicalHost('::FFFF:127.0.0.1'), '::ffff:7f00:1')
  })

  it('refuses what is not a host', () => {
    for (const bad of [
      '',
      ' ',
      'a b.com',
      ' example.com',
      'example.com:80',
      '[::1]:80',
      '[::1]:',
      '[::1',
      '::1]',
      'fe80::1%eth0',
      'example.com/path',
      'example.com?q',
      'example.com\\x',
      'user@example.com',
      '@example.com',
      'example.com#frag',
      'exa\tmple.com',
      'exa\nmple.com',
      'a<b',
      '256.0.0.1',
      '1.2.3.4.5',
      'xn--',
      '.',
      '..',
      '.example.com',
      'example..com',
      'example.com..',
      `${'a'.repeat(64)}.com`,
      `${'a.'.repeat(127)}com`,
    ]) {
      assert.equal(canonicalHost(bad), undefined, JSON.stringify(bad))
    }
  })

  it('accepts names at the DNS length limits', () => {
    const label = 'a'.repeat(63)
    assert.equal(canonicalHost(`${label}.com`), `${label}.com`)
    const name = `${'a.'.repeat(125)}com`
    assert.equal(name.length, 253)
    assert.equal(canonicalHost(name), name)
  })
})

describe('hostOfUrl', () => {
  it('gives the canonical host of a URL, never its userinfo or port', () => {
    assert.equal(hostOfUrl(new URL('http://user:pw@EXAMPLE.com.:8080/x')), 'example.com')
    assert.equal(hostOfUrl(new URL('https://[::ffff:127.0.0.1]/')), '::ffff:7f00:1')
    assert.equal(hostOfUrl(new URL('http://0x7f000001/')), '127.0.0.1')
  })
})
