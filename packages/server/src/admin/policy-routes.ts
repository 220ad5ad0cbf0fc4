/**
 * Admin routes for policies and approvals (DESIGN §7, §18): `GET·PUT·DELETE /v1/policies/{name}`
 * (config-file policies are read-only here), their history, `POST /v1/policies/evaluate` (the
 * decision explained), and the operators' side of approvals.
 */
import type { FastifyInstance } from 'fastify'
import { type Static, Type } from 'typebox'
import type { AgentDirectory } from '../auth/agent-directory.ts'
import { GatewayError } from '../errors/gateway-error.ts'
import { checkArgsShape } from '../policy/guards/args-shape.ts'
import type { PolicyService } from '../policy/policy-service.ts'
import type { DecisionTarget } from '../policy/policy-set.ts'
import type { Approval, ApprovalStatus, Store } from '../store/types.ts'

const closed = { additionalProperties: false }
const Name = Type.Object({ name: Type.String({ minLength: 1, maxLength: 64 }) }, closed)
const Id = Type.Object({ id: Type.String({ minLength: 1, maxLength: 128 }) }, closed)
const PutQuery = Type.Object({ expectedVersion: Type.Optional(Type.Integer({ minimum: 0 })) }, closed)
const Evaluate = Type.Object(
  {
    agent: Type.String({ minLength: 1, maxLength: 128, description: 'agent name or id' }),
    tool: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
    action: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
    channel: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
    path: Type.Optional(Type.String({ maxLength: 2048 })),
    method: Type.Optional(Type.String({ pattern: '^[A-Z]{1,16}$' })),
    args: Type.Optional(Type.Unknown()),
    intent: Type.Optional(Type.String({ maxLength: 64 })),
    scope: Type.Optional(Type.String({ maxLength: 4096 })),
    bytes: Type.Optional(Type.Integer({ minimum: 0 })),
    now: Type.Optional(Type.String({ maxLength: 64, description: 'RFC 3339 time to evaluate at' })),
  },
  closed,
)
const ApprovalQuery = Type.Object(
  {
    status: Type.Optional(
      Type.Union(['pending', 'approved', 'rejected', 'used', 'expired'].map((s) => Type.Literal(s))),
    ),
    agent: Type.Optional(Type.String({ maxLength: 128 })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500 })),
    after: Type.Optional(Type.String({ maxLength: 128 })),
  },
  closed,
)
const Decide = Type.Object(
  {
    decision: Type.Union([Type.Literal('approve'), Type.Literal('reject')]),
    note: Type.Optional(Type.String({ maxLength: 1000 })),
  },
  closed,
)

export function approvalView(approval: Approval) {
  const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString())
  return {
    id: approval.id,
    agentId: approval.agentId,
    status: approval.status,
    target: approval.target,
    summary: approval.summary,
    policy: approval.policy,
    rule: approval.rule,
    createdAt: iso(approval.createdAt),
    expiresAt: iso(approval.expiresAt),
    decidedAt: iso(approval.decidedAt),
    decidedBy: approval.decidedBy,
    note: approval.note,
    usedAt: iso(approval.usedAt),
  }
}

