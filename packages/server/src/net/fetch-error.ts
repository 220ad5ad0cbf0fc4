/**
 * Errors of the outbound fetch layer, and their one mapping to gateway error codes. Messages
 * name the host and why, never a path, query string or header value (those may carry secrets).
 */
import { GatewayError, toGatewayError as toGeneric } from '../errors/gateway-error.ts'
import type { AddressCategory } from './address.ts'

/** Why an outbound fetch failed. */
export type NetFetchReason =
  | 'ssrf_blocked'
  | 'bad_scheme'
  | 'bad_url'
  | 'bad_request'
  | 'too_many_redirects'
  | 'too_large'
  | 'timeout'
  | 'connect_failed'
  | 'upstream_failed'
  | 'aborted'
  /** The caller's redirect check refused the next hop (a policy's domain list). */
  | 'redirect_refused'

/** A failed outbound fetch, with a stable reason. */
export class NetFetchError extends Error {
  readonly reason: NetFetchReason
  /** For `ssrf_blocked`: the kind of address refused. */
  readonly category: AddressCategory | undefined
  /** The canonical host the fetch was going to, when known. */
  readonly host: string | undefined
  /** The upstream's status when it had answered (e.g. `too_large`). */
  readonly upstreamStatus: number | undefined

  constructor(
    reason: NetFetchReason,
    message: string,
    options: { category?: AddressCategory; host?: string; upstreamStatus?: number; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'NetFetchError'
    this.reason = reason
    this.category = options.category
    this.host = options.host
    this.upstreamStatus = options.upstreamStatus
  }
}

/**
 * Map anything a fetch threw to a GatewayError: SSRF and scheme refusals are `forbidden` with
 * `details.reason = 'ssrf_blocked'` (DESIGN §6), a bad URL is `bad_request`, upstream failures are
 * `upstream_error` and timeouts `upstream_timeout`.
 */
export function toGatewayError(err: unknown): GatewayError {
  if (!(err instanceof NetFetchError)) return toGeneric(err)
  const details: Record<string, unknown> = { reason: err.reason }
  if (err.host !== undefined) details.host = err.host
  if (err.upstreamStatus !== undefined) details.upstreamStatus = err.upstreamStatus
  const options = { details, cause: err }
  switch (err.reason) {
    case 'ssrf_blocked':
      details.category = err.category
      return new GatewayError('forbidden', err.message, options)
    case 'bad_scheme':
      details.reason = 'ssrf_blocked'
      details.category = 'scheme'
      return new GatewayError('forbidden', err.message, options)
    case 'bad_url':
    case 'bad_request':
      return new GatewayError('bad_request', err.message, options)
    case 'redirect_refused':
      return new GatewayError('policy_denied', err.message, options)
    case 'timeout':
      return new GatewayError('upstream_timeout', err.message, options)
    case 'too_large':
    case 'too_many_redirects':
    case 'connect_failed':
    case 'upstream_failed':
    case 'aborted':
      return new GatewayError('upstream_error', err.message, options)
  }
}
