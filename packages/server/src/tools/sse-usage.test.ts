import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { GatewayError } from '../errors/gateway-error.ts'
import { relayWithUsage } from './sse-usage.ts'
import type { LlmUsage } from './types.ts'

const chunk = (content: string) =>
  `data: {"choices":[{"index":0,"delta":{"content":${JSON.stringify(content)}}}]}\n\n`
const usageChunk =
  'data: {"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}\n\n'
const done = 'data: [DONE]\n\n'

/** A source that yields `parts` as bytes and records whether it was cancelled. */
function source(parts: Array<string | Uint8Array>) {
  const state = { cancelled: false, index: 0 }
  const iterable: AsyncIterable<Uint8Array> = {
    [Symbol.asyncIterator]: () => ({
      async next() {
        const part = parts[state.index++]
        if (part === undefined) return { done: true, value: undefined }
        return { done: false, value: typeof part === 'string' ? new TextEncoder().encode(part) : part }
      },
      async return() {
        state.cancelled = true
        return { done: true, value: undefined }
      },
    }),
  }
  return { iterable, state }
}

async function text(stream: AsyncIterable<Uint8Array>): Promise<string> {
  const decoder = new TextDecoder()
  let out = ''
  for await (const piece of stream) out += decoder.decode(piece, { stream: true })
  return out + decoder.decode()
}

describe('relaying a chat stream while metering it', () => {
  it('passes the bytes on unchanged and reports the usage chunk at the end', async () => {
    const whole = chunk('Hel') + chunk('lo') + usageChunk + done
    // Split mid-event and mid-character: usage must still be found.
    const bytes = new TextEncoder().encode(whole)
    const parts = [bytes.subarray(0, 17), bytes.subarray(17, 90), bytes.subarray(90)]
    const reports: Array<LlmUsage | undefined> = []
    const out = await text(
      relayWithUsage(source(parts).iterable, { dropUsageChunk: false, onEnd: (u) => reports.push(u) }),
    )
    assert.equal(out, whole)
    assert.deepEqual(reports, [{ promptTokens: 12, completionTokens: 3 }])
  })

  it('drops the usage-only chunk for a client that did not ask for it, keeping every other event', async () => {
    const parts = [chunk('é'), `${chunk('ü').slice(0, 40)}`, `${chunk('ü').slice(40)}${usageChunk}`, done]
    const reports: Array<LlmUsage | undefined> = []
    const out = await text(
      relayWithUsage(source(parts).iterable, { dropUsageChunk: true, onEnd: (u) => reports.push(u) }),
    )
    assert.equal(out, chunk('é') + chunk('ü') + done)
    assert.deepEqual(reports, [{ promptTokens: 12, completionTokens: 3 }])
  })

  it('counts the chunks of a stream that ends without usage, about one token each', async () => {
    const reports: Array<LlmUsage | undefined> = []
    await text(
      relayWithUsage(source([chunk('a'), chunk('b'), chunk('c'), done]).iterable, {
        dropUsageChunk: false,
        onEnd: (u) => reports.push(u),
      }),
    )
    assert.deepEqual(reports, [{ promptTokens: 0, completionTokens: 3 }])
  })

  it('cancels the source when the reader stops, even before reading, and reports once', async () => {
    const early = source([chunk('a')])
    const reports: Array<LlmUsage | undefined> = []
    await relayWithUsage(early.iterable, { dropUsageChunk: false, onEnd: (u) => reports.push(u) })
      [Symbol.asyncIterator]()
      .return?.()
    assert.equal(early.state.cancelled, true)
    assert.deepEqual(reports, [undefined])

    const midway = source([chunk('a'), chunk('b'), usageChunk])
    const later: Array<LlmUsage | undefined> = []
    const iterator = relayWithUsage(midway.iterable, {
      dropUsageChunk: false,
      onEnd: (u) => later.push(u),
    })[Symbol.asyncIterator]()
    await iterator.next()
    await iterator.return?.()
    await iterator.return?.()
    assert.equal(midway.state.cancelled, true)
    assert.deepEqual(later, [{ promptTokens: 0, completionTokens: 1 }])
  })

  it('fails on an event longer than the limit instead of buffering without end', async () => {
    const stream = relayWithUsage(source(['data: ', 'x'.repeat(100), 'y'.repeat(100)]).iterable, {
      dropUsageChunk: true,
      maxEventChars: 150,
      onEnd: () => {},
    })
    await assert.rejects(
      text(stream),
      (err: unknown) => err instanceof GatewayError && err.code === 'upstream_error',
    )
  })
})
