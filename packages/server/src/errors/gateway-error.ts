import { type ErrorCode, errorCatalogue } from './catalogue.ts'

/** Fields a client may see in `error.details`; never a cause, stack or secret. */
export type ErrorDetails = Record<string, unknown>

/**
 * The one error type the gateway throws on purpose. `cause` is for logs only: the error writer
 * never sends it to a client.
 */
export class GatewayError extends Error {
  readonly code: ErrorCode
  readonly status: number
  readonly details: ErrorDetails | undefined
  /** Extra response headers, e.g. `Allow` on 405 or `Retry-After` on 429/503. */
  readonly headers: Record<string, string> | undefined

  constructor(
    code: ErrorCode,
    message?: string,
    options: { details?: ErrorDetails; headers?: Record<string, string>; cause?: unknown } = {},
  ) {
    super(
      message ?? errorCatalogue[code].message,
      options.cause === undefined ? undefined : { cause: options.cause },
    )
    this.name = 'GatewayError'
    this.code = code
    this.status = errorCatalogue[code].status
    this.details = options.details
    this.headers = options.headers
  }
}

/** Narrow anything thrown into a GatewayError; unknown errors become `internal` with no detail. */
export function toGatewayError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err
  return new GatewayError('internal', undefined, { cause: err })
}
