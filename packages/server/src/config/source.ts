/**
 * The config source: loads, validates and compiles the file, then keeps it current. The file is
 * re-read when it changes on disk and every `refreshMs`; a new version that fails to load,
 * validate or compile is refused and the running one stays (DESIGN §17). Swapping is one
 * reference assignment: requests already in flight keep the version they started with.
 */
import { type FSWatcher, watch } from 'node:fs'
import { basename, dirname, resolve } from 'node:path'
import { type CompiledConfig, compileConfig } from './compile.ts'
import { ConfigError, loadConfigFile, parseConfigText, readConfigText } from './load.ts'
import type { RawConfig } from './schema.ts'

export type ReloadResult =
  | { ok: true; changed: boolean; version: string }
  | { ok: false; version: string; error: string; problems: ConfigError['problems'] }

export interface ConfigSourceOptions {
  env: NodeJS.ProcessEnv
  /** Runs before compiling each version, e.g. to start the demo upstream a version needs. */
  prepare?: (raw: RawConfig) => Promise<void>
  compileOptions?: Parameters<typeof compileConfig>[2]
  /** Told of every reload attempt that found a change or failed. */
  onReload?: (result: ReloadResult, config: CompiledConfig) => void
}

export interface ConfigSource {
  readonly file: string
  current(): CompiledConfig
  /** Re-read the file now. */
  reload(): Promise<ReloadResult>
  /** Start watching the file and polling every refreshMs. */
  watch(): void
  close(): void
}

/** Load `file` for the first time; throws ConfigError when it is invalid. */
export async function openConfigSource(path: string, options: ConfigSourceOptions): Promise<ConfigSource> {
  const file = resolve(path)
  const first = await loadConfigFile(file, { env: options.env })
  await options.prepare?.(first.config)
  let current = compileConfig(first.config, first.text, options.compileOptions)
  // What a version is compared by: the interpolated config, so a changed ${file:…} secret or
  // ${env:…} counts as a change even when the YAML text is the same.
  let currentFingerprint = JSON.stringify(first.config)
  let currentText = first.text
  let lastRefusal: string | undefined
  let watching = false
  let watcher: FSWatcher | undefined
  let timer: NodeJS.Timeout | undefined
  let timerEvery = 0
  let debounce: NodeJS.Timeout | undefined
  let running: Promise<ReloadResult> | undefined
  let queued: Promise<ReloadResult> | undefined

  function armPolling(): void {
    const every = current.gateway.refreshMs
    if (!watching || every === timerEvery) return
    clearInterval(timer)
    timerEvery = every
    if (every > 0) {
      timer = setInterval(() => void reload(), every)
      timer.unref()
    }
  }

  async function reloadOnce(): Promise<ReloadResult> {
    let text = ''
    try {
      text = await readConfigText(file)
      // The same text means the same config unless it reads other files (${file:…}; the
      // environment is fixed for the process): no parse then, which for a large file (a thousand
      // policies) would stall the event loop on every poll.
      if (text === currentText && !text.includes('${file:')) {
        lastRefusal = undefined
        return { ok: true, changed: false, version: current.version }
      }
      const next = {
        config: parseConfigText(text, options.env === undefined ? { file } : { file, env: options.env }),
      }
      const fingerprint = JSON.stringify(next.config)
      if (fingerprint === currentFingerprint) {
        currentText = text
        lastRefusal = undefined
        return { ok: true, changed: false, version: current.version }
      }
      // An empty document is a valid config (every key has a default), so a reload that read the
      // file between an editor's truncate and its write swapped in a gateway with no channels.
      // An empty file is refused on reload; the write that follows triggers the next one.
      if (text.trim() === '') {
        throw new ConfigError([
          { path: '(file)', message: 'the file is empty (a write in progress?); the running version stays' },
        ])
      }
      await options.prepare?.(next.config)
      const compiled = compileConfig(next.config, text, options.compileOptions)
      current = compiled
      currentFingerprint = fingerprint
      currentText = text
      lastRefusal = undefined
      armPolling()
      const result: ReloadResult = { ok: true, changed: true, version: current.version }
      options.onReload?.(result, current)
      return result
    } catch (err) {
      const problems =
        err instanceof ConfigError ? err.problems : [{ path: '(file)', message: (err as Error).message }]
      const result: ReloadResult = {
        ok: false,
        version: current.version,
        error: err instanceof Error ? err.message : String(err),
        problems,
      }
      // The same broken file is refused on every poll; it is logged and counted once, not every
      // refreshMs, until it changes.
      const refusal = `${text}\u0000${result.error}`
      if (refusal !== lastRefusal) {
        lastRefusal = refusal
        options.onReload?.(result, current)
      }
      return result
    }
  }

  // Reloads never overlap. A reload asked for while one runs gets a follow-up run of its own, so
  // a change written during a reload is never answered with the older read.
  const reload = (): Promise<ReloadResult> => {
    if (running === undefined) {
      running = reloadOnce().finally(() => {
        running = undefined
      })
      return running
    }
    queued ??= running.then(() => {
      queued = undefined
      return reload()
    })
    return queued
  }

  return {
    file,
    current: () => current,
    reload,
    watch() {
      const name = basename(file)
      // Watch the directory, not the file: editors and `mv` replace the file, which ends a
      // watch on the old inode.
      try {
        watcher = watch(dirname(file), (_event, changed) => {
          if (changed !== null && changed !== name) return
          clearTimeout(debounce)
          debounce = setTimeout(() => void reload(), 50)
        })
        watcher.on('error', () => {})
      } catch {
        // A directory that cannot be watched still gets the periodic re-read.
      }
      watching = true
      armPolling()
    },
    close() {
      watching = false
      watcher?.close()
      clearInterval(timer)
      clearTimeout(debounce)
    },
  }
}
