/**
 * The configuration schema: the single source of truth for the config file's shape, its
 * TypeScript types, its validation errors and the generated reference (docs/reference/config.md).
 *
 * Every object is closed (`additionalProperties: false`) so a misspelt key is an error, not a
 * silently ignored setting. Every field carries a `description`; a conformance test checks that.
 */
import Type, { type Static } from 'typebox'

const closed = { additionalProperties: false } as const

/** `500`, `"500ms"`, `"4s"`, `"15m"`, `"1h"`, `"7d"`: normalised to milliseconds by compile. */
export const Duration = Type.Union(
  [Type.Integer({ minimum: 0 }), Type.String({ pattern: '^[0-9]+(ms|s|m|h|d)$' })],
  { description: 'milliseconds as an integer, or a string with a unit: 500ms, 4s, 15m, 1h, 7d' },
)

const Port = Type.Integer({ minimum: 0, maximum: 65535, description: 'TCP port; 0 picks a free one' })
const Host = Type.String({ minLength: 1, description: 'interface address to bind' })
const HttpUrl = Type.String({ pattern: '^https?://[^\\s]+$', description: 'http:// or https:// URL' })
const HeaderName = Type.String({ pattern: "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", description: 'HTTP header name' })
const Method = Type.Union(
  [
    Type.Literal('GET'),
    Type.Literal('HEAD'),
    Type.Literal('POST'),
    Type.Literal('PUT'),
    Type.Literal('PATCH'),
    Type.Literal('DELETE'),
    Type.Literal('OPTIONS'),
  ],
  { description: 'HTTP method' },
)

const Listen = Type.Object(
  {
    host: Type.Optional(Host),
    port: Type.Optional(Port),
  },
  { ...closed, description: 'public listener (default 0.0.0.0:8080)' },
)

const Gateway = Type.Object(
  {
    issuer: Type.Optional(
      Type.String({
        description:
          'the gateway issuer URL, used as token `iss`/`aud`; same on every instance (default http://HOST:PORT of the public listener)',
      }),
    ),
    listen: Type.Optional(Listen),
    admin: Type.Optional(
      Type.Object(
        {
          host: Type.Optional(Host),
          port: Type.Optional(Port),
          keys: Type.Optional(
            Type.Array(Type.String({ minLength: 16 }), {
              description:
                'admin API keys (at least 16 characters); RUNR_ADMIN_KEY is always one more. Kept only as hashes in memory.',
            }),
          ),
        },
        { ...closed, description: 'admin listener (default 127.0.0.1:8081)' },
      ),
    ),
    requestId: Type.Optional(
      Type.Object(
        {
          header: Type.Optional(HeaderName),
          on: Type.Optional(
            Type.Union([Type.Literal('none'), Type.Literal('always'), Type.Literal('error')], {
              description:
                'none: no request id header; always: echo/generate on every response; error: only on errors',
            }),
          ),
        },
        { ...closed, description: 'request id header (default X-Request-Id, on: always)' },
      ),
    ),
    refreshMs: Type.Optional(
      Type.Integer({
        minimum: 0,
        description: 'also re-read the config file this often, in ms (default 15000; 0: only on file change)',
      }),
    ),
    bodyLimitBytes: Type.Optional(
      Type.Integer({
        minimum: 1,
        description: 'largest body the gateway parses itself: admin API, tool calls (default 1048576)',
      }),
    ),
    maxHeaderBytes: Type.Optional(
      Type.Integer({
        minimum: 1024,
        maximum: 1048576,
        description:
          'largest request head, request line and headers; larger is refused with 431 (default 16384)',
      }),
    ),
    logLevel: Type.Optional(
      Type.Union(
        ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].map((l) => Type.Literal(l)),
        { description: 'log level; RUNR_LOG_LEVEL overrides (default info)' },
      ),
    ),
    shutdownTimeoutMs: Type.Optional(
      Type.Integer({
        minimum: 0,
        description: 'how long a graceful shutdown waits for in-flight requests, in ms (default 10000)',
      }),
    ),
    trustProxy: Type.Optional(
      Type.Boolean({
        description:
          'trust X-Forwarded-For/-Proto/-Host from the client, only behind a proxy you run (default false)',
      }),
    ),
    trustedProxies: Type.Optional(
      Type.Array(Type.String({ description: 'an address or CIDR block, e.g. 10.0.0.0/8' }), {
        description:
          'proxies whose X-Forwarded-For names the client for `by: ip` rate limits; from any other peer the header is ignored (default none)',
      }),
    ),
  },
  { ...closed, description: 'listeners, ids, limits and reload' },
)

