import { createFaultProxy, type FaultProxy, redisUrl } from '@ballast/testkit'
import { createTestTelemetry, type ReadableSpan, type TestTelemetry } from '@ballast/testkit/otel'
import { type Span, SpanKind, SpanStatusCode } from '@opentelemetry/api'
import { Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import {
  circuitBreaker,
  createIdempotency,
  createRateLimiter,
  IdempotencyInFlightError,
  IdempotencyMismatchError,
  IdempotencyUnavailableError,
} from '../src/index.js'
import { NOT_ABOUT_TIMEOUTS, redisFixture, uniquePrefix } from './helpers.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const prefix = uniquePrefix('telemetry')
let fixture: Awaited<ReturnType<typeof redisFixture>>
let otel: TestTelemetry
let n = 0
const key = () => `order-${++n}-${Date.now()}`
const closers: (() => Promise<void>)[] = []

beforeAll(async () => {
  fixture = await redisFixture(prefix)
})
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
  await otel?.shutdown()
})
afterAll(async () => {
  await fixture.cleanup()
})

function sdk() {
  otel = createTestTelemetry()
  return { meterProvider: otel.meterProvider, tracerProvider: otel.tracerProvider }
}

/** Runs `fn` inside the caller's own span; returns that span once ended. */
async function inCallerSpan(fn: () => Promise<unknown>): Promise<ReadableSpan> {
  await otel.tracerProvider.getTracer('test').startActiveSpan('caller', async (span: Span) => {
    try {
      await fn()
    } finally {
      span.end()
    }
  })
  const caller = otel.spansNamed('caller').at(-1)
  if (caller === undefined) throw new Error('no caller span')
  return caller
}

/** Every attribute value of every span, span event and metric point, as strings. */
async function everyAttributeValue(): Promise<string[]> {
  const values: string[] = []
  for (const span of otel.spans()) {
    for (const value of Object.values(span.attributes)) values.push(String(value))
    for (const event of span.events) {
      for (const value of Object.values(event.attributes ?? {})) values.push(String(value))
    }
    if (span.status.message !== undefined) values.push(span.status.message)
    values.push(span.name)
  }
  for (const metric of await otel.collect()) {
    for (const point of metric.dataPoints) {
      for (const value of Object.values(point.attributes)) values.push(String(value))
    }
  }
  return values
}

