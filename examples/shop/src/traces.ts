/**
 * The shop's trace receiver, run by the supervisor on its control port (an OpenTelemetry
 * Collector is not available here): every process's SDK exports its spans with the standard
 * OTLP/HTTP JSON exporter (`POST /v1/traces`, an `ExportTraceServiceRequest`), and this store
 * keeps the last traces in memory, bounded in traces and in spans per trace, for the ops page's
 * waterfall (`GET /traces`). The control port's checks (token, loopback Host, JSON) guard both.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { gunzipSync } from 'node:zlib'

/** An attribute value as OTLP carries it, read into plain JSON. */
export type AttributeValue =
  | string
  | number
  | boolean
  | null
  | AttributeValue[]
  | { [key: string]: AttributeValue }

/** One span as received, with the resource and scope that sent it. */
export interface ReceivedSpan {
  traceId: string
  spanId: string
  /** Absent on a root span. */
  parentSpanId?: string
  name: string
  /** OTLP `SpanKind`: 1 internal, 2 server, 3 client, 4 producer, 5 consumer. */
  kind: number
  /** The resource's `service.name`. */
  service: string
  /** The resource's `service.instance.id` (one per process in the shop). */
  instance: string
  /** The instrumentation scope: `@ballast/mq`, `@ballast/shop`... */
  scope: string
  /** Milliseconds since the epoch (fractions kept). */
  start: number
  end: number
  attributes: Record<string, AttributeValue>
  /** OTLP `StatusCode`: 0 unset, 1 ok, 2 error. */
  status: { code: number; message?: string }
  links: { traceId: string; spanId: string }[]
}

/** One trace: its spans in arrival order. */
export interface StoredTrace {
  traceId: string
  spans: ReceivedSpan[]
  /** Spans refused because the trace already held `maxSpansPerTrace`. */
  droppedSpans: number
  /** Whether a span of it matched `keep` (a checkout): such traces are kept apart, longer. */
  kept: boolean
  /** When the last span arrived (ms since the epoch). */
  updatedAt: number
}

export interface TraceStoreOptions {
  /**
   * How many traces are kept (health checks and page views included); the least recently
   * updated goes first.
   *
   * @default 200
   */
  maxTraces?: number
  /** How many traces matched by `keep` are kept besides, the oldest going first. @default 20 */
  maxKept?: number
  /** Spans kept per trace; more are counted in `droppedSpans`. @default 1000 */
  maxSpansPerTrace?: number
  /** Which spans make their trace one to keep longer. @default a `POST /checkout` server span */
  keep?: (span: ReceivedSpan) => boolean
}

export const DEFAULT_TRACE_STORE_OPTIONS = Object.freeze({
  maxTraces: 200,
  maxKept: 20,
  maxSpansPerTrace: 1000,
  keep: isCheckoutSpan,
})

/** The order service's checkout request: the span a checkout trace is found by. */
export function isCheckoutSpan(span: ReceivedSpan): boolean {
  return (
    span.kind === 2 &&
    span.attributes['http.route'] === '/checkout' &&
    span.attributes['http.request.method'] === 'POST'
  )
}

/** What one export did: spans stored, and spans refused (malformed, or over a trace's bound). */
export interface IngestResult {
  accepted: number
  rejected: number
}

const TRACE_ID = /^[0-9a-f]{32}$/
const SPAN_ID = /^[0-9a-f]{16}$/

/** The last traces of the shop, bounded: at most `maxTraces + maxKept` traces of `maxSpansPerTrace` spans. */
export class TraceStore {
  readonly #options: Required<TraceStoreOptions>
  /** Insertion order is recency: a trace is moved to the end when a span arrives. */
  readonly #recent = new Map<string, StoredTrace>()
  readonly #kept = new Map<string, StoredTrace>()

