/**
 * Compile a validated config into the frozen runtime form the request path reads: defaults
 * applied, durations in milliseconds, references resolved, matchers and header templates built.
 * Reload compiles a new version and swaps one reference; nothing here runs per request.
 */
import { createHash } from 'node:crypto'
import {
  type CachePolicy,
  type CompiledCache,
  compileCache,
  compileRouteCache,
} from '../cache/compile-cache.ts'
import { compileTemplate, type HeaderTemplate } from '../http/header-template.ts'
import { parseNetworks } from '../net/allow-networks.ts'
import { type CompiledPolicy, compilePolicy } from '../policy/compile.ts'
import { type CompiledRateLimits, compileRateLimits } from '../ratelimit/compile-limits.ts'
import { compileResilience, type ResiliencePolicy } from '../resilience/policy.ts'
import { durationMs } from './duration.ts'
import { ConfigError, type ConfigProblem } from './load.ts'
import type { RawChannel, RawConfig, RawPathRule } from './schema.ts'

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent'

export interface CompiledGateway {
  readonly issuer: string
  /** False when `issuer` is the default guess; the gateway then uses its real public URL. */
  readonly issuerConfigured: boolean
  readonly listen: { readonly host: string; readonly port: number }
  readonly admin: { readonly host: string; readonly port: number; readonly keys: readonly string[] }
  readonly requestId: { readonly header: string; readonly on: 'none' | 'always' | 'error' }
  readonly refreshMs: number
  readonly bodyLimitBytes: number
  readonly maxHeaderBytes: number
  readonly logLevel: LogLevel
  readonly shutdownTimeoutMs: number
  readonly trustProxy: boolean
}

export interface CompiledHttpSystem {
  readonly name: string
  readonly kind: 'http' | 'demo'
  /** `scheme://host:port`; for `demo` systems it is filled in when the demo upstream listens. */
  readonly origin: string
  /** The URL's path without a trailing slash ('' for the root). */
  readonly basePath: string
  readonly timeoutMs: number
  readonly connectTimeoutMs: number
  readonly connections: number
  readonly keepAliveMs: number
  /** Identity of the pool settings: an unchanged key keeps its pool across reloads. */
  readonly poolKey: string
  /** Breaker, retries, bulkhead and the headers and total timeouts of calls to this system. */
  readonly resilience: ResiliencePolicy
}

export interface CompiledNatsSystem {
  readonly name: string
  readonly kind: 'nats'
  readonly url: string
}

export type CompiledSystem = CompiledHttpSystem | CompiledNatsSystem

export interface CompiledRule {
  readonly path: string
  readonly match: 'all' | 'prefix' | 'exact'
  /** For `prefix` the path without `/*`, for `exact` the path; lower-cased for case-insensitive channels. */
  readonly base: string
  readonly public: boolean
  readonly disabled: boolean
  readonly audit: boolean
  readonly logging: boolean
  /** Allowed methods, or null when every method is allowed. */
  readonly methods: ReadonlySet<string> | null
  /** Roles required per method, or null when the rule names no roles. */
  readonly roles: ReadonlyMap<string, readonly string[]> | null
  /** The `Allow` header value for 405 answers. */
  readonly allow: string
  /** How GET answers of this rule are cached, or null when they are not. */
  readonly cache: CachePolicy | null
}

export interface CompiledHeaderRules {
  readonly set: ReadonlyArray<readonly [name: string, value: HeaderTemplate]>
  /** Lower-cased names to drop, including the ones `set` replaces. */
  readonly remove: ReadonlySet<string>
}

export interface CompiledChannel {
  readonly name: string
  /** Normalised prefix ('' when the channel only has /api/request/{name}); lower-cased when case-insensitive. */
  readonly prefix: string
  /** The prefix as configured (case kept), forwarded when `stripPrefix` is false. */
  readonly prefixAsWritten: string
  readonly system: CompiledHttpSystem
  readonly stripPrefix: boolean
  readonly caseInsensitive: boolean
  readonly maxBodyBytes: number | undefined
  readonly timeoutMs: number
  readonly rules: readonly CompiledRule[]
  readonly requestHeaders: CompiledHeaderRules
  readonly responseHeaders: CompiledHeaderRules
}

