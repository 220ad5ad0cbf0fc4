import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  builtinDetector,
  builtinDetectorNames,
  builtinsInOrder,
  compileCustomDetectors,
  customOverlap,
  customWindow,
  type Detector,
  redactText,
} from './detectors.ts'

function detector(name: string): Detector {
  const found = builtinDetector(name)
  assert.ok(found, name)
  return found
}

function redact(text: string, detectors: Detector[]) {
  const counts: Record<string, number> = {}
  return { text: redactText(text, detectors, counts), counts }
}

// Key-shaped test values are assembled from parts so that secret scanners do not flag the file.
const fake = {
  openai: ['sk', 'proj', 'abcdefghij0123456789ABCDEFGHIJ_-xyz'].join('-'),
  openaiLegacy: `sk-${'a1B2c3D4e5'.repeat(4)}`,
  aws: ['AKIA', 'IOSFODNN7EXAMPLE'].join(''),
  github: `${'ghp'}_${'A1b2C3d4E5'.repeat(4)}`,
  githubPat: `${'github_pat'}_${'11ABCDEFG0'.repeat(3)}_${'x'.repeat(20)}`,
  slack: ['xoxb', '123456789012', '1234567890123', 'AbCdEfGhIjKlMnOpQrStUvWx'].join('-'),
  google: `${'AIza'}Sy${'A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6q'.slice(0, 33)}`,
  stripe: `${'sk'}_${'live'}_${'4eC39HqLyjWDarjtT1zdp7dc'}`,
  stripeRestricted: `${'rk'}_${'live'}_${'51H8jkLm0n1P2q3R4s5T6u7V'}`,
}
const jwt =
  'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c'

