/**
 * Start a real gateway in-process for a test: its own temp directory and config file, port 0 for
 * both listeners, its own admin key, and its log lines captured for assertions.
 */
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { stringify } from 'yaml'
import { type RunningGateway, startGateway } from '../../packages/server/src/main.ts'

export const testAdminKey = 'test-admin-key-0123456789abcdef'

export interface TestGateway extends RunningGateway {
  readonly dir: string
  readonly configFile: string
  /** Parsed JSON log lines written so far. */
  readonly logs: Array<Record<string, unknown>>
  /** Raw log text written so far (for canary greps). */
  rawLogs(): string
  /** Rewrite the config file (object or YAML text). */
  writeConfig(config: object | string): Promise<void>
  /** fetch against the admin listener with the admin key. */
  admin(path: string, init?: RequestInit): Promise<Response>
}

function withTestListeners(config: Record<string, unknown>, dir: string): Record<string, unknown> {
  const gateway = (config['gateway'] ?? {}) as Record<string, unknown>
  return {
    ...config,
    gateway: {
      ...gateway,
      listen: { host: '127.0.0.1', port: 0, ...(gateway['listen'] as object) },
      admin: { host: '127.0.0.1', port: 0, ...(gateway['admin'] as object) },
    },
    store: config['store'] ?? { kind: 'sqlite', path: join(dir, '4runr.db') },
  }
}

/**
 * Wait until `gw` answers /ready with 200: a gateway with Redis starts before Redis answers, and
 * what needs Redis meanwhile (a rate limit, the cache) is skipped or fails open.
 */
export async function waitUntilReady(
  gw: Pick<RunningGateway, 'publicUrl'>,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while ((await fetch(`${gw.publicUrl}/ready`)).status !== 200) {
    if (Date.now() > deadline) throw new Error(`the gateway was not ready within ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** Start a gateway on `config` (an object; listeners default to 127.0.0.1:0). */
export async function startTestGateway(
  config: Record<string, unknown>,
  options: { env?: NodeJS.ProcessEnv } = {},
): Promise<TestGateway> {
  const dir = await mkdtemp(join(tmpdir(), 'runr-test-'))
  const configFile = join(dir, '4runr.yaml')
  await writeFile(configFile, stringify(withTestListeners(config, dir)))
  const logs: Array<Record<string, unknown>> = []
  let raw = ''
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      const text = chunk.toString('utf8')
      raw += text
      for (const line of text.split('\n')) if (line.trim() !== '') logs.push(JSON.parse(line))
      callback()
    },
  })
  const gateway = await startGateway({
    configFile,
    env: { RUNR_ADMIN_KEY: testAdminKey, ...options.env },
    logDestination: destination,
  })
  return Object.assign(Object.create(null), gateway, {
    dir,
    configFile,
    logs,
    rawLogs: () => raw,
    async writeConfig(next: object | string) {
      const text =
        typeof next === 'string' ? next : stringify(withTestListeners(next as Record<string, unknown>, dir))
      await writeFile(configFile, text)
    },
    admin(path: string, init: RequestInit = {}) {
      const headers = new Headers(init.headers)
      if (!headers.has('authorization')) headers.set('authorization', `Bearer ${testAdminKey}`)
      return fetch(`${gateway.adminUrl}${path}`, { ...init, headers })
    },
  }) as TestGateway
}
