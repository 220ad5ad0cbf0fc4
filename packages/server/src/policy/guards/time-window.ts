/**
 * `timeWindows` guards (DESIGN §7): a rule applies only inside one of its windows. A window is
 * wall-clock time in an IANA time zone (default UTC): `days` (`mon`…`sun`, or full names, any
 * case; all days when absent), `from` inclusive and `to` exclusive as `HH:MM` (`to` may be
 * `24:00`; a missing `from` is 00:00, a missing `to` the end of the day). `from` later than `to`
 * is an overnight window (22:00–06:00) belonging to the day it starts on: its early hours match
 * on the day after a listed day. Wall-clock semantics across DST: a window inside the skipped hour
 * never matches that day, one inside the repeated hour matches both times.
 */

/** One window as written in a policy. */
export interface TimeWindowSpec {
  readonly days?: readonly string[]
  readonly from?: string
  readonly to?: string
  readonly tz?: string
}

/** A refused window: its position in the list, the field (`from`, `days[2]`) and why. */
export interface TimeWindowProblem {
  readonly index: number
  readonly path: string
  readonly reason: string
}

/** A compiled list of windows; `matches` is true inside any of them. */
export interface TimeWindows {
  readonly ok: true
  matches(now: Date): boolean
  describe(): string
}

const dayNames = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const
const fullDayNames = ['sunday', 'monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday']
const hhmm = /^([01]\d|2[0-3]):([0-5]\d)$/
const endOfDay = 24 * 60

interface Window {
  /** Bit d set when the window may start on weekday d (0 = Sunday). */
  readonly days: number
  readonly from: number
  readonly to: number
  readonly clock: ZoneClock
  readonly text: string
}

/** Local weekday and minute of the day in one zone, recomputed at most once per UTC minute. */
interface ZoneClock {
  readonly zone: string
  readonly format: Intl.DateTimeFormat
  minute: number
  weekday: number
  minuteOfDay: number
}

// Formatting is the expensive step (~2 µs), so one formatter per zone serves every policy, and
// its last answer is kept: UTC offsets change only on whole minutes in current tz data.
const clocks = new Map<string, ZoneClock>()

function zoneClock(zone: string): ZoneClock | undefined {
  const cached = clocks.get(zone)
  if (cached !== undefined) return cached
  let format: Intl.DateTimeFormat
  try {
    format = new Intl.DateTimeFormat('en-US', {
      timeZone: zone,
      hourCycle: 'h23',
      weekday: 'short',
      hour: '2-digit',
      minute: '2-digit',
    })
  } catch {
    return undefined
  }
  // Keyed by the canonical name only, so spellings of one zone (`europe/paris`) share a clock
  // and the cache stays as small as the tz database.
  const canonical = format.resolvedOptions().timeZone
  let clock = clocks.get(canonical)
  if (clock === undefined) {
    clock = { zone: canonical, format, minute: Number.NaN, weekday: 0, minuteOfDay: 0 }
    clocks.set(canonical, clock)
  }
  return clock
}

const shortDays: Record<string, number> = { Sun: 0, Mon: 1, Tue: 2, Wed: 3, Thu: 4, Fri: 5, Sat: 6 }

/** Bring `clock` to the minute of `ms`; false for an invalid date. */
function tick(clock: ZoneClock, ms: number): boolean {
  const minute = Math.floor(ms / 60_000)
  if (minute === clock.minute) return true
  if (!Number.isFinite(minute)) return false
  let weekday = -1
  let hour = -1
  let min = -1
  for (const part of clock.format.formatToParts(ms)) {
    if (part.type === 'weekday') weekday = shortDays[part.value] ?? -1
    else if (part.type === 'hour') hour = Number(part.value)
    else if (part.type === 'minute') min = Number(part.value)
  }
  if (weekday < 0 || hour < 0 || min < 0) return false
  clock.weekday = weekday
  clock.minuteOfDay = hour * 60 + min
  clock.minute = minute
  return true
}

function matchesWindow(window: Window, ms: number): boolean {
  const { clock } = window
  if (!tick(clock, ms)) return false
  const { weekday, minuteOfDay } = clock
  if (window.from < window.to) {
    return (window.days & (1 << weekday)) !== 0 && minuteOfDay >= window.from && minuteOfDay < window.to
  }
  // Overnight: the evening part starts today, the morning part started yesterday.
  if (minuteOfDay >= window.from) return (window.days & (1 << weekday)) !== 0
  return minuteOfDay < window.to && (window.days & (1 << ((weekday + 6) % 7))) !== 0
}

