/**
 * Typed errors for every refusal the gateway can answer (DESIGN §15) and the few a client meets
 * on its own (the network, its deadline, a key it cannot use). The gateway's common error body
 * `{"error":{code,message,status,requestId,details}}` is read into a `GatewayError`, and the code
 * picks the subclass, so callers can `catch` by kind and still read the exact code.
 */

import type { ToolResult } from './types.ts'

/** The stable codes of DESIGN §15, plus the client's own. Unknown codes pass through as strings. */
export type ErrorCode =
  | 'bad_request'
  | 'invalid_request'
  | 'invalid_grant'
  | 'invalid_scope'
  | 'unsupported_grant_type'
  | 'unauthenticated'
  | 'token_expired'
  | 'token_revoked'
  | 'invalid_dpop_proof'
  | 'forbidden'
  | 'policy_denied'
  | 'not_found'
  | 'method_not_allowed'
  | 'conflict'
  | 'payload_too_large'
  | 'unprocessable'
  | 'quota_exceeded'
  | 'rate_limited'
  | 'internal'
  | 'upstream_error'
  | 'tool_unavailable'
  | 'circuit_open'
  | 'bulkhead_full'
  | 'not_ready'
  | 'upstream_timeout'
  /** The call parked for a human's approval (HTTP 202): `ApprovalRequired`. */
  | 'approval_required'
  /** Client side: the request never got an answer (`NetworkError`, status 0). */
  | 'network_error'
  /** Client side: the call's `timeoutMs` passed (`TimeoutError`, status 0). */
  | 'timeout'
  /** Client side: an approval was still pending when `wait()` gave up (`TimeoutError`). */
  | 'approval_timeout'
  /** Client side: the answer was not the JSON the gateway writes (a proxy page, a wrong URL). */
  | 'invalid_response'
  /** Client side: the private key or key file cannot be used (`AuthError`, status 0). */
  | 'invalid_key'
  /** Client side: the gateway names another issuer than the one the key was made for (`AuthError`). */
  | 'issuer_mismatch'
  | (string & {})

export interface GatewayErrorInit {
  code: ErrorCode
  message: string
  /** HTTP status; 0 when no answer was received. */
  status: number
  requestId?: string | undefined
  details?: Record<string, unknown> | undefined
  /** Seconds the gateway asked to wait (`Retry-After`). */
  retryAfter?: number | undefined
  cause?: unknown
}

/** Any refusal or failure of a gateway call. */
export class GatewayError extends Error {
  readonly code: ErrorCode
  readonly status: number
  /** The gateway's request id: quote it when asking an operator about this call. */
  readonly requestId: string | undefined
  readonly details: Record<string, unknown> | undefined
  /** Seconds to wait before trying again, when the gateway said (`Retry-After`). */
  readonly retryAfter: number | undefined

  constructor(init: GatewayErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause })
    this.name = new.target.name
    this.code = init.code
    this.status = init.status
    this.requestId = init.requestId
    this.details = init.details
    this.retryAfter = init.retryAfter
  }
}

/** 401s, `/v1/token` refusals (`invalid_grant`, `invalid_scope`, …) and unusable keys. */
export class AuthError extends GatewayError {}
/** 403: the token's scope (`forbidden`) or a policy (`policy_denied`) refuses the call. */
export class PolicyError extends GatewayError {}
/** 429 `rate_limited`: a rate limit or the loop guard; `retryAfter` says when to come back. */
export class RateLimitError extends GatewayError {}
/** 429 `quota_exceeded`: a policy quota is used up until `retryAfter` (often long). */
export class QuotaError extends GatewayError {}
/** 502: the tool's upstream failed or answered something unusable. */
export class UpstreamError extends GatewayError {}
/** 504 `upstream_timeout`, the call's own `timeoutMs` (`timeout`), or `approval_timeout`. */
export class TimeoutError extends GatewayError {}
/** 503 `circuit_open`: the gateway stopped calling a failing upstream for a while. */
export class CircuitOpenError extends GatewayError {}
/** No answer at all: connection refused or reset, DNS failure. */
export class NetworkError extends GatewayError {}