const Store = Type.Union(
  [
    Type.Object(
      {
        kind: Type.Literal('sqlite', { description: 'sqlite' }),
        path: Type.Optional(Type.String({ description: 'database file' })),
      },
      { ...closed, description: 'embedded SQLite (default ./data/4runr.db)' },
    ),
    Type.Object(
      {
        kind: Type.Literal('postgres', { description: 'postgres' }),
        url: Type.String({ pattern: '^postgres(ql)?://', description: 'postgres:// connection URL' }),
        schema: Type.Optional(
          Type.String({
            pattern: '^[a-z_][a-z0-9_]{0,62}$',
            description: 'Postgres schema for the tables (default: the connection default, usually public)',
          }),
        ),
      },
      { ...closed, description: 'PostgreSQL for a cluster' },
    ),
  ],
  { description: 'where agents, policies, secrets and the audit ledger live' },
)

const Redis = Type.Object(
  {
    url: Type.String({ pattern: '^rediss?://', description: 'redis:// URL' }),
    prefix: Type.Optional(Type.String({ description: 'key prefix that namespaces this gateway cluster' })),
  },
  { ...closed, description: 'optional shared state: rate limits, revocations, cache' },
)

const Retry = Type.Object(
  {
    attempts: Type.Integer({ minimum: 0, maximum: 10, description: 'retries after the first try' }),
    on: Type.Optional(
      Type.Array(Type.Integer({ minimum: 100, maximum: 599, description: 'an HTTP status' }), {
        description: 'statuses retried for idempotent calls (default [502, 503, 504])',
      }),
    ),
    backoff: Type.Optional(
      Type.Union(Duration.anyOf, {
        description: 'base of the exponential backoff with full jitter (default 100ms)',
      }),
    ),
    maxBackoff: Type.Optional(
      Type.Union(Duration.anyOf, { description: 'longest wait between tries (default 2s)' }),
    ),
    maxRetryAfter: Type.Optional(
      Type.Union(Duration.anyOf, {
        description: 'longest upstream Retry-After waited for; a longer one ends the retries (default 10s)',
      }),
    ),
    budget: Type.Optional(
      Type.Number({
        minimum: 0,
        maximum: 1,
        description: 'retries may add at most this fraction of the calls (default 0.2)',
      }),
    ),
  },
  {
    ...closed,
    description:
      'retry policy: idempotent calls on network errors, timeouts and the listed statuses; any call when the connection failed',
  },
)

const Breaker = Type.Object(
  {
    failures: Type.Optional(
      Type.Integer({ minimum: 1, description: 'consecutive failures that open the breaker' }),
    ),
    rate: Type.Optional(
      Type.Number({
        exclusiveMinimum: 0,
        maximum: 1,
        description: 'failure rate over the window that opens the breaker (instead of failures)',
      }),
    ),
    window: Type.Optional(
      Type.Union(Duration.anyOf, { description: 'rolling window of the failure rate (default 30s)' }),
    ),
    minCalls: Type.Optional(
      Type.Integer({ minimum: 1, description: 'calls in the window before the rate counts (default 20)' }),
    ),
    openMs: Type.Union(Duration.anyOf, { description: 'how long the breaker stays open' }),
    halfOpenProbes: Type.Optional(
      Type.Integer({
        minimum: 1,
        description: 'trial calls let through when half-open; that many successes close it (default 1)',
      }),
    ),
  },
  {
    ...closed,
    description:
      'circuit breaker: network errors, timeouts and 5xx answers are failures; open answers 503 circuit_open',
  },
)

