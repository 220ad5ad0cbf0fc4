/**
 * Channel requests through the resilience stages (DESIGN §4 stage 7): bulkhead → breaker →
 * retry → timeout → the streaming proxy (upstreams/http-proxy.ts). Bodies stream, so only
 * requests without one are retried: an idempotent method (RFC 9110 §9.2.2) on a network failure,
 * a timeout or a listed status, and any method when the connection could not be made. A
 * retryable answer is held back before its head is written, then either dropped for the retry or
 * passed on as it came when no retry follows.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Dispatcher } from 'undici'
import type { CompiledChannel } from '../config/compile.ts'
import { GatewayError, toGatewayError } from '../errors/gateway-error.ts'
import type { RequestContext } from '../http/context.ts'
import { forwardRequest, type HeldAnswer, type ProxyResult } from '../upstreams/http-proxy.ts'
import { guard, type Outcome } from './guard.ts'
import type { IdempotencyService } from './idempotency.ts'
import { forwardIdempotent, wantsIdempotency } from './idempotent-channel.ts'
import type { Resilience } from './registry.ts'
import type { AbortSource } from './retry.ts'

/** Methods whose repetition changes nothing more than the first request did (RFC 9110 §9.2.2). */
const idempotentMethods = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE'])

export type ForwardFn = (
  req: IncomingMessage,
  res: ServerResponse,
  ctx: RequestContext,
  channel: CompiledChannel,
  path: string,
  dispatcher: Dispatcher,
  done: (result: ProxyResult) => void,
) => void

function bodiless(req: IncomingMessage): boolean {
  const length = req.headers['content-length']
  if (length !== undefined) return length === '0'
  return req.headers['transfer-encoding'] === undefined
}

/** The client leaving (the response closing before it finished) as an abort source. */
function clientLeaving(res: ServerResponse): AbortSource & { expire(): void; readonly expired: boolean } {
  let aborted = false
  let expired = false
  const listeners: Array<() => void> = []
  const fire = (): void => {
    if (aborted) return
    aborted = true
    for (const fn of listeners.splice(0)) fn()
  }
  res.once('close', () => {
    if (!res.writableFinished) fire()
  })
  return {
    get aborted() {
      return aborted
    },
    get expired() {
      return expired
    },
    expire() {
      expired = true
      fire()
    },
    onAbort(fn) {
      if (aborted) {
        fn()
        return () => {}
      }
      listeners.push(fn)
      return () => {
        const at = listeners.indexOf(fn)
        if (at >= 0) listeners.splice(at, 1)
      }
    },
  }
}

type Attempt = { result: ProxyResult } | { held: HeldAnswer }

/**
 * Build the channel call: `forwardRequest`'s signature, with the system's resilience around it,
 * and POSTs with an `Idempotency-Key` executed once when `idempotency` is given.
 */
export function createChannelCall(resilience: Resilience, idempotency?: IdempotencyService): ForwardFn {
  return function call(req, res, ctx, channel, path, dispatcher, done) {
    if (idempotency !== undefined && wantsIdempotency(req, ctx)) {
      forwardIdempotent(resilience, idempotency, req, res, ctx, channel, path, dispatcher, done)
      return
    }
    const policy = channel.system.resilience
    // No resilience configured: the proxy as it is, nothing allocated.
    if (policy.signature === '') {
      forwardRequest(req, res, ctx, channel, path, dispatcher, done)
      return
    }
    const target = resilience.target('system', channel.system.name, policy)
    const retry = policy.retry
    const idempotent = idempotentMethods.has(ctx.method)
    const retriesAllowed = retry !== undefined && bodiless(req)
    const leaving = clientLeaving(res)
    let abortCurrent: ((error: GatewayError) => void) | undefined
    let last: ProxyResult | undefined
    let heldDelivered = false
    let settled = false
    let release = (): void => {}
    const settle = (result: ProxyResult): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      release()
      done(result)
    }

    const totalMs = policy.totalTimeoutMs
    const timer =
      totalMs === undefined
        ? undefined
        : setTimeout(() => {
            const error = new GatewayError('upstream_timeout', undefined, {
              details: { timeout: 'total', timeoutMs: totalMs },
            })
            leaving.expire()
            if (abortCurrent !== undefined) abortCurrent(error)
            else settle({ status: error.status, upstreamMs: last?.upstreamMs, error })
          }, totalMs)

    const attempt = (n: number): Promise<Outcome<Attempt>> =>
      new Promise((resolve) => {
        let held = false
        abortCurrent = forwardRequest(
          req,
          res,
          ctx,
          channel,
          path,
          dispatcher,
          (result) => {
            last = result
            if (held) {
              // A held answer passed on has now ended.
              if (heldDelivered) settle(result)
              return
            }
            if (result.error === undefined) {
              resolve({ kind: 'answer', value: { result }, status: result.status })
              return
            }
            // After the head went out nothing can be retried: an error without a network cause.
            const error = res.headersSent
              ? new GatewayError('upstream_error', undefined, { cause: result.error })
              : result.error
            resolve({ kind: 'error', error })
          },
          retriesAllowed
            ? {
                hold: (status) => idempotent && n <= retry.attempts && retry.on.has(status),
                onHold(answer) {
                  held = true
                  resolve({
                    kind: 'answer',
                    value: { held: answer },
                    status: answer.status,
                    retryAfter: answer.retryAfter,
                    discard: () => answer.discard(),
                  })
                },
              }
            : undefined,
        )
      })

    guard<Attempt>(
      target,
      {
        idempotent: idempotent && retriesAllowed,
        abort: leaving,
        expired: () => leaving.expired,
        now: resilience.now,
        random: resilience.random,
        onRetry: () => resilience.onRetry('system', channel.system.name),
      },
      attempt,
    ).then(
      (outcome) => {
        release = outcome.release
        if ('held' in outcome.value) {
          heldDelivered = true
          outcome.value.held.deliver()
          return
        }
        settle(outcome.value.result)
      },
      (err: unknown) => {
        const error = leaving.expired
          ? new GatewayError('upstream_timeout', undefined, {
              details: { timeout: 'total', timeoutMs: totalMs },
              cause: err,
            })
          : toGatewayError(err)
        // A result the proxy already finished (the client left): pass it on as it is.
        if (last !== undefined && last.error === undefined && last.status === 499) settle(last)
        else settle({ status: error.status, upstreamMs: last?.upstreamMs, error })
      },
    )
  }
}
