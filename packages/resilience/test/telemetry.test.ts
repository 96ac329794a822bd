import { createTestTelemetry, type ReadableSpan, type TestTelemetry } from '@ballast/testkit/otel'
import { type Span, trace } from '@opentelemetry/api'
import { afterEach, describe, expect, it } from 'vitest'
import {
  BreakerOpenError,
  BulkheadRejectedError,
  bulkhead,
  circuitBreaker,
  createDegrader,
  createIdempotency,
  createRateLimiter,
  fallback,
  InvalidArgumentError,
  ResilienceClosedError,
  retry,
  TimeoutError,
  timeout,
} from '../src/index.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const down = () => Promise.reject(Object.assign(new Error('down'), { code: 'ECONNREFUSED' }))

let otel: TestTelemetry
const closers: (() => Promise<void>)[] = []

function sdk() {
  otel = createTestTelemetry()
  return { meterProvider: otel.meterProvider, tracerProvider: otel.tracerProvider }
}

afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
  await otel?.shutdown()
})

/** Runs `fn` inside a span of the test's own tracer (the caller's span), and returns it ended. */
async function inCallerSpan(fn: () => Promise<unknown>): Promise<ReadableSpan> {
  const tracer = otel.tracerProvider.getTracer('test')
  await tracer.startActiveSpan('caller', async (span: Span) => {
    try {
      await fn()
    } finally {
      span.end()
    }
  })
  const [caller] = otel.spansNamed('caller')
  if (caller === undefined) throw new Error('no caller span')
  return caller
}

async function unitOf(name: string): Promise<string | undefined> {
  return (await otel.collect()).find((m) => m.descriptor.name === name)?.descriptor.unit
}

