import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { durationMs } from './duration.ts'

describe('durationMs', () => {
  it('reads an integer as milliseconds', () => assert.equal(durationMs(1500), 1500))
  it('reads each unit suffix', () => {
    assert.equal(durationMs('500ms'), 500)
    assert.equal(durationMs('4s'), 4_000)
    assert.equal(durationMs('15m'), 900_000)
    assert.equal(durationMs('1h'), 3_600_000)
    assert.equal(durationMs('7d'), 604_800_000)
  })
  it('refuses a string without a known unit', () => {
    assert.throws(() => durationMs('5 minutes'), RangeError)
    assert.throws(() => durationMs('1.5s'), RangeError)
  })
})