export interface CompiledConfig {
  /** Short content hash of the source, shown in logs and /v1/config. */
  readonly version: string
  readonly raw: RawConfig
  readonly gateway: CompiledGateway
  readonly systems: ReadonlyMap<string, CompiledSystem>
  readonly channels: readonly CompiledChannel[]
  /** Channels with a prefix, longest first, so the first hit is the most specific. */
  readonly prefixed: readonly CompiledChannel[]
  readonly byName: ReadonlyMap<string, CompiledChannel>
  /** Where the embedded store and generated files live. */
  readonly dataDir: string
  readonly tokens: CompiledTokens
  /** The config file's policies, compiled; the admin API's join them in the policy service. */
  readonly policies: readonly CompiledPolicy[]
  /** How long an approval waits for an operator's decision. */
  readonly approvalTtlMs: number
  /** Tool upstream URLs by tool name: the configured url, or the local fake with `tools.demo`. */
  readonly toolUrls: ReadonlyMap<string, string>
  /** The rate limits each route checks (stage 4), compiled. */
  readonly rateLimits: CompiledRateLimits
  /** The response cache's per-tool settings and bounds (stage 6). */
  readonly cache: CompiledCache
  /** Each tool's breaker, retries, bulkhead and total timeout (tools that set none are absent). */
  readonly toolResilience: ReadonlyMap<string, ResiliencePolicy>
  /** How long an `Idempotency-Key`'s first answer is kept, and how long a concurrent repeat waits. */
  readonly idempotency: { readonly ttlMs: number; readonly waitMs: number }
}

export interface CompiledTokens {
  readonly ttlMs: number
  readonly maxTtlMs: number
  readonly rotateEveryMs: number
  readonly requireDpop: boolean
}

/** Paths that built-in routes own; a channel prefix may not shadow them. */
const reservedPrefixes = [
  '/api',
  '/v1',
  '/health',
  '/ready',
  '/metrics',
  '/.well-known',
  '/openapi.json',
  '/docs',
]

const allMethods = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']

/** The placeholder origin of a demo system before its upstream listens. */
export const demoOriginPlaceholder = 'http://127.0.0.1:0'

/**
 * Compile `raw`. `resolveDemoOrigin` maps demo systems to the origin their upstream listens on
 * (known only at start); without it demo systems keep a placeholder origin (`config check`).
 */
