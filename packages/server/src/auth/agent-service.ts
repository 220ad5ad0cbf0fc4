/**
 * Agent lifecycle (DESIGN §5, §18): create (with a generated key pair when none is given), read,
 * patch, delete, add keys, revoke, and the agents declared in the config file. Every change is
 * written to the store, applied to this instance's directory before the call returns, and
 * announced to the other instances.
 */
import { randomBytes } from 'node:crypto'
import type { RawConfig } from '../config/schema.ts'
import { GatewayError } from '../errors/gateway-error.ts'
import { generateAgentKeyPair, jwkThumbprint, parsePublicJwk } from '../identity/jwk.ts'
import type { Agent, AgentKey, AgentPatch, PublicJwk, Revocation, Store } from '../store/types.ts'
import { StoreConflictError } from '../store/types.ts'
import type { AgentDirectory } from './agent-directory.ts'

export interface CreateAgentInput {
  name: string
  labels?: Record<string, string>
  roles?: string[]
  publicKeyJwk?: unknown
  requireDpop?: boolean
}

export interface RevokeInput {
  jti?: string
  agentId?: string
  kid?: string
  reason?: string
  /** For a jti: when the token expires (ms), after which the record can be forgotten. */
  expiresAt?: number | null
}

const namePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/

/** The key a caller gave (public only), or a generated pair whose private half goes back once. */
function keyFrom(given: unknown): {
  publicJwk: PublicJwk
  privateKeyJwk?: Record<string, unknown>
  kid: string
} {
  if (given === undefined) {
    const pair = generateAgentKeyPair()
    return {
      publicJwk: pair.publicJwk,
      privateKeyJwk: pair.privateJwk as unknown as Record<string, unknown>,
      kid: pair.kid,
    }
  }
  const publicJwk = parsePublicJwk(given)
  return { publicJwk, kid: publicJwk.kid ?? jwkThumbprint(publicJwk) }
}

/** `agt_` and 24 hex digits: unguessable, URL-safe, recognisable in logs. */
export function newAgentId(): string {
  return `agt_${randomBytes(12).toString('hex')}`
}

function conflictToError(err: unknown, what: string): never {
  if (err instanceof StoreConflictError) throw new GatewayError('conflict', what)
  throw err
}

export class AgentService {
  constructor(
    private readonly store: Store,
    private readonly directory: AgentDirectory,
    /** The longest an access token can live (tokens.maxTtl): how long a revocation matters. */
    private readonly maxTokenLifetimeMs: () => number,
    /** A change is stored and in force here even when telling the other instances fails. */
    private readonly onAnnounceError: (err: unknown) => void = () => {},
    private readonly now: () => number = Date.now,
  ) {}

  async create(input: CreateAgentInput, source: 'api' | 'config' = 'api') {
    if (!namePattern.test(input.name)) {
      throw new GatewayError(
        'bad_request',
        'name must be 1–128 characters: letters, digits, dot, dash, underscore, starting with a letter or digit.',
      )
    }
    const { publicJwk, privateKeyJwk, kid } = keyFrom(input.publicKeyJwk)
    const now = this.now()
    const key: AgentKey = { kid, jwk: { ...publicJwk, kid }, createdAt: now, notAfter: null }
    const agent = await this.store.agents
      .create({
        id: newAgentId(),
        name: input.name,
        labels: input.labels ?? {},
        roles: input.roles ?? [],
        requireDpop: input.requireDpop ?? false,
        source,
        createdAt: now,
        keys: [key],
      })
      .catch((err: unknown) => conflictToError(err, `An agent named "${input.name}" already exists.`))
    await this.changed(agent.id, agent)
    return { agent, kid, privateKeyJwk }
  }

  async get(id: string): Promise<Agent> {
    const agent = await this.store.agents.get(id)
    if (agent === undefined) throw new GatewayError('not_found', `No agent with id ${id}.`)
    return agent
  }

  list(options: { limit?: number; after?: string }): Promise<Agent[]> {
    return this.store.agents.list(options)
  }

  async patch(id: string, patch: AgentPatch): Promise<Agent> {
    const before = await this.get(id)
    const agent = await this.store.agents
      .update(id, patch, this.now())
      .catch((err: unknown) => conflictToError(err, `An agent named "${patch.name}" already exists.`))
    if (agent === undefined) throw new GatewayError('not_found', `No agent with id ${id}.`)
    // Disabling is a kill switch: re-enabling later must not bring the old tokens back.
    if (before.status === 'active' && agent.status === 'disabled') {
      await this.revoke({ agentId: id, reason: 'agent disabled' })
    }
    await this.changed(id, agent)
    return agent
  }

  async delete(id: string): Promise<void> {
    await this.get(id)
    // Revoke first: if the delete then fails, the agent's tokens are dead all the same.
    await this.revoke({ agentId: id, reason: 'agent deleted' })
    await this.store.agents.delete(id)
    await this.changed(id, undefined)
  }

  /** Add a key (rotation); `notAfterOld` (ms) ends the agent's other keys. */
  async addKey(id: string, input: { publicKeyJwk?: unknown; notAfterOld?: number }) {
    await this.get(id)
    const { publicJwk, privateKeyJwk, kid } = keyFrom(input.publicKeyJwk)
    const now = this.now()
    const agent = await this.store.agents
      .addKey(id, { kid, jwk: { ...publicJwk, kid }, createdAt: now, notAfter: null }, input.notAfterOld)
      .catch((err: unknown) => conflictToError(err, `The agent already has a key with kid ${kid}.`))
    if (agent === undefined) throw new GatewayError('not_found', `No agent with id ${id}.`)
    await this.changed(id, agent)
    return { agent, kid, privateKeyJwk }
  }

