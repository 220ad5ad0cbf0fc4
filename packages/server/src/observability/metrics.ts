/**
 * Prometheus metrics (DESIGN §16). One registry per gateway instance, passed in through deps, so
 * two gateways in one test process never share counters. Label sets are bounded: route is a
 * channel name or built-in route template, method is one of a fixed list, status is a class.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'

const knownMethods = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])
const latencyBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

export interface Metrics {
  readonly registry: Registry
  /** Count and time one finished request. */
  observeRequest(route: string, method: string, status: number, seconds: number): void
  observeUpstream(system: string, seconds: number): void
  configReload(result: 'success' | 'failure'): void
  /** Report `read()` as the in-flight gauge at each scrape. */
  trackInflight(read: () => number): void
}

/** Create the registry with the gateway's metrics and Node's default process metrics. */
export function createMetrics(): Metrics {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'runr_' })
  const requests = new Counter({
    name: 'runr_requests_total',
    help: 'Requests served, by route, method and status class.',
    labelNames: ['route', 'method', 'status'] as const,
    registers: [registry],
  })
  const duration = new Histogram({
    name: 'runr_request_duration_seconds',
    help: 'Time from request start to the end of the response, by route and method.',
    labelNames: ['route', 'method'] as const,
    buckets: latencyBuckets,
    registers: [registry],
  })
  const upstream = new Histogram({
    name: 'runr_upstream_duration_seconds',
    help: 'Time from sending the upstream request to its response headers, by system.',
    labelNames: ['system'] as const,
    buckets: latencyBuckets,
    registers: [registry],
  })
  const reloads = new Counter({
    name: 'runr_config_reloads_total',
    help: 'Configuration reloads by result (success, failure).',
    labelNames: ['result'] as const,
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

  // prom-client hashes the label object on every call; caching the child per label tuple keeps
  // the request path at a map lookup.
  type Child = { inc(): void }
  type TimerChild = { observe(v: number): void }
  const requestChildren = new Map<string, Child>()
  const durationChildren = new Map<string, TimerChild>()
  const upstreamChildren = new Map<string, TimerChild>()

  return {
    registry,
    observeRequest(route, rawMethod, status, seconds) {
      const method = knownMethods.has(rawMethod) ? rawMethod : 'OTHER'
      const statusClass = `${Math.trunc(status / 100)}xx`
      const key = `${route}\u0000${method}\u0000${statusClass}`
      let counter = requestChildren.get(key)
      if (counter === undefined) {
        counter = requests.labels(route, method, statusClass)
        requestChildren.set(key, counter)
      }
      counter.inc()
      const timerKey = `${route}\u0000${method}`
      let timer = durationChildren.get(timerKey)
      if (timer === undefined) {
        timer = duration.labels(route, method)
        durationChildren.set(timerKey, timer)
      }
      timer.observe(seconds)
    },
    observeUpstream(system, seconds) {
      let timer = upstreamChildren.get(system)
      if (timer === undefined) {
        timer = upstream.labels(system)
        upstreamChildren.set(system, timer)
      }
      timer.observe(seconds)
    },
    configReload(result) {
      reloads.labels(result).inc()
    },
    trackInflight(read) {
      readInflight = read
    },
  }
}