export function compileConfig(
  raw: RawConfig,
  sourceText: string,
  options: {
    resolveDemoOrigin?: (systemName: string) => string
    /** The local fake upstream of a tool under `tools.demo` (known only at start). */
    resolveDemoTool?: (toolName: string) => string | undefined
  } = {},
): CompiledConfig {
  const problems: ConfigProblem[] = []
  const gateway = compileGateway(raw)
  const systems = new Map<string, CompiledSystem>()
  for (const [name, system] of Object.entries(raw.systems ?? {})) {
    if (system.kind === 'nats') {
      systems.set(name, Object.freeze({ name, kind: 'nats', url: system.url }))
      continue
    }
    const url = new URL(
      system.kind === 'demo' ? (options.resolveDemoOrigin?.(name) ?? demoOriginPlaceholder) : system.url,
    )
    const http = system.kind === 'http' ? system : undefined
    const compiled = {
      name,
      kind: system.kind,
      origin: url.origin,
      basePath: url.pathname.replace(/\/+$/, ''),
      timeoutMs: http?.timeoutMs ?? 30_000,
      connectTimeoutMs: http?.connectTimeoutMs ?? 5_000,
      connections: http?.connections ?? 128,
      keepAliveMs: http?.keepAliveMs ?? 4_000,
      poolKey: '',
      resilience: compileResilience(http ?? {}, `systems.${name}`, problems),
    }
    compiled.poolKey = [
      url.origin,
      compiled.timeoutMs,
      compiled.connectTimeoutMs,
      compiled.connections,
      compiled.keepAliveMs,
    ].join('|')
    systems.set(name, Object.freeze(compiled))
  }

  const channels: CompiledChannel[] = []
  const seenNames = new Set<string>()
  const seenPrefixes = new Map<string, string>()
  ;(raw.channels ?? []).forEach((channel, index) => {
    const at = `channels[${index}]`
    if (seenNames.has(channel.name))
      problems.push({ path: `${at}.name`, message: `duplicate channel name "${channel.name}"` })
    seenNames.add(channel.name)
    const system = systems.get(channel.system)
    if (system === undefined) {
      problems.push({ path: `${at}.system`, message: `unknown system "${channel.system}"` })
      return
    }
    if (system.kind === 'nats') {
      problems.push({
        path: `${at}.system`,
        message: `system "${channel.system}" is a nats system; channels forward to http systems`,
      })
      return
    }
    const compiled = compileChannel(channel, system, at, problems)
    if (compiled.prefix !== '') {
      const other = seenPrefixes.get(compiled.prefix)
      if (other !== undefined) {
        problems.push({
          path: `${at}.prefix`,
          message: `prefix "${channel.prefix}" is already used by channel "${other}"`,
        })
      }
      seenPrefixes.set(compiled.prefix, channel.name)
    }
    channels.push(compiled)
  })

  const tokens = compileTokens(raw, problems)
  const version = createHash('sha256').update(sourceText).digest('hex').slice(0, 12)
  const policies = compileConfigPolicies(raw, version, problems)
  const allowNetworks = raw.tools?.http_fetch?.allowNetworks
  if (allowNetworks !== undefined) {
    const parsed = parseNetworks(allowNetworks)
    if (!parsed.ok)
      for (const p of parsed.problems)
        problems.push({ path: `tools.http_fetch.allowNetworks[${p.index}]`, message: p.reason })
  }
  const approvalTtlMs = raw.approvals?.ttl === undefined ? 3_600_000 : durationMs(raw.approvals.ttl)
  if (approvalTtlMs < 1000) problems.push({ path: 'approvals.ttl', message: 'must be at least 1s' })
  const rateLimits = compileRateLimits(raw, problems)
  const toolResilience = compileToolResilience(raw, problems)
  if (problems.length > 0) throw new ConfigError(problems)
  const prefixed = channels.filter((c) => c.prefix !== '').sort((a, b) => b.prefix.length - a.prefix.length)
  const store = raw.store
  const dataDir = store?.kind === 'sqlite' && store.path !== undefined ? dirnameOf(store.path) : './data'
  return Object.freeze({
    version,
    raw,
    gateway,
    systems,
    channels: Object.freeze(channels),
    prefixed: Object.freeze(prefixed),
    byName: new Map(channels.map((c) => [c.name, c])),
    dataDir,
    tokens,
    policies: Object.freeze(policies),
    approvalTtlMs,
    toolUrls: compileToolUrls(raw, options.resolveDemoTool),
    rateLimits,
    cache: compileCache(raw),
    toolResilience,
    idempotency: Object.freeze({
      ttlMs: raw.idempotency?.ttl === undefined ? 86_400_000 : durationMs(raw.idempotency.ttl),
      waitMs: raw.idempotency?.wait === undefined ? 5_000 : durationMs(raw.idempotency.wait),
    }),
  })
}

function compileToolResilience(raw: RawConfig, problems: ConfigProblem[]): Map<string, ResiliencePolicy> {
  const policies = new Map<string, ResiliencePolicy>()
  const tools = raw.tools ?? {}
  for (const name of ['serpapi', 'openai', 'gmail'] as const) {
    const tool = tools[name]
    if (tool !== undefined) policies.set(name, compileResilience(tool, `tools.${name}`, problems))
  }
  return policies
}

function compileToolUrls(
  raw: RawConfig,
  resolveDemoTool: ((toolName: string) => string | undefined) | undefined,
): Map<string, string> {
  const urls = new Map<string, string>()
  const tools = raw.tools ?? {}
  for (const name of ['serpapi', 'openai', 'gmail'] as const) {
    const url = tools[name]?.url ?? (tools.demo === true ? resolveDemoTool?.(name) : undefined)
    if (url !== undefined) urls.set(name, url)
  }
  return urls
}

