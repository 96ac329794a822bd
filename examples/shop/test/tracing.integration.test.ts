/**
 * Traces across the shop: every process exports its spans with the OpenTelemetry SDK's
 * OTLP/HTTP JSON exporter to the supervisor's receiver, and one checkout is one trace from the
 * gateway through the order request, the outbox relay's publish and the inventory, payment and
 * delivery workers. Also the receiver itself (a real exporter, real HTTP) and its bounds.
 */
import { randomBytes } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { ROOT_CONTEXT, SpanKind, trace } from '@opentelemetry/api'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { resourceFromAttributes } from '@opentelemetry/resources'
import { BatchSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { controlHeaders } from '../src/control.js'
import {
  handleTraceRequest,
  type ReceivedSpan,
  type StoredTrace,
  TraceStore,
} from '../src/traces.js'
import { renderWaterfalls, traceWaterfallSection, waterfallRows } from '../src/web/waterfall.js'
import { Client, eventually, shopHandle } from './fixture.js'

const shop = shopHandle(inject('shop'))
const control = `http://127.0.0.1:${shop.config.controlPort}`

/** A receiver on a port of its own, fed by the SDK's real exporter. */
async function receiver(store: TraceStore): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    void handleTraceRequest(store, req, res).then((handled) => {
      if (!handled) {
        res.statusCode = 404
        res.end('{}')
      }
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server }
}

function sdk(url: string, service: string): TracerProvider {
  return new TracerProvider({
    resource: resourceFromAttributes({
      'service.name': service,
      'service.instance.id': `${service}-1`,
    }),
    // Batches, as the shop's processes export (one request per span would run into the
    // exporter's limit of concurrent exports and drop spans); shutdown() sends what is queued.
    spanProcessors: [
      new BatchSpanProcessor({ exporter: new OTLPTraceExporter({ url: `${url}/v1/traces` }) }),
    ],
  })
}

describe('TraceStore', () => {
  let store: TraceStore
  let server: Server
  let url: string
  beforeAll(async () => {
    store = new TraceStore({ maxTraces: 3, maxKept: 2, maxSpansPerTrace: 4 })
    ;({ url, server } = await receiver(store))
  })
  afterAll(async () => {
    await new Promise((r) => server.close(r))
  })

  it("stores what the SDK's OTLP/HTTP JSON exporter sends: resource, scope, parents, kind, status and links", async () => {
    const provider = sdk(url, 'order')
    const tracer = provider.getTracer('@ballast/test')
    const parent = tracer.startSpan('POST /checkout', {
      kind: SpanKind.SERVER,
      attributes: { 'http.route': '/checkout', 'http.request.method': 'POST' },
    })
    const child = tracer.startSpan(
      'publish shop.events',
      { kind: SpanKind.PRODUCER, links: [{ context: parent.spanContext() }] },
      trace.setSpan(ROOT_CONTEXT, parent),
    )
    child.setStatus({ code: 2, message: 'nacked' })
    child.end()
    parent.end()
    await provider.shutdown()

    const stored = store.get(parent.spanContext().traceId) as StoredTrace
    expect(stored.spans.map((s) => s.name).sort()).toEqual([
      'POST /checkout',
      'publish shop.events',
    ])
    const [server_, producer] = ['POST /checkout', 'publish shop.events'].map(
      (n) => stored.spans.find((s) => s.name === n) as ReceivedSpan,
    ) as [ReceivedSpan, ReceivedSpan]
    expect(server_).toMatchObject({
      service: 'order',
      instance: 'order-1',
      scope: '@ballast/test',
      kind: 2,
      attributes: { 'http.route': '/checkout', 'http.request.method': 'POST' },
    })
    expect(server_.parentSpanId).toBeUndefined()
    expect(producer).toMatchObject({
      parentSpanId: parent.spanContext().spanId,
      kind: 4,
      status: { code: 2, message: 'nacked' },
      links: [{ traceId: parent.spanContext().traceId, spanId: parent.spanContext().spanId }],
    })
    expect(producer.end).toBeGreaterThanOrEqual(producer.start)
    // A POST /checkout server span makes its trace one to keep.
    expect(stored.kept).toBe(true)
    expect(waterfallRows(stored.spans).map((r) => [r.span.name, r.depth])).toEqual([
      ['POST /checkout', 0],
      ['publish shop.events', 1],
    ])
  })

  it('keeps at most maxTraces other traces and maxSpansPerTrace spans each, checkouts apart', async () => {
    const provider = sdk(url, 'catalog')
    const tracer = provider.getTracer('@ballast/test')
    const ids: string[] = []
    for (let i = 0; i < 5; i++) {
      const root = tracer.startSpan(`GET /product/:id ${i}`, { kind: SpanKind.SERVER })
      ids.push(root.spanContext().traceId)
      // Six children: two more than a trace holds.
      for (let c = 0; c < 6; c++)
        tracer.startSpan(`SELECT ${c}`, {}, trace.setSpan(ROOT_CONTEXT, root)).end()
      root.end()
    }
    await provider.shutdown()
    // The three most recent remain; the checkout kept by the test before is still there.
    expect(ids.map((id) => store.get(id) !== undefined)).toEqual([false, false, true, true, true])
    const last = store.get(ids[4] as string) as StoredTrace
    expect(last.spans).toHaveLength(4)
    expect(last.droppedSpans).toBe(3)
    expect(store.traces({ kept: true })).toHaveLength(1)
    expect(store.stats()).toEqual({ traces: 4, kept: 1, spans: 14 })
  })

  it('refuses malformed spans and bodies that are not OTLP JSON', async () => {
    const post = (body: string) =>
      fetch(`${url}/v1/traces`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
      })
    expect((await post('not json')).status).toBe(400)
    const partial = await post(
      JSON.stringify({
        resourceSpans: [
          {
            scopeSpans: [
              {
                spans: [
                  { traceId: 'zz', spanId: '1', name: 'bad', startTimeUnixNano: '1' },
                  {
                    traceId: 'a'.repeat(32),
                    spanId: 'b'.repeat(16),
                    name: 'good',
                    startTimeUnixNano: '1000000',
                    endTimeUnixNano: '2000000',
                  },
                ],
              },
            ],
          },
        ],
      }),
    )
    expect(partial.status).toBe(200)
    expect(await partial.json()).toMatchObject({ partialSuccess: { rejectedSpans: '1' } })
    expect(store.get('a'.repeat(32))?.spans.map((s) => [s.name, s.start, s.end])).toEqual([
      ['good', 1, 2],
    ])
  })
})

