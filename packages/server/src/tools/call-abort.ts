/**
 * How a tool call learns that its caller went away. An AbortController per call costs several
 * microseconds on Node 20 (EventTarget set-up, listeners added and removed by undici), paid by every
 * call although nearly none is ever aborted; this is a plain callback list instead, with a real
 * AbortSignal made only for the APIs that insist on one (fetch, streamed requests).
 */
import type { Socket } from 'node:net'

export interface CallAbort {
  readonly aborted: boolean
  /** Run `fn` once when the call is aborted (at once when it already is); returns an unsubscribe. */
  onAbort(fn: () => void): () => void
  /** An AbortSignal that follows this abort; made on first use. */
  readonly signal: AbortSignal
}

const nothing = (): void => {}

/** Aborted when `socket` closes, until `dispose` stops listening. */
export class ClientGone implements CallAbort {
  #aborted: boolean
  #listeners: (() => void)[] | undefined
  #controller: AbortController | undefined
  readonly #socket: Socket

  constructor(socket: Socket) {
    this.#socket = socket
    // Gone already (it left while its body was read): 'close' will not fire again.
    this.#aborted = socket.destroyed
    if (!this.#aborted) socket.once('close', this.#fire)
  }

  get aborted(): boolean {
    return this.#aborted
  }

  onAbort(fn: () => void): () => void {
    if (this.#aborted) {
      fn()
      return nothing
    }
    this.#listeners ??= []
    const listeners = this.#listeners
    listeners.push(fn)
    return () => {
      const at = listeners.indexOf(fn)
      if (at >= 0) listeners.splice(at, 1)
    }
  }

  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController()
      if (this.#aborted) this.#controller.abort()
    }
    return this.#controller.signal
  }

  /** Stop listening for the close (a bound function: streams pass it on as their end callback). */
  readonly dispose = (): void => {
    this.#socket.off('close', this.#fire)
  }

  readonly #fire = (): void => {
    this.#aborted = true
    const listeners = this.#listeners
    this.#listeners = undefined
    if (listeners !== undefined) for (const fn of listeners) fn()
    this.#controller?.abort()
  }
}

/** A CallAbort that follows an existing AbortSignal (tests, callers that already hold one). */
export function abortFromSignal(signal: AbortSignal): CallAbort {
  return {
    get aborted() {
      return signal.aborted
    },
    onAbort(fn) {
      if (signal.aborted) {
        fn()
        return nothing
      }
      signal.addEventListener('abort', fn, { once: true })
      return () => signal.removeEventListener('abort', fn)
    },
    signal,
  }
}
