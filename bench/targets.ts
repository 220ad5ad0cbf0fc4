/**
 * The benchmark's rows. Each target is a descriptor: a name, why it may be unavailable here,
 * and how to start it (returning the request to load and how to stop it). run.ts runs them all
 * back to back in one run, in this order. A row is added by appending a descriptor to
 * `TARGETS` (as `gateway-auth` was: the gateway with agent tokens on its route; and the tool
 * rows: the same gateway's tool route and OpenAI passthrough).
 *
 * Every target proxies to the same upstream (see upstream.ts, which answers any request with
 * the same JSON, so it also stands in for SerpAPI and OpenAI). The channel rows are loaded on
 * `ctx.path`; the tool rows POST a JSON body to their own route. Proxies under test are pinned
 * to the proxy CPU; the upstream and the load generator to the other one (see proc.ts).
 */
import { randomBytes } from 'node:crypto'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { type BenchAgent, createAgent, discoverIssuer, fetchToken, refusal } from './identity.ts'
import {
  freePort,
  hasCommand,
  type Pinning,
  type Proc,
  pinPrefix,
  ROOT,
  startProcess,
  waitForHttp,
} from './proc.ts'
import type { UpstreamKind } from './upstream.ts'

export interface BenchContext {
  /** a temp dir for configs, pid files and databases; removed after the run */
  tmpDir: string
  /** the shared upstream, e.g. http://127.0.0.1:40123 */
  upstreamUrl: string
  upstreamPort: number
  pinning: Pinning
  /** the request path every target is loaded on */
  path: string
}

export interface Running {
  /** the URL the load generator hits */
  url: string
  /** the request method (default GET; POST for the tool rows) */
  method?: string
  /**
   * headers every load generator sends with each request (`Authorization: Bearer …` for
   * gateway-auth and the tool rows). They may hold secrets: never print them or write them to
   * the results.
   */
  headers?: Record<string, string>
  /** the request body every load generator sends (JSON: `content-type: application/json`) */
  body?: string
  /** what the token exchange measurement needs (gateway-auth only); secret like `headers` */
  tokenExchange?: TokenExchangeSetup
  /** the gateway's listeners, for measurements that make their own agents (the tool rows) */
  gateway?: { publicUrl: string; adminUrl: string }
  stop(): Promise<void>
  /** the process, for its output when something goes wrong */
  proc?: Proc
}

/** An agent on a running gateway, and where and for what it exchanges assertions. */
export interface TokenExchangeSetup {
  /** the gateway's public base URL (`POST {publicUrl}/v1/token`) */
  publicUrl: string
  /** the assertions' audience */
  issuer: string
  agent: BenchAgent
  scope: string
}

/**
 * `POST http://…/v1/tools/serpapi/search (21-byte body, with authorization on every request)`:
 * header names and the body's size only, as their values may be secrets.
 */
export function describeRequest(running: Pick<Running, 'url' | 'method' | 'headers' | 'body'>): string {
  const sent = Object.keys(running.headers ?? {})
  const notes = [
    ...(running.body === undefined ? [] : [`${Buffer.byteLength(running.body)}-byte body`]),
    ...(sent.length > 0 ? [`with ${sent.join(', ')} on every request`] : []),
  ]
  return `${running.method ?? 'GET'} ${running.url}${notes.length > 0 ? ` (${notes.join(', ')})` : ''}`
}

export interface Target {
  name: string
  /** one line for the report */
  about: string
  /** why this target cannot run here (`not built`, `nginx not installed`), or null */
  unavailable?(ctx: BenchContext): string | null
  start(ctx: BenchContext): Promise<Running>
  /** false: throughput only, no fixed-rate latency run (rows whose figure is a throughput ratio) */
  fixedRate?: boolean
}

const READY_TIMEOUT_MS = 20_000

/** `node --import tsx bench/FILE args…`: how the benchmark's own TypeScript servers run. */
function tsNode(file: string, ...args: string[]): string[] {
  return [process.execPath, '--import', 'tsx', join(ROOT, 'bench', file), ...args]
}

