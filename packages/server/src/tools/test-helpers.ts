/**
 * For the adapter tests: run a tool's action the way the tool route does (schema, then the
 * action's own checks, then `execute` with a real upstream client and real keep-alive pools)
 * against a real local server, without a gateway around it.
 */
import { type AddressInfo, connect, createServer, type Socket } from 'node:net'
import { schemaProblems } from '../config/load.ts'
import { createDispatcherCache } from '../net/safe-fetch.ts'
import { abortFromSignal } from './call-abort.ts'
import type { LlmUsage, ParamProblem, ToolDefinition, ToolResult, ToolSettings } from './types.ts'
import { createUpstreamClient } from './upstream-client.ts'

export interface ActionRunner {
  /** Every problem the route would report for these parameters (schema first, then the action's). */
  problems(tool: ToolDefinition, action: string, params: unknown): ParamProblem[]
  /** Execute an action whose parameters are valid; throws what the route would answer. */
  run(
    tool: ToolDefinition,
    action: string,
    params: unknown,
    options?: {
      settings?: Partial<ToolSettings>
      secret?: string
      signal?: AbortSignal
      allowRedirectHost?: (host: string) => boolean
    },
  ): Promise<ToolResult>
  /** Usage reported by streams through `reportUsage`, in order. */
  readonly usage: LlmUsage[]
  close(): Promise<void>
}

/** A runner with its own upstream client and dispatcher cache; `close()` them after the tests. */
export function createActionRunner(options: { maxAnswerBytes?: number } = {}): ActionRunner {
  const client = createUpstreamClient(options)
  const dispatchers = createDispatcherCache()
  const usage: LlmUsage[] = []
  const actionOf = (tool: ToolDefinition, name: string) => {
    const action = tool.actions[name]
    if (action === undefined) throw new Error(`${tool.name} has no action ${name}`)
    return action
  }
  return {
    usage,
    problems(tool, name, params) {
      const action = actionOf(tool, name)
      const found = schemaProblems(action.params, params)
      return found.length > 0 ? found : (action.validate?.(params) ?? [])
    },
    run(tool, name, params, runOptions = {}) {
      const action = actionOf(tool, name)
      const settings: ToolSettings = {
        url: tool.defaultUrl,
        secret: tool.defaultSecret,
        timeoutMs: 5_000,
        options: {},
        ...runOptions.settings,
      }
      const signal = runOptions.signal ?? new AbortController().signal
      const trace = { 'x-correlation-id': 'test-correlation' }
      const abort = abortFromSignal(signal)
      return action.execute({
        params,
        secret: runOptions.secret,
        settings,
        signal,
        traceHeaders: trace,
        upstream: (request) => client.call(settings, request, abort, trace),
        upstreamStream: (request) => client.open(settings, request, abort, trace),
        dispatchers,
        reportUsage: (u) => usage.push(u),
        ...(runOptions.allowRedirectHost === undefined
          ? {}
          : { allowRedirectHost: runOptions.allowRedirectHost }),
      })
    },
    async close() {
      await Promise.all([client.close(), dispatchers.close()])
    },
  }
}

/** A TCP relay in front of a server that counts the connections made through it and their ends. */
export interface ConnectionWatch {
  /** `http://127.0.0.1:port`: point the client here instead of at the server. */
  readonly url: string
  readonly opened: number
  /** Connections to the server that have closed (the server saw them end). */
  readonly closed: number
  /** Resolves once `count` connections to the server have closed. */
  closedAtLeast(count: number, timeoutMs?: number): Promise<void>
  close(): Promise<void>
}

/** Relay connections to `target` (an http URL), watching them open and close. */
export async function watchConnections(target: string): Promise<ConnectionWatch> {
  const { hostname, port } = new URL(target)
  let opened = 0
  let closed = 0
  const waiters = new Set<() => void>()
  const sockets = new Set<Socket>()
  const server = createServer((client) => {
    opened++
    const upstream = connect(Number(port), hostname)
    for (const s of [client, upstream]) {
      sockets.add(s)
      s.on('error', () => s.destroy())
      s.on('close', () => sockets.delete(s))
    }
    client.pipe(upstream).pipe(client)
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => {
      client.destroy()
      closed++
      for (const wake of waiters) wake()
    })
  })
  await new Promise<void>((ready) => server.listen(0, '127.0.0.1', ready))
  const address = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${address.port}`,
    get opened() {
      return opened
    },
    get closed() {
      return closed
    },
    closedAtLeast(count, timeoutMs = 5_000) {
      return new Promise<void>((done, fail) => {
        const check = (): void => {
          if (closed < count) return
          clearTimeout(timer)
          waiters.delete(check)
          done()
        }
        const timer = setTimeout(() => {
          waiters.delete(check)
          fail(new Error(`${closed} of ${count} connections closed after ${timeoutMs} ms`))
        }, timeoutMs)
        waiters.add(check)
        check()
      })
    },
    async close() {
      for (const s of sockets) s.destroy()
      await new Promise((done) => server.close(done))
    },
  }
}
