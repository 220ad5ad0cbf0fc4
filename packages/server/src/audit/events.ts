/**
 * What goes into an entry, built field by field from what the gateway already knows: ids,
 * principal, target, decision, status, timing. Never a header, a query string, a body, a token
 * or a secret value; secrets appear by name only, tokens by jti only.
 */
import type { RequestContext } from '../http/context.ts'
import type { AuditEvent } from './entry.ts'

/** Statuses that are refusals of the caller (DESIGN §15): always recorded, as denials. */
function isDenial(status: number): boolean {
  return status === 401 || status === 403 || status === 429
}

const round = (ms: number) => Math.round(ms * 1000) / 1000

/** Target and action of a public-listener request, from its route (never its query or body). */
function targetOf(ctx: RequestContext): { target: string; action: string } {
  if (ctx.channel !== undefined)
    return { target: `channel:${ctx.channel.name}`, action: `${ctx.method} ${ctx.remainder || '/'}` }
  // The tool routes name their call (registry names, so no splitting of the path per request).
  if (ctx.tool !== undefined && ctx.route === '/v1/tools/{tool}/{action}')
    return { target: `tool:${ctx.tool.name}`, action: ctx.tool.action }
  if (ctx.route === '/v1/tools/{tool}/{action}') {
    const [, , , tool, action] = ctx.path.split('/')
    return { target: `tool:${tool}`, action: action! }
  }
  if (ctx.route.startsWith('/v1/openai/'))
    return { target: 'tool:openai', action: ctx.route.slice('/v1/openai/'.length) }
  if (ctx.route === '/v1/approvals/{id}')
    return { target: `approval:${ctx.path.slice('/v1/approvals/'.length)}`, action: 'poll' }
  return { target: `route:${ctx.route}`, action: ctx.method }
}

/**
 * The entry for a finished public-listener request, or undefined when it is not audited: every
 * authenticated call, every decision and denial, and calls on channel rules with `audit: true`.
 * Successful token requests are recorded as token events by the token service instead.
 */
export function callEvent(ctx: RequestContext, now: number): AuditEvent | undefined {
  const principal = ctx.principal
  const denied = isDenial(ctx.status) || ctx.errorCode === 'audit_unavailable'
  if (ctx.route === '/v1/token') {
    if (ctx.status < 400) return undefined
  } else if (principal === undefined && ctx.decision === undefined && !denied && ctx.rule?.audit !== true) {
    return undefined
  }
  const { target, action } = targetOf(ctx)
  return {
    time: now,
    requestId: ctx.requestId,
    correlationId: ctx.correlationId,
    principal: principal === undefined ? null : `${principal.kind}:${principal.id}`,
    kind: ctx.route === '/v1/token' ? 'token' : 'call',
    target,
    action: ctx.route === '/v1/token' ? 'issue' : action,
    decision: ctx.decision ?? (denied || (ctx.status >= 400 && ctx.route === '/v1/token') ? 'deny' : null),
    rule: ctx.policyRule ?? null,
    status: ctx.status,
    durationMs: round(performance.now() - ctx.startedAt),
  }
}

/** A token issued (by exchange, delegation or the admin API): named by its subject and jti. */
export function tokenIssuedEvent(
  grant: string,
  issued: { sub: string; jti: string },
  now: number,
): AuditEvent {
  return {
    time: now,
    requestId: null,
    correlationId: null,
    principal: `agent:${issued.sub}`,
    kind: 'token',
    target: `token:${issued.jti}`,
    action: `issue:${grant}`,
    decision: 'allow',
    rule: null,
    status: 200,
    durationMs: 0,
  }
}

/** What an admin request changed, by route template (Fastify's), method and path parameters. */
export interface AdminRequestFacts {
  method: string
  /** The route template (`/v1/secrets/:name`), or undefined when no route matched. */
  route: string | undefined
  params: Record<string, string>
  /** The parsed body; only the identifier fields named below are ever read from it. */
  body: unknown
  status: number
  requestId: string
  correlationId: string
  durationMs: number
}

const adminActions: Record<
  string,
  { kind: AuditEvent['kind']; action: string; target: (f: AdminRequestFacts) => string }
