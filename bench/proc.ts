/**
 * Process plumbing for the benchmark: free ports, CPU pinning, child processes in their own
 * process groups (so stopping one also stops whatever it started), readiness polling, and a
 * registry that stops everything still running on exit, error or Ctrl-C.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { request } from 'node:http'
import { createServer } from 'node:net'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The repository root (bench/..). */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..')

/** A free TCP port on 127.0.0.1: listen on 0, read the port, close. */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const server = createServer()
    server.unref()
    server.once('error', rej)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      const port = typeof address === 'object' && address ? address.port : 0
      server.close(() => res(port))
    })
  })
}

/** Whether an executable is on PATH. */
export function hasCommand(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0
}

/** Expands a Linux CPU list such as `0-3,6` into [0, 1, 2, 3, 6]. */
export function parseCpuList(list: string): number[] {
  const out: number[] = []
  for (const part of list.trim().split(',')) {
    if (part === '') continue
    const [a, b] = part.split('-')
    const lo = Number(a)
    const hi = b === undefined ? lo : Number(b)
    if (!Number.isInteger(lo) || !Number.isInteger(hi)) continue
    for (let cpu = lo; cpu <= hi; cpu++) out.push(cpu)
  }
  return out
}

/** The CPUs this process may run on (from /proc/self/status), or [] when unknown. */
export function allowedCpus(): number[] {
  try {
    const status = readFileSync('/proc/self/status', 'utf8')
    const line = /^Cpus_allowed_list:\s*(.+)$/m.exec(status)
    return line?.[1] ? parseCpuList(line[1]) : []
  } catch {
    return []
  }
}

export interface Pinning {
  /** true when the proxy under test and the load side run on separate pinned CPUs */
  enabled: boolean
  /** why pinning is off, when it is */
  reason?: string
  /** the CPU of the proxy under test */
  proxyCpu?: number
  /** the CPU of the upstream and the load generator */
  loadCpu?: number
}

/** Pins the proxy under test to the first allowed CPU, upstream and load generator to the second. */
export function detectPinning(): Pinning {
  if (process.env['BENCH_NO_PIN'] === '1') return { enabled: false, reason: 'BENCH_NO_PIN=1' }
  if (process.platform !== 'linux')
    return { enabled: false, reason: `taskset is Linux-only (${process.platform})` }
  if (!hasCommand('taskset')) return { enabled: false, reason: 'taskset not found (util-linux)' }
  const cpus = allowedCpus()
  if (cpus.length < 2)
    return { enabled: false, reason: `only ${cpus.length || 'an unknown number of'} CPU(s)` }
  return { enabled: true, proxyCpu: cpus[0]!, loadCpu: cpus[1]! }
}

/** The command prefix that pins a process to `cpu` (empty when pinning is off). */
export function pinPrefix(pinning: Pinning, role: 'proxy' | 'load'): string[] {
  if (!pinning.enabled) return []
  return ['taskset', '-c', String(role === 'proxy' ? pinning.proxyCpu : pinning.loadCpu)]
}

/** A child process in its own process group, with the tail of its output kept for errors. */
export interface Proc {
  name: string
  child: ChildProcess
  /** resolves with the exit code (or signal name) when the process has exited */
  exited: Promise<number | string>
  /** the last few KB of stdout + stderr */
  output(): string
  /** SIGTERM to the process group, SIGKILL after `graceMs` */
  stop(graceMs?: number): Promise<void>
  /** SIGSTOP / SIGCONT to the process group: a paused target uses no CPU at all */
  pause(): void
  resume(): void
  /** CPU seconds (user + system) the group's live processes have used so far; null off Linux */
  cpuSeconds(): number | null
}

const live = new Set<Proc>()
const OUTPUT_KEEP = 16 * 1024

export interface StartOptions {
  env?: Record<string, string>
  cwd?: string
  /** called with each stdout chunk (for "ready" lines) */
  onStdout?: (chunk: string) => void
}

/** Starts `argv` (with an optional pinning prefix already in it) in a new process group. */
export function startProcess(name: string, argv: string[], options: StartOptions = {}): Proc {
  const [command, ...args] = argv
  if (!command) throw new Error(`${name}: empty command`)
  const child = spawn(command, args, {
    cwd: options.cwd ?? ROOT,
    env: { ...process.env, ...options.env },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let tail = ''
  const keep = (chunk: Buffer | string) => {
    tail = (tail + chunk.toString()).slice(-OUTPUT_KEEP)
  }
  child.stdout?.on('data', (chunk: Buffer) => {
    keep(chunk)
    options.onStdout?.(chunk.toString())
  })
  child.stderr?.on('data', keep)
  const exited = new Promise<number | string>((res) => {
    child.once('exit', (code, signal) => res(code ?? signal ?? 'unknown'))
    child.once('error', (err) => {
      keep(`${err.message}\n`)
      res('spawn-error')
    })
  })
  const proc: Proc = {
    name,
    child,
    exited,
    output: () => tail,
    async stop(graceMs = 5000) {
      if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) {
        live.delete(proc)
        return
      }
      // A paused group would hold SIGTERM until resumed.
      killGroup(child.pid, 'SIGCONT')
      killGroup(child.pid, 'SIGTERM')
      const timer = setTimeout(() => killGroup(child.pid!, 'SIGKILL'), graceMs)
      await exited
      clearTimeout(timer)
      // Anything the process started in its group and left behind goes too.
      killGroup(child.pid, 'SIGKILL')
      live.delete(proc)
    },
    pause() {
      if (child.pid !== undefined && child.exitCode === null) killGroup(child.pid, 'SIGSTOP')
    },
    resume() {
      if (child.pid !== undefined) killGroup(child.pid, 'SIGCONT')
    },
    cpuSeconds() {
      return child.pid === undefined ? null : groupCpuSeconds(child.pid)
    },
  }
  live.add(proc)
  void exited.then(() => {
    if (child.pid !== undefined) killGroup(child.pid, 'SIGKILL')
    live.delete(proc)
  })
  return proc
}

/** Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`, 100 on Linux in practice). */
let clockTicks: number | undefined
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    const out = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim()
    const n = Number(out)
    clockTicks = Number.isInteger(n) && n > 0 ? n : 100
  }
  return clockTicks
}