const Bulkhead = Type.Object(
  {
    maxConcurrent: Type.Integer({ minimum: 1, description: 'upstream calls in flight at most' }),
    maxQueue: Type.Optional(
      Type.Integer({ minimum: 0, description: 'calls that may wait for a slot (default 0)' }),
    ),
    queueTimeout: Type.Optional(
      Type.Union(Duration.anyOf, { description: 'how long a call waits for a slot (default 1s)' }),
    ),
  },
  { ...closed, description: 'bulkhead: more calls than it holds get 503 bulkhead_full' },
)

const TotalTimeout = Type.Integer({
  minimum: 1,
  description: 'deadline for the whole call, retries included, in ms (default none); 504 after it',
})

const HttpSystem = Type.Object(
  {
    kind: Type.Literal('http', { description: 'http' }),
    url: HttpUrl,
    timeoutMs: Type.Optional(
      Type.Integer({
        minimum: 1,
        description: 'upstream headers and body idle timeout (default 30000); 504 after it',
      }),
    ),
    connectTimeoutMs: Type.Optional(
      Type.Integer({ minimum: 1, description: 'TCP/TLS connect timeout (default 5000)' }),
    ),
    connections: Type.Optional(
      Type.Integer({ minimum: 1, description: 'max keep-alive connections to this system (default 128)' }),
    ),
    keepAliveMs: Type.Optional(
      Type.Integer({ minimum: 1, description: 'idle keep-alive timeout (default 4000)' }),
    ),
    headersTimeoutMs: Type.Optional(
      Type.Integer({
        minimum: 1,
        description: 'time to the response headers (default timeoutMs); 504 after it',
      }),
    ),
    totalTimeoutMs: Type.Optional(TotalTimeout),
    retry: Type.Optional(Retry),
    breaker: Type.Optional(Breaker),
    bulkhead: Type.Optional(Bulkhead),
  },
  { ...closed, description: 'an HTTP backend reached through a keep-alive pool' },
)

const NatsSystem = Type.Object(
  {
    kind: Type.Literal('nats', { description: 'nats' }),
    url: Type.String({ pattern: '^nats://', description: 'nats:// URL' }),
  },
  { ...closed, description: 'a NATS backend (request-reply and publish)' },
)

const DemoSystem = Type.Object(
  {
    kind: Type.Literal('demo', { description: 'demo' }),
  },
  {
    ...closed,
    description: 'the built-in demo upstream: an echo server the gateway starts on a free loopback port',
  },
)

const System = Type.Union([HttpSystem, NatsSystem, DemoSystem], { description: 'a backend system' })

const Roles = Type.Array(Type.String({ minLength: 1 }), { description: 'roles, any one of which is enough' })

const StaleIfError = Type.Union(Duration.anyOf, {
  description: 'after the ttl, how long an entry may still answer when the upstream fails (default 0)',
})

const RouteCache = Type.Object(
  {
    ttl: Type.Union(Duration.anyOf, { description: 'how long an answer is served from the cache' }),
    shared: Type.Optional(
      Type.Boolean({ description: 'one entry for every caller (default false: one per principal)' }),
    ),
    staleIfError: Type.Optional(StaleIfError),
  },
  {
    ...closed,
    description:
      'cache GET answers of this path (2xx only, keyed by path, query and Accept); X-Cache says HIT/MISS/STALE',
  },
)

