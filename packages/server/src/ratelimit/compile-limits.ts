/**
 * Compiles the config's rate limits (gateway `rateLimits`, channel and tool `rateLimit`) into the
 * lists each route checks, once per config version: the request path reads a ready array and
 * never parses a limit, a duration or a CIDR.
 */
import { durationMs } from '../config/duration.ts'
import type { ConfigProblem } from '../config/load.ts'
import type { RawConfig, RawRateLimit } from '../config/schema.ts'
import { type AllowNetworks, parseNetworks } from '../net/allow-networks.ts'
import type { RateSpec } from '../state/types.ts'

/** What a limit counts by (DESIGN §9). */
export type LimitBy = RawRateLimit['by']

/** One limit, ready to check. */
export interface CompiledLimit {
  /** Names the limit's counters in the shared state: where it is written, and its rate. */
  readonly bucket: string
  readonly by: LimitBy
  /** Requests per period: the `RateLimit-Limit` header. */
  readonly limit: number
  readonly rate: RateSpec
  readonly failOpen: boolean
  /** Where the limit is written (`rateLimits[0]`, `channels[1].rateLimit`), for logs and refusals. */
  readonly source: string
}

export interface CompiledRateLimits {
  /** Gateway limits checked on every route that is not a channel (agent API, token, JWKS…). */
  readonly routes: readonly CompiledLimit[]
  /** Per channel name: the gateway limits that apply to channels, then the channel's own. */
  readonly channels: ReadonlyMap<string, readonly CompiledLimit[]>
  /** Per tool name: the gateway `agent_tool` limits that cover it, then the tool's own. */
  readonly tools: ReadonlyMap<string, readonly CompiledLimit[]>
  /** Peers whose X-Forwarded-For names the client for `by: ip`; undefined when none are trusted. */
  readonly trustedProxies: AllowNetworks | undefined
}

/** The tools that have a `tools.NAME` block, so a `tool:` can be checked at load. */
const limitedTools = ['serpapi', 'openai', 'gmail', 'http_fetch'] as const

const channelKinds: ReadonlySet<LimitBy> = new Set(['global', 'channel', 'path', 'agent', 'user', 'ip'])
const toolKinds: ReadonlySet<LimitBy> = new Set(['global', 'agent', 'agent_tool', 'ip'])

function listOf(value: RawRateLimit | RawRateLimit[] | undefined): RawRateLimit[] {
  if (value === undefined) return []
  return Array.isArray(value) ? value : [value]
}

function compileLimit(
  raw: RawRateLimit,
  bucket: string,
  source: string,
  problems: ConfigProblem[],
): CompiledLimit | undefined {
  const periodMs = durationMs(raw.period)
  if (periodMs < 1) {
    problems.push({ path: `${source}.period`, message: 'must be at least 1ms' })
    return undefined
  }
  const emissionMs = periodMs / raw.limit
  const burst = raw.burst ?? raw.limit
  return Object.freeze({
    // The rate is part of the name: a reload that changes a limit starts it afresh, rather than
    // judging the arrivals counted under the old rate by the new one (a raised limit would
    // otherwise keep refusing until the old budget had refilled).
    bucket: `${bucket}@${raw.limit}/${periodMs}/${burst}`,
    by: raw.by,
    limit: raw.limit,
    rate: Object.freeze({ emissionMs, windowMs: burst * emissionMs }),
    failOpen: raw.failOpen ?? true,
    source,
  })
}

/** Compile every rate limit of `raw`; problems are reported by path, as schema errors are. */
export function compileRateLimits(raw: RawConfig, problems: ConfigProblem[]): CompiledRateLimits {
  const routes: CompiledLimit[] = []
  const perChannel: CompiledLimit[] = []
  // Gateway agent_tool limits, by the tool they name (undefined: every tool).
  const agentTool: Array<{ raw: RawRateLimit; index: number }> = []
  ;(raw.rateLimits ?? []).forEach((limit, index) => {
    const source = `rateLimits[${index}]`
    if (limit.tool !== undefined && limit.by !== 'agent_tool') {
      problems.push({ path: `${source}.tool`, message: 'only a limit by agent_tool names a tool' })
      return
    }
    if (limit.tool !== undefined && !(limitedTools as readonly string[]).includes(limit.tool)) {
      problems.push({
        path: `${source}.tool`,
        message: `unknown tool "${limit.tool}"; tools are ${limitedTools.join(', ')}`,
      })
      return
    }
    if (limit.by === 'agent_tool') {
      agentTool.push({ raw: limit, index })
      return
    }
    const compiled = compileLimit(limit, `g${index}`, source, problems)
    if (compiled === undefined) return
    // A channel limit at gateway level counts each channel apart; it means nothing elsewhere.
    if (limit.by !== 'channel') routes.push(compiled)
    perChannel.push(compiled)
  })

  const channels = new Map<string, readonly CompiledLimit[]>()
  ;(raw.channels ?? []).forEach((channel, index) => {
    const own: CompiledLimit[] = []
    const where = `channels[${index}].rateLimit`
    const list = listOf(channel.rateLimit)
    list.forEach((limit, i) => {
      const source = Array.isArray(channel.rateLimit) ? `${where}[${i}]` : where
      if (!channelKinds.has(limit.by) || limit.tool !== undefined) {
        problems.push({
          path: limit.tool !== undefined ? `${source}.tool` : `${source}.by`,
          message: 'a channel limit counts by global, channel, path, agent, user or ip',
        })
        return
      }
      const compiled = compileLimit(limit, `c.${channel.name}.${i}`, source, problems)
      if (compiled !== undefined) own.push(compiled)
    })
    channels.set(channel.name, Object.freeze([...perChannel, ...own]))
  })

  const tools = new Map<string, readonly CompiledLimit[]>()
  const toolBlocks = (raw.tools ?? {}) as Record<
    string,
    { rateLimit?: RawRateLimit | RawRateLimit[] } | boolean
  >
  for (const tool of limitedTools) {
    const list: CompiledLimit[] = []
    for (const { raw: limit, index } of agentTool) {
      if (limit.tool !== undefined && limit.tool !== tool) continue
      // One bucket per tool: each tool of an agent has its own budget under the limit.
      const compiled = compileLimit(limit, `g${index}.${tool}`, `rateLimits[${index}]`, problems)
      if (compiled !== undefined) list.push(compiled)
    }
    const block = toolBlocks[tool]
    const where = `tools.${tool}.rateLimit`
    const own = typeof block === 'object' ? block.rateLimit : undefined
    listOf(own).forEach((limit, i) => {
      const source = Array.isArray(own) ? `${where}[${i}]` : where
      if (!toolKinds.has(limit.by) || limit.tool !== undefined) {
        problems.push({
          path: limit.tool !== undefined ? `${source}.tool` : `${source}.by`,
          message: 'a tool limit counts by global, agent, agent_tool or ip',
        })
        return
      }
      const compiled = compileLimit(limit, `t.${tool}.${i}`, source, problems)
      if (compiled !== undefined) list.push(compiled)
    })
    tools.set(tool, Object.freeze(list))
  }

  let trustedProxies: AllowNetworks | undefined
  const proxies = raw.gateway?.trustedProxies
  if (proxies !== undefined && proxies.length > 0) {
    const parsed = parseNetworks(proxies)
    if (parsed.ok) trustedProxies = parsed.networks
    else
      for (const p of parsed.problems)
        problems.push({ path: `gateway.trustedProxies[${p.index}]`, message: p.reason })
  }

  return Object.freeze({ routes: Object.freeze(routes), channels, tools, trustedProxies })
}
