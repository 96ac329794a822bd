// OpenTelemetry SDK pieces for tests: in-memory spans and metrics collected on demand, with the
// global context manager and W3C propagator installed (what an application's SDK setup does).
// A subpath of its own, so code that imports the main entry never loads the SDK.
import { type Attributes, context, propagation } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import {
  CompositePropagator,
  W3CBaggagePropagator,
  W3CTraceContextPropagator,
} from '@opentelemetry/core'
import {
  type DataPoint,
  DataPointType,
  type Histogram,
  MeterProvider,
  type MetricData,
  MetricReader,
} from '@opentelemetry/sdk-metrics'
import {
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
  TracerProvider,
} from '@opentelemetry/sdk-trace'

export type { ReadableSpan } from '@opentelemetry/sdk-trace'

let installed = false

/**
 * Installs, once per process, what an application's SDK setup installs globally: an
 * AsyncLocalStorage context manager (so a span started inside another is its child) and the
 * W3C trace-context and baggage propagators (so `traceparent` crosses processes).
 */
export function installOtelGlobals(): void {
  if (installed) return
  installed = true
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  propagation.setGlobalPropagator(
    new CompositePropagator({
      propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()],
    }),
  )
}

/** A metric reader that collects only when asked. */
class OnDemandReader extends MetricReader {
  protected async onShutdown(): Promise<void> {}
  protected async onForceFlush(): Promise<void> {}
}

/** One data point as a test reads it: its attributes and its value (a histogram's count and sum). */
export interface Point {
  readonly attributes: Attributes
  /** A counter's or gauge's value; a histogram's count. */
  readonly value: number
  /** A histogram's sum, else undefined. */
  readonly sum?: number
}

/** The SDK of one test file: pass its providers to the component under test. */
export interface TestTelemetry {
  readonly meterProvider: MeterProvider
  readonly tracerProvider: TracerProvider
  /** Every span ended so far, oldest first. */
  spans(): ReadableSpan[]
  /** Spans with this name. */
  spansNamed(name: string): ReadableSpan[]
  /** Forgets the spans ended so far. */
  resetSpans(): void
  /** Collects every instrument now. */
  collect(): Promise<MetricData[]>
  /** The points of one instrument, collected now (`[]` if it reported nothing). */
  points(name: string): Promise<Point[]>
  /**
   * The value of one instrument, collected now, summed over the points whose attributes include
   * `where` (a histogram gives its count). Undefined if no point matched.
   */
  value(name: string, where?: Attributes): Promise<number | undefined>
  shutdown(): Promise<void>
}

function toPoint(metric: MetricData, point: DataPoint<unknown>): Point {
  if (metric.dataPointType === DataPointType.HISTOGRAM) {
    const h = point.value as Histogram
    return { attributes: point.attributes, value: h.count, sum: h.sum }
  }
  return { attributes: point.attributes, value: point.value as number }
}

function matches(attributes: Attributes, where: Attributes): boolean {
  for (const [key, value] of Object.entries(where)) if (attributes[key] !== value) return false
  return true
}

/**
 * A MeterProvider and a TracerProvider backed by memory, for asserting a component's spans and
 * metrics; also installs the globals ({@link installOtelGlobals}).
 *
 * @example
 * ```ts
 * const otel = createTestTelemetry()
 * const cache = createTwoLevelCache({ ..., meterProvider: otel.meterProvider, tracerProvider: otel.tracerProvider })
 * expect(await otel.value('ballast.cache.hits', { 'ballast.cache.level': 'l1' })).toBe(1)
 * ```
 */
export function createTestTelemetry(): TestTelemetry {
  installOtelGlobals()
  const reader = new OnDemandReader()
  const meterProvider = new MeterProvider({ readers: [reader] })
  const exporter = new InMemorySpanExporter()
  const tracerProvider = new TracerProvider({
    spanProcessors: [new SimpleSpanProcessor({ exporter })],
  })
  const collect = async (): Promise<MetricData[]> => {
    const { resourceMetrics } = await reader.collect()
    return resourceMetrics.scopeMetrics.flatMap((s) => s.metrics)
  }
  const points = async (name: string): Promise<Point[]> => {
    const all = await collect()
    return all
      .filter((m) => m.descriptor.name === name)
      .flatMap((m) => (m.dataPoints as DataPoint<unknown>[]).map((p) => toPoint(m, p)))
  }
  return {
    meterProvider,
    tracerProvider,
    spans: () => exporter.getFinishedSpans().slice(),
    spansNamed: (name) => exporter.getFinishedSpans().filter((s) => s.name === name),
    resetSpans: () => exporter.reset(),
    collect,
    points,
    async value(name, where = {}) {
      const found = (await points(name)).filter((p) => matches(p.attributes, where))
      if (found.length === 0) return undefined
      return found.reduce((sum, p) => sum + p.value, 0)
    },
    async shutdown() {
      await Promise.all([meterProvider.shutdown(), tracerProvider.shutdown()])
    },
  }
}