function compileConfigPolicies(raw: RawConfig, version: string, problems: ConfigProblem[]): CompiledPolicy[] {
  const compiled: CompiledPolicy[] = []
  const seen = new Set<string>()
  ;(raw.policies ?? []).forEach((document, index) => {
    const at = `policies[${index}]`
    if (seen.has(document.name))
      problems.push({ path: `${at}.name`, message: `duplicate policy name "${document.name}"` })
    seen.add(document.name)
    const result = compilePolicy(document, 'config', version)
    if (result.ok) compiled.push(result.policy)
    else
      for (const p of result.problems)
        problems.push({ path: p.path === '' ? at : `${at}.${p.path}`, message: p.message })
  })
  return compiled
}

function compileTokens(raw: RawConfig, problems: ConfigProblem[]): CompiledTokens {
  const t = raw.tokens ?? {}
  const ttlMs = t.ttl === undefined ? 15 * 60_000 : durationMs(t.ttl)
  const maxTtlMs = t.maxTtl === undefined ? Math.max(60 * 60_000, ttlMs) : durationMs(t.maxTtl)
  if (ttlMs > maxTtlMs)
    problems.push({ path: 'tokens.ttl', message: 'must not be longer than tokens.maxTtl' })
  if (ttlMs < 1000) problems.push({ path: 'tokens.ttl', message: 'must be at least 1s' })
  return Object.freeze({
    ttlMs,
    maxTtlMs,
    rotateEveryMs: t.rotateEvery === undefined ? 24 * 3_600_000 : durationMs(t.rotateEvery),
    requireDpop: t.requireDpop ?? false,
  })
}

function dirnameOf(path: string): string {
  const cut = path.lastIndexOf('/')
  return cut <= 0 ? (cut === 0 ? '/' : '.') : path.slice(0, cut)
}

function compileGateway(raw: RawConfig): CompiledGateway {
  const g = raw.gateway ?? {}
  const port = g.listen?.port ?? 8080
  const issuerHost = g.listen?.host === undefined || g.listen.host === '0.0.0.0' ? '127.0.0.1' : g.listen.host
  return Object.freeze({
    issuer: g.issuer ?? `http://${issuerHost}:${port}`,
    issuerConfigured: g.issuer !== undefined,
    listen: Object.freeze({ host: g.listen?.host ?? '0.0.0.0', port }),
    admin: Object.freeze({
      host: g.admin?.host ?? '127.0.0.1',
      port: g.admin?.port ?? 8081,
      keys: Object.freeze([...(g.admin?.keys ?? [])]),
    }),
    requestId: Object.freeze({
      header: (g.requestId?.header ?? 'X-Request-Id').toLowerCase(),
      on: g.requestId?.on ?? 'always',
    }),
    refreshMs: g.refreshMs ?? 15_000,
    bodyLimitBytes: g.bodyLimitBytes ?? 1_048_576,
    maxHeaderBytes: g.maxHeaderBytes ?? 16_384,
    logLevel: g.logLevel ?? 'info',
    shutdownTimeoutMs: g.shutdownTimeoutMs ?? 10_000,
    trustProxy: g.trustProxy ?? false,
  })
}