describe('the shop trace receiver', () => {
  it('refuses an export without the control token', async () => {
    const res = await fetch(`${control}/v1/traces`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"resourceSpans":[]}',
    })
    expect(res.status).toBe(403)
    const read = await fetch(`${control}/traces`)
    expect(read.status).toBe(403)
  })
})

/** The ancestors of a span in its trace, nearest first, up to a span whose parent is not there. */
function ancestors(spans: readonly ReceivedSpan[], span: ReceivedSpan): ReceivedSpan[] {
  const byId = new Map(spans.map((s) => [s.spanId, s]))
  const out: ReceivedSpan[] = []
  let at = span
  while (at.parentSpanId !== undefined && out.length < 100) {
    const parent = byId.get(at.parentSpanId)
    if (!parent) break
    out.push(parent)
    at = parent
  }
  return out
}

function describeSpan(s: ReceivedSpan): string {
  return `${s.instance}:${s.name}(${s.spanId}${s.parentSpanId ? ` <- ${s.parentSpanId}` : ''})`
}

describe('a checkout across the shop', () => {
  it('is one trace from the gateway through the order request, the outbox relay and the inventory, payment and delivery workers, with no secret in it', async () => {
    const c = new Client(shop.url)
    const email = `trace-${Date.now()}@shop.example`
    const password = `pw-${randomBytes(12).toString('hex')}`
    await c.get('/signup')
    const signup = await c.post('/signup', { name: 'Tracy', email, password })
    expect(signup.status).toBe(303)
    expect((await c.get('/product/250')).status).toBe(200)
    expect((await c.post('/cart/add', { productId: '250', qty: '1' })).status).toBe(303)
    expect((await c.get('/checkout')).text_).toContain('data-pay')

    // The test is the caller: its traceparent starts the trace the shop continues.
    const traceId = randomBytes(16).toString('hex')
    const callerSpanId = randomBytes(8).toString('hex')
    const paid = await c.pay({ traceparent: `00-${traceId}-${callerSpanId}-01` })
    expect(paid.status).toBe(303)
    const orderId = decodeURIComponent(
      String(paid.headers.get('location')).slice('/orders/'.length),
    )
    await eventually(
      async () => (await c.get(`/orders/${orderId}/status.json`)).text_.includes('shipped'),
      30_000,
      'the order to be shipped',
    )

    const read = async (path: string) => {
      const res = await fetch(`${control}${path}`, { headers: controlHeaders(shop.config.runDir) })
      return res.ok ? res.json() : undefined
    }
    const services = ['gateway', 'order', 'inventory', 'payment', 'delivery']
    // The workers' spans arrive with their process's next export (every 500 ms).
    let last: StoredTrace | undefined
    const found = await eventually(
      async () => {
        last = (await read(`/traces/${traceId}`)) as StoredTrace | undefined
        const seen = new Set(last?.spans.map((s) => s.service))
        return last && services.every((s) => seen.has(s)) ? last : undefined
      },
      15_000,
      'spans of gateway, order, inventory, payment and delivery in the checkout trace',
    ).catch((err: Error) => {
      const seen = [...new Set(last?.spans.map((s) => s.service))]
      throw new Error(
        `${err.message}; the trace ${traceId} has spans of [${seen.join(', ')}]: ${
          last?.spans.map(describeSpan).join(', ') ?? 'none'
        }`,
      )
    })
    const spans = found.spans

    // At least five processes (service.instance.id), among them each of the five services.
    expect(new Set(spans.map((s) => s.instance)).size).toBeGreaterThanOrEqual(5)

    // The order request: a SERVER span of the order service, under the gateway's spans, under the caller.
    const checkout = spans.find(
      (s) => s.service === 'order' && s.kind === 2 && s.name === 'POST /checkout',
    ) as ReceivedSpan
    expect(checkout, 'the order service span POST /checkout').toBeDefined()
    const above = ancestors(spans, checkout)
    expect(above.some((s) => s.service === 'gateway')).toBe(true)
    expect(above.at(-1)?.parentSpanId ?? checkout.parentSpanId).toBe(callerSpanId)

    // The outbox gap: the relay's publish (a PRODUCER span in an order process) continues the
    // trace of the request that wrote the row.
    const publishes = spans.filter((s) => s.service === 'order' && s.kind === 4)
    expect(publishes.map(describeSpan), 'the relay publish span of order.placed').not.toHaveLength(
      0,
    )
    const relayed = publishes.find((p) => ancestors(spans, p).includes(checkout))
    expect(
      relayed,
      `a relay publish whose parents lead to ${describeSpan(checkout)}: ${publishes
        .map((p) => `${describeSpan(p)} via [${ancestors(spans, p).map(describeSpan).join(', ')}]`)
        .join('; ')}`,
    ).toBeDefined()

    // Each worker's consumer span descends from the relay's publish.
    for (const service of ['inventory', 'payment', 'delivery']) {
      const consumed = spans.filter((s) => s.service === service && s.kind === 5)
      expect(
        consumed.some((s) => ancestors(spans, s).includes(relayed as ReceivedSpan)),
        `a ${service} consumer span under the relay's publish: ${consumed.map((s) => `${describeSpan(s)} via [${ancestors(spans, s).map(describeSpan).join(', ')}]`).join('; ')}`,
      ).toBe(true)
    }

    // No secret in any span the receiver holds: not the password, not the session cookie.
    const everything = (await read('/traces?limit=200')) as { traces: StoredTrace[] }
    const secrets = [password, ...[...c.cookies.values()].filter((v) => v.length >= 16)]
    expect(secrets.length).toBeGreaterThanOrEqual(2)
    for (const t of [found, ...everything.traces]) {
      for (const s of t.spans) {
        const text = JSON.stringify([s.name, s.attributes, s.status.message ?? ''])
        for (const secret of secrets) {
          expect(text.includes(secret), `${describeSpan(s)} carries a secret`).toBe(false)
          expect(text.includes(encodeURIComponent(secret))).toBe(false)
        }
      }
    }

    // The ops page's waterfall shows this checkout, one row per span.
    const section = (await traceWaterfallSection(shop.config, { limit: 20, maxRows: 500 })).value
    expect(section).toContain(`data-trace="${traceId}"`)
    const rendered = renderWaterfalls([found], { maxRows: 500 }).value
    expect(rendered.match(/<g data-span=/g)).toHaveLength(spans.length)
  }, 60_000)
})