const PathRule = Type.Object(
  {
    path: Type.String({
      pattern: '^(\\*|/.*)$',
      description:
        '`*`, an exact path `/a/b`, or a prefix `/a/*` (matches /a and below), relative to the channel',
    }),
    public: Type.Optional(Type.Boolean({ description: 'no authentication needed' })),
    disabled: Type.Optional(Type.Boolean({ description: 'answer 404 as if the path did not exist' })),
    audit: Type.Optional(Type.Boolean({ description: 'record matching calls in the audit ledger' })),
    logging: Type.Optional(Type.Boolean({ description: 'log matching calls (default true)' })),
    cache: Type.Optional(RouteCache),
    methods: Type.Optional(
      Type.Union([Type.Array(Method), Type.Partial(Type.Record(Method, Roles), closed)], {
        description:
          'allowed methods (405 with Allow otherwise), or methods mapped to the roles they require',
      }),
    ),
  },
  { ...closed, description: 'a path rule; the first matching rule decides' },
)

const HeaderRules = Type.Object(
  {
    set: Type.Optional(
      Type.Record(HeaderName, Type.String(), {
        ...closed,
        description:
          'headers to set; `{{name}}` inserts a request value (requestId, correlationId, channel, ip, method, path, or a token claim)',
      }),
    ),
    remove: Type.Optional(Type.Array(HeaderName, { description: 'headers to drop' })),
  },
  { ...closed, description: 'header edits' },
)

const RateLimitBy = Type.Union(
  [
    Type.Literal('global'),
    Type.Literal('channel'),
    Type.Literal('path'),
    Type.Literal('agent'),
    Type.Literal('agent_tool'),
    Type.Literal('user'),
    Type.Literal('ip'),
  ],
  { description: 'what a limit is keyed by' },
)

const RateLimit = Type.Object(
  {
    by: RateLimitBy,
    limit: Type.Integer({ minimum: 1, description: 'requests per period' }),
    period: Duration,
    burst: Type.Optional(
      Type.Integer({ minimum: 1, description: 'requests admitted at once (default: limit)' }),
    ),
    tool: Type.Optional(Type.String({ description: 'for agent_tool: only this tool (default: each tool)' })),
    failOpen: Type.Optional(
      Type.Boolean({
        description: 'admit requests when the shared state (Redis) cannot be asked (default true)',
      }),
    ),
  },
  { ...closed, description: 'a GCRA rate limit: `limit` requests per `period`, up to `burst` at once' },
)

const RateLimits = Type.Union([RateLimit, Type.Array(RateLimit)], {
  description: 'one rate limit or a list; a request must pass every one',
})

const ToolCache = Type.Object(
  {
    actions: Type.Optional(
      Type.Record(Type.String(), Duration, {
        description: 'a ttl per idempotent action, overriding cacheTtl (0 turns an action off)',
      }),
    ),
    shared: Type.Optional(
      Type.Boolean({ description: 'one entry for every agent (default false: one per agent)' }),
    ),
    staleIfError: Type.Optional(StaleIfError),
  },
  { ...closed, description: 'response cache refinements for this tool' },
)

/** The rate-limit and cache keys every tool has. */
const ToolLimits = {
  cacheTtl: Type.Optional(
    Type.Union(Duration.anyOf, {
      description: "cache the answers of this tool's idempotent actions this long (default: no cache)",
    }),
  ),
  cache: Type.Optional(ToolCache),
  rateLimit: Type.Optional(RateLimits),
}

const Channel = Type.Object(
  {
    name: Type.String({
      pattern: '^[A-Za-z0-9_-]+$',
      description: 'channel name; also served at /api/request/{name}',
    }),
    prefix: Type.Optional(
      Type.String({ pattern: '^/[^?#]*$', description: 'public path prefix, e.g. /orders (optional)' }),
    ),
    system: Type.String({ description: 'the system (backend) this channel forwards to' }),
    stripPrefix: Type.Optional(
      Type.Boolean({ description: 'remove the prefix before forwarding (default true)' }),
    ),
    caseInsensitive: Type.Optional(
      Type.Boolean({ description: 'match prefix and rules ignoring case (default false, RFC 3986)' }),
    ),
    maxBodyBytes: Type.Optional(
      Type.Integer({ minimum: 0, description: 'largest request body streamed to the backend; 413 above it' }),
    ),
    timeoutMs: Type.Optional(Type.Integer({ minimum: 1, description: 'overrides the system timeout' })),
    rules: Type.Optional(Type.Array(PathRule, { description: 'ordered path rules (default: one `*` rule)' })),
    requestHeaders: Type.Optional(HeaderRules),
    responseHeaders: Type.Optional(HeaderRules),
    forwardAuthorization: Type.Optional(
      Type.Boolean({
        description:
          "forward the client's Authorization and DPoP headers to the system (default false: the gateway consumes them)",
      }),
    ),
    rateLimit: Type.Optional(RateLimits),
  },
  { ...closed, description: 'maps public paths to a system' },
)