function compileChannel(
  channel: RawChannel,
  system: CompiledHttpSystem,
  at: string,
  problems: ConfigProblem[],
): CompiledChannel {
  const caseInsensitive = channel.caseInsensitive ?? false
  let prefix = ''
  let prefixAsWritten = ''
  if (channel.prefix !== undefined) {
    prefix = channel.prefix.replace(/\/+$/, '')
    prefixAsWritten = prefix
    if (prefix === '') {
      problems.push({
        path: `${at}.prefix`,
        message: 'prefix "/" would shadow every built-in route; use a path such as /app',
      })
    } else if (/\/\.{1,2}(\/|$)|\/\/|%|\\/.test(prefix)) {
      problems.push({
        path: `${at}.prefix`,
        message: 'prefix must be a normalised path (no dot segments, //, % or \\)',
      })
    } else if (reservedPrefixes.some((r) => prefix === r || prefix.startsWith(`${r}/`))) {
      problems.push({ path: `${at}.prefix`, message: `prefix "${prefix}" is reserved for built-in routes` })
    }
    if (caseInsensitive) prefix = prefix.toLowerCase()
  }
  const rules = (channel.rules ?? [{ path: '*' }]).map((rule, i) =>
    compileRule(rule, caseInsensitive, `${at}.rules[${i}]`, problems),
  )
  return Object.freeze({
    name: channel.name,
    prefix,
    prefixAsWritten,
    system,
    stripPrefix: channel.stripPrefix ?? true,
    caseInsensitive,
    maxBodyBytes: channel.maxBodyBytes,
    timeoutMs: channel.timeoutMs ?? system.timeoutMs,
    rules: Object.freeze(rules),
    requestHeaders: withAuthorizationRemoved(
      compileHeaderRules(channel.requestHeaders, `${at}.requestHeaders`, problems),
      channel.forwardAuthorization ?? false,
    ),
    responseHeaders: compileHeaderRules(channel.responseHeaders, `${at}.responseHeaders`, problems),
  })
}

/**
 * The gateway consumes the caller's credentials: a token meant for the gateway must not reach a
 * backend that could replay it, unless the channel asks for it.
 */
function withAuthorizationRemoved(rules: CompiledHeaderRules, forward: boolean): CompiledHeaderRules {
  if (forward) return rules
  return Object.freeze({ set: rules.set, remove: new Set([...rules.remove, 'authorization', 'dpop']) })
}

function compileRule(
  rule: RawPathRule,
  caseInsensitive: boolean,
  at: string,
  problems: ConfigProblem[],
): CompiledRule {
  let match: CompiledRule['match']
  let base: string
  if (rule.path === '*' || rule.path === '/*') {
    match = 'all'
    base = ''
  } else if (rule.path.endsWith('/*')) {
    match = 'prefix'
    base = rule.path.slice(0, -2)
  } else {
    match = 'exact'
    base = rule.path
  }
  if (base.includes('*'))
    problems.push({ path: `${at}.path`, message: 'only a trailing /* or a lone * is a wildcard' })
  if (caseInsensitive) base = base.toLowerCase()

  let methods: Set<string> | null = null
  let roles: Map<string, readonly string[]> | null = null
  if (Array.isArray(rule.methods)) {
    methods = new Set(rule.methods)
  } else if (rule.methods !== undefined) {
    roles = new Map(Object.entries(rule.methods))
    methods = new Set(roles.keys())
  }
  // HEAD is GET without a body (RFC 9110 §9.3.2): allowing GET allows HEAD.
  if (methods?.has('GET')) methods.add('HEAD')
  if (roles?.has('GET') && !roles.has('HEAD')) roles.set('HEAD', roles.get('GET')!)
  if (rule.public === true && roles !== null) {
    problems.push({ path: `${at}.methods`, message: 'a public rule cannot require roles' })
  }
  return Object.freeze({
    path: rule.path,
    match,
    base,
    public: rule.public ?? false,
    disabled: rule.disabled ?? false,
    audit: rule.audit ?? false,
    logging: rule.logging ?? true,
    methods,
    roles,
    allow: (methods === null ? allMethods : allMethods.filter((m) => methods.has(m))).join(', '),
    cache: compileRouteCache(rule.cache, at, problems),
  })
}

function compileHeaderRules(
  rules: RawChannel['requestHeaders'],
  at: string,
  problems: ConfigProblem[],
): CompiledHeaderRules {
  const set: Array<readonly [string, HeaderTemplate]> = []
  const remove = new Set<string>((rules?.remove ?? []).map((n) => n.toLowerCase()))
  for (const [name, value] of Object.entries(rules?.set ?? {})) {
    try {
      set.push([name.toLowerCase(), compileTemplate(value)])
      remove.add(name.toLowerCase())
    } catch (err) {
      problems.push({ path: `${at}.set.${name}`, message: (err as Error).message })
    }
  }
  return Object.freeze({ set: Object.freeze(set), remove })
}
