/**
 * Reads a request body that the gateway parses itself (token requests), refusing it as soon as it
 * passes the limit instead of buffering an attacker's gigabyte first.
 */
import type { IncomingMessage } from 'node:http'
import { GatewayError } from '../errors/gateway-error.ts'

export function readBody(req: IncomingMessage, limitBytes: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'])
  if (Number.isFinite(declared) && declared > limitBytes) {
    return Promise.reject(new GatewayError('payload_too_large', undefined, { details: { limitBytes } }))
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    const cleanup = (): void => {
      req.off('data', onData)
      req.off('end', onEnd)
      req.off('error', onError)
      req.off('aborted', onAborted)
    }
    const onData = (chunk: Buffer): void => {
      size += chunk.length
      if (size > limitBytes) {
        cleanup()
        // Stop reading; the error answer closes the connection since the body was not consumed.
        req.pause()
        reject(new GatewayError('payload_too_large', undefined, { details: { limitBytes } }))
        return
      }
      chunks.push(chunk)
    }
    const onEnd = (): void => {
      cleanup()
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size))
    }
    const onError = (err: Error): void => {
      cleanup()
      reject(new GatewayError('bad_request', 'The request body could not be read.', { cause: err }))
    }
    const onAborted = (): void => onError(new Error('client aborted'))
    req.on('data', onData)
    req.on('end', onEnd)
    req.on('error', onError)
    req.on('aborted', onAborted)
  })
}

/**
 * Parse a body as form-encoded (`application/x-www-form-urlencoded`, what RFC 6749 clients send)
 * or JSON; anything else is refused. Values are strings; repeated form keys keep the first.
 */
export function parseFormOrJson(body: Buffer, contentType: string | undefined): Record<string, unknown> {
  const type = (contentType ?? '').split(';')[0]!.trim().toLowerCase()
  const text = body.toString('utf8')
  if (type === 'application/x-www-form-urlencoded') {
    const out: Record<string, unknown> = Object.create(null)
    for (const [key, value] of new URLSearchParams(text)) if (!(key in out)) out[key] = value
    return out
  }
  if (type === 'application/json' || type.endsWith('+json')) {
    let parsed: unknown
    try {
      parsed = JSON.parse(text)
    } catch {
      throw new GatewayError('invalid_request', 'The request body is not valid JSON.')
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new GatewayError('invalid_request', 'The request body must be a JSON object.')
    }
    return Object.assign(Object.create(null), parsed) as Record<string, unknown>
  }
  throw new GatewayError(
    'invalid_request',
    'Send the token request as application/x-www-form-urlencoded or application/json.',
  )
}