/**
 * The user + system CPU time of one `/proc/PID/stat` line, in ticks, when the process belongs to
 * process group `pgid` (else null). The command name (field 2) may hold spaces and parentheses,
 * so the fields are counted from its closing parenthesis: state, ppid, pgrp, … utime (14), stime (15).
 */
export function statCpuTicks(stat: string, pgid: number): number | null {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  if (Number(fields[2]) !== pgid) return null
  const ticks = Number(fields[11]) + Number(fields[12])
  return Number.isFinite(ticks) ? ticks : null
}

/**
 * CPU seconds used so far by the live processes of group `pgid` (nginx's master and worker, a
 * gateway and anything it started); null where there is no /proc. A process that exits between
 * two readings takes its time with it, which the benchmark's long-lived targets never do.
 */
export function groupCpuSeconds(pgid: number): number | null {
  let entries: string[]
  try {
    entries = readdirSync('/proc')
  } catch {
    return null
  }
  let ticks = 0
  for (const entry of entries) {
    if (entry.charCodeAt(0) < 0x30 || entry.charCodeAt(0) > 0x39) continue
    let stat: string
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
    } catch {
      continue // exited meanwhile
    }
    ticks += statCpuTicks(stat, pgid) ?? 0
  }
  return ticks / ticksPerSecond()
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal)
  } catch {
    // already gone
  }
}

/** Runs a command to completion, capturing its output; it is registered so Ctrl-C stops it. */
export async function runToEnd(
  name: string,
  argv: string[],
  options: StartOptions & { timeoutMs?: number } = {},
): Promise<{ code: number | string; stdout: string; stderr: string }> {
  let stdout = ''
  let stderr = ''
  const proc = startProcess(name, argv, {
    ...options,
    onStdout: (chunk) => {
      stdout += chunk
    },
  })
  proc.child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString()
  })
  const timer = options.timeoutMs ? setTimeout(() => void proc.stop(1000), options.timeoutMs) : undefined
  // 'close' (not 'exit') so every byte of output has been read.
  const code = await new Promise<number | string>((res) =>
    proc.child.once('close', (c, s) => res(c ?? s ?? 'unknown')),
  )
  if (timer) clearTimeout(timer)
  await proc.exited
  return { code, stdout, stderr }
}

/** Stops every process still running (in parallel). */
export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((p) => p.stop()))
}

/** Synchronous last resort for process 'exit': SIGKILL every process group still registered. */
export function killAllNow(): void {
  for (const p of live) if (p.child.pid !== undefined) killGroup(p.child.pid, 'SIGKILL')
  live.clear()
}

/** One HTTP GET; resolves with the status and body, rejects on connection errors. */
export function httpGet(url: string, timeoutMs = 2000): Promise<{ status: number; body: string }> {
  return new Promise((res, rej) => {
    const req = request(url, { agent: false, timeout: timeoutMs }, (response) => {
      const chunks: Buffer[] = []
      response.on('data', (c: Buffer) => chunks.push(c))
      response.on('end', () =>
        res({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString() }),
      )
      response.on('error', rej)
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', rej)
    req.end()
  })
}

/**
 * Polls `url` until it answers 200. Fails early when `proc` exits, and after `timeoutMs`,
 * with the process's last output in the message.
 */
export async function waitForHttp(url: string, timeoutMs: number, proc?: Proc): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last = 'no answer'
  let exited: number | string | undefined
  void proc?.exited.then((code) => {
    exited = code
  })
  while (Date.now() < deadline) {
    if (exited !== undefined) {
      throw new Error(`${proc?.name} exited (${exited}) before ${url} answered:\n${proc?.output().trim()}`)
    }
    try {
      const { status } = await httpGet(url, 1000)
      if (status === 200) return
      last = `status ${status}`
    } catch (err) {
      last = (err as Error).message
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  const output = proc ? `\n${proc.output().trim()}` : ''
  throw new Error(`${url} not ready after ${timeoutMs} ms (${last})${output}`)
}
