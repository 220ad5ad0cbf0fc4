import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { maxRegexLength, regexSafetyProblem } from './regex-safety.ts'

describe('regexSafetyProblem', () => {
  const refused: [string, RegExp][] = [
    ['(a+)+$', /nested quantifier/],
    ['(a*)*b', /nested quantifier/],
    ['(?:\\d+-?)+', /nested quantifier/],
    ['(\\d?\\d?)+', /nested quantifier/],
    ['((ab)+c)*', /nested quantifier/],
    ['(?:x\\w+){2,}', /nested quantifier/],
    ['(?:\\d{3}-){2}', /nested quantifier/],
    ['(a|a)*', /repeated alternation/],
    ['(?:(a|b)c)+', /repeated alternation/],
    ['(?<word>a|ab)+', /repeated alternation/],
    ['(a)\\1', /backreferences/],
    ['(?<n>a)\\k<n>', /backreferences/],
    [`a${'b'.repeat(maxRegexLength)}`, /longer than/],
  ]
  for (const [source, reason] of refused) {
    it(`refuses ${source.length > 40 ? 'an over-long pattern' : source}`, () => {
      assert.match(regexSafetyProblem(source) ?? 'accepted', reason)
    })
  }

  const accepted = [
    'EMP-\\d{6}',
    '(?:abc)+',
    '(?:foo|bar)?x',
    '(?:-\\d+)?',
    '[(+*]+',
    '\\(a+\\)+',
    'a{2,}b{1,3}',
    '(?=x+)y',
    '(?<!\\w)id_[a-z0-9]{8}',
    '\\p{L}+\\u{1F600}',
    '[\\]+]+',
    'x{',
  ]
  for (const source of accepted) {
    it(`accepts ${source}`, () => {
      assert.equal(regexSafetyProblem(source), undefined)
    })
  }
})