describe('built-in detectors', () => {
  const positives: [string, string, string][] = [
    ['email', 'write to john.doe+tag@mail.example.co.uk today', 'write to [REDACTED:email] today'],
    ['email', '<a href="mailto:a@b.io">', '<a href="mailto:[REDACTED:email]">'],
    ['card', 'card 4111 1111 1111 1111 ok', 'card [REDACTED:card] ok'],
    ['card', '4111-1111-1111-1111', '[REDACTED:card]'],
    ['card', 'n=4111111111111111;', 'n=[REDACTED:card];'],
    ['card', 'amex 3782 822463 10005', 'amex [REDACTED:card]'],
    ['card', 'mc 5555555555554444 and visa13 4222222222222', 'mc [REDACTED:card] and visa13 [REDACTED:card]'],
    ['card', 'card 4111 1111 1111 1111 12/25', 'card [REDACTED:card] 12/25'],
    ['card', 'ids 12 35 4111 1111 1111 1111 and 7', 'ids 12 35 [REDACTED:card] and 7'],
    // "36 4111 1111 1111" passes Luhn too: the union is covered rather than leave "1111" visible.
    ['card', 'ids 12 36 4111 1111 1111 1111 and 7', 'ids [REDACTED:card] and 7'],
    ['card', '4111111111111111 5555-5555-5555-4444', '[REDACTED:card] [REDACTED:card]'],
    ['phone', 'call +44 20 7946 0958 now', 'call [REDACTED:phone] now'],
    ['phone', '+14155552671', '[REDACTED:phone]'],
    ['phone', '+1 (415) 555-2671', '[REDACTED:phone]'],
    ['phone', 'Tel: +1-415-555-2671.', 'Tel: [REDACTED:phone].'],
    ['phone', '+33 6 12 34 56 78', '[REDACTED:phone]'],
    ['phone', '+49 30 12345678', '[REDACTED:phone]'],
    ['phone', '(415) 555-2671', '[REDACTED:phone]'],
    ['phone', '415-555-2671 or 415.555.2671', '[REDACTED:phone] or [REDACTED:phone]'],
    ['phone', 'UK 020 7946 0958, FR 06 12 34 56 78', 'UK [REDACTED:phone], FR [REDACTED:phone]'],
    ['api_key', `key ${fake.openai} end`, 'key [REDACTED:api_key] end'],
    ['api_key', fake.openaiLegacy, '[REDACTED:api_key]'],
    ['api_key', `"${fake.aws}"`, '"[REDACTED:api_key]"'],
    ['api_key', fake.github, '[REDACTED:api_key]'],
    ['api_key', fake.githubPat, '[REDACTED:api_key]'],
    ['api_key', fake.slack, '[REDACTED:api_key]'],
    ['api_key', fake.google, '[REDACTED:api_key]'],
    ['api_key', `${fake.stripe} ${fake.stripeRestricted}`, '[REDACTED:api_key] [REDACTED:api_key]'],
    [
      'api_key',
      'https://serpapi.com/search.json?q=x&api_key=0123456789abcdef0123456789abcdef&num=1',
      'https://serpapi.com/search.json?q=x&api_key=[REDACTED:api_key]&num=1',
    ],
    ['jwt', `Bearer ${jwt}`, 'Bearer [REDACTED:jwt]'],
    ['jwt', 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.', '[REDACTED:jwt]'],
    ['jwt', 'jwe eyJhbGciOiJSU0EifQ.a2V5.aXY.Y2lwaGVy.dGFn!', 'jwe [REDACTED:jwt]!'],
  ]
  for (const [name, text, expected] of positives) {
    it(`${name} redacts ${JSON.stringify(text)}`, () => {
      const result = redact(text, [detector(name)])
      assert.equal(result.text, expected)
      assert.equal(result.counts[name], (expected.match(/\[REDACTED:/g) ?? []).length)
    })
  }

  const negatives: [string, string][] = [
    ['email', 'not an email: user@ or @host.com or a@b'],
    ['email', 'user@localhost and x@123.45'],
    ['card', 'Luhn fails: 4111 1111 1111 1112'],
    ['card', '1234 5678 9012 3456'],
    ['card', 'too short 411111111111 and too long 41111111111111111111'],
    ['card', 'phone-like +4111111111111111'],
    ['phone', 'order 12345 of 2024-01-15, 01-02-2024 and 15.01.2024'],
    ['phone', 'ip 192.168.100.200 and 10.0.0.1, version 1.2.3'],
    ['phone', 'plain 5551234, 4155552671 and 0612345678'],
    ['phone', 'card 4111 1111 1111 1111 and 1234 5678 9012 3456'],
    ['phone', '+1 2024'],
    ['api_key', 'sk-short and skip-thisisnotakeyatallreally and AKIA123'],
    ['api_key', 'sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08'],
    ['api_key', 'pk_live_abcdefghijklmnop1234 is publishable'],
    ['jwt', 'eyJ alone, eyJhbGciOiJIUzI1NiJ9 with one part, notjwt.eyJ.x'],
  ]
  for (const [name, text] of negatives) {
    it(`${name} leaves ${JSON.stringify(text)} alone`, () => {
      const result = redact(text, [detector(name)])
      assert.equal(result.text, text)
      assert.deepEqual(result.counts, {})
    })
  }

  it('scans in a fixed order whatever order is asked, so keys and cards are not split by other kinds', () => {
    assert.deepEqual(
      builtinsInOrder(new Set(['phone', 'email', 'card', 'jwt', 'api_key'])).map((d) => d.name),
      ['jwt', 'api_key', 'email', 'card', 'phone'],
    )
    assert.deepEqual([...builtinDetectorNames].sort(), ['api_key', 'card', 'email', 'jwt', 'phone'])
    const all = builtinsInOrder(new Set(builtinDetectorNames))
    const result = redact(`mail a@b.io card 4111 1111 1111 1111 tel +44 20 7946 0958 token ${jwt}`, all)
    assert.equal(
      result.text,
      'mail [REDACTED:email] card [REDACTED:card] tel [REDACTED:phone] token [REDACTED:jwt]',
    )
    assert.deepEqual(result.counts, { email: 1, card: 1, phone: 1, jwt: 1 })
  })

  it('returns the same string when nothing is found', () => {
    const text = 'nothing to see here 123'
    assert.equal(redactText(text, builtinsInOrder(new Set(builtinDetectorNames)), {}), text)
  })

  it('scans a megabyte of adversarial text in linear time', () => {
    const all = builtinsInOrder(new Set(builtinDetectorNames))
    for (const text of [
      'a'.repeat(1 << 20),
      '1'.repeat(1 << 20),
      'eyJ'.repeat(350_000),
      '+1'.repeat(500_000),
      'x@'.repeat(500_000),
      '1 '.repeat(500_000),
      'sk-'.repeat(350_000),
      'ghp_'.repeat(260_000),
      '&api_key=a'.repeat(100_000),
      `${'a'.repeat(70)}@`.repeat(15_000),
      '0 12 '.repeat(200_000),
    ]) {
      const started = performance.now()
      redactText(text, all, {})
      // A hang detector, not a speed check: backtracking that is quadratic or worse takes many
      // minutes on a megabyte, linear scanning tens of milliseconds; the bound leaves a loaded CI
      // machine three orders of magnitude.
      assert.ok(performance.now() - started < 30_000, text.slice(0, 12))
    }
  })
})

describe('compileCustomDetectors', () => {
  it('compiles named patterns that redact in place', () => {
    const compiled = compileCustomDetectors({ employee_id: 'EMP-\\d{6}', ticket: 'TCK[A-Z]{3}' })
    assert.ok(compiled.ok)
    const result = redact('EMP-123456 opened TCKABC, EMP-12 did not', compiled.detectors)
    assert.equal(result.text, '[REDACTED:employee_id] opened [REDACTED:ticket], EMP-12 did not')
    assert.deepEqual(result.counts, { employee_id: 1, ticket: 1 })
  })

  it('refuses invalid regexes, unsafe ones, empty matches and bad or clashing names, each by path', () => {
    const compiled = compileCustomDetectors({
      ok_one: 'x\\d',
      broken: '(unclosed',
      slow: '(a+)+$',
      empty: 'a*',
      email: 'x',
      path: 'y',
      'Bad-Name': 'z',
      blank: '',
    })
    assert.ok(!compiled.ok)
    assert.deepEqual(
      compiled.problems.map((p) => p.path),
      [
        'patterns.broken',
        'patterns.slow',
        'patterns.empty',
        'patterns.email',
        'patterns.path',
        'patterns.Bad-Name',
        'patterns.blank',
      ],
    )
    const reasons = Object.fromEntries(compiled.problems.map((p) => [p.path, p.reason]))
    assert.match(reasons['patterns.broken'] ?? '', /Invalid regular expression/)
    assert.match(reasons['patterns.slow'] ?? '', /nested quantifier/)
    assert.match(reasons['patterns.empty'] ?? '', /empty string/)
    assert.match(reasons['patterns.email'] ?? '', /built-in/)
  })

  it('counts a custom name shadowing an Object.prototype member correctly', () => {
    const compiled = compileCustomDetectors({ constructor: 'C-\\d' })
    assert.ok(compiled.ok)
    assert.deepEqual(redact('C-1 C-2', compiled.detectors).counts, { constructor: 2 })
  })

  it('finds matches across window boundaries of a long string, each once', () => {
    const compiled = compileCustomDetectors({ id: 'ID-\\d{8}', digits: '\\d{20,}' })
    assert.ok(compiled.ok)
    const stride = customWindow - customOverlap
    // IDs straddling each window edge and each overlap start, plus a long digit run cut by a window.
    let text = ''
    const positions = [stride - 5, customWindow - 5, 2 * stride - 3, 2 * customWindow + 10]
    for (const at of positions) {
      text = text.padEnd(at, '.')
      text += 'ID-12345678'
    }
    text = text.padEnd(3 * stride - 100, ' ')
    text += '9'.repeat(900)
    text = text.padEnd(5 * customWindow, ' ')
    const result = redact(text, compiled.detectors)
    assert.deepEqual(result.counts, { id: positions.length, digits: 1 })
    assert.ok(!/\d/.test(result.text.replaceAll(/\[REDACTED:\w+\]/g, '')))
  })

  it('bounds the cost of a backtracking custom pattern on a long string', () => {
    const compiled = compileCustomDetectors({ slowish: '\\d+x' })
    assert.ok(compiled.ok)
    const started = performance.now()
    redactText('1'.repeat(200_000), compiled.detectors, {})
    assert.ok(performance.now() - started < 2_000)
  })
})
