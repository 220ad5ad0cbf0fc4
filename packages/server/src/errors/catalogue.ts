/**
 * The error catalogue (DESIGN §15): every stable code with its HTTP status and default message.
 * `satisfies` makes the compiler check each entry; docs/reference/errors.md is generated from it.
 */
export const errorCatalogue = {
  bad_request: { status: 400, message: 'The request is malformed.' },
  invalid_request: { status: 400, message: 'The token request is missing a parameter or is malformed.' },
  invalid_grant: { status: 400, message: 'The assertion or subject token is invalid.' },
  invalid_scope: { status: 400, message: 'The requested scope is invalid or cannot be granted.' },
  unsupported_grant_type: { status: 400, message: 'The grant type is not supported.' },
  unauthenticated: { status: 401, message: 'Authentication is required.' },
  token_expired: { status: 401, message: 'The access token has expired.' },
  token_revoked: { status: 401, message: 'The access token has been revoked.' },
  invalid_dpop_proof: { status: 401, message: 'The DPoP proof is missing or invalid.' },
  forbidden: { status: 403, message: 'The principal may not do this.' },
  policy_denied: { status: 403, message: 'A policy denies this request.' },
  not_found: { status: 404, message: 'No route matches this request.' },
  method_not_allowed: { status: 405, message: 'The method is not allowed on this path.' },
  conflict: { status: 409, message: 'The request conflicts with the current state.' },
  payload_too_large: { status: 413, message: 'The request body is too large.' },
  unprocessable: { status: 422, message: 'The request is well-formed but cannot be processed.' },
  quota_exceeded: { status: 429, message: 'A quota is exhausted.' },
  rate_limited: { status: 429, message: 'Too many requests.' },
  headers_too_large: { status: 431, message: 'The request headers are too large.' },
  internal: { status: 500, message: 'An internal error occurred.' },
  upstream_error: { status: 502, message: 'The upstream failed to answer.' },
  tool_unavailable: { status: 503, message: 'The tool is not available.' },
  circuit_open: { status: 503, message: 'The upstream circuit breaker is open.' },
  bulkhead_full: { status: 503, message: 'Too many concurrent upstream calls.' },
  not_ready: { status: 503, message: 'The gateway is not ready.' },
  audit_unavailable: {
    status: 503,
    message: 'The audit ledger cannot be written; calls are refused until it can (audit.onFailure: refuse).',
  },
  upstream_timeout: { status: 504, message: 'The upstream did not answer in time.' },
} as const satisfies Record<string, { status: number; message: string }>

/** A stable error code from the catalogue. */
export type ErrorCode = keyof typeof errorCatalogue
