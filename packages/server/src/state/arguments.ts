/**
 * Argument checks both SharedState implementations make the same way: a bad argument is a caller
 * bug (RangeError), never something to round or clamp into a different answer.
 */

/** A ttl or window length in milliseconds: a positive finite number. */
export function checkDuration(ms: number, name: string): number {
  if (!(ms > 0) || !Number.isFinite(ms)) throw new RangeError(`${name} must be > 0, got ${ms}`)
  return ms
}

/** A quota limit, cost or amount: a non-negative safe integer (Redis counts in integers). */
export function checkCount(value: number, name: string): number {
  if (!Number.isSafeInteger(value) || value < 0)
    throw new RangeError(`${name} must be a non-negative integer, got ${value}`)
  return value
}
