/**
 * A real `4runr start` process for the SDK's end-to-end tests, its tools pointed at fake SerpAPI,
 * OpenAI and Gmail upstreams that run in the test process (so tests can inject faults into them),
 * and a small HTTP server to stand in front of the gateway and misbehave on purpose.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { testAdminKey } from '../../../test/support/gateway.ts'
import { type Started, startGatewayProcess } from '../../../test/support/process.ts'
import { type FakeUpstreams, startFakeUpstreams } from '../../server/src/fakes/index.ts'
import { AdminClient, GatewayError } from '../src/index.ts'

export { testAdminKey }

export interface SdkGateway {
  publicUrl: string
  adminUrl: string
  fakes: FakeUpstreams
  admin: AdminClient
  dir: string
  process: Started
  stop(): Promise<void>
}

/** `config` is merged over listeners on port 0, an SQLite store in a temp dir and the fakes' URLs. */
export async function startSdkGateway(config: Record<string, unknown> = {}): Promise<SdkGateway> {
  const credentials = {
    serpapi: `serp-${randomBytes(12).toString('hex')}`,
    openai: `sk-${randomBytes(12).toString('hex')}`,
    gmail: `ya29.${randomBytes(12).toString('hex')}`,
  }
  const fakes = await startFakeUpstreams({ credentials })
  const dir = await mkdtemp(join(tmpdir(), 'runr-sdk-'))
  const tools = (config['tools'] ?? {}) as Record<string, Record<string, unknown>>
  const full = {
    ...config,
    gateway: {
      logLevel: 'warn',
      listen: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0 },
      ...(config['gateway'] as object),
    },
    store: { kind: 'sqlite', path: join(dir, '4runr.db') },
    tools: {
      ...tools,
      serpapi: { url: fakes.serpapi.url, ...tools['serpapi'] },
      openai: { url: fakes.openai.url, ...tools['openai'] },
      gmail: { url: fakes.gmail.url, ...tools['gmail'] },
      http_fetch: { allowNetworks: ['127.0.0.1/32'], ...tools['http_fetch'] },
    },
  }
  const configFile = join(dir, '4runr.yaml')
  await writeFile(configFile, stringify(full))
  let started: Started
  try {
    started = await startGatewayProcess(configFile, { RUNR_ADMIN_KEY: testAdminKey }, dir)
  } catch (err) {
    await fakes.close()
    throw err
  }
  const admin = new AdminClient({ baseUrl: started.adminUrl, adminKey: testAdminKey })
  await admin.secrets.put('serpapi_key', credentials.serpapi)
  await admin.secrets.put('openai_key', credentials.openai)
  await admin.secrets.put('gmail_token', credentials.gmail)
  return {
    publicUrl: started.publicUrl,
    adminUrl: started.adminUrl,
    fakes,
    admin,
    dir,
    process: started,
    async stop() {
      started.child.kill('SIGTERM')
      await started.exited
      await fakes.close()
      await rm(dir, { recursive: true, force: true })
    },
  }
}

// Not forwarded: they describe one connection or one encoding of the body, not the message.
const hopHeaders = new Set([
  'host',
  'connection',
  'keep-alive',
  'content-length',
  'transfer-encoding',
  'content-encoding',
])

/** What the front server saw of one request. */
export interface FrontRequest {
  method: string
  path: string
  headers: IncomingMessage['headers']
}

/**
 * A local HTTP server in front of `target`: a request is answered by the next reply scripted for
 * its path while there is one, else forwarded to the target. Every request is recorded.
 */
export async function startFront(target: string) {
  const seen: FrontRequest[] = []
  const script: Array<{ prefix: string; reply: Reply }> = []
  const answers: Array<{ path: string; status: number; headers: Headers }> = []
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    seen.push({ method: req.method!, path: req.url!, headers: req.headers })
    const headers = new Headers()
    for (const [name, value] of Object.entries(req.headers)) {
      if (typeof value === 'string' && !hopHeaders.has(name)) headers.set(name, value)
    }
    const forward = async () => {
      const body = chunks.length === 0 ? undefined : Buffer.concat(chunks)
      const answer = await fetch(target + req.url, { method: req.method!, headers, body })
      const bytes = Buffer.from(await answer.arrayBuffer())
      answers.push({ path: req.url!, status: answer.status, headers: answer.headers })
      return { answer, bytes }
    }
    const next = script.findIndex((entry) => req.url!.startsWith(entry.prefix))
    try {
      if (next >= 0) {
        await script.splice(next, 1)[0]!.reply(res, forward)
        return
      }
      const { answer, bytes } = await forward()
      const out: Record<string, string> = {}
      answer.headers.forEach((value, name) => {
        if (!hopHeaders.has(name)) out[name] = value
      })
      res.writeHead(answer.status, out).end(bytes)
    } catch (err) {
      res.writeHead(599, { 'content-type': 'text/plain' }).end(`front: ${(err as Error).message}`)
    }
  })
  await new Promise<void>((ready) => server.listen(0, '127.0.0.1', ready))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    /** What the gateway answered to each forwarded request. */
    answers,
    /** Queue replies for the next requests whose path starts with `prefix`, in order. */
    answer(prefix: string, ...replies: Reply[]) {
      for (const reply of replies) script.push({ prefix, reply })
    },
    /** The recorded requests whose path starts with `prefix`. */
    requests: (prefix: string) => seen.filter((r) => r.path.startsWith(prefix)),
    close: () =>
      new Promise<void>((done) => {
        server.closeAllConnections()
        server.close(() => done())
      }),
  }
}

/** A scripted reply; `forward` passes the request on to the gateway and reads its answer. */
export type Reply = (
  res: ServerResponse,
  forward: () => Promise<{ answer: Response; bytes: Buffer }>,
) => unknown

/** The gateway does the work, but its answer is lost on the way back (the connection resets). */
export const loseAnswer: Reply = async (res, forward) => {
  await forward()
  res.socket!.destroy()
}

/** A scripted reply: `status` with the gateway's common error body and extra headers. */
export function refusal(status: number, code: string, headers: Record<string, string> = {}) {
  return (res: ServerResponse) => {
    const body = JSON.stringify({ error: { code, message: `scripted ${code}`, status, requestId: 'front' } })
    res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(body)
  }
}

/** The GatewayError a promise rejects with. */
export async function rejection(promise: Promise<unknown>): Promise<GatewayError> {
  try {
    await promise
  } catch (err) {
    assert.ok(err instanceof GatewayError, String(err))
    return err
  }
  assert.fail('the call succeeded')
}