const Secret = Type.String({
  description: 'name of the secret in the secret store that holds the credential',
})

const ToolTimeout = Type.Integer({
  minimum: 1,
  description: 'upstream headers and body idle timeout in ms (default 30000); 504 after it',
})

/** The resilience keys of a tool with its own upstream (http_fetch has none: every call names its URL). */
const ToolResilience = {
  totalTimeoutMs: Type.Optional(TotalTimeout),
  retry: Type.Optional(Retry),
  breaker: Type.Optional(Breaker),
  bulkhead: Type.Optional(Bulkhead),
}

const Tools = Type.Object(
  {
    demo: Type.Optional(
      Type.Boolean({
        description:
          "start local fake SerpAPI, OpenAI and Gmail upstreams and use them for the tools without a url; their demo credentials are stored as the tools' secrets when those are not set (examples/demo.yaml)",
      }),
    ),
    serpapi: Type.Optional(
      Type.Object(
        {
          url: Type.Optional(HttpUrl),
          secret: Type.Optional(Secret),
          timeoutMs: Type.Optional(ToolTimeout),
          ...ToolResilience,
          ...ToolLimits,
        },
        { ...closed, description: 'SerpAPI tool (issue: tools)' },
      ),
    ),
    openai: Type.Optional(
      Type.Object(
        {
          url: Type.Optional(HttpUrl),
          secret: Type.Optional(Secret),
          timeoutMs: Type.Optional(ToolTimeout),
          ...ToolResilience,
          ...ToolLimits,
        },
        { ...closed, description: 'OpenAI tool (issue: tools)' },
      ),
    ),
    gmail: Type.Optional(
      Type.Object(
        {
          url: Type.Optional(HttpUrl),
          secret: Type.Optional(Secret),
          timeoutMs: Type.Optional(ToolTimeout),
          ...ToolResilience,
          ...ToolLimits,
        },
        { ...closed, description: 'Gmail tool (issue: tools)' },
      ),
    ),
    http_fetch: Type.Optional(
      Type.Object(
        {
          maxBytes: Type.Optional(
            Type.Integer({
              minimum: 1,
              description: 'largest response body read, bytes (default 1 MiB); 502 above it',
            }),
          ),
          maxRedirects: Type.Optional(
            Type.Integer({ minimum: 0, description: 'redirects followed (default 3)' }),
          ),
          timeoutMs: Type.Optional(
            Type.Integer({
              minimum: 1,
              description:
                'deadline for the whole fetch, redirects and body included, in ms (default 30000); 504 after it',
            }),
          ),
          allowNetworks: Type.Optional(
            Type.Array(Type.String({ description: 'a CIDR block' }), {
              description: 'private networks that http_fetch may reach despite the SSRF guard',
            }),
          ),
          ...ToolLimits,
        },
        { ...closed, description: 'http_fetch tool (issue: tools)' },
      ),
    ),
  },
  { ...closed, description: 'tool upstreams (issue: tools)' },
)

const Labels = Type.Record(Type.String(), Type.String(), { description: 'labels as name: value' })
const Strings = (description: string) => Type.Array(Type.String(), { description })

const Jwk = Type.Object(
  {
    kty: Type.Literal('OKP', { description: 'key type: OKP' }),
    crv: Type.Literal('Ed25519', { description: 'curve: Ed25519' }),
    x: Type.String({ description: 'the public key, base64url' }),
    kid: Type.Optional(Type.String({ description: 'key id' })),
  },
  { ...closed, description: 'an Ed25519 public JWK' },
)

