/**
 * Why a SharedState operation failed, as a stable code the caller narrows on. Every code means the
 * gateway cannot decide safely right now (a replay check it cannot make must not pass), so the
 * caller answers 503 rather than letting the request through.
 */
export type SharedStateErrorCode =
  /** The memory claim table is full of live entries; forgetting one would allow a replay. */
  | 'state_full'
  /** Redis did not answer: down, unreachable, or slower than the command timeout. */
  | 'state_unavailable'
  /** The state was closed; only a shutdown race reaches this. */
  | 'state_closed'

/** The one error SharedState implementations throw on purpose. */
export class SharedStateError extends Error {
  readonly code: SharedStateErrorCode

  constructor(code: SharedStateErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'SharedStateError'
    this.code = code
  }
}

/** Where a SharedState reports what it cannot throw to a caller; the gateway passes its logger. */
export type StateErrorReporter = (error: unknown, source: 'subscriber' | 'connection') => void