describe('idempotency store telemetry (Redis)', () => {
  it('counts claims by outcome: new, replayed, conflict, mismatch; and how held claims ended', async () => {
    const store = createIdempotency({
      redis: fixture.redis,
      prefix,
      name: 'payments',
      commandTimeout: NOT_ABOUT_TIMEOUTS,
      ...sdk(),
    })
    closers.push(() => store.close())
    const k = key()
    let release!: () => void
    let started!: () => void
    const working = new Promise<void>((r) => (started = r))
    const first = store.run(k, { amount: 5 }, () => {
      started()
      return new Promise<string>((r) => (release = () => r('paid')))
    })
    await working // the first claim is held
    expect(
      await otel.value('ballast.resilience.idempotency.held', {
        'ballast.resilience.idempotency.name': 'payments',
      }),
    ).toBe(1)
    await expect(store.run(k, { amount: 5 }, () => 'again')).rejects.toBeInstanceOf(
      IdempotencyInFlightError,
    )
    release()
    await first
    await expect(store.run(k, { amount: 5 }, () => 'again')).resolves.toEqual({
      value: 'paid',
      replayed: true,
    })
    await expect(store.run(k, { amount: 6 }, () => 'other')).rejects.toBeInstanceOf(
      IdempotencyMismatchError,
    )
    const transient = Object.assign(new Error('psp busy'), { retryable: true })
    await expect(
      store.run(key(), {}, () => {
        throw transient
      }),
    ).rejects.toBe(transient)

    const claims = (outcome: string) =>
      otel.value('ballast.resilience.idempotency.claims', {
        'ballast.resilience.idempotency.name': 'payments',
        'ballast.resilience.outcome': outcome,
      })
    expect(await claims('new')).toBe(2)
    expect(await claims('replayed')).toBe(1)
    expect(await claims('conflict')).toBe(1)
    expect(await claims('mismatch')).toBe(1)
    const results = (outcome: string) =>
      otel.value('ballast.resilience.idempotency.results', {
        'ballast.resilience.outcome': outcome,
      })
    expect(await results('completed')).toBe(1)
    expect(await results('released')).toBe(1)
    expect(await results('failed')).toBe(0)
    expect(await results('fenced')).toBe(0)
    expect(await otel.value('ballast.resilience.idempotency.held')).toBe(0)
    expect(await otel.value('ballast.resilience.idempotency.redis_calls_failed')).toBe(0)
    const claimsMetric = (await otel.collect()).find(
      (m) => m.descriptor.name === 'ballast.resilience.idempotency.claims',
    )
    expect(claimsMetric?.descriptor.unit).toBe('{claim}')
    expect(store.stats()).toMatchObject({
      acquired: 2,
      replayed: 1,
      inFlightRefused: 1,
      mismatched: 1,
    })
  })

  it('traces each Redis round trip as a CLIENT span under the caller, timed in db.client.operation.duration', async () => {
    const store = createIdempotency({
      redis: fixture.redis,
      prefix,
      name: 'payments',
      commandTimeout: NOT_ABOUT_TIMEOUTS,
      ...sdk(),
    })
    closers.push(() => store.close())
    const k = key()
    const scope = 'user-4711'
    const caller = await inCallerSpan(() => store.run(k, { card: '4242' }, () => 'paid', { scope }))
    const claim = otel.spansNamed('EVALSHA claim')
    const complete = otel.spansNamed('EVALSHA complete')
    expect(claim).toHaveLength(1)
    expect(complete).toHaveLength(1)
    for (const span of [...claim, ...complete]) {
      expect(span.kind).toBe(SpanKind.CLIENT)
      expect(span.parentSpanContext?.spanId).toBe(caller.spanContext().spanId)
      expect(span.spanContext().traceId).toBe(caller.spanContext().traceId)
      expect(span.status.code).not.toBe(SpanStatusCode.ERROR)
    }
    expect(claim[0]?.attributes).toEqual({
      'db.system.name': 'redis',
      'db.operation.name': 'EVALSHA',
      'db.query.summary': 'EVALSHA claim',
      'server.address': fixture.redis.options.host,
      ...(fixture.redis.options.port === 6379 ? {} : { 'server.port': fixture.redis.options.port }),
      'ballast.resilience.idempotency.name': 'payments',
      'ballast.resilience.outcome': 'new',
    })
    expect(complete[0]?.attributes['ballast.resilience.outcome']).toBe('stored')

    // A replay: one claim round trip, its outcome on the span.
    otel.resetSpans()
    await store.run(k, { card: '4242' }, () => 'paid', { scope })
    expect(otel.spans().map((s) => [s.name, s.attributes['ballast.resilience.outcome']])).toEqual([
      ['EVALSHA claim', 'replayed'],
    ])

    const points = await otel.points('db.client.operation.duration')
    const count = (summary: string) =>
      points
        .filter((p) => p.attributes['db.query.summary'] === summary)
        .reduce((sum, p) => sum + p.value, 0)
    expect(count('EVALSHA claim')).toBe(2)
    expect(count('EVALSHA complete')).toBe(1)
    for (const p of points) {
      expect(p.attributes['db.system.name']).toBe('redis')
      expect(p.sum).toBeGreaterThan(0)
      expect(p.sum).toBeLessThan(NOT_ABOUT_TIMEOUTS / 1000)
    }
    const histogram = (await otel.collect()).find(
      (m) => m.descriptor.name === 'db.client.operation.duration',
    )
    expect(histogram?.descriptor.unit).toBe('s')

    // No key, scope, Redis key or fingerprinted value anywhere.
    const values = (await everyAttributeValue()).join('\n')
    expect(values).not.toContain(k)
    expect(values).not.toContain(scope)
    expect(values).not.toContain(prefix)
    expect(values).not.toContain('4242')
  })

  describe('Redis cut (fault proxy)', () => {
    let proxy: FaultProxy
    let redis: Redis
    beforeAll(async () => {
      const url = new URL(await redisUrl())
      proxy = await createFaultProxy({ host: url.hostname, port: Number(url.port || 6379) })
      redis = new Redis(proxy.url(await redisUrl()), {
        maxRetriesPerRequest: 1,
        retryStrategy: () => 50,
      })
    })
    afterAll(async () => {
      proxy.restore()
      redis.disconnect()
      await proxy.close()
    })

    it('shows as errors on the store instruments: a failed CLIENT span, error.type on the duration, redis_calls_failed', async () => {
      const store = createIdempotency({
        redis,
        prefix,
        name: 'payments',
        commandTimeout: 300,
        ...sdk(),
      })
      closers.push(() => store.close())
      await store.run(key(), {}, () => 'ok') // one good round trip first
      otel.resetSpans()
      proxy.blackhole()
      proxy.cut()
      let runs = 0
      const caller = await inCallerSpan(async () => {
        await expect(store.run(key(), {}, () => ++runs)).rejects.toBeInstanceOf(
          IdempotencyUnavailableError,
        )
      })
      expect(runs).toBe(0)
      const [failed] = otel.spansNamed('EVALSHA claim')
      expect(failed?.kind).toBe(SpanKind.CLIENT)
      expect(failed?.parentSpanContext?.spanId).toBe(caller.spanContext().spanId)
      expect(failed?.status.code).toBe(SpanStatusCode.ERROR)
      expect(failed?.attributes['error.type']).toBe('E_RESILIENCE_IDEMPOTENCY_UNAVAILABLE')
      expect(failed?.attributes['ballast.resilience.outcome']).toBeUndefined()

      const errored = await otel.value('db.client.operation.duration', {
        'db.query.summary': 'EVALSHA claim',
        'error.type': 'E_RESILIENCE_IDEMPOTENCY_UNAVAILABLE',
      })
      expect(errored).toBe(1)
      const ok = (await otel.points('db.client.operation.duration')).filter(
        (p) => p.attributes['error.type'] === undefined,
      )
      expect(ok.reduce((sum, p) => sum + p.value, 0)).toBe(2) // the good claim and complete
      expect(
        await otel.value('ballast.resilience.idempotency.redis_calls_failed', {
          'ballast.resilience.idempotency.name': 'payments',
        }),
      ).toBe(1)
      proxy.restore()
      await sleep(300)
    })

    it('counts the runs that went ahead unprotected (failOpen)', async () => {
      const store = createIdempotency({
        redis,
        prefix,
        commandTimeout: 300,
        failOpen: true,
        ...sdk(),
      })
      closers.push(() => store.close())
      proxy.blackhole()
      proxy.cut()
      await expect(store.run(key(), {}, () => 'unprotected')).resolves.toEqual({
        value: 'unprotected',
        replayed: false,
      })
      expect(
        await otel.value('ballast.resilience.idempotency.unprotected', {
          'ballast.resilience.idempotency.name': 'idempotency',
        }),
      ).toBe(1)
      expect(store.stats().ranUnprotected).toBe(1)
      proxy.restore()
      await sleep(300)
    })
  })
})