/** Starts the shared upstream (pinned to the load CPU) and waits until it answers. */
export async function startUpstream(
  pinning: Pinning,
  kind: UpstreamKind = 'raw',
): Promise<Running & { port: number }> {
  const port = await freePort()
  const proc = startProcess('upstream', [
    ...pinPrefix(pinning, 'load'),
    ...tsNode('upstream.ts', String(port), kind),
  ])
  const url = `http://127.0.0.1:${port}`
  await waitForHttp(`${url}/bench/hello`, READY_TIMEOUT_MS, proc)
  return { url, port, proc, stop: () => proc.stop() }
}

/** The upstream itself, no proxy: the ceiling of the load generator + upstream pair. */
export const direct: Target = {
  name: 'direct',
  about: 'the upstream itself (bench/upstream.ts), no proxy',
  async start(ctx) {
    return { url: `${ctx.upstreamUrl}${ctx.path}`, stop: async () => {} }
  },
}

/** The nginx.conf for one worker proxying to the upstream with a keep-alive pool. */
export function nginxConfig(tmpDir: string, port: number, upstreamPort: number): string {
  return `# generated by bench/targets.ts
worker_processes 1;
daemon off;
pid ${tmpDir}/nginx.pid;
error_log ${tmpDir}/nginx-error.log warn;

events {
  worker_connections 4096;
}

http {
  access_log off;
  client_body_temp_path ${tmpDir}/nginx-client-body;
  proxy_temp_path ${tmpDir}/nginx-proxy;
  fastcgi_temp_path ${tmpDir}/nginx-fastcgi;
  uwsgi_temp_path ${tmpDir}/nginx-uwsgi;
  scgi_temp_path ${tmpDir}/nginx-scgi;
  # Like Node's servers: no cap on requests per client connection.
  keepalive_requests 1000000;
  keepalive_timeout 120s;

  upstream bench_upstream {
    server 127.0.0.1:${upstreamPort};
    keepalive 64;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
  }

  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://bench_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`
}

/** nginx as a reverse proxy: one worker, upstream keep-alive. The reference row. */
export const nginx: Target = {
  name: 'nginx',
  about: 'nginx reverse proxy, 1 worker, upstream keepalive 64',
  unavailable: () => (hasCommand('nginx') ? null : 'nginx not installed (run bench/setup as root)'),
  async start(ctx) {
    const port = await freePort()
    const file = join(ctx.tmpDir, 'nginx.conf')
    writeFileSync(file, nginxConfig(ctx.tmpDir, port, ctx.upstreamPort))
    const argv = ['nginx', '-e', join(ctx.tmpDir, 'nginx-error.log'), '-c', file, '-p', ctx.tmpDir]
    const proc = startProcess('nginx', [...pinPrefix(ctx.pinning, 'proxy'), ...argv])
    const url = `http://127.0.0.1:${port}${ctx.path}`
    await waitForHttp(url, READY_TIMEOUT_MS, proc)
    return { url, proc, stop: () => proc.stop() }
  },
}

/**
 * The V8 flags the `4runr` command runs with (packages/server/bin/4runr.js, and `npm start`): a larger young
 * generation for a workload whose allocations die young. The bare-Node row gets them too, so the
 * gap between the two stays the cost of the gateway's own work.
 */
export const gatewayNodeFlags = ['--max-semi-space-size=64', '--min-semi-space-size=64']

/** `node:http` + undici Pool `dispatch` streaming: the bare-Node ceiling. */
export const bareNode: Target = {
  name: 'bare-node',
  about: 'node:http + undici Pool.dispatch streaming (bench/bare-proxy.ts)',
  async start(ctx) {
    const port = await freePort()
    const proc = startProcess('bare-node', [
      ...pinPrefix(ctx.pinning, 'proxy'),
      process.execPath,
      ...gatewayNodeFlags,
      ...tsNode('bare-proxy.ts', String(port), ctx.upstreamUrl).slice(1),
    ])
    const url = `http://127.0.0.1:${port}${ctx.path}`
    await waitForHttp(url, READY_TIMEOUT_MS, proc)
    return { url, proc, stop: () => proc.stop() }
  },
}

export const GATEWAY_CLI = join(ROOT, 'packages', 'server', 'dist', 'cli', 'index.js')
export const GATEWAY_ADMIN_KEY = 'bench-admin-key-0123456789'
/** The gateway-auth row's route: a second channel on the same gateway, behind a token. */
export const AUTH_PREFIX = '/bench-auth'
/** The scope of the gateway-auth row's token: that channel. */
export const BENCH_SCOPE = 'channel:bench-auth'
/** Token lifetime of the rows behind tokens: longer than any whole run, so no token expires under load. */
export const TOKEN_TTL_SEC = 3600

