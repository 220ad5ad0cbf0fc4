/**
 * The tools' upstream client with resilience around it (DESIGN §10): the same `UpstreamClient`
 * interface, wrapping the inner client (tools/upstream-client.ts) without knowing how it sends.
 * `forCall` gives one tool call its own view, which knows whether the action is safe to repeat
 * and counts the tries that `metadata.attempts` reports.
 */
import { GatewayError } from '../errors/gateway-error.ts'
import type { UpstreamAnswer, UpstreamStream } from '../tools/types.ts'
import type { UpstreamClient } from '../tools/upstream-client.ts'
import { guard, type Outcome } from './guard.ts'
import type { ResiliencePolicy } from './policy.ts'
import type { Resilience, Target } from './registry.ts'
import type { AbortSource } from './retry.ts'

/** What one tool call says about itself. */
export interface CallTarget {
  tool: string
  /** The action's declaration (tools/types.ts): retries on failures only when true. */
  idempotent: boolean
  policy: ResiliencePolicy
}

/** The client as one tool call sees it, with the tries of its last upstream request (1 before any). */
export type CallClient = Pick<UpstreamClient, 'call' | 'open'> & { readonly attempts: number }

export interface ResilientClient extends UpstreamClient {
  forCall(target: CallTarget): CallClient
}

type CallAbort = Parameters<UpstreamClient['call']>[2]

/**
 * The caller's abort, plus an `upstream_timeout` once `totalMs` has passed. `stop` ends the
 * deadline (a stream's head arrived) and keeps following the caller.
 */
class Deadline implements AbortSource {
  #aborted = false
  #expired = false
  #listeners: Array<() => void> = []
  #controller: AbortController | undefined
  readonly #timer: NodeJS.Timeout
  readonly #unfollow: () => void

  constructor(parent: CallAbort, totalMs: number) {
    this.#timer = setTimeout(() => {
      this.#expired = true
      this.#fire()
    }, totalMs)
    this.#unfollow = parent.onAbort(() => this.#fire())
  }

  get aborted(): boolean {
    return this.#aborted
  }

  get expired(): boolean {
    return this.#expired
  }

  onAbort(fn: () => void): () => void {
    if (this.#aborted) {
      fn()
      return () => {}
    }
    this.#listeners.push(fn)
    return () => {
      const at = this.#listeners.indexOf(fn)
      if (at >= 0) this.#listeners.splice(at, 1)
    }
  }

  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController()
      if (this.#aborted) this.#controller.abort()
    }
    return this.#controller.signal
  }

  stop(): void {
    clearTimeout(this.#timer)
  }

  /** Stop the deadline and forget the caller (the call is over). */
  end(): void {
    clearTimeout(this.#timer)
    this.#unfollow()
  }

  #fire(): void {
    if (this.#aborted) return
    this.#aborted = true
    const listeners = this.#listeners
    this.#listeners = []
    for (const fn of listeners) fn()
    this.#controller?.abort()
  }
}

function totalTimeout(totalMs: number, cause: unknown): GatewayError {
  return new GatewayError('upstream_timeout', undefined, {
    details: { timeout: 'total', timeoutMs: totalMs },
    cause,
  })
}

/** Release `release` once the body ends, fails or is abandoned. */
function releasingBody(body: AsyncIterable<Uint8Array>, release: () => void): AsyncIterable<Uint8Array> {
  return {
    [Symbol.asyncIterator]() {
      const inner = body[Symbol.asyncIterator]()
      return {
        async next() {
          try {
            const step = await inner.next()
            if (step.done === true) release()
            return step
          } catch (err) {
            release()
            throw err
          }
        },
        async return() {
          release()
          return (await inner.return?.()) ?? { done: true, value: undefined }
        },
      }
    },
  }
}

/** Wrap `inner` with the resilience of `resilience`'s targets. */
export function createResilientClient(inner: UpstreamClient, resilience: Resilience): ResilientClient {
  function run<T>(
    target: Target,
    idempotent: boolean,
    abort: CallAbort,
    counted: (n: number) => void,
    attempt: () => Promise<Outcome<T>>,
  ) {
    return guard<T>(
      target,
      {
        idempotent,
        abort,
        expired: () => abort instanceof Deadline && abort.expired,
        now: resilience.now,
        random: resilience.random,
        onRetry: () => resilience.onRetry(target.kind, target.name),
      },
      (n) => {
        counted(n)
        return attempt()
      },
    )
  }

  // Tools without resilience settings call the inner client as they are: no object per call.
  const direct: CallClient = {
    attempts: 1,
    call: (settings, request, abort, trace) => inner.call(settings, request, abort, trace),
    open: (settings, request, abort, trace) => inner.open(settings, request, abort, trace),
  }

  function forCall(call: CallTarget): CallClient {
    if (call.policy.signature === '') return direct
    const target = resilience.target('tool', call.tool, call.policy)
    const totalMs = call.policy.totalTimeoutMs
    let attempts = 1
    const counted = (n: number): void => {
      attempts = n
    }
    // Without a total timeout the caller's abort is used as it is: no object per call.
    const limitOf = (abort: CallAbort): { abort: CallAbort; deadline: Deadline | undefined } => {
      if (totalMs === undefined) return { abort, deadline: undefined }
      const deadline = new Deadline(abort, totalMs)
      return { abort: deadline, deadline }
    }
    const rethrow = (deadline: Deadline | undefined, err: unknown): never => {
      throw deadline?.expired === true ? totalTimeout(totalMs!, err) : err
    }
    return {
      get attempts() {
        return attempts
      },
      async call(settings, request, callerAbort, trace) {
        const { abort, deadline } = limitOf(callerAbort)
        try {
          const done = await run<UpstreamAnswer>(target, call.idempotent, abort, counted, async () => {
            const answer = await inner.call(settings, request, abort, trace)
            return {
              kind: 'answer',
              value: answer,
              status: answer.status,
              retryAfter: answer.headers['retry-after'],
            }
          })
          done.release()
          return done.value
        } catch (err) {
          return rethrow(deadline, err)
        } finally {
          deadline?.end()
        }
      },
      async open(settings, request, callerAbort, trace) {
        // The deadline covers the wait for the answer's head; a stream then runs on the body timeout.
        const { abort, deadline } = limitOf(callerAbort)
        try {
          const done = await run<UpstreamStream>(target, call.idempotent, abort, counted, async () => {
            const stream = await inner.open(settings, request, abort, trace)
            return {
              kind: 'answer',
              value: stream,
              status: stream.status,
              retryAfter: stream.headers['retry-after'],
              discard: () => void stream.body[Symbol.asyncIterator]().return?.(),
            }
          })
          return { ...done.value, body: releasingBody(done.value.body, done.release) }
        } catch (err) {
          return rethrow(deadline, err)
        } finally {
          deadline?.stop()
        }
      },
    }
  }

  return {
    forCall,
    call: (settings, request, abort, trace) => inner.call(settings, request, abort, trace),
    open: (settings, request, abort, trace) => inner.open(settings, request, abort, trace),
    close: () => inner.close(),
  }
}