const Agent = Type.Object(
  {
    name: Type.String({ minLength: 1, description: 'unique agent name' }),
    labels: Type.Optional(Labels),
    roles: Type.Optional(Strings('roles the agent holds')),
    publicKeyJwk: Type.Optional(Jwk),
    requireDpop: Type.Optional(Type.Boolean({ description: 'refuse tokens not bound to the agent key' })),
  },
  { ...closed, description: 'an agent declared in config (issue: identity)' },
)

const PolicyName = Type.String({
  pattern: '^[A-Za-z0-9_.-]{1,64}$',
  description: 'unique policy name: letters, digits, _ . -',
})

const PolicyRule = Type.Object(
  {
    name: Type.Optional(
      Type.String({
        pattern: '^[A-Za-z0-9_.-]{1,64}$',
        description: 'rule name shown in decisions (default: allow[N] or deny[N])',
      }),
    ),
    tool: Type.Optional(Type.String({ minLength: 1, description: 'the tool this rule covers' })),
    actions: Type.Optional(Strings('the tool actions this rule covers (default: every action)')),
    channel: Type.Optional(Type.String({ minLength: 1, description: 'the channel this rule covers' })),
    paths: Type.Optional(
      Strings('channel-relative path patterns: "*", "/exact", "/prefix/*" (default: every path)'),
    ),
    methods: Type.Optional(Type.Array(Method, { description: 'channel methods (default: every method)' })),
    intents: Type.Optional(Strings('the token must carry one of these intents')),
    when: Type.Optional(
      Type.String({ minLength: 1, description: 'CEL condition over args, agent, token, request, now' }),
    ),
    domains: Type.Optional(
      Type.Object(
        {
          allow: Type.Optional(Strings('domains allowed (*.example.com matches subdomains)')),
          deny: Type.Optional(Strings('domains denied; a denied domain wins over an allowed one')),
        },
        { ...closed, description: 'domain guard for http_fetch URLs' },
      ),
    ),
    maxRequestBytes: Type.Optional(
      Type.Integer({ minimum: 0, description: 'largest request body accepted (allow rules)' }),
    ),
    timeWindows: Type.Optional(
      Type.Array(
        Type.Object(
          {
            days: Type.Optional(Strings('days of the week: mon tue wed thu fri sat sun')),
            from: Type.Optional(Type.String({ description: 'start time HH:MM (inclusive)' })),
            to: Type.Optional(Type.String({ description: 'end time HH:MM (exclusive)' })),
            tz: Type.Optional(Type.String({ description: 'IANA time zone (default UTC)' })),
          },
          { ...closed, description: 'a time window' },
        ),
        { description: 'when the rule applies: any window matches' },
      ),
    ),
    quota: Type.Optional(
      Type.Object(
        {
          limit: Type.Optional(Type.Integer({ minimum: 1, description: 'calls per period' })),
          period: Duration,
          tokens: Type.Optional(Type.Integer({ minimum: 1, description: 'LLM token budget per period' })),
        },
        { ...closed, description: 'a quota per agent per rule (allow rules)' },
      ),
    ),
    maxRepeats: Type.Optional(
      Type.Object(
        {
          count: Type.Integer({ minimum: 1, description: 'identical calls allowed per period' }),
          period: Duration,
        },
        { ...closed, description: 'loop guard: identical calls (same agent, target and arguments)' },
      ),
    ),
    responseFilter: Type.Optional(
      Type.Object(
        {
          redact: Type.Optional(
            Strings('detectors to redact: email, card, phone, api_key, jwt, or a name from patterns'),
          ),
          paths: Type.Optional(Strings('JSON paths to redact ($.a.b, $.items[*].email, $..password)')),
          patterns: Type.Optional(
            Type.Record(Type.String({ pattern: '^[A-Za-z0-9_-]{1,32}$' }), Type.String(), {
              description: 'custom detectors as name: regular expression',
            }),
          ),
        },
        { ...closed, description: 'response redaction (allow rules)' },
      ),
    ),
    approval: Type.Optional(
      Type.Union([Type.Literal('required'), Type.Literal('none')], {
        description: 'required: park calls until an operator approves them (allow rules)',
      }),
    ),
  },
  { ...closed, description: 'a policy rule (issue: policy)' },
)

