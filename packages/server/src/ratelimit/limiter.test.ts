import assert from 'node:assert/strict'
import { IncomingMessage } from 'node:http'
import { Socket } from 'node:net'
import { describe, it } from 'node:test'
import { Registry } from 'prom-client'
import { compileConfig } from '../config/compile.ts'
import { parseConfigText } from '../config/load.ts'
import { GatewayError } from '../errors/gateway-error.ts'
import type { Principal, RequestContext } from '../http/context.ts'
import { createLogger } from '../observability/logger.ts'
import { createMemoryState } from '../state/memory-state.ts'
import { createLimitMetrics } from './limit-metrics.ts'
import { createRateLimiter, type LimitVerdict, tighter } from './limiter.ts'

/** A limiter over a memory state on a fake clock, and the log lines it wrote. */
function setup(options: { closed?: boolean } = {}) {
  let now = 1_000_000
  const state = createMemoryState({ now: () => now })
  if (options.closed) void state.close()
  const lines: Array<Record<string, unknown>> = []
  const logger = createLogger('warn', {
    write: (line: string) => {
      lines.push(JSON.parse(line))
    },
  })
  const registry = new Registry()
  const limiter = createRateLimiter({ state, logger, metrics: createLimitMetrics(registry), now: () => now })
  return {
    limiter,
    lines,
    registry,
    advance: (ms: number) => {
      now += ms
    },
  }
}

const configText = `systems: { s: { kind: http, url: "http://127.0.0.1:9" } }
channels:
  - name: c
    system: s
    rateLimit:
      - { by: user, limit: 2, period: 1m }
      - { by: channel, limit: 3, period: 1m }
  - name: open
    system: s
    rateLimit: { by: global, limit: 1, period: 1m, failOpen: false }
rateLimits:
  - { by: path, limit: 100, period: 1m }
  - { by: agent_tool, limit: 1, period: 1m }
`
const config = compileConfig(parseConfigText(configText), configText)
const req = new IncomingMessage(new Socket())

function ctxFor(principal: Principal | undefined, channel = 'c', path = '/x'): RequestContext {
  return {
    config,
    clientIp: '192.0.2.1',
    path,
    principal,
    channel: config.byName.get(channel),
    rateLimit: undefined,
  } as RequestContext
}

const user = (id: string): Principal => ({ kind: 'user', id, roles: [] })
const agent = (id: string): Principal => ({ kind: 'agent', id, roles: [] })

function refusal(fn: () => unknown): GatewayError {
  try {
    fn()
  } catch (err) {
    assert.ok(err instanceof GatewayError)
    return err
  }
  assert.fail('expected a refusal')
}

describe('the rate limiter', () => {
  it('counts by user, each user apart, and answers the tightest limit synchronously', () => {
    const { limiter } = setup()
    const limits = config.rateLimits.channels.get('c')!
    const first = limiter.check(limits, ctxFor(user('u1')), req)
    assert.ok(!(first instanceof Promise))
    // user: 2 per minute (1 left) is tighter than channel: 3 (2 left) and path: 100.
    assert.deepEqual(first, { limit: 2, remaining: 1, resetMs: 30_000 })
    limiter.check(limits, ctxFor(user('u1')), req)
    const refused = refusal(() => limiter.check(limits, ctxFor(user('u1')), req))
    assert.equal(refused.code, 'rate_limited')
    assert.deepEqual(refused.details, {
      by: 'user',
      limit: 'channels[0].rateLimit[0]',
      retryAfterSeconds: 30,
    })
    assert.equal(refused.headers?.['retry-after'], '30')
    // u2 has its own user budget, but the channel's 3 are shared: 2 were used by u1.
    assert.equal((limiter.check(limits, ctxFor(user('u2')), req) as LimitVerdict).remaining, 0)
    assert.equal(refusal(() => limiter.check(limits, ctxFor(user('u3')), req)).details?.['by'], 'channel')
  })

  it('skips a per-user limit for a request without a user, and counts the rest', () => {
    const { limiter } = setup()
    const verdict = limiter.check(config.rateLimits.channels.get('c')!, ctxFor(agent('a1')), req)
    assert.deepEqual(verdict, { limit: 3, remaining: 2, resetMs: 20_000 })
  })

  it('checks agent_tool limits per tool and keeps the tighter verdict on the context', () => {
    const { limiter } = setup()
    const ctx = ctxFor(agent('a1'))
    ctx.rateLimit = { limit: 100, remaining: 99, resetMs: 600 }
    assert.equal(limiter.checkTool(ctx, req, 'serpapi'), undefined)
    assert.deepEqual(ctx.rateLimit, { limit: 1, remaining: 0, resetMs: 60_000 })
    assert.equal(
      refusal(() => limiter.checkTool(ctxFor(agent('a1')), req, 'serpapi')).details?.['by'],
      'agent_tool',
    )
    // Another tool is another bucket.
    assert.equal(limiter.checkTool(ctxFor(agent('a1')), req, 'openai'), undefined)
  })

  it('admits again once the emission interval has passed', () => {
    const { limiter, advance } = setup()
    const limits = config.rateLimits.channels.get('open')!
    limiter.check(limits, ctxFor(undefined, 'open'), req)
    refusal(() => limiter.check(limits, ctxFor(undefined, 'open'), req))
    advance(60_000)
    assert.equal((limiter.check(limits, ctxFor(undefined, 'open'), req) as LimitVerdict).remaining, 0)
  })

  it('admits under failOpen and refuses without it when the state cannot answer, logging once per interval', () => {
    const { limiter, lines, advance } = setup({ closed: true })
    // path (rateLimits[0]) fails open; the open channel's global limit does not.
    assert.equal(limiter.check(config.rateLimits.routes, ctxFor(undefined), req), undefined)
    const refused = refusal(() =>
      limiter.check(config.rateLimits.channels.get('open')!, ctxFor(undefined, 'open'), req),
    )
    assert.deepEqual(refused.details, {
      by: 'global',
      limit: 'channels[1].rateLimit',
      reason: 'state_unavailable',
    })
    assert.equal(refused.headers?.['retry-after'], '1')
    assert.equal(lines.length, 1, 'one warning for the interval')
    assert.equal(lines[0]!['msg'], 'rate limits cannot be checked; admitting (failOpen)')
    advance(10_000)
    limiter.check(config.rateLimits.routes, ctxFor(undefined), req)
    assert.equal(lines.length, 2)
    // The open channel's check asked twice (the gateway's path limit, then its own): 2 + 1.
    assert.equal(lines[1]!['checks'], 3, 'the warning says how many checks it stands for')
  })

  it('counts refusals and unanswered checks in its metrics', async () => {
    const { limiter, registry } = setup({ closed: true })
    limiter.check(config.rateLimits.routes, ctxFor(undefined), req)
    refusal(() => limiter.check(config.rateLimits.channels.get('open')!, ctxFor(undefined, 'open'), req))
    const text = await registry.metrics()
    // The path limit, once per check (failOpen), and the open channel's own (refusing).
    assert.match(text, /runr_rate_limit_unavailable_total\{outcome="admitted"\} 2/)
    assert.match(text, /runr_rate_limit_unavailable_total\{outcome="refused"\} 1/)
  })

  it('picks the verdict with fewer requests left, then the later reset', () => {
    const a = { limit: 10, remaining: 3, resetMs: 100 }
    const b = { limit: 5, remaining: 3, resetMs: 900 }
    assert.equal(tighter(a, b), b)
    assert.equal(tighter(a, { limit: 1, remaining: 4, resetMs: 5 }), a)
    assert.equal(tighter(undefined, a), a)
  })
})
