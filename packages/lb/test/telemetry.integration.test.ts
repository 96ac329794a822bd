import { tracingChannel } from 'node:diagnostics_channel'
import type { AddressInfo } from 'node:net'
import { createTestTelemetry, type ReadableSpan, type TestTelemetry } from '@ballast/testkit/otel'
import { context, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api'
import { request } from 'undici'
import { afterEach, describe, expect, it } from 'vitest'
import {
  type BalancedClient,
  type BalancedClientOptions,
  type CachedResponse,
  createBalancedClient,
  createBalancer,
  createHealthChecker,
  createProxy,
  InvalidArgumentError,
  type ProxyOptions,
  type ReverseProxy,
} from '../src/index.js'
import { type Backend, startBackends } from './fixtures/backend.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

let cleanup: Array<() => Promise<void>> = []
let otel: TestTelemetry
afterEach(async () => {
  for (const fn of cleanup.reverse()) await fn()
  cleanup = []
  await otel?.shutdown()
})

async function backends(...names: string[]): Promise<Backend[]> {
  const list = await startBackends(...names)
  cleanup.push(async () => {
    await Promise.all(list.map((b) => b.kill()))
  })
  return list
}

/** A proxy reporting to a fresh in-memory SDK (`otel`). */
async function proxy(options: ProxyOptions): Promise<{ proxy: ReverseProxy; url: string }> {
  otel = createTestTelemetry()
  const p = createProxy({
    meterProvider: otel.meterProvider,
    tracerProvider: otel.tracerProvider,
    ...options,
  })
  const address: AddressInfo = await p.listen(0, '127.0.0.1')
  cleanup.push(() => p.close())
  return { proxy: p, url: `http://127.0.0.1:${address.port}` }
}

/** A balanced client reporting to a fresh in-memory SDK (`otel`). */
function client(options: BalancedClientOptions): BalancedClient {
  otel = createTestTelemetry()
  const c = createBalancedClient({
    meterProvider: otel.meterProvider,
    tracerProvider: otel.tracerProvider,
    ...options,
  })
  cleanup.push(() => c.close())
  return c
}

async function get(url: string, headers: Record<string, string> = {}) {
  const res = await request(url, { headers })
  const text = await res.body.text()
  return { status: res.statusCode, headers: res.headers, text }
}

/** The spans ended so far have ended: the SERVER span ends on the response's close. */
async function spansSettled(count: number): Promise<ReadableSpan[]> {
  for (let i = 0; i < 100 && otel.spans().length < count; i++) await sleep(5)
  return otel.spans()
}

const TRACE_ID = '0af7651916cd43dd8448eb211c80319c'
const PARENT_ID = 'b7ad6b7169203331'
const TRACEPARENT = `00-${TRACE_ID}-${PARENT_ID}-01`

function errorCode(error: unknown): string | undefined {
  return (error as { code?: string } | undefined)?.code
}

/** Every attribute value of every span and metric point, as strings. */
async function everyAttributeValue(): Promise<string[]> {
  const values: string[] = []
  for (const span of otel.spans()) {
    for (const value of Object.values(span.attributes)) values.push(String(value))
    if (span.status.message !== undefined) values.push(span.status.message)
  }
  for (const metric of await otel.collect()) {
    for (const point of metric.dataPoints) {
      for (const value of Object.values(point.attributes)) values.push(String(value))
    }
  }
  return values
}

describe('lb telemetry', () => {
  describe('options', () => {
    it('rejects a meterProvider or tracerProvider that is not one, in every factory', async () => {
      const [a] = await backends('a')
      const bad = [{ meterProvider: {} }, { tracerProvider: 'x' }] as never[]
      for (const options of bad) {
        expect(() => createBalancer({ endpoints: [a!.url], ...(options as object) })).toThrowError(
          InvalidArgumentError,
        )
        expect(() =>
          createBalancedClient({ endpoints: [a!.url], ...(options as object) }),
        ).toThrowError(/meterProvider|tracerProvider/)
        expect(() =>
          createProxy({ routes: [{ upstream: [a!.url] }], ...(options as object) }),
        ).toThrowError(/an OpenTelemetry (Meter|Tracer)Provider/)
        const balancer = createBalancer({ endpoints: [a!.url] })
        expect(() =>
          createHealthChecker({
            balancer,
            check: () => true,
            ...(options as object),
          }),
        ).toThrowError(InvalidArgumentError)
        await balancer.close()
      }
    })
    it('rejects a clientRequestDuration that is not a boolean, naming it', async () => {
      const [a] = await backends('a')
      expect(() =>
        createProxy({ routes: [{ upstream: [a!.url] }], clientRequestDuration: 'no' as never }),
      ).toThrowError(/invalid option "clientRequestDuration": expected a boolean/)
    })
  })

  describe('proxy', () => {
    it('a SERVER span continues the incoming traceparent; the attempt is its CLIENT child, whose context goes upstream', async () => {
      const [a] = await backends('a')
      const { url } = await proxy({ routes: [{ name: 'api', upstream: [a!.url] }] })
      const res = await get(`${url}/orders/123?token=secret-query`, {
        traceparent: TRACEPARENT,
        tracestate: 'vendor=1',
        cookie: 'sid=secret-cookie',
        authorization: 'Bearer secret-token',
      })
      expect(res.status).toBe(200)
      const spans = await spansSettled(2)
      const server = spans.find((s) => s.kind === SpanKind.SERVER)
      const attempt = spans.find((s) => s.kind === SpanKind.CLIENT)
      expect(server?.name).toBe('GET')
      expect(attempt?.name).toBe('GET')
      expect(server?.spanContext().traceId).toBe(TRACE_ID)
      expect(server?.parentSpanContext?.spanId).toBe(PARENT_ID)
      expect(attempt?.spanContext().traceId).toBe(TRACE_ID)
      expect(attempt?.parentSpanContext?.spanId).toBe(server?.spanContext().spanId)
      expect(server?.attributes).toMatchObject({
        'http.request.method': 'GET',
        'url.scheme': 'http',
        'http.response.status_code': 200,
        'ballast.lb.route': 'api',
        'server.address': '127.0.0.1',
      })
      expect(server?.status.code).not.toBe(SpanStatusCode.ERROR)
      expect(attempt?.attributes).toMatchObject({
        'http.request.method': 'GET',
        'server.address': '127.0.0.1',
        'server.port': a!.port,
        'url.scheme': 'http',
        'http.response.status_code': 200,
      })
      expect(attempt?.attributes['http.request.resend_count']).toBeUndefined()
      // The upstream got the attempt's context, the client's tracestate, and a request id.
      const seen = a!.seen.at(-1)!.headers
      expect(seen.traceparent).toBe(`00-${TRACE_ID}-${attempt!.spanContext().spanId}-01`)
      expect(seen.tracestate).toBe('vendor=1')
      expect(seen['x-request-id']).toMatch(/^[0-9a-f-]{36}$/)
      // No path, query, cookie or credential in any attribute.
      const values = (await everyAttributeValue()).join('\n')
      expect(values).not.toMatch(/orders|123|secret/)
    })

    it('a request the sampler drops makes no span, and its context goes upstream flagged not sampled', async () => {
      const [dead, live] = await backends('dead', 'live')
      await dead!.kill()
      const { url } = await proxy({
        routes: [{ upstream: [dead!.url, live!.url] }],
        balancer: { strategy: 'round-robin' },
        clientRequestDuration: true,
      })
      // The default sampler follows the parent: a parent not sampled is not sampled.
      const res = await get(`${url}/x`, { traceparent: `00-${TRACE_ID}-${PARENT_ID}-00` })
      expect(res.status).toBe(200)
      await sleep(10)
      expect(otel.spans()).toEqual([])
      const sent = live!.seen.at(-1)!.headers.traceparent as string
      expect(sent).toMatch(new RegExp(`^00-${TRACE_ID}-[0-9a-f]{16}-00$`))
      expect(sent).not.toContain(PARENT_ID)
      // The durations are recorded all the same.
      expect(await otel.value('http.client.request.duration')).toBe(2)
      expect(await otel.value('http.server.request.duration')).toBe(1)
    })

    it('starts a trace when the request carries none, and keeps a sane x-request-id, replacing one that is not', async () => {
      const [a] = await backends('a')
      const { url } = await proxy({ routes: [{ upstream: [a!.url] }] })
      await get(`${url}/x`, { 'x-request-id': 'req-42.abc:1' })
      expect(a!.seen.at(-1)!.headers['x-request-id']).toBe('req-42.abc:1')
      await get(`${url}/x`, { 'x-request-id': 'a b "c"' })
      const replaced = a!.seen.at(-1)!.headers['x-request-id']
      expect(replaced).toMatch(/^[0-9a-f-]{36}$/)
      await get(`${url}/x`)
      const generated = a!.seen.at(-1)!.headers['x-request-id']
      expect(generated).toMatch(/^[0-9a-f-]{36}$/)
      expect(generated).not.toBe(replaced)
      const servers = (await spansSettled(6)).filter((s) => s.kind === SpanKind.SERVER)
      expect(servers).toHaveLength(3)
      expect(servers[0]?.parentSpanContext).toBeUndefined()
      expect(new Set(servers.map((s) => s.spanContext().traceId)).size).toBe(3)
    })

    it('with no tracer SDK: the durations still recorded, an incoming traceparent passed on as it came, none made up', async () => {
      const [a] = await backends('a')
      otel = createTestTelemetry()
      const p = createProxy({
        routes: [{ upstream: [a!.url] }],
        meterProvider: otel.meterProvider,
        clientRequestDuration: true,
        // the global tracer provider: no SDK registered, a no-op
      })
      const { port } = await p.listen(0, '127.0.0.1')
      cleanup.push(() => p.close())
      await get(`http://127.0.0.1:${port}/x`, { traceparent: TRACEPARENT })
      expect(a!.seen.at(-1)!.headers.traceparent).toBe(TRACEPARENT)
      await get(`http://127.0.0.1:${port}/x`)
      expect(a!.seen.at(-1)!.headers.traceparent).toBeUndefined()
      expect(a!.seen.at(-1)!.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/)
      expect(otel.spans()).toEqual([])
      expect(await otel.value('http.client.request.duration', { 'server.port': a!.port })).toBe(2)
      await sleep(10)
      expect(await otel.value('http.server.request.duration')).toBe(2)
    })

    it('records http.server.request.duration per request and, with clientRequestDuration, http.client.request.duration per attempt, with semconv attributes', async () => {
      const [a] = await backends('a')
      const { url } = await proxy({
        routes: [{ name: 'web', upstream: [a!.url] }],
        clientRequestDuration: true,
      })
      for (let i = 0; i < 3; i++) await get(`${url}/x?i=${i}`)
      await spansSettled(6)
      const server = await otel.points('http.server.request.duration')
      expect(server).toHaveLength(1)
      expect(server[0]?.attributes).toEqual({
        'http.request.method': 'GET',
        'url.scheme': 'http',
        'http.response.status_code': 200,
        'ballast.lb.route': 'web',
      })
      expect(server[0]?.value).toBe(3)
      expect(server[0]?.sum).toBeGreaterThan(0)
      expect(server[0]?.sum).toBeLessThan(3)
      const upstream = await otel.points('http.client.request.duration')
      expect(upstream).toHaveLength(1)
      expect(upstream[0]?.attributes).toEqual({
        'http.request.method': 'GET',
        'server.address': '127.0.0.1',
        'server.port': a!.port,
        'ballast.lb.route': 'web',
        'http.response.status_code': 200,
      })
      expect(upstream[0]?.value).toBe(3)
      const metric = (await otel.collect()).find(
        (m) => m.descriptor.name === 'http.server.request.duration',
      )
      expect(metric?.descriptor.unit).toBe('s')
      expect(await otel.value('ballast.lb.proxy.requests')).toBe(3)
      expect(
        await otel.value('ballast.lb.endpoint.requests', {
          'ballast.lb.route': 'web',
          'ballast.lb.endpoint': a!.url,
          'ballast.lb.outcome': 'success',
        }),
      ).toBe(3)
      expect(await otel.value('ballast.lb.endpoint.picks', { 'ballast.lb.route': 'web' })).toBe(3)
      expect(await otel.value('ballast.lb.endpoint.healthy', { 'ballast.lb.route': 'web' })).toBe(1)
    })

    it('by default records no http.client.request.duration; the server duration, the endpoint counters, their summed response time and the CLIENT spans stay', async () => {
      const [a] = await backends('a')
      const { url } = await proxy({ routes: [{ name: 'web', upstream: [a!.url] }] })
      for (let i = 0; i < 3; i++) expect((await get(`${url}/x?i=${i}`)).status).toBe(200)
      const spans = await spansSettled(6)
      expect(spans.filter((s) => s.kind === SpanKind.CLIENT)).toHaveLength(3)
      expect(await otel.points('http.client.request.duration')).toEqual([])
      const server = await otel.points('http.server.request.duration')
      expect(server.map((p) => p.value)).toEqual([3])
      expect(
        await otel.value('ballast.lb.endpoint.requests', {
          'ballast.lb.route': 'web',
          'ballast.lb.endpoint': a!.url,
          'ballast.lb.outcome': 'success',
        }),
      ).toBe(3)
      // The mean per endpoint without a histogram: seconds until the response headers, summed,
      // so no more than the requests' own durations.
      const responseTime = await otel.value('ballast.lb.endpoint.response_time', {
        'ballast.lb.route': 'web',
        'ballast.lb.endpoint': a!.url,
      })
      expect(responseTime).toBeGreaterThan(0)
      expect(responseTime).toBeLessThanOrEqual(server[0]!.sum!)
    })

    it('hands the durations to the SDK at each collection and when it closes, none lost or counted twice', async () => {
      const [a] = await backends('a')
      const { url, proxy: p } = await proxy({
        routes: [{ name: 'web', upstream: [a!.url] }],
        clientRequestDuration: true,
      })
      for (let i = 0; i < 3; i++) expect((await get(`${url}/x`)).status).toBe(200)
      await spansSettled(6)
      expect(await otel.value('http.server.request.duration')).toBe(3)
      expect(await otel.value('http.server.request.duration')).toBe(3)
      for (let i = 0; i < 2; i++) expect((await get(`${url}/x`)).status).toBe(200)
      await spansSettled(10)
      // Closed before the next collection: what it measured since the last one still arrives.
      await p.close()
      expect(await otel.value('http.server.request.duration')).toBe(5)
      expect(await otel.value('http.client.request.duration')).toBe(5)
    })

    it('fault: a dead upstream shows as errors on its endpoint, an ejection, and a retry as two CLIENT spans under one SERVER span', async () => {
      const [dead, live] = await backends('dead', 'live')
      const deadPort = dead!.port
      await dead!.kill()
      const { url, proxy: p } = await proxy({
        routes: [{ name: 'shop', upstream: [dead!.url, live!.url] }],
        balancer: {
          strategy: 'round-robin',
          outlierDetection: { consecutiveFailures: 1, maxEjectionShare: 1 },
        },
        clientRequestDuration: true,
      })
      const res = await get(`${url}/items`, { traceparent: TRACEPARENT })
      expect(res.status).toBe(200)
      expect(JSON.parse(res.text)).toMatchObject({ backend: 'live' })
      expect(p.stats().retries).toBe(1)

      const spans = await spansSettled(3)
      const server = spans.filter((s) => s.kind === SpanKind.SERVER)
      const attempts = spans.filter((s) => s.kind === SpanKind.CLIENT)
      expect(server).toHaveLength(1)
      expect(attempts).toHaveLength(2)
      for (const attempt of attempts) {
        expect(attempt.parentSpanContext?.spanId).toBe(server[0]?.spanContext().spanId)
        expect(attempt.spanContext().traceId).toBe(TRACE_ID)
      }
      const [failed, retried] = attempts
      expect(failed?.attributes['server.port']).toBe(deadPort)
      expect(failed?.attributes['error.type']).toBe('ECONNREFUSED')
      expect(failed?.status.code).toBe(SpanStatusCode.ERROR)
      expect(retried?.attributes['server.port']).toBe(live!.port)
      expect(retried?.attributes['http.request.resend_count']).toBe(1)
      expect(retried?.status.code).not.toBe(SpanStatusCode.ERROR)
      expect(server[0]?.status.code).not.toBe(SpanStatusCode.ERROR)
      // Only the live attempt's context reached an upstream.
      expect(live!.seen.at(-1)!.headers.traceparent).toBe(
        `00-${TRACE_ID}-${retried!.spanContext().spanId}-01`,
      )

      const deadEndpoint = { 'ballast.lb.route': 'shop', 'ballast.lb.endpoint': dead!.url }
      expect(
        await otel.value('http.client.request.duration', {
          'server.port': deadPort,
          'error.type': 'ECONNREFUSED',
        }),
      ).toBe(1)
      expect(
        await otel.value('http.client.request.duration', {
          'server.port': live!.port,
          'http.response.status_code': 200,
        }),
      ).toBe(1)
      expect(
        await otel.value('ballast.lb.endpoint.requests', {
          ...deadEndpoint,
          'ballast.lb.outcome': 'failure',
        }),
      ).toBe(1)
      expect(
        await otel.value('ballast.lb.endpoint.requests', {
          ...deadEndpoint,
          'ballast.lb.outcome': 'success',
        }),
      ).toBe(0)
      expect(await otel.value('ballast.lb.endpoint.ejections', deadEndpoint)).toBe(1)
      expect(await otel.value('ballast.lb.endpoint.ejected', deadEndpoint)).toBe(1)
      expect(
        await otel.value('ballast.lb.endpoint.ejections', {
          'ballast.lb.endpoint': live!.url,
        }),
      ).toBe(0)
      expect(await otel.value('ballast.lb.proxy.retries')).toBe(1)
    })

    it('fault: every upstream dead answers 503, an ERROR SERVER span with error.type and the failure counted', async () => {
      const [dead] = await backends('dead')
      await dead!.kill()
      const { url } = await proxy({ routes: [{ name: 'gone', upstream: [dead!.url] }] })
      const res = await get(`${url}/x`)
      expect(res.status).toBe(503)
      const spans = await spansSettled(2)
      const server = spans.find((s) => s.kind === SpanKind.SERVER)
      expect(server?.status.code).toBe(SpanStatusCode.ERROR)
      expect(server?.attributes['error.type']).toBe('ECONNREFUSED')
      expect(server?.attributes['http.response.status_code']).toBe(503)
      expect(
        await otel.value('http.server.request.duration', {
          'http.response.status_code': 503,
          'error.type': 'ECONNREFUSED',
        }),
      ).toBe(1)
      expect(
        await otel.value('ballast.lb.proxy.failed', { 'ballast.lb.proxy.reason': 'unavailable' }),
      ).toBe(1)
      expect(
        await otel.value('ballast.lb.proxy.failed', { 'ballast.lb.proxy.reason': 'bad_gateway' }),
      ).toBe(0)
    })

    it('fault: an upstream 5xx is an ERROR CLIENT span and counts as the endpoint failing', async () => {
      const [a] = await backends('a')
      const { url } = await proxy({ routes: [{ upstream: [a!.url] }], retryOnStatus: [] })
      a!.healthy = false
      const res = await get(`${url}/health`)
      expect(res.status).toBe(503)
      const spans = await spansSettled(2)
      const attempt = spans.find((s) => s.kind === SpanKind.CLIENT)
      const server = spans.find((s) => s.kind === SpanKind.SERVER)
      expect(attempt?.attributes['error.type']).toBe('503')
      expect(attempt?.status.code).toBe(SpanStatusCode.ERROR)
      expect(server?.attributes['error.type']).toBe('503')
      expect(
        await otel.value('ballast.lb.endpoint.requests', { 'ballast.lb.outcome': 'failure' }),
      ).toBe(1)
    })

    it('counts retries the retry budget refused', async () => {
      const [dead, live] = await backends('dead', 'live')
      await dead!.kill()
      const { url } = await proxy({
        routes: [{ upstream: [dead!.url, live!.url] }],
        balancer: { strategy: 'round-robin', outlierDetection: false },
        retryBudget: { ratio: 0, minPerSecond: 0 },
      })
      const res = await get(`${url}/x`)
      expect(res.status).toBe(502)
      expect(await otel.value('ballast.lb.proxy.retries_refused')).toBe(1)
      expect(await otel.value('ballast.lb.proxy.retries')).toBe(0)
    })

    it('counts response cache hits and misses; a hit makes no CLIENT span', async () => {
      const [a] = await backends('a')
      const map = new Map<string, CachedResponse>()
      const { url } = await proxy({
        routes: [{ upstream: [a!.url] }],
        cache: {
          store: { get: (k) => map.get(k), set: (k, v) => void map.set(k, v) },
        },
      })
      const path = `${url}/cache?cc=${encodeURIComponent('public, max-age=60')}`
      await get(path)
      await get(path)
      await get(path)
      const spans = await spansSettled(4)
      expect(spans.filter((s) => s.kind === SpanKind.SERVER)).toHaveLength(3)
      expect(spans.filter((s) => s.kind === SpanKind.CLIENT)).toHaveLength(1)
      expect(await otel.value('ballast.lb.proxy.cache.hits')).toBe(2)
      expect(await otel.value('ballast.lb.proxy.cache.misses')).toBe(1)
      expect(await otel.value('http.server.request.duration')).toBe(3)
    })

    it('stops reporting once closed', async () => {
      const [a] = await backends('a')
      const { url, proxy: p } = await proxy({ routes: [{ upstream: [a!.url] }] })
      await get(`${url}/x`)
      await p.close()
      // Not collected before close(): the callbacks are gone, so nothing is reported (the
      // histograms keep the request they recorded).
      expect(await otel.points('ballast.lb.proxy.requests')).toEqual([])
      expect(await otel.points('ballast.lb.endpoint.picks')).toEqual([])
      expect(await otel.points('ballast.lb.endpoint.healthy')).toEqual([])
      expect(await otel.value('http.server.request.duration')).toBe(1)
    })
  })

  describe('diagnostics channels', () => {
    const requests = tracingChannel('ballast:lb:proxy:request')
    const attempts = tracingChannel('ballast:lb:proxy:attempt')

    it('a proxy with no SDK subscribes to nothing, so its requests publish nothing; one with an SDK does until closed', async () => {
      const [a] = await backends('a')
      const bare = createProxy({ routes: [{ upstream: [a!.url] }] })
      expect(requests.hasSubscribers).toBe(false)
      expect(attempts.hasSubscribers).toBe(false)
      const { proxy: p } = await proxy({ routes: [{ upstream: [a!.url] }] })
      expect(requests.hasSubscribers).toBe(true)
      expect(attempts.hasSubscribers).toBe(true)
      await p.close()
      await bare.close()
      expect(requests.hasSubscribers).toBe(false)
      expect(attempts.hasSubscribers).toBe(false)
    })

    it('any subscriber hears each request (start, asyncEnd with its route and failure) and each attempt', async () => {
      const [dead, live] = await backends('dead', 'live')
      await dead!.kill()
      const heard: string[] = []
      const noop = () => {}
      const onRequest = {
        start: () => heard.push('request start'),
        end: noop,
        asyncStart: noop,
        asyncEnd: (m: unknown) => {
          const served = m as { route?: string; error?: unknown; res: { statusCode: number } }
          heard.push(
            `request end ${served.route} ${served.res.statusCode} ${errorCode(served.error)}`,
          )
        },
        error: noop,
      }
      const onAttempt = {
        start: (m: unknown) =>
          heard.push(`attempt start ${(m as { endpoint: { id: string } }).endpoint.id}`),
        end: noop,
        asyncStart: noop,
        asyncEnd: (m: unknown) => {
          const attempt = m as { status?: number; error?: unknown }
          heard.push(`attempt end ${attempt.status} ${errorCode(attempt.error)}`)
        },
        error: noop,
      }
      requests.subscribe(onRequest)
      attempts.subscribe(onAttempt)
      try {
        const p = createProxy({
          routes: [{ name: 'r', upstream: [dead!.url, live!.url] }],
          balancer: { strategy: 'round-robin' },
        })
        const { port } = await p.listen(0, '127.0.0.1')
        cleanup.push(() => p.close())
        expect((await get(`http://127.0.0.1:${port}/x`)).status).toBe(200)
        await sleep(10)
        expect(heard).toEqual([
          'request start',
          `attempt start ${dead!.url}`,
          'attempt end undefined ECONNREFUSED',
          `attempt start ${live!.url}`,
          'attempt end 200 undefined',
          'request end r 200 undefined',
        ])
      } finally {
        requests.unsubscribe(onRequest)
        attempts.unsubscribe(onAttempt)
      }
    })
  })

  describe('balanced client', () => {
    it('one CLIENT span per attempt under the caller’s span, its context sent; a retry is a sibling', async () => {
      const [dead, live] = await backends('dead', 'live')
      const deadPort = dead!.port
      await dead!.kill()
      const c = client({
        endpoints: [dead!.url, live!.url],
        balancer: { strategy: 'round-robin' },
      })
      const tracer = otel.tracerProvider.getTracer('test')
      const root = tracer.startSpan('checkout')
      const res = await context.with(trace.setSpan(context.active(), root), () =>
        c.request({ path: '/orders/7?card=4111', headers: { 'x-request-id': 'order-7' } }),
      )
      await res.body.dump()
      root.end()
      const attempts = otel.spans().filter((s) => s.kind === SpanKind.CLIENT)
      expect(attempts).toHaveLength(2)
      for (const attempt of attempts) {
        expect(attempt.name).toBe('GET')
        expect(attempt.parentSpanContext?.spanId).toBe(root.spanContext().spanId)
      }
      const [failed, ok] = attempts
      expect(failed?.attributes).toMatchObject({
        'http.request.method': 'GET',
        'server.address': '127.0.0.1',
        'server.port': deadPort,
        'url.scheme': 'http',
        'error.type': 'ECONNREFUSED',
      })
      expect(failed?.status.code).toBe(SpanStatusCode.ERROR)
      expect(ok?.attributes).toMatchObject({
        'server.port': live!.port,
        'http.response.status_code': 200,
        'http.request.resend_count': 1,
      })
      const seen = live!.seen.at(-1)!.headers
      expect(seen.traceparent).toBe(
        `00-${root.spanContext().traceId}-${ok!.spanContext().spanId}-01`,
      )
      expect(seen['x-request-id']).toBe('order-7')

      expect(
        await otel.value('http.client.request.duration', {
          'server.port': deadPort,
          'error.type': 'ECONNREFUSED',
        }),
      ).toBe(1)
      expect(
        await otel.value('http.client.request.duration', {
          'server.port': live!.port,
          'http.response.status_code': 200,
        }),
      ).toBe(1)
      expect(await otel.value('ballast.lb.client.requests')).toBe(1)
      expect(await otel.value('ballast.lb.client.retries')).toBe(1)
      expect(
        await otel.value('ballast.lb.endpoint.requests', {
          'ballast.lb.endpoint': dead!.url,
          'ballast.lb.outcome': 'failure',
        }),
      ).toBe(1)
      const values = (await everyAttributeValue()).join('\n')
      expect(values).not.toMatch(/orders|4111|order-7/)
    })

    it('generates a request id when none (or an insane one) is given', async () => {
      const [a] = await backends('a')
      const c = client({ endpoints: [a!.url] })
      await (await c.request({ path: '/x' })).body.dump()
      expect(a!.seen.at(-1)!.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/)
      await (await c.request({ path: '/x', headers: { 'X-Request-Id': 'bad id\t' } })).body.dump()
      expect(a!.seen.at(-1)!.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/)
      // A root span without a caller span: a trace of its own.
      const spans = otel.spans()
      expect(spans).toHaveLength(2)
      expect(spans[0]?.parentSpanContext).toBeUndefined()
    })

    it('fault: with every endpoint dead, counts the failure and the retry budget’s refusal', async () => {
      const [d1, d2] = await backends('d1', 'd2')
      await d1!.kill()
      await d2!.kill()
      const c = client({
        endpoints: [d1!.url, d2!.url],
        balancer: { strategy: 'round-robin', outlierDetection: false },
        retryBudget: { ratio: 0, minPerSecond: 0 },
      })
      await expect(c.request({ path: '/x' })).rejects.toThrow()
      expect(await otel.value('ballast.lb.client.failed')).toBe(1)
      expect(await otel.value('ballast.lb.client.retries_refused')).toBe(1)
      const [attempt] = otel.spans()
      expect(attempt?.status.code).toBe(SpanStatusCode.ERROR)
      expect(attempt?.attributes['error.type']).toBe('ECONNREFUSED')
    })
  })

  describe('health checks', () => {
    it('the healthy gauge follows the checker’s verdicts per endpoint; checks count by outcome', async () => {
      otel = createTestTelemetry()
      const balancer = createBalancer({
        endpoints: ['http://10.0.0.1:80', 'http://10.0.0.2:80'],
        meterProvider: otel.meterProvider,
      })
      const checker = createHealthChecker({
        balancer,
        check: (e) => e.id === 'http://10.0.0.1:80',
        interval: 60_000,
        fall: 1,
        meterProvider: otel.meterProvider,
      })
      cleanup.push(async () => {
        await checker.close()
        await balancer.close()
      })
      await checker.checkNow()
      const healthy = await otel.points('ballast.lb.endpoint.healthy')
      expect(
        Object.fromEntries(healthy.map((p) => [p.attributes['ballast.lb.endpoint'], p.value])),
      ).toEqual({ 'http://10.0.0.1:80': 1, 'http://10.0.0.2:80': 0 })
      expect(
        await otel.value('ballast.lb.health_checks', { 'ballast.lb.outcome': 'success' }),
      ).toBe(1)
      expect(
        await otel.value('ballast.lb.health_checks', { 'ballast.lb.outcome': 'failure' }),
      ).toBe(1)
      // pick() records nothing: the picks are read from the endpoint's counter.
      balancer.pick()
      expect(
        await otel.value('ballast.lb.endpoint.picks', {
          'ballast.lb.endpoint': 'http://10.0.0.1:80',
        }),
      ).toBe(1)
    })
  })
})