/** One policy: in the config file's `policies` list, or the body of `PUT /v1/policies/{name}`. */
export const PolicySchema = Type.Object(
  {
    name: PolicyName,
    description: Type.Optional(Type.String({ description: 'what the policy is for' })),
    agents: Type.Object(
      {
        names: Type.Optional(Strings('agent names')),
        ids: Type.Optional(Strings('agent ids')),
        labels: Type.Optional(Labels),
        all: Type.Optional(Type.Boolean({ description: 'true: every agent' })),
      },
      {
        ...closed,
        description: 'which agents the policy applies to: a listed name or id, or every listed label',
      },
    ),
    allow: Type.Optional(Type.Array(PolicyRule, { description: 'rules that allow' })),
    deny: Type.Optional(Type.Array(PolicyRule, { description: 'rules that deny; a matching deny wins' })),
  },
  { ...closed, description: 'a policy (issue: policy)' },
)

/** The whole configuration file. */
export const ConfigSchema = Type.Object(
  {
    gateway: Type.Optional(Gateway),
    store: Type.Optional(Store),
    redis: Type.Optional(Redis),
    tokens: Type.Optional(
      Type.Object(
        {
          ttl: Type.Optional(Duration),
          maxTtl: Type.Optional(Duration),
          rotateEvery: Type.Optional(Duration),
          requireDpop: Type.Optional(
            Type.Boolean({
              description: 'refuse access tokens that are not key-bound (DPoP) for every agent',
            }),
          ),
        },
        { ...closed, description: 'access token lifetimes and signing key rotation (issue: identity)' },
      ),
    ),
    secrets: Type.Optional(
      Type.Object(
        {
          masterKey: Type.Optional(Type.String({ description: 'secret store master key' })),
          masterKeyFile: Type.Optional(Type.String({ description: 'file holding the master key' })),
        },
        { ...closed, description: 'encrypted secret store (issue: tools and secrets)' },
      ),
    ),
    systems: Type.Optional(
      Type.Record(Type.String({ pattern: '^[A-Za-z0-9_-]+$' }), System, {
        ...closed,
        description: 'backends by name',
      }),
    ),
    channels: Type.Optional(Type.Array(Channel, { description: 'public routes to systems' })),
    tools: Type.Optional(Tools),
    agents: Type.Optional(Type.Array(Agent, { description: 'agents declared in config (issue: identity)' })),
    policies: Type.Optional(Type.Array(PolicySchema, { description: 'policies (issue: policy)' })),
    approvals: Type.Optional(
      Type.Object(
        { ttl: Type.Optional(Duration) },
        { ...closed, description: 'call approvals: how long a request waits for a decision (default 1h)' },
      ),
    ),
    rateLimits: Type.Optional(
      Type.Array(RateLimit, {
        description: 'gateway-wide rate limits, checked on every route but /health and /ready',
      }),
    ),
    cache: Type.Optional(
      Type.Object(
        {
          maxEntries: Type.Optional(
            Type.Integer({ minimum: 1, description: 'entries kept in memory at most (default 10000)' }),
          ),
          maxBytes: Type.Optional(
            Type.Integer({ minimum: 1024, description: 'bytes kept in memory at most (default 64 MiB)' }),
          ),
          maxEntryBytes: Type.Optional(
            Type.Integer({
              minimum: 1,
              description: 'largest answer cached, bytes (default 1 MiB); larger ones pass uncached',
            }),
          ),
        },
        {
          ...closed,
          description:
            'response cache bounds: memory by default, Redis when `redis` is set (its maxmemory bounds it there)',
        },
      ),
    ),
    idempotency: Type.Optional(
      Type.Object(
        {
          ttl: Type.Optional(
            Type.Union(Duration.anyOf, {
              description: 'how long a first answer is kept for repeats (default 24h)',
            }),
          ),
          wait: Type.Optional(
            Type.Union(Duration.anyOf, {
              description:
                'how long a repeat waits for the first call to finish before 409 conflict (default 5s)',
            }),
          ),
        },
        {
          ...closed,
          description:
            'Idempotency-Key on tool calls and channel POSTs: executed once, repeats get the first answer',
        },
      ),
    ),
    audit: Type.Optional(
      Type.Object(
        {
          enabled: Type.Optional(Type.Boolean({ description: 'record the audit ledger (default true)' })),
          checkpointEvery: Type.Optional(
            Type.Integer({
              minimum: 1,
              description: 'sign the chain head every this many entries, and on shutdown (default 1000)',
            }),
          ),
          durability: Type.Optional(
            Type.Union([Type.Literal('batched'), Type.Literal('sync')], {
              description:
                'batched (default): group commits within 50 ms, off the response path, flushed completely on a graceful stop; sync: each entry is committed before its response is written',
            }),
          ),
          onFailure: Type.Optional(
            Type.Union([Type.Literal('refuse'), Type.Literal('continue')], {
              description:
                'when the ledger cannot be written: refuse (default) answers calls with 503 audit_unavailable until it can; continue keeps serving and retries the entries',
            }),
          ),
          retainDays: Type.Optional(
            Type.Integer({
              minimum: 1,
              description:
                'prune entries older than this many days, up to a signed checkpoint, so what remains still verifies (default: keep everything)',
            }),
          ),
          instance: Type.Optional(
            Type.String({
              pattern: '^[A-Za-z0-9._:-]{1,64}$',
              description:
                "the name of this instance's chain (default: the host name); each instance of a cluster keeps its own chain",
            }),
          ),
        },
        { ...closed, description: 'audit ledger (issue: audit)' },
      ),
    ),
    metrics: Type.Optional(
      Type.Object(
        {
          perAgent: Type.Optional(
            Type.Boolean({
              description:
                'also count tool calls and LLM tokens by agent name (runr_agent_tool_calls_total, runr_agent_llm_tokens_total): one series per agent, so off by default',
            }),
          ),
        },
        { ...closed, description: 'Prometheus metrics on the admin listener' },
      ),
    ),
    tracing: Type.Optional(
      Type.Object(
        {
          endpoint: Type.String({
            pattern: '^https?://[^\\s]+$',
            description:
              'OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces; spans are recorded and exported only when it is set',
          }),
          serviceName: Type.Optional(
            Type.String({ minLength: 1, description: 'service.name of the spans (default 4runr-gateway)' }),
          ),
          sampleRatio: Type.Optional(
            Type.Number({
              minimum: 0,
              maximum: 1,
              description:
                "share of new traces recorded (default 1); a caller's traceparent decision is followed",
            }),
          ),
          headers: Type.Optional(
            Type.Record(Type.String(), Type.String(), {
              description: 'headers sent with every export (a collector key: use ${env:…})',
            }),
          ),
          flushMs: Type.Optional(
            Type.Integer({
              minimum: 10,
              description: 'longest wait before finished spans are exported (default 2000)',
            }),
          ),
        },
        { ...closed, description: 'OpenTelemetry traces (read at start; a reload does not change them)' },
      ),
    ),
  },
  { ...closed, description: 'the 4Runr Gateway configuration file' },
)

export type RawConfig = Static<typeof ConfigSchema>
export type RawChannel = Static<typeof Channel>
export type RawRateLimit = Static<typeof RateLimit>
export type RawRouteCache = Static<typeof RouteCache>
export type RawPathRule = Static<typeof PathRule>
export type RawHttpSystem = Static<typeof HttpSystem>
export type RawSystem = Static<typeof System>
export type RawDuration = Static<typeof Duration>
export type RawPolicy = Static<typeof PolicySchema>
export type RawPolicyRule = Static<typeof PolicyRule>
