import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  BreakerOpenError,
  circuitBreaker,
  createDegrader,
  createIdempotency,
  createRateLimiter,
  DEFAULT_CIRCUIT_BREAKER_OPTIONS,
  DEFAULT_FEATURE_OPTIONS,
  DEFAULT_IDEMPOTENCY_OPTIONS,
  DEFAULT_OVERLOAD_OPTIONS,
  DEFAULT_RATE_LIMITER_OPTIONS,
  DEFAULT_RETRY_OPTIONS,
  DEFAULT_TIMEOUT_OPTIONS,
  InvalidArgumentError,
  LocalRateLimiter,
  retry,
  TimeoutError,
  timeout,
} from '../src/index.js'

/** Enough of an ioredis client to construct a store; these tests never reach Redis. */
const fakeRedis = { evalsha: () => Promise.resolve(), eval: () => Promise.resolve() } as never

function thrown(fn: () => unknown): unknown {
  try {
    fn()
  } catch (error) {
    return error
  }
  throw new Error('did not throw')
}

afterEach(() => {
  vi.useRealTimers()
})

describe('durations', () => {
  it('timeout() takes a string with a unit and gives up after it', async () => {
    vi.useFakeTimers()
    const policy = timeout('2s')
    expect(policy.duration).toBe(2000)
    const late = policy.execute(() => new Promise(() => {})).catch((e: unknown) => e)
    await vi.advanceTimersByTimeAsync(1999)
    expect(policy.stats().timedOut).toBe(0)
    await vi.advanceTimersByTimeAsync(1)
    expect(await late).toBeInstanceOf(TimeoutError)
    expect(((await late) as TimeoutError).timeoutMs).toBe(2000)
  })

  it('a breaker stays open for a resetTimeout written as a string', async () => {
    vi.useFakeTimers()
    const b = circuitBreaker({ volumeThreshold: 1, resetTimeout: '1m' })
    await expect(b.execute(() => Promise.reject(new Error('down')))).rejects.toThrow('down')
    expect(b.state).toBe('open')
    vi.advanceTimersByTime(59_999)
    await expect(b.execute(() => 1)).rejects.toBeInstanceOf(BreakerOpenError)
    vi.advanceTimersByTime(1)
    expect(b.state).toBe('halfOpen')
    await b.close()
  })

  it('retry waits the backoff written as a string', async () => {
    vi.useFakeTimers()
    const policy = retry({ initialDelay: '1s', random: () => 1, maxAttempts: 2 })
    let attempts = 0
    const done = policy.execute(() => {
      attempts++
      if (attempts === 1) throw Object.assign(new Error('flaky'), { retryable: true })
      return 'ok'
    })
    await vi.advanceTimersByTimeAsync(999)
    expect(attempts).toBe(1)
    await vi.advanceTimersByTimeAsync(1)
    await expect(done).resolves.toBe('ok')
    expect(attempts).toBe(2)
  })

  it('a rate limiter counts its limit over an interval written as a string', async () => {
    let now = 0
    const clocked = new LocalRateLimiter({ limit: 1, interval: '1m' }, () => now)
    expect(clocked.takeSync('k').allowed).toBe(true)
    expect(clocked.takeSync('k')).toMatchObject({ allowed: false, retryAfterMs: 60_000 })
    now = 60_000
    expect(clocked.takeSync('k').allowed).toBe(true)
    await clocked.close()
  })

  it('accepts strings for every duration option', async () => {
    const store = createIdempotency({
      redis: fakeRedis,
      lease: '30s',
      retention: '1d',
      wait: '2s',
      commandTimeout: '500ms',
    })
    await store.close()
    const d = createDegrader({
      features: { a: { priority: 1 } },
      overload: { interval: '250ms', maxEventLoopDelay: '150ms' },
    })
    await d.close()
    const b = circuitBreaker({ window: { type: 'time', duration: '30s' }, timeout: '2s' })
    await b.close()
    retry({ maxDelay: '10s', maxElapsed: '1m' })
  })

  it.each([
    ['retry initialDelay', () => retry({ initialDelay: '30' as never }), 'initialDelay'],
    ['retry maxDelay', () => retry({ maxDelay: 'soon' as never }), 'maxDelay'],
    ['retry maxElapsed', () => retry({ maxElapsed: -1 }), 'maxElapsed'],
    [
      'breaker resetTimeout',
      () => circuitBreaker({ resetTimeout: 'ten seconds' as never }),
      'resetTimeout',
    ],
    ['breaker timeout', () => circuitBreaker({ timeout: '0ms' }), 'timeout'],
    [
      'breaker window.duration',
      () => circuitBreaker({ window: { type: 'time', duration: '10' as never } }),
      'window.duration',
    ],
    ['timeout duration', () => timeout('2' as never), 'duration'],
    [
      'rate limiter interval',
      () => createRateLimiter({ limit: 1, interval: '1 fortnight' as never }),
      'interval',
    ],
    [
      'degrader overload.interval',
      () => createDegrader({ features: { a: { priority: 1 } }, overload: { interval: '0s' } }),
      'overload.interval',
    ],
    [
      'degrader overload.maxEventLoopDelay',
      () =>
        createDegrader({
          features: { a: { priority: 1 } },
          overload: { maxEventLoopDelay: 'slow' as never },
        }),
      'overload.maxEventLoopDelay',
    ],
    [
      'idempotency lease',
      () => createIdempotency({ redis: fakeRedis, lease: '1h?' as never }),
      'lease',
    ],
    [
      'idempotency retention',
      () => createIdempotency({ redis: fakeRedis, retention: Number.NaN }),
      'retention',
    ],
    ['idempotency wait', () => createIdempotency({ redis: fakeRedis, wait: '5' as never }), 'wait'],
    [
      'idempotency commandTimeout',
      () => createIdempotency({ redis: fakeRedis, commandTimeout: '0ms' }),
      'commandTimeout',
    ],
  ])('%s: a bad duration throws InvalidArgumentError naming the option', (_label, make, name) => {
    const error = thrown(make)
    expect(error).toBeInstanceOf(InvalidArgumentError)
    expect((error as Error).message).toMatch(
      new RegExp(
        `^invalid option "${name.replace('.', '\\.')}": expected a (positive|non-negative) duration`,
      ),
    )
  })
})