describe('Redis rate limiter telemetry', () => {
  it('counts decisions and traces each EVALSHA with what it decided (never the key)', async () => {
    const limiter = createRateLimiter({
      redis: fixture.redis,
      prefix,
      name: 'login',
      limit: 2,
      interval: '1m',
      batch: false,
      ...sdk(),
    })
    closers.push(() => limiter.close())
    const k = key()
    const caller = await inCallerSpan(async () => {
      for (let i = 0; i < 3; i++) await limiter.take(k)
    })
    const spans = otel.spansNamed('EVALSHA rate_limit')
    expect(spans.map((s) => s.attributes['ballast.resilience.decision'])).toEqual([
      'allowed',
      'allowed',
      'limited',
    ])
    for (const span of spans) {
      expect(span.kind).toBe(SpanKind.CLIENT)
      expect(span.parentSpanContext?.spanId).toBe(caller.spanContext().spanId)
      expect(span.attributes['db.system.name']).toBe('redis')
      expect(span.attributes['ballast.resilience.rate_limiter.name']).toBe('login')
    }
    const decisions = (decision: string) =>
      otel.value('ballast.resilience.rate_limiter.decisions', {
        'ballast.resilience.rate_limiter.name': 'login',
        'ballast.resilience.decision': decision,
      })
    expect(await decisions('allowed')).toBe(2)
    expect(await decisions('limited')).toBe(1)
    expect(
      await otel.value('db.client.operation.duration', {
        'db.query.summary': 'EVALSHA rate_limit',
      }),
    ).toBe(3)
    expect((await everyAttributeValue()).join('\n')).not.toContain(k)
  })

  it('a batch of decisions is one span with its size and counts', async () => {
    const limiter = createRateLimiter({
      redis: fixture.redis,
      prefix,
      limit: 1,
      interval: '1m',
      ...sdk(),
    })
    closers.push(() => limiter.close())
    const k = key()
    await Promise.all([limiter.take(k), limiter.take(k), limiter.take(key())])
    const [batch, ...rest] = otel.spansNamed('EVALSHA rate_limit')
    expect(rest).toEqual([])
    expect(batch?.attributes).toMatchObject({
      'db.operation.batch.size': 3,
      'ballast.resilience.rate_limiter.allowed': 2,
      'ballast.resilience.rate_limiter.limited': 1,
    })
  })
})