/** The tool rows' call: SerpAPI search through the tool route, a small JSON body. */
export const TOOL_PATH = '/v1/tools/serpapi/search'
export const TOOL_BODY = JSON.stringify({ q: 'bench', num: 5 })
export const TOOL_SCOPE = 'serpapi:search'
/** The openai-passthrough row's call: a small non-streaming chat completion. */
export const OPENAI_PATH = '/v1/openai/chat/completions'
export const OPENAI_BODY = JSON.stringify({
  model: 'gpt-4o-mini',
  messages: [{ role: 'user', content: 'Say hello to the benchmark.' }],
})
export const OPENAI_SCOPE = 'openai:chat'
/** The tools' secret names (their defaults), set over the admin API when the gateway starts. */
export const TOOL_SECRETS = ['serpapi_key', 'openai_key'] as const

/** The `tool` row's agent, selected by name by a one-rule policy. */
export const TOOL_AGENT = 'bench-tool'
/** The `openai-passthrough` row's agent, selected by name by a one-rule policy. */
export const OPENAI_AGENT = 'bench-openai'
/** The agent of the SDK overhead measurement (bench/sdk-overhead.ts), on the tool row's route. */
export const SDK_AGENT = 'bench-sdk'
/** The `tool-policy` row's agent: no policy names it; the generated ones select it by labels. */
export const POLICY_AGENT = 'bench-tool-policy'
export const POLICY_AGENT_LABELS: Readonly<Record<string, string>> = {
  team: 'team-7',
  tier: 't1',
  region: 'r3',
}
/** The intent of the tool-policy row's token, which its allow rule requires. */
export const POLICY_INTENT = 'research'
/** The CEL guard of the generated SerpAPI allow rules. */
export const POLICY_WHEN = 'args.num <= 10 && args.q.size() < 200'
/** How many policies the bench config generates (besides the rows' own). */
export const GENERATED_POLICIES = 1000

/** The name of generated policy `i`. */
export const generatedPolicyName = (i: number) => `bench-gen-${String(i).padStart(4, '0')}`

/**
 * Generated policy `i` of a realistic set, with the shapes of the policy micro-benchmark
 * (policy-decision.ts), so the two figures issue 5 asks for describe the same kind of set: one
 * in ten selects two agents by name, the others select `team-(i mod 100)` and `t(i mod 3)` by
 * label, so the tool-policy agent (team-7, t1) is selected by four of them (7, 307, 607, 907);
 * each has a SerpAPI allow rule with an intent and a CEL guard, an http_fetch rule with a domain
 * guard, a channel rule, and a deny rule with a CEL condition on gmail send. No quota, loop guard
 * or response filter: those cost store writes or answer rewriting, not a policy decision.
 */
export function generatedPolicy(i: number) {
  const agents: { names: string[] } | { labels: Record<string, string> } =
    i % 10 === 0
      ? { names: [`agent-${i}`, `agent-${i + 1}`] }
      : { labels: { team: `team-${i % 100}`, tier: `t${i % 3}` } }
  return {
    name: generatedPolicyName(i),
    description: `generated policy ${i} of ${GENERATED_POLICIES}`,
    agents,
    allow: [
      { name: 'search', tool: 'serpapi', actions: ['search'], intents: [POLICY_INTENT], when: POLICY_WHEN },
      { name: 'fetch', tool: 'http_fetch', actions: ['get'], domains: { allow: [`*.site-${i}.example`] } },
      { name: 'orders', channel: `channel-${i % 50}`, paths: ['/orders/*'], methods: ['GET'] },
    ],
    deny: [
      {
        name: 'competitor-mail',
        tool: 'gmail',
        actions: ['send'],
        when: 'args.to.endsWith("@competitor.example")',
      },
    ],
  }
}

/** The generated policies (their indexes) that select an agent carrying `labels`, in order. */
export function policiesSelecting(labels: Readonly<Record<string, string>>): number[] {
  const out: number[] = []
  for (let i = 0; i < GENERATED_POLICIES; i++) {
    const agents = generatedPolicy(i).agents
    if ('labels' in agents && Object.entries(agents.labels).every(([k, v]) => labels[k] === v)) out.push(i)
  }
  return out
}

