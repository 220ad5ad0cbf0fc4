/**
 * Bodies stream through the gateway both ways without buffering (issue 3 item 6, DESIGN §8):
 * 100 MB each way with exact byte counts while the process memory stays flat, and a slow reader
 * holds the upstream back instead of making the gateway store the body. The gateway runs in this
 * process, so this process's RSS is the gateway's memory (plus the test's own small change).
 */
import assert from 'node:assert/strict'
import { type IncomingMessage, request } from 'node:http'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { after, before, describe, it } from 'node:test'
import { startTestGateway, type TestGateway } from '../support/gateway.ts'
import { startUpstream, type TestUpstream } from '../support/upstream.ts'

const MB = 1024 * 1024
const total = 100 * MB
/** Growth allowed while 100 MB bodies pass; buffering either one would blow through it. */
const maxGrowth = 60 * MB
const block = Buffer.alloc(64 * 1024, 0x61)

/** `bytes` of data in 64 KB chunks, produced only as fast as they are read; `onChunk` sees each. */
function generate(bytes: number, onChunk?: (length: number) => void): Readable {
  let left = bytes
  return new Readable({
    highWaterMark: block.length,
    read() {
      if (left <= 0) {
        this.push(null)
        return
      }
      const length = Math.min(left, block.length)
      left -= length
      onChunk?.(length)
      this.push(length === block.length ? block : block.subarray(0, length))
    },
  })
}

/** Peak RSS growth over a baseline, sampled every 25 ms until `stop()`. */
function sampleRss(): { stop(): number } {
  const baseline = process.memoryUsage().rss
  let peak = baseline
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss)
  }, 25)
  return {
    stop() {
      clearInterval(timer)
      peak = Math.max(peak, process.memoryUsage().rss)
      return peak - baseline
    },
  }
}

/** Open a request through node:http (no body buffering on the client side either). */
function open(
  base: string,
  path: string,
  method: string,
  headers: Record<string, string> = {},
): { req: ReturnType<typeof request>; response: Promise<IncomingMessage> } {
  const { hostname, port } = new URL(base)
  const req = request({ hostname, port, path, method, headers, agent: false })
  const response = new Promise<IncomingMessage>((resolve, reject) => {
    req.on('response', resolve)
    req.on('error', reject)
  })
  return { req, response }
}

const wait = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

