/**
 * The agent's client (DESIGN §5, §6): proves the agent's identity with its own key, then calls
 * tools through the gateway. Every tool call carries an `Idempotency-Key` (the same on each
 * retry), a token that is renewed before it expires, and a DPoP proof when the token is bound.
 */
import {
  ApprovalRequired,
  type ApprovalWaitOptions,
  AuthError,
  GatewayError,
  TimeoutError,
} from './errors.ts'
import { type AgentKey, importAgentKey, type PrivateKeyInput, readAgentKeyFile } from './keys.ts'
import type { RetryOptions } from './retry.ts'
import { type AccessToken, TokenSource } from './token-source.ts'
import { type Answer, type ExchangeOptions, sleep, Transport } from './transport.ts'
import type {
  CallOptions,
  ChatCompletion,
  ChatParams,
  Embeddings,
  EmbeddingsParams,
  GmailProfile,
  GmailSendParams,
  GmailSent,
  HttpFetchParams,
  HttpFetchPostParams,
  HttpFetchResult,
  SerpApiResults,
  SerpApiSearchParams,
  ToolInfo,
  ToolResult,
} from './types.ts'

export interface GatewayClientOptions {
  /** The gateway's public URL, e.g. `http://127.0.0.1:8080`. */
  baseUrl: string
  /** The agent's id; optional with a key file from `4runr agent create`, which names it. */
  agentId?: string
  /** The agent's Ed25519 private key: a JWK object, a PKCS#8 PEM, or a key file's JSON text. */
  privateKey?: PrivateKeyInput
  /** Path of a key file (`4runr agent create` JSON, a JWK, or a PEM); Node only. */
  keyFile?: string
  /** The key id, when the key itself does not name it (the gateway then tries each key of the agent). */
  kid?: string
  /** Space-separated `tool:action` / `channel:NAME` scopes, or a list of them. */
  scope?: string | readonly string[]
  /** The token's declared purpose, which policies can require. */
  intent?: string
  /** Requested token lifetime in seconds (the gateway's `tokens.ttl` when absent). */
  ttl?: number
  /** Bind tokens to the agent's key (RFC 9449 DPoP). Agents that must bind are detected anyway. */
  dpop?: boolean
  /** The issuer the key belongs to; a gateway naming another is refused (a key file pins it too). */
  issuer?: string
  retry?: RetryOptions | false
  /** Default deadline of a call in ms, retries included (default 60000). */
  timeoutMs?: number
  fetch?: typeof fetch
}

const toolPath = (tool: string, action: string) =>
  `/v1/tools/${encodeURIComponent(tool)}/${encodeURIComponent(action)}`

interface Parked {
  approvalId?: unknown
  expiresAt?: unknown
  policy?: unknown
  rule?: unknown
}

export class GatewayClient {
  private readonly transport: Transport
  private readonly tokens: TokenSource
  private keyPromise: Promise<AgentKey> | undefined
  private readonly loadKey: () => Promise<AgentKey>

  /** Any tool by name; `list()` shows what this token may call. */
  readonly tools: {
    call<T = unknown>(
      tool: string,
      action: string,
      params?: object,
      options?: CallOptions,
    ): Promise<ToolResult<T>>
    list(options?: CallOptions): Promise<ToolInfo[]>
  }
  readonly serpapi: {
    search(params: SerpApiSearchParams, options?: CallOptions): Promise<ToolResult<SerpApiResults>>
  }
  readonly httpFetch: {
    get(target: string | HttpFetchParams, options?: CallOptions): Promise<ToolResult<HttpFetchResult>>
    head(target: string | HttpFetchParams, options?: CallOptions): Promise<ToolResult<HttpFetchResult>>
    post(params: HttpFetchPostParams, options?: CallOptions): Promise<ToolResult<HttpFetchResult>>
  }
  readonly openai: {
    chat(params: ChatParams, options?: CallOptions): Promise<ToolResult<ChatCompletion>>
    embeddings(params: EmbeddingsParams, options?: CallOptions): Promise<ToolResult<Embeddings>>
  }
  readonly gmail: {
    send(params: GmailSendParams, options?: CallOptions): Promise<ToolResult<GmailSent>>
    profile(options?: CallOptions): Promise<ToolResult<GmailProfile>>
  }

  constructor(options: GatewayClientOptions) {
    if (typeof options !== 'object' || options === null) throw new TypeError('GatewayClient needs options')
    this.transport = new Transport(options)
    const { privateKey, keyFile, kid } = options
    if ((privateKey === undefined) === (keyFile === undefined)) {
      throw new TypeError('give exactly one of privateKey and keyFile')
    }
    if (options.ttl !== undefined && !(Number.isInteger(options.ttl) && options.ttl > 0)) {
      throw new TypeError('ttl must be a whole number of seconds')
    }
    this.loadKey = () => {
      this.keyPromise ??= (keyFile === undefined ? importAgentKey(privateKey!) : readAgentKeyFile(keyFile))
        .then((key) => (kid === undefined ? key : { ...key, kid }))
        .catch((err: unknown) => {
          this.keyPromise = undefined
          throw err
        })
      return this.keyPromise
    }
    const scope = typeof options.scope === 'string' ? options.scope : options.scope?.join(' ')
    this.tokens = new TokenSource(this.transport, this.loadKey, {
      agentId: options.agentId,
      issuer: options.issuer,
      scope,
      intent: options.intent,
      ttl: options.ttl,
      dpop: options.dpop,
    })

    const call = this.call.bind(this)
    const fetchParams = (target: string | HttpFetchParams) =>
      typeof target === 'string' ? { url: target } : target
    this.tools = { call, list: (opts) => this.listTools(opts) }
    this.serpapi = { search: (params, opts) => call('serpapi', 'search', params, opts) }
    this.httpFetch = {
      get: (target, opts) => call('http_fetch', 'get', fetchParams(target), opts),
      head: (target, opts) => call('http_fetch', 'head', fetchParams(target), opts),
      post: (params, opts) => call('http_fetch', 'post', params, opts),
    }
    this.openai = {
      chat: (params, opts) => call('openai', 'chat', params, opts),
      embeddings: (params, opts) => call('openai', 'embeddings', params, opts),
    }
    this.gmail = {
      send: (params, opts) => call('gmail', 'send', params, opts),
      profile: (opts) => call('gmail', 'profile', {}, opts),
    }
  }

