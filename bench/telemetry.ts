/**
 * The telemetry setups every package's overhead benchmark compares, each in the same run as the
 * others: no SDK (the global no-op providers: what a user who never installs OpenTelemetry
 * gets), an SDK with metrics only (a reader that collects every second, as a Prometheus
 * scrape would), and traces sampled at 100% and at 1% (a batch processor into an exporter that
 * drops what it gets, so the cost measured is ours and the SDK's, not an exporter's).
 */
import type {
  MeterProvider as MeterProviderApi,
  TracerProvider as TracerProviderApi,
} from '@opentelemetry/api'
import { context, propagation } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { ExportResultCode, W3CTraceContextPropagator } from '@opentelemetry/core'
import {
  AggregationTemporality,
  MeterProvider,
  type MetricReader,
  PeriodicExportingMetricReader,
  type PushMetricExporter,
} from '@opentelemetry/sdk-metrics'
import {
  BatchSpanProcessor,
  ParentBasedSampler,
  type ReadableSpan,
  type SpanExporter,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from '@opentelemetry/sdk-trace'

/** One setup: the options to give a component (empty for "no SDK"), and how to tear it down. */
export interface TelemetryMode {
  name: 'off' | 'metrics' | 'traces 100%' | 'traces 1%'
  options: { meterProvider?: MeterProviderApi; tracerProvider?: TracerProviderApi }
  shutdown(): Promise<void>
}

let globalsInstalled = false
/** The context manager and propagator an application's SDK setup installs (for the traced modes). */
function installGlobals(): void {
  if (globalsInstalled) return
  globalsInstalled = true
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  propagation.setGlobalPropagator(new W3CTraceContextPropagator())
}

const dropSpans: SpanExporter = {
  export(_spans: ReadableSpan[], done) {
    done({ code: ExportResultCode.SUCCESS })
  },
  async shutdown() {},
}

const dropMetrics: PushMetricExporter = {
  export(_metrics, done) {
    done({ code: ExportResultCode.SUCCESS })
  },
  async forceFlush() {},
  async shutdown() {},
  selectAggregationTemporality: () => AggregationTemporality.CUMULATIVE,
}

function metricsProvider(): MeterProvider {
  const reader: MetricReader = new PeriodicExportingMetricReader({
    exporter: dropMetrics,
    exportIntervalMillis: 1000,
  })
  return new MeterProvider({ readers: [reader] })
}

function tracesProvider(ratio: number): TracerProvider {
  installGlobals()
  return new TracerProvider({
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) }),
    spanProcessors: [new BatchSpanProcessor({ exporter: dropSpans })],
  })
}

/** Makes one of the setups; call `shutdown()` when the case is done. */
export function telemetryMode(name: TelemetryMode['name']): TelemetryMode {
  if (name === 'off') return { name, options: {}, shutdown: async () => {} }
  if (name === 'metrics') {
    const meterProvider = metricsProvider()
    return { name, options: { meterProvider }, shutdown: () => meterProvider.shutdown() }
  }
  const meterProvider = metricsProvider()
  const tracerProvider = tracesProvider(name === 'traces 100%' ? 1 : 0.01)
  return {
    name,
    options: { meterProvider, tracerProvider },
    async shutdown() {
      await Promise.all([meterProvider.shutdown(), tracerProvider.shutdown()])
    },
  }
}

/** The four setups, in the order the tables list them. */
export const TELEMETRY_MODES: readonly TelemetryMode['name'][] = [
  'off',
  'metrics',
  'traces 100%',
  'traces 1%',
]
