/**
 * The wire shapes of tool calls (DESIGN §6, §18) as TypeScript types. Results keep an index
 * signature: upstream APIs add fields, and the SDK passes them through untouched.
 */

/** What the gateway reports about a tool call beside its data. */
export interface ToolMetadata {
  tool: string
  action: string
  correlationId: string
  cached: boolean
  attempts: number
  upstreamStatus: number
  durationMs: number
}

/** `POST /v1/tools/{tool}/{action}` answers `{data, metadata}`. */
export interface ToolResult<T = unknown> {
  data: T
  metadata: ToolMetadata
}

/** Per-call options of every tool call. */
export interface CallOptions {
  /**
   * Sent as `Idempotency-Key`, the same on every retry. The SDK generates one when absent, so a
   * retried call can be recognised by the gateway as the same call.
   */
  idempotencyKey?: string
  /** Sent as `X-Correlation-Id`; the gateway echoes it in `metadata.correlationId`. */
  correlationId?: string
  signal?: AbortSignal
  /** Deadline for the whole call, retries and backoff included (default: the client's `timeoutMs`). */
  timeoutMs?: number
  /** `false` makes exactly one attempt. */
  retry?: boolean
  /** Replay a parked call once its approval is granted (`ApprovalRequired.wait()` does this for you). */
  approvalId?: string
}

/** One action of a tool, as `GET /v1/tools` lists it for the token's scope. */
export interface ToolActionInfo {
  name: string
  description: string
  /** Whether repeating the call is harmless. */
  idempotent: boolean
  /** JSON Schema of the parameters. */
  params: Record<string, unknown>
}

export interface ToolInfo {
  name: string
  description: string
  actions: ToolActionInfo[]
}

export interface SerpApiSearchParams {
  q: string
  num?: number
  engine?: string
  location?: string
}

export interface SerpApiResult {
  position: number
  title: string
  link: string
  snippet?: string
  [field: string]: unknown
}

export interface SerpApiResults {
  organic_results?: SerpApiResult[]
  search_metadata?: Record<string, unknown>
  [field: string]: unknown
}

export interface HttpFetchParams {
  url: string
  headers?: Record<string, string>
}

export interface HttpFetchPostParams extends HttpFetchParams {
  /** A string is sent as is; anything else as JSON. */
  body?: unknown
}

export interface HttpFetchResult {
  status: number
  /** The URL that answered, after redirects. */
  url: string
  redirects: number
  headers: Record<string, string>
  bodyType: 'json' | 'text' | 'base64' | 'none'
  body: unknown
}

export interface ChatMessage {
  role: string
  content?: string | Array<Record<string, unknown>> | null
  [field: string]: unknown
}

/** The OpenAI chat completion body; fields not listed pass through. Streaming is not supported here. */
export interface ChatParams {
  model: string
  messages: ChatMessage[]
  [field: string]: unknown
}

export interface ChatCompletion {
  id: string
  model: string
  choices: Array<{ index: number; message: ChatMessage; finish_reason: string | null }>
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number }
  [field: string]: unknown
}

export interface EmbeddingsParams {
  model: string
  input: string | string[] | number[] | number[][]
  [field: string]: unknown
}

export interface Embeddings {
  data: Array<{ index: number; embedding: number[] | string; object?: string }>
  model: string
  usage?: { prompt_tokens: number; total_tokens: number }
  [field: string]: unknown
}

export interface GmailSendParams {
  to: string | string[]
  subject: string
  text: string
  cc?: string | string[]
  bcc?: string | string[]
}

export interface GmailSent {
  id: string
  threadId: string
  labelIds?: string[]
  [field: string]: unknown
}

export interface GmailProfile {
  emailAddress: string
  messagesTotal?: number
  threadsTotal?: number
  historyId?: string
  [field: string]: unknown
}
