/**
 * The agent-facing API routes (DESIGN §6, §7): `POST /v1/tools/{tool}/{action}`, `GET /v1/tools`,
 * `GET /v1/approvals/{id}`, the OpenAI passthrough `/v1/openai/*` and the compatibility route
 * `POST /api/proxy-request`. The pipeline has authenticated the agent before the agent routes
 * run (the compatibility route proves the token in its body itself); a tool call then goes:
 * parse and validate the parameters (every problem at once) → authorize (scope and policy, quota,
 * loop guard, approval) → resolve the secret → call the upstream → redact → answer. Validation
 * comes before authorization so that a malformed call costs no quota and parks no approval.
 */
import type { IncomingMessage } from 'node:http'
import { Compile } from 'typebox/compile'
import type { TokenService } from '../auth/token-service.ts'
import type { ResponseCache } from '../cache/response-cache.ts'
import { cachedToolAnswer, isUpstreamFailure, probeToolCache, storeToolAnswer } from '../cache/tool-cache.ts'
import { schemaProblems } from '../config/load.ts'
import { GatewayError } from '../errors/gateway-error.ts'
import { noteUsage, type Principal, type RequestContext } from '../http/context.ts'
import type { JsonAnswer, PublicRoute, StreamAnswer } from '../http/pipeline.ts'
import { readBody } from '../http/read-body.ts'
import { createDispatcherCache } from '../net/safe-fetch.ts'
import { decisionAttributes, inPhase } from '../observability/tracing.ts'
import type { Authorized, PolicyEnforcer } from '../policy/enforcer.ts'
import { canonicalJson } from '../policy/guards/args-shape.ts'
import type { PolicyService } from '../policy/policy-service.ts'
import type { DecisionTarget } from '../policy/policy-set.ts'
import { principalKeyed, type RateLimiter, tighter } from '../ratelimit/limiter.ts'
import {
  errorToKeep,
  type IdempotencyService,
  idempotencyKeyOf,
  replayedHeader,
  requestHashOf,
} from '../resilience/idempotency.ts'
import { noResilience } from '../resilience/policy.ts'
import { createResilience, type Resilience } from '../resilience/registry.ts'
import { createResilientClient } from '../resilience/resilient-client.ts'
import type { Store } from '../store/types.ts'
import { ClientGone } from './call-abort.ts'
import {
  agentOf,
  type CallFacts,
  checkShape,
  detachAfter,
  parkedAnswer,
  parseJsonObject,
  streamFiltered,
  toolSettings,
  traceHeadersOf,
} from './call-helpers.ts'
import { createOpenAIPassthrough } from './openai-passthrough.ts'
import type { ParamProblem, ToolAction, ToolDefinition, ToolSettings } from './types.ts'
import { createUpstreamClient } from './upstream-client.ts'

/** Finds a credential by secret name: the agent's own value first, else the tool-wide one. */
export interface SecretResolver {
  resolve(name: string, agentId: string): Promise<string | undefined>
}

/** A route on the public listener that needs an authenticated agent. */
export interface AgentRoute {
  readonly methods: readonly string[]
  /** The route label for logs and metrics (never the raw path: ids would explode the labels). */
  readonly label: string
  handle(req: IncomingMessage, ctx: RequestContext, principal: Principal): Promise<JsonAnswer | StreamAnswer>
}

export interface ToolRouteDeps {
  tools: ReadonlyMap<string, ToolDefinition>
  enforcer: PolicyEnforcer
  policies: PolicyService
  secrets: SecretResolver
  store: Store
  /** Largest upstream answer read, bytes. */
  maxAnswerBytes?: number
  /** Failures off the request path (usage accounting after a stream). */
  onError?: (err: unknown) => void
  /** Breakers, retry budgets and bulkheads of the tools (shared with the channels' systems). */
  resilience?: Resilience
  /** `Idempotency-Key` on tool calls: executed once, repeats answered from the store. */
  idempotency?: IdempotencyService
  /** Checks each tool's rate limits (stage 4 for what only the tool route knows: the tool). */
  limiter?: RateLimiter
  /** Stage 6: answers of idempotent actions the config caches (`tools.NAME.cacheTtl`). */
  cache?: ResponseCache
}