/**
 * The bench gateway's config. One process serves every gateway row, so they differ only by the
 * route's work (as two processes, the gateway rows' throughput drifted apart by ±20% from run to
 * run on this VM, while one process measured two routes within noise of each other):
 * - `/bench`, a public channel (the gateway row);
 * - `/bench-auth`, the same upstream behind an agent token (gateway-auth);
 * - the tools `serpapi` and `openai` pointed at the bench upstream (tool, tool-policy,
 *   openai-passthrough), with their secrets set over the admin API at start;
 * - the rows' policies: every agent may use `/bench-auth`; `bench-tool` may call SerpAPI search
 *   and `bench-openai` OpenAI chat, each by one allow rule naming the agent; then
 *   `GENERATED_POLICIES` generated ones (JSON lines, which YAML reads), four of which select the
 *   tool-policy agent by its labels. Every row's decision is made against this whole set.
 * The config is polled as by default (every 15 s): this file is 660 KB with its policies, and
 * parsing it takes 0.5–0.7 s here, so a poll that parsed an unchanged file stalled whichever row
 * was being measured (fixed-rate p99s of 300–600 ms); the poll compares the text first since.
 */
export function gatewayConfig(o: {
  port: number
  adminPort: number
  upstreamPort: number
  tmpDir: string
  /** false: the audit ledger off (the tool-audit-off row's process) */
  audit?: boolean
}) {
  const upstream = `http://127.0.0.1:${o.upstreamPort}`
  const generated: string[] = []
  for (let i = 0; i < GENERATED_POLICIES; i++) generated.push(`  - ${JSON.stringify(generatedPolicy(i))}`)
  return `# generated by bench/targets.ts
gateway: { listen: { host: 127.0.0.1, port: ${o.port} }, admin: { host: 127.0.0.1, port: ${o.adminPort} }, logLevel: warn }
store: { kind: sqlite, path: ${JSON.stringify(join(o.tmpDir, o.audit === false ? '4runr-audit-off.db' : '4runr.db'))} }
${o.audit === false ? 'audit: { enabled: false }\n' : ''}tokens: { ttl: ${TOKEN_TTL_SEC / 3600}h, maxTtl: ${TOKEN_TTL_SEC / 3600}h }
systems: { up: { kind: http, url: "${upstream}" } }
channels:
  - { name: bench, prefix: /bench, system: up, rules: [ { path: "*", public: true } ] }
  - { name: bench-auth, prefix: ${AUTH_PREFIX}, system: up, rules: [ { path: "*" } ] }
tools:
  serpapi: { url: "${upstream}" }
  openai: { url: "${upstream}" }
policies:
  - { name: bench, agents: { all: true }, allow: [ { channel: bench-auth } ] }
  - { name: bench-tool, agents: { names: [${TOOL_AGENT}] }, allow: [ { name: search, tool: serpapi, actions: [search] } ] }
  - { name: bench-openai, agents: { names: [${OPENAI_AGENT}] }, allow: [ { name: chat, tool: openai, actions: [chat] } ] }
  - { name: bench-sdk, agents: { names: [${SDK_AGENT}] }, allow: [ { name: search, tool: serpapi, actions: [search] } ] }
${generated.join('\n')}
`
}

const gatewayUnavailable = () => (existsSync(GATEWAY_CLI) ? null : 'not built (npm run build)')

type StartedGateway = {
  publicUrl: string
  adminUrl: string
  proc: Proc
  /** the tools' secrets being set: resolves with the error when that failed (only the tool rows need them) */
  secrets: Promise<Error | null>
}
/** The one gateway process of a run (per temp dir), started by whichever of its rows starts first. */
const started = new Map<string, Promise<StartedGateway>>()

function benchGateway(ctx: BenchContext, audit = true): Promise<StartedGateway> {
  const id = `${ctx.tmpDir}:${audit ? 'main' : 'audit-off'}`
  let running = started.get(id)
  if (running === undefined) {
    running = startGateway(ctx, audit)
    started.set(id, running)
    running.catch(() => started.delete(id))
  }
  return running
}