type ErrorClass = new (init: GatewayErrorInit) => GatewayError

const byCode: Record<string, ErrorClass> = {
  unauthenticated: AuthError,
  token_expired: AuthError,
  token_revoked: AuthError,
  invalid_dpop_proof: AuthError,
  invalid_request: AuthError,
  invalid_grant: AuthError,
  invalid_scope: AuthError,
  unsupported_grant_type: AuthError,
  forbidden: PolicyError,
  policy_denied: PolicyError,
  rate_limited: RateLimitError,
  quota_exceeded: QuotaError,
  upstream_error: UpstreamError,
  upstream_timeout: TimeoutError,
  circuit_open: CircuitOpenError,
}

// For answers without the common body (a proxy in front of the gateway wrote them).
const byStatus: Record<number, ErrorClass> = {
  401: AuthError,
  403: PolicyError,
  429: RateLimitError,
  502: UpstreamError,
  504: TimeoutError,
}

/** `Retry-After` (delta-seconds or an HTTP date, RFC 9110 §10.2.3) in seconds; undefined if absent or bad. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (value === null) return undefined
  const text = value.trim()
  if (/^\d+$/.test(text)) return Number(text)
  const at = Date.parse(text)
  return Number.isNaN(at) ? undefined : Math.max(0, (at - now) / 1000)
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** The typed error for a non-2xx answer: the common error body when there is one, else the status. */
export function errorFromAnswer(status: number, text: string, headers: Headers): GatewayError {
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    body = undefined
  }
  const error = isRecord(body) && isRecord(body['error']) ? body['error'] : undefined
  const retryAfter = parseRetryAfter(headers.get('retry-after'))
  const headerId = headers.get('x-request-id') ?? undefined
  if (error !== undefined && typeof error['code'] === 'string') {
    const code = error['code']
    const Class = byCode[code] ?? byStatus[status] ?? GatewayError
    return new Class({
      code,
      message: typeof error['message'] === 'string' ? error['message'] : `The gateway answered ${status}.`,
      status,
      requestId: typeof error['requestId'] === 'string' ? error['requestId'] : headerId,
      details: isRecord(error['details']) ? error['details'] : undefined,
      retryAfter,
    })
  }
  const Class = byStatus[status] ?? GatewayError
  return new Class({
    code: 'invalid_response',
    message: `The answer (${status}) is not the gateway's error body; is the URL the gateway's?`,
    status,
    requestId: headerId,
    retryAfter,
  })
}

/** How `ApprovalRequired.wait()` polls. */
export interface ApprovalWaitOptions {
  /** Between polls of `GET /v1/approvals/{id}` (default 1000 ms). */
  intervalMs?: number
  /** Give up with `TimeoutError` (`approval_timeout`) after this long (default: until the approval expires). */
  timeoutMs?: number
  signal?: AbortSignal
}

/**
 * Not a failure yet: a policy parked the call until an operator decides (HTTP 202). `wait()` polls
 * the approval and, once it is decided, replays the call with `X-Approval-Id`, resolving with the
 * call's result (or rejecting with `PolicyError` when the operator rejected it).
 */
export class ApprovalRequired extends GatewayError {
  readonly approvalId: string
  /** RFC 3339 time after which the approval can no longer be granted. */
  readonly expiresAt: string | undefined
  readonly #wait: (options: ApprovalWaitOptions) => Promise<ToolResult>

  constructor(
    init: Omit<GatewayErrorInit, 'code' | 'status'> & { approvalId: string; expiresAt: string | undefined },
    wait: (options: ApprovalWaitOptions) => Promise<ToolResult>,
  ) {
    super({ ...init, code: 'approval_required', status: 202 })
    this.approvalId = init.approvalId
    this.expiresAt = init.expiresAt
    this.#wait = wait
  }

  /** Wait for the operator's decision, then run the approved call once; resolves with its result. */
  wait<T = unknown>(options: ApprovalWaitOptions = {}): Promise<ToolResult<T>> {
    return this.#wait(options) as Promise<ToolResult<T>>
  }
}
