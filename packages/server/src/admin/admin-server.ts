/**
 * The admin listener (DESIGN §3): a Fastify app with JSON in and out, every route behind an admin
 * key except `/health` and `/ready`. Resources register themselves as plugins (`routes`), one file
 * per resource, so later work adds agents, policies and audit without touching this file.
 */
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { CompiledConfig } from '../config/compile.ts'
import { GatewayError, toGatewayError } from '../errors/gateway-error.ts'
import { errorBody } from '../errors/write-error.ts'
import { createContext, type RequestContext, requestIdHeaderFor } from '../http/context.ts'
import type { Readiness } from '../http/pipeline.ts'
import type { Logger } from '../observability/logger.ts'
import type { Metrics } from '../observability/metrics.ts'
import type { AdminKeys } from './admin-keys.ts'

declare module 'fastify' {
  interface FastifyRequest {
    runr: RequestContext
  }
}

export interface AdminDeps {
  currentConfig(): CompiledConfig
  keys: AdminKeys
  metrics: Metrics
  logger: Logger
  readiness(): Promise<Readiness>
  /** Resource plugins: each adds its routes to the admin app. */
  routes: ReadonlyArray<(app: FastifyInstance) => void>
}

const openPaths = new Set(['/health', '/ready'])

/** Map Fastify's own errors (body parsing, limits, validation) onto the catalogue. */
function fromFastifyError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err
  const e = err as { code?: string; statusCode?: number; validation?: unknown; message?: string }
  if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new GatewayError('payload_too_large')
  if (e.validation !== undefined) return new GatewayError('bad_request', e.message)
  if (e.code?.startsWith('FST_ERR_CTP_') || (e.statusCode === 400 && err instanceof SyntaxError)) {
    return new GatewayError('bad_request', 'The request body is not valid JSON of the expected media type.')
  }
  return toGatewayError(err)
}

/** Send a GatewayError in the common body from a Fastify route. */
export function sendError(request: FastifyRequest, reply: FastifyReply, err: GatewayError): FastifyReply {
  const ctx = request.runr
  request.runr.errorCode = err.code
  const idHeader = requestIdHeaderFor(ctx, err.status)
  if (idHeader !== undefined) reply.header(idHeader, ctx.requestId)
  if (err.headers !== undefined) reply.headers(err.headers)
  return reply
    .code(err.status)
    .header('cache-control', 'no-store')
    .type('application/json; charset=utf-8')
    .send(errorBody(err, ctx.requestId))
}

/** Build the admin app (not yet listening). */
export function createAdminServer(deps: AdminDeps): FastifyInstance {
  const config = deps.currentConfig()
  const app = Fastify({
    logger: false,
    bodyLimit: config.gateway.bodyLimitBytes,
    routerOptions: { maxParamLength: 256 },
    return503OnClosing: true,
    // Unknown body keys are refused, not silently dropped (Fastify's default strips them): a
    // typo such as `requireDPoP` must not look like it worked.
    ajv: { customOptions: { removeAdditional: false } },
  })

  // The keys follow the running config: resolved once at start, a key removed from
  // gateway.admin.keys by a reload kept working and a new one was refused until a restart.
  let keys = deps.keys
  let keysFrom = config.gateway.admin.keys
  const currentKeys = (running: CompiledConfig): AdminKeys => {
    const configured = running.gateway.admin.keys
    if (configured !== keysFrom && JSON.stringify(configured) !== JSON.stringify(keysFrom)) {
      keys = keys.withConfigured(configured)
    }
    keysFrom = configured
    return keys
  }

  app.addHook('onRequest', async (request, reply) => {
    request.runr = createContext(request.raw, deps.currentConfig(), performance.now())
    const url = request.url
    const q = url.indexOf('?')
    request.runr.path = q < 0 ? url : url.slice(0, q)
    reply.header('x-correlation-id', request.runr.correlationId)
    const ok = requestIdHeaderFor(request.runr, 200)
    if (ok !== undefined) reply.header(ok, request.runr.requestId)
    if (openPaths.has(request.runr.path)) return
    const header = request.headers.authorization
    const presented =
      typeof header === 'string' && /^Bearer /i.test(header) ? header.slice(7).trim() : undefined
    if (presented === undefined || presented === '' || !currentKeys(request.runr.config).verify(presented)) {
      return sendError(
        request,
        reply,
        new GatewayError('unauthenticated', 'An admin key is required: Authorization: Bearer <admin key>.', {
          headers: { 'www-authenticate': 'Bearer realm="4runr-admin"' },
        }),
      )
    }
  })

  app.addHook('onResponse', async (request, reply) => {
    const ctx = request.runr
    const seconds = (performance.now() - ctx.startedAt) / 1000
    const route = request.routeOptions.url ?? 'unmatched'
    deps.metrics.observeRequest(`admin:${route}`, request.method, reply.statusCode, seconds)
    if (openPaths.has(ctx.path)) return
    deps.logger.info(
      {
        requestId: ctx.requestId,
        correlationId: ctx.correlationId,
        listener: 'admin',
        method: request.method,
        route,
        status: reply.statusCode,
        error: ctx.errorCode,
        durationMs: Math.round(seconds * 1e6) / 1000,
      },
      'request',
    )
  })

  // An empty body with a JSON content type is no body, not invalid JSON: `curl -X POST -H
  // 'content-type: application/json'` on a route that takes none (POST /v1/config/reload) was
  // refused with 400. Anything that is sent is still parsed strictly (prototype poisoning refused).
  const parseJson = app.getDefaultJsonParser('error', 'error')
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    const text = body.toString()
    if (text === '') done(null, undefined)
    else parseJson(request, text, done)
  })

  // RFC 7662 introspection requests are form-encoded.
  app.addContentTypeParser(
    'application/x-www-form-urlencoded',
    { parseAs: 'string' },
    (_request, body, done) => {
      const out: Record<string, string> = Object.create(null)
      for (const [key, value] of new URLSearchParams(body.toString())) if (!(key in out)) out[key] = value
      done(null, out)
    },
  )

  app.setErrorHandler((err, request, reply) => {
    const error = fromFastifyError(err)
    if (error.code === 'internal')
      deps.logger.error({ requestId: request.runr?.requestId, err }, 'admin request failed')
    return sendError(request, reply, error)
  })
  app.setNotFoundHandler((request, reply) => sendError(request, reply, new GatewayError('not_found')))

  app.get('/health', async () => ({ status: 'ok' }))
  app.get('/ready', async (request, reply) => {
    const verdict = await deps.readiness()
    if (verdict.ready) return { status: 'ready' }
    return sendError(
      request,
      reply,
      new GatewayError('not_ready', undefined, { details: { reasons: verdict.reasons } }),
    )
  })
  app.get('/metrics', async (_request, reply) => {
    reply.type(deps.metrics.registry.contentType)
    return deps.metrics.registry.metrics()
  })
  for (const register of deps.routes) register(app)
  return app
}
