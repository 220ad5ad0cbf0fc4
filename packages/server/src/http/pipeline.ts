/**
 * The public listener's request pipeline (DESIGN §4). Every request crosses the same stages in
 * the same order; a stage either continues or ends the request with a GatewayError, and the
 * record stage always runs. The order matters for security and is explained where it does.
 *
 *   1 context → 2 route → 3 authenticate → 4 rate limit → 5 authorize → 6 cache → 7 call
 *   → 8 respond → 9 record
 *
 * Stage 4 checks the compiled rate limits (ratelimit/); stage 6 the response cache (cache/).
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AuditService } from '../audit/audit-service.ts'
import { serveCachedChannel } from '../cache/channel-cache.ts'
import type { ResponseCache } from '../cache/response-cache.ts'
import type { CompiledConfig } from '../config/compile.ts'
import { GatewayError, toGatewayError } from '../errors/gateway-error.ts'
import { writeError } from '../errors/write-error.ts'
import type { Logger } from '../observability/logger.ts'
import type { Metrics } from '../observability/metrics.ts'
import { decisionAttributes, inPhase, type Tracing } from '../observability/tracing.ts'
import { type Authorized, parkedReply } from '../policy/enforcer.ts'
import { type DecisionInput, scopeHas } from '../policy/policy-set.ts'
import type { CompiledLimit } from '../ratelimit/compile-limits.ts'
import {
  addLimitHeaders,
  type LimitCheck,
  type LimitVerdict,
  type RateLimiter,
  setLimitHeaders,
} from '../ratelimit/limiter.ts'
import type { ForwardFn } from '../resilience/channel-call.ts'
import type { AgentRoute } from '../tools/tool-routes.ts'
import { forwardRequest, type ProxyResult } from '../upstreams/http-proxy.ts'
import type { Pools } from '../upstreams/pools.ts'
import { createContext, type Principal, type RequestContext, requestIdHeaderFor } from './context.ts'
import { normalizePath } from './normalize-path.ts'
import { type ChannelMatch, matchChannel, matchRule, upstreamPath } from './route-match.ts'

/** A tool call's metrics; by agent name too when `metrics.perAgent` is on. */
function observeTool(metrics: Metrics, ctx: RequestContext, seconds: number): void {
  const tool = ctx.tool!
  const agent = ctx.config.raw.metrics?.perAgent === true ? ctx.principal?.agent?.name : undefined
  metrics.observeTool(tool.name, tool.action, ctx.status, seconds, agent)
  if (tool.promptTokens + tool.completionTokens > 0)
    metrics.llmTokens(tool.name, tool.promptTokens, tool.completionTokens, agent)
}

/** Close the request span with what the request log line says. */
function endTrace(ctx: RequestContext): void {
  ctx.trace!.end(
    ctx.route,
    {
      'http.route': ctx.route,
      // The normalised path, without the query: that can carry keys.
      'url.path': ctx.path,
      'http.response.status_code': ctx.status,
      'runr.correlation_id': ctx.correlationId,
      ...(ctx.channel === undefined ? {} : { 'runr.channel': ctx.channel.name }),
      ...(ctx.principal === undefined ? {} : { 'runr.principal': ctx.principal.id }),
      ...(ctx.decision === undefined ? {} : { 'runr.decision': ctx.decision }),
      ...(ctx.policyRule === undefined ? {} : { 'runr.policy_rule': ctx.policyRule }),
      ...(ctx.errorCode === undefined ? {} : { 'error.type': ctx.errorCode }),
    },
    ctx.status,
  )
}

/** Remember the decision for the request log line. */
export function noteDecision(ctx: RequestContext, outcome: Authorized): void {
  ctx.decision = outcome.kind === 'parked' ? 'approval_required' : outcome.decision.decision
  ctx.policyRule = outcome.decision.rule ?? undefined
}

/** The request body's size when known: its Content-Length, or 0 for a request without a body. */
function requestBytes(req: IncomingMessage): number | undefined {
  const length = req.headers['content-length']
  if (length !== undefined) {
    const n = Number(length)
    return Number.isSafeInteger(n) && n >= 0 ? n : undefined
  }
  return req.headers['transfer-encoding'] === undefined ? 0 : undefined
}

/**
 * Proves a principal from the request (agent token, session cookie, client certificate), answers
 * undefined when the request carries no credential of its kind, and throws (or rejects with) a
 * GatewayError when it carries a bad one. It answers synchronously when it can (a cached token),
 * so the common case costs no promise.
 */
