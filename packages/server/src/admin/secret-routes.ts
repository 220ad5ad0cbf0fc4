/**
 * Admin routes for tool secrets (DESIGN §3, §6, §18): `PUT·DELETE /v1/secrets/{name}`,
 * `GET /v1/secrets` (names and metadata, never values) and `POST /v1/secrets/rotate-master`.
 * Secrets are write-only: no route answers with a value, and no error repeats one.
 */
import type { FastifyInstance } from 'fastify'
import { type Static, Type } from 'typebox'
import { GatewayError } from '../errors/gateway-error.ts'
import { parseMasterKey } from '../identity/sealed.ts'
import { type MasterKeySource, previousKeysSuffix, previousMasterKeyEnv } from '../secrets/master-keys.ts'
import type { MasterRotation, SecretService } from '../secrets/secret-service.ts'
import type { AgentStore, SecretMetadata } from '../store/types.ts'

const closed = { additionalProperties: false }
const Name = Type.Object({ name: Type.String({ minLength: 1, maxLength: 256 }) }, closed)
const Put = Type.Object(
  {
    value: Type.String({ description: 'the secret; never returned' }),
    agent: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 128,
        description: 'agent id or name: an override for that agent',
      }),
    ),
  },
  closed,
)
const AgentQuery = Type.Object(
  { agent: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })) },
  closed,
)
const Rotate = Type.Object(
  {
    key: Type.Optional(
      Type.String({
        maxLength: 256,
        description: 'the new master key, 32 bytes in base64; generated when absent',
      }),
    ),
  },
  closed,
)

function secretView(secret: SecretMetadata) {
  return {
    name: secret.name,
    agent: secret.agentId,
    keyId: secret.keyId,
    createdAt: new Date(secret.createdAt).toISOString(),
    rotatedAt: secret.rotatedAt === null ? null : new Date(secret.rotatedAt).toISOString(),
  }
}

/** What the operator must still do for a rotation to survive the next restart. */
function nextSteps(source: MasterKeySource, rotation: MasterRotation): string[] {
  const { keyId, previousKeyId, resealed } = rotation
  if (keyId === previousKeyId) {
    if (resealed > 0) {
      return [
        `Every secret is sealed under the current master key ${keyId} now.`,
        `The keys in ${previousMasterKeyEnv} no longer seal any secret.`,
      ]
    }
    return [
      `Nothing to do: every secret is already sealed under the current master key ${keyId}.`,
      'To rotate one gateway: pipe a new key, e.g. `openssl rand -base64 32 | 4runr secrets rotate-master --key-stdin`.',
      `To rotate a cluster: restart every instance with the new key as RUNR_MASTER_KEY and the old one as ${previousMasterKeyEnv}, then run this again.`,
    ]
  }
  const keep = `keep the old key available as ${previousMasterKeyEnv} until the signing keys sealed with it are retired`
  switch (source.kind) {
    case 'dataDir':
      return [
        `The new master key ${keyId} is in ${source.file}; back it up. The keys it replaced are in ${source.file}${previousKeysSuffix}.`,
      ]
    case 'env':
      return [
        `This gateway seals with the new master key ${keyId} now, until it restarts.`,
        `Before the next restart, set RUNR_MASTER_KEY to the new key and ${keep}; started with the old key alone, the gateway cannot open the secrets and refuses to start.`,
      ]
    case 'config':
      return [
        `This gateway seals with the new master key ${keyId} now, until it restarts.`,
        `Before the next restart, set secrets.masterKey to the new key and ${keep}; started with the old key alone, the gateway cannot open the secrets and refuses to start.`,
      ]
    case 'keyFile':
      return [
        `This gateway seals with the new master key ${keyId} now, until it restarts.`,
        `Before the next restart, write the new key to ${source.file} (secrets.masterKeyFile) and ${keep}; started with the old key alone, the gateway cannot open the secrets and refuses to start.`,
      ]
  }
}

/** The admin routes over the secret store. */
export function secretAdminRoutes(deps: {
  secrets: SecretService
  agents: Pick<AgentStore, 'get' | 'getByName'>
  masterKey: MasterKeySource
  /**
   * Runs after a rotation that changed what seals the secrets, e.g. a signing-key rotation, so the
   * signing keys too are soon sealed only under the new master key.
   */
  onMasterRotated?: () => Promise<unknown>
}) {
  const { secrets, agents, masterKey, onMasterRotated } = deps
  const findAgent = async (ref: string) => (await agents.get(ref)) ?? (await agents.getByName(ref))

  return (app: FastifyInstance): void => {
    app.get('/v1/secrets', async (_request, reply) => {
      reply.header('cache-control', 'no-store')
      return { secrets: (await secrets.list()).map(secretView) }
    })

    app.put('/v1/secrets/:name', { schema: { params: Name, body: Put } }, async (request, reply) => {
      const { name } = request.params as Static<typeof Name>
      const body = request.body as Static<typeof Put>
      let agentId: string | null = null
      if (body.agent !== undefined) {
        const agent = await findAgent(body.agent)
        if (agent === undefined) {
          throw new GatewayError('not_found', `No agent is named or numbered "${body.agent}".`)
        }
        agentId = agent.id
      }
      await secrets.put(name, body.value, agentId)
      reply.code(204)
    })

    app.delete(
      '/v1/secrets/:name',
      { schema: { params: Name, querystring: AgentQuery } },
      async (request, reply) => {
        const { name } = request.params as Static<typeof Name>
        const { agent } = request.query as Static<typeof AgentQuery>
        // An override outlives a deleted agent: an unknown reference is tried as the id it had.
        const agentId = agent === undefined ? null : ((await findAgent(agent))?.id ?? agent)
        if (!(await secrets.delete(name, agentId))) {
          throw new GatewayError(
            'not_found',
            agent === undefined
              ? `No secret "${name}" is set.`
              : `No secret "${name}" is set for agent "${agent}".`,
          )
        }
        reply.code(204)
      },
    )

    app.post(
      '/v1/secrets/rotate-master',
      {
        schema: { body: Rotate },
        // `curl -X POST` sends no body at all: that is the same request as `{}`.
        preValidation: async (request) => {
          request.body ??= {}
        },
      },
      async (request, reply) => {
        const body = request.body as Static<typeof Rotate>
        let key: Buffer | undefined
        if (body.key !== undefined) {
          try {
            key = parseMasterKey(body.key)
          } catch (err) {
            // parseMasterKey's message describes the format and never repeats the text.
            throw new GatewayError('bad_request', `key: ${(err as Error).message}`)
          }
        }
        const rotation = await secrets.rotateMaster(key)
        const next = nextSteps(masterKey, rotation)
        if (
          onMasterRotated !== undefined &&
          (rotation.keyId !== rotation.previousKeyId || rotation.resealed > 0)
        ) {
          // The secrets are carried over already: a failure here must not read as a failed rotation.
          await onMasterRotated().catch((err: unknown) => {
            next.push(`The follow-up step failed (${(err as Error).message}); run \`4runr keys rotate\`.`)
          })
        }
        reply.header('cache-control', 'no-store')
        return {
          keyId: rotation.keyId,
          previousKeyId: rotation.previousKeyId,
          resealed: rotation.resealed,
          ...(rotation.keyFile === undefined ? {} : { keyFile: rotation.keyFile }),
          next,
        }
      },
    )
  }
}
