/**
 * One HTTP exchange with the gateway, retried when that is safe: a deadline over all attempts,
 * the caller's abort signal honoured during requests and backoff, per-attempt headers and body
 * (assertions and DPoP proofs are single-use, so each attempt signs afresh), and every answer
 * that is not a 2xx turned into a typed error.
 */
import { errorFromAnswer, GatewayError, NetworkError, TimeoutError } from './errors.ts'
import { type ResolvedRetry, type RetryOptions, resolveRetry, retryDelay } from './retry.ts'

export interface TransportOptions {
  baseUrl: string
  /** Replaces the platform `fetch` (an instrumented one, or one with a custom dispatcher). */
  fetch?: typeof fetch
  retry?: RetryOptions | false
  /** Default deadline of a call, retries included (default 60 s). */
  timeoutMs?: number
}

/** A request to send; `prepare` runs before every attempt and adds to `headers`/replaces `body`. */
export interface Exchange {
  method: string
  /** Path below the base URL, starting with `/`. */
  path: string
  headers?: Record<string, string>
  body?: string
  /** Whether a repeat is harmless: GET/HEAD, or a request carrying an idempotency key. */
  retryable: boolean
  prepare?: () => Promise<{ headers?: Record<string, string>; body?: string }>
}

export interface ExchangeOptions {
  signal?: AbortSignal | undefined
  timeoutMs?: number | undefined
  /** `false`: one attempt only. */
  retry?: boolean | undefined
}

/** A 2xx answer; `body` is the parsed JSON, or undefined for an empty body. */
export interface Answer {
  status: number
  headers: Headers
  body: unknown
}

/** Sleep `ms`, rejecting with the signal's reason if it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason)
      return
    }
    const onAbort = () => {
      clearTimeout(timer)
      reject(signal!.reason)
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/** Checks a base URL once, at construction: an absolute http(s) URL, kept without trailing slashes. */
export function normaliseBaseUrl(value: unknown, name = 'baseUrl'): string {
  if (typeof value !== 'string' || !URL.canParse(value))
    throw new TypeError(`${name} must be an absolute URL`)
  const url = new URL(value)
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`${name} must be http(s)`)
  return url.href.replace(/\/+$/, '')
}

export class Transport {
  readonly baseUrl: string
  readonly retry: ResolvedRetry
  private readonly fetch: typeof fetch
  private readonly timeoutMs: number

  constructor(options: TransportOptions) {
    this.baseUrl = normaliseBaseUrl(options.baseUrl)
    this.retry = resolveRetry(options.retry)
    // Bound late: tests and instrumentation may replace globalThis.fetch after the client exists.
    this.fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init))
    this.timeoutMs = options.timeoutMs ?? 60_000
  }

  async send(exchange: Exchange, options: ExchangeOptions = {}): Promise<Answer> {
    const userSignal = options.signal
    const timeoutMs = options.timeoutMs ?? this.timeoutMs
    const deadline = Date.now() + timeoutMs
    const url = this.baseUrl + exchange.path
    for (let retry = 0; ; retry++) {
      userSignal?.throwIfAborted()
      const prepared = exchange.prepare === undefined ? {} : await exchange.prepare()
      const timeout = AbortSignal.timeout(Math.max(1, deadline - Date.now()))
      const signal = userSignal === undefined ? timeout : AbortSignal.any([userSignal, timeout])
      let error: GatewayError
      try {
        const res = await this.fetch(url, {
          method: exchange.method,
          headers: { ...exchange.headers, ...prepared.headers },
          body: prepared.body ?? exchange.body,
          signal,
          redirect: 'manual',
        })
        const text = await res.text()
        if (res.status >= 200 && res.status < 300)
          return { status: res.status, headers: res.headers, body: parseBody(res, text) }
        error = errorFromAnswer(res.status, text, res.headers)
      } catch (err) {
        if (err instanceof GatewayError) throw err
        if (userSignal?.aborted) throw userSignal.reason
        if (timeout.aborted) {
          throw new TimeoutError({
            code: 'timeout',
            message: `No answer from ${exchange.method} ${exchange.path} within ${timeoutMs} ms.`,
            status: 0,
          })
        }
        error = networkError(url, err)
      }
      const wait =
        exchange.retryable && options.retry !== false ? retryDelay(error, retry, this.retry) : undefined
      if (wait === undefined || Date.now() + wait >= deadline) throw error
      await sleep(wait, userSignal)
    }
  }
}

function parseBody(res: Response, text: string): unknown {
  if (text === '') return undefined
  try {
    return JSON.parse(text)
  } catch {
    throw new GatewayError({
      code: 'invalid_response',
      message: `The answer (${res.status}, ${res.headers.get('content-type') ?? 'no content type'}) is not JSON.`,
      status: res.status,
      requestId: res.headers.get('x-request-id') ?? undefined,
    })
  }
}

function networkError(url: string, err: unknown): NetworkError {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause
  const reason = cause?.code ?? cause?.message ?? (err as Error).message
  return new NetworkError({
    code: 'network_error',
    message: `Cannot reach ${new URL(url).origin}: ${reason}`,
    status: 0,
    cause: err,
  })
}
