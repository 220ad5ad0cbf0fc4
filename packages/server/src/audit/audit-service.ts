/**
 * The audit ledger as the gateway runs it: the ledger store on the configured database, the
 * writer with its group commits, retention, and the three ways entries come in (public requests,
 * admin requests, token issuance), plus the refusal that `audit.onFailure: refuse` asks for.
 */
import type { CompiledConfig } from '../config/compile.ts'
import { GatewayError } from '../errors/gateway-error.ts'
import type { RequestContext } from '../http/context.ts'
import type { KeyRing } from '../identity/key-ring.ts'
import type { MasterKeys } from '../secrets/master-keys.ts'
import type { AuditEvent } from './entry.ts'
import { type AdminRequestFacts, adminEvent, callEvent, tokenIssuedEvent } from './events.ts'
import { createLedger, type Ledger } from './ledger.ts'
import type { LedgerStore } from './ledger-store.ts'
import { type AuditSettings, auditSettings } from './settings.ts'

const pruneEveryMs = 60 * 60_000

export interface AuditService {
  readonly ledger: Ledger
  readonly store: LedgerStore
  readonly masterKeys: MasterKeys
  settings(): AuditSettings
  /** Pipeline stage 9: queue the entry of a finished request (unless it was committed already). */
  record(ctx: RequestContext): void
  /**
   * With `durability: sync`, commit the entry of `ctx` before its answer is written: resolves to
   * undefined when it is committed (or may go unrecorded), or to the error to answer instead.
   * Undefined when nothing needs to wait.
   */
  hold(ctx: RequestContext): Promise<GatewayError | undefined> | undefined
  /** The admin listener's changes and refusals; awaits the commit with `durability: sync`. */
  admin(facts: AdminRequestFacts): Promise<GatewayError | undefined> | undefined
  /** A token was issued. */
  tokenIssued(grant: string, issued: { sub: string; jti: string }): void
  /** The error to refuse calls with while the ledger cannot be written (onFailure: refuse). */
  refusal(): GatewayError | undefined
  /** Why the ledger is unhealthy, for /ready (also with onFailure: continue). */
  problem(): string | undefined
  close(): Promise<void>
}

/** The store the ledger writes to: the Store's own database, on a connection of its own. */
async function openLedgerStore(config: CompiledConfig): Promise<LedgerStore> {
  const store = config.raw.store
  if (store?.kind === 'postgres') {
    const { openPostgresLedgerStore } = await import('./postgres-ledger-store.ts')
    return openPostgresLedgerStore(store.url, store.schema === undefined ? {} : { schema: store.schema })
  }
  const { openSqliteLedgerStore } = await import('./sqlite-ledger-store.ts')
  return openSqliteLedgerStore(store?.path ?? `${config.dataDir}/4runr.db`)
}

/** Open the ledger for `config`, or undefined when `audit.enabled` is false. */
export async function openAudit(deps: {
  config: CompiledConfig
  currentConfig(): CompiledConfig
  keyRing: KeyRing
  masterKeys: MasterKeys
  onError(err: unknown, what: string): void
}): Promise<AuditService | undefined> {
  const initial = auditSettings(deps.config.raw)
  if (!initial.enabled) return undefined
  // Settings follow reloads (durability, onFailure, checkpointEvery, retainDays), computed once per version.
  let settingsFor = deps.config
  let current = initial
  const settings = (): AuditSettings => {
    const config = deps.currentConfig()
    if (config !== settingsFor) {
      settingsFor = config
      current = { ...auditSettings(config.raw), instance: initial.instance }
    }
    return current
  }
  const store = await openLedgerStore(deps.config)
  let ledger: Ledger
  try {
    ledger = await createLedger({
      store,
      settings,
      instance: initial.instance,
      signingKey: () => deps.keyRing.active(),
      masterKeys: deps.masterKeys,
      onError: deps.onError,
    })
  } catch (err) {
    await store.close()
    throw err
  }
  const prune = (): void => {
    ledger.prune().catch((err: unknown) => deps.onError(err, 'audit retention failed'))
  }
  prune()
  const pruneTimer = setInterval(prune, pruneEveryMs)
  pruneTimer.unref()

  // Requests whose entry was committed before their answer: stage 9 must not record them again.
  const held = new WeakSet<RequestContext>()
  const refused = (): GatewayError =>
    new GatewayError('audit_unavailable', undefined, { details: { reason: ledger.problem() ?? 'unknown' } })
  /** Commit and report what to answer: the error when refusing, nothing when continuing. */
  const commit = (event: AuditEvent | undefined): Promise<GatewayError | undefined> =>
    ledger.commit(event).then(
      () => undefined,
      () => (settings().onFailure === 'refuse' ? refused() : undefined),
    )

  return {
    ledger,
    store,
    masterKeys: deps.masterKeys,
    settings,
    record(ctx) {
      if (held.has(ctx)) return
      const event = callEvent(ctx, Date.now())
      if (event === undefined) return
      // In sync mode an entry that could not wait for its answer (a proxied stream) is still
      // committed at once rather than after the batch window.
      // Nobody waits for this one: when its commit fails it is queued like a batched entry and
      // written once the store takes writes again, never dropped.
      if (settings().durability === 'sync') ledger.commit(event).catch(() => ledger.append(event))
      else ledger.append(event)
    },
    hold(ctx) {
      if (settings().durability !== 'sync' || ctx.errorCode === 'audit_unavailable') return undefined
      const event = callEvent(ctx, Date.now())
      if (event === undefined) {
        // A token answer waits for its token event, queued by the token service just before.
        if (ctx.route === '/v1/token' && ctx.status < 400) return commit(undefined)
        return undefined
      }
      held.add(ctx)
      return commit(event).then((error) => {
        // Stage 9 has run already and skipped this request: the refusal it answers instead is
        // queued here, to be written once the store takes writes again.
        if (error !== undefined) ledger.append({ ...event, decision: 'deny', status: error.status })
        return error
      })
    },
    admin(facts) {
      const event = adminEvent(facts, Date.now())
      if (event === undefined) return undefined
      if (settings().durability === 'sync') return commit(event)
      ledger.append(event)
      return undefined
    },
    tokenIssued(grant, issued) {
      const event = tokenIssuedEvent(grant, issued, Date.now())
      // Nobody waits for this one: when its commit fails it is queued like a batched entry and
      // written once the store takes writes again, never dropped.
      if (settings().durability === 'sync') ledger.commit(event).catch(() => ledger.append(event))
      else ledger.append(event)
    },
    refusal() {
      if (ledger.problem() === undefined || settings().onFailure !== 'refuse') return undefined
      return refused()
    },
    problem: () => ledger.problem(),
    async close() {
      clearInterval(pruneTimer)
      await ledger.close()
    },
  }
}