/** `PUT /v1/secrets/{name}` on the admin listener. The value never appears in an error. */
async function putSecret(adminUrl: string, name: string, value: string): Promise<void> {
  const res = await fetch(`${adminUrl}/v1/secrets/${encodeURIComponent(name)}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${GATEWAY_ADMIN_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ value }),
  })
  const text = await res.text()
  if (!res.ok) throw new Error(`PUT /v1/secrets/${name}: ${refusal(res.status, text)}`)
}

/** Random values for the tools' secrets: the bench upstream accepts any key. */
async function setToolSecrets(adminUrl: string): Promise<Error | null> {
  try {
    for (const name of TOOL_SECRETS) await putSecret(adminUrl, name, randomBytes(24).toString('base64url'))
    return null
  } catch (err) {
    return err as Error
  }
}

/** Starts the production build on its own ports, store and data dir, pinned to the proxy CPU. */
async function startGateway(ctx: BenchContext, audit: boolean): Promise<StartedGateway> {
  const port = await freePort()
  const adminPort = await freePort()
  const name = audit ? 'gateway' : 'gateway-audit-off'
  const config = gatewayConfig({ port, adminPort, upstreamPort: ctx.upstreamPort, tmpDir: ctx.tmpDir, audit })
  const { publicUrl, adminUrl, proc } = await startGatewayBuild(ctx, { name, port, adminPort, config })
  return { publicUrl, adminUrl, proc, secrets: setToolSecrets(adminUrl) }
}

/**
 * Writes `config` to the run's temp dir and starts the production build on it, pinned to the
 * proxy CPU; resolves once `readyPath` answers (stops the process when it does not).
 */
export async function startGatewayBuild(
  ctx: BenchContext,
  o: { name: string; port: number; adminPort: number; config: string; readyPath?: string },
): Promise<{ publicUrl: string; adminUrl: string; proc: Proc }> {
  const file = join(ctx.tmpDir, `${o.name}.yaml`)
  writeFileSync(file, o.config)
  const proc = startProcess(
    o.name,
    [
      ...pinPrefix(ctx.pinning, 'proxy'),
      process.execPath,
      ...gatewayNodeFlags,
      GATEWAY_CLI,
      'start',
      '--config',
      file,
    ],
    { env: { RUNR_LOG_LEVEL: 'warn', RUNR_ADMIN_KEY: GATEWAY_ADMIN_KEY } },
  )
  const publicUrl = `http://127.0.0.1:${o.port}`
  try {
    await waitForHttp(`${publicUrl}${o.readyPath ?? '/health'}`, READY_TIMEOUT_MS, proc)
  } catch (err) {
    await proc.stop()
    throw err
  }
  return { publicUrl, adminUrl: `http://127.0.0.1:${o.adminPort}`, proc }
}

/** The gateway's production build, one process, logging at warn, on its public channel route. */
export const gateway: Target = {
  name: 'gateway',
  about: '4runr gateway (production build), public channel route /bench/*',
  unavailable: gatewayUnavailable,
  async start(ctx) {
    const { publicUrl, proc } = await benchGateway(ctx)
    return { url: `${publicUrl}${ctx.path}`, proc, stop: () => proc.stop() }
  },
}

/** One request before any load: its status, JSON answer (or undefined) and error code line. */
async function probe(
  url: string,
  request: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<{ status: number; json: unknown; refusal: string }> {
  const res = await fetch(url, {
    method: request.method ?? 'GET',
    headers: {
      ...(request.body === undefined ? {} : { 'content-type': 'application/json' }),
      ...request.headers,
    },
    ...(request.body === undefined ? {} : { body: request.body }),
  })
  const text = await res.text()
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    json = undefined
  }
  return { status: res.status, json, refusal: refusal(res.status, text) }
}

/**
 * The same build and channel as `gateway`, but the route is not public: every request carries
 * an agent's bearer token, so it pays token verification (from the verified-token cache after
 * the first request), the revocation check and the policy decision (the `bench` policy allows
 * every agent this channel).
 */
export const gatewayAuth: Target = {
  name: 'gateway-auth',
  about: '4runr gateway (the same process), route /bench-auth/* behind an agent bearer token',
  unavailable: gatewayUnavailable,
  async start(ctx) {
    // A failure here leaves the process running: it is the gateway row's too.
    const { publicUrl, adminUrl, proc } = await benchGateway(ctx)
    const agent = await createAgent(adminUrl, GATEWAY_ADMIN_KEY, 'bench-agent')
    const issuer = await discoverIssuer(publicUrl)
    const { token, expiresIn } = await fetchToken(publicUrl, agent, issuer, BENCH_SCOPE, TOKEN_TTL_SEC)
    if (expiresIn < TOKEN_TTL_SEC) throw new Error(`the token lives ${expiresIn}s, not ${TOKEN_TTL_SEC}s`)
    const url = `${publicUrl}${AUTH_PREFIX}${ctx.path.replace(/^\/bench/, '')}`
    const headers = { authorization: `Bearer ${token}` }
    // Both sides of the policy, before any load: a row that answered without the token would
    // be measuring a public route, and one that refused it would measure error answers.
    const anonymous = (await probe(url)).status
    if (anonymous !== 401) throw new Error(`${ctx.path} without a token answered ${anonymous}, not 401`)
    const authorized = (await probe(url, { headers })).status
    if (authorized !== 200) throw new Error(`${ctx.path} with the token answered ${authorized}, not 200`)
    return {
      url,
      headers,
      tokenExchange: { publicUrl, issuer, agent, scope: BENCH_SCOPE },
      proc,
      stop: () => proc.stop(),
    }
  },
}

/** What a tool row's start needs to check beyond 401 without its token and 200 with it. */
interface ToolRowChecks {
  /** the 200 answer holds what the route should make of the upstream's JSON */
  answered(json: unknown): boolean
  /** more checks before load (the other side of a policy guard); throw to refuse the row */
  verify?(o: { url: string; headers: Record<string, string>; adminUrl: string }): Promise<void>
}

/** A row that POSTs `body` to `path` on the bench gateway as its own agent, with a one-hour token. */
function toolRow(spec: {
  name: string
  about: string
  agent: string
  labels?: Record<string, string>
  scope: string
  intent?: string
  path: string
  body: string
  checks: ToolRowChecks
  /** false: on the second process, whose config is the same but for `audit.enabled: false` */
  audit?: boolean
  fixedRate?: boolean
}): Target {
  return {
    name: spec.name,
    about: spec.about,
    unavailable: gatewayUnavailable,
    ...(spec.fixedRate === undefined ? {} : { fixedRate: spec.fixedRate }),
    async start(ctx) {
      // A failure here leaves the process running: it is the other gateway rows' too.
      const { publicUrl, adminUrl, proc, secrets } = await benchGateway(ctx, spec.audit ?? true)
      const secretsFailed = await secrets
      if (secretsFailed !== null) throw new Error(`setting the tools' secrets: ${secretsFailed.message}`)
      const agent = await createAgent(adminUrl, GATEWAY_ADMIN_KEY, spec.agent, spec.labels)
      const issuer = await discoverIssuer(publicUrl)
      const { token, expiresIn } = await fetchToken(
        publicUrl,
        agent,
        issuer,
        spec.scope,
        TOKEN_TTL_SEC,
        spec.intent,
      )
      if (expiresIn < TOKEN_TTL_SEC) throw new Error(`the token lives ${expiresIn}s, not ${TOKEN_TTL_SEC}s`)
      const url = `${publicUrl}${spec.path}`
      const headers = { authorization: `Bearer ${token}` }
      const call = { method: 'POST', body: spec.body }
      // As for gateway-auth: a row must measure the work, not a refusal or a public route.
      const anonymous = await probe(url, call)
      if (anonymous.status !== 401) {
        throw new Error(`POST ${spec.path} without a token answered ${anonymous.refusal}, not 401`)
      }
      const authorized = await probe(url, { ...call, headers })
      if (authorized.status !== 200) {
        throw new Error(`POST ${spec.path} with the token answered ${authorized.refusal}, not 200`)
      }
      if (!spec.checks.answered(authorized.json)) {
        throw new Error(`POST ${spec.path} answered 200 without the upstream's JSON in the expected place`)
      }
      await spec.checks.verify?.({ url, headers, adminUrl })
      return {
        url,
        method: 'POST',
        headers,
        body: spec.body,
        gateway: { publicUrl, adminUrl },
        proc,
        stop: () => proc.stop(),
      }
    },
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v)

/** The tool route's envelope around the bench upstream's JSON (`{ok: true, ...}`). */
const toolAnswer = (json: unknown) =>
  isRecord(json) &&
  isRecord(json['data']) &&
  json['data']['ok'] === true &&
  isRecord(json['metadata']) &&
  json['metadata']['tool'] === 'serpapi' &&
  json['metadata']['action'] === 'search'

/**
 * SerpAPI search through the tool route, policy on: the agent's token has scope
 * `serpapi:search` and one policy naming the agent allows it (one rule, no guard). Each request
 * pays the token, the body read and parameter validation, the policy decision, the secret
 * (cached after the first call), the upstream call with its JSON parsed, and the answer's envelope.
 */
export const tool: Target = toolRow({
  name: 'tool',
  about: `4runr gateway (the same process), POST ${TOOL_PATH}, one allow rule naming the agent`,
  agent: TOOL_AGENT,
  scope: TOOL_SCOPE,
  path: TOOL_PATH,
  body: TOOL_BODY,
  checks: { answered: toolAnswer },
})

/**
 * The tool row's call by an agent no policy names: four of the generated policies select it by
 * labels, and its allow rule needs the token's intent and a CEL guard over the arguments. At
 * start it proves the guard is live (num 50 is refused with policy_denied) and that a generated
 * policy decides (the admin API's explanation).
 */
export const toolPolicy: Target = toolRow({
  name: 'tool-policy',
  about: `the tool row's call, decided by a generated policy of ${GENERATED_POLICIES.toLocaleString('en-US')}: labels, intent, CEL guard`,
  agent: POLICY_AGENT,
  labels: { ...POLICY_AGENT_LABELS },
  scope: TOOL_SCOPE,
  intent: POLICY_INTENT,
  path: TOOL_PATH,
  body: TOOL_BODY,
  checks: {
    answered: toolAnswer,
    async verify({ url, headers, adminUrl }) {
      const tooMany = await probe(url, {
        method: 'POST',
        headers,
        body: JSON.stringify({ q: 'bench', num: 50 }),
      })
      if (tooMany.status !== 403 || !tooMany.refusal.startsWith('403 policy_denied')) {
        throw new Error(`num 50 (over the CEL guard) answered ${tooMany.refusal}, not 403 policy_denied`)
      }
      const res = await fetch(`${adminUrl}/v1/policies/evaluate`, {
        method: 'POST',
        headers: { authorization: `Bearer ${GATEWAY_ADMIN_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          agent: POLICY_AGENT,
          tool: 'serpapi',
          action: 'search',
          args: JSON.parse(TOOL_BODY),
          intent: POLICY_INTENT,
        }),
      })
      const text = await res.text()
      if (!res.ok) throw new Error(`POST /v1/policies/evaluate: ${refusal(res.status, text)}`)
      const explained = JSON.parse(text) as { decision?: unknown; policy?: unknown }
      // The first selecting policy's allow rule decides (policies are tried in file order).
      const expected = generatedPolicyName(policiesSelecting(POLICY_AGENT_LABELS)[0] ?? -1)
      if (explained.decision !== 'allow' || explained.policy !== expected) {
        throw new Error(
          `the decision is ${String(explained.decision)} by ${String(explained.policy)}, not allow by ${expected}`,
        )
      }
    },
  },
})

/** OpenAI chat through the passthrough (non-streaming), the agent token as the API key. */
export const openaiPassthrough: Target = toolRow({
  name: 'openai-passthrough',
  about: `4runr gateway (the same process), POST ${OPENAI_PATH}, non-streaming, one allow rule naming the agent`,
  agent: OPENAI_AGENT,
  scope: OPENAI_SCOPE,
  path: OPENAI_PATH,
  body: OPENAI_BODY,
  // The passthrough answers with the upstream's JSON as it is.
  checks: { answered: (json) => isRecord(json) && json['ok'] === true },
})

/**
 * The tool row's call on a second process with the same config but `audit.enabled: false`: the
 * baseline of issue 8's cost of the audit ledger (on by default, batched) on the tool route.
 */
export const toolAuditOff: Target = toolRow({
  name: 'tool-audit-off',
  about: `the tool row's call on a process with the same config and the audit ledger off`,
  agent: TOOL_AGENT,
  scope: TOOL_SCOPE,
  path: TOOL_PATH,
  body: TOOL_BODY,
  checks: { answered: toolAnswer },
  audit: false,
  fixedRate: false,
})

/** The rows, in report order. `nginx` is the reference the ratios to nginx compare to. */
export const TARGETS: Target[] = [
  direct,
  nginx,
  bareNode,
  gateway,
  gatewayAuth,
  tool,
  toolPolicy,
  openaiPassthrough,
  toolAuditOff,
]
