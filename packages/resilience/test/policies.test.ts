import fc from 'fast-check'
import { afterEach, describe, expect, expectTypeOf, it, vi } from 'vitest'
import {
  AbortedError,
  BreakerOpenError,
  BulkheadRejectedError,
  bulkhead,
  circuitBreaker,
  fallback,
  InvalidArgumentError,
  isRetryableError,
  type Policy,
  pipeline,
  RateLimitedError,
  retry,
  TimeoutError,
  timeout,
} from '../src/index.js'

afterEach(() => {
  vi.useRealTimers()
})

const retryable = (message = 'flaky') => Object.assign(new Error(message), { retryable: true })
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe('retry', () => {
  it('retries retryable errors until the work succeeds, numbering the attempts', async () => {
    const attempts: number[] = []
    const policy = retry({ maxAttempts: 4, initialDelay: 1 })
    const value = await policy.execute(({ attempt }) => {
      attempts.push(attempt)
      if (attempt < 3) throw retryable()
      return 'done'
    })
    expect(value).toBe('done')
    expect(attempts).toEqual([1, 2, 3])
    expect(policy.stats()).toEqual({ calls: 1, retries: 2, succeeded: 1, failed: 0 })
  })

  it('does not retry errors that do not say they are retryable', async () => {
    const fn = vi.fn(() => Promise.reject(new Error('bad request')))
    await expect(retry({ initialDelay: 1 }).execute(fn)).rejects.toThrow('bad request')
    expect(fn).toHaveBeenCalledTimes(1)
  })

  it('uses a predicate when given one', async () => {
    const fn = vi.fn(() => Promise.reject(Object.assign(new Error('x'), { code: 'ECONNRESET' })))
    const policy = retry({
      maxAttempts: 3,
      initialDelay: 1,
      retryOn: (e) => (e as { code?: string }).code === 'ECONNRESET',
    })
    await expect(policy.execute(fn)).rejects.toThrow('x')
    expect(fn).toHaveBeenCalledTimes(3)
  })

  it('gives up after maxAttempts with the last error and says why', async () => {
    const giveUps: string[] = []
    const policy = retry({ maxAttempts: 2, initialDelay: 1 })
    policy.on('gave-up', (e) => giveUps.push(e.reason))
    let n = 0
    await expect(policy.execute(() => Promise.reject(retryable(`e${++n}`)))).rejects.toThrow('e2')
    expect(giveUps).toEqual(['max-attempts'])
  })

  it('waits with full jitter: a random share of an exponentially growing bound, capped', async () => {
    vi.useFakeTimers()
    const delays: number[] = []
    const policy = retry({
      maxAttempts: 6,
      initialDelay: 100,
      factor: 2,
      maxDelay: 1000,
      random: () => 0.5,
      maxElapsed: Infinity,
    })
    policy.on('retried', (e) => delays.push(e.delayMs))
    const run = policy.execute(() => Promise.reject(retryable()))
    const caught = run.catch((e: unknown) => e)
    await vi.runAllTimersAsync()
    expect(await caught).toBeInstanceOf(Error)
    expect(delays).toEqual([50, 100, 200, 400, 500])
  })

  it('property: every delay lies within [0, min(maxDelay, initial * factor^(n-1))]', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.double({ min: 0, max: 0.999_999, noNaN: true }),
        fc.integer({ min: 1, max: 5 }),
        async (r, attempts) => {
          const delays: number[] = []
          const policy = retry({
            maxAttempts: attempts + 1,
            initialDelay: 0.01,
            factor: 3,
            maxDelay: 0.05,
            random: () => r,
            maxElapsed: Infinity,
          })
          policy.on('retried', (e) => delays.push(e.delayMs))
          await policy.execute(({ attempt }) =>
            attempt <= attempts ? Promise.reject(retryable()) : 1,
          )
          delays.forEach((d, i) => {
            expect(d).toBeGreaterThanOrEqual(0)
            expect(d).toBeLessThanOrEqual(Math.min(0.05, 0.01 * 3 ** i))
          })
        },
      ),
      { seed: 16, numRuns: 30 },
    )
  })

  it('gives up when the next retry would pass maxElapsed', async () => {
    const giveUps: string[] = []
    const policy = retry({ maxAttempts: 10, initialDelay: 1000, random: () => 1, maxElapsed: 500 })
    policy.on('gave-up', (e) => giveUps.push(e.reason))
    await expect(policy.execute(() => Promise.reject(retryable()))).rejects.toThrow('flaky')
    expect(giveUps).toEqual(['max-elapsed'])
  })

  it('waits at least retryAfterMs when the error carries it', async () => {
    const delays: number[] = []
    const policy = retry({ maxAttempts: 2, initialDelay: 1, random: () => 0 })
    policy.on('retried', (e) => delays.push(e.delayMs))
    let first = true
    await policy.execute(() => {
      if (first) {
        first = false
        throw new RateLimitedError('k', 30)
      }
      return 1
    })
    expect(delays).toEqual([30])
  })

  it('stops waiting and rejects with AbortedError when the signal aborts', async () => {
    const controller = new AbortController()
    const fn = vi.fn(() => Promise.reject(retryable()))
    const run = retry({ maxAttempts: 5, initialDelay: 10_000, random: () => 1 }).execute(
      fn,
      controller.signal,
    )
    await sleep(5)
    controller.abort(new Error('client left'))
    const error = await run.catch((e: unknown) => e)
    expect(error).toBeInstanceOf(AbortedError)
    expect(fn).toHaveBeenCalledTimes(1)
  })

  it('isRetryableError reads the retryable flag only', () => {
    expect(isRetryableError(retryable())).toBe(true)
    expect(isRetryableError(new TimeoutError(5))).toBe(true)
    expect(isRetryableError(new BreakerOpenError('x'))).toBe(true)
    expect(isRetryableError(new Error('x'))).toBe(false)
    expect(isRetryableError(null)).toBe(false)
  })

  it.each([
    [{ maxAttempts: 0 }, 'maxAttempts'],
    [{ initialDelay: -1 }, 'initialDelay'],
    [{ factor: 0.5 }, 'factor'],
    [{ maxElapsed: 0 }, 'maxElapsed'],
    [{ retryOn: 1 }, 'retryOn'],
  ])('rejects %j naming %s', (options, name) => {
    expect(() => retry(options as never)).toThrow(`invalid option "${name}"`)
  })
})

