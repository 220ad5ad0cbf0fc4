/**
 * OpenTelemetry traces (DESIGN §16): a server span per request, with children for
 * authentication, the policy decision and the upstream call, exported over OTLP/HTTP when
 * `tracing.endpoint` is set. Without it nothing here runs: the pipeline holds no tracer and pays
 * one undefined check per request.
 *
 * The request span keeps the ids the gateway already put in its logs and sent upstream (the trace
 * id of the incoming `traceparent` or the one made from the request id, and the span id of the
 * request context): an id generator hands the SDK those ids when a request span starts, so a log
 * line's `traceId` finds its trace. Parents are passed explicitly (no async context manager on the
 * hot path); the upstream span's id goes upstream as the `traceparent` parent.
 *
 * Spans carry ids, the route template, methods, statuses and the decision: never a header value,
 * a query string, a body, a token or a secret.
 */
import { randomBytes } from 'node:crypto'
import {
  type Attributes,
  type Context,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  type Tracer,
  trace,
} from '@opentelemetry/api'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { resourceFromAttributes } from '@opentelemetry/resources'
import {
  BatchSpanProcessor,
  type IdGenerator,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from '@opentelemetry/sdk-trace'

export interface TracingSettings {
  /** OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces. */
  endpoint: string
  serviceName: string
  /** Share of new traces recorded (0–1); a traced caller's own decision is followed. */
  sampleRatio: number
  /** Sent with every export (a collector's API key). */
  headers: Record<string, string>
  /** Longest wait before a batch of finished spans is exported, ms. */
  flushMs: number
}

/** What a request needs to be traced: the fields of its context the spans are made from. */
export interface TracedRequest {
  readonly method: string
  readonly traceId: string
  spanId: string
  traceFlags: string
  readonly parentSpanId: string | undefined
  readonly requestId: string
}

/** A span the pipeline or a route opened; `end` closes it once (later calls do nothing). */
export interface PhaseSpan {
  end(attributes?: Attributes, failed?: boolean): void
}

/** The spans of one request. */
export interface RequestTrace {
  /** A child of the request span: `authenticate`, `policy`. */
  phase(name: string, attributes?: Attributes): PhaseSpan
  /**
   * The upstream call's span (kind client). Its id becomes the request's `spanId`, which the
   * `traceparent` sent upstream names as the parent.
   */
  upstream(name: string, attributes?: Attributes): PhaseSpan
  /**
   * Close the request span (and any phase left open by an error), named by the route template
   * (`POST /v1/tools/{tool}/{action}`, a channel's name) now that routing has found it.
   */
  end(route: string, attributes: Attributes, status: number): void
}

export interface Tracing {
  /** Start the request's span; undefined when the trace is not sampled. */
  begin(request: TracedRequest): RequestTrace | undefined
  /** Export what is buffered and stop (graceful shutdown). */
  shutdown(): Promise<void>
}

/** Span ids are ours when a request span starts (see the header), random otherwise. */
class GatewayIds implements IdGenerator {
  nextTraceId: string | undefined
  nextSpanId: string | undefined

  generateTraceId(): string {
    const id = this.nextTraceId ?? randomBytes(16).toString('hex')
    this.nextTraceId = undefined
    return id
  }

  generateSpanId(): string {
    const id = this.nextSpanId ?? randomBytes(8).toString('hex')
    this.nextSpanId = undefined
    return id
  }
}

class Phase implements PhaseSpan {
  #open = true
  constructor(
    private readonly span: Span,
    private readonly owner: Set<Phase>,
  ) {
    owner.add(this)
  }

  end(attributes?: Attributes, failed?: boolean): void {
    if (!this.#open) return
    this.#open = false
    this.owner.delete(this)
    if (attributes !== undefined) this.span.setAttributes(attributes)
    if (failed === true) this.span.setStatus({ code: SpanStatusCode.ERROR })
    this.span.end()
  }
}

class Traced implements RequestTrace {
  readonly #open = new Set<Phase>()
  readonly #parent: Context

  constructor(
    private readonly tracer: Tracer,
    private readonly span: Span,
    private readonly request: TracedRequest,
  ) {
    this.#parent = trace.setSpan(ROOT_CONTEXT, span)
  }

  phase(name: string, attributes?: Attributes): PhaseSpan {
    return new Phase(
      this.tracer.startSpan(name, { kind: SpanKind.INTERNAL, attributes }, this.#parent),
      this.#open,
    )
  }

  upstream(name: string, attributes?: Attributes): PhaseSpan {
    const span = this.tracer.startSpan(name, { kind: SpanKind.CLIENT, attributes }, this.#parent)
    this.request.spanId = span.spanContext().spanId
    return new Phase(span, this.#open)
  }

  end(route: string, attributes: Attributes, status: number): void {
    this.span.updateName(`${this.request.method} ${route}`)
    for (const phase of [...this.#open]) phase.end(undefined, status >= 500)
    this.span.setAttributes(attributes)
    // A server span is an error only for 5xx: a 4xx is the client's mistake, answered correctly.
    if (status >= 500) this.span.setStatus({ code: SpanStatusCode.ERROR })
    this.span.end()
  }
}

/** Build the tracer for `settings`. */
export function createTracing(settings: TracingSettings): Tracing {
  const ids = new GatewayIds()
  // Bounded waits: an unreachable collector must not hold up a graceful stop for long.
  const exporter = new OTLPTraceExporter({
    url: settings.endpoint,
    headers: settings.headers,
    timeoutMillis: 5_000,
  })
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ 'service.name': settings.serviceName }),
    idGenerator: ids,
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(settings.sampleRatio) }),
    spanProcessors: [
      new BatchSpanProcessor({
        exporter,
        scheduledDelayMillis: settings.flushMs,
        maxQueueSize: 4096,
        maxExportBatchSize: 512,
        exportTimeoutMillis: 5_000,
      }),
    ],
  })
  const tracer = provider.getTracer('4runr-gateway')

  return {
    begin(request) {
      const parent =
        request.parentSpanId === undefined
          ? ROOT_CONTEXT
          : trace.setSpanContext(ROOT_CONTEXT, {
              traceId: request.traceId,
              spanId: request.parentSpanId,
              traceFlags: request.traceFlags === '01' ? TraceFlags.SAMPLED : TraceFlags.NONE,
              isRemote: true,
            })
      ids.nextTraceId = request.traceId
      ids.nextSpanId = request.spanId
      const span = tracer.startSpan(
        `${request.method} request`,
        {
          kind: SpanKind.SERVER,
          attributes: {
            'http.request.method': request.method,
            'runr.request_id': request.requestId,
          },
        },
        parent,
      )
      // A span that did not start consumed neither id.
      ids.nextTraceId = undefined
      ids.nextSpanId = undefined
      if (!span.isRecording()) {
        // Not sampled: tell the upstream so, as W3C Trace Context asks.
        request.traceFlags = '00'
        return undefined
      }
      request.traceFlags = '01'
      return new Traced(tracer, span, request)
    },
    shutdown: () => provider.shutdown(),
  }
}

/** A failure's attributes: its stable code, and whether it is the gateway's (5xx) or the caller's. */
function failureOf(err: unknown): { attributes: Attributes; failed: boolean } {
  const { code, status } = err as { code?: unknown; status?: unknown }
  const failed = typeof status !== 'number' || status >= 500
  return { attributes: typeof code === 'string' ? { 'error.type': code } : {}, failed }
}

/**
 * Run `run` inside a `name` span of `trace` (when there is one), keeping its answer synchronous
 * when it is: the stages it wraps answer without a promise in the common case.
 */
export function inPhase<T>(
  trace: RequestTrace | undefined,
  name: string,
  run: () => T | Promise<T>,
  describe?: (value: T) => Attributes | undefined,
): T | Promise<T> {
  if (trace === undefined) return run()
  const span = trace.phase(name)
  let value: T | Promise<T>
  try {
    value = run()
  } catch (err) {
    const { attributes, failed } = failureOf(err)
    span.end(attributes, failed)
    throw err
  }
  if (value instanceof Promise) {
    return value.then(
      (v) => {
        span.end(describe?.(v))
        return v
      },
      (err: unknown) => {
        const { attributes, failed } = failureOf(err)
        span.end(attributes, failed)
        throw err
      },
    )
  }
  span.end(describe?.(value))
  return value
}

/** The policy span's attributes: the decision (or the parked call's approval) and its rule. */
export function decisionAttributes(
  outcome: { kind: string; decision: { decision: string; rule: string | null } } | undefined,
): Attributes | undefined {
  if (outcome === undefined) return undefined
  return {
    'runr.decision': outcome.kind === 'parked' ? 'approval_required' : outcome.decision.decision,
    ...(outcome.decision.rule === null ? {} : { 'runr.policy_rule': outcome.decision.rule }),
  }
}