describe('undefined keeps the default', () => {
  it('timeout()', () => {
    expect(timeout({ duration: undefined }).duration).toBe(DEFAULT_TIMEOUT_OPTIONS.duration)
    expect(timeout().duration).toBe(10_000)
  })

  it('retry()', async () => {
    const policy = retry({ maxAttempts: undefined, initialDelay: undefined, random: undefined })
    let attempts = 0
    vi.useFakeTimers()
    const done = policy
      .execute(() => {
        attempts++
        throw Object.assign(new Error('flaky'), { retryable: true })
      })
      .catch(() => {})
    await vi.runAllTimersAsync()
    await done
    expect(attempts).toBe(DEFAULT_RETRY_OPTIONS.maxAttempts)
  })

  it('circuitBreaker(), nested window fields included', async () => {
    const b = circuitBreaker({
      resetTimeout: undefined,
      volumeThreshold: undefined,
      window: { type: 'time', duration: 5000, buckets: undefined },
    })
    expect(b.stats().state).toBe('closed')
    await b.close()
    expect(DEFAULT_CIRCUIT_BREAKER_OPTIONS.volumeThreshold).toBe(10)
  })

  it('createRateLimiter(), createIdempotency() and createDegrader()', async () => {
    const limiter = createRateLimiter({ limit: 2, interval: undefined, maxKeys: undefined })
    expect((await limiter.take('k')).allowed).toBe(true)
    await limiter.close()
    const store = createIdempotency({ redis: fakeRedis, lease: undefined, prefix: undefined })
    expect(store.redisKey('k')).toBe(`${DEFAULT_IDEMPOTENCY_OPTIONS.prefix}{k}`)
    await store.close()
    const d = createDegrader({
      features: { a: { priority: 1, minLevel: undefined, breakerLevel: undefined } },
      overload: { interval: undefined },
    })
    expect(d.level('a')).toBe('full')
    await d.close()
  })

  it('every DEFAULT_* is frozen', () => {
    for (const defaults of [
      DEFAULT_CIRCUIT_BREAKER_OPTIONS,
      DEFAULT_FEATURE_OPTIONS,
      DEFAULT_IDEMPOTENCY_OPTIONS,
      DEFAULT_OVERLOAD_OPTIONS,
      DEFAULT_RATE_LIMITER_OPTIONS,
      DEFAULT_RETRY_OPTIONS,
      DEFAULT_TIMEOUT_OPTIONS,
    ]) {
      expect(Object.isFrozen(defaults)).toBe(true)
    }
  })
})