describe('timeout', () => {
  it('rejects with a TimeoutError and aborts the signal the work was given', async () => {
    let seen: AbortSignal | undefined
    const policy = timeout(20)
    const error = await policy
      .execute(({ signal }) => {
        seen = signal
        return sleep(500)
      })
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(TimeoutError)
    expect((error as TimeoutError).timeoutMs).toBe(20)
    expect(seen?.aborted).toBe(true)
    expect(seen?.reason).toBe(error)
    expect(policy.stats()).toEqual({ calls: 1, timedOut: 1, inFlight: 0 })
  })

  it('lets fast work through with its value and its errors', async () => {
    const policy = timeout({ duration: 1000 })
    await expect(policy.execute(() => 'fast')).resolves.toBe('fast')
    await expect(policy.execute(() => Promise.reject(new Error('own')))).rejects.toThrow('own')
    await expect(
      policy.execute(() => {
        throw new Error('sync')
      }),
    ).rejects.toThrow('sync')
    expect(policy.stats()).toMatchObject({ timedOut: 0, inFlight: 0 })
  })

  it('times out each of many concurrent calls on time with one timer', async () => {
    vi.useFakeTimers()
    const policy = timeout(100)
    const results: string[] = []
    const calls = [0, 30, 60].map(async (startAt) => {
      await vi.advanceTimersByTimeAsync(0)
      return startAt
    })
    await Promise.all(calls)
    const a = policy.execute(() => new Promise(() => {})).catch(() => results.push('a'))
    await vi.advanceTimersByTimeAsync(50)
    const b = policy.execute(() => new Promise(() => {})).catch(() => results.push('b'))
    await vi.advanceTimersByTimeAsync(51)
    expect(results).toEqual(['a'])
    await vi.advanceTimersByTimeAsync(50)
    await Promise.all([a, b])
    expect(results).toEqual(['a', 'b'])
    expect(vi.getTimerCount()).toBe(0)
  })

  it('passes the caller signal through to the work', async () => {
    const controller = new AbortController()
    const run = timeout(5000).execute(
      ({ signal }) =>
        new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason))),
      controller.signal,
    )
    controller.abort(new Error('cancelled'))
    await expect(run).rejects.toThrow('cancelled')
  })

  it('rejects a non-positive duration naming it', () => {
    expect(() => timeout(0)).toThrow('invalid option "duration"')
    expect(() => timeout({ duration: Number.NaN })).toThrow(InvalidArgumentError)
  })
})

