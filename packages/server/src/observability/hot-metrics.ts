/**
 * Counters and histograms for the per-request path. prom-client hashes the label set on every
 * `inc`/`observe` (a few microseconds per request across the request metrics); these keep one
 * small record per label tuple, found with one Map lookup, and hand prom-client's registry the
 * totals only when /metrics is scraped. The exposition format is prom-client's own.
 */
import type { Registry } from 'prom-client'

type Labels = Record<string, string>

interface MetricValue {
  labels: Labels
  value: number
  metricName?: string
}

/** The shape prom-client's Registry reads from a registered metric. */
interface Collectable {
  name: string
  help: string
  type: 'counter' | 'histogram'
  aggregator: 'sum'
  get(): Promise<{ name: string; help: string; type: string; aggregator: 'sum'; values: MetricValue[] }>
  reset(): void
}

function register(registry: Registry, metric: Collectable): void {
  // registerMetric is typed for prom-client's own classes; the registry only reads this shape.
  registry.registerMetric(metric as unknown as Parameters<Registry['registerMetric']>[0])
}

function labelsOf(names: readonly string[], values: readonly string[]): Labels {
  const labels: Labels = {}
  names.forEach((name, i) => {
    labels[name] = values[i]!
  })
  return labels
}

/** A counter child: one series of a labelled counter. */
export interface CounterSeries {
  inc(by?: number): void
}

/** Create a labelled counter registered on `registry`; `series(...)` is cached by the caller. */
export function hotCounter(registry: Registry, name: string, help: string, labelNames: readonly string[]) {
  type Entry = { labels: Labels; count: number; child: CounterSeries }
  const series = new Map<string, Entry>()
  register(registry, {
    name,
    help,
    type: 'counter',
    aggregator: 'sum',
    async get() {
      const values = [...series.values()].map((s) => ({ labels: s.labels, value: s.count }))
      return { name, help, type: 'counter', aggregator: 'sum', values }
    },
    reset: () => series.clear(),
  })
  return {
    series(...values: string[]): CounterSeries {
      const key = values.join('\u0000')
      let entry = series.get(key)
      if (entry === undefined) {
        const created: Entry = {
          labels: labelsOf(labelNames, values),
          count: 0,
          child: {
            inc(by = 1) {
              created.count += by
            },
          },
        }
        entry = created
        series.set(key, entry)
      }
      return entry.child
    },
  }
}

/** A histogram child: one series of a labelled histogram. */
export interface HistogramSeries {
  observe(value: number): void
}

/** Create a labelled histogram with fixed upper bounds, registered on `registry`. */
export function hotHistogram(
  registry: Registry,
  name: string,
  help: string,
  labelNames: readonly string[],
  buckets: readonly number[],
) {
  type Entry = { labels: Labels; counts: Float64Array; sum: number; count: number; child: HistogramSeries }
  const series = new Map<string, Entry>()
  register(registry, {
    name,
    help,
    type: 'histogram',
    aggregator: 'sum',
    async get() {
      const values: MetricValue[] = []
      for (const s of series.values()) {
        // Buckets are exported cumulatively (Prometheus exposition format), counted per bucket here.
        let cumulative = 0
        buckets.forEach((le, i) => {
          cumulative += s.counts[i]!
          values.push({
            labels: { le: String(le), ...s.labels },
            value: cumulative,
            metricName: `${name}_bucket`,
          })
        })
        values.push({ labels: { le: '+Inf', ...s.labels }, value: s.count, metricName: `${name}_bucket` })
        values.push({ labels: s.labels, value: s.sum, metricName: `${name}_sum` })
        values.push({ labels: s.labels, value: s.count, metricName: `${name}_count` })
      }
      return { name, help, type: 'histogram', aggregator: 'sum', values }
    },
    reset: () => series.clear(),
  })
  return {
    series(...values: string[]): HistogramSeries {
      const key = values.join('\u0000')
      let entry = series.get(key)
      if (entry === undefined) {
        const counts = new Float64Array(buckets.length)
        const created: Entry = {
          labels: labelsOf(labelNames, values),
          counts,
          sum: 0,
          count: 0,
          child: {
            observe(value) {
              created.sum += value
              created.count++
              for (let i = 0; i < buckets.length; i++) {
                if (value <= (buckets[i] as number)) {
                  counts[i] = (counts[i] as number) + 1
                  return
                }
              }
            },
          },
        }
        entry = created
        series.set(key, entry)
      }
      return entry.child
    },
  }
}