export function policyAdminRoutes(deps: {
  policies: PolicyService
  directory: AgentDirectory
  store: Store
}) {
  const { policies, directory, store } = deps
  const findAgent = (nameOrId: string) => {
    const agent = directory.get(nameOrId) ?? directory.byName(nameOrId)
    if (agent === undefined)
      throw new GatewayError('not_found', `No agent is named or numbered "${nameOrId}".`)
    return agent
  }
  return (app: FastifyInstance): void => {
    app.get('/v1/policies', async () => ({ version: policies.current().version, policies: policies.list() }))
    app.get('/v1/policies/:name', { schema: { params: Name } }, async (request) =>
      policies.get((request.params as Static<typeof Name>).name),
    )
    app.get('/v1/policies/:name/history', { schema: { params: Name } }, async (request) => ({
      versions: await policies.history((request.params as Static<typeof Name>).name),
    }))
    // The body is validated by the policy schema itself, so its problems carry policy paths.
    app.put('/v1/policies/:name', { schema: { params: Name, querystring: PutQuery } }, async (request) => {
      const { name } = request.params as Static<typeof Name>
      const { expectedVersion } = request.query as Static<typeof PutQuery>
      return policies.put(name, request.body, expectedVersion)
    })
    app.delete('/v1/policies/:name', { schema: { params: Name } }, async (request, reply) => {
      await policies.delete((request.params as Static<typeof Name>).name)
      reply.code(204)
    })

    app.post('/v1/policies/evaluate', { schema: { body: Evaluate } }, async (request) => {
      const body = request.body as Static<typeof Evaluate>
      const agent = findAgent(body.agent)
      let target: DecisionTarget
      if (body.tool !== undefined) {
        if (body.channel !== undefined)
          throw new GatewayError('bad_request', 'Give a tool or a channel, not both.')
        if (body.action === undefined) throw new GatewayError('bad_request', 'A tool needs an action.')
        target = { kind: 'tool', tool: body.tool, action: body.action }
      } else if (body.channel !== undefined) {
        target = {
          kind: 'channel',
          channel: body.channel,
          path: body.path ?? '/',
          method: body.method ?? 'GET',
        }
      } else {
        throw new GatewayError('bad_request', 'Name a tool (with an action) or a channel.')
      }
      if (body.args !== undefined) {
        const shape = checkArgsShape(body.args, { maxDepth: 32, maxNodes: 10_000 })
        if (!shape.ok) throw new GatewayError('bad_request', `args are ${shape.reason.replace('_', ' ')}.`)
      }
      const now = body.now === undefined ? Date.now() : Date.parse(body.now)
      if (!Number.isFinite(now)) throw new GatewayError('bad_request', 'now must be an RFC 3339 time.')
      const set = policies.current()
      const explanation = set.explain({
        agent,
        scope: body.scope,
        intent: body.intent,
        claims: { sub: agent.id, scope: body.scope ?? '', intent: body.intent },
        target,
        args: body.args ?? {},
        request: {
          method: target.kind === 'channel' ? target.method : 'POST',
          path: '',
          bytes: body.bytes ?? 0,
          ip: '',
        },
        now,
      })
      return { policySetVersion: set.version, agent: { id: agent.id, name: agent.name }, ...explanation }
    })

    app.get('/v1/approvals', { schema: { querystring: ApprovalQuery } }, async (request) => {
      const query = request.query as Static<typeof ApprovalQuery>
      const limit = query.limit ?? 100
      const agentId = query.agent === undefined ? undefined : findAgent(query.agent).id
      const page = await store.approvals.list({
        status: query.status as ApprovalStatus | undefined,
        agentId,
        limit,
        after: query.after,
      })
      return { approvals: page.map(approvalView), next: page.length === limit ? page.at(-1)!.id : null }
    })
    app.get('/v1/approvals/:id', { schema: { params: Id } }, async (request) => {
      const approval = await store.approvals.get((request.params as Static<typeof Id>).id)
      if (approval === undefined) throw new GatewayError('not_found', 'No such approval.')
      return approvalView(approval)
    })
    app.post('/v1/approvals/:id', { schema: { params: Id, body: Decide } }, async (request) => {
      const { id } = request.params as Static<typeof Id>
      const body = request.body as Static<typeof Decide>
      const result = await store.approvals.decide(id, body.decision === 'approve' ? 'approved' : 'rejected', {
        by: 'admin',
        note: body.note ?? null,
      })
      switch (result.outcome) {
        case 'decided':
          return approvalView(result.approval)
        case 'not_found':
          throw new GatewayError('not_found', 'No such approval.')
        case 'already_decided':
          throw new GatewayError('conflict', `The approval is already ${result.approval.status}.`, {
            details: { reason: 'already_decided', status: result.approval.status },
          })
        case 'expired':
          throw new GatewayError('conflict', 'The approval expired before a decision.', {
            details: { reason: 'expired' },
          })
      }
    })
  }
}
