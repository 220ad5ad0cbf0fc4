/**
 * createGateway: the only module that wires the folders together. Everything with a side effect
 * (config source, logger, metrics, pools, listeners) is created here and passed down as deps.
 */
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { DestinationStream } from 'pino'
import { type AdminKeys, resolveAdminKeys } from './admin/admin-keys.ts'
import { createAdminServer } from './admin/admin-server.ts'
import { configRoutes } from './admin/config-routes.ts'
import { type CompiledConfig, demoOriginPlaceholder } from './config/compile.ts'
import type { RawConfig } from './config/schema.ts'
import { type ConfigSource, openConfigSource, type ReloadResult } from './config/source.ts'
import { type DemoUpstream, startDemoUpstream } from './demo/demo-upstream.ts'
import { createPipeline, type Readiness } from './http/pipeline.ts'
import { createPublicServer } from './http/public-server.ts'
import { createLogger, effectiveLogLevel, type Logger } from './observability/logger.ts'
import { createMetrics, type Metrics } from './observability/metrics.ts'
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
  readonly logger: Logger
  readonly metrics: Metrics
  reload(): Promise<ReloadResult>
  /** Graceful stop: refuse new work, drain in-flight requests up to the deadline, close pools. */
  stop(): Promise<void>
}

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
  let logger: Logger | undefined

  // The demo upstream starts before the first compile, since demo systems point at it.
  const prepare = async (raw: RawConfig): Promise<void> => {
    const wantsDemo = Object.values(raw.systems ?? {}).some((s) => s.kind === 'demo')
    if (wantsDemo && demo === undefined) demo = await startDemoUpstream()
  }
  const pools = createPools()
  const source: ConfigSource = await openConfigSource(options.configFile, {
    env,
    prepare,
    compileOptions: { resolveDemoOrigin: () => demo?.origin ?? demoOriginPlaceholder },
    onReload(result, config) {
      metrics.configReload(result.ok ? 'success' : 'failure')
      if (result.ok) {
        if (logger !== undefined) {
          logger.level = effectiveLogLevel(config.gateway.logLevel, env)
          logger.info({ version: result.version }, 'config reloaded')
        }
        void pools.retain(config)
      } else {
        logger?.error({ runningVersion: result.version, problems: result.problems }, 'config reload refused')
      }
    },
  })
  const initial = source.current()
  logger = createLogger(effectiveLogLevel(initial.gateway.logLevel, env), options.logDestination)
  const log = logger

  let draining = false
  const readiness = async (): Promise<Readiness> => {
    if (draining) return { ready: false, reasons: ['shutting down'] }
    const reasons = await probeDependencies(source.current())
    return { ready: reasons.length === 0, reasons }
  }

  const adminKeys = await resolveAdminKeys(initial.gateway.admin.keys, env, initial.dataDir)
  const pipeline = createPipeline({
    currentConfig: source.current,
    pools,
    metrics,
    logger: log,
    authenticators: [],
    readiness,
  })
  metrics.trackInflight(pipeline.inflight)
  const publicServer = createPublicServer(pipeline, { maxHeaderBytes: initial.gateway.maxHeaderBytes })
  const admin = createAdminServer({
    currentConfig: source.current,
    keys: adminKeys,
    metrics,
    logger: log,
    readiness,
    routes: [configRoutes(source)],
  })

  try {
    await listen(publicServer, initial.gateway.listen.host, initial.gateway.listen.port)
    await admin.listen({ host: initial.gateway.admin.host, port: initial.gateway.admin.port })
  } catch (err) {
    publicServer.close()
    await admin.close()
    await pools.close()
    await demo?.close()
    source.close()
    throw err
  }
  source.watch()

  const publicUrl = urlOf(publicServer, initial.gateway.listen.host)
  const adminUrl = urlOf(admin.server, initial.gateway.admin.host)
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
      await closed
      await admin.close()
      await pools.close()
      await demo?.close()
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
    logger: log,
    metrics,
    reload: source.reload,
    stop,
  }
}
