import type { RawDuration } from './schema.ts'

const unitMs = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const

/** Convert a config duration (DESIGN §18: integer ms or `500ms`/`4s`/`15m`/`1h`/`7d`) to milliseconds. */
export function durationMs(value: RawDuration): number {
  if (typeof value === 'number') return value
  const match = /^([0-9]+)(ms|s|m|h|d)$/.exec(value)
  if (match === null) throw new RangeError(`not a duration: ${value}`)
  return Number(match[1]) * unitMs[match[2] as keyof typeof unitMs]
}
