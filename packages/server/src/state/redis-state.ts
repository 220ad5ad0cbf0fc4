import { Redis, type RedisOptions } from 'ioredis'
import { checkCount, checkDuration } from './arguments.ts'
import { rateSlackMs } from './rate-table.ts'
import { SharedStateError, type StateErrorReporter } from './state-error.ts'
import type { RateDecision, SharedState, Unsubscribe } from './types.ts'

export interface RedisStateOptions {
  /** `redis://` or `rediss://`, optionally with credentials and a database number. */
  url: string
  /** Put before every key and channel (default `runr:`), so clusters sharing a Redis never meet. */
  prefix?: string
  /** Receives connection errors after startup and what a subscriber throws (default: ignored). */
  onError?: StateErrorReporter
  /**
   * false: resolve at once and keep connecting in the background (a gateway starts, answers
   * /ready with 503 and refuses what needs Redis until it answers). Default true: wait, and
   * reject when Redis cannot be reached.
   */
  waitForConnection?: boolean
}

// A claim that Redis cannot answer within this is refused (the caller answers 503): a request
// must not wait on a Redis that is gone.
const commandTimeoutMs = 2_000
const connectTimeoutMs = 5_000

// Counters are created with their expiry (SET NX PX) before they count, inside one script, so no
// counter ever lives without one, whichever instance made it. Amounts go to INCRBY as the strings
// they arrived as: Lua would print a large number as 1e+15, which INCRBY refuses.
const scripts = {
  /** KEYS[1] counter; ARGV window ms. The count after this event. */
  runrIncrement: `
redis.call('SET', KEYS[1], 0, 'PX', ARGV[1], 'NX')
return redis.call('INCR', KEYS[1])`,
  /** KEYS[1] counter; ARGV limit, cost, ttl ms. {1 admitted | 0 refused, count after}. */
  runrConsumeQuota: `
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local cost = tonumber(ARGV[2])
if used + cost > tonumber(ARGV[1]) then return {0, used} end
if cost == 0 then return {1, used} end
redis.call('SET', KEYS[1], 0, 'PX', ARGV[3], 'NX')
return {1, redis.call('INCRBY', KEYS[1], ARGV[2])}`,
  /** KEYS[1] counter; ARGV amount, ttl ms. The count after. */
  runrAddQuota: `
if tonumber(ARGV[1]) == 0 then return tonumber(redis.call('GET', KEYS[1]) or '0') end
redis.call('SET', KEYS[1], 0, 'PX', ARGV[2], 'NX')
return redis.call('INCRBY', KEYS[1], ARGV[1])`,
  /**
   * KEYS[1] the subject's TAT; ARGV emission ms, window ms. GCRA as rate-table.ts computes it, on
   * Redis's clock so that instances with skewed clocks agree. {1 admitted | 0 refused, remaining,
   * reset ms, retry-after ms}, times rounded up (Redis truncates a Lua number to an integer).
   * The TAT is kept to the microsecond: tostring would round it to 14 digits, a tenth of a ms.
   * An emission interval below the clock's resolution (a billion a second) adds nothing to a TAT
   * of 1.7e12 ms, so `used` can be 0: the expiry is at least 1 ms, as PX 0 is an error.
   */
  runrRateLimit: `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local emission = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local used = tat + emission - now
if used > window + ${rateSlackMs} then
  return {0, 0, math.ceil(tat - now), math.ceil(used - window)}
end
redis.call('SET', KEYS[1], string.format('%.3f', tat + emission), 'PX', math.max(1, math.ceil(used)))
return {1, math.floor((window - used) / emission + ${rateSlackMs}), math.ceil(used), 0}`,
} as const

/** The scripts as ioredis defines them: EVALSHA, falling back to EVAL once after a NOSCRIPT. */
interface ScriptCommands {
  runrIncrement(key: string, windowMs: number): Promise<number>
  runrConsumeQuota(key: string, limit: number, cost: number, ttlMs: number): Promise<[number, number]>
  runrAddQuota(key: string, amount: number, ttlMs: number): Promise<number>
  runrRateLimit(key: string, emissionMs: number, windowMs: number): Promise<[number, number, number, number]>
}

/**
 * SharedState in Redis, for a cluster: instances with the same URL and prefix share claims and
 * messages. Resolves once both connections (commands, and the subscriber that pub/sub needs)
 * are ready; rejects with the host and port, never the password, when Redis cannot be reached.
 */
