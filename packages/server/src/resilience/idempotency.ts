/**
 * `Idempotency-Key` (DESIGN §10, issue 7): a tool call or a channel POST carrying one is executed
 * once per principal and key; a repeat within the ttl gets the first answer (same status and
 * body) without reaching the upstream, a repeat while the first still runs waits for it (up to
 * `wait`) or gets `409 conflict`, and a repeat asking something else gets `422 unprocessable`.
 *
 * Records live in the Store, so instances sharing Postgres share them. Keys are per principal:
 * one agent can neither read nor block another's. Only answers that involved the upstream are
 * kept; a call refused before it (bad input, policy, rate limit, open breaker) frees the key.
 */
import { createHash, randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { GatewayError } from '../errors/gateway-error.ts'
import { errorBody } from '../errors/write-error.ts'
import type { IdempotencyStore, IdempotentAnswer } from '../store/types.ts'
import { neverSent } from './guard.ts'

/** The header (draft-ietf-httpapi-idempotency-key-header). */
const idempotencyHeader = 'idempotency-key'
/** Set on an answer that repeats a stored one. */
export const replayedHeader = 'idempotent-replayed'

/**
 * How long a first call holds its key before another instance may take it over (it died). The
 * call renews it every third of that while it runs, so only a dead instance's claim lapses, however
 * long retries, Retry-After waits and the bulkhead queue make the call.
 */
const defaultLeaseMs = 120_000
/** How often a waiting repeat looks whether the first call has finished. */
const pollMs = 25
/** Visible ASCII, as the draft's sf-string allows, bounded. */
const keyShape = /^[\x21-\x7e]{1,255}$/

/** What the caller's execution produced. `store: false` answers are returned but not kept. */
export interface Executed<T> {
  value: T
  /** The answer to keep, or undefined to free the key (nothing worth repeating happened). */
  answer: IdempotentAnswer | undefined
}

export type IdempotentResult<T> = { replayed: false; value: T } | { replayed: true; answer: IdempotentAnswer }

export interface IdempotencyService {
  /**
   * Run `execute` once for `principal` and `key`, or answer the stored first result. Errors from
   * `execute` pass through; `keepError` says whether such an error is an answer to keep.
   */
  run<T>(
    target: { principal: string; key: string; requestHash: string; ttlMs: number; waitMs: number },
    execute: () => Promise<Executed<T>>,
    keepError: (err: unknown) => IdempotentAnswer | undefined,
  ): Promise<IdempotentResult<T>>
  /** Stop the periodic prune. */
  close(): void
}

/** The key a request carries, checked; undefined without the header. */
export function idempotencyKeyOf(req: IncomingMessage): string | undefined {
  const raw = req.headers[idempotencyHeader]
  if (raw === undefined) return undefined
  const value = Array.isArray(raw) ? raw.join(',') : raw
  // The draft wraps the key in quotes (a structured-field string); a bare token is accepted too.
  const key = value.length >= 2 && value.startsWith('"') && value.endsWith('"') ? value.slice(1, -1) : value
  if (!keyShape.test(key)) {
    throw new GatewayError('bad_request', 'Idempotency-Key must be 1 to 255 visible ASCII characters.', {
      details: { header: 'Idempotency-Key' },
    })
  }
  return key
}

/** Hash what a request asks, so a repeat asking something else is recognised. */
export function requestHashOf(...parts: Array<string | Buffer>): string {
  const hash = createHash('sha256')
  for (const part of parts) {
    hash.update(part)
    hash.update('\u0000')
  }
  return hash.digest('base64url')
}

/** Create the service over `store`; it prunes expired keys every `pruneEveryMs` (default 10 min). */
export function createIdempotency(
  store: IdempotencyStore,
  options: {
    now?: () => number
    pruneEveryMs?: number
    onError?: (err: unknown) => void
    /** The claim's lease (default 2 min); tests shorten it. */
    leaseMs?: number
  } = {},
): IdempotencyService {
  const now = options.now ?? Date.now
  const leaseMs = options.leaseMs ?? defaultLeaseMs
  const onError = options.onError ?? (() => {})
  const pruning = setInterval(() => {
    store.prune(now()).catch(onError)
  }, options.pruneEveryMs ?? 600_000)
  pruning.unref()

  const mismatch = (): GatewayError =>
    new GatewayError(
      'unprocessable',
      'This Idempotency-Key was used with a different request: use a new key for a new request.',
      { details: { reason: 'idempotency_key_reused' } },
    )

  return {
    async run(target, execute, keepError) {
      const { principal, key, requestHash } = target
      const deadline = now() + target.waitMs
      for (;;) {
        const owner = randomUUID()
        const at = now()
        const begun = await store.begin({
          principal,
          key,
          requestHash,
          owner,
          now: at,
          expiresAt: at + target.ttlMs,
          leaseUntil: at + leaseMs,
        })
        if (begun.outcome === 'claimed') {
          let executed: Executed<unknown>
          const renewing = setInterval(() => {
            store.renew(principal, key, owner, now() + leaseMs).catch(onError)
          }, leaseMs / 3)
          renewing.unref()
          try {
            executed = await execute()
          } catch (err) {
            clearInterval(renewing)
            const kept = keepError(err)
            if (kept === undefined) await store.release(principal, key, owner).catch(onError)
            else await store.complete(principal, key, owner, kept).catch(onError)
            throw err
          }
          clearInterval(renewing)
          if (executed.answer === undefined) await store.release(principal, key, owner).catch(onError)
          else await store.complete(principal, key, owner, executed.answer).catch(onError)
          return { replayed: false, value: executed.value as never }
        }
        const { record } = begun
        if (record.requestHash !== requestHash) throw mismatch()
        if (record.state === 'done' && record.answer !== null)
          return { replayed: true, answer: record.answer }
        // The first call is still running: wait for its answer, or for its key to come free.
        for (;;) {
          if (now() >= deadline) {
            throw new GatewayError('conflict', 'A request with this Idempotency-Key is still in progress.', {
              details: { reason: 'idempotency_key_in_use' },
              headers: { 'retry-after': '1' },
            })
          }
          await new Promise((r) => setTimeout(r, pollMs))
          const current = await store.get(principal, key, now())
          if (current === undefined || current.owner !== record.owner) break
          if (current.state === 'done' && current.answer !== null) {
            if (current.requestHash !== requestHash) throw mismatch()
            return { replayed: true, answer: current.answer }
          }
        }
      }
    },
    close() {
      clearInterval(pruning)
    },
  }
}

/**
 * The answer of an error to keep: a failure once the request may have reached the upstream could
 * have had its effect, so a repeat must not try again. A refused connection sent nothing.
 */
export function errorToKeep(err: unknown, requestId: string): IdempotentAnswer | undefined {
  if (!(err instanceof GatewayError)) return undefined
  if (err.code !== 'upstream_error' && err.code !== 'upstream_timeout') return undefined
  if (neverSent(err)) return undefined
  return {
    status: err.status,
    headers: { 'content-type': 'application/json; charset=utf-8', ...err.headers },
    body: Buffer.from(errorBody(err, requestId)),
  }
}