describe('circuit breaker telemetry', () => {
  const state = (name: string, s: string) => ({
    'ballast.resilience.breaker.name': name,
    'ballast.resilience.state': s,
  })

  it('reports its state as one gauge series per state, and counts transitions and calls', async () => {
    const breaker = circuitBreaker({
      name: 'psp',
      volumeThreshold: 2,
      errorThresholdPercentage: 50,
      resetTimeout: 60,
      ...sdk(),
    })
    closers.push(() => breaker.close())
    const gauge = 'ballast.resilience.breaker.state'
    expect(await otel.value(gauge, state('psp', 'closed'))).toBe(1)
    expect(await otel.value(gauge, state('psp', 'open'))).toBe(0)
    expect(await otel.value(gauge, state('psp', 'halfOpen'))).toBe(0)

    await breaker.execute(() => 'ok')
    await expect(breaker.execute(down)).rejects.toThrow('down')
    await expect(breaker.execute(down)).rejects.toThrow('down')
    expect(breaker.state).toBe('open')
    await expect(breaker.execute(() => 'ok')).rejects.toBeInstanceOf(BreakerOpenError)

    expect(await otel.value(gauge, state('psp', 'closed'))).toBe(0)
    expect(await otel.value(gauge, state('psp', 'open'))).toBe(1)
    const transitions = 'ballast.resilience.breaker.transitions'
    expect(await otel.value(transitions, state('psp', 'open'))).toBe(1)
    expect(await otel.value(transitions, state('psp', 'halfOpen'))).toBe(0)
    expect(await otel.value(transitions, state('psp', 'closed'))).toBe(0)
    const calls = (outcome: string) =>
      otel.value('ballast.resilience.breaker.calls', {
        'ballast.resilience.breaker.name': 'psp',
        'ballast.resilience.outcome': outcome,
      })
    expect(await calls('succeeded')).toBe(1)
    expect(await calls('failed')).toBe(2)
    expect(await calls('rejected')).toBe(1)
    expect(await unitOf(gauge)).toBe('1')
    expect(await unitOf(transitions)).toBe('{transition}')
    expect(await unitOf('ballast.resilience.breaker.calls')).toBe('{call}')

    await sleep(100) // past resetTimeout: half-open
    expect(breaker.state).toBe('halfOpen')
    expect(await otel.value(gauge, state('psp', 'halfOpen'))).toBe(1)
    expect(await otel.value(gauge, state('psp', 'open'))).toBe(0)
    await breaker.execute(() => 'probe')
    expect(breaker.state).toBe('closed')
    expect(await otel.value(gauge, state('psp', 'closed'))).toBe(1)
    expect(await otel.value(transitions, state('psp', 'halfOpen'))).toBe(1)
    expect(await otel.value(transitions, state('psp', 'closed'))).toBe(1)
    expect(breaker.stats()).toMatchObject({ opened: 1, halfOpened: 1, closed: 1 })
    // Every point carries the breaker's name and nothing unbounded.
    for (const point of await otel.points(gauge)) {
      expect(Object.keys(point.attributes).sort()).toEqual([
        'ballast.resilience.breaker.name',
        'ballast.resilience.state',
      ])
    }
  })

  it('counts timeouts and fallbacks', async () => {
    const breaker = circuitBreaker({
      name: 'slow',
      timeout: 20,
      volumeThreshold: 100,
      fallback: () => 'cached',
      ...sdk(),
    })
    closers.push(() => breaker.close())
    await expect(breaker.execute(() => sleep(200))).resolves.toBe('cached')
    await expect(breaker.execute(down)).resolves.toBe('cached')
    const name = { 'ballast.resilience.breaker.name': 'slow' }
    expect(await otel.value('ballast.resilience.breaker.timeouts', name)).toBe(1)
    expect(await otel.value('ballast.resilience.breaker.fallbacks', name)).toBe(2)
    expect(
      await otel.value('ballast.resilience.breaker.calls', {
        ...name,
        'ballast.resilience.outcome': 'failed',
      }),
    ).toBe(2)
  })

  it('creates no span of its own; marks the caller span when it opens, rejects or times out', async () => {
    const breaker = circuitBreaker({
      name: 'psp',
      volumeThreshold: 1,
      errorThresholdPercentage: 10,
      resetTimeout: 60_000,
      ...sdk(),
    })
    closers.push(() => breaker.close())
    const quiet = await inCallerSpan(() => breaker.execute(() => 'ok'))
    expect(quiet.events).toEqual([])
    otel.resetSpans()

    const tripped = await inCallerSpan(() => breaker.execute(down).catch(() => {}))
    expect(tripped.events.map((e) => e.name)).toEqual(['ballast.resilience.breaker.opened'])
    expect(tripped.events[0]?.attributes).toEqual({ 'ballast.resilience.breaker.name': 'psp' })
    otel.resetSpans()

    const refused = await inCallerSpan(() => breaker.execute(() => 'ok').catch(() => {}))
    expect(refused.events.map((e) => e.name)).toEqual(['ballast.resilience.breaker.rejected'])
    expect(refused.events[0]?.attributes).toEqual({
      'ballast.resilience.breaker.name': 'psp',
      'ballast.resilience.state': 'open',
    })
    expect(otel.spans().map((s) => s.name)).toEqual(['caller'])

    const slow = circuitBreaker({ name: 'slow', timeout: 20, volumeThreshold: 100 })
    closers.push(() => slow.close())
    otel.resetSpans()
    const late = await inCallerSpan(() => slow.execute(() => sleep(200)).catch(() => {}))
    expect(late.events.map((e) => e.name)).toEqual(['ballast.resilience.timed_out'])
    expect(late.events[0]?.attributes).toEqual({
      'ballast.resilience.breaker.name': 'slow',
      'error.type': 'E_RESILIENCE_TIMEOUT',
    })
  })

  it('stops reporting at close(): the gauge is no longer read', async () => {
    const breaker = circuitBreaker({ name: 'gone', ...sdk() })
    const where = state('gone', 'open')
    expect(await otel.value('ballast.resilience.breaker.state', where)).toBe(0)
    await breaker.close() // a closed breaker reads as open from now on
    expect(breaker.state).toBe('open')
    expect(await otel.value('ballast.resilience.breaker.state', where)).toBe(0)
  })

  it('refuses a provider that is not one', () => {
    expect(() => circuitBreaker({ meterProvider: {} as never })).toThrow(InvalidArgumentError)
    expect(() => circuitBreaker({ tracerProvider: 'global' as never })).toThrow(/tracerProvider/)
  })
})

