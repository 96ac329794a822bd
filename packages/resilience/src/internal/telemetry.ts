// The package's telemetry in one place: names, the Redis client spans of the rate limiter and
// the idempotency store, and the span events the policies add to the caller's span.
import {
  checkProviders,
  durationHistogram,
  errorType,
  failSpan,
  type Telemetry,
  type TelemetryOptions,
  telemetry,
} from '@ballast/shared'
import {
  type Attributes,
  context,
  type Histogram,
  type Meter,
  ProxyTracer,
  type Span,
  SpanKind,
  type Tracer,
  trace,
} from '@opentelemetry/api'
import type { Cluster, Redis } from 'ioredis'
import type { RedisLike } from './lua.js'
import { check } from './validate.js'

/** Instrumentation scope of every meter and tracer of the package. */
export const SCOPE = '@ballast/resilience'

/** A breaker's name (`ballast.resilience.breaker.name`): bounded, set by the application. */
export const BREAKER_NAME = 'ballast.resilience.breaker.name'
/** The names of the other components, one attribute each, set by the application. */
export const RETRY_NAME = 'ballast.resilience.retry.name'
export const TIMEOUT_NAME = 'ballast.resilience.timeout.name'
export const BULKHEAD_NAME = 'ballast.resilience.bulkhead.name'
export const FALLBACK_NAME = 'ballast.resilience.fallback.name'
export const RATE_LIMITER_NAME = 'ballast.resilience.rate_limiter.name'
export const IDEMPOTENCY_NAME = 'ballast.resilience.idempotency.name'
/** A degrader feature's name (from the application's configuration). */
export const FEATURE = 'ballast.resilience.feature'
/** A degrader level: `full`, `degraded`, `off`. */
export const LEVEL = 'ballast.resilience.level'
/** A breaker state: `closed`, `open`, `halfOpen`. */
export const STATE = 'ballast.resilience.state'
/** How a call, a claim or a write ended. */
export const OUTCOME = 'ballast.resilience.outcome'
/** A rate-limit decision: `allowed` or `limited`. */
export const DECISION = 'ballast.resilience.decision'
/** The attempt a retry starts (2 for the first retry). */
export const ATTEMPT = 'ballast.resilience.attempt'

/** Span event names: added to the caller's active span only when the thing happens. */
export const RETRIED_EVENT = 'ballast.resilience.retried'
export const REJECTED_EVENT = 'ballast.resilience.breaker.rejected'
export const OPENED_EVENT = 'ballast.resilience.breaker.opened'
export const TIMED_OUT_EVENT = 'ballast.resilience.timed_out'

/** The Redis latency histogram of the database client semantic conventions. */
export const DURATION = 'db.client.operation.duration'

/**
 * The meter and tracer of one component, after checking the providers it was given (a typo'd
 * option fails at construction, like every other option of the package).
 */
export function resilienceTelemetry(options: TelemetryOptions): Telemetry {
  return telemetry(SCOPE, checkProviders(check, options))
}

/**
 * Whether the tracer can record at all: false for the global tracer while no SDK is installed
 * (a `ProxyTracer` with no delegate). Lets a policy skip even reading the active context per
 * call when nobody collects spans.
 */
export function canRecord(tracer: Tracer): boolean {
  return !(tracer instanceof ProxyTracer)
}

/** Adds an event to the span active now, if any; costs one context lookup, paid only when called. */
export function addActiveSpanEvent(name: string, attributes: Attributes): void {
  const span = trace.getSpan(context.active())
  if (span?.isRecording()) span.addEvent(name, attributes)
}

/**
 * Attributes every Redis round trip carries: `db.system.name`, and for a standalone client the
 * server it talks to (a Cluster's node changes with the key's slot, so it is left out).
 */
export function redisAttributes(client: RedisLike): Attributes {
  const attributes: Attributes = { 'db.system.name': 'redis' }
  if ((client as Cluster).isCluster === true) return attributes
  const options = (client as Redis).options as
    | { host?: unknown; port?: unknown; path?: unknown }
    | undefined
  if (options !== undefined && typeof options.host === 'string' && options.path == null) {
    attributes['server.address'] = options.host
    // As the semantic conventions ask: the port only when it is not Redis's default.
    if (typeof options.port === 'number' && options.port !== 6379) {
      attributes['server.port'] = options.port
    }
  }
  return attributes
}

/** One kind of round trip: its span name (`EVALSHA claim`) and attributes, built once. */
export interface RoundTrip {
  readonly name: string
  readonly attributes: Attributes
  readonly failed: Map<string, Attributes>
}

/**
 * The Redis round trips of one component: each one a CLIENT span named after the command and
 * the script (`EVALSHA claim`, as `db.query.summary`) and a point of
 * `db.client.operation.duration`. Never a key, a scope or a fingerprint in an attribute: only
 * the command, the server, the component's name and what the reply decided.
 */
export class RedisRoundTrips {
  readonly #tracer: Tracer
  readonly #duration: Histogram
  readonly #base: Attributes

  constructor(tracer: Tracer, meter: Meter, redis: RedisLike, component: Attributes) {
    this.#tracer = tracer
    this.#duration = durationHistogram(
      meter,
      DURATION,
      'Duration of the Redis round trips of the rate limiter and the idempotency store',
    )
    this.#base = { ...redisAttributes(redis), ...component }
  }

  /** Describes one kind of round trip (call once per kind, at construction). */
  kind(command: string, script?: string): RoundTrip {
    const name = script === undefined ? command : `${command} ${script}`
    return {
      name,
      attributes: Object.freeze({
        ...this.#base,
        'db.operation.name': command,
        'db.query.summary': name,
      }),
      failed: new Map(),
    }
  }

  /**
   * Runs one round trip in a span (a child of the active span). `describe` adds what the
   * reply decided (a decision, an outcome) to the span when it records; a failure marks the
   * span and the duration point with `error.type`.
   */
  run<T>(
    trip: RoundTrip,
    send: () => Promise<T>,
    describe?: (span: Span, reply: T) => void,
  ): Promise<T> {
    const span = this.#tracer.startSpan(trip.name, {
      kind: SpanKind.CLIENT,
      attributes: trip.attributes,
    })
    const started = performance.now()
    let sent: Promise<T>
    try {
      sent = send()
    } catch (error) {
      sent = Promise.reject(error)
    }
    return sent.then(
      (reply) => {
        this.#duration.record((performance.now() - started) / 1000, trip.attributes)
        if (describe !== undefined && span.isRecording()) describe(span, reply)
        span.end()
        return reply
      },
      (error: unknown) => {
        const type = errorType(error)
        let attributes = trip.failed.get(type)
        if (attributes === undefined) {
          attributes = Object.freeze({ ...trip.attributes, 'error.type': type })
          // Bounded by the error codes the package and the client raise; capped anyway.
          if (trip.failed.size < 32) trip.failed.set(type, attributes)
        }
        this.#duration.record((performance.now() - started) / 1000, attributes)
        failSpan(span, error)
        span.end()
        throw error
      },
    )
  }
}
