/**
 * Assembles agent identity for one gateway instance: store, shared state, directory, signing
 * keys, and, once the public URL is known, the token issuer, verifier, routes and authenticator.
 * main.ts calls `openIdentity` before listening (a broken store fails the start) and `finish`
 * after, since the default issuer is the listener's real address.
 */
import type { CompiledConfig } from '../config/compile.ts'
import type { Authenticator, PublicRoute } from '../http/pipeline.ts'
import { createTokenIssuer, createTokenVerifier } from '../identity/access-token.ts'
import { createKeyRing, type KeyRing } from '../identity/key-ring.ts'
import type { Logger } from '../observability/logger.ts'
import type { Metrics } from '../observability/metrics.ts'
import { type MasterKeySource, type MasterKeys, resolveMasterKeys } from '../secrets/master-keys.ts'
import { openSharedState } from '../state/open-state.ts'
import { createSwitchableState, type SwitchableState } from '../state/switchable-state.ts'
import type { SharedState } from '../state/types.ts'
import { openStore } from '../store/open-store.ts'
import type { Agent, Store } from '../store/types.ts'
import { AgentDirectory } from './agent-directory.ts'
import { AgentService } from './agent-service.ts'
import { agentTokenAuthenticator, identityRoutes } from './public-routes.ts'
import { TokenService } from './token-service.ts'

/** Safety net for lost pub/sub messages: every instance re-reads new revocations this often… */
const resyncMs = 5_000
/** …and the whole agent list this often. */
const agentResyncMs = 60_000
const pruneEveryMs = 10 * 60_000
/** How often to check whether the signing key is due for rotation. */
const rotationCheckMs = 60_000

/** A ping that answers true within the readiness budget; a hung connection counts as down. */
function answers(ping: Promise<boolean>, timeoutMs = 2000): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<boolean>((done) => {
    timer = setTimeout(() => done(false), timeoutMs)
  })
  return Promise.race([ping.catch(() => false), timeout]).finally(() => clearTimeout(timer))
}

export interface Identity {
  readonly store: Store
  readonly state: SharedState
  readonly directory: AgentDirectory
  readonly agents: AgentService
  readonly keyRing: KeyRing
  /** The master keys (shared with the secret store, so a rotation reaches the signing keys too). */
  readonly masterKeys: MasterKeys
  readonly masterKeySource: MasterKeySource
  /** Build what needs the issuer URL: the token service, public routes and the authenticator. */
  finish(
    issuer: string,
    canGrant?: (agent: Agent, scope: string) => boolean,
    /** Every token issued, for the audit ledger. */
    onIssued?: (grant: string, issued: { sub: string; jti: string }) => void,
  ): {
    tokens: TokenService
    routes: Map<string, PublicRoute>
    authenticator: Authenticator
  }
  /** Bring the store's config-declared agents in line with a (re)loaded config. */
  syncDeclared(config: CompiledConfig): Promise<void>
  /** Readiness problems of the store and shared state, if any. */
  problems(): Promise<string[]>
  close(): Promise<void>
}

