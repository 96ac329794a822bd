import { tracingChannel } from 'node:diagnostics_channel'
import type { IncomingMessage, ServerResponse } from 'node:http'
import {
  durationHistogram,
  errorType,
  extractContext,
  failSpan,
  injectContext,
  type Telemetry,
} from '@ballast/shared'
import {
  type Attributes,
  type Context,
  createNoopMeter,
  type Histogram,
  isSpanContextValid,
  ProxyTracerProvider,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TracerProvider,
  trace,
} from '@opentelemetry/api'
import type { Endpoint } from '../../endpoint.js'
import type { ParsedHost } from '../requestTarget.js'
import {
  endpointAddress,
  methodAttribute,
  spanName,
  startAttemptSpan,
  withInjected,
} from '../telemetry.js'
import type { Attempt } from './attempt.js'

/**
 * One request the proxy handles, as its `ballast:lb:proxy:request` messages carry it: `start`
 * when it arrives, `asyncEnd` when its response closed (answered, or the client gone).
 */
export interface ServedRequest {
  /** The proxy that handles it (a subscriber for one proxy filters on it). */
  readonly proxy: object
  readonly req: IncomingMessage
  readonly res: ServerResponse
  /** The route's name, once matched. */
  route: string | undefined
  /** The parsed `Host`, once read. */
  host: ParsedHost | undefined
  /** Why the proxy answered with a failure (502, 503, 504), if it did. */
  error: unknown
  // What the proxy's own telemetry keeps between the messages.
  startedAt: number
  span: Span | undefined
  /** The context of the attempts' CLIENT spans: the SERVER span's, when it has a valid one. */
  traceContext: Context | undefined
  /** The upstream headers with the SERVER span's context, for the attempts of a request not sampled. */
  unsampledHeaders: string[] | undefined
}

/**
 * The proxy's hot path publishes here only while someone subscribes (its own telemetry when an
 * SDK is installed, or any diagnostics tool): a process without an SDK pays one check per
 * request. Messages are {@link ServedRequest}s.
 */
export const requestChannel = tracingChannel<unknown, ServedRequest>('ballast:lb:proxy:request')

/**
 * Each attempt upstream of a published request: `start` before it is sent (a subscriber may set
 * `attempt.headers`, the upstream request's flat header list, to add trace context), `asyncEnd`
 * when it ended (its response relayed, failed, or abandoned for a retry). Messages are the
 * proxy's attempts: `endpoint`, `status` and `error` are stable to read.
 */
export const attemptChannel = tracingChannel<unknown, Attempt>('ballast:lb:proxy:attempt')

const NOOP_METER = createNoopMeter()
const NO_TRACER_PROVIDER = new ProxyTracerProvider().getDelegate()

/**
 * Whether the providers record anything: not the API's no-op meter, not the global tracer
 * provider before an SDK registered one. Read at construction, like the providers themselves.
 */
export function isLive(
  meter: object,
  tracerProvider: TracerProvider,
): { metrics: boolean; traces: boolean } {
  return {
    metrics: meter.constructor !== NOOP_METER.constructor,
    traces: !(
      tracerProvider instanceof ProxyTracerProvider &&
      tracerProvider.getDelegate() === NO_TRACER_PROVIDER
    ),
  }
}

/**
 * The proxy's spans and durations, fed by its channels: subscribed only when an SDK records
 * metrics or traces, so without one the proxy publishes nothing.
 */
