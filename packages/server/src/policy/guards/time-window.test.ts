import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { compileTimeWindows, type TimeWindowSpec, type TimeWindows } from './time-window.ts'

function compiled(windows: TimeWindowSpec[]): TimeWindows {
  const result = compileTimeWindows(windows)
  if (!result.ok) assert.fail(`refused: ${JSON.stringify(result.problems)}`)
  return result
}

function problems(windows: unknown) {
  const result = compileTimeWindows(windows as TimeWindowSpec[])
  if (result.ok) assert.fail(`accepted ${JSON.stringify(windows)}`)
  return result.problems
}

/** Minutes in [fromIso, toIso) at which the windows match. */
function matchingMinutes(windows: TimeWindows, fromIso: string, toIso: string): number {
  let n = 0
  for (let t = Date.parse(fromIso); t < Date.parse(toIso); t += 60_000) if (windows.matches(new Date(t))) n++
  return n
}

describe('compileTimeWindows', () => {
  it('matches office hours in UTC by default, from inclusive and to exclusive', () => {
    const office = compiled([{ days: ['mon', 'tue', 'wed', 'thu', 'fri'], from: '09:00', to: '17:00' }])
    const cases: [string, boolean][] = [
      ['2024-01-15T09:00:00Z', true],
      ['2024-01-15T08:59:59Z', false],
      ['2024-01-15T16:59:59Z', true],
      ['2024-01-15T17:00:00Z', false],
      ['2024-01-19T12:00:00Z', true],
      ['2024-01-20T12:00:00Z', false],
      ['2024-01-21T12:00:00Z', false],
    ]
    for (const [iso, expected] of cases) assert.equal(office.matches(new Date(iso)), expected, iso)
  })

  it('reads the wall clock of the window time zone, in winter and in summer', () => {
    const paris = compiled([{ from: '09:00', to: '17:00', tz: 'Europe/Paris' }])
    const cases: [string, boolean][] = [
      ['2024-01-15T08:00:00Z', true],
      ['2024-01-15T07:59:00Z', false],
      ['2024-01-15T15:59:00Z', true],
      ['2024-01-15T16:00:00Z', false],
      ['2024-07-15T07:00:00Z', true],
      ['2024-07-15T06:59:00Z', false],
      ['2024-07-15T14:59:00Z', true],
      ['2024-07-15T15:00:00Z', false],
    ]
    for (const [iso, expected] of cases) assert.equal(paris.matches(new Date(iso)), expected, iso)
  })

  it('follows New York across the spring change of offset on working days', () => {
    const ny = compiled([
      { days: ['mon', 'tue', 'wed', 'thu', 'fri'], from: '09:00', to: '17:00', tz: 'America/New_York' },
    ])
    assert.equal(ny.matches(new Date('2024-03-08T14:00:00Z')), true) // Fri 09:00 EST
    assert.equal(ny.matches(new Date('2024-03-08T13:59:00Z')), false)
    assert.equal(ny.matches(new Date('2024-03-11T13:00:00Z')), true) // Mon 09:00 EDT
    assert.equal(ny.matches(new Date('2024-03-11T12:59:00Z')), false)
    assert.equal(ny.matches(new Date('2024-03-10T15:00:00Z')), false) // Sunday
  })

  it('never matches a window inside the hour skipped when clocks go forward', () => {
    const skipped = compiled([{ from: '02:00', to: '03:00', tz: 'Europe/Paris' }])
    assert.equal(matchingMinutes(skipped, '2024-03-30T23:00:00Z', '2024-03-31T22:00:00Z'), 0)
    assert.equal(skipped.matches(new Date('2024-04-07T00:30:00Z')), true)
    const night = compiled([{ from: '01:00', to: '04:00', tz: 'Europe/Paris' }])
    assert.equal(matchingMinutes(night, '2024-03-30T23:00:00Z', '2024-03-31T22:00:00Z'), 120)
  })

  it('matches both passes of the hour repeated when clocks go back', () => {
    const paris = compiled([{ from: '02:00', to: '03:00', tz: 'Europe/Paris' }])
    assert.equal(matchingMinutes(paris, '2024-10-26T22:00:00Z', '2024-10-27T23:00:00Z'), 120)
    const ny = compiled([{ from: '01:00', to: '02:00', tz: 'America/New_York' }])
    assert.equal(matchingMinutes(ny, '2024-11-03T04:00:00Z', '2024-11-04T05:00:00Z'), 120)
  })

  it('treats from later than to as an overnight window owned by the day it starts', () => {
    const fridayNight = compiled([{ days: ['fri'], from: '22:00', to: '06:00' }])
    const cases: [string, boolean][] = [
      ['2024-01-19T21:59:00Z', false],
      ['2024-01-19T22:00:00Z', true],
      ['2024-01-19T23:59:00Z', true],
      ['2024-01-20T00:00:00Z', true],
      ['2024-01-20T05:59:00Z', true],
      ['2024-01-20T06:00:00Z', false],
      ['2024-01-20T22:30:00Z', false],
      ['2024-01-19T05:00:00Z', false],
    ]
    for (const [iso, expected] of cases) assert.equal(fridayNight.matches(new Date(iso)), expected, iso)
  })

  it('counts real minutes of an overnight window spanning the autumn change', () => {
    // Saturday 22:00 EDT to Sunday 06:00 EST is nine real hours.
    const night = compiled([{ days: ['sat'], from: '22:00', to: '06:00', tz: 'America/New_York' }])
    assert.equal(matchingMinutes(night, '2024-11-02T12:00:00Z', '2024-11-04T12:00:00Z'), 540)
  })

  it('matches when any window of the list matches', () => {
    const windows = compiled([
      { days: ['sat'], from: '10:00', to: '12:00' },
      { days: ['mon'], from: '08:00', to: '09:00', tz: 'Asia/Tokyo' },
    ])
    assert.equal(windows.matches(new Date('2024-01-20T11:00:00Z')), true)
    assert.equal(windows.matches(new Date('2024-01-14T23:30:00Z')), true) // Mon 08:30 in Tokyo
    assert.equal(windows.matches(new Date('2024-01-15T08:30:00Z')), false)
  })

  it('accepts full day names in any case, 24:00 as the end of the day, and open-ended windows', () => {
    const windows = compiled([{ days: ['Monday', 'TUE'], from: '22:00', to: '24:00' }])
    assert.equal(windows.matches(new Date('2024-01-16T23:59:00Z')), true)
    assert.equal(windows.matches(new Date('2024-01-17T23:59:00Z')), false)
    const afternoon = compiled([{ from: '12:00' }])
    assert.equal(afternoon.matches(new Date('2024-01-17T23:59:00Z')), true)
    assert.equal(afternoon.matches(new Date('2024-01-17T11:59:00Z')), false)
    const morning = compiled([{ to: '12:00' }])
    assert.equal(morning.matches(new Date('2024-01-17T00:00:00Z')), true)
    assert.equal(morning.matches(new Date('2024-01-17T12:00:00Z')), false)
  })

  it('does not match an invalid date', () => {
    assert.equal(compiled([{}]).matches(new Date(Number.NaN)), false)
  })

  it('describes the windows with canonical zone names', () => {
    const windows = compiled([
      { days: ['mon', 'tue', 'wed', 'thu', 'fri'], from: '09:00', to: '17:00', tz: 'europe/paris' },
      {},
    ])
    assert.equal(windows.describe(), 'mon,tue,wed,thu,fri 09:00-17:00 Europe/Paris; every day all day UTC')
  })

  it('refuses an unknown time zone with its index and path', () => {
    assert.deepEqual(problems([{}, { tz: 'Mars/Olympus' }]), [
      {
        index: 1,
        path: 'tz',
        reason: 'unknown time zone "Mars/Olympus"; expected an IANA name such as Europe/Paris',
      },
    ])
    assert.equal(problems([{ tz: '' }])[0]?.path, 'tz')
    assert.equal(problems([{ tz: 5 }])[0]?.path, 'tz')
  })

  it('refuses times that are not HH:MM', () => {
    for (const bad of ['9:00', '24:00', '12:60', 'noon', '12:00:00', 900]) {
      const found = problems([{ from: bad, to: '23:00' }])
      assert.equal(found.length, 1, String(bad))
      assert.equal(found[0]?.path, 'from')
      assert.match(found[0]?.reason ?? '', /expected HH:MM/)
    }
    assert.equal(problems([{ from: '08:00', to: '24:01' }])[0]?.path, 'to')
  })

  it('refuses equal from and to, unknown or empty days, and an empty list', () => {
    assert.match(problems([{ from: '08:00', to: '08:00' }])[0]?.reason ?? '', /equal/)
    assert.deepEqual(
      problems([{ days: ['mon', 'funday'] }]).map((p) => p.path),
      ['days[1]'],
    )
    assert.equal(problems([{ days: [] }])[0]?.path, 'days')
    assert.equal(problems([]).length, 1)
    assert.equal(problems([null])[0]?.index, 0)
  })

  it('reports every problem of every window at once', () => {
    const found = problems([{ from: 'x', tz: 'Nope/Zone' }, { days: ['x'] }])
    assert.deepEqual(
      found.map((p) => `${p.index}:${p.path}`),
      ['0:from', '0:tz', '1:days[0]'],
    )
  })
})
