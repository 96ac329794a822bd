import {
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
  type Histogram,
  type Span,
  SpanKind,
  trace,
} from '@opentelemetry/api'

export { errorType, failSpan }

/** The instrumentation scope of every meter and tracer of the package. */
export const SCOPE = '@ballast/mq'

/** `messaging.system` of every span and instrument (the messaging semantic conventions). */
export const MESSAGING_SYSTEM = 'rabbitmq'

/** The meter and tracer of one component of the package. */
export function mqTelemetry(options: TelemetryOptions): Telemetry {
  return telemetry(SCOPE, options)
}

/**
 * The destination a span and an instrument name: the exchange, or for the default exchange
 * (`''`, which routes straight to the queue named by the routing key) that queue.
 */
export function destinationOf(exchange: string, routingKey: string): string {
  return exchange === '' ? routingKey : exchange
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

/**
 * Starts the PRODUCER span of one publish (`publish <destination>`), under `parent`. The body is
 * never recorded: only its size.
 */
export function startPublishSpan(
  tracer: Telemetry['tracer'],
  exchange: string,
  routingKey: string,
  messageId: string | undefined,
  bodySize: number,
  parent: Context,
): Span {
  const destination = destinationOf(exchange, routingKey)
  const attributes: Attributes = {
    'messaging.system': MESSAGING_SYSTEM,
    'messaging.operation.name': 'publish',
    'messaging.operation.type': 'send',
    'messaging.destination.name': destination,
    'messaging.rabbitmq.destination.routing_key': routingKey,
    'messaging.message.body.size': bodySize,
  }
  if (messageId !== undefined) attributes['messaging.message.id'] = messageId
  return tracer.startSpan(`publish ${destination}`, { kind: SpanKind.PRODUCER, attributes }, parent)
}

/**
 * Ends a publish span when the publish settles: OK on the broker's confirm, ERROR with
 * `error.type` on a failure. A span that records nothing (no SDK, sampled out) is left alone:
 * the publish promise is returned as it is, with no extra callbacks.
 */
export function endWith(span: Span, sent: Promise<void>): Promise<void> {
  if (!span.isRecording()) return sent
  return sent.then(
    () => span.end(),
    (error: unknown) => {
      failSpan(span, error)
      span.end()
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
