import {
  type Attributes,
  type Context,
  context,
  defaultTextMapGetter,
  defaultTextMapSetter,
  type Histogram,
  type Meter,
  type MeterProvider,
  metrics,
  type Observable,
  propagation,
  type Span,
  type SpanOptions,
  SpanStatusCode,
  type TextMapGetter,
  type Tracer,
  type TracerProvider,
  trace,
} from '@opentelemetry/api'
import type { Checks } from './validate.js'

/**
 * The telemetry options every ballast component takes. Both default to the global providers,
 * which are no-ops until the application installs an OpenTelemetry SDK: a library reports,
 * the application decides where it goes.
 */
export interface TelemetryOptions {
  /**
   * Where the component's metrics go.
   *
   * @default the global MeterProvider (`metrics.getMeterProvider()`, a no-op until an SDK is installed)
   */
  meterProvider?: MeterProvider | undefined
  /**
   * Where the component's spans go.
   *
   * @default the global TracerProvider (`trace.getTracerProvider()`, a no-op until an SDK is installed)
   */
  tracerProvider?: TracerProvider | undefined
}

/** A component's meter and tracer, named after its package. */
export interface Telemetry {
  readonly meter: Meter
  readonly tracer: Tracer
}

/**
 * Checks a component's `meterProvider` and `tracerProvider` for the one method each is used for
 * (duck-typed: a provider from another copy of `@opentelemetry/api` is as good), so a wrong
 * value fails at construction with the package's own error, not at the first collection.
 * Returns the two.
 */
export function checkProviders(
  check: Pick<Checks, 'invalid'>,
  options: TelemetryOptions,
): TelemetryOptions {
  const { meterProvider, tracerProvider } = options
  if (
    meterProvider !== undefined &&
    typeof (meterProvider as { getMeter?: unknown } | null)?.getMeter !== 'function'
  )
    check.invalid('meterProvider', 'an OpenTelemetry MeterProvider', meterProvider)
  if (
    tracerProvider !== undefined &&
    typeof (tracerProvider as { getTracer?: unknown } | null)?.getTracer !== 'function'
  )
    check.invalid('tracerProvider', 'an OpenTelemetry TracerProvider', tracerProvider)
  return { meterProvider, tracerProvider }
}

/**
 * The meter and tracer of one component: from the providers given in its options, or the
 * global ones at construction (install the SDK before creating components, as with any
 * OpenTelemetry instrumentation).
 */
export function telemetry(scope: string, options: TelemetryOptions, version?: string): Telemetry {
  const meterProvider = options.meterProvider ?? metrics.getMeterProvider()
  const tracerProvider = options.tracerProvider ?? trace.getTracerProvider()
  return {
    meter: meterProvider.getMeter(scope, version),
    tracer: tracerProvider.getTracer(scope, version),
  }
}

/**
 * Bucket boundaries (seconds) for the duration histograms: from half a millisecond (an L2 hit
 * on loopback) to ten seconds (a timeout), as the HTTP semantic conventions advise.
 */
export const DURATION_BUCKETS: readonly number[] = Object.freeze([
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
])

/** A histogram of durations in seconds with {@link DURATION_BUCKETS}. */
export function durationHistogram(meter: Meter, name: string, description: string): Histogram {
  return meter.createHistogram(name, {
    description,
    unit: 's',
    advice: { explicitBucketBoundaries: [...DURATION_BUCKETS] },
  })
}

/** What an observed instrument is: a count that only grows, one that goes both ways, a level. */
export type ObservedKind = 'counter' | 'upDownCounter' | 'gauge'

/** One instrument read at collection time. */
export interface ObservedInstrument {
  readonly kind: ObservedKind
  readonly description: string
  /** UCUM unit: `'{hit}'`, `'By'`, `'s'`. */
  readonly unit?: string
}

/** Records one observation of the instrument named `name`. */
export type Observe<K extends string> = (name: K, value: number, attributes?: Attributes) => void