describe('retry telemetry', () => {
  it('counts calls by outcome and retries, per policy name', async () => {
    const telemetry = sdk()
    const psp = retry({
      name: 'psp',
      maxAttempts: 3,
      initialDelay: 1,
      retryOn: () => true,
      ...telemetry,
    })
    const stock = retry({ name: 'stock', maxAttempts: 2, initialDelay: 1, ...telemetry })
    closers.push(
      () => psp.close(),
      () => stock.close(),
    )
    let n = 0
    await psp.execute(() => (++n < 3 ? down() : 'ok'))
    await expect(psp.execute(down)).rejects.toThrow('down')
    await stock.execute(() => 'ok')

    const where = (name: string, outcome?: string) => ({
      'ballast.resilience.retry.name': name,
      ...(outcome === undefined ? {} : { 'ballast.resilience.outcome': outcome }),
    })
    expect(await otel.value('ballast.resilience.retry.calls', where('psp', 'succeeded'))).toBe(1)
    expect(await otel.value('ballast.resilience.retry.calls', where('psp', 'failed'))).toBe(1)
    expect(await otel.value('ballast.resilience.retry.retries', where('psp'))).toBe(4)
    expect(await otel.value('ballast.resilience.retry.calls', where('stock', 'succeeded'))).toBe(1)
    expect(await otel.value('ballast.resilience.retry.retries', where('stock'))).toBe(0)
    expect(await unitOf('ballast.resilience.retry.retries')).toBe('{retry}')
    expect(psp.stats()).toMatchObject({ retries: 4, succeeded: 1, failed: 1 })
  })

  it('adds a retried event to the caller span for each retry, none when the first try succeeds', async () => {
    const policy = retry({ name: 'psp', maxAttempts: 3, initialDelay: 1, retryOn: () => true })
    sdk()
    closers.push(() => policy.close())
    const first = await inCallerSpan(() => policy.execute(() => 'ok'))
    expect(first.events).toEqual([])
    otel.resetSpans()
    let n = 0
    const caller = await inCallerSpan(() => policy.execute(() => (++n < 3 ? down() : 'ok')))
    expect(caller.events.map((e) => [e.name, e.attributes])).toEqual([
      [
        'ballast.resilience.retried',
        {
          'ballast.resilience.retry.name': 'psp',
          'ballast.resilience.attempt': 2,
          'error.type': 'ECONNREFUSED',
        },
      ],
      [
        'ballast.resilience.retried',
        {
          'ballast.resilience.retry.name': 'psp',
          'ballast.resilience.attempt': 3,
          'error.type': 'ECONNREFUSED',
        },
      ],
    ])
  })

  it('refuses calls after close()', async () => {
    const policy = retry({ name: 'gone', ...sdk() })
    await policy.execute(() => 1)
    expect(await otel.value('ballast.resilience.retry.calls')).toBe(1)
    await policy.close()
    await policy.close()
    await expect(policy.execute(() => 1)).rejects.toBeInstanceOf(ResilienceClosedError)
  })
})

describe('timeout telemetry', () => {
  it('counts calls, timeouts and calls in flight; puts the timeout on the caller span', async () => {
    const policy = timeout({ name: 'psp', duration: 30, ...sdk() })
    closers.push(() => policy.close())
    const named = { 'ballast.resilience.timeout.name': 'psp' }
    let release!: () => void
    const running = policy.execute(() => new Promise<void>((r) => (release = r)))
    expect(await otel.value('ballast.resilience.timeout.in_flight', named)).toBe(1)
    release()
    await running
    expect(await otel.value('ballast.resilience.timeout.in_flight', named)).toBe(0)
    expect((await inCallerSpan(() => policy.execute(() => 'fast'))).events).toEqual([])
    otel.resetSpans()

    const caller = await inCallerSpan(async () => {
      await expect(policy.execute(() => sleep(300))).rejects.toBeInstanceOf(TimeoutError)
    })
    expect(caller.events.map((e) => [e.name, e.attributes])).toEqual([
      [
        'ballast.resilience.timed_out',
        { 'ballast.resilience.timeout.name': 'psp', 'error.type': 'E_RESILIENCE_TIMEOUT' },
      ],
    ])
    expect(await otel.value('ballast.resilience.timeout.calls', named)).toBe(3)
    expect(await otel.value('ballast.resilience.timeout.timeouts', named)).toBe(1)
    expect(await unitOf('ballast.resilience.timeout.timeouts')).toBe('{call}')
  })
})

describe('bulkhead telemetry', () => {
  it('reports calls running and queued now, and calls by outcome (rejected included)', async () => {
    const policy = bulkhead({ name: 'db', limit: 1, queue: 1, ...sdk() })
    closers.push(() => policy.close())
    const named = { 'ballast.resilience.bulkhead.name': 'db' }
    let release!: () => void
    const running = policy.execute(() => new Promise<void>((r) => (release = r)))
    const queued = policy.execute(() => 'second')
    await expect(policy.execute(() => 'third')).rejects.toBeInstanceOf(BulkheadRejectedError)
    expect(await otel.value('ballast.resilience.bulkhead.active', named)).toBe(1)
    expect(await otel.value('ballast.resilience.bulkhead.queued', named)).toBe(1)
    const calls = (outcome: string) =>
      otel.value('ballast.resilience.bulkhead.calls', {
        ...named,
        'ballast.resilience.outcome': outcome,
      })
    expect(await calls('rejected')).toBe(1)
    expect(await calls('executed')).toBe(1)
    release()
    await running
    await queued
    expect(await otel.value('ballast.resilience.bulkhead.active', named)).toBe(0)
    expect(await otel.value('ballast.resilience.bulkhead.queued', named)).toBe(0)
    expect(await calls('executed')).toBe(2)
    expect(await calls('aborted')).toBe(0)
    await policy.close()
    await expect(policy.execute(() => 1)).rejects.toBeInstanceOf(ResilienceClosedError)
  })
})