export type Authenticator = (
  req: IncomingMessage,
  ctx: RequestContext,
) => Principal | undefined | Promise<Principal | undefined>

/** A built-in JSON route on the public listener (`/v1/token`, `/.well-known/jwks.json`). */
export interface PublicRoute {
  readonly methods: readonly string[]
  handle(req: IncomingMessage, ctx: RequestContext): Promise<JsonAnswer>
}

/**
 * An answer streamed as it arrives (an upstream's server-sent events): written chunk by chunk with
 * backpressure; when the client goes away the iteration stops, which aborts the upstream.
 */
export interface StreamAnswer {
  status: number
  headers: Record<string, string>
  stream: AsyncIterable<Uint8Array>
}

export interface JsonAnswer {
  status: number
  body: unknown
  headers?: Record<string, string>
}

/** The readiness verdict for `/ready`. */
export interface Readiness {
  ready: boolean
  reasons: string[]
}

export interface PipelineDeps {
  /** The config version new requests start on (swapped atomically by reload). */
  currentConfig(): CompiledConfig
  pools: Pools
  metrics: Metrics
  logger: Logger
  /** Tried in order; the first that returns a principal wins. Empty: only public routes work. */
  authenticators: readonly Authenticator[]
  /** Built-in routes by exact path; looked up after /health and /ready, before the channels. */
  routes?: ReadonlyMap<string, PublicRoute>
  /** Routes for authenticated agents (tool calls, approval polls), looked up after `routes`. */
  agentRoute?: (path: string) => AgentRoute | undefined
  /**
   * Stage 5 for agents on channels: the policy decision with its quota, loop guard and approval.
   * Without it (tests of the proxy alone) an agent needs only the channel in its token's scope.
   */
  authorize?: (input: DecisionInput, approvalId: string | undefined) => Authorized | Promise<Authorized>
  /** Stage 4. Without it (tests of the proxy alone) no rate limit is checked. */
  limiter?: RateLimiter
  /** Stage 6 for channel rules with `cache`. Without it nothing is served from a cache. */
  cache?: ResponseCache
  readiness(): Promise<Readiness>
  /** The audit ledger (stage 9, and the refusal while it cannot be written); absent when disabled. */
  audit?: Pick<AuditService, 'record' | 'hold' | 'refusal'>
  /** OpenTelemetry spans per request, when `tracing.endpoint` is set. */
  tracing?: Tracing
  /**
   * Stage 7 for channels: the proxy behind the system's bulkhead, breaker, retries and timeouts
   * (resilience/channel-call.ts). Without it, the bare proxy.
   */
  forward?: ForwardFn
}

export interface Pipeline {
  handle(req: IncomingMessage, res: ServerResponse): void
  /** Requests started and not yet recorded; shutdown waits for this to reach 0. */
  inflight(): number
}

