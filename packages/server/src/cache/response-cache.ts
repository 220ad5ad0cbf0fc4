/**
 * The response cache (DESIGN §4 stage 6, §10): answers of idempotent tool actions and opted-in
 * channel GETs, kept in the shared state (memory, bounded by entries and bytes; Redis when
 * configured, so every instance shares them). An entry lives for its ttl plus its stale-if-error
 * window: fresh it answers (`X-Cache: HIT`); stale it answers only when the upstream fails or its
 * breaker is open (`STALE`).
 *
 * The key is a hash of the target (tool and action, or channel, system and path), the canonical
 * arguments (policy/guards/args-shape.ts) and the partition: the caller's principal id, unless the
 * route or tool is `shared`. So one agent never receives an answer fetched for another.
 */
import { createHash } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { Logger } from '../observability/logger.ts'
import { canonicalJson } from '../policy/guards/args-shape.ts'
import type { SharedState } from '../state/types.ts'
import type { CacheMetrics } from './cache-metrics.ts'
import type { CachePolicy } from './compile-cache.ts'

/** An answer as the cache keeps it. */
export interface StoredAnswer {
  status: number
  headers: Record<string, string>
  body: Buffer
  /** Milliseconds since the epoch. */
  storedAt: number
}

/** What a lookup found: a fresh entry to answer with, or a stale one kept for an upstream failure. */
export interface CacheProbe {
  readonly key: string
  readonly fresh: StoredAnswer | undefined
  readonly stale: StoredAnswer | undefined
}

/** What the client's `Cache-Control` asks of the cache (RFC 9111 §5.2.1). */
export interface CacheDirectives {
  /** `no-cache` (or `max-age=0`, `no-store`): do not answer from the cache. */
  bypass: boolean
  /** `no-store`: do not keep this answer either. */
  noStore: boolean
}

export interface ResponseCache {
  /** The key of `target` with `args` for `partition` (a principal id, or '*' when shared). */
  keyOf(target: string, partition: string, args: unknown): string
  /** Look `key` up; a state that cannot answer is a miss (logged), never a failed request. */
  lookup(key: string): Promise<CacheProbe>
  /** Keep `answer` under `key` as `policy` says, in the background; refusals are logged only. */
  store(key: string, answer: StoredAnswer, policy: CachePolicy): void
  readonly metrics: CacheMetrics
}

export interface ResponseCacheDeps {
  state: SharedState
  logger: Logger
  metrics: CacheMetrics
  /** Largest answer kept, bytes (config `cache.maxEntryBytes`), read per store. */
  maxEntryBytes(): number
  /** Milliseconds since the epoch; tests pass a fake clock. */
  now?: () => number
}

const noDirectives: CacheDirectives = Object.freeze({ bypass: false, noStore: false })

/** The request's cache directives; the common request has no Cache-Control and costs no parsing. */
export function cacheDirectives(req: IncomingMessage): CacheDirectives {
  const value = req.headers['cache-control']
  if (value === undefined) return noDirectives
  const text = value.toLowerCase()
  const noStore = text.includes('no-store')
  return { bypass: noStore || text.includes('no-cache') || /(^|[\s,])max-age\s*=\s*0\b/.test(text), noStore }
}

// Stored as: 4-byte length of the JSON head, the head {s, h, t, f}, then the body bytes.
function encode(answer: StoredAnswer, freshUntil: number): Buffer {
  const head = Buffer.from(
    JSON.stringify({ s: answer.status, h: answer.headers, t: answer.storedAt, f: freshUntil }),
    'utf8',
  )
  const out = Buffer.allocUnsafe(4 + head.length + answer.body.length)
  out.writeUInt32BE(head.length, 0)
  head.copy(out, 4)
  answer.body.copy(out, 4 + head.length)
  return out
}

function decode(bytes: Buffer): { answer: StoredAnswer; freshUntil: number } | undefined {
  if (bytes.length < 4) return undefined
  const headLength = bytes.readUInt32BE(0)
  if (4 + headLength > bytes.length) return undefined
  try {
    const head = JSON.parse(bytes.toString('utf8', 4, 4 + headLength)) as {
      s: number
      h: Record<string, string>
      t: number
      f: number
    }
    return {
      answer: { status: head.s, headers: head.h, body: bytes.subarray(4 + headLength), storedAt: head.t },
      freshUntil: head.f,
    }
  } catch {
    return undefined
  }
}

// One warning per this interval while the state fails, as the rate limiter does.
const warnEveryMs = 10_000

export function createResponseCache(deps: ResponseCacheDeps): ResponseCache {
  const now = deps.now ?? Date.now
  let lastWarning = Number.NEGATIVE_INFINITY

  function warn(err: unknown, what: string): void {
    const at = now()
    if (at - lastWarning < warnEveryMs) return
    lastWarning = at
    deps.logger.warn({ err }, what)
  }

  return {
    metrics: deps.metrics,
    keyOf(target, partition, args) {
      // Hashed: the arguments can be long, and a key never shows what an agent asked.
      return createHash('sha256')
        .update(`${target}\n${partition}\n${canonicalJson(args)}`)
        .digest('base64url')
    },
    async lookup(key) {
      let bytes: Buffer | undefined
      try {
        bytes = await deps.state.cacheGet(key)
      } catch (err) {
        warn(err, 'response cache cannot be read; calling the upstream')
        return { key, fresh: undefined, stale: undefined }
      }
      const entry = bytes === undefined ? undefined : decode(bytes)
      if (entry === undefined) return { key, fresh: undefined, stale: undefined }
      return entry.freshUntil > now()
        ? { key, fresh: entry.answer, stale: undefined }
        : { key, fresh: undefined, stale: entry.answer }
    },
    store(key, answer, policy) {
      if (answer.body.length > deps.maxEntryBytes()) return
      const bytes = encode(answer, answer.storedAt + policy.ttlMs)
      deps.state
        .cacheSet(key, bytes, policy.ttlMs + policy.staleMs)
        .catch((err: unknown) => warn(err, 'response cache cannot be written'))
    },
  }
}