describe('local rate limiter telemetry', () => {
  it('counts decisions, allowed and limited, and the keys it holds', async () => {
    const limiter = createRateLimiter({ name: 'login', limit: 2, interval: '1m', ...sdk() })
    closers.push(() => limiter.close())
    for (let i = 0; i < 3; i++) limiter.take('user-a')
    limiter.take('user-b')
    const decisions = (decision: string) =>
      otel.value('ballast.resilience.rate_limiter.decisions', {
        'ballast.resilience.rate_limiter.name': 'login',
        'ballast.resilience.decision': decision,
      })
    expect(await decisions('allowed')).toBe(3)
    expect(await decisions('limited')).toBe(1)
    expect(await otel.value('ballast.resilience.rate_limiter.keys')).toBe(2)
    expect(await unitOf('ballast.resilience.rate_limiter.decisions')).toBe('{decision}')
    // No key in any attribute.
    for (const metric of await otel.collect()) {
      for (const point of metric.dataPoints) {
        expect(JSON.stringify(point.attributes)).not.toMatch(/user-/)
      }
    }
    await limiter.close() // forgets its keys: the gauge would read 0 if it were still read
    expect(limiter.stats().keys).toBe(0)
    expect(await otel.value('ballast.resilience.rate_limiter.keys')).toBe(2)
  })
})

describe('fallback telemetry', () => {
  it('counts calls and the failures it answered', async () => {
    const policy = fallback(() => [] as string[], { name: 'recommendations', ...sdk() })
    closers.push(() => policy.close())
    await policy.execute(() => ['a'])
    await policy.execute(down)
    const named = { 'ballast.resilience.fallback.name': 'recommendations' }
    expect(await otel.value('ballast.resilience.fallback.calls', named)).toBe(2)
    expect(await otel.value('ballast.resilience.fallback.fallbacks', named)).toBe(1)
    await policy.close()
    await expect(policy.execute(() => ['a'])).rejects.toBeInstanceOf(ResilienceClosedError)
  })
})

describe('degrader telemetry', () => {
  it('reports each feature level as one gauge series per level, requests in flight and shed steps', async () => {
    const psp = circuitBreaker({ name: 'psp', volumeThreshold: 1, resetTimeout: 60_000 })
    const degrader = createDegrader({
      features: {
        recommendations: { priority: 10 },
        payments: { priority: 100, minLevel: 'full', breakers: [psp], breakerLevel: 'degraded' },
      },
      overload: false,
      ...sdk(),
    })
    closers.push(
      () => degrader.close(),
      () => psp.close(),
    )
    const level = (feature: string, l: string) =>
      otel.value('ballast.resilience.degrader.level', {
        'ballast.resilience.feature': feature,
        'ballast.resilience.level': l,
      })
    expect(await level('recommendations', 'full')).toBe(1)
    expect(await level('payments', 'full')).toBe(1)
    degrader.override('recommendations', 'off')
    psp.trip()
    expect(await level('recommendations', 'full')).toBe(0)
    expect(await level('recommendations', 'off')).toBe(1)
    expect(await level('payments', 'degraded')).toBe(1)
    expect(await level('payments', 'full')).toBe(0)
    expect(await otel.points('ballast.resilience.degrader.level')).toHaveLength(6)
    const end = degrader.begin()
    expect(await otel.value('ballast.resilience.degrader.in_flight')).toBe(1)
    end()
    expect(await otel.value('ballast.resilience.degrader.in_flight')).toBe(0)
    expect(await otel.value('ballast.resilience.degrader.shed_steps')).toBe(0)
    // Not watching overload: no event-loop delay to report.
    expect(await otel.points('ballast.resilience.degrader.event_loop_delay')).toEqual([])
  })

  it('reports the event-loop delay in seconds while watching overload', async () => {
    const degrader = createDegrader({
      features: { search: { priority: 1 } },
      overload: { interval: 250 },
      ...sdk(),
    })
    closers.push(() => degrader.close())
    const sampled = new Promise<number>((resolve) =>
      degrader.on('sampled', ({ eventLoopDelayMs }) => {
        if (eventLoopDelayMs > 0) resolve(eventLoopDelayMs)
      }),
    )
    const busyUntil = Date.now() + 30
    while (Date.now() < busyUntil) {} // block the loop once
    const ms = await sampled
    // Read before the next sample, 250 ms later.
    expect(await otel.value('ballast.resilience.degrader.event_loop_delay')).toBe(ms / 1000)
  })
})