export class ProxyTelemetry {
  readonly #proxy: object
  readonly #tracer: Telemetry['tracer']
  readonly #traced: boolean
  readonly #serverDuration: BufferedHistogram
  /** Undefined when the proxy's `clientRequestDuration` option is off. */
  readonly #clientDuration: BufferedHistogram | undefined
  readonly #requestHandlers: Parameters<typeof requestChannel.subscribe>[0]
  readonly #attemptHandlers: Parameters<typeof attemptChannel.subscribe>[0]
  /** Whether it subscribes to attempts (traced, or recording their durations). */
  readonly #attempts: boolean
  /** Per route name, the attribute set of its last request answered without an error. */
  readonly #lastServed = new Map<
    string | undefined,
    { method: string; scheme: string; status: number; attributes: Attributes }
  >()
  /** Per endpoint, the attribute set of its last attempt answered below 400. */
  readonly #lastAttempts = new WeakMap<
    Endpoint<string>,
    { route: string; method: string; status: number; attributes: Attributes }
  >()

  constructor(
    proxy: object,
    telemetry: Telemetry,
    { traced, clientRequestDuration }: { traced: boolean; clientRequestDuration: boolean },
  ) {
    this.#proxy = proxy
    this.#tracer = telemetry.tracer
    this.#traced = traced
    this.#serverDuration = new BufferedHistogram(
      durationHistogram(
        telemetry.meter,
        'http.server.request.duration',
        'Duration of the requests the proxy served, until their response ended',
      ),
    )
    this.#clientDuration = clientRequestDuration
      ? new BufferedHistogram(
          durationHistogram(
            telemetry.meter,
            'http.client.request.duration',
            'Duration of each attempt to an upstream endpoint, until its response ended or failed',
          ),
        )
      : undefined
    const noop = () => {}
    this.#requestHandlers = {
      start: (m) => this.#requestStart(m),
      end: noop,
      asyncStart: noop,
      asyncEnd: (m) => this.#requestEnd(m),
      error: noop,
    }
    this.#attemptHandlers = {
      start: (m) => this.#attemptStart(m),
      end: noop,
      asyncStart: noop,
      asyncEnd: (m) => this.#attemptEnd(m),
      error: noop,
    }
    requestChannel.subscribe(this.#requestHandlers)
    // Attempts need no message when they make neither a span nor a duration.
    this.#attempts = traced || clientRequestDuration
    if (this.#attempts) attemptChannel.subscribe(this.#attemptHandlers)
  }

  close(): void {
    requestChannel.unsubscribe(this.#requestHandlers)
    if (this.#attempts) attemptChannel.unsubscribe(this.#attemptHandlers)
    this.flush()
  }

  /**
   * Hands the durations measured since the last call to the SDK's histograms: called when the
   * SDK collects (first thing in the proxy's observable callback, which the SDK runs before it
   * reads its histograms), when a buffer is full, and by `close()`.
   */
  flush(): void {
    this.#serverDuration.flush()
    this.#clientDuration?.flush()
  }

  #requestStart(served: ServedRequest): void {
    if (served.proxy !== this.#proxy) return
    served.startedAt = performance.now()
    if (!this.#traced) return
    const req = served.req
    // The SERVER span continues the client's trace (W3C traceparent with the usual SDK setup).
    const parent = extractContext(req.headers)
    const method = methodAttribute(req.method ?? 'GET')
    const span = this.#tracer.startSpan(
      spanName(method),
      {
        kind: SpanKind.SERVER,
        attributes: { 'http.request.method': method, 'url.scheme': schemeOf(req) },
      },
      parent,
    )
    served.span = span
    // A span without a valid context (a tracer that records nothing) gives the attempts nothing
    // to be children of: they make no span and inject nothing.
    if (isSpanContextValid(span.spanContext())) served.traceContext = trace.setSpan(parent, span)
  }

  #requestEnd(served: ServedRequest): void {
    if (served.proxy !== this.#proxy) return
    const { req, res } = served
    const status = res.headersSent ? res.statusCode : undefined
    let type = served.error === undefined ? undefined : errorType(served.error)
    if (type === undefined && status !== undefined && status >= 500) type = String(status)
    // The response did not end: the client went away, or the proxy cut a broken upstream body.
    if (type === undefined && !res.writableFinished) type = 'aborted'
    const method = req.method ?? 'GET'
    const scheme = schemeOf(req)
    const attributes =
      type === undefined && status !== undefined
        ? this.#serverAttributes(served.route, method, scheme, status)
        : serverAttributes(served.route, method, scheme, status, type)
    const span = served.span
    if (span !== undefined) {
      if (span.isRecording()) {
        span.setAttributes(attributes)
        const host = served.host
        if (host !== undefined) {
          span.setAttribute('server.address', host.name)
          if (host.authority.length > host.name.length) {
            span.setAttribute('server.port', Number(host.authority.slice(host.name.length + 1)))
          }
        }
        if (type !== undefined) span.setStatus({ code: SpanStatusCode.ERROR })
      }
      span.end()
    }
    this.#serverDuration.record((performance.now() - served.startedAt) / 1000, attributes)
  }

  /**
   * The attribute set of a request answered without an error, the same object as the last one
   * of its route when method, scheme and status match (nearly always under steady traffic).
   */
  #serverAttributes(
    route: string | undefined,
    method: string,
    scheme: string,
    status: number,
  ): Attributes {
    const last = this.#lastServed.get(route)
    if (
      last !== undefined &&
      last.method === method &&
      last.status === status &&
      last.scheme === scheme
    ) {
      return last.attributes
    }
    const attributes = Object.freeze(serverAttributes(route, method, scheme, status, undefined))
    this.#lastServed.set(route, { method, scheme, status, attributes })
    return attributes
  }

  #attemptStart(attempt: Attempt): void {
    const served = attempt.ctx.served
    if (served?.proxy !== this.#proxy) return
    attempt.sentAt = performance.now()
    const parent = served.traceContext
    if (parent === undefined) return
    if (served.span?.isRecording() !== true) {
      // Not sampled: no CLIENT span, which nothing would record; the SERVER span's context
      // (flagged not sampled) goes upstream so the upstreams do not sample it either.
      if (served.unsampledHeaders === undefined) {
        const injected: Record<string, unknown> = {}
        injectContext(injected, parent)
        served.unsampledHeaders = withInjected(attempt.ctx.headers, injected)
      }
      attempt.headers = served.unsampledHeaders
      return
    }
    // One CLIENT span per attempt, a child of the SERVER span (retries are its siblings), whose
    // context replaces the client's traceparent upstream; with no propagator nothing is written
    // and the client's traceparent goes on as it came.
    const endpoint = attempt.endpoint
    const address = endpointAddress(endpoint)
    const method = methodAttribute(attempt.ctx.method)
    const attributes: Attributes = {
      'http.request.method': method,
      'server.address': address.address,
      'server.port': address.port,
      'url.scheme': address.scheme,
    }
    const tried = attempt.ctx.tried.length
    if (tried > 1) attributes['http.request.resend_count'] = tried - 1
    const injected: Record<string, unknown> = {}
    attempt.span = startAttemptSpan(this.#tracer, spanName(method), attributes, parent, injected)
    attempt.headers = withInjected(attempt.ctx.headers, injected)
  }

  #attemptEnd(attempt: Attempt): void {
    const ctx = attempt.ctx
    if (ctx.served?.proxy !== this.#proxy) return
    const { endpoint, status, error } = attempt
    const span = attempt.span
    if (span === undefined && this.#clientDuration === undefined) return
    // A client span with a 4xx or 5xx answer is an error (HTTP semantic conventions).
    const type =
      error !== undefined
        ? errorType(error)
        : status !== undefined && status >= 400
          ? String(status)
          : undefined
    let attributes: Attributes
    if (type === undefined) {
      attributes =
        status === undefined
          ? attemptAttributes(endpoint, ctx.route.name, ctx.method, undefined, undefined)
          : this.#attemptAttributes(endpoint, ctx.route.name, ctx.method, status)
    } else {
      attributes = attemptAttributes(endpoint, ctx.route.name, ctx.method, status, type)
      if (span !== undefined) {
        if (error !== undefined) failSpan(span, error)
        else {
          span.setAttribute('error.type', type)
          span.setStatus({ code: SpanStatusCode.ERROR })
        }
      }
    }
    if (span !== undefined) {
      if (status !== undefined) span.setAttribute('http.response.status_code', status)
      span.end()
    }
    this.#clientDuration?.record((performance.now() - attempt.sentAt) / 1000, attributes)
  }

  /**
   * The attribute set of an attempt answered below 400, the same object as the endpoint's last
   * one when route, method and status match.
   */
  #attemptAttributes(
    endpoint: Endpoint<string>,
    route: string,
    method: string,
    status: number,
  ): Attributes {
    const last = this.#lastAttempts.get(endpoint)
    if (
      last !== undefined &&
      last.method === method &&
      last.status === status &&
      last.route === route
    ) {
      return last.attributes
    }
    const attributes = Object.freeze(attemptAttributes(endpoint, route, method, status, undefined))
    this.#lastAttempts.set(endpoint, { route, method, status, attributes })
    return attributes
  }
}

/** Durations a {@link BufferedHistogram} keeps at most before it hands them to the SDK. */
const BUFFERED = 4096

/**
 * A histogram whose records are kept in an array until the SDK collects, then recorded one
 * after another in a tight loop. The metrics SDK identifies each record's series by sorting
 * and serialising its attributes (about 1 µs with five of them in a tight loop, several times
 * that between a request's other work, where its code and data are out of the caches); a
 * request now pays two array writes, and the SDK's work runs hot once per collection. The
 * SDK sees every value before it reads the histogram: the proxy's observable callback, which
 * the SDK runs first at each collection, flushes it.
 */
class BufferedHistogram {
  readonly #histogram: Histogram
  readonly #values = new Float64Array(BUFFERED)
  readonly #attributes: Array<Attributes | undefined> = []
  #size = 0

  constructor(histogram: Histogram) {
    this.#histogram = histogram
  }

  record(value: number, attributes: Attributes): void {
    const i = this.#size
    this.#values[i] = value
    this.#attributes[i] = attributes
    this.#size = i + 1
    if (i + 1 === BUFFERED) this.flush()
  }

  flush(): void {
    const n = this.#size
    this.#size = 0
    for (let i = 0; i < n; i++) {
      this.#histogram.record(this.#values[i]!, this.#attributes[i])
      this.#attributes[i] = undefined
    }
  }
}

/*
 * The durations' attribute sets are built with their keys in sorted order: the metrics SDK
 * identifies a set by sorting its keys and serialising the pairs on every record (most of a
 * record's cost), and a sort of keys already in order is the cheapest.
 */

/** The attributes of `http.server.request.duration` (and of the SERVER span). */
function serverAttributes(
  route: string | undefined,
  method: string,
  scheme: string,
  status: number | undefined,
  type: string | undefined,
): Attributes {
  const attributes: Attributes = {}
  if (route !== undefined) attributes['ballast.lb.route'] = route
  if (type !== undefined) attributes['error.type'] = type
  attributes['http.request.method'] = methodAttribute(method)
  if (status !== undefined) attributes['http.response.status_code'] = status
  attributes['url.scheme'] = scheme
  return attributes
}

/** The attributes of the proxy's `http.client.request.duration`. */
function attemptAttributes(
  endpoint: Endpoint<string>,
  route: string,
  method: string,
  status: number | undefined,
  type: string | undefined,
): Attributes {
  const address = endpointAddress(endpoint)
  const attributes: Attributes = { 'ballast.lb.route': route }
  if (type !== undefined) attributes['error.type'] = type
  attributes['http.request.method'] = methodAttribute(method)
  if (status !== undefined) attributes['http.response.status_code'] = status
  attributes['server.address'] = address.address
  attributes['server.port'] = address.port
  return attributes
}

function schemeOf(req: IncomingMessage): string {
  return (req.socket as { encrypted?: boolean } | null)?.encrypted ? 'https' : 'http'
}