  /**
   * The current access token (exchanged or renewed as needed), e.g. as the API key of an OpenAI
   * client pointed at `/v1/openai`. A key-bound token also needs a DPoP proof per request.
   */
  async accessToken(): Promise<string> {
    return (await this.tokens.get()).value
  }

  /** `tools.call`: resolves with `{data, metadata}`, rejects with a typed error. */
  private async call<T = unknown>(
    tool: string,
    action: string,
    params: object = {},
    options: CallOptions = {},
  ): Promise<ToolResult<T>> {
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'idempotency-key': options.idempotencyKey ?? crypto.randomUUID(),
    }
    if (options.correlationId !== undefined) headers['x-correlation-id'] = options.correlationId
    if (options.approvalId !== undefined) headers['x-approval-id'] = options.approvalId
    const answer = await this.agentRequest(
      'POST',
      toolPath(tool, action),
      headers,
      JSON.stringify(params),
      true,
      options,
    )
    if (answer.status === 202) throw this.parked(answer, tool, action, params, options)
    const body = answer.body as ToolResult<T> | undefined
    if (typeof body !== 'object' || body === null || !('data' in body) || typeof body.metadata !== 'object') {
      throw new GatewayError({
        code: 'invalid_response',
        message: `The answer to ${tool}.${action} has no {data, metadata}.`,
        status: answer.status,
        requestId: answer.headers.get('x-request-id') ?? undefined,
      })
    }
    return body
  }

  private async listTools(options: CallOptions = {}): Promise<ToolInfo[]> {
    const answer = await this.agentRequest('GET', '/v1/tools', {}, undefined, true, options)
    const tools = (answer.body as { tools?: unknown } | undefined)?.tools
    if (!Array.isArray(tools)) {
      throw new GatewayError({
        code: 'invalid_response',
        message: 'GET /v1/tools has no tools list.',
        status: answer.status,
      })
    }
    return tools as ToolInfo[]
  }

  /** A request as the agent; a token the gateway calls expired is replaced once and the request repeated. */
  private async agentRequest(
    method: string,
    path: string,
    headers: Record<string, string>,
    body: string | undefined,
    retryable: boolean,
    options: ExchangeOptions,
  ): Promise<Answer> {
    for (let renewed = false; ; renewed = true) {
      let used: AccessToken | undefined
      try {
        return await this.transport.send(
          {
            method,
            path,
            headers,
            body,
            retryable,
            prepare: async () => {
              const auth = await this.tokens.authorize(method, path)
              used = auth.token
              return { headers: auth.headers }
            },
          },
          options,
        )
      } catch (err) {
        if (renewed || !(err instanceof AuthError) || err.code !== 'token_expired' || used === undefined)
          throw err
        this.tokens.invalidate(used.value)
      }
    }
  }

  private parked(
    answer: Answer,
    tool: string,
    action: string,
    params: object,
    options: CallOptions,
  ): GatewayError {
    const body = (answer.body ?? {}) as Parked
    if (typeof body.approvalId !== 'string') {
      return new GatewayError({
        code: 'invalid_response',
        message: `The gateway parked ${tool}.${action} but named no approval.`,
        status: answer.status,
      })
    }
    const approvalId = body.approvalId
    const expiresAt = typeof body.expiresAt === 'string' ? body.expiresAt : undefined
    return new ApprovalRequired(
      {
        approvalId,
        expiresAt,
        message: `${tool}.${action} waits for an operator's approval (${approvalId}).`,
        requestId: answer.headers.get('x-request-id') ?? undefined,
        details: { policy: body.policy, rule: body.rule },
      },
      (wait) =>
        this.waitForApproval(approvalId, expiresAt, wait, () =>
          // A new idempotency key: the replay is a different request from the one that parked.
          this.call(tool, action, params, { ...options, idempotencyKey: undefined, approvalId }),
        ),
    )
  }

  private async waitForApproval(
    approvalId: string,
    expiresAt: string | undefined,
    options: ApprovalWaitOptions,
    replay: () => Promise<ToolResult>,
  ): Promise<ToolResult> {
    const intervalMs = options.intervalMs ?? 1000
    const until =
      options.timeoutMs !== undefined
        ? Date.now() + options.timeoutMs
        : expiresAt !== undefined
          ? Date.parse(expiresAt) + 1000
          : Date.now() + 5 * 60_000
    const path = `/v1/approvals/${encodeURIComponent(approvalId)}`
    for (;;) {
      const answer = await this.agentRequest('GET', path, {}, undefined, true, { signal: options.signal })
      // Decided either way: the replay runs an approved call, or carries the rejection back typed.
      if ((answer.body as { status?: unknown } | undefined)?.status !== 'pending') return replay()
      if (Date.now() + intervalMs > until) {
        throw new TimeoutError({
          code: 'approval_timeout',
          message: `Approval ${approvalId} is still pending.`,
          status: 0,
          details: { approvalId },
        })
      }
      await sleep(intervalMs, options.signal)
    }
  }
}