  /** Store, apply here, then announce: the caller's next request is refused on every instance. */
  async revoke(input: RevokeInput): Promise<Revocation> {
    let kind: Revocation['kind']
    if (input.jti !== undefined) {
      if (input.agentId !== undefined || input.kid !== undefined) {
        throw new GatewayError('bad_request', 'Revoke either {jti}, {agentId} or {agentId, kid}.')
      }
      kind = 'jti'
    } else if (input.agentId !== undefined) {
      kind = input.kid === undefined ? 'agent' : 'key'
      if (
        this.directory.get(input.agentId) === undefined &&
        (await this.store.agents.get(input.agentId)) === undefined
      ) {
        throw new GatewayError('not_found', `No agent with id ${input.agentId}.`)
      }
    } else {
      throw new GatewayError('bad_request', 'Revoke either {jti}, {agentId} or {agentId, kid}.')
    }
    const createdAt = this.now()
    // A jti or kill switch only concerns tokens issued before it, and none of those outlives
    // tokens.maxTtl: after that the record can go. A revoked key must never sign again: kept.
    const expiresAt =
      kind === 'key' ? null : (input.expiresAt ?? createdAt + this.maxTokenLifetimeMs() + 60_000)
    const revocation: Revocation = {
      id: `rev_${randomBytes(12).toString('hex')}`,
      kind,
      jti: input.jti ?? null,
      agentId: input.agentId ?? null,
      kid: input.kid ?? null,
      reason: input.reason ?? null,
      createdAt,
      expiresAt,
    }
    await this.store.revocations.add(revocation)
    this.directory.apply(revocation)
    // Best effort: the other instances also re-read revocations from the store every few
    // seconds, and failing the call now would report as lost a revocation that is in force.
    await this.directory.announceRevocation(revocation).catch(this.onAnnounceError)
    return revocation
  }

  listRevocations(): Promise<Revocation[]> {
    return this.store.revocations.list({ now: this.now() })
  }

  /**
   * Make the store match the agents declared in the config file: create missing ones, update
   * labels, roles and the DPoP flag, add a changed key, and disable config agents that were
   * removed from the file. Agents made through the API are never touched.
   */
  async syncDeclared(declared: NonNullable<RawConfig['agents']>): Promise<void> {
    const names = new Set<string>()
    for (const d of declared) {
      names.add(d.name)
      const existing = await this.store.agents.getByName(d.name)
      if (existing === undefined) {
        if (d.publicKeyJwk === undefined) {
          throw new GatewayError('bad_request', `agent "${d.name}" in the config needs a publicKeyJwk`)
        }
        await this.create(
          {
            name: d.name,
            labels: d.labels,
            roles: d.roles,
            publicKeyJwk: d.publicKeyJwk,
            requireDpop: d.requireDpop,
          },
          'config',
        ).catch((err: unknown) => {
          // Another instance created it first: that is the same agent.
          if (!(err instanceof GatewayError && err.code === 'conflict')) throw err
        })
        continue
      }
      if (existing.source !== 'config') continue
      // Status is the operator's: an agent disabled through the API (an incident) stays disabled
      // across reloads and restarts, and one disabled because it left the file is re-enabled
      // through the API, not by putting it back.
      const patch: AgentPatch = {
        labels: d.labels ?? {},
        roles: d.roles ?? [],
        requireDpop: d.requireDpop ?? false,
      }
      const same =
        JSON.stringify([existing.labels, existing.roles, existing.requireDpop]) ===
        JSON.stringify([patch.labels, patch.roles, patch.requireDpop])
      if (!same) await this.patch(existing.id, patch)
      if (d.publicKeyJwk !== undefined) {
        const jwk = parsePublicJwk(d.publicKeyJwk)
        if (!existing.keys.some((k) => k.jwk.x === jwk.x)) {
          await this.addKey(existing.id, { publicKeyJwk: jwk, notAfterOld: this.now() })
        }
      }
    }
    let after: string | undefined
    for (;;) {
      const page = await this.store.agents.list({ limit: 500, after })
      for (const agent of page) {
        if (agent.source === 'config' && agent.status === 'active' && !names.has(agent.name)) {
          await this.patch(agent.id, { status: 'disabled' })
        }
      }
      if (page.length < 500) break
      after = page[page.length - 1]!.id
    }
  }

  private async changed(id: string, agent: Agent | undefined): Promise<void> {
    this.directory.setAgent(id, agent)
    await this.directory.announceAgent(id).catch(this.onAnnounceError)
  }
}

/** The agent as the admin API shows it: public keys only, times as RFC 3339. */
export function agentView(agent: Agent) {
  return {
    id: agent.id,
    name: agent.name,
    labels: agent.labels,
    roles: agent.roles,
    status: agent.status,
    requireDpop: agent.requireDpop,
    source: agent.source,
    createdAt: new Date(agent.createdAt).toISOString(),
    updatedAt: new Date(agent.updatedAt).toISOString(),
    keys: agent.keys.map((k) => ({
      kid: k.kid,
      publicKeyJwk: k.jwk,
      createdAt: new Date(k.createdAt).toISOString(),
      notAfter: k.notAfter === null ? null : new Date(k.notAfter).toISOString(),
    })),
  }
}
