/**
 * The in-memory view of agents and revocations that the hot path reads (DESIGN §5): a verified
 * token is checked against it on every request, cache hit or not, so a revocation, a disabled or
 * deleted agent, or a role change takes effect on the very next request.
 *
 * The store is the truth. Every instance keeps its view current three ways: it applies its own
 * changes before answering the admin call that made them, it hears other instances' changes on
 * the shared `identity` channel (Redis pub/sub in a cluster: well under a second), and it re-reads
 * the store every `resyncMs` in case a message was lost.
 */
import type { SharedState, Unsubscribe } from '../state/types.ts'
import type { Agent, Revocation, Store } from '../store/types.ts'

/** What the directory needs from a token to judge it. */
export interface TokenFacts {
  sub: string
  jti: string
  /** seconds */
  iat: number
  /** seconds */
  exp: number
  /** the agent key the token was obtained with (exchange), absent for admin-issued tokens */
  akid?: string | undefined
  /** the tokens it was delegated from */
  anc?: readonly string[] | undefined
}

/** Why a token is no longer good, or undefined when it is. */
export type RevokedReason =
  | 'revoked_token'
  | 'revoked_parent'
  | 'revoked_agent'
  | 'revoked_key'
  | 'agent_disabled'
  | 'unknown_agent'

type Message = { type: 'agent'; id: string } | { type: 'revocation'; revocation: Revocation }

export const identityChannel = 'identity'

export class AgentDirectory {
  private agents = new Map<string, Agent>()
  /** jti → the revoked token's exp (ms), after which the entry is useless. */
  private revokedJtis = new Map<string, number>()
  /** agent id → the latest kill switch (ms): tokens issued at or before it are refused. */
  private agentRevokedAt = new Map<string, number>()
  /** `agentId kid` → when the key was revoked (ms). */
  private keyRevokedAt = new Map<string, number>()
  private lastRevocationAt = 0
  /** Counts setAgent calls; `changedAt` says when each agent last changed here. */
  private changes = 0
  private changedAt = new Map<string, number>()
  private unsubscribe: Unsubscribe | undefined
  private timer: NodeJS.Timeout | undefined
  private resyncing: Promise<void> | undefined
  private resyncingAgents = false

