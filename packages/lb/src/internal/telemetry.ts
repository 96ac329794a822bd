import { randomUUID } from 'node:crypto'
import { injectContext } from '@ballast/shared'
import {
  type Attributes,
  type Context,
  type Span,
  SpanKind,
  type Tracer,
  trace,
} from '@opentelemetry/api'
import type { Endpoint } from '../endpoint.js'

/** The instrumentation scope of every meter and tracer of the package. */
export const SCOPE = '@ballast/lb'

/**
 * Attributes a proxy gives the balancers it creates (`ballast.lb.route`), under a symbol so they
 * are no public option: two routes may list the same origin, and their endpoints must not be
 * reported as one.
 */
export const BALANCER_ATTRIBUTES: unique symbol = Symbol('ballast.lb.balancerAttributes')

const KNOWN_METHODS = new Set([
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'DELETE',
  'CONNECT',
  'OPTIONS',
  'TRACE',
  'PATCH',
])

/**
 * The `http.request.method` attribute: one of the methods RFC 9110 and RFC 5789 define, else
 * `_OTHER`, as the semantic conventions ask (a method is client input: unbounded otherwise).
 */
export function methodAttribute(method: string): string {
  return KNOWN_METHODS.has(method) ? method : '_OTHER'
}

/** The span name of an HTTP request without a route template: the method, or `HTTP`. */
export function spanName(methodAttr: string): string {
  return methodAttr === '_OTHER' ? 'HTTP' : methodAttr
}

/** Where an endpoint's origin points, as the `server.*` attributes say it. */
export interface EndpointAddress {
  readonly address: string
  readonly port: number
  readonly scheme: string
}

const addresses = new WeakMap<Endpoint<string>, EndpointAddress>()

/** The `server.address`, `server.port` and `url.scheme` of an endpoint's origin, parsed once. */
export function endpointAddress(endpoint: Endpoint<string>): EndpointAddress {
  let found = addresses.get(endpoint)
  if (found === undefined) {
    let url: URL | undefined
    try {
      url = new URL(endpoint.value)
    } catch {
      url = undefined
    }
    const scheme = url?.protocol === 'https:' ? 'https' : 'http'
    found = {
      address: url?.hostname.replace(/^\[|\]$/g, '') ?? endpoint.id,
      port:
        url === undefined
          ? 0
          : url.port === ''
            ? scheme === 'https'
              ? 443
              : 80
            : Number(url.port),
      scheme,
    }
    addresses.set(endpoint, found)
  }
  return found
}

/** Request ids kept as they come: up to 128 letters, digits, `-`, `_`, `.` and `:`. */
const SANE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

/**
 * The `x-request-id` to send: the incoming one when it is a sane token, else a new random UUID
 * (a value with spaces, quotes, control characters or of any length could be written into logs
 * downstream, so it is replaced rather than passed on).
 */
export function requestIdFor(incoming: string | string[] | undefined): string {
  return typeof incoming === 'string' && SANE_REQUEST_ID.test(incoming) ? incoming : randomUUID()
}

/** Whether a request id arrived and is kept as it is. */
export function isSaneRequestId(incoming: string | string[] | undefined): incoming is string {
  return typeof incoming === 'string' && SANE_REQUEST_ID.test(incoming)
}

/** The trace-context headers a propagator may write, dropped from a request when it does. */
const TRACE_HEADERS = new Set(['traceparent', 'tracestate'])

/**
 * Starts the CLIENT span of one attempt under `parent` and writes its context into `carrier`
 * (W3C `traceparent`/`tracestate` with the usual SDK setup; nothing without a propagator).
 */
export function startAttemptSpan(
  tracer: Tracer,
  name: string,
  attributes: Attributes,
  parent: Context,
  carrier: Record<string, unknown>,
): Span {
  const span = tracer.startSpan(name, { kind: SpanKind.CLIENT, attributes }, parent)
  injectContext(carrier, trace.setSpan(parent, span))
  return span
}

/**
 * The upstream headers (a flat name/value list) with the injected ones: when the propagator wrote
 * anything, the incoming `traceparent`/`tracestate` (and any header it wrote) are replaced; when
 * it wrote nothing (no SDK), the list is returned as it is, so an incoming `traceparent` goes on
 * unchanged.
 */
export function withInjected(headers: string[], injected: Record<string, unknown>): string[] {
  const names = Object.keys(injected)
  if (names.length === 0) return headers
  const out: string[] = []
  for (let i = 0; i < headers.length; i += 2) {
    const lower = headers[i]!.toLowerCase()
    if (TRACE_HEADERS.has(lower) || names.includes(lower)) continue
    out.push(headers[i]!, headers[i + 1]!)
  }
  for (const name of names) out.push(name, String(injected[name]))
  return out
}