describe('circuit breaker around Redis (fault proxy)', () => {
  let proxy: FaultProxy
  let redis: Redis
  const probe = `${prefix}probe`
  beforeAll(async () => {
    const url = new URL(await redisUrl())
    proxy = await createFaultProxy({ host: url.hostname, port: Number(url.port || 6379) })
    redis = new Redis(proxy.url(await redisUrl()), {
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
      retryStrategy: () => 20,
    })
    await new Promise((resolve) => redis.once('ready', resolve))
    await fixture.redis.set(probe, 'v', 'PX', 60_000)
  })
  afterAll(async () => {
    proxy.restore()
    redis.disconnect()
    await proxy.close()
  })

  it('an open breaker shows as its state metric and its transitions; a recovery closes it again', async () => {
    const breaker = circuitBreaker((k: string) => redis.get(k), {
      name: 'redis',
      window: { type: 'count', size: 10 },
      volumeThreshold: 5,
      errorThresholdPercentage: 50,
      resetTimeout: 300,
      timeout: 200,
      ...sdk(),
    })
    closers.push(() => breaker.close())
    const where = (state: string) => ({
      'ballast.resilience.breaker.name': 'redis',
      'ballast.resilience.state': state,
    })
    for (let i = 0; i < 5; i++) await expect(breaker.fire(probe)).resolves.toBe('v')
    expect(await otel.value('ballast.resilience.breaker.state', where('closed'))).toBe(1)

    proxy.refuse()
    proxy.cut()
    let failedCalls = 0
    while (breaker.state === 'closed' && failedCalls < 50) {
      await breaker.fire(probe).catch(() => {})
      failedCalls++
    }
    await breaker.fire(probe).catch(() => {}) // refused while open
    expect(await otel.value('ballast.resilience.breaker.state', where('open'))).toBe(1)
    expect(await otel.value('ballast.resilience.breaker.state', where('closed'))).toBe(0)
    expect(await otel.value('ballast.resilience.breaker.transitions', where('open'))).toBe(1)
    const calls = (outcome: string) =>
      otel.value('ballast.resilience.breaker.calls', {
        'ballast.resilience.breaker.name': 'redis',
        'ballast.resilience.outcome': outcome,
      })
    expect(await calls('failed')).toBe(failedCalls)
    expect(await calls('rejected')).toBe(1)
    expect(await calls('succeeded')).toBe(5)

    proxy.restore()
    const deadline = Date.now() + 5000
    while (breaker.state !== 'closed' && Date.now() < deadline) {
      await sleep(50)
      await breaker.fire(probe).catch(() => {})
    }
    expect(breaker.state).toBe('closed')
    expect(await otel.value('ballast.resilience.breaker.state', where('closed'))).toBe(1)
    expect(await otel.value('ballast.resilience.breaker.state', where('open'))).toBe(0)
    expect(
      await otel.value('ballast.resilience.breaker.transitions', where('halfOpen')),
    ).toBeGreaterThanOrEqual(1)
    expect(await otel.value('ballast.resilience.breaker.transitions', where('closed'))).toBe(1)
  })
})
