import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { compileDomainGuard, type DomainGuard, type DomainGuardSpec, hostFromUrl } from './domains.ts'

function guard(spec: DomainGuardSpec): DomainGuard {
  const result = compileDomainGuard(spec)
  if (!result.ok) assert.fail(`refused: ${JSON.stringify(result.problems)}`)
  return result
}

function problems(spec: unknown) {
  const result = compileDomainGuard(spec as DomainGuardSpec)
  if (result.ok) assert.fail(`accepted ${JSON.stringify(spec)}`)
  return result.problems
}

describe('compileDomainGuard', () => {
  const wiki = guard({
    allow: ['*.wikipedia.org', 'example.com', '127.0.0.1'],
    deny: ['secret.wikipedia.org'],
  })
  const cases: [string, string][] = [
    ['en.wikipedia.org', 'ok'],
    ['a.b.c.wikipedia.org', 'ok'],
    ['wikipedia.org', 'domain_not_allowed'],
    ['evilwikipedia.org', 'domain_not_allowed'],
    ['wikipedia.org.evil.com', 'domain_not_allowed'],
    ['secret.wikipedia.org', 'domain_denied'],
    ['example.com', 'ok'],
    ['www.example.com', 'domain_not_allowed'],
    ['EN.Wikipedia.ORG.', 'ok'],
    ['SECRET.wikipedia.org.', 'domain_denied'],
    ['127.0.0.1', 'ok'],
    ['2130706433', 'ok'],
    ['0x7f.0.0.1', 'ok'],
    ['127.0.0.2', 'domain_not_allowed'],
    ['', 'domain_not_allowed'],
    ['bad host', 'domain_not_allowed'],
    ['example.com:8080', 'domain_not_allowed'],
  ]
  for (const [host, expected] of cases) {
    it(`judges ${JSON.stringify(host)} as ${expected}`, () => {
      const result = wiki.check(host)
      assert.equal(result.ok ? 'ok' : result.reason, expected)
    })
  }

  it('lets a deny match win over an allow match', () => {
    const g = guard({ allow: ['*.example.com'], deny: ['*.internal.example.com'] })
    assert.deepEqual(g.check('a.internal.example.com'), { ok: false, reason: 'domain_denied' })
    assert.deepEqual(g.check('internal.example.com'), { ok: true })
  })

  it('allows any host not denied when there is no allow list', () => {
    const g = guard({ deny: ['*.corp', 'metadata.google.internal'] })
    assert.deepEqual(g.check('example.org'), { ok: true })
    assert.deepEqual(g.check('build.corp'), { ok: false, reason: 'domain_denied' })
    assert.deepEqual(g.check('metadata.google.internal'), { ok: false, reason: 'domain_denied' })
  })

  it('allows nothing with an empty allow list', () => {
    assert.deepEqual(guard({ allow: [] }).check('example.org'), { ok: false, reason: 'domain_not_allowed' })
  })

  it('compares IDN patterns and hosts as punycode', () => {
    const g = guard({ allow: ['*.bücher.example'] })
    assert.deepEqual(g.check('shop.xn--bcher-kva.example'), { ok: true })
    assert.deepEqual(g.check('shop.BÜCHER.example'), { ok: true })
    assert.deepEqual(guard({ allow: ['xn--bcher-kva.example'] }).check('bücher.example'), { ok: true })
  })

  it('matches IPv6 literals exactly', () => {
    const g = guard({ deny: ['[::1]', '::ffff:10.0.0.1'] })
    assert.deepEqual(g.check('::1'), { ok: false, reason: 'domain_denied' })
    assert.deepEqual(g.check('0:0:0:0:0:0:0:1'), { ok: false, reason: 'domain_denied' })
    assert.deepEqual(g.check('::2'), { ok: true })
  })

  it('refuses malformed patterns with their path', () => {
    assert.deepEqual(
      problems({
        allow: ['ok.example', 'a*.example', '*.*.example', ''],
        deny: ['*', 'bad host', '*.10.0.0.1', 5],
      }).map((p) => p.path),
      ['allow[1]', 'allow[2]', 'allow[3]', 'deny[0]', 'deny[1]', 'deny[2]', 'deny[3]'],
    )
    assert.match(problems({ deny: ['*.10.0.0.1'] })[0]?.reason ?? '', /not IP addresses/)
    assert.match(problems({ allow: ['foo.*.com'] })[0]?.reason ?? '', /only a leading/)
    assert.equal(problems({ allow: 'example.com' })[0]?.path, 'allow')
  })

  it('checks a host against many patterns without scanning them', () => {
    const allow = Array.from({ length: 20_000 }, (_, i) => `*.site${i}.example`)
    const g = guard({ allow })
    assert.deepEqual(g.check('a.site19999.example'), { ok: true })
    assert.deepEqual(g.check('a.site20000.example'), { ok: false, reason: 'domain_not_allowed' })
  })
})

describe('hostFromUrl', () => {
  const cases: [string, string | undefined][] = [
    ['https://En.Wikipedia.org./wiki/X', 'en.wikipedia.org'],
    ['http://user:pass@example.com:8080/path?q=1', 'example.com'],
    ['https://evil.com@good.com/', 'good.com'],
    ['https://bücher.example/', 'xn--bcher-kva.example'],
    ['http://2130706433/', '127.0.0.1'],
    ['http://[::1]:3000/', '::1'],
    ['ftp://example.com/', undefined],
    ['file:///etc/passwd', undefined],
    ['javascript:alert(1)', undefined],
    ['not a url', undefined],
    ['/relative/path', undefined],
  ]
  for (const [url, expected] of cases) {
    it(`reads ${JSON.stringify(url)} as ${JSON.stringify(expected)}`, () => {
      assert.equal(hostFromUrl(url), expected)
    })
  }
})