describe('bulkhead', () => {
  it('runs up to the limit, queues up to the queue size and refuses the rest', async () => {
    const policy = bulkhead({ limit: 2, queue: 1 })
    const gates: (() => void)[] = []
    const started: number[] = []
    const work = (i: number) => () =>
      new Promise<number>((resolve) => {
        started.push(i)
        gates.push(() => resolve(i))
      })
    const p = [0, 1, 2].map((i) => policy.execute(work(i)))
    const refused = await policy.execute(work(3)).catch((e: unknown) => e)
    expect(refused).toBeInstanceOf(BulkheadRejectedError)
    expect(refused).toMatchObject({ active: 2, queued: 1, code: 'E_RESILIENCE_BULKHEAD_REJECTED' })
    expect(started).toEqual([0, 1])
    gates[0]!()
    await p[0]
    await sleep(0)
    expect(started).toEqual([0, 1, 2])
    gates[1]!()
    gates[2]!()
    await expect(Promise.all(p)).resolves.toEqual([0, 1, 2])
    expect(policy.stats()).toEqual({ active: 0, queued: 0, executed: 3, rejected: 1, aborted: 0 })
  })

  it('frees the slot when the work throws', async () => {
    const policy = bulkhead({ limit: 1 })
    await expect(
      policy.execute(() => {
        throw new Error('sync')
      }),
    ).rejects.toThrow('sync')
    await expect(policy.execute(() => Promise.reject(new Error('async')))).rejects.toThrow('async')
    await expect(policy.execute(() => 'ok')).resolves.toBe('ok')
  })

  it('drops a queued call whose signal aborts, without running it', async () => {
    const policy = bulkhead({ limit: 1, queue: 5 })
    let release!: () => void
    const first = policy.execute(() => new Promise<void>((r) => (release = r)))
    const controller = new AbortController()
    const queuedFn = vi.fn(() => 'never')
    const queued = policy.execute(queuedFn, controller.signal)
    controller.abort()
    await expect(queued).rejects.toBeInstanceOf(AbortedError)
    release()
    await first
    expect(queuedFn).not.toHaveBeenCalled()
    expect(policy.stats()).toMatchObject({ queued: 0, aborted: 1, active: 0 })
  })

  it.each([
    [{ limit: 0 }, 'limit'],
    [{ limit: 1, queue: -1 }, 'queue'],
    [{ limit: 2.5 }, 'limit'],
  ])('rejects %j naming %s', (options, name) => {
    expect(() => bulkhead(options)).toThrow(`invalid option "${name}"`)
  })
})

describe('fallback', () => {
  it('answers matching failures and passes the rest through', async () => {
    const policy = fallback(() => 'cached', { when: (e) => (e as Error).message === 'down' })
    await expect(policy.execute(() => Promise.reject(new Error('down')))).resolves.toBe('cached')
    await expect(policy.execute(() => Promise.reject(new Error('bug')))).rejects.toThrow('bug')
    await expect(policy.execute(() => 'live')).resolves.toBe('live')
    expect(policy.stats()).toEqual({ calls: 3, fellBack: 1 })
  })
})

describe('pipeline', () => {
  it('composes in the order given: each retry goes through the breaker and gets its own timeout', async () => {
    const breaker = circuitBreaker({ volumeThreshold: 100 })
    const perTry = timeout(30)
    const policy = pipeline(retry({ maxAttempts: 3, initialDelay: 1 }), breaker, perTry)
    const value = await policy.execute(({ attempt, signal }) =>
      attempt < 3 ? sleep(200) : signal.aborted ? 'aborted' : `ok on ${attempt}`,
    )
    expect(value).toBe('ok on 3')
    expect(perTry.stats().timedOut).toBe(2)
    expect(breaker.stats()).toMatchObject({ failed: 2, succeeded: 1 })
    await breaker.close()
  })

  it('reports the stats of each policy in order', async () => {
    const custom: Policy = {
      execute: (fn) => Promise.resolve(fn({ signal: new AbortController().signal, attempt: 1 })),
    }
    const policy = pipeline(retry(), timeout(100), custom)
    await policy.execute(() => 1)
    const [r, t, c] = policy.stats()
    expect(r).toMatchObject({ calls: 1, succeeded: 1 })
    expect(t).toMatchObject({ calls: 1, timedOut: 0 })
    expect(c).toBeUndefined()
  })

  it('stops retrying once the breaker opens', async () => {
    const breaker = circuitBreaker({ volumeThreshold: 1 })
    const fn = vi.fn(() => Promise.reject(retryable()))
    const policy = pipeline(retry({ maxAttempts: 5, initialDelay: 1 }), breaker)
    await expect(policy.execute(fn)).rejects.toBeInstanceOf(BreakerOpenError)
    expect(fn).toHaveBeenCalledTimes(1)
    await breaker.close()
  })

  it('has one typed result: the work’s type plus what fallbacks may return', async () => {
    const plain = pipeline(retry(), timeout(100), bulkhead({ limit: 1 }))
    const r1 = await plain.execute(() => 42)
    expectTypeOf(r1).toEqualTypeOf<number>()
    const withFallback = pipeline(
      fallback(() => null),
      retry(),
      timeout(100),
    )
    const r2 = await withFallback.execute(() => 'x')
    expectTypeOf(r2).toEqualTypeOf<string | null>()
    expect([r1, r2]).toEqual([42, 'x'])
  })

  it('accepts a policy from elsewhere that only has execute()', async () => {
    const seen: number[] = []
    const custom: Policy = {
      execute: (fn, signal) =>
        Promise.resolve(fn({ signal: signal ?? new AbortController().signal, attempt: 99 })),
    }
    const policy = pipeline(retry({ maxAttempts: 2, initialDelay: 1 }), custom)
    await policy.execute(({ attempt }) => {
      seen.push(attempt)
      if (attempt === 1) throw retryable()
      return 1
    })
    expect(seen).toEqual([1, 2])
  })

  it('refuses an empty list or a non-policy naming it', () => {
    // arguments, not options: the same message shape, with "argument"
    expect(() => pipeline()).toThrow('invalid argument "policies"')
    expect(() => pipeline(retry(), {} as Policy)).toThrow('invalid argument "policies[1]"')
    expect(() => fallback('cached' as never)).toThrow('invalid argument "handler"')
  })
})
