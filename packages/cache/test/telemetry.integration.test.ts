import { createFaultProxy, type FaultProxy, redisUrl } from '@ballast/testkit'
import { createTestTelemetry, type ReadableSpan, type TestTelemetry } from '@ballast/testkit/otel'
import { type Attributes, SpanKind, SpanStatusCode } from '@opentelemetry/api'
import { Redis } from 'ioredis'
import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  type CacheOptions,
  createCache,
  InvalidArgumentError,
  type TwoLevelCache,
} from '../src/index.js'
import { CacheGroup, deferred, eventually, sleep } from './fixtures.js'

const DURATION = 'db.client.operation.duration'
const LEVEL = 'ballast.cache.level'

let group: CacheGroup | undefined
let proxy: FaultProxy | undefined
const sdks: TestTelemetry[] = []

afterEach(async () => {
  await group?.close()
  group = undefined
  await proxy?.close()
  proxy = undefined
  for (const sdk of sdks.splice(0)) await sdk.shutdown()
})

/** A cache of a fresh group (or of `on`), reporting to a fresh in-memory SDK. */
async function make(
  options: CacheOptions = {},
  client?: Redis,
): Promise<{ cache: TwoLevelCache; otel: TestTelemetry }> {
  group ??= new CacheGroup('standalone')
  const otel = createTestTelemetry()
  sdks.push(otel)
  const cache = await group.add(
    { meterProvider: otel.meterProvider, tracerProvider: otel.tracerProvider, ...options },
    client,
  )
  return { cache, otel }
}

/** The `ballast.cache.breaker.state` gauge: the state whose point is 1. */
async function breakerState(otel: TestTelemetry): Promise<string[]> {
  const points = await otel.points('ballast.cache.breaker.state')
  return points.filter((p) => p.value === 1).map((p) => String(p.attributes['ballast.cache.state']))
}

/** Every attribute value and status message of every span, and every metric point's attributes. */
async function everyAttributeValue(otel: TestTelemetry): Promise<string[]> {
  const values: string[] = []
  for (const span of otel.spans()) {
    for (const value of Object.values(span.attributes)) values.push(String(value))
    if (span.status.message !== undefined) values.push(span.status.message)
  }
  for (const metric of await otel.collect()) {
    for (const point of metric.dataPoints) {
      for (const value of Object.values(point.attributes as Attributes)) values.push(String(value))
    }
  }
  return values
}

const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId

describe('TwoLevelCache telemetry', () => {
  describe('metrics', () => {
    it('reports hits and misses per level, loads by outcome, L1 size and bytes, with their units', async () => {
      const { cache, otel } = await make()
      await cache.set('a', { n: 1 })
      expect(await cache.get('a')).toEqual({ n: 1 }) // L1 hit
      expect(await cache.get('a')).toEqual({ n: 1 }) // L1 hit
      expect(await cache.get('nothing')).toBeUndefined() // L1 miss, L2 miss
      expect(await cache.getOrSet('loaded', async () => 'v')).toBe('v') // L1 miss, L2 miss, load
      await expect(
        cache.getOrSet('broken', async () => {
          throw new Error('loader down')
        }),
      ).rejects.toThrow('loader down')

      const stats = cache.stats()
      const level = (l: string) => ({ [LEVEL]: l })
      expect(await otel.value('ballast.cache.hits', level('l1'))).toBe(stats.l1.hits)
      expect(stats.l1.hits).toBe(2)
      expect(await otel.value('ballast.cache.hits', level('l2'))).toBe(0)
      expect(await otel.value('ballast.cache.misses', level('l1'))).toBe(stats.l1.misses)
      expect(stats.l1.misses).toBeGreaterThanOrEqual(3)
      expect(await otel.value('ballast.cache.misses', level('l2'))).toBe(3)
      const outcome = (o: string) => ({ 'ballast.cache.outcome': o })
      expect(await otel.value('ballast.cache.loads', outcome('succeeded'))).toBe(1)
      expect(await otel.value('ballast.cache.loads', outcome('failed'))).toBe(1)
      expect(stats.loader).toMatchObject({ calls: 2, succeeded: 1, failed: 1 })
      expect(await otel.value('ballast.cache.l1.entries')).toBe(2) // a and loaded
      const bytes = await otel.value('ballast.cache.l1.bytes')
      expect(bytes).toBe(stats.l1.bytes)
      expect(bytes).toBeGreaterThan(0)

      // every point carries the namespace, and nothing else unbounded
      const hits = await otel.points('ballast.cache.hits')
      for (const point of hits) {
        expect(Object.keys(point.attributes).sort()).toEqual([LEVEL, 'ballast.cache.namespace'])
        expect(point.attributes['ballast.cache.namespace']).toBe(group?.namespace)
      }

      const descriptors = new Map(
        (await otel.collect()).map((m) => [m.descriptor.name, m.descriptor]),
      )
      expect(descriptors.get('ballast.cache.hits')?.unit).toBe('{hit}')
      expect(descriptors.get('ballast.cache.misses')?.unit).toBe('{miss}')
      expect(descriptors.get('ballast.cache.loads')?.unit).toBe('{load}')
      expect(descriptors.get('ballast.cache.l1.bytes')?.unit).toBe('By')
      expect(descriptors.get('ballast.cache.load.duration')?.unit).toBe('s')
      expect(descriptors.get(DURATION)?.unit).toBe('s')
    })

    it('times each loader call in ballast.cache.load.duration, by outcome with error.type', async () => {
      const { cache, otel } = await make()
      await cache.getOrSet('slow', async () => {
        await sleep(30)
        return 1
      })
      await cache.getOrSetMany(['x', 'y', 'z'], async (keys) => keys.map((k) => k.toUpperCase()))
      class QuotaError extends Error {
        readonly code = 'E_QUOTA'
      }
      await expect(
        cache.getOrSet('fails', async () => {
          throw new QuotaError('quota exceeded for fails')
        }),
      ).rejects.toThrow('quota')

      const points = await otel.points('ballast.cache.load.duration')
      const succeeded = points.find((p) => p.attributes['ballast.cache.outcome'] === 'succeeded')
      const failed = points.find((p) => p.attributes['ballast.cache.outcome'] === 'failed')
      expect(succeeded?.value).toBe(2) // one single load, one batch load
      expect(succeeded?.sum).toBeGreaterThanOrEqual(0.025)
      expect(succeeded?.sum).toBeLessThan(5)
      expect(failed?.value).toBe(1)
      expect(failed?.attributes['error.type']).toBe('E_QUOTA')
      // a batch load counts once per key in ballast.cache.loads, once in the histogram
      expect(
        await otel.value('ballast.cache.loads', { 'ballast.cache.outcome': 'succeeded' }),
      ).toBe(4)
    })

    it('counts stampede waits: calls coalesced in this process and lock waits across instances', async () => {
      const { cache: a, otel: otelA } = await make()
      const { cache: b, otel: otelB } = await make()
      const release = deferred<string>()
      let calls = 0
      const loader = async () => {
        calls++
        return release.promise
      }
      const inProcess = Array.from({ length: 5 }, () => a.getOrSet('hot', loader, { lock: true }))
      await eventually(() => calls === 1)
      await sleep(20) // a holds the lock and loads
      const across = b.getOrSet('hot', loader, { lock: true })
      await eventually(() => b.stats().lockWaits === 1)
      release.resolve('value')
      expect(await Promise.all(inProcess)).toEqual(Array(5).fill('value'))
      expect(await across).toBe('value')
      expect(calls).toBe(1)

      expect(await otelA.value('ballast.cache.coalesced')).toBe(4)
      expect(await otelA.value('ballast.cache.lock.waits')).toBe(0)
      expect(await otelB.value('ballast.cache.lock.waits')).toBe(1)
      expect(await otelB.value('ballast.cache.coalesced')).toBe(0)
    })

    it('counts invalidations sent and received, and gaps in a peer sequence', async () => {
      const { cache: a, otel: otelA } = await make()
      const { cache: b, otel: otelB } = await make()
      const sent = { 'ballast.cache.direction': 'sent' }
      const received = { 'ballast.cache.direction': 'received' }
      const before = {
        aSent: (await otelA.value('ballast.cache.invalidations', sent)) ?? 0,
        bReceived: (await otelB.value('ballast.cache.invalidations', received)) ?? 0,
      }
      await a.set('k1', 1)
      await a.delete('k1')
      await a.deleteByTag('t')
      await a.clear()
      await eventually(() => b.stats().bus.invalidationsReceived - before.bReceived === 4)
      expect((await otelA.value('ballast.cache.invalidations', sent)) ?? 0).toBe(before.aSent + 4)
      expect(await otelB.value('ballast.cache.invalidations', received)).toBe(before.bReceived + 4)
      expect(await otelB.value('ballast.cache.invalidations', sent)).toBe(
        b.stats().bus.invalidationsPublished,
      )

      // a peer whose sequence skips a number: one gap, and L1 flushed
      const raw = (await group?.raw()) as Redis
      const channel = `${group?.prefix}:${group?.namespace}:bus`
      expect(await otelB.value('ballast.cache.bus.gaps')).toBe(0)
      await raw.publish(channel, JSON.stringify({ o: 'peer', s: 1, t: 'k', k: ['x'] }))
      await raw.publish(channel, JSON.stringify({ o: 'peer', s: 3, t: 'k', k: ['x'] }))
      await eventually(() => b.stats().bus.gaps === 1)
      expect(await otelB.value('ballast.cache.bus.gaps')).toBe(1)
      expect(await otelB.value('ballast.cache.l1.flushes')).toBe(b.stats().bus.flushes)
      expect(await otelB.value('ballast.cache.bus.healthy')).toBe(1)
    })

    it('times every L2 round trip in db.client.operation.duration with the Redis attributes', async () => {
      const { cache, otel } = await make({ l1: false })
      await cache.set('a', 1)
      // the namespace generation is read with a GET too, at start
      const getsBefore = (await otel.value(DURATION, { 'db.operation.name': 'GET' })) ?? 0
      await cache.get('a')
      await cache.get('a')
      await cache.getMany(['a', 'b'])

      const points = await otel.points(DURATION)
      const gets = points.filter((p) => p.attributes['db.operation.name'] === 'GET')
      expect(gets.length).toBe(1)
      const url = new URL(await redisUrl())
      // the semantic-convention attributes only: the SDK hashes each point's attributes
      const port = Number(url.port || 6379)
      expect(gets[0]?.attributes).toEqual({
        'db.system.name': 'redis',
        'db.namespace': url.pathname.length > 1 ? url.pathname.slice(1) : '0',
        'server.address': url.hostname,
        // the conventions want the port only when it is not Redis's default
        ...(port === 6379 ? {} : { 'server.port': port }),
        'db.operation.name': 'GET',
      })
      expect(gets[0]?.value).toBe(getsBefore + 2)
      expect(gets[0]?.sum).toBeGreaterThan(0)
      expect(gets[0]?.sum).toBeLessThan(5)
      const mget = points.find((p) => p.attributes['db.operation.name'] === 'MGET')
      expect(mget?.value).toBe(1)
      expect(points.some((p) => p.attributes['db.operation.name'] === 'PUBLISH')).toBe(true)
      expect(points.some((p) => p.attributes['error.type'] !== undefined)).toBe(false)
    })

    it('stops reporting when closed', async () => {
      const { cache, otel } = await make()
      await cache.get('a')
      expect(await otel.value('ballast.cache.misses', { [LEVEL]: 'l2' })).toBe(1)
      const stats = vi.spyOn(cache, 'stats')
      await otel.collect()
      expect(stats).toHaveBeenCalledTimes(1) // the one batch callback reads stats() once
      await cache.close()
      stats.mockClear()
      await otel.collect()
      expect(stats).not.toHaveBeenCalled()
    })

    it('an L1-only cache reports its L1 and loads, and no L2, bus or breaker instrument', async () => {
      const otel = createTestTelemetry()
      sdks.push(otel)
      const cache = createCache({
        meterProvider: otel.meterProvider,
        tracerProvider: otel.tracerProvider,
      })
      try {
        await cache.getOrSet('a', async () => 1)
        expect(await cache.get('a')).toBe(1)
        expect(await otel.value('ballast.cache.hits', { [LEVEL]: 'l1' })).toBe(1)
        expect(await otel.value('ballast.cache.hits', { [LEVEL]: 'l2' })).toBeUndefined()
        expect(
          await otel.value('ballast.cache.loads', { 'ballast.cache.outcome': 'succeeded' }),
        ).toBe(1)
        expect(await otel.value('ballast.cache.l1.entries')).toBe(1)
        expect(await otel.points('ballast.cache.bus.healthy')).toEqual([])
        expect(await otel.points('ballast.cache.breaker.state')).toEqual([])
        expect(await otel.points(DURATION)).toEqual([])
        expect(otel.spansNamed('ballast.cache.load').length).toBe(1)
      } finally {
        await cache.close()
      }
    })

    it('refuses a meterProvider or tracerProvider that is not one', () => {
      expect(() => createCache({ meterProvider: {} as never })).toThrow(InvalidArgumentError)
      expect(() => createCache({ meterProvider: {} as never })).toThrow(/meterProvider/)
      expect(() => createCache({ tracerProvider: 'global' as never })).toThrow(/tracerProvider/)
    })
  })

  describe('spans', () => {
    it('an L1 hit makes no span and no histogram point', async () => {
      const { cache, otel } = await make()
      await cache.set('a', 1)
      await cache.get('a')
      // round trips other than the bus heartbeats (PUBLISH, not traced, on their own timer)
      const roundTrips = async () =>
        (await otel.points(DURATION))
          .filter((p) => p.attributes['db.operation.name'] !== 'PUBLISH')
          .reduce((sum, p) => sum + p.value, 0)
      const before = await roundTrips()
      expect(before).toBeGreaterThan(0)
      otel.resetSpans()
      for (let i = 0; i < 100; i++) expect(await cache.get('a')).toBe(1)
      for (let i = 0; i < 100; i++) expect(await cache.getOrSet('a', async () => 2)).toBe(1)
      expect(otel.spans()).toEqual([])
      expect(await roundTrips()).toBe(before)
      expect(await otel.value('ballast.cache.hits', { [LEVEL]: 'l1' })).toBe(201)
    })

    it('a load is an INTERNAL span under the caller; L2 round trips are CLIENT spans; no key anywhere', async () => {
      const { cache, otel } = await make({ l1: false })
      const tracer = otel.tracerProvider.getTracer('test')
      const key = 'user:secret-4242'
      await tracer.startActiveSpan('request', async (request) => {
        await cache.getOrSet(key, async () =>
          tracer.startActiveSpan('db query', async (query) => {
            query.end()
            return { name: 'Ada' }
          }),
        )
        request.end()
      })

      const [request] = otel.spansNamed('request')
      const [load] = otel.spansNamed('ballast.cache.load')
      const [query] = otel.spansNamed('db query')
      expect(load?.kind).toBe(SpanKind.INTERNAL)
      expect(load?.attributes).toEqual({
        'ballast.cache.namespace': group?.namespace,
        'ballast.cache.outcome': 'succeeded',
      })
      expect(load?.status.code).toBe(SpanStatusCode.UNSET)
      expect(parentOf(load as ReadableSpan)).toBe(request?.spanContext().spanId)
      expect(parentOf(query as ReadableSpan)).toBe(load?.spanContext().spanId)

      const traceId = request?.spanContext().traceId
      // the round trips of the request (the namespace generation was read at start, in no trace)
      const clients = otel
        .spans()
        .filter((s) => s.kind === SpanKind.CLIENT && s.spanContext().traceId === traceId)
      const operations = clients.map((s) => s.attributes['ballast.cache.operation'])
      expect(operations).toContain('get') // the read before the load
      expect(operations).toContain('cas') // the write back (compare-and-set)
      for (const span of clients) {
        expect(span.attributes['db.system.name']).toBe('redis')
        expect(span.attributes['db.operation.name']).toBe(span.name)
        expect(span.attributes['server.address']).toBeTypeOf('string')
        expect(parentOf(span)).toBe(request?.spanContext().spanId)
        expect(span.status.code).toBe(SpanStatusCode.UNSET)
      }
      expect(clients.find((s) => s.attributes['ballast.cache.operation'] === 'cas')?.name).toBe(
        'EVALSHA',
      )
      const [generation] = otel
        .spans()
        .filter((s) => s.attributes['ballast.cache.operation'] === 'generation')
      expect(generation?.name).toBe('GET')
      expect(parentOf(generation as ReadableSpan)).toBeUndefined()
      const get = clients.find((s) => s.name === 'GET')
      expect(get?.attributes['ballast.cache.operation']).toBe('get')
      const values = await everyAttributeValue(otel)
      expect(values.some((v) => v.includes('secret-4242'))).toBe(false)
    })

    it('a batch load names its size; getMany is one MGET span; a batch write is BATCH SET', async () => {
      const { cache, otel } = await make({ l1: false })
      await cache.getOrSetMany(['a', 'b', 'c'], async (keys) => keys.map((k) => `v${k}`))
      await cache.setMany([
        { key: 'd', value: 1 },
        { key: 'e', value: 2 },
      ])
      await cache.getMany(['a', 'd'])
      await cache.deleteMany(['d', 'e'])
      const [load] = otel.spansNamed('ballast.cache.load')
      expect(load?.attributes['ballast.cache.load.keys']).toBe(3)
      expect(otel.spansNamed('MGET').length).toBeGreaterThanOrEqual(2)
      // setMany: the writes and their invalidation in one pipeline
      const [set] = otel.spans().filter((s) => s.attributes['ballast.cache.operation'] === 'set')
      expect(set?.name).toBe('BATCH')
      expect(set?.attributes['db.operation.batch.size']).toBe(3)
      // deleteMany: the tombstones, a pipeline of SETs
      const [tombstones] = otel
        .spans()
        .filter((s) => s.attributes['ballast.cache.operation'] === 'delete')
      expect(tombstones?.name).toBe('BATCH SET')
      expect(tombstones?.attributes['db.operation.name']).toBe('BATCH SET')
      expect(tombstones?.attributes['db.operation.batch.size']).toBe(2)
    })

    it('a failed load is an ERROR span with error.type and no message (it may name the key)', async () => {
      const { cache, otel } = await make()
      await expect(
        cache.getOrSet('user:secret-77', async () => {
          throw new TypeError('cannot read user:secret-77')
        }),
      ).rejects.toThrow(TypeError)
      const [load] = otel.spansNamed('ballast.cache.load')
      expect(load?.status.code).toBe(SpanStatusCode.ERROR)
      expect(load?.status.message).toBeUndefined()
      expect(load?.attributes['error.type']).toBe('TypeError')
      expect(load?.attributes['ballast.cache.outcome']).toBe('failed')
      const values = await everyAttributeValue(otel)
      expect(values.some((v) => v.includes('secret-77'))).toBe(false)
    })
  })

  describe('under faults', () => {
    /** A client through a fresh fault proxy, reconnecting every 50 ms while cut off. */
    async function throughProxy(): Promise<Redis> {
      const url = new URL(await redisUrl())
      proxy = await createFaultProxy({ host: url.hostname, port: Number(url.port || 6379) })
      const viaProxy = new Redis(proxy.url(url.toString()), {
        enableOfflineQueue: false,
        maxRetriesPerRequest: 0,
        retryStrategy: () => 50,
      })
      viaProxy.on('error', () => undefined) // reconnects are expected here
      group = new CacheGroup('standalone')
      group.clients.push(viaProxy)
      return viaProxy
    }

    it('a cut connection fails the round trips in flight with error.type; the calls refused while it reconnects are counted, not timed', async () => {
      const { cache, otel } = await make({ l1: false, l2Timeout: 5000 }, await throughProxy())
      await cache.set('a', 1)
      otel.resetSpans()
      const p = proxy as FaultProxy
      p.setLatency(1000) // the gets are still in flight when the connection is cut
      const inFlight = Array.from({ length: 3 }, () => cache.get('a'))
      await sleep(50)
      p.refuse()
      p.cut()
      expect(await Promise.all(inFlight)).toEqual([undefined, undefined, undefined])
      const failed = (await otel.points(DURATION)).find(
        (point) =>
          point.attributes['db.operation.name'] === 'GET' &&
          point.attributes['error.type'] !== undefined,
      )
      expect(failed?.value).toBe(3)
      expect(failed?.attributes['error.type']).toBe('E_CACHE_L2_UNAVAILABLE')
      expect(failed?.sum).toBeLessThan(3) // failed at the cut, not at the 5 s timeout (15 s for 3)
      const spans = otel.spansNamed('GET')
      expect(spans.map((s) => s.status.code)).toEqual(Array(3).fill(SpanStatusCode.ERROR))

      // reconnecting: refused at once, no round trip, but counted and the bus is not trusted
      const before = (await otel.value('ballast.cache.l2.failed')) ?? 0
      expect(await cache.get('a')).toBeUndefined()
      expect(await otel.value('ballast.cache.l2.failed')).toBe(before + 1)
      expect(otel.spansNamed('GET').length).toBe(3)
      expect(await otel.value('ballast.cache.bus.healthy')).toBe(0)
      p.setLatency(0)
      p.restore()
      await eventually(async () => (await cache.get('a')) === 1, 5000)
    })

    it('a black-holed Redis shows as errors on db.client.operation.duration and the GET spans, and the breaker state as open, then closed again', async () => {
      const { cache, otel } = await make(
        {
          l1: false,
          l2Timeout: 100,
          heartbeatInterval: 50,
          heartbeatTimeout: 200,
          breaker: { windowSize: 10, volumeThreshold: 3, resetTimeout: 1500 },
        },
        await throughProxy(),
      )
      await cache.set('a', 1)
      expect(await cache.get('a')).toBe(1)
      expect(await breakerState(otel)).toEqual(['closed'])
      otel.resetSpans()

      const p = proxy as FaultProxy
      p.blackhole()
      for (let i = 0; i < 3; i++) expect(await cache.get('a')).toBeUndefined() // each times out
      await eventually(() => cache.stats().breaker === 'open', 2000)
      expect(await breakerState(otel)).toEqual(['open'])
      // The breaker's own instruments (@ballast/resilience's) go to the cache's meterProvider too.
      const resilienceState = (await otel.points('ballast.resilience.breaker.state')).filter(
        (p) => p.value === 1,
      )
      expect(resilienceState.map((p) => p.attributes['ballast.resilience.state'])).toEqual(['open'])
      const failures = (await otel.points(DURATION)).filter(
        (p) => p.attributes['error.type'] !== undefined,
      )
      const failedGets = failures.filter((p) => p.attributes['db.operation.name'] === 'GET')
      expect(failedGets[0]?.attributes['error.type']).toBe('E_RESILIENCE_TIMEOUT')
      expect(failedGets[0]?.attributes['db.system.name']).toBe('redis')
      expect(failedGets[0]?.value).toBeGreaterThanOrEqual(3)
      expect(failedGets[0]?.sum).toBeGreaterThanOrEqual(3 * 0.09) // each waited the L2 timeout
      const spans = otel.spansNamed('GET')
      expect(spans.length).toBeGreaterThanOrEqual(3)
      for (const span of spans) {
        expect(span.status.code).toBe(SpanStatusCode.ERROR)
        expect(span.attributes['error.type']).toBe('E_RESILIENCE_TIMEOUT')
      }
      expect(await otel.value('ballast.cache.l2.failed')).toBeGreaterThanOrEqual(3)

      // the open breaker refuses without a round trip: neither timed nor traced
      const before = failedGets[0]?.value ?? 0
      otel.resetSpans()
      expect(await cache.get('a')).toBeUndefined()
      const after = (await otel.points(DURATION)).find(
        (p) => p.attributes['db.operation.name'] === 'GET' && p.attributes['error.type'],
      )
      if (cache.stats().breaker === 'open') {
        expect(after?.value).toBe(before)
        expect(otel.spansNamed('GET')).toEqual([])
      }

      p.restore()
      await eventually(async () => (await cache.get('a')) === 1, 5000)
      await eventually(async () => (await breakerState(otel))[0] === 'closed', 5000)
      const ok = (await otel.points(DURATION)).find(
        (p) => p.attributes['db.operation.name'] === 'GET' && !p.attributes['error.type'],
      )
      expect(ok?.value).toBeGreaterThanOrEqual(2)
    })
  })
})
