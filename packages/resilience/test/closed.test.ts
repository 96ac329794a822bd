import { rejection, thrown } from '@ballast/testkit'
import { describe, expect, it } from 'vitest'
import {
  circuitBreaker,
  createDegrader,
  createRateLimiter,
  errors,
  isResilienceError,
  ResilienceClosedError,
  retry,
} from '../src/index.js'

function expectClosed(error: unknown, object: string, operation: string): void {
  expect(error).toBeInstanceOf(ResilienceClosedError)
  expect(isResilienceError(error)).toBe(true)
  const closed = error as ResilienceClosedError
  expect(closed.code).toBe('E_RESILIENCE_CLOSED')
  expect(closed.retryable).toBe(false)
  expect(closed.object).toBe(object)
  expect(closed.operation).toBe(operation)
  expect(closed.message).toBe(`${object} is closed: ${operation}() after close()`)
}

describe('after close()', () => {
  it('a circuit breaker refuses fire(), execute(), trip() and reset() with ResilienceClosedError, not a retryable BreakerOpenError', async () => {
    let runs = 0
    const breaker = circuitBreaker(async () => ++runs, { fallback: () => -1 })
    await breaker.close()
    expectClosed(await rejection(() => breaker.fire()), 'circuit breaker', 'fire')
    expectClosed(
      await rejection(() => breaker.execute(async () => 1)),
      'circuit breaker',
      'execute',
    )
    expectClosed(
      thrown(() => breaker.trip()),
      'circuit breaker',
      'trip',
    )
    expectClosed(
      thrown(() => breaker.reset()),
      'circuit breaker',
      'reset',
    )
    // neither the function nor the fallback ran
    expect(runs).toBe(0)
  })

  it('a local rate limiter refuses take(), consume() and reset() with ResilienceClosedError', async () => {
    const limiter = createRateLimiter({ limit: 10, interval: 1000 })
    await limiter.close()
    expectClosed(await rejection(() => limiter.take('k')), 'rate limiter', 'take')
    expectClosed(await rejection(() => limiter.consume('k')), 'rate limiter', 'take')
    expectClosed(await rejection(() => limiter.reset('k')), 'rate limiter', 'reset')
  })

  it('a degrader refuses override(), clearOverride() and evaluate(), and still answers level()', async () => {
    const degrader = createDegrader({
      features: { checkout: { priority: 9, minLevel: 'full' }, reviews: { priority: 1 } },
      overload: { maxInFlight: 10, interval: 60_000, maxEventLoopDelay: 10_000 },
    })
    await degrader.close()
    expectClosed(
      thrown(() => degrader.override('reviews', 'off')),
      'degrader',
      'override',
    )
    expectClosed(
      thrown(() => degrader.clearOverride('reviews')),
      'degrader',
      'clearOverride',
    )
    expectClosed(
      thrown(() => degrader.evaluate()),
      'degrader',
      'evaluate',
    )
    // requests in flight at shutdown keep reading the last levels
    expect(degrader.level('reviews')).toBe('full')
    expect(await degrader.track(async () => 'ok')).toBe('ok')
  })
})

describe('retry()', () => {
  it('gives up at once on a closed breaker instead of retrying it', async () => {
    const breaker = circuitBreaker()
    await breaker.close()
    let attempts = 0
    const policy = retry({ maxAttempts: 5, initialDelay: 0, maxDelay: 0 })
    const error = await rejection(() =>
      policy.execute(() => {
        attempts++
        return breaker.execute(async () => 'never')
      }),
    )
    expectClosed(error, 'circuit breaker', 'execute')
    expect(attempts).toBe(1)
  })
})

describe('ResilienceClosedError', () => {
  it('is in the errors map and is never retryable, whatever the options say', () => {
    expect(errors.ResilienceClosedError).toBe(ResilienceClosedError)
    expect(new ResilienceClosedError('rate limiter', 'take', { retryable: true }).retryable).toBe(
      false,
    )
  })
})