/** Verifies a bare access token: what `/api/proxy-request` needs of the token service. */
export type BodyTokenVerifier = Pick<TokenService, 'authenticate'>

/** The tool routes and what they hold open. */
export interface ToolService {
  /** The agent routes by normalised path (tool calls and list, approval polls, OpenAI passthrough). */
  agentRoute(path: string): AgentRoute | undefined
  /**
   * `POST /api/proxy-request {agent_token, tool, action, params}`: the tool route for clients of
   * the original 4Runr API, which send the token in the body. Register it as a public route.
   */
  proxyRequestRoute(tokens: BodyTokenVerifier): PublicRoute
  /** Close the upstream keep-alive pools (let calls in flight finish). */
  close(): Promise<void>
}

function headerText(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name]
  return typeof value === 'string' ? value : undefined
}

/** Build the tool routes: `agentRoute` for the pipeline, `proxyRequestRoute` for the public routes. */
export function createToolService(deps: ToolRouteDeps): ToolService {
  // Stage 7 for tools: bulkhead, breaker, retries and total timeout around the upstream client.
  const client = createResilientClient(
    createUpstreamClient(deps.maxAnswerBytes === undefined ? {} : { maxAnswerBytes: deps.maxAnswerBytes }),
    deps.resilience ?? createResilience(),
  )
  const dispatchers = createDispatcherCache()
  const validators = new WeakMap<ToolAction, ReturnType<typeof Compile>>()
  const validatorFor = (action: ToolAction) => {
    let compiled = validators.get(action)
    if (compiled === undefined) {
      compiled = Compile(action.params)
      validators.set(action, compiled)
    }
    return compiled
  }

  function authorize(
    facts: CallFacts,
    target: DecisionTarget,
    args: unknown,
    bytes: number,
  ): Authorized | Promise<Authorized> {
    const claims = facts.principal.claims ?? {}
    return deps.enforcer.authorize(
      {
        agent: facts.agent,
        scope: typeof claims['scope'] === 'string' ? claims['scope'] : '',
        intent: typeof claims['intent'] === 'string' ? claims['intent'] : undefined,
        claims,
        target,
        args,
        request: { method: facts.ctx.method, path: facts.ctx.path, bytes, ip: facts.ctx.clientIp },
        now: Date.now(),
      },
      headerText(facts.req, 'x-approval-id'),
    )
  }

  async function secretFor(settings: ToolSettings, toolName: string, agentId: string) {
    if (settings.secret === undefined) return undefined
    const secret = await deps.secrets.resolve(settings.secret, agentId)
    if (secret === undefined) {
      throw new GatewayError(
        'tool_unavailable',
        `Tool ${toolName} is not available: its secret "${settings.secret}" is not set.`,
        { details: { tool: toolName, secret: settings.secret } },
      )
    }
    return secret
  }

  function lookup(toolName: string, actionName: string): { tool: ToolDefinition; action: ToolAction } {
    const tool = deps.tools.get(toolName)
    const action = tool?.actions[actionName]
    if (tool === undefined || action === undefined || !Object.hasOwn(tool.actions, actionName)) {
      throw new GatewayError(
        'not_found',
        tool === undefined
          ? `No tool is named "${toolName}".`
          : `Tool ${toolName} has no action "${actionName}".`,
        { details: { tool: toolName, action: actionName } },
      )
    }
    return { tool, action }
  }

  /** Runs a tool call's upstream part under an Idempotency-Key: once, or its first answer again. */
  type KeepAnswer = (serve: () => Promise<JsonAnswer | StreamAnswer>) => Promise<JsonAnswer | StreamAnswer>

  async function runTool(
    facts: CallFacts,
    tool: ToolDefinition,
    actionName: string,
    action: ToolAction,
    params: unknown,
    bytes: number,
    allowStream: boolean,
    keep?: KeepAnswer,
  ): Promise<JsonAnswer | StreamAnswer> {
    const { ctx, agent } = facts
    ctx.tool = { name: tool.name, action: actionName, promptTokens: 0, completionTokens: 0 }
    // The tool's limits before any other work: a refused call costs no validation, no quota.
    const limited = deps.limiter?.checkTool(ctx, facts.req, tool.name)
    if (limited !== undefined) await limited
    if (typeof params !== 'object' || params === null || Array.isArray(params))
      throw new GatewayError('bad_request', 'The parameters must be a JSON object.')
    checkShape(params)
    let problems: ParamProblem[] = []
    if (!validatorFor(action).Check(params)) problems = schemaProblems(action.params, params)
    else if (action.validate !== undefined) problems = action.validate(params)
    if (problems.length > 0) {
      throw new GatewayError('bad_request', `Invalid parameters for ${tool.name}.${actionName}.`, {
        details: { problems },
      })
    }
    if (!allowStream && action.streams?.(params) === true) {
      throw new GatewayError(
        'bad_request',
        `This route cannot stream: call POST /v1/tools/${tool.name}/${actionName} to stream.`,
        { details: { reason: 'stream_unsupported' } },
      )
    }

    const target = { kind: 'tool' as const, tool: tool.name, action: actionName }
    const authorized =
      ctx.trace === undefined
        ? authorize(facts, target, params, bytes)
        : inPhase(ctx.trace, 'policy', () => authorize(facts, target, params, bytes), decisionAttributes)
    const outcome = authorized instanceof Promise ? await authorized : authorized
    if (outcome.kind === 'parked') return parkedAnswer(outcome)
    // Redaction needs the whole answer; known before the call, so refused before the upstream bills it.
    if (outcome.filter !== null && action.streams?.(params) === true) throw streamFiltered(outcome)
    // An Idempotency-Key covers what follows, after authorization and the limits: a repeat is a
    // call the token, the policy and the limits still allow, and it is redacted as a fresh one.
    const serve = async (): Promise<JsonAnswer | StreamAnswer> => {
      // Stage 6, cache: after authorization, so a cached answer is still a call the policy allows
      // and the quota counts; the filter below runs on a cached answer as on a fresh one.
      const callStarted = performance.now()
      const probing =
        deps.cache === undefined
          ? undefined
          : probeToolCache(deps.cache, facts.req, ctx, {
              agentId: agent.id,
              tool: tool.name,
              action: actionName,
              idempotent: action.idempotent,
              streams: action.streams?.(params) === true,
              params,
            })
      const cached = probing instanceof Promise ? await probing : probing
      const cacheFacts = {
        tool: tool.name,
        action: actionName,
        correlationId: ctx.correlationId,
        startedAt: callStarted,
      }
      if (cached?.probe.fresh !== undefined)
        return cachedToolAnswer(cached.probe.fresh, 'HIT', outcome.filter, cacheFacts)

      const settings = toolSettings(ctx.config, tool)
      const secret = await secretFor(settings, tool.name, agent.id)

      let hostCheck: ((host: string) => boolean) | undefined | null = null
      const closing = new ClientGone(facts.req.socket)
      // Before the trace headers: its id is the parent they name.
      const upstreamSpan = ctx.trace?.upstream(`tool ${tool.name}.${actionName}`, {
        'runr.tool': tool.name,
        'runr.action': actionName,
      })
      const trace = traceHeadersOf(ctx)
      const started = performance.now()
      let streaming = false
      const calls = client.forCall({
        tool: tool.name,
        idempotent: action.idempotent,
        policy: ctx.config.toolResilience.get(tool.name) ?? noResilience,
      })
      try {
        const result = await action.execute({
          params,
          secret,
          settings,
          // A getter: only http_fetch needs a real AbortSignal, and making one costs every call.
          get signal() {
            return closing.signal
          },
          traceHeaders: trace,
          upstream: (request) => calls.call(settings, request, closing, trace),
          upstreamStream: (request) => calls.open(settings, request, closing, trace),
          dispatchers,
          reportUsage: (usage) => {
            noteUsage(ctx, usage)
            deps.enforcer
              .recordTokens(outcome.rule, agent.id, usage.promptTokens + usage.completionTokens)
              .catch((err: unknown) => deps.onError?.(err))
          },
          // Worked out on the first redirect only: most calls never follow one.
          allowRedirectHost: (host) => {
            if (hostCheck === null) {
              const target = { kind: 'tool' as const, tool: tool.name, action: actionName }
              hostCheck = deps.policies.current().redirectHostCheck(agent, target, outcome.rule)
            }
            return hostCheck === undefined || hostCheck(host)
          },
        })
        const durationMs = performance.now() - started
        ctx.upstreamMs = durationMs
        upstreamSpan?.end({ 'http.response.status_code': result.upstreamStatus })
        if ('stream' in result) {
          // Redaction needs the whole answer; a stream would pass the unredacted parts on.
          if (outcome.filter !== null || !allowStream) {
            await result.stream[Symbol.asyncIterator]().return?.()
            throw outcome.filter !== null
              ? streamFiltered(outcome)
              : new GatewayError('bad_request', 'This route cannot stream.', {
                  details: { reason: 'stream_unsupported' },
                })
          }
          streaming = true
          return {
            status: result.upstreamStatus,
            headers: result.headers,
            stream: detachAfter(result.stream, closing.dispose),
          }
        }
        if (result.usage !== undefined) {
          noteUsage(ctx, result.usage)
          await deps.enforcer.recordTokens(
            outcome.rule,
            agent.id,
            result.usage.promptTokens + result.usage.completionTokens,
          )
        }
        if (cached !== undefined && deps.cache !== undefined)
          storeToolAnswer(deps.cache, cached, result.data, result.upstreamStatus)
        const data = outcome.filter === null ? result.data : outcome.filter.apply(result.data).value
        return {
          status: 200,
          headers: cached === undefined ? undefined : { 'x-cache': 'MISS' },
          body: {
            data,
            metadata: {
              tool: tool.name,
              action: actionName,
              correlationId: ctx.correlationId,
              cached: false,
              attempts: calls.attempts,
              upstreamStatus: result.upstreamStatus,
              durationMs: Math.round(durationMs * 1000) / 1000,
            },
          },
        }
      } catch (err) {
        upstreamSpan?.end({ 'error.type': (err as { code?: string }).code ?? 'internal' }, true)
        // stale-if-error: a failing upstream (or an open breaker) is answered from a stale entry.
        if (cached?.probe.stale !== undefined && isUpstreamFailure(err)) {
          deps.cache?.metrics.lookup('tool', 'stale')
          return cachedToolAnswer(cached.probe.stale, 'STALE', outcome.filter, cacheFacts)
        }
        throw err
      } finally {
        if (!streaming) closing.dispose()
      }
    }
    return keep === undefined ? serve() : keep(serve)
  }

  async function callTool(
    req: IncomingMessage,
    ctx: RequestContext,
    principal: Principal,
    toolName: string,
    actionName: string,
  ): Promise<JsonAnswer | StreamAnswer> {
    const agent = agentOf(principal)
    const { tool, action } = lookup(toolName, actionName)
    const body = await readBody(req, ctx.config.gateway.bodyLimitBytes)
    const params = parseJsonObject(body, 'The parameters')
    const facts = { req, ctx, principal, agent }
    const key = deps.idempotency === undefined ? undefined : idempotencyKeyOf(req)
    if (key === undefined) return runTool(facts, tool, actionName, action, params, body.length, true)
    // A stream is relayed as it arrives and cannot be kept for a repeat.
    if (action.streams?.(params) === true) {
      throw new GatewayError('bad_request', 'Idempotency-Key cannot be used on a streamed call.', {
        details: { reason: 'idempotency_stream' },
      })
    }
    const keep: KeepAnswer = async (serve) => {
      const result = await deps.idempotency!.run<JsonAnswer | StreamAnswer>(
        {
          principal: agent.id,
          key,
          requestHash: requestHashOf('tool', tool.name, actionName, canonicalJson(params)),
          ...ctx.config.idempotency,
        },
        async () => {
          const answer = await serve()
          if ('stream' in answer) return { value: answer, answer: undefined }
          const headers = { 'content-type': 'application/json; charset=utf-8', ...answer.headers }
          return {
            value: answer,
            answer: { status: answer.status, headers, body: Buffer.from(JSON.stringify(answer.body)) },
          }
        },
        (err) => errorToKeep(err, ctx.requestId),
      )
      if (!result.replayed) return result.value
      const { 'content-type': _, ...headers } = result.answer.headers
      return {
        status: result.answer.status,
        body: JSON.parse(result.answer.body.toString('utf8')),
        headers: { ...headers, [replayedHeader]: 'true' },
      }
    }
    return runTool(facts, tool, actionName, action, params, body.length, true, keep)
  }

  const list: AgentRoute = {
    methods: ['GET', 'HEAD'],
    label: '/v1/tools',
    async handle(_req, _ctx, principal) {
      const agent = agentOf(principal)
      const scope = typeof principal.claims?.['scope'] === 'string' ? principal.claims['scope'] : ''
      const granted = new Set(scope.split(' '))
      const set = deps.policies.current()
      const tools = []
      for (const tool of deps.tools.values()) {
        const actions = []
        for (const [name, action] of Object.entries(tool.actions)) {
          const token = `${tool.name}:${name}`
          if (!granted.has(token) && !granted.has(`${tool.name}:*`)) continue
          if (!set.canEverGrant(agent, token)) continue
          actions.push({
            name,
            description: action.description,
            idempotent: action.idempotent,
            params: action.params,
          })
        }
        if (actions.length > 0) tools.push({ name: tool.name, description: tool.description, actions })
      }
      return { status: 200, body: { tools } }
    },
  }

  const approvalPoll = (id: string): AgentRoute => ({
    methods: ['GET', 'HEAD'],
    label: '/v1/approvals/{id}',
    async handle(_req, _ctx, principal) {
      const agent = agentOf(principal)
      const approval = await deps.store.approvals.get(id)
      // Another agent's approval answers like a missing one.
      if (approval === undefined || approval.agentId !== agent.id)
        throw new GatewayError('not_found', 'No such approval.')
      return {
        status: 200,
        body: {
          approvalId: approval.id,
          status: approval.status,
          expiresAt: new Date(approval.expiresAt).toISOString(),
          decidedAt: approval.decidedAt === null ? null : new Date(approval.decidedAt).toISOString(),
          note: approval.note,
        },
      }
    },
  })

  const openaiTool = deps.tools.get('openai')
  const passthrough =
    openaiTool === undefined
      ? undefined
      : createOpenAIPassthrough({
          tool: openaiTool,
          client,
          limiter: deps.limiter,
          authorize,
          secretFor,
          recordTokens: (rule, agentId, tokens) => deps.enforcer.recordTokens(rule, agentId, tokens),
          onError: (err) => deps.onError?.(err),
        })

  function agentRoute(path: string): AgentRoute | undefined {
    if (path === '/v1/tools') return list
    if (path.startsWith('/v1/tools/')) {
      const rest = path.slice('/v1/tools/'.length).split('/')
      if (rest.length !== 2 || rest[0] === '' || rest[1] === '') return undefined
      const [tool, action] = rest as [string, string]
      return {
        methods: ['POST'],
        label: '/v1/tools/{tool}/{action}',
        handle: (req, ctx, principal) => callTool(req, ctx, principal, tool, action),
      }
    }
    if (path.startsWith('/v1/approvals/')) {
      const id = path.slice('/v1/approvals/'.length)
      if (id === '' || id.includes('/') || id.length > 128) return undefined
      return approvalPoll(id)
    }
    if (passthrough !== undefined && path.startsWith(passthrough.prefix)) return passthrough.route(path)
    return undefined
  }

  function proxyRequestRoute(tokens: BodyTokenVerifier): PublicRoute {
    return {
      methods: ['POST'],
      async handle(req, ctx) {
        const body = await readBody(req, ctx.config.gateway.bodyLimitBytes)
        const fields = parseJsonObject(body, 'The request body')
        const token = fields['agent_token']
        if (typeof token !== 'string' || token === '') {
          throw new GatewayError(
            'unauthenticated',
            'Send the agent access token as agent_token in the body.',
            {
              details: { reason: 'missing_token' },
            },
          )
        }
        const principal = await principalOf(tokens, token, req, ctx)
        ctx.principal = principal
        const agent = agentOf(principal)
        // Stage 4 ran before the token was known: the per-agent limits apply now.
        const perAgent = principalKeyed(ctx.config.rateLimits.routes)
        if (deps.limiter !== undefined && perAgent.length > 0) {
          const checked = deps.limiter.check(perAgent, ctx, req)
          ctx.rateLimit = tighter(ctx.rateLimit, checked instanceof Promise ? await checked : checked)
        }
        const problems: ParamProblem[] = []
        for (const key of ['tool', 'action'] as const) {
          if (typeof fields[key] !== 'string' || fields[key] === '')
            problems.push({ path: key, message: 'expected a non-empty string' })
        }
        if (problems.length > 0) {
          throw new GatewayError('bad_request', 'Name the tool and the action to call.', {
            details: { problems },
          })
        }
        const toolName = fields['tool'] as string
        const actionName = fields['action'] as string
        const { tool, action } = lookup(toolName, actionName)
        const params = fields['params'] ?? {}
        const answer = await runTool(
          { req, ctx, principal, agent },
          tool,
          actionName,
          action,
          params,
          body.length,
          false,
        )
        return answer as JsonAnswer
      },
    }
  }

  return {
    agentRoute,
    proxyRequestRoute,
    async close() {
      await Promise.all([client.close(), dispatchers.close()])
    },
  }
}

/**
 * Prove the body's token the way the header authenticator does. Key-bound (DPoP) tokens need a
 * proof made for a request this route cannot carry: they are refused with a pointer to the tool route.
 */
async function principalOf(
  tokens: BodyTokenVerifier,
  token: string,
  req: IncomingMessage,
  ctx: RequestContext,
): Promise<Principal> {
  let result: Awaited<ReturnType<BodyTokenVerifier['authenticate']>>
  try {
    result = await tokens.authenticate('bearer', token, req, ctx.method, () => ({
      dpop: undefined,
      method: ctx.method,
      urls: [],
    }))
  } catch (err) {
    if (err instanceof GatewayError && err.code === 'invalid_dpop_proof') {
      throw new GatewayError(
        'unauthenticated',
        'Key-bound (DPoP) tokens cannot be sent in a body; call POST /v1/tools/{tool}/{action} with Authorization: DPoP.',
        { details: { reason: 'dpop_required' } },
      )
    }
    throw err
  }
  return {
    kind: 'agent',
    id: result.agent.id,
    roles: result.agent.roles,
    claims: result.claims as unknown as Record<string, unknown>,
    agent: result.agent,
  }
}