describe('close()', () => {
  it('removes the one batch callback each component registered', async () => {
    const { meterProvider } = sdk()
    let added = 0
    let removed = 0
    const counting = {
      getMeter(...args: Parameters<typeof meterProvider.getMeter>) {
        const meter = meterProvider.getMeter(...args)
        return new Proxy(meter, {
          get(target, property) {
            if (property === 'addBatchObservableCallback') {
              return (...a: Parameters<typeof meter.addBatchObservableCallback>) => {
                added++
                target.addBatchObservableCallback(...a)
              }
            }
            if (property === 'removeBatchObservableCallback') {
              return (...a: Parameters<typeof meter.removeBatchObservableCallback>) => {
                removed++
                target.removeBatchObservableCallback(...a)
              }
            }
            const value = Reflect.get(target, property)
            return typeof value === 'function' ? value.bind(target) : value
          },
        })
      },
    }
    const components = [
      circuitBreaker({ meterProvider: counting }),
      retry({ meterProvider: counting }),
      timeout({ meterProvider: counting }),
      bulkhead({ limit: 1, meterProvider: counting }),
      createRateLimiter({ limit: 1, meterProvider: counting }),
      fallback(() => 0, { meterProvider: counting }),
      createDegrader({
        features: { a: { priority: 1 } },
        overload: false,
        meterProvider: counting,
      }),
    ]
    expect(added).toBe(7)
    for (const c of components) await c.close()
    for (const c of components) await c.close() // twice: removed once
    expect(removed).toBe(7)
  })
})

describe('names', () => {
  it('tag every series; each component has a default and refuses a name that is not a string', async () => {
    const telemetry = sdk()
    const components = [
      retry(telemetry),
      timeout(telemetry),
      bulkhead({ limit: 1, ...telemetry }),
      createRateLimiter({ limit: 1, ...telemetry }),
    ]
    expect(components.map((c) => c.name)).toEqual(['retry', 'timeout', 'bulkhead', 'rate-limiter'])
    closers.push(...components.map((c) => () => c.close()))
    expect(
      await otel.value('ballast.resilience.retry.retries', {
        'ballast.resilience.retry.name': 'retry',
      }),
    ).toBe(0)
    expect(
      await otel.value('ballast.resilience.timeout.calls', {
        'ballast.resilience.timeout.name': 'timeout',
      }),
    ).toBe(0)
    expect(
      await otel.value('ballast.resilience.bulkhead.active', {
        'ballast.resilience.bulkhead.name': 'bulkhead',
      }),
    ).toBe(0)
    expect(
      await otel.value('ballast.resilience.rate_limiter.keys', {
        'ballast.resilience.rate_limiter.name': 'rate-limiter',
      }),
    ).toBe(0)
    expect(() => retry({ name: 5 as never })).toThrow(/invalid option "name"/)
    expect(() => timeout({ name: '' })).toThrow(InvalidArgumentError)
    expect(() => bulkhead({ limit: 1, name: null as never })).toThrow(InvalidArgumentError)
    expect(() => createRateLimiter({ limit: 1, name: {} as never })).toThrow(InvalidArgumentError)
    const fakeRedis = { evalsha: () => Promise.resolve(), eval: () => Promise.resolve() } as never
    expect(() => createIdempotency({ redis: fakeRedis, name: 7 as never })).toThrow(/"name"/)
    expect(() => createIdempotency({ redis: fakeRedis, meterProvider: {} as never })).toThrow(
      /meterProvider/,
    )
  })
})

describe('without an SDK', () => {
  it('every component works on the global no-op providers and records nothing', async () => {
    const breaker = circuitBreaker({ name: 'plain' })
    const policy = retry({ maxAttempts: 2, initialDelay: 1, retryOn: () => true })
    const limit = timeout(1000)
    const slots = bulkhead({ limit: 1 })
    let n = 0
    await expect(
      policy.execute(() =>
        limit.execute(() => slots.execute(() => breaker.execute(() => (++n < 2 ? down() : n)))),
      ),
    ).resolves.toBe(2)
    expect(trace.getActiveSpan()).toBeUndefined()
    for (const c of [breaker, policy, limit, slots]) await c.close()
  })
})