> = {
  'POST /v1/agents': { kind: 'admin', action: 'create', target: () => 'agents' },
  'PATCH /v1/agents/:id': { kind: 'admin', action: 'update', target: (f) => `agent:${f.params['id']}` },
  'DELETE /v1/agents/:id': { kind: 'admin', action: 'delete', target: (f) => `agent:${f.params['id']}` },
  'POST /v1/agents/:id/keys': { kind: 'admin', action: 'add_key', target: (f) => `agent:${f.params['id']}` },
  'POST /v1/agents/:id/tokens': {
    kind: 'token',
    action: 'issue:admin',
    target: (f) => `agent:${f.params['id']}`,
  },
  'POST /v1/revocations': { kind: 'token', action: 'revoke', target: revocationTarget },
  'PUT /v1/policies/:name': { kind: 'admin', action: 'put', target: (f) => `policy:${f.params['name']}` },
  'DELETE /v1/policies/:name': {
    kind: 'admin',
    action: 'delete',
    target: (f) => `policy:${f.params['name']}`,
  },
  'PUT /v1/secrets/:name': { kind: 'admin', action: 'put', target: (f) => `secret:${f.params['name']}` },
  'DELETE /v1/secrets/:name': {
    kind: 'admin',
    action: 'delete',
    target: (f) => `secret:${f.params['name']}`,
  },
  'POST /v1/secrets/rotate-master': { kind: 'admin', action: 'rotate_master', target: () => 'secrets' },
  'POST /v1/keys/rotate': { kind: 'admin', action: 'rotate', target: () => 'signing-keys' },
  'POST /v1/approvals/:id': { kind: 'admin', action: 'decide', target: (f) => `approval:${f.params['id']}` },
  'POST /v1/config/reload': { kind: 'admin', action: 'reload', target: () => 'config' },
  'POST /api/create-agent': { kind: 'admin', action: 'create', target: () => 'agents' },
  'POST /api/generate-token': { kind: 'token', action: 'issue:admin', target: () => 'agents' },
}

/** Admin requests that change nothing although they are POSTs. */
const adminReads = new Set(['POST /v1/policies/evaluate', 'POST /v1/introspect'])

function field(body: unknown, name: string): string | undefined {
  if (typeof body !== 'object' || body === null) return undefined
  const value = (body as Record<string, unknown>)[name]
  return typeof value === 'string' && value.length <= 128 ? value : undefined
}

/** A revocation names a jti, an agent, or an agent's key; a token given in full is never copied. */
function revocationTarget(f: AdminRequestFacts): string {
  const jti = field(f.body, 'jti')
  if (jti !== undefined) return `token:${jti}`
  const agent = field(f.body, 'agentId')
  const kid = field(f.body, 'kid')
  if (agent !== undefined) return kid === undefined ? `agent:${agent}` : `agent:${agent}/key:${kid}`
  return 'token'
}

/**
 * The entry for an admin request, or undefined for reads: every change (agents, keys, tokens,
 * revocations, policies, secrets by name, signing keys, approval decisions, reloads) and every
 * refused request.
 */
export function adminEvent(f: AdminRequestFacts, now: number): AuditEvent | undefined {
  const key = `${f.method} ${f.route ?? ''}`
  const denied = isDenial(f.status)
  const read = f.method === 'GET' || f.method === 'HEAD' || f.method === 'OPTIONS' || adminReads.has(key)
  if (read && !denied) return undefined
  const known = adminActions[key]
  const decision = field(f.body, 'decision')
  return {
    time: now,
    requestId: f.requestId,
    correlationId: f.correlationId,
    principal: f.status === 401 ? null : 'admin',
    kind: known?.kind ?? 'admin',
    target: known?.target(f) ?? `route:${f.route ?? 'unmatched'}`,
    action:
      known === undefined
        ? f.method
        : key === 'POST /v1/approvals/:id' && (decision === 'approve' || decision === 'reject')
          ? decision
          : known.action,
    decision: denied ? 'deny' : f.status < 400 ? 'allow' : null,
    rule: null,
    status: f.status,
    durationMs: round(f.durationMs),
  }
}
