/**
 * Metrics in every shop process: the OpenTelemetry SDK's MeterProvider, registered as the
 * global one before any ballast component is created (the packages take the global provider
 * by default), read by the SDK's own Prometheus exporter, which serves `/metrics` on
 * 127.0.0.1 at the port the supervisor gave this process (`InstanceSpec.metricsPort`). The
 * shop's Prometheus (started by the supervisor, see `prometheusConfig()`) scrapes every
 * process with one job per service.
 */
import { metrics } from '@opentelemetry/api'
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus'
import { resourceFromAttributes } from '@opentelemetry/resources'
import { MeterProvider } from '@opentelemetry/sdk-metrics'
import type { InstanceSpec } from '../config.js'

export interface MetricsSetup {
  readonly provider: MeterProvider
  /** The exporter's scrape URL: `http://127.0.0.1:<metrics port>/metrics`. */
  readonly url: string
  /** Stops the exporter's server and the provider (call it before the process exits). */
  shutdown(): Promise<void>
}

export interface InstallMetricsOptions {
  /** `service.name` of the resource: `gateway`, `order`, `payment`... */
  service: string
  /** `service.instance.id` of the resource: `order-2`. */
  instance: string
  /** Where the exporter listens (127.0.0.1). */
  port: number
  /**
   * Registers the provider as the global one, which the ballast components take by default.
   * The supervisor keeps its own exporter local: its process also runs the tests.
   * @default true
   */
  global?: boolean
}

/**
 * Installs the SDK's MeterProvider for this process with the Prometheus exporter and registers
 * it as the global one. Resolves once the exporter's server listens, so a failure to bind the
 * port stops the process at start rather than leaving it unscraped.
 */
export async function installMetrics(o: InstallMetricsOptions): Promise<MetricsSetup> {
  let listening!: (err: Error | undefined) => void
  const started = new Promise<Error | undefined>((resolve) => {
    listening = resolve
  })
  const exporter = new PrometheusExporter(
    {
      host: '127.0.0.1',
      port: o.port,
      // The scope labels (otel_scope_name) stay: two packages may record the same semantic
      // convention name (http.server.request.duration in the shop's server and lb's proxy),
      // and without them their series would collide in one scrape.
    },
    (err) => listening(err ?? undefined),
  )
  const provider = new MeterProvider({
    resource: resourceFromAttributes({
      'service.name': o.service,
      'service.instance.id': o.instance,
      'service.namespace': 'ballast-shop',
    }),
    readers: [exporter],
  })
  const err = await started
  if (err) {
    await provider.shutdown().catch(() => {})
    throw new Error(`metrics: the Prometheus exporter could not listen on 127.0.0.1:${o.port}`, {
      cause: err,
    })
  }
  const global = o.global !== false
  if (global) metrics.setGlobalMeterProvider(provider)
  return {
    provider,
    url: `http://127.0.0.1:${o.port}/metrics`,
    async shutdown() {
      await provider.shutdown().catch(() => {})
      if (global) metrics.disable()
    },
  }
}

/** The metrics of one shop process, from its spec in the configuration. */
export function installShopMetrics(spec: InstanceSpec): Promise<MetricsSetup> {
  return installMetrics({ service: spec.service, instance: spec.name, port: spec.metricsPort })
}