  constructor(
    private readonly store: Store,
    private readonly state: SharedState,
    private readonly onError: (err: unknown) => void,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Load everything and start listening; resolves when the view is complete. Afterwards new
   * revocations are re-read every `resyncMs` (a cheap query from the last one seen) and the
   * whole agent list every `agentResyncMs` (it grows with the number of agents).
   */
  async start(resyncMs: number, agentResyncMs = resyncMs): Promise<void> {
    this.unsubscribe = this.state.subscribe(identityChannel, (text) => this.onMessage(text))
    await this.resync()
    let elapsed = 0
    this.timer = setInterval(() => {
      elapsed += resyncMs
      const full = elapsed >= agentResyncMs
      if (full) elapsed = 0
      this.resync(full).catch(this.onError)
    }, resyncMs)
    this.timer.unref()
  }

  stop(): void {
    this.unsubscribe?.()
    if (this.timer !== undefined) clearInterval(this.timer)
  }

  /** Re-read new revocations (and, when `agents`, every agent) from the store. Calls share one read. */
  resync(agents = true): Promise<void> {
    // A full read asked for while a partial one runs follows it, rather than being dropped.
    if (this.resyncing !== undefined && agents && !this.resyncingAgents) {
      return this.resyncing.then(() => this.resync(true))
    }
    if (this.resyncing === undefined) this.resyncingAgents = agents
    this.resyncing ??= (async () => {
      try {
        if (agents) await this.reloadAgents()
        // Between full reads, only what is newer than the newest seen, with some overlap for
        // other instances' clocks; a full read takes every unexpired revocation again, so one
        // whose message was lost and whose clock was far behind is not missed for good.
        const since = agents ? 0 : Math.max(0, this.lastRevocationAt - 5_000)
        for (const r of await this.store.revocations.list({ since, now: this.now() })) this.apply(r)
        this.prune()
      } finally {
        this.resyncing = undefined
      }
    })()
    return this.resyncing
  }

  private async reloadAgents(): Promise<void> {
    const startedAt = this.changes
    const agents = new Map<string, Agent>()
    let after: string | undefined
    for (;;) {
      const page = await this.store.agents.list({ limit: 500, after })
      for (const agent of page) agents.set(agent.id, agent)
      if (page.length < 500) break
      after = page[page.length - 1]!.id
    }
    // A change applied here while the pages were read (a disable, a delete, a role change) is
    // newer than what was read: keep it, or a disabled agent would come back until the next read.
    for (const [id, at] of this.changedAt) {
      if (at <= startedAt) {
        this.changedAt.delete(id)
        continue
      }
      const local = this.agents.get(id)
      if (local === undefined) agents.delete(id)
      else agents.set(id, local)
    }
    this.agents = agents
  }

  get(id: string): Agent | undefined {
    return this.agents.get(id)
  }

  byName(name: string): Agent | undefined {
    for (const agent of this.agents.values()) if (agent.name === name) return agent
    return undefined
  }

  /** Record a revocation here now (the caller also stores and publishes it). */
  apply(r: Revocation): void {
    if (r.createdAt > this.lastRevocationAt) this.lastRevocationAt = r.createdAt
    if (r.kind === 'jti' && r.jti !== null) {
      this.revokedJtis.set(r.jti, r.expiresAt ?? Number.MAX_SAFE_INTEGER)
    } else if (r.kind === 'agent' && r.agentId !== null) {
      if ((this.agentRevokedAt.get(r.agentId) ?? 0) < r.createdAt)
        this.agentRevokedAt.set(r.agentId, r.createdAt)
    } else if (r.kind === 'key' && r.agentId !== null && r.kid !== null) {
      const key = `${r.agentId} ${r.kid}`
      if ((this.keyRevokedAt.get(key) ?? 0) < r.createdAt) this.keyRevokedAt.set(key, r.createdAt)
    }
  }

  /** Replace one agent's record here (after a create, patch or key change), or drop it. */
  setAgent(id: string, agent: Agent | undefined): void {
    this.changedAt.set(id, ++this.changes)
    if (agent === undefined) this.agents.delete(id)
    else this.agents.set(id, agent)
  }

  /** True when the agent key may no longer be used (revoked). */
  isKeyRevoked(agentId: string, kid: string): boolean {
    return this.keyRevokedAt.has(`${agentId} ${kid}`)
  }

  /**
   * Judge a verified token. Tokens carry `iat` in whole seconds, so a token issued in the same
   * second as a kill switch counts as issued before it: refusing one token too many beats
   * accepting one too many.
   */
  check(token: TokenFacts): RevokedReason | undefined {
    const agent = this.agents.get(token.sub)
    if (agent === undefined) return 'unknown_agent'
    if (agent.status !== 'active') return 'agent_disabled'
    if (this.revokedJtis.has(token.jti)) return 'revoked_token'
    // A delegated token dies with any token it came from: a thief's first move with a stolen
    // token may be to delegate it to a key of their own.
    if (token.anc !== undefined)
      for (const jti of token.anc) if (this.revokedJtis.has(jti)) return 'revoked_parent'
    const issuedMs = token.iat * 1000
    const killed = this.agentRevokedAt.get(token.sub)
    if (killed !== undefined && issuedMs <= killed) return 'revoked_agent'
    if (token.akid !== undefined) {
      const keyKilled = this.keyRevokedAt.get(`${token.sub} ${token.akid}`)
      if (keyKilled !== undefined && issuedMs <= keyKilled) return 'revoked_key'
    }
    return undefined
  }

  /** Tell every instance (this one included) that an agent changed. */
  async announceAgent(id: string): Promise<void> {
    await this.state.publish(identityChannel, JSON.stringify({ type: 'agent', id } satisfies Message))
  }

  async announceRevocation(revocation: Revocation): Promise<void> {
    await this.state.publish(
      identityChannel,
      JSON.stringify({ type: 'revocation', revocation } satisfies Message),
    )
  }

  private onMessage(text: string): void {
    let message: Message
    try {
      message = JSON.parse(text) as Message
    } catch (err) {
      this.onError(err)
      return
    }
    if (message.type === 'revocation') {
      this.apply(message.revocation)
      // A kill switch usually comes with a status change (disable, delete): read the agent too.
      const agentId = message.revocation.agentId
      if (message.revocation.kind === 'agent' && agentId !== null) {
        this.store.agents.get(agentId).then((agent) => this.setAgent(agentId, agent), this.onError)
      }
    } else if (message.type === 'agent' && typeof message.id === 'string') {
      this.store.agents.get(message.id).then((agent) => this.setAgent(message.id, agent), this.onError)
    }
  }

  private prune(): void {
    const now = this.now()
    for (const [jti, until] of this.revokedJtis) if (until < now) this.revokedJtis.delete(jti)
  }
}