  constructor(options: TraceStoreOptions = {}) {
    this.#options = {
      maxTraces: options.maxTraces ?? DEFAULT_TRACE_STORE_OPTIONS.maxTraces,
      maxKept: options.maxKept ?? DEFAULT_TRACE_STORE_OPTIONS.maxKept,
      maxSpansPerTrace: options.maxSpansPerTrace ?? DEFAULT_TRACE_STORE_OPTIONS.maxSpansPerTrace,
      keep: options.keep ?? DEFAULT_TRACE_STORE_OPTIONS.keep,
    }
  }

  /** Stores the spans of an OTLP `ExportTraceServiceRequest` (JSON encoding). */
  ingest(request: unknown): IngestResult {
    const result: IngestResult = { accepted: 0, rejected: 0 }
    for (const resourceSpans of list(field(request, 'resourceSpans'))) {
      const resource = attributesOf(field(field(resourceSpans, 'resource'), 'attributes'))
      const service = String(resource['service.name'] ?? 'unknown')
      const instance = String(resource['service.instance.id'] ?? service)
      for (const scopeSpans of list(field(resourceSpans, 'scopeSpans'))) {
        const scope = String(field(field(scopeSpans, 'scope'), 'name') ?? '')
        for (const raw of list(field(scopeSpans, 'spans'))) {
          const span = readSpan(raw, service, instance, scope)
          if (span === undefined || !this.#add(span)) result.rejected++
          else result.accepted++
        }
      }
    }
    return result
  }

  #add(span: ReceivedSpan): boolean {
    const now = Date.now()
    let stored = this.#kept.get(span.traceId) ?? this.#recent.get(span.traceId)
    if (stored === undefined) {
      stored = { traceId: span.traceId, spans: [], droppedSpans: 0, kept: false, updatedAt: now }
    }
    if (stored.spans.length >= this.#options.maxSpansPerTrace) {
      stored.droppedSpans++
      return false
    }
    stored.spans.push(span)
    stored.updatedAt = now
    if (!stored.kept && this.#options.keep(span)) {
      stored.kept = true
      this.#recent.delete(span.traceId)
      this.#kept.set(span.traceId, stored)
      for (const id of this.#kept.keys()) {
        if (this.#kept.size <= this.#options.maxKept) break
        this.#kept.delete(id)
      }
    } else if (!stored.kept) {
      this.#recent.delete(span.traceId)
      this.#recent.set(span.traceId, stored)
      for (const id of this.#recent.keys()) {
        if (this.#recent.size <= this.#options.maxTraces) break
        this.#recent.delete(id)
      }
    }
    return true
  }

  /** A trace by id. */
  get(traceId: string): StoredTrace | undefined {
    return this.#kept.get(traceId) ?? this.#recent.get(traceId)
  }

  /** The last traces, newest first: the kept ones (checkouts) only when `kept` is true. */
  traces(filter: { kept?: boolean; limit?: number } = {}): StoredTrace[] {
    const all =
      filter.kept === true
        ? [...this.#kept.values()]
        : [...this.#kept.values(), ...this.#recent.values()]
    all.sort((a, b) => firstStart(b) - firstStart(a))
    return all.slice(0, filter.limit ?? all.length)
  }

  /** How much the store holds. */
  stats(): { traces: number; kept: number; spans: number } {
    let spans = 0
    for (const t of this.#recent.values()) spans += t.spans.length
    for (const t of this.#kept.values()) spans += t.spans.length
    return { traces: this.#recent.size + this.#kept.size, kept: this.#kept.size, spans }
  }
}

function firstStart(t: StoredTrace): number {
  let min = Number.POSITIVE_INFINITY
  for (const s of t.spans) if (s.start < min) min = s.start
  return min
}

function field(value: unknown, key: string): unknown {
  return typeof value === 'object' && value !== null
    ? (value as Record<string, unknown>)[key]
    : undefined
}

function list(value: unknown): unknown[] {
  return Array.isArray(value) ? value : []
}

/** OTLP JSON's `AnyValue` as plain JSON (an `intValue` may be a string: 64-bit). */
function anyValue(value: unknown, depth = 0): AttributeValue {
  if (typeof value !== 'object' || value === null || depth > 4) return null
  const v = value as Record<string, unknown>
  if (typeof v.stringValue === 'string') return v.stringValue
  if (typeof v.boolValue === 'boolean') return v.boolValue
  if (v.intValue !== undefined) return Number(v.intValue)
  if (v.doubleValue !== undefined) return Number(v.doubleValue)
  if (v.arrayValue !== undefined)
    return list(field(v.arrayValue, 'values')).map((x) => anyValue(x, depth + 1))
  if (v.kvlistValue !== undefined) return attributesOf(field(v.kvlistValue, 'values'), depth + 1)
  if (typeof v.bytesValue === 'string') return v.bytesValue
  return null
}

function attributesOf(value: unknown, depth = 0): Record<string, AttributeValue> {
  const out: Record<string, AttributeValue> = {}
  for (const kv of list(value)) {
    const key = field(kv, 'key')
    if (typeof key === 'string') out[key] = anyValue(field(kv, 'value'), depth)
  }
  return out
}

/** Nanoseconds (a decimal string or a number) as milliseconds since the epoch. */
function millis(value: unknown): number | undefined {
  if (typeof value === 'number' && Number.isFinite(value)) return value / 1e6
  if (typeof value === 'string' && /^\d{1,20}$/.test(value)) {
    const nanos = BigInt(value)
    return Number(nanos / 1000n) / 1000
  }
  return undefined
}

function readSpan(
  raw: unknown,
  service: string,
  instance: string,
  scope: string,
): ReceivedSpan | undefined {
  const traceId = field(raw, 'traceId')
  const spanId = field(raw, 'spanId')
  const parent = field(raw, 'parentSpanId')
  const start = millis(field(raw, 'startTimeUnixNano'))
  const end = millis(field(raw, 'endTimeUnixNano'))
  if (typeof traceId !== 'string' || !TRACE_ID.test(traceId)) return undefined
  if (typeof spanId !== 'string' || !SPAN_ID.test(spanId)) return undefined
  if (start === undefined || end === undefined) return undefined
  const status = field(raw, 'status')
  const message = field(status, 'message')
  const span: ReceivedSpan = {
    traceId,
    spanId,
    name: String(field(raw, 'name') ?? ''),
    kind: Number(field(raw, 'kind') ?? 0),
    service,
    instance,
    scope,
    start,
    end: Math.max(start, end),
    attributes: attributesOf(field(raw, 'attributes')),
    status: {
      code: Number(field(status, 'code') ?? 0),
      ...(typeof message === 'string' && message !== '' ? { message } : {}),
    },
    links: list(field(raw, 'links')).flatMap((l) => {
      const t = field(l, 'traceId')
      const s = field(l, 'spanId')
      return typeof t === 'string' && TRACE_ID.test(t) && typeof s === 'string' && SPAN_ID.test(s)
        ? [{ traceId: t, spanId: s }]
        : []
    }),
  }
  if (typeof parent === 'string' && SPAN_ID.test(parent)) span.parentSpanId = parent
  return span
}

/** The largest export body taken (the SDK's batches of 512 spans stay well below). */
const MAX_EXPORT_BYTES = 8 * 1024 * 1024

/**
 * Serves the receiver's routes on an already-checked control request: `POST /v1/traces`
 * (OTLP/HTTP JSON, gzip or not), `GET /traces?kept=1&limit=N` and `GET /traces/<traceId>`.
 * Returns false when the request is for another route.
 */
export async function handleTraceRequest(
  store: TraceStore,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<boolean> {
  const url = new URL(req.url ?? '/', 'http://control.invalid')
  const reply = (status: number, value: unknown) => {
    res.statusCode = status
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify(value))
  }
  if (url.pathname === '/v1/traces') {
    if (req.method !== 'POST') {
      reply(405, { error: 'POST an ExportTraceServiceRequest' })
      return true
    }
    const chunks: Buffer[] = []
    let size = 0
    for await (const chunk of req) {
      size += (chunk as Buffer).length
      if (size > MAX_EXPORT_BYTES) {
        reply(413, { error: 'export too large' })
        return true
      }
      chunks.push(chunk as Buffer)
    }
    let request: unknown
    try {
      const body = Buffer.concat(chunks)
      const gzip = String(req.headers['content-encoding'] ?? '').toLowerCase() === 'gzip'
      request = JSON.parse(
        (gzip ? gunzipSync(body, { maxOutputLength: MAX_EXPORT_BYTES }) : body).toString('utf8'),
      )
    } catch {
      reply(400, { error: 'not an OTLP/HTTP JSON ExportTraceServiceRequest' })
      return true
    }
    const { rejected } = store.ingest(request)
    // The OTLP response: empty on success, partialSuccess when spans were refused.
    reply(
      200,
      rejected === 0
        ? {}
        : {
            partialSuccess: {
              rejectedSpans: String(rejected),
              errorMessage: 'malformed spans, or traces over their span bound',
            },
          },
    )
    return true
  }
  if (req.method === 'GET' && url.pathname === '/traces') {
    const limit = Math.min(Math.max(Number(url.searchParams.get('limit') ?? 20) || 20, 1), 200)
    reply(200, {
      stats: store.stats(),
      traces: store.traces({ kept: url.searchParams.get('kept') === '1', limit }),
    })
    return true
  }
  const one = /^\/traces\/([0-9a-f]{32})$/.exec(url.pathname)
  if (req.method === 'GET' && one) {
    const trace = store.get(one[1] as string)
    if (trace) reply(200, trace)
    else reply(404, { error: 'no such trace (it may have been evicted)' })
    return true
  }
  return false
}
