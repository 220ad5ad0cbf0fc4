/**
 * The agent-facing API routes (DESIGN §6, §7): `POST /v1/tools/{tool}/{action}`, `GET /v1/tools`
 * and `GET /v1/approvals/{id}`. The pipeline has authenticated the agent before these run; a tool
 * call then goes: parse and validate the parameters (every problem at once) → authorize (scope and
 * policy, quota, loop guard, approval) → resolve the secret → call the upstream → redact → answer.
 */
import type { IncomingMessage } from 'node:http'
import { Compile } from 'typebox/compile'
import { Agent, type Dispatcher } from 'undici'
import type { CompiledConfig } from '../config/compile.ts'
import { schemaProblems } from '../config/load.ts'
import { GatewayError } from '../errors/gateway-error.ts'
import type { Principal, RequestContext } from '../http/context.ts'
import type { JsonAnswer, StreamAnswer } from '../http/pipeline.ts'
import { readBody } from '../http/read-body.ts'
import type { Authorized, PolicyEnforcer } from '../policy/enforcer.ts'
import { checkArgsShape } from '../policy/guards/args-shape.ts'
import type { PolicyService } from '../policy/policy-service.ts'
import type { AgentFacts } from '../policy/policy-set.ts'
import type { Store } from '../store/types.ts'
import { upstreamFailure } from '../upstreams/http-proxy.ts'
import type { ToolAction, ToolDefinition, ToolSettings, UpstreamAnswer, UpstreamRequest } from './types.ts'

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
}

const maxArgsDepth = 32
const maxArgsNodes = 10_000

/** Settings of `tool` from the running config, defaults applied. */
export function toolSettings(config: CompiledConfig, tool: ToolDefinition): ToolSettings {
  const raw = (config.raw.tools as Record<string, Record<string, unknown> | undefined> | undefined)?.[
    tool.name
  ]
  const url = typeof raw?.['url'] === 'string' ? raw['url'] : tool.defaultUrl
  const secret = typeof raw?.['secret'] === 'string' ? raw['secret'] : tool.defaultSecret
  const timeoutMs = raw?.['timeoutMs']
  return {
    url: url.replace(/\/+$/, ''),
    secret,
    timeoutMs: typeof timeoutMs === 'number' ? timeoutMs : 30_000,
    options: raw ?? {},
  }
}

function agentOf(principal: Principal): AgentFacts {
  if (principal.kind !== 'agent' || principal.agent === undefined)
    throw new GatewayError('forbidden', 'Tools are called by agents with an agent token.')
  return principal.agent
}

function headerText(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name]
  return typeof value === 'string' ? value : undefined
}

/** Read a bounded upstream body; too big is an upstream error, never an unbounded buffer. */
async function readAnswer(body: Dispatcher.ResponseData['body'], limit: number): Promise<Buffer> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of body) {
    size += (chunk as Buffer).length
    if (size > limit) {
      body.destroy()
      throw new GatewayError('upstream_error', `The upstream answer is larger than ${limit} bytes.`)
    }
    chunks.push(chunk as Buffer)
  }
  return Buffer.concat(chunks, size)
}