function parseMinute(text: unknown, allowEndOfDay: boolean): number | undefined {
  if (typeof text !== 'string') return undefined
  if (allowEndOfDay && text === '24:00') return endOfDay
  const m = hhmm.exec(text)
  return m === null ? undefined : Number(m[1]) * 60 + Number(m[2])
}

function parseDay(text: unknown): number | undefined {
  if (typeof text !== 'string') return undefined
  const lower = text.toLowerCase()
  const day = Math.max((dayNames as readonly string[]).indexOf(lower), fullDayNames.indexOf(lower))
  return day < 0 ? undefined : day
}

function formatMinute(minute: number): string {
  return `${String(Math.floor(minute / 60)).padStart(2, '0')}:${String(minute % 60).padStart(2, '0')}`
}

function describeDays(days: number): string {
  if (days === 0b1111111) return 'every day'
  return dayNames
    .map((name, d) => ((days & (1 << d)) !== 0 ? name : undefined))
    .filter((name) => name !== undefined)
    .join(',')
}

/** Validate and compile `windows`; problems name each refused field. */
export function compileTimeWindows(
  windows: readonly TimeWindowSpec[],
): TimeWindows | { ok: false; problems: TimeWindowProblem[] } {
  const problems: TimeWindowProblem[] = []
  if (!Array.isArray(windows) || windows.length === 0) {
    return { ok: false, problems: [{ index: 0, path: '', reason: 'expected a non-empty list of windows' }] }
  }
  const compiled: Window[] = []
  windows.forEach((spec, index) => {
    const problem = (path: string, reason: string) => problems.push({ index, path, reason })
    if (typeof spec !== 'object' || spec === null) {
      problem('', 'expected an object with days, from, to and tz')
      return
    }
    const before = problems.length
    let days = 0b1111111
    const dayList: unknown = spec.days
    if (dayList !== undefined) {
      if (!Array.isArray(dayList) || dayList.length === 0) {
        problem('days', 'expected a non-empty list of days (mon, tue, wed, thu, fri, sat, sun)')
      } else {
        days = 0
        dayList.forEach((text: unknown, i: number) => {
          const day = parseDay(text)
          if (day === undefined)
            problem(`days[${i}]`, `expected mon, tue, wed, thu, fri, sat or sun, got ${quote(text)}`)
          else days |= 1 << day
        })
      }
    }
    const from = spec.from === undefined ? 0 : parseMinute(spec.from, false)
    if (from === undefined) problem('from', `expected HH:MM from 00:00 to 23:59, got ${quote(spec.from)}`)
    const to = spec.to === undefined ? endOfDay : parseMinute(spec.to, true)
    if (to === undefined) problem('to', `expected HH:MM from 00:00 to 24:00, got ${quote(spec.to)}`)
    if (from !== undefined && to !== undefined && from === to) {
      problem('to', 'from and to are equal; omit both for the whole day')
    }
    const tz: unknown = spec.tz ?? 'UTC'
    const clock = typeof tz === 'string' && tz !== '' ? zoneClock(tz) : undefined
    if (clock === undefined) {
      problem('tz', `unknown time zone ${quote(spec.tz)}; expected an IANA name such as Europe/Paris`)
    }
    if (problems.length > before || from === undefined || to === undefined || clock === undefined) return
    const span =
      spec.from === undefined && spec.to === undefined
        ? 'all day'
        : `${formatMinute(from)}-${formatMinute(to)}`
    compiled.push({ days, from, to, clock, text: `${describeDays(days)} ${span} ${clock.zone}` })
  })
  if (problems.length > 0) return { ok: false, problems }
  const text = compiled.map((window) => window.text).join('; ')
  return {
    ok: true,
    matches(now) {
      const ms = now.getTime()
      for (const window of compiled) if (matchesWindow(window, ms)) return true
      return false
    },
    describe: () => text,
  }
}

function quote(value: unknown): string {
  const text = typeof value === 'string' ? value : String(value)
  return JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text)
}
