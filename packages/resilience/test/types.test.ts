import { describe, expectTypeOf, it } from 'vitest'
import {
  type CircuitBreaker,
  circuitBreaker,
  createIdempotency,
  type Duration,
  fallback,
  type IdempotentResult,
  pipeline,
  retry,
  timeout,
  type Unsubscribe,
} from '../src/index.js'

/** Enough of an ioredis client to construct a store; nothing here reaches Redis. */
const fakeRedis = { evalsha: () => Promise.resolve(), eval: () => Promise.resolve() } as never

describe('types', () => {
  it('a breaker around a function keeps its arguments and result', () => {
    const getRates = circuitBreaker(async (currency: string, day: number) => ({ currency, day }))
    expectTypeOf(getRates).toEqualTypeOf<
      CircuitBreaker<[currency: string, day: number], { currency: string; day: number }>
    >()
    expectTypeOf(getRates.fire).parameters.toEqualTypeOf<[currency: string, day: number]>()
    expectTypeOf(getRates.fire).returns.resolves.toEqualTypeOf<{ currency: string; day: number }>()
    void getRates.close()
  })

  it('a breaker, a retry and a timeout resolve with the work’s own type', () => {
    const b = circuitBreaker()
    expectTypeOf(b.execute(async () => 42)).resolves.toEqualTypeOf<number>()
    expectTypeOf(retry().execute(() => 'sync')).resolves.toEqualTypeOf<string>()
    expectTypeOf(timeout('1s').execute(async () => [1, 2])).resolves.toEqualTypeOf<number[]>()
    void b.close()
  })

  it('a pipeline adds only what its fallbacks may return', () => {
    const p = pipeline(
      fallback(() => null),
      retry(),
      timeout(1000),
    )
    expectTypeOf(p.execute(async () => 42)).resolves.toEqualTypeOf<number | null>()
  })

  it('store.run() resolves with the value type of the work', () => {
    const store = createIdempotency({ redis: fakeRedis })
    const run = () => store.run('k', undefined, async () => ({ orderId: 'o1' }))
    expectTypeOf(run).returns.resolves.toEqualTypeOf<IdempotentResult<{ orderId: string }>>()
    expectTypeOf<Awaited<ReturnType<typeof run>>['value']>().toEqualTypeOf<{ orderId: string }>()
    void store.close()
  })

  it('on() returns an unsubscribe function; durations take strings with a unit', () => {
    const b = circuitBreaker()
    expectTypeOf(b.on('opened', () => {})).toEqualTypeOf<Unsubscribe>()
    expectTypeOf<'30s'>().toExtend<Duration>()
    expectTypeOf<'30'>().not.toExtend<Duration>()
    void b.close()
  })
})
