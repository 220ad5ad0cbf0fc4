/**
 * The public listener: a bare `node:http` server whose handler is the pipeline. Fastify's router
 * and hooks cost about a quarter of a proxy's throughput here (STACK.md), so the hot path runs
 * on node:http and Fastify serves only the admin API.
 */

import { randomUUID } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { Socket } from 'node:net'
import { GatewayError } from '../errors/gateway-error.ts'
import { errorBody } from '../errors/write-error.ts'
import type { Pipeline } from './pipeline.ts'

/** Answer a request Node could not parse (oversized head: 431, anything else: 400) and close. */
function onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
  // A response still in flight on this connection (keep-alive, pipelining) owns the socket: bytes
  // written now would be read as that response, or land inside its body. Cut the connection instead.
  const inFlight = (socket as { _httpMessage?: unknown })._httpMessage
  if (!socket.writable || (err as { code?: string }).code === 'ECONNRESET' || inFlight) {
    socket.destroy()
    return
  }
  const error =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? new GatewayError('headers_too_large')
      : new GatewayError('bad_request', 'The request could not be parsed as HTTP/1.1.')
  const body = errorBody(error, randomUUID())
  socket.end(
    `HTTP/1.1 ${error.status} ${error.code === 'headers_too_large' ? 'Request Header Fields Too Large' : 'Bad Request'}\r\n` +
      `content-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
      `connection: close\r\n\r\n${body}`,
  )
}

/** Create the public server; `maxHeaderBytes` bounds the request head (431 above it). */
export function createPublicServer(pipeline: Pipeline, options: { maxHeaderBytes: number }): Server {
  const server = createServer(
    {
      maxHeaderSize: options.maxHeaderBytes,
      keepAliveTimeout: 60_000,
      // A client that never finishes its head is cut off (slowloris); bodies stream for longer.
      headersTimeout: 30_000,
      requestTimeout: 0,
    },
    pipeline.handle,
  )
  server.on('clientError', onClientError)
  return server
}
