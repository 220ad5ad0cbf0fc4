import type { ServerResponse } from 'node:http'
import type { GatewayError } from './gateway-error.ts'

/** What the writer needs to know about the request an error ends. */
export interface ErrorTarget {
  requestId: string
  /** The request id header name, or undefined when ids are not echoed for this request. */
  requestIdHeader: string | undefined
  correlationId: string | undefined
}

/** Build the common error body (DESIGN §15). */
export function errorBody(err: GatewayError, requestId: string): string {
  const error: Record<string, unknown> = {
    code: err.code,
    message: err.message,
    status: err.status,
    requestId,
  }
  if (err.details !== undefined) error['details'] = err.details
  return JSON.stringify({ error })
}

/**
 * The only place an error becomes an HTTP response. When the response has already started
 * (the upstream failed mid-body) the connection is destroyed so the client sees a truncated
 * message rather than a clean end.
 */
export function writeError(res: ServerResponse, err: GatewayError, target: ErrorTarget): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  const body = errorBody(err, target.requestId)
  const headers: Record<string, string | number> = {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  }
  if (target.requestIdHeader !== undefined) headers[target.requestIdHeader] = target.requestId
  if (target.correlationId !== undefined) headers['x-correlation-id'] = target.correlationId
  if (err.headers !== undefined) Object.assign(headers, err.headers)
  res.writeHead(err.status, headers)
  res.end(res.req?.method === 'HEAD' ? undefined : body)
}
