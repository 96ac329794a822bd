import {
  checkProviders,
  durationHistogram,
  errorType,
  failSpan,
  injectContext,
  type Telemetry,
  type TelemetryOptions,
  telemetry,
} from '@ballast/shared'
import {
  type Attributes,
  type Context,
  createNoopMeter,
  type Histogram,
  ProxyTracerProvider,
  type Span,
  SpanKind,
  type SpanOptions,
  trace,
} from '@opentelemetry/api'

import { check } from './validate.js'

export { errorType, failSpan }

/** The instrumentation scope of every meter and tracer of the package. */
export const SCOPE = '@ballast/mq'

/** `messaging.system` of every span and instrument (the messaging semantic conventions). */
export const MESSAGING_SYSTEM = 'rabbitmq'

/** The API's no-op provider: what the global provider hands out until an SDK registers one. */
const NOOP_TRACER_PROVIDER = new ProxyTracerProvider().getDelegate()

/**
 * Whether spans from these options can record anything: false only while the global provider is
 * used and no SDK has registered one (checked per call: an SDK may register after construction).
 */
export function tracingCheck(options: TelemetryOptions): () => boolean {
  if (options.tracerProvider !== undefined) return () => true
  const provider = trace.getTracerProvider()
  if (!(provider instanceof ProxyTracerProvider)) return () => true
  return () => provider.getDelegate() !== NOOP_TRACER_PROVIDER
}

/**
 * The meter and tracer of one component of the package, from its `meterProvider` and
 * `tracerProvider` options (checked like every option: an `InvalidArgumentError` for a value that
 * is not a provider) or the global ones.
 */
export function mqTelemetry(options: TelemetryOptions): Telemetry {
  return telemetry(SCOPE, checkProviders(check, options))
}

/** The destination of a message sent to a server-named queue (`amq.gen-…`, one per client). */
export const TEMPORARY_DESTINATION = '(temporary)'

/**
 * The destination a span and an instrument name: the exchange, or for the default exchange
 * (`''`, which routes straight to the queue named by the routing key) that queue, a server-named
 * one (`amq.gen-…`, a new name per client) as `(temporary)`, so the values stay bounded.
 */
export function destinationOf(exchange: string, routingKey: string): string {
  if (exchange !== '') return exchange
  return routingKey.startsWith('amq.gen-') ? TEMPORARY_DESTINATION : routingKey
}

/** The class of the API's no-op histogram: what a meter from no SDK (or a no-op provider) gives. */
const NOOP_HISTOGRAM: unknown = createNoopMeter().createHistogram('noop').constructor

/** Whether `histogram` records anything (false without an SDK: then no timestamp is worth taking). */
export function records(histogram: Histogram): boolean {
  return histogram.constructor !== NOOP_HISTOGRAM
}

/** Whether an object has an own key (without allocating the list of keys). */
function hasKeys(carrier: Record<string, unknown>): boolean {
  for (const _ in carrier) return true
  return false
}

/**
 * `headers` with the context `ctx` written into them (W3C `traceparent`/`tracestate` with the
 * usual SDK setup), as a new object: the caller's headers are never changed. Returns `headers`
 * itself when the propagator wrote nothing (no SDK, or no span in `ctx`).
 */
export function withContext(
  headers: Record<string, unknown> | undefined,
  ctx: Context,
): Record<string, unknown> | undefined {
  const carrier: Record<string, unknown> = {}
  injectContext(carrier, ctx)
  if (!hasKeys(carrier)) return headers
  return headers === undefined ? carrier : { ...headers, ...carrier }
}

/** What every publish to one destination shares: made once per destination, kept by the broker. */
export interface PublishTarget {
  /** `publish <destination>`. */
  readonly spanName: string
  /** PRODUCER, with the attributes a sampler may look at. */
  readonly spanOptions: SpanOptions
  /** The attributes of its `messaging.client.operation.duration` points (the span's, too). */
  readonly attributes: Attributes
}

export function publishTarget(destination: string): PublishTarget {
  const attributes: Attributes = {
    'messaging.system': MESSAGING_SYSTEM,
    'messaging.operation.name': 'publish',
    'messaging.operation.type': 'send',
    'messaging.destination.name': destination,
  }
  return {
    spanName: `publish ${destination}`,
    spanOptions: { kind: SpanKind.PRODUCER, attributes },
    attributes,
  }
}

/**
 * Starts the PRODUCER span of one publish (`publish <destination>`), under `parent`, with the
 * destination's shared attributes; the per-message ones only when the span records (a span sampled
 * out costs no attribute object). The body is never recorded: only its size.
 */
export function startPublishSpan(
  tracer: Telemetry['tracer'],
  target: PublishTarget,
  routingKey: string,
  messageId: string | undefined,
  bodySize: number,
  parent: Context,
): Span {
  const span = tracer.startSpan(target.spanName, target.spanOptions, parent)
  if (span.isRecording()) {
    span.setAttribute('messaging.rabbitmq.destination.routing_key', routingKey)
    span.setAttribute('messaging.message.body.size', bodySize)
    if (messageId !== undefined) span.setAttribute('messaging.message.id', messageId)
  }
  return span
}

/**
 * The histogram of publish round trips (`messaging.client.operation.duration`): from the send to
 * the broker's confirm (or the failure), buffering included.
 */
export function operationDuration(meter: Telemetry['meter']): Histogram {
  return durationHistogram(
    meter,
    'messaging.client.operation.duration',
    'Duration of one publish, from the call to the broker confirm (or the failure), time in the buffer included',
  )
}

/**
 * Ends a publish's span and records its duration when the publish settles: OK on the broker's
 * confirm, ERROR with `error.type` on a failure. With a span that records nothing (no SDK, sampled
 * out) and no duration to record, the publish promise is returned as it is, with no callbacks.
 */
export function settle(
  sent: Promise<void>,
  span: Span | undefined,
  duration: { histogram: Histogram; attributes: Attributes; started: number } | undefined,
): Promise<void> {
  const traced = span?.isRecording() === true
  if (!traced && duration === undefined) return sent
  return sent.then(
    () => {
      if (duration !== undefined)
        duration.histogram.record(
          (performance.now() - duration.started) / 1000,
          duration.attributes,
        )
      if (traced) span?.end()
    },
    (error: unknown) => {
      if (duration !== undefined)
        duration.histogram.record((performance.now() - duration.started) / 1000, {
          ...duration.attributes,
          'error.type': errorType(error),
        })
      if (traced && span !== undefined) {
        failSpan(span, error)
        span.end()
      }
      throw error
    },
  )
}

/** The histogram of handler durations per queue (`messaging.process.duration`). */
export function processDuration(meter: Telemetry['meter']): Histogram {
  return durationHistogram(
    meter,
    'messaging.process.duration',
    'Duration of processing one delivery: decoding, deduplication, the handler and the ack, retry or dead-lettering',
  )
}

/** The context with `span` in it: the one to run work "under" the span. */
export function contextWith(parent: Context, span: Span): Context {
  return trace.setSpan(parent, span)
}
