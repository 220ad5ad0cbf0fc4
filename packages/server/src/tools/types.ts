/**
 * The tool framework (DESIGN §6): a tool is an adapter with typed actions. Each action declares a
 * TypeBox schema for its parameters (validated before anything else happens), whether repeating it
 * is harmless, and how to run it against the upstream with the secret the agent never sees.
 */
import type { TSchema } from 'typebox'
import type { DispatcherCache } from '../net/safe-fetch.ts'

/** One tool's settings from the config file's `tools` block, defaults applied. */
export interface ToolSettings {
  /** The upstream origin and base path, no trailing slash. */
  url: string
  /** The secret store entry that holds the credential; undefined for tools that need none. */
  secret: string | undefined
  timeoutMs: number
  /** Tool-specific settings (http_fetch: maxBytes, maxRedirects, allowNetworks). */
  options: Readonly<Record<string, unknown>>
}

/** A request to the tool's upstream, relative to its `url`. */
export interface UpstreamRequest {
  method: 'GET' | 'POST' | 'HEAD'
  /** Path and query below the tool's url, starting with `/`. */
  path: string
  headers?: Record<string, string>
  body?: string
}

export interface UpstreamAnswer {
  status: number
  headers: Record<string, string | string[] | undefined>
  /** Parsed JSON when the answer said it was JSON and parsed; else undefined. */
  json: unknown
  text: string
}

/**
 * An upstream answer whose body is read as it arrives (server-sent events). The reader must
 * consume `body` to its end or `return()` its iterator: either frees the connection.
 */
export interface UpstreamStream {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: AsyncIterable<Uint8Array>
}

export interface ToolCallContext<P> {
  params: P
  /** The resolved credential (the agent's override, else the tool-wide value). */
  secret: string | undefined
  settings: ToolSettings
  /** Aborted when the client goes away (timeouts are the upstream client's, from `timeoutMs`). */
  signal: AbortSignal
  /** Calls the tool's upstream through its keep-alive pool. */
  upstream(request: UpstreamRequest): Promise<UpstreamAnswer>
  /** Calls the tool's upstream and hands over the body unread, to relay it as it arrives. */
  upstreamStream(request: UpstreamRequest): Promise<UpstreamStream>
  /**
   * Keep-alive pools for fetches to arbitrary URLs (http_fetch), keyed by their SSRF settings;
   * owned by the tool service, which closes them on shutdown.
   */
  dispatchers: DispatcherCache
  /** Headers to pass upstream for tracing: traceparent, x-correlation-id. */
  traceHeaders: Record<string, string>
  /** Count LLM usage learnt while streaming (the final usage chunk) against `quota.tokens`. */
  reportUsage(usage: LlmUsage): void
  /**
   * For calls that follow redirects (http_fetch): may each hop's host be reached? The policy's
   * domain lists judged again, so an allowed host cannot redirect the call somewhere denied.
   */
  allowRedirectHost?: (host: string) => boolean
}

export interface LlmUsage {
  promptTokens: number
  completionTokens: number
}

export type ToolResult =
  | {
      data: unknown
      upstreamStatus: number
      /** LLM usage, counted against `quota.tokens`. */
      usage?: LlmUsage
    }
  | {
      /** Passed to the agent as it arrives (server-sent events), with these headers. */
      stream: AsyncIterable<Uint8Array>
      headers: Record<string, string>
      upstreamStatus: number
    }

/** One problem with a call's parameters, by path (`to[1]`, `headers.host`). */
export interface ParamProblem {
  path: string
  message: string
}

export interface ToolAction<P = unknown> {
  description: string
  params: TSchema
  /** Safe to repeat (retries, caching); false for actions with effects, like sending mail. */
  idempotent: boolean
  /**
   * Problems the schema cannot express (an address that is not one, a header the gateway sets),
   * found after the schema passed and before authorization; empty when there are none.
   */
  validate?(params: P): ParamProblem[]
  /** Whether a call with these parameters answers with a stream (not every route can relay one). */
  streams?(params: P): boolean
  execute(call: ToolCallContext<P>): Promise<ToolResult>
}

export interface ToolDefinition {
  name: string
  description: string
  /** Where the real API lives; the config's `tools.NAME.url` overrides it. */
  defaultUrl: string
  /** The secret name used when the config names none; undefined: the tool needs no credential. */
  defaultSecret: string | undefined
  actions: Readonly<Record<string, ToolAction>>
}
