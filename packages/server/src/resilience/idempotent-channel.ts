/**
 * A channel `POST` with `Idempotency-Key` (issue 7): executed once per principal and key, a repeat
 * answered with the first status, headers and body. Its body and its answer are read whole
 * (bounded by the channel's `maxBodyBytes`, else `gateway.bodyLimitBytes`) instead of streamed,
 * since the one has to be compared and the other kept; the call still crosses the system's
 * bulkhead, breaker and timeouts.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Dispatcher } from 'undici'
import type { CompiledChannel } from '../config/compile.ts'
import { GatewayError, toGatewayError } from '../errors/gateway-error.ts'
import type { RequestContext } from '../http/context.ts'
import { readBody } from '../http/read-body.ts'
import type { IdempotentAnswer } from '../store/types.ts'
import {
  type ProxyResult,
  requestHeaders,
  responseHeaders,
  upstreamFailure,
} from '../upstreams/http-proxy.ts'
import { guard } from './guard.ts'
import {
  errorToKeep,
  type IdempotencyService,
  idempotencyKeyOf,
  replayedHeader,
  requestHashOf,
} from './idempotency.ts'
import type { Resilience } from './registry.ts'

/** Headers of a kept answer that belong to the request that made it, never repeated. */
const perRequest = new Set(['x-correlation-id', 'date', 'connection', 'keep-alive', 'transfer-encoding'])

/**
 * What is stored of an answer: cookies stay out of the database (a session they set is the first
 * response's alone; a replay repeats the body, not the login).
 */
function kept(answer: LiveAnswer): IdempotentAnswer {
  if (answer.cookies === undefined) return answer
  const { cookies: _, ...stored } = answer
  return stored
}

/** The first answer as the client gets it: with its cookies, one header each. */
type LiveAnswer = IdempotentAnswer & { cookies?: string[] }

/**
 * Whether this request takes the idempotent path: a POST carrying the header, from a proven
 * principal. Anonymous callers of a public rule have nothing that tells them apart (an address is
 * shared behind a proxy or NAT), so one could replay another's answer by guessing its key, and
 * anyone could fill the store: their key is passed on to the backend untouched instead.
 */
export function wantsIdempotency(req: IncomingMessage, ctx: RequestContext): boolean {
  return ctx.method === 'POST' && ctx.principal !== undefined && req.headers['idempotency-key'] !== undefined
}

function write(res: ServerResponse, ctx: RequestContext, answer: LiveAnswer, replayed: boolean): void {
  const headers: Record<string, string | number | string[]> = { ...answer.headers }
  if (answer.cookies !== undefined) headers['set-cookie'] = answer.cookies
  const { header, on } = ctx.config.gateway.requestId
  if (on === 'always') headers[header] = ctx.requestId
  headers['x-correlation-id'] = ctx.correlationId
  headers['content-length'] = answer.body.length
  if (replayed) headers[replayedHeader] = 'true'
  res.writeHead(answer.status, headers)
  res.end(answer.body)
}

/** Forward one buffered POST under the system's resilience and read the answer whole. */
async function send(
  resilience: Resilience,
  req: IncomingMessage,
  ctx: RequestContext,
  channel: CompiledChannel,
  path: string,
  dispatcher: Dispatcher,
  body: Buffer,
  limit: number,
): Promise<{ answer: LiveAnswer; upstreamMs: number }> {
  const policy = channel.system.resilience
  const target = resilience.target('system', channel.system.name, policy)
  const started = performance.now()
  const done = await guard(
    target,
    { idempotent: false, now: resilience.now, random: resilience.random },
    async () => {
      let response: Dispatcher.ResponseData
      try {
        response = await dispatcher.request({
          origin: channel.system.origin,
          path: path + ctx.query,
          method: 'POST',
          headers: requestHeaders(req, ctx, channel),
          body,
          headersTimeout: policy.headersTimeoutMs ?? channel.timeoutMs,
          bodyTimeout: channel.timeoutMs,
          ...(policy.totalTimeoutMs === undefined
            ? {}
            : { signal: AbortSignal.timeout(policy.totalTimeoutMs) }),
        })
      } catch (err) {
        throw (err as Error).name === 'TimeoutError'
          ? new GatewayError('upstream_timeout', undefined, {
              details: { timeout: 'total', timeoutMs: policy.totalTimeoutMs },
              cause: err,
            })
          : upstreamFailure(err)
      }
      const chunks: Buffer[] = []
      let size = 0
      try {
        for await (const chunk of response.body as AsyncIterable<Buffer>) {
          size += chunk.length
          if (size > limit) {
            throw new GatewayError('upstream_error', `The upstream answer is larger than ${limit} bytes.`, {
              details: { reason: 'too_large', upstreamStatus: response.statusCode },
            })
          }
          chunks.push(chunk)
        }
      } catch (err) {
        throw err instanceof GatewayError ? err : upstreamFailure(err)
      }
      const headers: Record<string, string> = {}
      let cookies: string[] | undefined
      const out = responseHeaders(response.headers as Record<string, string | string[]>, ctx, channel)
      for (const [name, value] of Object.entries(out)) {
        if (perRequest.has(name) || name === ctx.config.gateway.requestId.header || value === undefined)
          continue
        if (name === 'set-cookie') cookies = Array.isArray(value) ? value : [String(value)]
        else headers[name] = Array.isArray(value) ? value.join(', ') : String(value)
      }
      delete headers['content-length']
      const answer: LiveAnswer = { status: response.statusCode, headers, body: Buffer.concat(chunks, size) }
      if (cookies !== undefined) answer.cookies = cookies
      return { kind: 'answer' as const, value: answer, status: answer.status }
    },
  )
  done.release()
  return { answer: done.value, upstreamMs: performance.now() - started }
}

/** Serve the POST once per key; `done` as the proxy's, called once. */
export function forwardIdempotent(
  resilience: Resilience,
  idempotency: IdempotencyService,
  req: IncomingMessage,
  res: ServerResponse,
  ctx: RequestContext,
  channel: CompiledChannel,
  path: string,
  dispatcher: Dispatcher,
  done: (result: ProxyResult) => void,
): void {
  let upstreamMs: number | undefined
  const run = async (): Promise<void> => {
    const key = idempotencyKeyOf(req)!
    const limit = channel.maxBodyBytes ?? ctx.config.gateway.bodyLimitBytes
    const body = await readBody(req, limit)
    const result = await idempotency.run(
      {
        // Kind and id: an agent and a user with the same id never share a key.
        principal: `${ctx.principal!.kind}:${ctx.principal!.id}`,
        key,
        requestHash: requestHashOf('channel', channel.name, path, ctx.query, body),
        ...ctx.config.idempotency,
      },
      async () => {
        const sent = await send(
          resilience,
          req,
          ctx,
          channel,
          path,
          dispatcher,
          body,
          ctx.config.gateway.bodyLimitBytes,
        )
        upstreamMs = sent.upstreamMs
        return { value: sent.answer, answer: kept(sent.answer) }
      },
      (err) => errorToKeep(err, ctx.requestId),
    )
    const answer = result.replayed ? result.answer : result.value
    write(res, ctx, answer, result.replayed)
    done({ status: answer.status, upstreamMs, error: undefined })
  }
  run().catch((err: unknown) => {
    const error = toGatewayError(err)
    done({ status: error.status, upstreamMs, error })
  })
}
