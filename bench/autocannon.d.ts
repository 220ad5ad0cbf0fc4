// The part of autocannon 9's programmatic API the benchmark uses (the package ships no types).
declare module 'autocannon' {
  import type { EventEmitter } from 'node:events'

  export interface Histogram {
    average: number
    mean: number
    stddev: number
    min: number
    max: number
    total: number
    p50: number
    p97_5: number
    p99: number
    [percentile: string]: number
  }

  export interface Options {
    url: string
    connections?: number
    duration?: number
    overallRate?: number
    connectionRate?: number
    pipelining?: number
    timeout?: number
    method?: string
    headers?: Record<string, string>
    body?: string
  }

  export interface Result {
    duration: number
    errors: number
    timeouts: number
    non2xx: number
    latency: Histogram
    requests: Histogram & { sent: number }
  }

  export interface Instance extends EventEmitter {
    on(
      event: 'response',
      listener: (client: unknown, status: number, bytes: number, ms: number) => void,
    ): this
    on(event: 'done', listener: (result: Result) => void): this
    on(event: string, listener: (...args: unknown[]) => void): this
    stop(): void
  }

  function autocannon(options: Options, done?: (err: Error | null, result: Result) => void): Instance
  export default autocannon
}