export function createAgentRoutes(deps: ToolRouteDeps): (path: string) => AgentRoute | undefined {
  const maxAnswerBytes = deps.maxAnswerBytes ?? 10 * 1024 * 1024
  const dispatcher = new Agent({ connections: 128, keepAliveTimeout: 4_000, pipelining: 1 })
  const validators = new WeakMap<ToolAction, ReturnType<typeof Compile>>()
  const validatorFor = (action: ToolAction) => {
    let compiled = validators.get(action)
    if (compiled === undefined) {
      compiled = Compile(action.params)
      validators.set(action, compiled)
    }
    return compiled
  }

  async function callUpstream(
    settings: ToolSettings,
    request: UpstreamRequest,
    signal: AbortSignal,
    traceHeaders: Record<string, string>,
  ): Promise<UpstreamAnswer> {
    let response: Dispatcher.ResponseData
    try {
      response = await dispatcher.request({
        origin: new URL(settings.url).origin,
        path: new URL(settings.url).pathname.replace(/\/$/, '') + request.path,
        method: request.method,
        headers: { ...traceHeaders, accept: 'application/json', ...request.headers },
        body: request.body,
        signal,
        headersTimeout: settings.timeoutMs,
        bodyTimeout: settings.timeoutMs,
      })
    } catch (err) {
      throw upstreamError(err)
    }
    let buffer: Buffer
    try {
      buffer = await readAnswer(response.body, maxAnswerBytes)
    } catch (err) {
      throw upstreamError(err)
    }
    const text = buffer.toString('utf8')
    const type = String(response.headers['content-type'] ?? '').toLowerCase()
    let json: unknown
    if (type.includes('json')) {
      try {
        json = JSON.parse(text)
      } catch {
        json = undefined
      }
    }
    return { status: response.statusCode, headers: response.headers, json, text }
  }

  async function callTool(
    req: IncomingMessage,
    ctx: RequestContext,
    principal: Principal,
    toolName: string,
    actionName: string,
  ): Promise<JsonAnswer | StreamAnswer> {
    const agent = agentOf(principal)
    const tool = deps.tools.get(toolName)
    const action = tool?.actions[actionName]
    if (tool === undefined || action === undefined) {
      throw new GatewayError(
        'not_found',
        tool === undefined
          ? `No tool is named "${toolName}".`
          : `Tool ${toolName} has no action "${actionName}".`,
      )
    }
    const body = await readBody(req, ctx.config.gateway.bodyLimitBytes)
    let params: unknown = {}
    if (body.length > 0) {
      try {
        params = JSON.parse(body.toString('utf8'))
      } catch {
        throw new GatewayError('bad_request', 'The parameters are not valid JSON.')
      }
    }
    if (typeof params !== 'object' || params === null || Array.isArray(params))
      throw new GatewayError('bad_request', 'The parameters must be a JSON object.')
    const shape = checkArgsShape(params, { maxDepth: maxArgsDepth, maxNodes: maxArgsNodes })
    if (!shape.ok) {
      throw new GatewayError(
        'bad_request',
        shape.reason === 'too_deep'
          ? `The parameters nest deeper than ${maxArgsDepth} levels.`
          : `The parameters hold more than ${maxArgsNodes} values.`,
        { details: { reason: shape.reason } },
      )
    }
    if (!validatorFor(action).Check(params)) {
      const problems = schemaProblems(action.params, params)
      throw new GatewayError('bad_request', `Invalid parameters for ${toolName}.${actionName}.`, {
        details: { problems },
      })
    }

    const claims = principal.claims ?? {}
    const authorized: Authorized | Promise<Authorized> = deps.enforcer.authorize(
      {
        agent,
        scope: typeof claims['scope'] === 'string' ? claims['scope'] : '',
        intent: typeof claims['intent'] === 'string' ? claims['intent'] : undefined,
        claims,
        target: { kind: 'tool', tool: toolName, action: actionName },
        args: params,
        request: { method: ctx.method, path: ctx.path, bytes: body.length, ip: ctx.clientIp },
        now: Date.now(),
      },
      headerText(req, 'x-approval-id'),
    )
    const outcome = authorized instanceof Promise ? await authorized : authorized
    if (outcome.kind === 'parked') return parkedAnswer(outcome)

    const settings = toolSettings(ctx.config, tool)
    let secret: string | undefined
    if (settings.secret !== undefined) {
      secret = await deps.secrets.resolve(settings.secret, agent.id)
      if (secret === undefined) {
        throw new GatewayError(
          'tool_unavailable',
          `Tool ${toolName} is not available: its secret "${settings.secret}" is not set.`,
          { details: { secret: settings.secret } },
        )
      }
    }

    // The call dies with the client: a disconnect aborts the upstream request.
    const abort = new AbortController()
    const onClose = (): void => abort.abort()
    req.socket.once('close', onClose)
    const detach = (): void => {
      req.socket.off('close', onClose)
    }
    const trace = {
      traceparent: `00-${ctx.traceId}-${ctx.spanId}-${ctx.traceFlags}`,
      'x-correlation-id': ctx.correlationId,
    }
    const started = performance.now()
    let streaming = false
    try {
      const result = await action.execute({
        params,
        secret,
        settings,
        signal: abort.signal,
        traceHeaders: trace,
        upstream: (request) => callUpstream(settings, request, abort.signal, trace),
        reportUsage: (usage) => {
          deps.enforcer
            .recordTokens(outcome.rule, agent.id, usage.promptTokens + usage.completionTokens)
            .catch((err: unknown) => deps.onError?.(err))
        },
      })
      const durationMs = performance.now() - started
      ctx.upstreamMs = durationMs
      if ('stream' in result) {
        // Redaction needs the whole answer; a stream would pass the unredacted parts on.
        if (outcome.filter !== null) {
          await result.stream[Symbol.asyncIterator]().return?.()
          throw new GatewayError(
            'policy_denied',
            'A response filter applies to this call: call it without streaming.',
            {
              details: { reason: 'stream_filtered', rule: outcome.rule?.id ?? null },
            },
          )
        }
        streaming = true
        return {
          status: result.upstreamStatus,
          headers: result.headers,
          stream: detachAfter(result.stream, detach),
        }
      }
      if (result.usage !== undefined) {
        await deps.enforcer.recordTokens(
          outcome.rule,
          agent.id,
          result.usage.promptTokens + result.usage.completionTokens,
        )
      }
      const data = outcome.filter === null ? result.data : outcome.filter.apply(result.data).value
      return {
        status: 200,
        body: {
          data,
          metadata: {
            tool: toolName,
            action: actionName,
            correlationId: ctx.correlationId,
            cached: false,
            attempts: 1,
            upstreamStatus: result.upstreamStatus,
            durationMs: Math.round(durationMs * 1000) / 1000,
          },
        },
      }
    } finally {
      if (!streaming) detach()
    }
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

  return (path) => {
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
    return undefined
  }
}

/** Pass a stream through, and run `done` once it ends however it ends. */
async function* detachAfter(stream: AsyncIterable<Uint8Array>, done: () => void): AsyncIterable<Uint8Array> {
  try {
    yield* stream
  } finally {
    done()
  }
}

function parkedAnswer(outcome: Extract<Authorized, { kind: 'parked' }>): JsonAnswer {
  const { approval } = outcome
  return {
    status: 202,
    body: {
      approvalId: approval.id,
      status: approval.status,
      expiresAt: new Date(approval.expiresAt).toISOString(),
      policy: approval.policy,
      rule: approval.rule,
      poll: `/v1/approvals/${approval.id}`,
    },
    headers: { location: `/v1/approvals/${approval.id}` },
  }
}

function upstreamError(err: unknown): GatewayError {
  return err instanceof GatewayError ? err : upstreamFailure(err)
}
