/**
 * createGateway: the only module that wires the folders together. Everything with a side effect
 * (config source, logger, metrics, pools, listeners) is created here and passed down as deps.
 */
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { DestinationStream } from 'pino'
import { type AdminKeys, resolveAdminKeys } from './admin/admin-keys.ts'
import { createAdminServer } from './admin/admin-server.ts'
import { auditAdminRoutes } from './admin/audit-routes.ts'
import { configRoutes } from './admin/config-routes.ts'
import { identityAdminRoutes } from './admin/identity-routes.ts'
import { policyAdminRoutes } from './admin/policy-routes.ts'
import { secretAdminRoutes } from './admin/secret-routes.ts'
import { type AuditService, openAudit } from './audit/audit-service.ts'
import { type Identity, openIdentity } from './auth/identity.ts'
import { createCacheMetrics } from './cache/cache-metrics.ts'
import { createResponseCache } from './cache/response-cache.ts'
import { type CompiledConfig, demoOriginPlaceholder } from './config/compile.ts'
import type { RawConfig } from './config/schema.ts'
import { type ConfigSource, openConfigSource, type ReloadResult } from './config/source.ts'
import { type DemoUpstream, startDemoUpstream } from './demo/demo-upstream.ts'
import { type FakeUpstreams, startFakeUpstreams } from './fakes/index.ts'
import { type Authenticator, createPipeline, type PublicRoute, type Readiness } from './http/pipeline.ts'
import { createPublicServer } from './http/public-server.ts'
import { createLogger, effectiveLogLevel, type Logger } from './observability/logger.ts'
import { createMetrics, type Metrics } from './observability/metrics.ts'
import { createTracing } from './observability/tracing.ts'
import { PolicyEnforcer } from './policy/enforcer.ts'
import { PolicyService } from './policy/policy-service.ts'
import { createLimitMetrics } from './ratelimit/limit-metrics.ts'
import { createRateLimiter } from './ratelimit/limiter.ts'
import { createChannelCall } from './resilience/channel-call.ts'
import { createIdempotency } from './resilience/idempotency.ts'
import { createResilience } from './resilience/registry.ts'
import { openSecretService, type SecretService } from './secrets/secret-service.ts'
import { builtinTools } from './tools/registry.ts'
import { createToolService } from './tools/tool-routes.ts'
import { createPools } from './upstreams/pools.ts'
import { probeDependencies } from './upstreams/probes.ts'

export { ConfigError } from './config/load.ts'
export type { CompiledConfig, ReloadResult }

export interface GatewayOptions {
  /** Path of the YAML config file. */
  configFile: string
  env?: NodeJS.ProcessEnv
  /** Where log lines go (default: stdout). */
  logDestination?: DestinationStream
}

export interface RunningGateway {
  readonly publicUrl: string
  readonly adminUrl: string
  readonly config: () => CompiledConfig
  readonly adminKeys: AdminKeys
  /** The token issuer and audience: gateway.issuer, or the public URL when it is not set. */
  readonly issuer: string
  readonly identity: Identity
  readonly logger: Logger
  readonly metrics: Metrics
  reload(): Promise<ReloadResult>
  /** Graceful stop: refuse new work, drain in-flight requests up to the deadline, close pools. */
  stop(): Promise<void>
}

/**
 * The fake tool upstreams' credentials under `tools.demo`. Not secrets: they open nothing but the
 * local fakes, which check them so that the demo shows the gateway injecting them.
 */
const demoToolCredentials = {
  serpapi: 'demo-serpapi-key',
  openai: 'sk-demo-openai-key',
  gmail: 'demo-gmail-token',
}

/** Store the fakes' credentials as the demo tools' secrets, where no value is set yet. */
async function seedDemoSecrets(secrets: SecretService, config: CompiledConfig, log: Logger): Promise<void> {
  const tools = config.raw.tools ?? {}
  const names = { serpapi: 'serpapi_key', openai: 'openai_key', gmail: 'gmail_token' }
  for (const tool of ['serpapi', 'openai', 'gmail'] as const) {
    if (tools[tool]?.url !== undefined) continue
    const name = tools[tool]?.secret ?? names[tool]
    const set = (await secrets.list()).some((s) => s.name === name && s.agentId === null)
    if (set) continue
    await secrets.put(name, demoToolCredentials[tool])
    log.info({ secret: name, tool }, 'stored the demo credential of the fake upstream as the tool secret')
  }
}

