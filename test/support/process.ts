/**
 * Real gateway processes for tests that need more than one (cluster behaviour) or the CLI as a
 * user runs it: `4runr start` from the sources through tsx, its URLs read off the banner.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse, stringify } from 'yaml'

export const root = fileURLToPath(new URL('../../', import.meta.url))
export const cli = join(root, 'packages/server/src/cli/index.ts')
// Resolved here, since a child running in a temp directory would not resolve a bare 'tsx'.
export const tsx = import.meta.resolve('tsx')

/** Run a `4runr` command to completion. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}, cwd = root) {
  return spawnSync(process.execPath, ['--import', tsx, cli, ...args], {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, ...env },
  })
}

/**
 * Run a `4runr` command without blocking this process: needed when the gateway it talks to runs
 * in the test process itself (spawnSync would stop the gateway's event loop and hang both).
 */
export function runCliAsync(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  cwd = root,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', tsx, cli, ...args], {
    cwd,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout!.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8')
  })
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8')
  })
  return new Promise((done) => child.once('close', (status) => done({ status, stdout, stderr })))
}

export interface Started {
  child: ChildProcess
  publicUrl: string
  adminUrl: string
  stderr: () => string
  exited: Promise<number | null>
}

/** Start `4runr start` and wait for its banner; the banner names the URLs it listens on. */
export async function startGatewayProcess(
  configFile: string,
  env: NodeJS.ProcessEnv,
  cwd: string,
): Promise<Started> {
  const child = spawn(process.execPath, ['--import', tsx, cli, 'start', '--config', configFile], {
    cwd,
    env: { ...process.env, RUNR_ADMIN_KEY: undefined, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stderr = ''
  child.stdout!.resume()
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)))
  const urls = await new Promise<{ publicUrl: string; adminUrl: string }>((ready, fail) => {
    const timer = setTimeout(() => fail(new Error(`no banner within 20 s:\n${stderr}`)), 20_000)
    child.stderr!.on('data', (chunk: Buffer) => {
      stderr += chunk.toString('utf8')
      const pub = /public\s+(http:\/\/\S+)/.exec(stderr)
      const adm = /admin\s+(http:\/\/\S+)/.exec(stderr)
      if (pub && adm) {
        clearTimeout(timer)
        ready({ publicUrl: pub[1]!, adminUrl: adm[1]! })
      }
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      fail(new Error(`exited with ${code}:\n${stderr}`))
    })
  })
  return { child, ...urls, stderr: () => stderr, exited }
}

/**
 * Start `4runr start` on `config` from a fresh temp directory: both listeners on 127.0.0.1 port 0
 * and a SQLite store in that directory, unless the config says otherwise.
 */
export async function startProcessWith(
  config: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Promise<Started & { dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'runr-process-'))
  const gateway = (config['gateway'] ?? {}) as Record<string, unknown>
  const file = join(dir, '4runr.yaml')
  await writeFile(
    file,
    stringify({
      ...config,
      gateway: {
        ...gateway,
        listen: { host: '127.0.0.1', port: 0, ...(gateway['listen'] as object) },
        admin: { host: '127.0.0.1', port: 0, ...(gateway['admin'] as object) },
      },
      store: config['store'] ?? { kind: 'sqlite', path: join(dir, '4runr.db') },
    }),
  )
  return { ...(await startGatewayProcess(file, env, dir)), dir }
}

/**
 * examples/demo.yaml with both listeners on free ports and its store in `dir`; returns the file.
 * `toolFakes: false` leaves out the demo's fake tool upstreams and the secrets they store.
 */
export async function demoConfigIn(dir: string, options: { toolFakes?: boolean } = {}): Promise<string> {
  type Demo = {
    gateway: { listen: { port: number }; admin: { port: number } }
    store: unknown
    tools?: { demo?: boolean }
  }
  const demo = parse(await readFile(join(root, 'examples/demo.yaml'), 'utf8')) as Demo
  demo.gateway.listen.port = 0
  demo.gateway.admin.port = 0
  if (options.toolFakes === false && demo.tools !== undefined) delete demo.tools.demo
  demo.store = { kind: 'sqlite', path: join(dir, 'data/4runr.db') }
  const file = join(dir, 'demo.yaml')
  await writeFile(file, stringify(demo))
  return file
}