describe('bodies stream through the gateway without buffering', () => {
  let upstream: TestUpstream
  let gw: TestGateway
  /** Bytes the upstream has produced for the current download (backpressure-driven). */
  let produced = 0
  /** When the upstream saw the first byte of the current upload. */
  let uploadFirstByteAt = 0
  let downloadClosed: Promise<void> = Promise.resolve()

  before(async () => {
    upstream = await startUpstream(
      (req, res) => {
        const url = new URL(req.url ?? '/', 'http://upstream')
        if (url.pathname === '/upload') {
          let bytes = 0
          uploadFirstByteAt = 0
          req.on('data', (chunk: Buffer) => {
            if (bytes === 0) uploadFirstByteAt = performance.now()
            bytes += chunk.length
          })
          req.on('end', () => {
            res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ bytes }))
          })
          return
        }
        if (url.pathname === '/download') {
          req.resume()
          produced = 0
          const size = Number(url.searchParams.get('bytes'))
          // No content-length: the body is chunked, so only a clean end proves it arrived whole.
          res.writeHead(200, { 'content-type': 'application/octet-stream' })
          downloadClosed = new Promise((closed) => res.on('close', closed))
          generate(size, (length) => {
            produced += length
          })
            .pipe(res)
            .on('error', () => {})
          return
        }
        res.writeHead(404).end()
      },
      { streaming: true },
    )
    gw = await startTestGateway({
      gateway: { logLevel: 'warn' },
      systems: { bulk: { kind: 'http', url: upstream.url } },
      channels: [{ name: 'bulk', prefix: '/bulk', system: 'bulk', rules: [{ path: '*', public: true }] }],
    })
    // Warm up: pools, parsers and buffers that any first request allocates are not growth.
    await upload(32 * MB)
    await download(32 * MB)
  })
  after(async () => {
    await gw.stop()
    await upstream.close()
  })

  /** Upload `bytes`; answers the count the upstream saw and when the client finished sending. */
  async function upload(bytes: number): Promise<{ counted: number; sentAt: number }> {
    const { req, response } = open(gw.publicUrl, '/bulk/upload', 'POST', {
      'content-type': 'application/octet-stream',
      'content-length': String(bytes),
    })
    await pipeline(generate(bytes), req)
    const sentAt = performance.now()
    const res = await response
    assert.equal(res.statusCode, 200)
    let text = ''
    for await (const chunk of res) text += chunk
    return { counted: (JSON.parse(text) as { bytes: number }).bytes, sentAt }
  }

  async function download(bytes: number): Promise<number> {
    const { req, response } = open(gw.publicUrl, `/bulk/download?bytes=${bytes}`, 'GET')
    req.end()
    const res = await response
    assert.equal(res.statusCode, 200)
    let received = 0
    // Count and drop each chunk: the test keeps nothing.
    for await (const chunk of res as AsyncIterable<Buffer>) received += chunk.length
    assert.equal(res.complete, true, 'the download ended cleanly')
    return received
  }

  it('uploads 100 MB to the upstream byte for byte with flat memory', async () => {
    const rss = sampleRss()
    const started = performance.now()
    const { counted, sentAt } = await upload(total)
    const growth = rss.stop()
    assert.equal(counted, total)
    // Store-and-forward would deliver the first byte only after the client sent the last one.
    assert.ok(
      uploadFirstByteAt > 0 && uploadFirstByteAt < sentAt,
      'the upstream got bytes while the client sent',
    )
    const seconds = (performance.now() - started) / 1000
    assert.ok(growth < maxGrowth, `RSS grew ${(growth / MB).toFixed(1)} MB during a 100 MB upload`)
    assert.ok(seconds < 10, `the upload took ${seconds.toFixed(1)} s`)
  })

  it('downloads 100 MB from the upstream byte for byte with flat memory', async () => {
    const rss = sampleRss()
    const started = performance.now()
    assert.equal(await download(total), total)
    const growth = rss.stop()
    const seconds = (performance.now() - started) / 1000
    assert.ok(growth < maxGrowth, `RSS grew ${(growth / MB).toFixed(1)} MB during a 100 MB download`)
    assert.ok(seconds < 10, `the download took ${seconds.toFixed(1)} s`)
  })

  it('holds the upstream back while a slow client reads, instead of buffering the body', async () => {
    const rss = sampleRss()
    const { req, response } = open(gw.publicUrl, `/bulk/download?bytes=${total}`, 'GET')
    req.end()
    const res = await response
    assert.equal(res.statusCode, 200)
    let received = 0
    res.on('data', (chunk: Buffer) => {
      received += chunk.length
    })
    // Read 64 KB every 50 ms (about 1.3 MB/s) for a second and a half.
    res.pause()
    for (let i = 0; i < 30; i++) {
      res.resume()
      await new Promise<void>((r) => res.once('data', () => r()))
      res.pause()
      await wait(50)
    }
    const inFlight = produced - received
    const growth = rss.stop()
    // Without backpressure the upstream would have produced all 100 MB by now. Loopback socket
    // buffers on both connections can legitimately hold several MB.
    assert.ok(produced < 48 * MB, `the upstream produced ${(produced / MB).toFixed(1)} MB for a slow reader`)
    assert.ok(inFlight < 48 * MB, `${(inFlight / MB).toFixed(1)} MB in flight between upstream and client`)
    assert.ok(growth < maxGrowth, `RSS grew ${(growth / MB).toFixed(1)} MB while the client read slowly`)

    // The client gives up: the upstream's response is torn down, not left streaming.
    res.destroy()
    await downloadClosed
    assert.ok(produced < total, 'the upstream stopped before producing the whole body')
  })
})
