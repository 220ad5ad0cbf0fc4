/**
 * The retry arithmetic on its own: full-jitter backoff stays inside its bounds, `Retry-After`
 * wins when it is short enough, and only transient failures are retried.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  AuthError,
  CircuitOpenError,
  errorFromAnswer,
  GatewayError,
  NetworkError,
  PolicyError,
  parseRetryAfter,
  QuotaError,
  RateLimitError,
  TimeoutError,
  UpstreamError,
} from '../src/errors.ts'
import { backoffDelay, resolveRetry, retryDelay } from '../src/retry.ts'

const options = resolveRetry({ retries: 10, baseDelayMs: 100, maxDelayMs: 2000 })
const gatewayError = (status: number, code: string, retryAfter?: number) =>
  new GatewayError({ code, message: code, status, retryAfter })

describe('backoff with full jitter', () => {
  it('waits nothing at the bottom of the range and just under the cap at the top', () => {
    for (let retry = 0; retry < 8; retry++) {
      const cap = Math.min(2000, 100 * 2 ** retry)
      assert.equal(
        backoffDelay(retry, options, () => 0),
        0,
      )
      assert.equal(
        backoffDelay(retry, options, () => 0.999999),
        cap - 1,
      )
    }
  })

  it('doubles the cap per retry until maxDelayMs', () => {
    const top = (retry: number) => backoffDelay(retry, options, () => 0.999999) + 1
    assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map(top), [100, 200, 400, 800, 1600, 2000, 2000])
  })

  it('keeps every random wait within [0, cap) and spreads them over the range', () => {
    for (let retry = 0; retry < 6; retry++) {
      const cap = Math.min(2000, 100 * 2 ** retry)
      const waits = Array.from({ length: 2000 }, () => backoffDelay(retry, options))
      assert.ok(waits.every((w) => Number.isInteger(w) && w >= 0 && w < cap))
      // Full jitter is uniform: both halves of the range are used.
      assert.ok(waits.some((w) => w < cap / 2) && waits.some((w) => w >= cap / 2))
    }
  })
})

describe('what is retried', () => {
  it('retries network errors, 429 and 503 with backoff', () => {
    const network = new NetworkError({ code: 'network_error', message: 'x', status: 0 })
    for (const err of [network, gatewayError(429, 'rate_limited'), gatewayError(503, 'circuit_open')]) {
      assert.equal(
        retryDelay(err, 0, options, () => 0.5),
        50,
      )
    }
  })

  it('retries while an earlier attempt with the same idempotency key is still running', () => {
    const inUse = new GatewayError({
      code: 'conflict',
      message: 'in progress',
      status: 409,
      retryAfter: 1,
      details: { reason: 'idempotency_key_in_use' },
    })
    assert.equal(retryDelay(inUse, 0, options), 1000)
    assert.equal(retryDelay(gatewayError(409, 'conflict'), 0, options), undefined)
  })

  it('waits exactly Retry-After when the gateway gives one', () => {
    assert.equal(retryDelay(gatewayError(429, 'rate_limited', 3), 0, options), 3000)
    assert.equal(retryDelay(gatewayError(503, 'not_ready', 0.25), 0, options), 250)
  })

  it('does not retry when Retry-After is beyond maxRetryAfterMs', () => {
    assert.equal(retryDelay(gatewayError(429, 'quota_exceeded', 3600), 0, options), undefined)
  })

  it('does not retry answers that asking again cannot change', () => {
    for (const [status, code] of [
      [400, 'bad_request'],
      [401, 'token_revoked'],
      [403, 'policy_denied'],
      [404, 'not_found'],
      [409, 'conflict'],
      [500, 'internal'],
      [502, 'upstream_error'],
      [503, 'tool_unavailable'],
      [504, 'upstream_timeout'],
    ] as const) {
      assert.equal(retryDelay(gatewayError(status, code), 0, options), undefined, code)
    }
  })

  it('stops after the configured number of retries', () => {
    const limited = resolveRetry({ retries: 2 })
    assert.notEqual(retryDelay(gatewayError(503, 'bulkhead_full'), 1, limited), undefined)
    assert.equal(retryDelay(gatewayError(503, 'bulkhead_full'), 2, limited), undefined)
    assert.equal(resolveRetry(false).retries, 0)
  })

  it('refuses negative or non-numeric settings', () => {
    assert.throws(() => resolveRetry({ baseDelayMs: -1 }), TypeError)
    assert.throws(() => resolveRetry({ maxDelayMs: Number.NaN }), TypeError)
  })
})

describe('reading answers into typed errors', () => {
  const headers = (init: Record<string, string> = {}) => new Headers(init)
  const body = (code: string, status: number) =>
    JSON.stringify({ error: { code, message: `m ${code}`, status, requestId: 'req-1', details: { a: 1 } } })

  it('picks the class from the code of the common error body', () => {
    const cases = [
      ['unauthenticated', 401, AuthError],
      ['token_expired', 401, AuthError],
      ['invalid_dpop_proof', 401, AuthError],
      ['invalid_grant', 400, AuthError],
      ['forbidden', 403, PolicyError],
      ['policy_denied', 403, PolicyError],
      ['rate_limited', 429, RateLimitError],
      ['quota_exceeded', 429, QuotaError],
      ['upstream_error', 502, UpstreamError],
      ['upstream_timeout', 504, TimeoutError],
      ['circuit_open', 503, CircuitOpenError],
      ['bulkhead_full', 503, GatewayError],
      ['not_found', 404, GatewayError],
    ] as const
    for (const [code, status, Class] of cases) {
      const err = errorFromAnswer(status, body(code, status), headers())
      assert.equal(err.constructor, Class, code)
      assert.equal(err.code, code)
      assert.equal(err.status, status)
      assert.equal(err.message, `m ${code}`)
      assert.equal(err.requestId, 'req-1')
      assert.deepEqual(err.details, { a: 1 })
      assert.equal(err.name, Class.name)
    }
  })

  it('reads Retry-After as seconds, from a number or an HTTP date', () => {
    const err = errorFromAnswer(429, body('rate_limited', 429), headers({ 'retry-after': '7' }))
    assert.equal(err.retryAfter, 7)
    const now = Date.parse('2026-01-01T00:00:00Z')
    assert.equal(parseRetryAfter('Thu, 01 Jan 2026 00:00:30 GMT', now), 30)
    assert.equal(parseRetryAfter('Wed, 31 Dec 2025 00:00:00 GMT', now), 0)
    assert.equal(parseRetryAfter('soon', now), undefined)
    assert.equal(parseRetryAfter(null, now), undefined)
  })

  it('keeps an unknown code and classes it by status', () => {
    const err = errorFromAnswer(429, body('too_enthusiastic', 429), headers())
    assert.ok(err instanceof RateLimitError)
    assert.equal(err.code, 'too_enthusiastic')
  })

  it('classes an answer without the error body by status, with code invalid_response', () => {
    const html = errorFromAnswer(504, '<html>Gateway Timeout</html>', headers({ 'x-request-id': 'edge-9' }))
    assert.ok(html instanceof TimeoutError)
    assert.equal(html.code, 'invalid_response')
    assert.equal(html.requestId, 'edge-9')
    for (const text of ['', 'null', '[]', '{"error":"flat"}', '{"error":{"code":5}}']) {
      const err = errorFromAnswer(418, text, headers())
      assert.equal(err.constructor, GatewayError)
      assert.equal(err.code, 'invalid_response')
    }
  })
})
