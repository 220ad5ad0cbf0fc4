/**
 * Admin routes for agent identity (DESIGN §3, §18): agents and their keys, admin-issued tokens,
 * revocations, introspection, signing-key rotation, and the original 4Runr compatibility routes
 * `POST /api/create-agent` and `POST /api/generate-token`.
 */
import { createPrivateKey } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { type Static, Type } from 'typebox'
import { type AgentService, agentView } from '../auth/agent-service.ts'
import type { TokenService } from '../auth/token-service.ts'
import { GatewayError } from '../errors/gateway-error.ts'
import type { KeyRing } from '../identity/key-ring.ts'
import type { Revocation } from '../store/types.ts'

const closed = { additionalProperties: false }
const Labels = Type.Record(Type.String({ maxLength: 128 }), Type.String({ maxLength: 256 }))
const Roles = Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 64 })
const Id = Type.Object({ id: Type.String({ minLength: 1, maxLength: 128 }) })

const CreateAgent = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 128 }),
    labels: Type.Optional(Labels),
    roles: Type.Optional(Roles),
    publicKeyJwk: Type.Optional(Type.Object({}, { additionalProperties: true })),
    requireDpop: Type.Optional(Type.Boolean()),
  },
  closed,
)
const PatchAgent = Type.Object(
  {
    status: Type.Optional(Type.Union([Type.Literal('active'), Type.Literal('disabled')])),
    labels: Type.Optional(Labels),
    roles: Type.Optional(Roles),
    requireDpop: Type.Optional(Type.Boolean()),
  },
  closed,
)
const AddKey = Type.Object(
  {
    publicKeyJwk: Type.Optional(Type.Object({}, { additionalProperties: true })),
    /** RFC 3339 time, or milliseconds since the epoch, after which the agent's other keys stop working. */
    // Integer first: with Fastify's type coercion a number would otherwise become a string.
    notAfterOld: Type.Optional(Type.Union([Type.Integer({ minimum: 0 }), Type.String({ maxLength: 64 })])),
  },
  closed,
)
const IssueToken = Type.Object(
  {
    scope: Type.Optional(Type.String({ maxLength: 4096 })),
    intent: Type.Optional(Type.String({ maxLength: 64 })),
    ttl: Type.Optional(Type.Union([Type.String({ maxLength: 16 }), Type.Integer({ minimum: 1 })])),
  },
  closed,
)
const Revoke = Type.Object(
  {
    jti: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
    token: Type.Optional(Type.String({ minLength: 1, maxLength: 16_384 })),
    agentId: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
    kid: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
    reason: Type.Optional(Type.String({ maxLength: 500 })),
  },
  closed,
)
const Introspect = Type.Object(
  {
    token: Type.String({ minLength: 1, maxLength: 16_384 }),
    token_type_hint: Type.Optional(Type.String({ maxLength: 64 })),
  },
  closed,
)
const ListQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500 })),
    after: Type.Optional(Type.String({ maxLength: 128 })),
  },
  closed,
)
const CompatCreate = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 128 }),
    description: Type.Optional(Type.String({ maxLength: 1000 })),
    created_by: Type.Optional(Type.String({ maxLength: 128 })),
    role: Type.Optional(Type.String({ maxLength: 64 })),
  },
  closed,
)
const CompatToken = Type.Object(
  {
    agent_id: Type.String({ minLength: 1, maxLength: 128 }),
    tools: Type.Optional(Type.Array(Type.String({ maxLength: 64 }), { maxItems: 64 })),
    permissions: Type.Optional(Type.Array(Type.String({ maxLength: 64 }), { maxItems: 64 })),
    expires_at: Type.Optional(Type.String({ maxLength: 64 })),
    ttl_minutes: Type.Optional(Type.Integer({ minimum: 1 })),
    intent: Type.Optional(Type.String({ maxLength: 64 })),
  },
  closed,
)

function parseTime(value: string | number | undefined, field: string): number | undefined {
  if (value === undefined) return undefined
  const ms = typeof value === 'number' ? value : Date.parse(value)
  if (!Number.isFinite(ms)) throw new GatewayError('bad_request', `${field} must be an RFC 3339 time.`)
  return ms
}

