import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Counter, Histogram, Registry } from 'prom-client'
import { hotCounter, hotHistogram } from './hot-metrics.ts'

const buckets = [0.001, 0.01, 0.1, 1]
const samples: Array<[string, string, number]> = [
  ['orders', 'GET', 0.0004],
  ['orders', 'GET', 0.001],
  ['orders', 'GET', 0.05],
  ['orders', 'POST', 2.5],
  ['billing', 'GET', 0.2],
]

describe('hot metrics', () => {
  it('expose exactly what prom-client would for the same observations', async () => {
    const reference = new Registry()
    const refCounter = new Counter({
      name: 'x_total',
      help: 'h',
      labelNames: ['route', 'method'],
      registers: [reference],
    })
    const refHistogram = new Histogram({
      name: 'x_seconds',
      help: 'h',
      labelNames: ['route', 'method'],
      buckets,
      registers: [reference],
    })
    const hot = new Registry()
    const counter = hotCounter(hot, 'x_total', 'h', ['route', 'method'])
    const histogram = hotHistogram(hot, 'x_seconds', 'h', ['route', 'method'], buckets)
    for (const [route, method, value] of samples) {
      refCounter.labels(route, method).inc()
      refHistogram.labels(route, method).observe(value)
      counter.series(route, method).inc()
      histogram.series(route, method).observe(value)
    }
    assert.equal(await hot.metrics(), await reference.metrics())
  })

  it('hand out the same series for the same labels', () => {
    const counter = hotCounter(new Registry(), 'y_total', 'h', ['a'])
    assert.equal(counter.series('1'), counter.series('1'))
    assert.notEqual(counter.series('1'), counter.series('2'))
  })
})
