/**
 * Relaying an OpenAI chat stream (server-sent events) while metering it. The gateway asks the
 * upstream for the final usage chunk (`stream_options.include_usage`) whatever the client asked,
 * reads the usage from it as the events go by, and reports it once the stream ends, however it
 * ends. A stream cut short before its usage chunk (the client left, the upstream broke, or an
 * OpenAI-compatible upstream that sends no usage) is counted by its chunks, about one token each,
 * so leaving just before the end does not make a completion free.
 */
import { GatewayError } from '../errors/gateway-error.ts'
import type { LlmUsage } from './types.ts'

export interface SseUsageOptions {
  /** Called once when the stream ends, is cancelled or fails; undefined when nothing was used. */
  onEnd(usage: LlmUsage | undefined): void
  /**
   * Drop the usage-only chunk (no choices) instead of passing it on: for clients that did not ask
   * for it and may not expect a chunk without choices. When false, bytes pass through unchanged.
   */
  dropUsageChunk: boolean
  /** The longest event accepted, in characters (default 1 MiB); a longer one fails the stream. */
  maxEventChars?: number
}

const boundary = /\r\n\r\n|\n\n|\r\r/
const lineBreak = /\r\n|\n|\r/

/** The data of one event: its `data:` lines joined (the SSE processing model). */
function dataOf(event: string): string {
  let data: string | undefined
  for (const line of event.split(lineBreak)) {
    if (!line.startsWith('data:')) continue
    const value = line.charCodeAt(5) === 0x20 ? line.slice(6) : line.slice(5)
    data = data === undefined ? value : `${data}\n${value}`
  }
  return data ?? ''
}

function count(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : undefined
}

/** The usage an OpenAI usage object reports, if it is one. */
export function usageOf(value: unknown): LlmUsage | undefined {
  if (value === null || typeof value !== 'object') return undefined
  const u = value as Record<string, unknown>
  const promptTokens = count(u['prompt_tokens'])
  if (promptTokens === undefined) return undefined
  const completionTokens = count(u['completion_tokens']) ?? 0
  return { promptTokens, completionTokens }
}

/**
 * Pass `source` on, event by event when usage chunks are dropped, else chunk by chunk as it
 * arrives, and report the usage it carried through `onEnd`. Cancelling the result (`return()`)
 * cancels `source` even before the first chunk was asked for.
 */
export function relayWithUsage(
  source: AsyncIterable<Uint8Array>,
  options: SseUsageOptions,
): AsyncIterable<Uint8Array> {
  const maxEventChars = options.maxEventChars ?? 1024 * 1024
  const inner = source[Symbol.asyncIterator]()
  const decoder = new TextDecoder()
  const encoder = new TextEncoder()
  const out: Uint8Array[] = []
  let pending = ''
  let usage: LlmUsage | undefined
  let chunks = 0
  let sourceDone = false
  let ended = false

  const end = (): void => {
    if (ended) return
    ended = true
    options.onEnd(usage ?? (chunks > 0 ? { promptTokens: 0, completionTokens: chunks } : undefined))
  }

  /** Judge one complete event: true to pass it on. */
  const inspect = (event: string): boolean => {
    const data = dataOf(event)
    if (data === '' || data === '[DONE]') return true
    if (data.includes('"usage"')) {
      let parsed: unknown
      try {
        parsed = JSON.parse(data)
      } catch {
        parsed = undefined
      }
      const found = usageOf((parsed as { usage?: unknown } | undefined)?.usage)
      if (found !== undefined) {
        usage = found
        const choices = (parsed as { choices?: unknown }).choices
        return !(options.dropUsageChunk && Array.isArray(choices) && choices.length === 0)
      }
    }
    chunks++
    return true
  }

  const take = (text: string, flush: boolean): void => {
    pending += text
    for (let m = boundary.exec(pending); m !== null; m = boundary.exec(pending)) {
      const end = m.index + m[0].length
      const event = pending.slice(0, end)
      pending = pending.slice(end)
      if (inspect(event) && options.dropUsageChunk) out.push(encoder.encode(event))
    }
    if (flush && pending !== '') {
      if (inspect(pending) && options.dropUsageChunk) out.push(encoder.encode(pending))
      pending = ''
    }
    if (pending.length > maxEventChars) {
      throw new GatewayError(
        'upstream_error',
        `The upstream sent an event longer than ${maxEventChars} characters.`,
      )
    }
  }

  const iterator: AsyncIterator<Uint8Array> = {
    async next() {
      for (;;) {
        const queued = out.shift()
        if (queued !== undefined) return { done: false, value: queued }
        if (sourceDone) {
          end()
          return { done: true, value: undefined }
        }
        let step: IteratorResult<Uint8Array>
        try {
          step = await inner.next()
          if (step.done) {
            sourceDone = true
            take(decoder.decode(), true)
            continue
          }
          take(decoder.decode(step.value, { stream: true }), false)
        } catch (err) {
          sourceDone = true
          end()
          await inner.return?.()
          throw err
        }
        // Unchanged bytes, passed on as soon as they arrive.
        if (!options.dropUsageChunk) return { done: false, value: step.value }
      }
    },
    async return() {
      sourceDone = true
      out.length = 0
      try {
        await inner.return?.()
      } finally {
        end()
      }
      return { done: true, value: undefined }
    },
  }
  return { [Symbol.asyncIterator]: () => iterator }
}