export function identityAdminRoutes(deps: { agents: AgentService; tokens: TokenService; keyRing: KeyRing }) {
  const { agents, tokens, keyRing } = deps
  return (app: FastifyInstance): void => {
    app.post('/v1/agents', { schema: { body: CreateAgent } }, async (request, reply) => {
      const body = request.body as Static<typeof CreateAgent>
      const created = await agents.create(body)
      // The only copy of a private key: no cache may keep it.
      reply.code(201).header('cache-control', 'no-store')
      return {
        ...agentView(created.agent),
        kid: created.kid,
        ...(created.privateKeyJwk === undefined ? {} : { privateKeyJwk: created.privateKeyJwk }),
      }
    })
    app.get('/v1/agents', { schema: { querystring: ListQuery } }, async (request) => {
      const query = request.query as Static<typeof ListQuery>
      const limit = query.limit ?? 100
      const page = await agents.list({ limit, after: query.after })
      return {
        agents: page.map(agentView),
        next: page.length === limit ? page[page.length - 1]!.id : null,
      }
    })
    app.get('/v1/agents/:id', { schema: { params: Id } }, async (request) => {
      const { id } = request.params as Static<typeof Id>
      return agentView(await agents.get(id))
    })
    app.patch('/v1/agents/:id', { schema: { params: Id, body: PatchAgent } }, async (request) => {
      const { id } = request.params as Static<typeof Id>
      return agentView(await agents.patch(id, request.body as Static<typeof PatchAgent>))
    })
    app.delete('/v1/agents/:id', { schema: { params: Id } }, async (request, reply) => {
      const { id } = request.params as Static<typeof Id>
      await agents.delete(id)
      reply.code(204)
    })
    app.post('/v1/agents/:id/keys', { schema: { params: Id, body: AddKey } }, async (request, reply) => {
      const { id } = request.params as Static<typeof Id>
      const body = (request.body ?? {}) as Static<typeof AddKey>
      const added = await agents.addKey(id, {
        publicKeyJwk: body.publicKeyJwk,
        notAfterOld: parseTime(body.notAfterOld, 'notAfterOld'),
      })
      reply.code(201).header('cache-control', 'no-store')
      return {
        kid: added.kid,
        ...(added.privateKeyJwk === undefined ? {} : { privateKeyJwk: added.privateKeyJwk }),
        agent: agentView(added.agent),
      }
    })
    app.post(
      '/v1/agents/:id/tokens',
      { schema: { params: Id, body: IssueToken } },
      async (request, reply) => {
        const { id } = request.params as Static<typeof Id>
        reply.header('cache-control', 'no-store')
        return tokens.issueForAgent(id, (request.body ?? {}) as Record<string, unknown>)
      },
    )

    app.post('/v1/revocations', { schema: { body: Revoke } }, async (request, reply) => {
      const body = request.body as Static<typeof Revoke>
      let { jti } = body
      let expiresAt: number | null = null
      if (body.token !== undefined) {
        if (jti !== undefined) throw new GatewayError('bad_request', 'Give either jti or token.')
        // A token that no longer verifies cannot be used anyway; say so rather than store nothing.
        const facts = await tokens.expiryOf(body.token).catch(() => {
          throw new GatewayError('bad_request', 'The token is not a valid token of this gateway.')
        })
        jti = facts.jti
        expiresAt = facts.exp * 1000
      }
      const revocation = await agents.revoke({
        jti,
        agentId: body.agentId,
        kid: body.kid,
        reason: body.reason,
        expiresAt,
      })
      reply.code(201)
      return revocationView(revocation)
    })
    app.get('/v1/revocations', async () => ({
      revocations: (await agents.listRevocations()).map(revocationView),
    }))

    // RFC 7662 §2.1: the request is form-encoded; JSON is accepted too.
    app.post('/v1/introspect', { schema: { body: Introspect } }, async (request, reply) => {
      reply.header('cache-control', 'no-store')
      return tokens.introspect((request.body as Static<typeof Introspect>).token)
    })

    app.post('/v1/keys/rotate', async () => {
      const kid = await keyRing.rotate()
      return { kid, jwks: keyRing.jwks() }
    })

    // The original 4Runr API, kept for existing clients. Keys are Ed25519 now; the private key is
    // returned once, as PKCS#8 PEM (what the old SDK reads) and as a JWK.
    app.post('/api/create-agent', { schema: { body: CompatCreate } }, async (request, reply) => {
      const body = request.body as Static<typeof CompatCreate>
      const labels: Record<string, string> = {}
      if (body.description !== undefined) labels['description'] = body.description
      if (body.created_by !== undefined) labels['created_by'] = body.created_by
      const created = await agents.create({ name: body.name, labels, roles: body.role ? [body.role] : [] })
      const jwk = created.privateKeyJwk!
      const pem = createPrivateKey({ key: jwk as never, format: 'jwk' }).export({
        type: 'pkcs8',
        format: 'pem',
      })
      reply.code(201).header('cache-control', 'no-store')
      return {
        agent_id: created.agent.id,
        name: created.agent.name,
        kid: created.kid,
        private_key: pem.toString(),
        private_key_jwk: jwk,
        public_key_jwk: created.agent.keys[0]!.jwk,
      }
    })
    app.post('/api/generate-token', { schema: { body: CompatToken } }, async (request, reply) => {
      const body = request.body as Static<typeof CompatToken>
      const scope: string[] = []
      for (const tool of body.tools ?? []) {
        for (const permission of body.permissions?.length ? body.permissions : ['*'])
          scope.push(`${tool}:${permission}`)
      }
      let ttl: number | undefined
      if (body.ttl_minutes !== undefined) ttl = body.ttl_minutes * 60
      const until = parseTime(body.expires_at, 'expires_at')
      if (until !== undefined) ttl = Math.floor((until - Date.now()) / 1000)
      if (ttl !== undefined && ttl < 1)
        throw new GatewayError('bad_request', 'expires_at must be in the future.')
      const issued = await tokens.issueForAgent(body.agent_id, {
        scope: scope.join(' '),
        intent: body.intent,
        ttl,
      })
      reply.header('cache-control', 'no-store')
      return {
        agent_token: issued.access_token,
        token_type: issued.token_type,
        expires_at: new Date(Date.now() + issued.expires_in * 1000).toISOString(),
        scope: issued.scope,
      }
    })
  }
}

function revocationView(r: Revocation) {
  return {
    id: r.id,
    kind: r.kind,
    jti: r.jti,
    agentId: r.agentId,
    kid: r.kid,
    reason: r.reason,
    createdAt: new Date(r.createdAt).toISOString(),
    expiresAt: r.expiresAt === null ? null : new Date(r.expiresAt).toISOString(),
  }
}
