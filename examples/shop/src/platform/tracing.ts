/**
 * Tracing in every shop process: the OpenTelemetry SDK's TracerProvider, registered as the
 * global one before any ballast component is created (the packages take the global provider
 * by default), with the AsyncLocalStorage context manager and the W3C trace-context
 * propagator, sampling every trace. Spans leave through the SDK's own OTLP/HTTP JSON exporter
 * to the receiver the supervisor runs on its control port (`traces.ts`), which keeps the last
 * traces for the ops page's waterfall.
 */
import {
  type Context,
  context,
  defaultTextMapGetter,
  defaultTextMapSetter,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { resourceFromAttributes } from '@opentelemetry/resources'
import {
  AlwaysOnSampler,
  BatchSpanProcessor,
  ParentBasedSampler,
  TracerProvider,
} from '@opentelemetry/sdk-trace'
import type { ShopConfig } from '../config.js'
import { CONTROL_TOKEN_HEADER, loadOrCreateControlToken } from '../control.js'

/** The instrumentation scope of the shop's own spans (HTTP server and client). */
export const SHOP_SCOPE = '@ballast/shop'

/** Where the receiver takes OTLP/HTTP spans: the supervisor's control port. */
export const TRACES_PATH = '/v1/traces'

export interface TracingSetup {
  readonly provider: TracerProvider
  /** Exports what is still queued and stops (call it before the process exits). */
  shutdown(): Promise<void>
}

export interface InstallTracingOptions {
  /** `service.name` of the resource: `gateway`, `order`, `payment`... */
  service: string
  /** `service.instance.id` of the resource: `order-2`. */
  instance: string
  /** The OTLP/HTTP traces URL (`http://127.0.0.1:<control port>/v1/traces`). */
  url: string
  /** Headers every export sends (the control token). */
  headers?: Record<string, string>
  /** Milliseconds between two exports of the queued spans. @default 500 */
  exportInterval?: number
}

/**
 * Installs the SDK for this process and registers it as the global tracer provider, context
 * manager and propagator. Call it first thing, before creating any ballast component.
 */
export function installTracing(options: InstallTracingOptions): TracingSetup {
  const contextManager = new AsyncLocalStorageContextManager().enable()
  context.setGlobalContextManager(contextManager)
  propagation.setGlobalPropagator(new W3CTraceContextPropagator())
  const exporter = new OTLPTraceExporter({
    url: options.url,
    headers: options.headers ?? {},
    timeoutMillis: 2000,
  })
  const provider = new TracerProvider({
    resource: resourceFromAttributes({
      'service.name': options.service,
      'service.instance.id': options.instance,
    }),
    // Every trace in the shop: it is a demo, and the ops page shows the last checkouts.
    sampler: new ParentBasedSampler({ root: new AlwaysOnSampler() }),
    spanLimits: { attributeValueLengthLimit: 512 },
    spanProcessors: [
      new BatchSpanProcessor({
        exporter,
        scheduledDelayMillis: options.exportInterval ?? 500,
        maxQueueSize: 4096,
        maxExportBatchSize: 512,
      }),
    ],
  })
  trace.setGlobalTracerProvider(provider)
  return {
    provider,
    async shutdown() {
      await provider.shutdown().catch(() => {})
    },
  }
}

/** {@link installTracing} for a shop process: its exports go to the supervisor's receiver. */
export function installShopTracing(
  config: ShopConfig,
  service: string,
  instance: string,
): TracingSetup {
  return installTracing({
    service,
    instance,
    url: `http://127.0.0.1:${config.controlPort}${TRACES_PATH}`,
    headers: { [CONTROL_TOKEN_HEADER]: loadOrCreateControlToken(config.runDir) },
  })
}

/** The shop's tracer, from the global provider at the time of the call. */
export function shopTracer() {
  return trace.getTracer(SHOP_SCOPE)
}

/**
 * The context an incoming request carries (W3C `traceparent`/`tracestate` through the global
 * propagator), or the root context when it carries none.
 */
export function contextFromHeaders(headers: Record<string, unknown>): Context {
  return propagation.extract(ROOT_CONTEXT, headers, defaultTextMapGetter)
}

/** Writes the context (`traceparent`, `tracestate`) into outgoing request headers. */
export function injectTraceHeaders(
  headers: Record<string, string>,
  ctx: Context = context.active(),
): Record<string, string> {
  propagation.inject(ctx, headers, defaultTextMapSetter)
  return headers
}

/** The `error.type` of a failure: its stable `code` when it has one, else its class name. */
export function errorType(error: unknown): string {
  if (typeof error === 'object' && error !== null) {
    const code = (error as { code?: unknown }).code
    if (typeof code === 'string' && code.length > 0) return code
    const name = (error as { name?: unknown }).name
    if (typeof name === 'string' && name.length > 0) return name
  }
  return '_OTHER'
}

/** Marks a span failed with `error.type` and status ERROR (the message only: no stack, no values). */
export function failSpan(span: Span, error: unknown): void {
  span.setAttribute('error.type', errorType(error))
  span.setStatus({
    code: SpanStatusCode.ERROR,
    message: error instanceof Error ? error.message : undefined,
  })
}

/**
 * `fetch` with a CLIENT span (`METHOD`, `server.address`, `server.port`,
 * `http.response.status_code`) whose context goes out in the request's headers, so the callee
 * continues the trace. The URL's path and query are not recorded (they may carry ids).
 */
export async function tracedFetch(url: string, init: RequestInit = {}): Promise<Response> {
  const method = (init.method ?? 'GET').toUpperCase()
  const target = new URL(url)
  const span = shopTracer().startSpan(method, {
    kind: SpanKind.CLIENT,
    attributes: {
      'http.request.method': method,
      'server.address': target.hostname,
      'server.port': Number(target.port || (target.protocol === 'https:' ? 443 : 80)),
      'url.scheme': target.protocol.slice(0, -1),
    },
  })
  const headers = injectTraceHeaders(
    Object.fromEntries(new Headers(init.headers).entries()),
    trace.setSpan(context.active(), span),
  )
  try {
    const res = await fetch(url, { ...init, headers })
    span.setAttribute('http.response.status_code', res.status)
    if (res.status >= 400) {
      span.setAttribute('error.type', String(res.status))
      span.setStatus({ code: SpanStatusCode.ERROR })
    }
    return res
  } catch (error) {
    failSpan(span, error)
    throw error
  } finally {
    span.end()
  }
}
