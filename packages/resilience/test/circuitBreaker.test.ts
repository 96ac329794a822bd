import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  BreakerOpenError,
  type CircuitBreaker,
  circuitBreaker,
  InvalidArgumentError,
  TimeoutError,
} from '../src/index.js'

const breakers: CircuitBreaker<never[], unknown>[] = []
function track<T extends CircuitBreaker<any, any>>(b: T): T {
  breakers.push(b as unknown as CircuitBreaker<never[], unknown>)
  return b
}

afterEach(async () => {
  vi.useRealTimers()
  await Promise.all(breakers.splice(0).map((b) => b.close()))
})

const boom = () => Promise.reject(new Error('down'))
const ok = () => Promise.resolve('ok')

describe('circuitBreaker', () => {
  describe('closed', () => {
    it('passes calls and their arguments through and returns the result', async () => {
      const b = track(circuitBreaker(async (a: number, s: string) => `${s}${a * 2}`))
      await expect(b.fire(21, 'x')).resolves.toBe('x42')
      expect(b.stats()).toMatchObject({ state: 'closed', calls: 1, succeeded: 1, failed: 0 })
    })

    it('treats synchronous results, including undefined, as successes', async () => {
      const b = track(circuitBreaker((): undefined => undefined))
      await expect(b.fire()).resolves.toBeUndefined()
      expect(b.stats().succeeded).toBe(1)
    })

    it('does not open below the volume threshold, however many of them fail', async () => {
      const b = track(circuitBreaker(boom, { volumeThreshold: 5 }))
      for (let i = 0; i < 4; i++) await expect(b.fire()).rejects.toThrow('down')
      expect(b.state).toBe('closed')
      await expect(b.fire()).rejects.toThrow('down')
      expect(b.state).toBe('open')
    })
  })

  describe('time window', () => {
    it('opens when more than the threshold of the calls in the window failed', async () => {
      const b = track(
        circuitBreaker((fail: boolean) => (fail ? boom() : ok()), {
          volumeThreshold: 4,
          errorThresholdPercentage: 50,
        }),
      )
      await b.fire(false)
      await b.fire(false)
      await expect(b.fire(true)).rejects.toThrow()
      await expect(b.fire(true)).rejects.toThrow()
      expect(b.state).toBe('closed') // 2 of 4 = 50%: not more than 50
      await expect(b.fire(true)).rejects.toThrow()
      expect(b.state).toBe('open') // 3 of 5
    })

    it('forgets failures older than the window', async () => {
      vi.useFakeTimers({ toFake: ['Date', 'setTimeout', 'clearTimeout'] })
      const b = track(
        circuitBreaker(boom, {
          volumeThreshold: 3,
          window: { type: 'time', duration: 1000, buckets: 10 },
        }),
      )
      await expect(b.fire()).rejects.toThrow()
      await expect(b.fire()).rejects.toThrow()
      vi.advanceTimersByTime(1100)
      expect(b.stats().window).toEqual({ calls: 0, failed: 0 })
      await expect(b.fire()).rejects.toThrow()
      expect(b.state).toBe('closed')
    })
  })

  describe('count window', () => {
    it('trips on the last N calls only', async () => {
      const b = track(
        circuitBreaker((fail: boolean) => (fail ? boom() : ok()), {
          window: { type: 'count', size: 4 },
          volumeThreshold: 4,
          errorThresholdPercentage: 50,
        }),
      )
      // old failures are pushed out by successes
      await expect(b.fire(true)).rejects.toThrow()
      await expect(b.fire(true)).rejects.toThrow()
      for (let i = 0; i < 4; i++) await b.fire(false)
      expect(b.stats().window).toEqual({ calls: 4, failed: 0 })
      await expect(b.fire(true)).rejects.toThrow()
      await expect(b.fire(true)).rejects.toThrow()
      expect(b.state).toBe('closed')
      await expect(b.fire(true)).rejects.toThrow()
      expect(b.state).toBe('open')
      expect(b.stats().window).toEqual({ calls: 4, failed: 3 })
    })
  })

  describe('open', () => {
    it('refuses calls with a typed error without running the function', async () => {
      const fn = vi.fn(boom)
      const b = track(circuitBreaker(fn, { volumeThreshold: 1, name: 'psp' }))
      await expect(b.fire()).rejects.toThrow('down')
      const error = await b.fire().catch((e: unknown) => e)
      expect(error).toBeInstanceOf(BreakerOpenError)
      expect((error as BreakerOpenError).breaker).toBe('psp')
      expect((error as BreakerOpenError).code).toBe('E_RESILIENCE_BREAKER_OPEN')
      expect(fn).toHaveBeenCalledTimes(1)
      expect(b.stats()).toMatchObject({ rejected: 1, opened: 1 })
    })

    it('answers failures and refusals with the fallback, with the arguments', async () => {
      const b = track(
        circuitBreaker((id: string) => (id === 'x' ? boom() : ok()), {
          volumeThreshold: 1,
          fallback: (error, id) =>
            `fallback:${id}:${error instanceof BreakerOpenError ? 'open' : 'failed'}`,
        }),
      )
      await expect(b.fire('x')).resolves.toBe('fallback:x:failed')
      await expect(b.fire('y')).resolves.toBe('fallback:y:open')
      expect(b.stats().fellBack).toBe(2)
    })
  })

  describe('half-open', () => {
    it('lets the configured number of probes through and closes when all succeed', async () => {
      vi.useFakeTimers({ toFake: ['Date', 'setTimeout', 'clearTimeout'] })
      let healthy = false
      const calls: string[] = []
      const b = track(
        circuitBreaker(
          (tag: string) => {
            calls.push(tag)
            return healthy ? ok() : boom()
          },
          { volumeThreshold: 1, resetTimeout: 1000, halfOpenProbes: 2 },
        ),
      )
      const events: string[] = []
      b.on('opened', () => events.push('open'))
      b.on('half-opened', () => events.push('halfOpen'))
      b.on('closed', () => events.push('close'))
      await expect(b.fire('a')).rejects.toThrow()
      vi.advanceTimersByTime(1000)
      expect(b.state).toBe('halfOpen')
      healthy = true
      let release!: () => void
      const gate = new Promise<void>((r) => {
        release = r
      })
      const slow = circuitBreakerProbe(b, gate)
      const p1 = slow('p1')
      const p2 = slow('p2')
      // a third concurrent call is refused while two probes are out
      await expect(b.fire('p3')).rejects.toBeInstanceOf(BreakerOpenError)
      release()
      await Promise.all([p1, p2])
      expect(b.state).toBe('closed')
      expect(events).toEqual(['open', 'halfOpen', 'close'])
      expect(calls).toEqual(['a', 'p1', 'p2'])
    })

    it('opens again on a failed probe', async () => {
      vi.useFakeTimers({ toFake: ['Date', 'setTimeout', 'clearTimeout'] })
      const b = track(circuitBreaker(boom, { volumeThreshold: 1, resetTimeout: 500 }))
      await expect(b.fire()).rejects.toThrow()
      vi.advanceTimersByTime(500)
      expect(b.state).toBe('halfOpen')
      await expect(b.fire()).rejects.toThrow('down')
      expect(b.state).toBe('open')
      expect(b.stats().opened).toBe(2)
    })
  })

  describe('errorFilter', () => {
    it('does not count excused errors, rethrows them and skips the fallback', async () => {
      const notFound = Object.assign(new Error('not found'), { status: 404 })
      const fallback = vi.fn(() => 'fb')
      const b = track(
        circuitBreaker(() => Promise.reject(notFound), {
          volumeThreshold: 1,
          errorFilter: (e) => (e as { status?: number }).status === 404,
          fallback,
        }),
      )
      for (let i = 0; i < 5; i++) await expect(b.fire()).rejects.toBe(notFound)
      expect(b.state).toBe('closed')
      expect(fallback).not.toHaveBeenCalled()
      expect(b.stats()).toMatchObject({ failed: 0, succeeded: 5 })
    })
  })

  describe('timeout', () => {
    it('turns a slow call into a TimeoutError that counts as a failure', async () => {
      const b = track(
        circuitBreaker(() => new Promise((r) => setTimeout(r, 200)), {
          timeout: 20,
          volumeThreshold: 1,
        }),
      )
      const error = await b.fire().catch((e: unknown) => e)
      expect(error).toBeInstanceOf(TimeoutError)
      expect(b.stats()).toMatchObject({ timedOut: 1, failed: 1, state: 'open' })
    })
  })

  describe('as a policy', () => {
    it('runs any work through one shared state', async () => {
      const b = track(circuitBreaker({ volumeThreshold: 1, name: 'db' }))
      const healthy = track(circuitBreaker({ name: 'db2' }))
      await expect(healthy.execute(() => 1)).resolves.toBe(1)
      await expect(b.execute(() => Promise.reject(new Error('x')))).rejects.toThrow('x')
      await expect(b.execute(() => 2)).rejects.toBeInstanceOf(BreakerOpenError)
    })

    it('refuses fire() when created without a function', async () => {
      const b = track(circuitBreaker())
      await expect((b as unknown as { fire(): Promise<unknown> }).fire()).rejects.toMatchObject({
        code: 'E_RESILIENCE_NO_FUNCTION',
      })
    })
  })

  describe('events', () => {
    it('reports each counted failure, success and refusal, with typed errors', async () => {
      const b = track(
        circuitBreaker(
          (mode: string) =>
            mode === 'slow'
              ? new Promise((r) => setTimeout(r, 100))
              : mode === 'bad'
                ? boom()
                : ok(),
          {
            timeout: 20,
            volumeThreshold: 3,
            errorThresholdPercentage: 50,
          },
        ),
      )
      const seen: string[] = []
      b.on('failed', (e) => seen.push(`failure:${(e.error as Error).name}`))
      b.on('succeeded', (e) => seen.push(`success:${typeof e.latencyMs}`))
      b.on('timed-out', (e) => seen.push(`timeout:${e.error.timeoutMs}`))
      b.on('rejected', (e) => seen.push(`reject:${e.error.code}`))
      await b.fire('ok')
      await b.fire('bad').catch(() => {})
      await b.fire('slow').catch(() => {})
      await b.fire('ok').catch(() => {})
      expect(seen).toEqual([
        'success:number',
        'failure:Error',
        'timeout:20',
        'failure:TimeoutError',
        'reject:E_RESILIENCE_BREAKER_OPEN',
      ])
    })
  })

  describe('stats and control', () => {
    it('reports latency percentiles only when asked to keep them', async () => {
      const off = track(circuitBreaker(ok))
      await off.fire()
      expect(off.stats().latency).toBeUndefined()
      const on = track(circuitBreaker(ok, { rollingPercentiles: true }))
      await on.fire()
      expect(on.stats().latency).toMatchObject({ p50: expect.any(Number), p99: expect.any(Number) })
    })

    it('can be tripped and reset by hand', async () => {
      const b = track(circuitBreaker(ok))
      b.trip()
      await expect(b.fire()).rejects.toBeInstanceOf(BreakerOpenError)
      b.reset()
      await expect(b.fire()).resolves.toBe('ok')
    })

    it('holds no timer while closed and refuses calls after close()', async () => {
      const setIntervalSpy = vi.spyOn(globalThis, 'setInterval')
      const setTimeoutSpy = vi.spyOn(globalThis, 'setTimeout')
      let many: CircuitBreaker<[], string>[]
      try {
        many = Array.from({ length: 200 }, (_, i) =>
          track(circuitBreaker(ok, { name: `host-${i}` })),
        )
        await Promise.all(many.map((b) => b.fire()))
        await Promise.all(many.map((b) => b.execute(() => 1)))
        expect(setIntervalSpy).not.toHaveBeenCalled()
        expect(setTimeoutSpy).not.toHaveBeenCalled()
      } finally {
        setIntervalSpy.mockRestore()
        setTimeoutSpy.mockRestore()
      }
      const b = many[0]!
      await b.close()
      // a closed breaker refuses for good: not BreakerOpenError, which says a retry can help
      await expect(b.fire()).rejects.toMatchObject({
        code: 'E_RESILIENCE_CLOSED',
        retryable: false,
      })
    })
  })

  describe('options', () => {
    it.each([
      [{ errorThresholdPercentage: 150 }, 'errorThresholdPercentage'],
      [{ volumeThreshold: -1 }, 'volumeThreshold'],
      [{ resetTimeout: 0 }, 'resetTimeout'],
      [{ halfOpenProbes: 0 }, 'halfOpenProbes'],
      [{ timeout: -5 }, 'timeout'],
      [{ window: { type: 'count', size: 0 } }, 'window.size'],
      [{ window: { type: 'time', duration: 1000, buckets: 1.5 } }, 'window.buckets'],
      [{ window: { type: 'sliding' } }, 'window.type'],
      [{ errorFilter: 'yes' }, 'errorFilter'],
      [{ name: '' }, 'name'],
    ])('rejects %j naming %s', (options, name) => {
      expect(() => circuitBreaker(ok, options as never)).toThrow(InvalidArgumentError)
      expect(() => circuitBreaker(ok, options as never)).toThrow(`invalid option "${name}"`)
    })
  })
})

/** Fires through the breaker with a function that waits for `gate`. */
function circuitBreakerProbe(b: CircuitBreaker<[string], string>, gate: Promise<void>) {
  return async (tag: string) => {
    const original = b.fire(tag)
    await gate
    return original
  }
}
