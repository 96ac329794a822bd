import { rejection } from '@ballast/testkit'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  createIdempotency,
  createRateLimiter,
  isResilienceError,
  ResilienceClosedError,
  retry,
} from '../src/index.js'
import { NOT_ABOUT_TIMEOUTS, redisFixture, uniquePrefix } from './helpers.js'

function expectClosed(error: unknown, object: string, operation: string): void {
  expect(error).toBeInstanceOf(ResilienceClosedError)
  expect(isResilienceError(error)).toBe(true)
  const closed = error as ResilienceClosedError
  expect(closed.code).toBe('E_RESILIENCE_CLOSED')
  expect(closed.retryable).toBe(false)
  expect(closed.message).toBe(`${object} is closed: ${operation}() after close()`)
}

const prefix = uniquePrefix('closed')
let fixture: Awaited<ReturnType<typeof redisFixture>>

beforeAll(async () => {
  fixture = await redisFixture(prefix)
})
afterAll(async () => {
  await fixture.cleanup()
})

describe('after close() (Redis)', () => {
  it('a Redis rate limiter refuses take(), consume() and reset() with ResilienceClosedError', async () => {
    const limiter = createRateLimiter({ redis: fixture.redis, prefix, limit: 10, interval: 60_000 })
    expect((await limiter.take('k')).allowed).toBe(true)
    await limiter.close()
    expectClosed(await rejection(() => limiter.take('k')), 'rate limiter', 'take')
    expectClosed(await rejection(() => limiter.consume('k')), 'rate limiter', 'take')
    expectClosed(await rejection(() => limiter.reset('k')), 'rate limiter', 'reset')
  })

  it('an idempotency store refuses claim() and run() with ResilienceClosedError, not a retryable IdempotencyUnavailableError', async () => {
    const store = createIdempotency({
      redis: fixture.redis,
      commandTimeout: NOT_ABOUT_TIMEOUTS,
      prefix,
    })
    await store.close()
    let runs = 0
    expectClosed(await rejection(() => store.claim('order-1')), 'idempotency store', 'claim')
    expectClosed(
      await rejection(() => store.run('order-1', {}, () => ++runs)),
      'idempotency store',
      'run',
    )
    expect(runs).toBe(0)
  })

  it('a closed failOpen store does not run the work unprotected', async () => {
    const store = createIdempotency({
      redis: fixture.redis,
      commandTimeout: NOT_ABOUT_TIMEOUTS,
      prefix,
      failOpen: true,
    })
    await store.close()
    let runs = 0
    expectClosed(
      await rejection(() => store.run('order-2', {}, () => ++runs)),
      'idempotency store',
      'run',
    )
    expect(runs).toBe(0)
  })

  it('retry() gives up at once on a closed idempotency store', async () => {
    const store = createIdempotency({
      redis: fixture.redis,
      commandTimeout: NOT_ABOUT_TIMEOUTS,
      prefix,
    })
    await store.close()
    let attempts = 0
    const error = await rejection(() =>
      retry({ maxAttempts: 5, initialDelay: 0, maxDelay: 0 }).execute(() => {
        attempts++
        return store.run('order-3', {}, () => 'never')
      }),
    )
    expectClosed(error, 'idempotency store', 'run')
    expect(attempts).toBe(1)
  })
})
