/**
 * The config source: loads, validates and compiles the file, then keeps it current. The file is
 * re-read when it changes on disk and every `refreshMs`; a new version that fails to load,
 * validate or compile is refused and the running one stays (DESIGN §17). Swapping is one
 * reference assignment: requests already in flight keep the version they started with.
 */
import { type FSWatcher, watch } from 'node:fs'
import { basename, dirname, resolve } from 'node:path'
import { type CompiledConfig, compileConfig } from './compile.ts'
import { ConfigError, loadConfigFile } from './load.ts'
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

async function loadAndCompile(
  file: string,
  options: ConfigSourceOptions,
): Promise<{ compiled: CompiledConfig; text: string }> {
  const { config, text } = await loadConfigFile(file, { env: options.env })
  await options.prepare?.(config)
  return { compiled: compileConfig(config, text, options.compileOptions), text }
}

/** Load `file` for the first time; throws ConfigError when it is invalid. */
export async function openConfigSource(path: string, options: ConfigSourceOptions): Promise<ConfigSource> {
  const file = resolve(path)
  let { compiled: current, text: currentText } = await loadAndCompile(file, options)
  let watcher: FSWatcher | undefined
  let timer: NodeJS.Timeout | undefined
  let debounce: NodeJS.Timeout | undefined
  let running: Promise<ReloadResult> | undefined

  async function reloadOnce(): Promise<ReloadResult> {
    try {
      const next = await loadAndCompile(file, options)
      if (next.text === currentText) return { ok: true, changed: false, version: current.version }
      // An empty document is a valid config (every key has a default), so a reload that read the
      // file between an editor's truncate and its write swapped in a gateway with no channels.
      // An empty file is refused on reload; the write that follows triggers the next one.
      if (next.text.trim() === '') {
        throw new ConfigError([
          { path: '(file)', message: 'the file is empty (a write in progress?); the running version stays' },
        ])
      }
      current = next.compiled
      currentText = next.text
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
      options.onReload?.(result, current)
      return result
    }
  }

  // Reloads never overlap: a change during a reload is picked up by the next one.
  const reload = (): Promise<ReloadResult> => {
    running ??= reloadOnce().finally(() => {
      running = undefined
    })
    return running
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
      const every = current.gateway.refreshMs
      if (every > 0) {
        timer = setInterval(() => void reload(), every)
        timer.unref()
      }
    },
    close() {
      watcher?.close()
      clearInterval(timer)
      clearTimeout(debounce)
    },
  }
}