/** Safety net for lost policy announcements: every instance polls the store's fingerprint this often. */
const policyResyncMs = 5_000

function urlOf(server: Server, host: string): string {
  const { port } = server.address() as AddressInfo
  const shown = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host
  return `http://${shown}:${port}`
}

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((ready, fail) => {
    server.once('error', fail)
    server.listen(port, host, () => {
      server.off('error', fail)
      ready()
    })
  })
}

/** Load the config, start both listeners and return the running gateway. */
export async function startGateway(options: GatewayOptions): Promise<RunningGateway> {
  const env = options.env ?? process.env
  const metrics = createMetrics()
  let demo: DemoUpstream | undefined
  let fakes: FakeUpstreams | undefined
  let logger: Logger | undefined

  // The demo upstream and the fake tool upstreams start before the first compile, since demo
  // systems and demo tools point at them.
  const prepare = async (raw: RawConfig): Promise<void> => {
    const wantsDemo = Object.values(raw.systems ?? {}).some((s) => s.kind === 'demo')
    if (wantsDemo && demo === undefined) demo = await startDemoUpstream()
    if (raw.tools?.demo === true && fakes === undefined)
      fakes = await startFakeUpstreams({ credentials: demoToolCredentials, host: '127.0.0.1' })
  }
  const closeDemos = async (): Promise<void> => {
    await demo?.close()
    await fakes?.close()
  }
  const pools = createPools()
  // Breakers, retry budgets and bulkheads of every system and tool (per process: DESIGN §14).
  const resilience = createResilience({
    onBreakerChange: (kind, name, state) =>
      logger?.warn({ [kind]: name, state }, 'circuit breaker changed state'),
    onRetry: (kind, name) => metrics.upstreamRetry(kind, name),
  })
  metrics.trackBreakers(resilience.breakerStates)
  // Set once identity is open; a reload before then has nothing to sync.
  let identity: Identity | undefined
  const source: ConfigSource = await openConfigSource(options.configFile, {
    env,
    prepare,
    compileOptions: {
      resolveDemoOrigin: () => demo?.origin ?? demoOriginPlaceholder,
      resolveDemoTool: (tool) => fakes?.[tool as keyof typeof demoToolCredentials]?.url,
    },
    onReload(result, config) {
      metrics.configReload(result.ok ? 'success' : 'failure')
      if (result.ok) {
        if (logger !== undefined) {
          logger.level = effectiveLogLevel(config.gateway.logLevel, env)
          logger.info({ version: result.version }, 'config reloaded')
        }
        void pools.retain(config)
        resilience.retain(config)
        identity
          ?.syncDeclared(config)
          .catch((err: unknown) =>
            logger?.error({ err }, 'agents declared in the config could not be applied'),
          )
      } else {
        logger?.error({ runningVersion: result.version, problems: result.problems }, 'config reload refused')
      }
    },
  })
  const initial = source.current()
  logger = createLogger(effectiveLogLevel(initial.gateway.logLevel, env), options.logDestination)
  const log = logger

  let draining = false
  let identityReady = false
  let audit: AuditService | undefined
  const readiness = async (): Promise<Readiness> => {
    if (draining) return { ready: false, reasons: ['shutting down'] }
    const reasons = await probeDependencies(source.current())
    if (!identityReady) reasons.push('identity is starting')
    // The probes already name an unreachable Redis or Postgres; the identity's own connections
    // add what a probe cannot see (a wrong password, a connection that is still reconnecting).
    else if (identity !== undefined && reasons.length === 0) reasons.push(...(await identity.problems()))
    const auditProblem = audit?.problem()
    if (auditProblem !== undefined) reasons.push(auditProblem)
    return { ready: reasons.length === 0, reasons }
  }

  const adminKeys = await resolveAdminKeys(initial.gateway.admin.keys, env, initial.dataDir)
  try {
    identity = await openIdentity({ config: initial, env, logger: log, metrics })
    await identity.syncDeclared(initial)
  } catch (err) {
    await identity?.close()
    await pools.close()
    await closeDemos()
    source.close()
    throw err
  }
  const opened = identity
  const policies = new PolicyService(
    opened.store,
    opened.state,
    source.current,
    (err) => log.error({ err }, 'policy sync failed'),
    (name, problems) =>
      log.error({ policy: name, problems }, 'a stored policy does not compile; it is left out'),
  )
  let secrets: SecretService | undefined
  try {
    // The same master key set as the signing keys: a rotation re-seals both.
    secrets = await openSecretService({
      store: opened.store.secrets,
      state: opened.state,
      keys: opened.masterKeys,
      keyFile: opened.masterKeySource.kind === 'dataDir' ? opened.masterKeySource.file : undefined,
      onError: (err, what) => log.warn({ err }, what),
    })
    await policies.start(policyResyncMs)
    if (fakes !== undefined) await seedDemoSecrets(secrets, initial, log)
    // Checkpoints are signed with the token-signing key; its public half is attested under the
    // master key, so a key written into the database by someone else does not verify.
    audit = await openAudit({
      config: initial,
      currentConfig: source.current,
      keyRing: opened.keyRing,
      masterKeys: opened.masterKeys,
      onError: (err, what) => log.error({ err }, what),
    })
  } catch (err) {
    policies.stop()
    secrets?.close()
    await audit?.close()
    await opened.close()
    await pools.close()
    await closeDemos()
    source.close()
    throw err
  }
  const enforcer = new PolicyEnforcer({
    policies,
    store: opened.store,
    state: opened.state,
    metrics,
    approvalTtlMs: () => source.current().approvalTtlMs,
  })
  const secretService = secrets
  // Idempotency-Key records in the Store: shared by every instance on the same Postgres.
  const idempotency = createIdempotency(opened.store.idempotency, {
    onError: (err) => log.warn({ err }, 'idempotency record could not be written'),
  })
  // Stage 4 on the same shared state as identity: Redis when configured, so every instance
  // counts against the same limits.
  const limiter = createRateLimiter({
    state: opened.state,
    logger: log,
    metrics: createLimitMetrics(metrics.registry),
  })
  // Stage 6, in the shared state too: Redis when configured, memory (bounded) otherwise.
  const cache = createResponseCache({
    state: opened.state,
    logger: log,
    metrics: createCacheMetrics(metrics.registry),
    maxEntryBytes: () => source.current().cache.maxEntryBytes,
  })
  const tools = createToolService({
    limiter,
    cache,
    tools: builtinTools,
    resilience,
    idempotency,
    enforcer,
    policies,
    secrets: secretService,
    store: opened.store,
    onError: (err) => log.error({ err }, 'tool usage accounting failed'),
  })
  // Filled once the listener's address (the default issuer) is known, before the gateway reports
  // ready; until then only /health, /ready and public channel rules can be served.
  const routes = new Map<string, PublicRoute>()
  const authenticators: Authenticator[] = []
  // Read at start only: a reload does not rebuild the exporter.
  const traces = initial.raw.tracing
  const tracing =
    traces === undefined
      ? undefined
      : createTracing({
          endpoint: traces.endpoint,
          serviceName: traces.serviceName ?? '4runr-gateway',
          sampleRatio: traces.sampleRatio ?? 1,
          headers: traces.headers ?? {},
          flushMs: traces.flushMs ?? 2000,
        })
  const pipeline = createPipeline({
    currentConfig: source.current,
    pools,
    metrics,
    logger: log,
    authenticators,
    routes,
    agentRoute: tools.agentRoute,
    authorize: (input, approvalId) => enforcer.authorize(input, approvalId),
    limiter,
    cache,
    readiness,
    audit,
    forward: createChannelCall(resilience, idempotency),
    ...(tracing === undefined ? {} : { tracing }),
  })
  metrics.trackInflight(pipeline.inflight)
  const publicServer = createPublicServer(pipeline, { maxHeaderBytes: initial.gateway.maxHeaderBytes })
  let admin: ReturnType<typeof createAdminServer> | undefined
  let issuer: string
  try {
    await listen(publicServer, initial.gateway.listen.host, initial.gateway.listen.port)
    // The default issuer is the public listener's real address (port 0 picks one).
    issuer = initial.gateway.issuerConfigured
      ? initial.gateway.issuer
      : urlOf(publicServer, initial.gateway.listen.host)
    const finished = opened.finish(
      issuer,
      (agent, scope) => policies.current().canEverGrant(agent, scope),
      audit === undefined ? undefined : (grant, issued) => audit?.tokenIssued(grant, issued),
    )
    for (const [path, route] of finished.routes) routes.set(path, route)
    // The original 4Runr tool call: the token travels in the body.
    routes.set('/api/proxy-request', tools.proxyRequestRoute(finished.tokens))
    authenticators.push(finished.authenticator)
    identityReady = true
    admin = createAdminServer({
      currentConfig: source.current,
      keys: adminKeys,
      metrics,
      logger: log,
      readiness,
      routes: [
        // First: its hooks record and guard every admin route.
        ...(audit === undefined ? [] : [auditAdminRoutes(audit)]),
        configRoutes(source),
        identityAdminRoutes({ agents: opened.agents, tokens: finished.tokens, keyRing: opened.keyRing }),
        policyAdminRoutes({ policies, directory: opened.directory, store: opened.store }),
        secretAdminRoutes({
          secrets: secretService,
          agents: opened.store.agents,
          masterKey: opened.masterKeySource,
          // Signing keys sealed under the old master key retire with a key rotation.
          onMasterRotated: () => opened.keyRing.rotate(),
        }),
      ],
    })
    await admin.listen({ host: initial.gateway.admin.host, port: initial.gateway.admin.port })
  } catch (err) {
    publicServer.close()
    await admin?.close()
    policies.stop()
    secretService.close()
    await audit?.close()
    idempotency.close()
    await tools.close()
    await opened.close()
    await pools.close()
    await closeDemos()
    source.close()
    throw err
  }
  const adminApp = admin
  source.watch()

  const publicUrl = urlOf(publicServer, initial.gateway.listen.host)
  const adminUrl = urlOf(adminApp.server, initial.gateway.admin.host)
  log.info({ publicUrl, adminUrl, version: initial.version, file: source.file }, 'gateway listening')

  let stopping: Promise<void> | undefined
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      draining = true
      source.close()
      // Stop accepting, let idle keep-alive connections go, and give in-flight requests until
      // the deadline before cutting what remains.
      const closed = new Promise<void>((done) => publicServer.close(() => done()))
      publicServer.closeIdleConnections()
      const deadline = Date.now() + source.current().gateway.shutdownTimeoutMs
      while (pipeline.inflight() > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20))
        publicServer.closeIdleConnections()
      }
      const abandoned = pipeline.inflight()
      publicServer.closeAllConnections()
      // Cut requests unwind (their upstream calls abort) and record themselves: give them a
      // moment, so their audit entries and idempotency records land before those stores close.
      const unwind = Date.now() + 1_000
      while (pipeline.inflight() > 0 && Date.now() < unwind) await new Promise((r) => setTimeout(r, 10))
      await closed
      await adminApp.close()
      // Every queued entry is written and the head signed before the signing keys close.
      await audit?.close()
      policies.stop()
      secretService.close()
      idempotency.close()
      await tools.close()
      await opened.close()
      await pools.close()
      await closeDemos()
      // The spans of the last requests are exported before the process goes.
      await tracing?.shutdown().catch((err: unknown) => log.warn({ err }, 'exporting the last spans failed'))
      log.info({ abandoned }, 'gateway stopped')
      log.flush()
    })()
    return stopping
  }

  return {
    publicUrl,
    adminUrl,
    config: source.current,
    adminKeys,
    issuer,
    identity: opened,
    logger: log,
    metrics,
    reload: source.reload,
    stop,
  }
}
