/**
 * Prometheus metrics (DESIGN §16). One registry per gateway instance, passed in through deps, so
 * two gateways in one test process never share counters. Label sets are bounded: route is a
 * channel name or built-in route template, method is one of a fixed list, status is a class.
 * The per-request series live in hot-metrics.ts; the rest are ordinary prom-client metrics.
 */
import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client'
import { type CounterSeries, type HistogramSeries, hotCounter, hotHistogram } from './hot-metrics.ts'

const knownMethods = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])
const statusClasses = ['', '1xx', '2xx', '3xx', '4xx', '5xx']
const latencyBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

export interface Metrics {
  readonly registry: Registry
  /** Count and time one finished request. */
  observeRequest(route: string, method: string, status: number, seconds: number): void
  observeUpstream(system: string, seconds: number): void
  configReload(result: 'success' | 'failure'): void
  /** One access token issued, by grant (jwt-bearer, token-exchange, admin). */
  tokenIssued(grant: string): void
  /** One policy decision: allow, deny or approval_required, with its stable reason. */
  policyDecision(decision: string, reason: string): void
  /** A call refused by a quota or the loop guard (kind: calls, tokens, repeats). */
  quotaRefused(kind: 'calls' | 'tokens' | 'repeats'): void
  /** Report `read()` as the in-flight gauge at each scrape. */
  trackInflight(read: () => number): void
  /** Report each breaker's state (0 closed, 1 open, 2 half-open) as `runr_breaker_state` at each scrape. */
  trackBreakers(read: () => Iterable<{ kind: string; name: string; value: number }>): void
  /**
   * Count and time one finished tool call (tool routes and the OpenAI passthrough), and by agent
   * when `metrics.perAgent` names it.
   */
  observeTool(tool: string, action: string, status: number, seconds: number, agent: string | undefined): void
  /** LLM tokens an agent's call used (prompt, completion), by tool, and by agent when named. */
  llmTokens(tool: string, prompt: number, completion: number, agent: string | undefined): void
  /** One retry of an upstream call to a system or tool. */
  upstreamRetry(kind: string, name: string): void
}