export async function openIdentity(options: {
  config: CompiledConfig
  env: NodeJS.ProcessEnv
  logger: Logger
  metrics: Metrics
}): Promise<Identity> {
  const { config, env, logger, metrics } = options
  const raw = config.raw
  const master = await resolveMasterKeys({ env, configured: raw.secrets, dataDir: config.dataDir })
  if (master.source.kind === 'dataDir' && master.source.generatedNow) {
    logger.warn(
      { file: master.source.file },
      'generated a master key for this data directory; back it up, or set RUNR_MASTER_KEY in production',
    )
  }
  const store = await openStore(
    raw.store?.kind === 'postgres'
      ? { kind: 'postgres', url: raw.store.url }
      : { kind: 'sqlite', path: raw.store?.path ?? `${config.dataDir}/4runr.db` },
    raw.store?.kind === 'postgres' && raw.store.schema !== undefined
      ? { postgresSchema: raw.store.schema }
      : {},
  )
  let state: SwitchableState | undefined
  let directory: AgentDirectory | undefined
  try {
    const onStateError = (err: unknown, source: string) => logger.warn({ err, source }, 'shared state error')
    // The gateway starts even when Redis is down: /ready says so, and what needs Redis is
    // refused with 503 until it answers.
    state = createSwitchableState(
      await openSharedState(raw.redis, { onError: onStateError, waitForConnection: false, cache: raw.cache }),
    )
    let redisConfig = JSON.stringify(raw.redis ?? null)
    const onError = (err: unknown) => logger.error({ err }, 'identity sync failed')
    directory = new AgentDirectory(store, state, onError)
    await directory.start(resyncMs, agentResyncMs)
    const keyRing = await createKeyRing({
      store: store.signingKeys,
      masterKey: master.keys,
      rotateEveryMs: config.tokens.rotateEveryMs,
      maxTtlMs: config.tokens.maxTtlMs,
    })
    let current = config
    // Revocations must outlive every token they cover, including tokens issued under a longer
    // maxTtl before a reload shortened it: the key ring's start-time bound is kept in the max.
    const agents = new AgentService(
      store,
      directory,
      () => Math.max(current.tokens.maxTtlMs, config.tokens.maxTtlMs),
      (err) => logger.warn({ err }, 'could not tell the other instances about an identity change'),
    )
    const stateRef = state
    const directoryRef = directory
    // Rotate when due (the refresh below picks up a rotation made by another instance).
    const keysTimer = setInterval(
      () => {
        keyRing
          .rotateIfDue()
          .then((rotated) => {
            if (rotated) logger.info({ kid: keyRing.active().kid }, 'signing key rotated')
          })
          .catch((err: unknown) => logger.error({ err }, 'signing key rotation check failed'))
      },
      Math.min(rotationCheckMs, Math.max(1000, config.tokens.rotateEveryMs / 4)),
    )
    keysTimer.unref()
    const refreshTimer = setInterval(() => {
      keyRing.refresh().catch((err: unknown) => logger.error({ err }, 'signing key refresh failed'))
    }, resyncMs)
    refreshTimer.unref()
    // Records that can no longer matter: revocations past their tokens' lifetime, signing keys
    // past their grace.
    const pruneTimer = setInterval(() => {
      Promise.all([store.revocations.prune(Date.now()), keyRing.prune()]).catch((err: unknown) =>
        logger.error({ err }, 'pruning revocations and retired keys failed'),
      )
    }, pruneEveryMs)
    pruneTimer.unref()

    let syncing: Promise<void> = Promise.resolve()
    let closed = false
    const sync = async (next: CompiledConfig): Promise<void> => {
      current = next
      // A reload that changes `redis:` moves the shared state there without a restart.
      const nextRedis = JSON.stringify(next.raw.redis ?? null)
      if (nextRedis !== redisConfig) {
        const opened = await openSharedState(next.raw.redis, {
          onError: onStateError,
          waitForConnection: false,
          cache: next.raw.cache,
        })
        // Stopped meanwhile: the new connection would never be closed.
        if (closed) {
          await opened.close()
          return
        }
        await stateRef.switchTo(opened)
        // Only now: a switch that failed is tried again by the next reload.
        redisConfig = nextRedis
        logger.info({ kind: opened.kind }, 'shared state switched')
      }
      await agents.syncDeclared(next.raw.agents ?? [])
    }

    return {
      store,
      state,
      directory,
      agents,
      keyRing,
      masterKeys: master.keys,
      masterKeySource: master.source,
      finish(issuer, canGrant, onIssued) {
        const tokens = new TokenService({
          config: () => current,
          issuer,
          tokens: createTokenIssuer({ keyRing, issuer }),
          verifier: createTokenVerifier({ keyRing, issuer }),
          directory: directoryRef,
          state: stateRef,
          maxTtlCapMs: keyRing.maxTtlMs,
          onIssued: (grant, issued) => {
            metrics.tokenIssued(grant)
            onIssued?.(grant, issued)
          },
          canGrant,
        })
        return {
          tokens,
          routes: identityRoutes({ tokens, keyRing, issuer }),
          authenticator: agentTokenAuthenticator(tokens, issuer),
        }
      },
      syncDeclared(next) {
        // One at a time, in reload order: two overlapping syncs could switch to an older Redis.
        syncing = syncing.catch(() => undefined).then(() => sync(next))
        return syncing
      },

      async problems() {
        const [storeOk, stateOk] = await Promise.all([answers(store.ping()), answers(stateRef.ping())])
        const found: string[] = []
        if (!storeOk) found.push(`store (${store.kind}): not answering`)
        if (!stateOk) found.push(`${stateRef.kind === 'redis' ? 'redis' : 'shared state'}: not answering`)
        return found
      },
      async close() {
        closed = true
        await syncing.catch(() => undefined)
        clearInterval(keysTimer)
        clearInterval(refreshTimer)
        clearInterval(pruneTimer)
        directoryRef.stop()
        await stateRef.close()
        await store.close()
      },
    }
  } catch (err) {
    directory?.stop()
    await state?.close().catch(() => undefined)
    await store.close().catch(() => undefined)
    throw err
  }
}