/**
 * Registers observable instruments that one callback reads together when the SDK collects,
 * usually from the counters `stats()` already keeps: the operations that move those counters
 * pay nothing for metrics, with or without an SDK. Returns the function that unregisters them
 * (call it from `close()`).
 *
 * @example
 * ```ts
 * const stop = observe(meter, { 'ballast.cache.hits': { kind: 'counter', description: 'Hits', unit: '{hit}' } },
 *   (record) => record('ballast.cache.hits', stats.hits, { 'ballast.cache.level': 'l1' }))
 * ```
 */
export function observe<K extends string>(
  meter: Meter,
  instruments: Readonly<Record<K, ObservedInstrument>>,
  collect: (record: Observe<K>) => void,
): () => void {
  const created = new Map<K, Observable>()
  for (const name of Object.keys(instruments) as K[]) {
    const { kind, description, unit } = instruments[name]
    const options = unit === undefined ? { description } : { description, unit }
    created.set(
      name,
      kind === 'counter'
        ? meter.createObservableCounter(name, options)
        : kind === 'upDownCounter'
          ? meter.createObservableUpDownCounter(name, options)
          : meter.createObservableGauge(name, options),
    )
  }
  const list = [...created.values()]
  const callback = (result: {
    observe(o: Observable, value: number, attributes?: Attributes): void
  }) => {
    collect((name, value, attributes) => {
      const instrument = created.get(name)
      if (instrument !== undefined) result.observe(instrument, value, attributes)
    })
  }
  meter.addBatchObservableCallback(callback, list)
  return () => meter.removeBatchObservableCallback(callback, list)
}

/**
 * The `error.type` of a failure, as the semantic conventions ask: the error's stable `code`
 * where it has one (`E_CACHE_L2_UNAVAILABLE`, `ECONNRESET`), else its class name.
 */
export function errorType(error: unknown): string {
  if (typeof error === 'object' && error !== null) {
    const code = (error as { code?: unknown }).code
    if (typeof code === 'string' && code.length > 0) return code
    const name = (error as { name?: unknown }).name
    if (typeof name === 'string' && name.length > 0) return name
  }
  return '_OTHER'
}

/** Marks a span failed: `error.type`, status ERROR with the error's message; no stack, no values. */
export function failSpan(span: Span, error: unknown): void {
  span.setAttribute('error.type', errorType(error))
  span.setStatus({
    code: SpanStatusCode.ERROR,
    message: error instanceof Error ? error.message : undefined,
  })
}

/**
 * Runs `fn` in a new span that is the active one while it runs (so spans and injected headers
 * below it are its children), marks it failed if `fn` throws or rejects, and ends it.
 */
export async function inSpan<T>(
  tracer: Tracer,
  name: string,
  options: SpanOptions,
  fn: (span: Span) => Promise<T> | T,
  parent: Context = context.active(),
): Promise<T> {
  const span = tracer.startSpan(name, options, parent)
  try {
    return await context.with(trace.setSpan(parent, span), fn, undefined, span)
  } catch (error) {
    failSpan(span, error)
    throw error
  } finally {
    span.end()
  }
}

/**
 * Writes the context (W3C `traceparent` and `tracestate` with the usual SDK setup) into a
 * carrier: message headers, an outbox row's headers, an outgoing request's headers. Uses the
 * global propagator, which is a no-op until the application installs one.
 */
export function injectContext(
  carrier: Record<string, unknown>,
  ctx: Context = context.active(),
): void {
  propagation.inject(ctx, carrier, defaultTextMapSetter)
}

/** Reads a context written by {@link injectContext} (or any W3C-speaking peer) from a carrier. */
export function extractContext(
  carrier: Record<string, unknown> | undefined,
  ctx: Context = context.active(),
): Context {
  if (carrier === undefined) return ctx
  return propagation.extract(ctx, carrier, defaultTextMapGetter as TextMapGetter<unknown>)
}
