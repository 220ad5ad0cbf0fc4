/**
 * One upstream call through the resilience stages in the order DESIGN §4 names them:
 * bulkhead → circuit breaker → retry → timeout → upstream. Used by the tool client and the
 * channel proxy alike; each supplies `attempt`, one try at the upstream, and says what came back.
 *
 * The breaker sees every try (a retry into an open breaker is not made), the budget pays for
 * every retry, and the bulkhead slot is held from the first try to the end of the last answer.
 */
import { GatewayError } from '../errors/gateway-error.ts'
import type { Target } from './registry.ts'
import { type AbortSource, nextDelayMs, sleep } from './retry.ts'

/** What one try produced. */
export type Outcome<T> =
  | {
      kind: 'answer'
      value: T
      status: number
      retryAfter?: string | string[] | undefined
      /** Frees an answer that will not be used (a retry follows): drain or cut its body. */
      discard?: () => void
    }
  | { kind: 'error'; error: unknown }

export interface GuardOptions {
  /** Safe to repeat: retried on failures and listed statuses. Else only when nothing was sent. */
  idempotent: boolean
  /** The client going away (or the total deadline): stops waiting and retrying. */
  abort?: AbortSource | undefined
  /** True when `abort` fired for the total deadline, whose timeout counts against the breaker. */
  expired?: () => boolean
  now: () => number
  random: () => number
  onRetry?: () => void
}

export interface Guarded<T> {
  value: T
  /** Tries made, the first included. */
  attempts: number
  /** Give the bulkhead slot back; call once, when the answer has been fully relayed. */
  release(): void
}

/** Socket failures after which the request may have reached the upstream. */
const networkCodes = new Set([
  'ECONNRESET',
  'EPIPE',
  'ECONNABORTED',
  'ETIMEDOUT',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
])
/** Failures before a connection existed: the request was never sent, so any call may be retried. */
const neverSentCodes = new Set([
  'ECONNREFUSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
])

function causeCode(err: unknown): string | undefined {
  let at: unknown = err
  // The gateway error wraps undici's, which may wrap the socket's.
  for (let depth = 0; depth < 4 && at !== undefined && at !== null; depth++) {
    const code = (at as { code?: unknown }).code
    if (typeof code === 'string' && (networkCodes.has(code) || neverSentCodes.has(code))) return code
    at = (at as { cause?: unknown }).cause
  }
  return undefined
}

/** Whether an error counts against the breaker: network errors and timeouts (DESIGN §18). */
export function isUpstreamFailure(err: unknown): boolean {
  return err instanceof GatewayError && (err.code === 'upstream_error' || err.code === 'upstream_timeout')
}

/** Whether the request surely never reached the upstream (no connection was made). */
export function neverSent(err: unknown): boolean {
  const code = causeCode(err)
  return code !== undefined && neverSentCodes.has(code)
}

function retryableError(err: unknown, idempotent: boolean): boolean {
  if (err instanceof GatewayError && err.details?.['timeout'] === 'total') return false
  const code = causeCode(err)
  if (code === undefined) return false
  return idempotent || neverSentCodes.has(code)
}

/** The `circuit_open` refusal, with how long the breaker stays open. */
function circuitOpen(target: Target, retryAfterMs: number): GatewayError {
  const seconds = Math.max(1, Math.ceil(retryAfterMs / 1000))
  return new GatewayError('circuit_open', undefined, {
    details: { [target.kind]: target.name, retryAfterSeconds: seconds },
    headers: { 'retry-after': String(seconds) },
  })
}

const clientGone = (): Error => new GatewayError('upstream_error', 'The client went away before a retry.')

/** Run `attempt` under `target`'s bulkhead, breaker and retry policy. */
export async function guard<T>(
  target: Target,
  options: GuardOptions,
  attempt: (n: number) => Promise<Outcome<T>>,
): Promise<Guarded<T>> {
  const { bulkhead, breaker, budget } = target
  const retry = target.policy.retry
  if (bulkhead !== undefined) {
    const slot = bulkhead.acquire()
    if (slot !== true) await slot
  }
  let released = false
  const release = (): void => {
    if (released) return
    released = true
    bulkhead?.release()
  }
  try {
    for (let n = 1; ; n++) {
      const admission = breaker?.acquire()
      if (admission !== undefined && !admission.ok) throw circuitOpen(target, admission.retryAfterMs)
      const probe = admission?.probe ?? false
      if (n === 1) budget?.deposit()
      let outcome: Outcome<T>
      try {
        outcome = await attempt(n)
      } catch (error) {
        outcome = { kind: 'error', error }
      }
      const gone = options.abort?.aborted === true && options.expired?.() !== true
      if (breaker !== undefined) {
        // A client that left says nothing about the upstream.
        if (gone) breaker.release(probe)
        else if (outcome.kind === 'answer' ? outcome.status >= 500 : isUpstreamFailure(outcome.error))
          breaker.failure(probe)
        else breaker.success(probe)
      }
      const worthRetry =
        retry !== undefined &&
        !gone &&
        n <= retry.attempts &&
        (outcome.kind === 'answer'
          ? options.idempotent && retry.on.has(outcome.status)
          : retryableError(outcome.error, options.idempotent))
      const delay = worthRetry
        ? nextDelayMs(
            retry,
            n,
            outcome.kind === 'answer' ? outcome.retryAfter : undefined,
            options.random,
            options.now(),
          )
        : undefined
      // The breaker may have opened on this very failure: the next try would be refused anyway.
      const admitted = breaker === undefined || breaker.state !== 'open'
      if (delay === undefined || !admitted || budget?.withdraw() !== true) {
        if (outcome.kind === 'error') throw outcome.error
        return { value: outcome.value, attempts: n, release }
      }
      if (outcome.kind === 'answer') outcome.discard?.()
      options.onRetry?.()
      await sleep(delay, options.abort, clientGone)
    }
  } catch (err) {
    release()
    throw err
  }
}