/** Build the request handler for the public listener. */
export function createPipeline(deps: PipelineDeps): Pipeline {
  let inflight = 0
  const forwardUntraced: ForwardFn = deps.forward ?? forwardRequest
  // The channel's upstream call as a client span, whose id the proxy sends upstream as the parent.
  const forward: ForwardFn = (req, res, ctx, channel, path, dispatcher, done) => {
    if (ctx.trace === undefined) {
      forwardUntraced(req, res, ctx, channel, path, dispatcher, done)
      return
    }
    const span = ctx.trace.upstream(`upstream ${channel.system.name}`, {
      'runr.system': channel.system.name,
      'server.address': channel.system.origin,
    })
    forwardUntraced(req, res, ctx, channel, path, dispatcher, (result) => {
      span.end(
        {
          'http.response.status_code': result.status,
          ...(result.error === undefined ? {} : { 'error.type': result.error.code }),
        },
        result.error !== undefined && result.error.status >= 500,
      )
      done(result)
    })
  }

  // Stage 9, record: metrics and the request log line. It runs exactly once per request, on
  // success and on every error path alike.
  function record(ctx: RequestContext, logging: boolean): void {
    inflight--
    deps.audit?.record(ctx)
    if (ctx.trace !== undefined) endTrace(ctx)
    const seconds = (performance.now() - ctx.startedAt) / 1000
    deps.metrics.observeRequest(ctx.route, ctx.method, ctx.status, seconds)
    if (ctx.upstreamMs !== undefined && ctx.channel !== undefined) {
      deps.metrics.observeUpstream(ctx.channel.system.name, ctx.upstreamMs / 1000)
    }
    if (ctx.tool !== undefined) observeTool(deps.metrics, ctx, seconds)
    if (!logging || !deps.logger.isLevelEnabled('info')) return
    // Built field by field: no headers, no query string (it can carry keys), no body.
    deps.logger.info(
      {
        requestId: ctx.requestId,
        correlationId: ctx.correlationId,
        traceId: ctx.traceId,
        method: ctx.method,
        route: ctx.route,
        path: ctx.path,
        channel: ctx.channel?.name,
        rule: ctx.rule?.path,
        audit: ctx.rule?.audit || undefined,
        principal: ctx.principal?.id,
        decision: ctx.decision,
        policyRule: ctx.policyRule,
        status: ctx.status,
        error: ctx.errorCode,
        durationMs: Math.round(seconds * 1e6) / 1000,
        upstreamMs: ctx.upstreamMs === undefined ? undefined : Math.round(ctx.upstreamMs * 1000) / 1000,
      },
      'request',
    )
  }

  function fail(req: IncomingMessage, res: ServerResponse, ctx: RequestContext, err: GatewayError): void {
    ctx.status = err.status
    ctx.errorCode = err.code
    if (err.code === 'policy_denied') {
      ctx.decision = 'deny'
      const rule = err.details?.['rule']
      if (typeof rule === 'string') ctx.policyRule = rule
    }
    if (err.code === 'internal' || err.code === 'upstream_error' || err.code === 'upstream_timeout') {
      deps.logger.warn({ requestId: ctx.requestId, code: err.code, err: err.cause ?? err }, 'request failed')
    }
    // An unread request body would be parsed as the next request on this connection: close it.
    if (!req.complete) res.shouldKeepAlive = false
    // A refusal's own RateLimit-* headers (429) win over these: writeHead overrides setHeader.
    if (ctx.rateLimit !== undefined && !res.headersSent) setLimitHeaders(res, ctx.rateLimit)
    // Every 401 says how to authenticate (RFC 6750 §3, RFC 9449 §7.1), refusals of a presented
    // token included, not only the bare "no credential" case.
    if (err.status === 401 && err.headers?.['www-authenticate'] === undefined && !res.headersSent) {
      res.setHeader(
        'www-authenticate',
        err.code === 'invalid_dpop_proof'
          ? 'DPoP error="invalid_dpop_proof", algs="EdDSA ES256"'
          : 'Bearer error="invalid_token", DPoP algs="EdDSA ES256"',
      )
    }
    const held = deps.audit?.hold(ctx)
    if (held === undefined) {
      writeError(res, err, {
        requestId: ctx.requestId,
        requestIdHeader: requestIdHeaderFor(ctx, err.status),
        correlationId: ctx.correlationId,
      })
    } else {
      afterAudit(res, ctx, held, () =>
        writeError(res, err, {
          requestId: ctx.requestId,
          requestIdHeader: requestIdHeaderFor(ctx, err.status),
          correlationId: ctx.correlationId,
        }),
      )
    }
    record(ctx, ctx.rule?.logging ?? true)
  }

  // audit.durability sync: the answer waits for its entry's commit (stage 9 then skips it), and
  // becomes a 503 when the entry cannot be written and audit.onFailure is refuse. Counted as in
  // flight meanwhile, so a graceful stop waits for it.
  function afterAudit(
    res: ServerResponse,
    ctx: RequestContext,
    held: Promise<GatewayError | undefined>,
    write: () => void,
  ): void {
    inflight++
    held
      .then((refused) => {
        inflight--
        if (refused === undefined) {
          write()
          return
        }
        ctx.status = refused.status
        ctx.errorCode = refused.code
        writeError(res, refused, {
          requestId: ctx.requestId,
          requestIdHeader: requestIdHeaderFor(ctx, refused.status),
          correlationId: ctx.correlationId,
        })
      })
      // A throw while writing must not become an unhandled rejection, which ends the process.
      .catch((err: unknown) => {
        deps.logger.error({ err, requestId: ctx.requestId }, 'writing an audited answer failed')
        const error = toGatewayError(err)
        if (res.headersSent) res.destroy()
        else
          writeError(res, error, {
            requestId: ctx.requestId,
            requestIdHeader: requestIdHeaderFor(ctx, error.status),
            correlationId: ctx.correlationId,
          })
      })
  }

  function sendJson(
    res: ServerResponse,
    ctx: RequestContext,
    status: number,
    body: unknown,
    extra?: Record<string, string>,
  ): void {
    const text = JSON.stringify(body)
    const headers: Record<string, string | number> = {
      ...extra,
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(text),
      'cache-control': 'no-store',
      'x-correlation-id': ctx.correlationId,
    }
    const idHeader = requestIdHeaderFor(ctx, status)
    if (idHeader !== undefined) headers[idHeader] = ctx.requestId
    // The tightest limit, tool routes' own included (they may tighten it after stage 4).
    if (ctx.rateLimit !== undefined) addLimitHeaders(headers, ctx.rateLimit)
    ctx.status = status
    const held = deps.audit?.hold(ctx)
    if (held === undefined) {
      res.writeHead(status, headers)
      res.end(ctx.method === 'HEAD' ? undefined : text)
      return
    }
    afterAudit(res, ctx, held, () => {
      res.writeHead(status, headers)
      res.end(ctx.method === 'HEAD' ? undefined : text)
    })
  }

  function builtin(req: IncomingMessage, res: ServerResponse, ctx: RequestContext): boolean {
    if (ctx.path === '/health') {
      ctx.route = '/health'
      sendJson(res, ctx, 200, { status: 'ok' })
      record(ctx, false)
      return true
    }
    if (ctx.path === '/ready') {
      ctx.route = '/ready'
      deps.readiness().then(
        (verdict) => {
          if (verdict.ready) {
            sendJson(res, ctx, 200, { status: 'ready' })
            record(ctx, false)
          } else {
            fail(
              req,
              res,
              ctx,
              new GatewayError('not_ready', undefined, { details: { reasons: verdict.reasons } }),
            )
          }
        },
        (err: unknown) => fail(req, res, ctx, toGatewayError(err)),
      )
      return true
    }
    // audit.onFailure: refuse: past /health and /ready, nothing is served unaudited.
    const refused = deps.audit?.refusal()
    if (refused !== undefined) {
      fail(req, res, ctx, refused)
      return true
    }
    const route = deps.routes?.get(ctx.path)
    if (route === undefined) return false
    ctx.route = ctx.path
    if (!route.methods.includes(ctx.method)) {
      const allow = route.methods.join(', ')
      fail(req, res, ctx, new GatewayError('method_not_allowed', undefined, { headers: { allow } }))
      return true
    }
    const run = (): void => {
      route.handle(req, ctx).then(
        (answer) => {
          sendJson(res, ctx, answer.status, answer.body, answer.headers)
          record(ctx, true)
        },
        (err: unknown) => fail(req, res, ctx, toGatewayError(err)),
      )
    }
    // Built-in routes have no principal yet: the global, path and ip limits apply.
    const go = limited(req, res, ctx, ctx.config.rateLimits.routes)
    if (go === true) run()
    else if (go !== false) void go.then((ok) => ok && run())
    return true
  }

  // Stage 4, rate limit: the limits of `limits` that apply to this request. Undefined when none
  // applies; throws, or rejects with, rate_limited.
  function checkLimits(
    req: IncomingMessage,
    ctx: RequestContext,
    limits: readonly CompiledLimit[],
  ): LimitCheck {
    if (limits.length === 0 || deps.limiter === undefined) return undefined
    return deps.limiter.check(limits, ctx, req)
  }

  // Every writer (sendJson, sendStream, the proxy, the cache) adds the headers from ctx.
  function admit(ctx: RequestContext, verdict: LimitVerdict | undefined): void {
    if (verdict !== undefined) ctx.rateLimit = verdict
  }

  /**
   * Stage 4 for the request: true to go on, false when it was refused (and answered), or a
   * promise of either with a Redis state. No limit, or the memory state, costs no promise and no
   * closure: the callers continue inline.
   */
  function limited(
    req: IncomingMessage,
    res: ServerResponse,
    ctx: RequestContext,
    limits: readonly CompiledLimit[],
  ): boolean | Promise<boolean> {
    if (limits.length === 0 || deps.limiter === undefined) return true
    let checked: LimitCheck
    try {
      checked = deps.limiter.check(limits, ctx, req)
    } catch (err) {
      fail(req, res, ctx, toGatewayError(err))
      return false
    }
    if (checked instanceof Promise) {
      return checked.then(
        (verdict) => {
          admit(ctx, verdict)
          return true
        },
        (err: unknown) => {
          fail(req, res, ctx, toGatewayError(err))
          return false
        },
      )
    }
    admit(ctx, checked)
    return true
  }

  // Stage 3, authenticate: the authenticators in order, the first principal wins. Resolves to
  // undefined when no authenticator recognised a credential.
  function authenticate(
    req: IncomingMessage,
    ctx: RequestContext,
  ): Principal | undefined | Promise<Principal | undefined> {
    return ctx.trace === undefined
      ? authenticateFrom(req, ctx, 0)
      : inPhase(
          ctx.trace,
          'authenticate',
          () => authenticateFrom(req, ctx, 0),
          (principal) => (principal === undefined ? undefined : { 'runr.principal.kind': principal.kind }),
        )
  }

  function authenticateFrom(
    req: IncomingMessage,
    ctx: RequestContext,
    from: number,
  ): Principal | undefined | Promise<Principal | undefined> {
    for (let i = from; i < deps.authenticators.length; i++) {
      const found = deps.authenticators[i]!(req, ctx)
      if (found instanceof Promise) {
        return found.then((principal) => principal ?? authenticateFrom(req, ctx, i + 1))
      }
      if (found !== undefined) return found
    }
    return undefined
  }

  function handle(req: IncomingMessage, res: ServerResponse): void {
    inflight++
    // Stage 1, context: ids first, so that even a malformed request gets an id in its error.
    const ctx = createContext(req, deps.currentConfig(), performance.now())
    if (deps.tracing !== undefined) ctx.trace = deps.tracing.begin(ctx)
    try {
      // Stage 2, route. Everything after this reads only the normalised path, and the upstream
      // receives that same path: a rule cannot be bypassed by spelling a path differently.
      const url = req.url ?? '/'
      const q = url.indexOf('?')
      const normalized = normalizePath(q < 0 ? url : url.slice(0, q))
      if (!normalized.ok) {
        fail(req, res, ctx, new GatewayError('bad_request', `Invalid request path: ${normalized.reason}.`))
        return
      }
      ctx.path = normalized.path
      ctx.query = q < 0 ? '' : url.slice(q)
      if (builtin(req, res, ctx)) return
      const agentRoute = deps.agentRoute?.(ctx.path)
      if (agentRoute !== undefined) {
        agentApi(req, res, ctx, agentRoute)
        return
      }

      const match = matchChannel(ctx.config, ctx.path)
      if (match === undefined) {
        fail(req, res, ctx, new GatewayError('not_found'))
        return
      }
      const { channel } = match
      ctx.channel = channel
      ctx.route = channel.name
      ctx.remainder = match.remainder
      const rule = matchRule(channel, match.remainder)
      // A disabled path answers exactly like a path that does not exist.
      if (rule === undefined || rule.disabled) {
        fail(req, res, ctx, new GatewayError('not_found'))
        return
      }
      ctx.rule = rule
      if (rule.methods !== null && !rule.methods.has(ctx.method)) {
        fail(
          req,
          res,
          ctx,
          new GatewayError('method_not_allowed', undefined, { headers: { allow: rule.allow } }),
        )
        return
      }

      if (rule.public) {
        const go = limited(req, res, ctx, channelLimits(ctx, channel.name))
        if (go === true) proceed(req, res, ctx, match)
        else if (go !== false) void go.then((ok) => ok && proceed(req, res, ctx, match))
        return
      }
      // Default deny: a rule that is not public needs a principal.
      const found = authenticate(req, ctx)
      if (found instanceof Promise) {
        found.then(
          (principal) => authenticated(req, res, ctx, match, principal),
          (err: unknown) => fail(req, res, ctx, toGatewayError(err)),
        )
      } else {
        authenticated(req, res, ctx, match, found)
      }
    } catch (err) {
      fail(req, res, ctx, toGatewayError(err))
    }
  }

  function authenticated(
    req: IncomingMessage,
    res: ServerResponse,
    ctx: RequestContext,
    match: ChannelMatch,
    principal: Principal | undefined,
  ): void {
    if (principal === undefined) {
      fail(
        req,
        res,
        ctx,
        new GatewayError('unauthenticated', undefined, { headers: { 'www-authenticate': 'Bearer, DPoP' } }),
      )
      return
    }
    ctx.principal = principal
    // Stage 4 after authentication, since limits per agent or user need the proven principal;
    // before authorization, so a refused request costs no policy decision or quota.
    const go = limited(req, res, ctx, channelLimits(ctx, match.channel.name))
    if (go === true) authorizeStage(req, res, ctx, match, principal)
    else if (go !== false) void go.then((ok) => ok && authorizeStage(req, res, ctx, match, principal))
  }

  function channelLimits(ctx: RequestContext, channel: string): readonly CompiledLimit[] {
    return ctx.config.rateLimits.channels.get(channel) ?? ctx.config.rateLimits.routes
  }

  function authorizeStage(
    req: IncomingMessage,
    res: ServerResponse,
    ctx: RequestContext,
    match: ChannelMatch,
    principal: Principal,
  ): void {
    // Stage 5, authorize: after authentication, so roles come from a proven principal. A rule
    // mapping methods to roles requires one of the roles listed for this method; an agent also
    // needs the channel in its token's scope and a policy allowing the call.
    const channel = match.channel
    const required = ctx.rule!.roles?.get(ctx.method)
    if (required !== undefined && !required.some((role) => principal.roles.includes(role))) {
      fail(req, res, ctx, new GatewayError('forbidden', undefined, { details: { requiredRoles: required } }))
      return
    }
    if (principal.kind !== 'agent') {
      proceed(req, res, ctx, match)
      return
    }
    let authorized: Authorized | Promise<Authorized> | undefined
    try {
      authorized =
        ctx.trace === undefined
          ? authorizeChannel(req, ctx, principal, channel.name)
          : (inPhase(
              ctx.trace,
              'policy',
              () => authorizeChannel(req, ctx, principal, channel.name),
              decisionAttributes,
            ) as Authorized | Promise<Authorized> | undefined)
    } catch (err) {
      fail(req, res, ctx, toGatewayError(err))
      return
    }
    if (authorized === undefined) {
      proceed(req, res, ctx, match)
    } else if (authorized instanceof Promise) {
      authorized.then(
        (outcome) => afterAuthorize(req, res, ctx, match, outcome),
        (err: unknown) => fail(req, res, ctx, toGatewayError(err)),
      )
    } else {
      afterAuthorize(req, res, ctx, match, authorized)
    }
  }

  function authorizeChannel(
    req: IncomingMessage,
    ctx: RequestContext,
    principal: Principal,
    channel: string,
  ): Authorized | Promise<Authorized> | undefined {
    const claims = principal.claims ?? {}
    const scope = typeof claims['scope'] === 'string' ? claims['scope'] : ''
    if (deps.authorize === undefined || principal.agent === undefined) {
      if (!scopeHas(scope, `channel:${channel}`)) {
        throw new GatewayError('forbidden', `The token's scope does not include channel:${channel}.`, {
          details: { reason: 'scope_missing', requiredScope: `channel:${channel}` },
        })
      }
      return undefined
    }
    return deps.authorize(
      {
        agent: principal.agent,
        scope,
        intent: typeof claims['intent'] === 'string' ? claims['intent'] : undefined,
        claims,
        target: { kind: 'channel', channel, path: ctx.remainder, method: ctx.method },
        args: ctx.query === '' ? {} : Object.fromEntries(new URLSearchParams(ctx.query)),
        request: { method: ctx.method, path: ctx.path, bytes: requestBytes(req), ip: ctx.clientIp },
        now: Date.now(),
      },
      typeof req.headers['x-approval-id'] === 'string' ? req.headers['x-approval-id'] : undefined,
    )
  }

  function afterAuthorize(
    req: IncomingMessage,
    res: ServerResponse,
    ctx: RequestContext,
    match: ChannelMatch,
    outcome: Authorized,
  ): void {
    noteDecision(ctx, outcome)
    if (outcome.kind === 'parked') {
      const { approval } = outcome
      // The body was not read: the connection cannot carry another request.
      if (!req.complete) res.shouldKeepAlive = false
      const reply = parkedReply(approval)
      sendJson(res, ctx, 202, reply.body, reply.headers)
      record(ctx, ctx.rule!.logging)
      return
    }
    proceed(req, res, ctx, match)
  }

  // The agent API (tool calls, approval polls): authenticated like a channel, answered as JSON.
  function agentApi(req: IncomingMessage, res: ServerResponse, ctx: RequestContext, route: AgentRoute): void {
    ctx.route = route.label
    if (!route.methods.includes(ctx.method)) {
      fail(
        req,
        res,
        ctx,
        new GatewayError('method_not_allowed', undefined, { headers: { allow: route.methods.join(', ') } }),
      )
      return
    }
    const answer = (principal: Principal | undefined): Promise<JsonAnswer | StreamAnswer> => {
      if (principal === undefined) {
        throw new GatewayError('unauthenticated', undefined, {
          headers: { 'www-authenticate': 'Bearer, DPoP' },
        })
      }
      ctx.principal = principal
      const checked = checkLimits(req, ctx, ctx.config.rateLimits.routes)
      if (checked instanceof Promise) {
        return checked.then((verdict) => {
          admit(ctx, verdict)
          return route.handle(req, ctx, principal)
        })
      }
      admit(ctx, checked)
      return route.handle(req, ctx, principal)
    }
    let pending: Promise<JsonAnswer | StreamAnswer>
    try {
      const found = authenticate(req, ctx)
      pending = found instanceof Promise ? found.then(answer) : answer(found)
    } catch (err) {
      fail(req, res, ctx, toGatewayError(err))
      return
    }
    pending.then(
      (result) => {
        if ('stream' in result) {
          sendStream(res, ctx, result)
          return
        }
        sendJson(res, ctx, result.status, result.body, result.headers)
        record(ctx, true)
      },
      (err: unknown) => fail(req, res, ctx, toGatewayError(err)),
    )
  }

  function sendStream(res: ServerResponse, ctx: RequestContext, answer: StreamAnswer): void {
    const headers: Record<string, string> = {
      ...answer.headers,
      'cache-control': 'no-store',
      'x-correlation-id': ctx.correlationId,
    }
    const idHeader = requestIdHeaderFor(ctx, answer.status)
    if (idHeader !== undefined) headers[idHeader] = ctx.requestId
    if (ctx.rateLimit !== undefined) addLimitHeaders(headers, ctx.rateLimit)
    ctx.status = answer.status
    res.writeHead(answer.status, headers)
    const iterator = answer.stream[Symbol.asyncIterator]()
    let closed = false
    res.once('close', () => {
      closed = true
    })
    const pump = async (): Promise<void> => {
      try {
        while (!closed) {
          const next = await iterator.next()
          if (next.done) break
          if (!res.write(next.value) && !closed) {
            await new Promise<void>((drained) => {
              const done = (): void => {
                res.off('drain', done)
                res.off('close', done)
                drained()
              }
              res.on('drain', done)
              res.on('close', done)
            })
          }
        }
      } finally {
        // A client that left stops the upstream: return() ends the producer's iteration.
        if (closed) await iterator.return?.()
      }
      res.end()
    }
    pump().then(
      () => record(ctx, true),
      (err: unknown) => {
        // Headers are gone: all that is left is to cut the stream so the client sees it broke.
        ctx.errorCode = toGatewayError(err).code
        deps.logger.warn({ requestId: ctx.requestId, err }, 'stream failed')
        res.destroy()
        record(ctx, true)
      },
    )
  }

  // Stage 7, call, and stage 8, respond: streamed by the proxy.
  function proceed(
    req: IncomingMessage,
    res: ServerResponse,
    ctx: RequestContext,
    match: ChannelMatch,
  ): void {
    try {
      const channel = match.channel
      const rule = ctx.rule!
      const path = upstreamPath(match, ctx.path)
      const dispatcher = deps.pools.get(channel.system)
      const finished = (result: ProxyResult): void => {
        ctx.upstreamMs = result.upstreamMs
        if (result.error !== undefined) {
          fail(req, res, ctx, result.error)
          return
        }
        ctx.status = result.status
        record(ctx, rule.logging)
      }
      // Stage 6, cache: GETs of a rule that opts in; the rest streams straight through.
      if (
        rule.cache !== null &&
        deps.cache !== undefined &&
        (ctx.method === 'GET' || ctx.method === 'HEAD')
      ) {
        const call = (done: (result: ProxyResult) => void): void =>
          forward(req, res, ctx, channel, path, dispatcher, done)
        serveCachedChannel(deps.cache, req, res, ctx, rule.cache, call, finished)
        return
      }
      forward(req, res, ctx, channel, path, dispatcher, finished)
    } catch (err) {
      fail(req, res, ctx, toGatewayError(err))
    }
  }

  return { handle, inflight: () => inflight }
}