export async function createRedisState(options: RedisStateOptions): Promise<SharedState> {
  const prefix = options.prefix ?? 'runr:'
  const report = options.onError ?? (() => {})
  const hide = redactor(options.url)
  const common: RedisOptions = { lazyConnect: true, connectTimeout: connectTimeoutMs }
  const commands = new Redis(options.url, {
    ...common,
    // Answer now or refuse: queueing while Redis is away would hold requests open, and resending
    // an unanswered SET NX after a reconnect would call a first use a replay.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    commandTimeout: commandTimeoutMs,
  })
  // The subscriber only sends (UN)SUBSCRIBE; those may wait for Redis to come back, and ioredis
  // subscribes again to every acknowledged channel after a reconnect.
  const subscriber = new Redis(options.url, {
    ...common,
    enableOfflineQueue: true,
    maxRetriesPerRequest: null,
  })

  for (const [name, lua] of Object.entries(scripts)) commands.defineCommand(name, { numberOfKeys: 1, lua })
  const run = commands as unknown as ScriptCommands

  let started = false
  let closed = false
  let lastError: unknown
  for (const connection of [commands, subscriber]) {
    // Without a listener an `error` event is unhandled. ioredis keeps reconnecting on its own.
    connection.on('error', (error: unknown) => {
      lastError = error
      // A fresh Error with the message only: ioredis attaches the failed command, and a failed
      // AUTH carries the password among its arguments.
      if (started && !closed) report(new Error(hide(messageOf(error))), 'connection')
    })
  }

  let timer: NodeJS.Timeout | undefined
  if (options.waitForConnection === false) {
    started = true
    // ioredis keeps retrying after a failed first connect; the errors go to `report`.
    for (const connection of [commands, subscriber]) {
      connection.connect().catch((error: unknown) => report(new Error(hide(messageOf(error))), 'connection'))
    }
  } else {
    try {
      await Promise.race([
        Promise.all([commands.connect(), subscriber.connect()]),
        new Promise((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`no answer within ${connectTimeoutMs} ms`)),
            connectTimeoutMs,
          )
        }),
      ])
    } catch (error) {
      commands.disconnect()
      subscriber.disconnect()
      // The emitted error says why (ECONNREFUSED, WRONGPASS); the rejection only says "closed".
      const reason = hide(messageOf(lastError ?? error))
      throw new SharedStateError(
        'state_unavailable',
        `cannot connect to Redis at ${hostAndPort(options.url)}: ${reason}`,
      )
    } finally {
      clearTimeout(timer)
    }
  }
  started = true

  const handlers = new Map<string, Set<(message: string) => void>>()
  // (UN)SUBSCRIBEs not yet acknowledged. publish waits for them, so that a subscriber on this
  // instance receives what this instance publishes after subscribing, as the contract says.
  const pending = new Set<Promise<unknown>>()

  function track(command: Promise<unknown>): void {
    const settled = command.then(
      () => undefined,
      (error: unknown) => {
        if (!closed) report(new Error(hide(messageOf(error))), 'connection')
      },
    )
    pending.add(settled)
    void settled.finally(() => pending.delete(settled))
  }

  subscriber.on('message', (channel: string, message: string) => {
    const subscribers = handlers.get(channel)
    if (subscribers === undefined) return
    for (const onMessage of [...subscribers]) {
      // One that an earlier handler unsubscribed is skipped.
      if (!subscribers.has(onMessage)) continue
      try {
        onMessage(message)
      } catch (error) {
        report(error, 'subscriber')
      }
    }
  })

  function refuseWhenClosed(): void {
    if (closed) throw new SharedStateError('state_closed', 'shared state is closed')
  }

  function failure(error: unknown): SharedStateError {
    if (closed) return new SharedStateError('state_closed', 'shared state is closed')
    return new SharedStateError('state_unavailable', `Redis did not answer: ${hide(messageOf(error))}`)
  }

  let closing: Promise<void> | undefined

  return {
    kind: 'redis',

    async claimOnce(key, ttlMs) {
      refuseWhenClosed()
      checkDuration(ttlMs, 'ttlMs')
      try {
        return (await commands.set(`${prefix}claim:${key}`, '1', 'PX', Math.ceil(ttlMs), 'NX')) === 'OK'
      } catch (error) {
        throw failure(error)
      }
    },

    async increment(key, windowMs) {
      refuseWhenClosed()
      checkDuration(windowMs, 'windowMs')
      try {
        return await run.runrIncrement(`${prefix}count:${key}`, Math.ceil(windowMs))
      } catch (error) {
        throw failure(error)
      }
    },

    async consumeQuota(key, quota) {
      refuseWhenClosed()
      const limit = checkCount(quota.limit, 'limit')
      const cost = checkCount(quota.cost ?? 1, 'cost')
      const ttlMs = Math.ceil(checkDuration(quota.ttlMs, 'ttlMs'))
      try {
        const [allowed, used] = await run.runrConsumeQuota(`${prefix}quota:${key}`, limit, cost, ttlMs)
        return { allowed: allowed === 1, used }
      } catch (error) {
        throw failure(error)
      }
    },

    async addQuota(key, amount, ttlMs) {
      refuseWhenClosed()
      checkCount(amount, 'amount')
      checkDuration(ttlMs, 'ttlMs')
      try {
        return await run.runrAddQuota(`${prefix}quota:${key}`, amount, Math.ceil(ttlMs))
      } catch (error) {
        throw failure(error)
      }
    },

    async getQuota(key) {
      refuseWhenClosed()
      try {
        return Number((await commands.get(`${prefix}quota:${key}`)) ?? 0)
      } catch (error) {
        throw failure(error)
      }
    },

    async rateLimit(bucket, subject, rate): Promise<RateDecision> {
      refuseWhenClosed()
      try {
        const [allowed, remaining, resetMs, retryAfterMs] = await run.runrRateLimit(
          `${prefix}rate:${bucket}:${subject}`,
          rate.emissionMs,
          rate.windowMs,
        )
        return { allowed: allowed === 1, remaining, resetMs, retryAfterMs }
      } catch (error) {
        throw failure(error)
      }
    },

    async cacheGet(key) {
      refuseWhenClosed()
      try {
        return (await commands.getBuffer(`${prefix}cache:${key}`)) ?? undefined
      } catch (error) {
        throw failure(error)
      }
    },

    async cacheSet(key, value, ttlMs) {
      refuseWhenClosed()
      checkDuration(ttlMs, 'ttlMs')
      try {
        await commands.set(`${prefix}cache:${key}`, value, 'PX', Math.ceil(ttlMs))
      } catch (error) {
        throw failure(error)
      }
    },

    async publish(channel, message) {
      refuseWhenClosed()
      if (pending.size > 0) await settledWithin([...pending], commandTimeoutMs)
      try {
        await commands.publish(prefix + channel, message)
      } catch (error) {
        throw failure(error)
      }
    },

    subscribe(channel, onMessage) {
      refuseWhenClosed()
      const name = prefix + channel
      // Wrapped so the same function subscribed twice is two subscriptions, like two listeners.
      const subscription = (message: string): void => onMessage(message)
      let subscribers = handlers.get(name)
      if (subscribers === undefined) {
        subscribers = new Set()
        handlers.set(name, subscribers)
        track(subscriber.subscribe(name))
      }
      subscribers.add(subscription)
      const unsubscribe: Unsubscribe = () => {
        const current = handlers.get(name)
        if (current === undefined || !current.delete(subscription)) return
        if (current.size > 0) return
        handlers.delete(name)
        if (!closed) track(subscriber.unsubscribe(name))
      }
      return unsubscribe
    },

    async ping() {
      if (closed || subscriber.status !== 'ready') return false
      try {
        return (await commands.ping()) === 'PONG'
      } catch {
        return false
      }
    },

    close() {
      closing ??= (async () => {
        closed = true
        handlers.clear()
        // Nothing the subscriber has in flight matters once closed.
        subscriber.disconnect()
        try {
          await commands.quit()
        } catch {
          // Redis is away (quit is bounded by the command timeout): stop reconnecting instead.
          commands.disconnect()
        }
      })()
      return closing
    },
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

function hostAndPort(url: string): string {
  try {
    const parsed = new URL(url)
    return `${parsed.hostname}:${parsed.port || '6379'}`
  } catch {
    // The parse error would quote the URL, password and all.
    return '(an unparseable URL)'
  }
}

/** Removes the URL's password from a message, in case a server or library echoes it. */
function redactor(url: string): (message: string) => string {
  let secrets: string[] = []
  try {
    const { password } = new URL(url)
    if (password !== '') secrets = [...new Set([password, decodeURIComponent(password)])]
  } catch {
    // An unparseable URL has no password we could find; hostAndPort says it is unparseable.
  }
  return (message) => secrets.reduce((text, secret) => text.replaceAll(secret, '***'), message)
}

/** Resolves when every promise has settled or `ms` have passed, whichever is first. */
async function settledWithin(promises: Array<Promise<unknown>>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([
    Promise.allSettled(promises),
    new Promise((done) => {
      timer = setTimeout(done, ms)
    }),
  ])
  clearTimeout(timer)
}