/** Create the registry with the gateway's metrics and Node's default process metrics. */
export function createMetrics(): Metrics {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'runr_' })
  const requests = hotCounter(
    registry,
    'runr_requests_total',
    'Requests served, by route, method and status class.',
    ['route', 'method', 'status'],
  )
  const duration = hotHistogram(
    registry,
    'runr_request_duration_seconds',
    'Time from request start to the end of the response, by route and method.',
    ['route', 'method'],
    latencyBuckets,
  )
  const upstream = hotHistogram(
    registry,
    'runr_upstream_duration_seconds',
    'Time from sending the upstream request to its response headers, by system.',
    ['system'],
    latencyBuckets,
  )
  const reloads = new Counter({
    name: 'runr_config_reloads_total',
    help: 'Configuration reloads by result (success, failure).',
    labelNames: ['result'] as const,
    registers: [registry],
  })
  const tokensIssued = new Counter({
    name: 'runr_tokens_issued_total',
    help: 'Access tokens issued, by grant (jwt-bearer, token-exchange, admin).',
    labelNames: ['grant'] as const,
    registers: [registry],
  })
  const decisions = hotCounter(
    registry,
    'runr_policy_decisions_total',
    'Policy decisions, by decision (allow, deny, approval_required) and reason.',
    ['decision', 'reason'],
  )
  const decisionSeries = new Map<string, CounterSeries>()
  const quotaRefusals = new Counter({
    name: 'runr_quota_exceeded_total',
    help: 'Calls refused by a quota or the loop guard, by kind (calls, tokens, repeats).',
    labelNames: ['kind'] as const,
    registers: [registry],
  })
  let readInflight = (): number => 0
  new Gauge({
    name: 'runr_requests_in_flight',
    help: 'Requests being served on the public listener.',
    registers: [registry],
    collect() {
      this.set(readInflight())
    },
  })

  let readBreakers = (): Iterable<{ kind: string; name: string; value: number }> => []
  new Gauge({
    name: 'runr_breaker_state',
    help: 'Circuit breaker state by target kind (system, tool) and name: 0 closed, 1 open, 2 half-open.',
    labelNames: ['kind', 'name'] as const,
    registers: [registry],
    collect() {
      // Reset first: a system or tool removed by a reload leaves the series.
      this.reset()
      for (const { kind, name, value } of readBreakers()) this.labels(kind, name).set(value)
    },
  })
  const retries = new Counter({
    name: 'runr_upstream_retries_total',
    help: 'Upstream calls retried, by target kind (system, tool) and name.',
    labelNames: ['kind', 'name'] as const,
    registers: [registry],
  })

  const toolCalls = hotCounter(
    registry,
    'runr_tool_calls_total',
    'Tool calls answered, by tool, action and status class.',
    ['tool', 'action', 'status'],
  )
  const toolDuration = hotHistogram(
    registry,
    'runr_tool_call_duration_seconds',
    'Time from request start to the end of a tool call’s answer, by tool and action.',
    ['tool', 'action'],
    latencyBuckets,
  )
  // Only with metrics.perAgent: one series per agent, so its cardinality is the operator's choice.
  const agentToolCalls = new Counter({
    name: 'runr_agent_tool_calls_total',
    help: 'Tool calls answered, by agent (metrics.perAgent), tool, action and status class.',
    labelNames: ['agent', 'tool', 'action', 'status'] as const,
    registers: [registry],
  })
  const llmTokens = new Counter({
    name: 'runr_llm_tokens_total',
    help: 'LLM tokens used through the gateway, by tool and kind (prompt, completion).',
    labelNames: ['tool', 'kind'] as const,
    registers: [registry],
  })
  const agentLlmTokens = new Counter({
    name: 'runr_agent_llm_tokens_total',
    help: 'LLM tokens used, by agent (metrics.perAgent), tool and kind (prompt, completion).',
    labelNames: ['agent', 'tool', 'kind'] as const,
    registers: [registry],
  })
  type ToolSeries = { duration: HistogramSeries; byStatus: Map<string, CounterSeries> }
  const perTool = new Map<string, Map<string, ToolSeries>>()

  type MethodSeries = { duration: HistogramSeries; byStatus: Map<string, CounterSeries> }
  const perRoute = new Map<string, Map<string, MethodSeries>>()
  const perSystem = new Map<string, HistogramSeries>()
  return {
    registry,
    observeRequest(route, rawMethod, status, seconds) {
      const method = knownMethods.has(rawMethod) ? rawMethod : 'OTHER'
      const statusClass = statusClasses[Math.trunc(status / 100)] ?? 'other'
      // Nested maps find the series without building a key string per request.
      let byMethod = perRoute.get(route)
      if (byMethod === undefined) {
        byMethod = new Map()
        perRoute.set(route, byMethod)
      }
      let entry = byMethod.get(method)
      if (entry === undefined) {
        entry = { duration: duration.series(route, method), byStatus: new Map() }
        byMethod.set(method, entry)
      }
      let counter = entry.byStatus.get(statusClass)
      if (counter === undefined) {
        counter = requests.series(route, method, statusClass)
        entry.byStatus.set(statusClass, counter)
      }
      counter.inc()
      entry.duration.observe(seconds)
    },
    observeUpstream(system, seconds) {
      let series = perSystem.get(system)
      if (series === undefined) {
        series = upstream.series(system)
        perSystem.set(system, series)
      }
      series.observe(seconds)
    },
    configReload(result) {
      reloads.labels(result).inc()
    },
    tokenIssued(grant) {
      tokensIssued.labels(grant).inc()
    },
    policyDecision(decision, reason) {
      const key = `${decision} ${reason}`
      let series = decisionSeries.get(key)
      if (series === undefined) {
        series = decisions.series(decision, reason)
        decisionSeries.set(key, series)
      }
      series.inc()
    },
    quotaRefused(kind) {
      quotaRefusals.labels(kind).inc()
    },
    trackInflight(read) {
      readInflight = read
    },
    trackBreakers(read) {
      readBreakers = read
    },
    observeTool(tool, action, status, seconds, agent) {
      const statusClass = statusClasses[Math.trunc(status / 100)] ?? 'other'
      // Tool and action come from the registry's names, never from the request: bounded. Nested
      // maps, as for requests: no key string per call.
      let byAction = perTool.get(tool)
      if (byAction === undefined) {
        byAction = new Map()
        perTool.set(tool, byAction)
      }
      let entry = byAction.get(action)
      if (entry === undefined) {
        entry = { duration: toolDuration.series(tool, action), byStatus: new Map() }
        byAction.set(action, entry)
      }
      let counter = entry.byStatus.get(statusClass)
      if (counter === undefined) {
        counter = toolCalls.series(tool, action, statusClass)
        entry.byStatus.set(statusClass, counter)
      }
      counter.inc()
      entry.duration.observe(seconds)
      if (agent !== undefined) agentToolCalls.labels(agent, tool, action, statusClass).inc()
    },
    llmTokens(tool, prompt, completion, agent) {
      if (prompt > 0) llmTokens.labels(tool, 'prompt').inc(prompt)
      if (completion > 0) llmTokens.labels(tool, 'completion').inc(completion)
      if (agent === undefined) return
      if (prompt > 0) agentLlmTokens.labels(agent, tool, 'prompt').inc(prompt)
      if (completion > 0) agentLlmTokens.labels(agent, tool, 'completion').inc(completion)
    },
    upstreamRetry(kind, name) {
      retries.labels(kind, name).inc()
    },
  }
}
