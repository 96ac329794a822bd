import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  bulkhead,
  circuitBreaker,
  createDegrader,
  createRateLimiter,
  fallback,
  retry,
} from '../src/index.js'

/** Errors rethrown by listeners (in a microtask), caught here instead of failing the run. */
let surfaced: unknown[] = []
let original: NodeJS.UncaughtExceptionListener[] = []
const collect = (error: unknown) => surfaced.push(error)

beforeEach(() => {
  surfaced = []
  original = process.listeners('uncaughtException')
  process.removeAllListeners('uncaughtException')
  process.on('uncaughtException', collect)
})

afterEach(() => {
  process.off('uncaughtException', collect)
  for (const listener of original) process.on('uncaughtException', listener)
})

const tick = () => new Promise((resolve) => setImmediate(resolve))

describe('events', () => {
  it('a throwing listener does not make execute() reject, and the others still run', async () => {
    const b = circuitBreaker({ name: 'psp' })
    const seen: string[] = []
    b.on('succeeded', () => {
      throw new Error('metrics listener bug')
    })
    b.on('succeeded', ({ name }) => seen.push(name))
    await expect(b.execute(() => 'charged')).resolves.toBe('charged')
    expect(seen).toEqual(['psp'])
    await tick()
    // Not swallowed: it surfaces as an uncaught exception, like any other bug.
    expect(surfaced).toHaveLength(1)
    expect((surfaced[0] as Error).message).toBe('metrics listener bug')
    await b.close()
  })

  it('a throwing listener does not break a retry or a fallback', async () => {
    const policy = retry({ maxAttempts: 2, initialDelay: 0 })
    policy.on('retried', () => {
      throw new Error('bug')
    })
    let attempts = 0
    const value = await policy.execute(() => {
      if (++attempts === 1) throw Object.assign(new Error('flaky'), { retryable: true })
      return 'ok'
    })
    expect(value).toBe('ok')
    const cached = fallback(() => 'cached')
    cached.on('fell-back', () => {
      throw new Error('bug')
    })
    await expect(cached.execute(() => Promise.reject(new Error('down')))).resolves.toBe('cached')
    await tick()
    expect(surfaced).toHaveLength(2)
  })

  it('on() returns a function that removes the listener', async () => {
    const limiter = createRateLimiter({ limit: 1 })
    const keys: string[] = []
    const off = limiter.on('limited', ({ key }) => keys.push(key))
    await limiter.take('a')
    await limiter.take('a')
    off()
    await limiter.take('a')
    expect(keys).toEqual(['a'])
    await limiter.close()
  })

  it('once() calls the listener at most once', async () => {
    const pool = bulkhead({ limit: 1 })
    const refused: string[] = []
    pool.once('rejected', ({ error }) => refused.push(error.code))
    const hold = pool.execute(() => new Promise((resolve) => setTimeout(resolve, 1)))
    await pool.execute(() => 1).catch(() => {})
    await pool.execute(() => 1).catch(() => {})
    await hold
    expect(refused).toEqual(['E_RESILIENCE_BULKHEAD_REJECTED'])
    expect(pool.stats().rejected).toBe(2)
  })

  it('names every breaker transition in the past tense, with one payload object', async () => {
    const b = circuitBreaker({ volumeThreshold: 1, resetTimeout: 1 })
    const seen: unknown[] = []
    b.on('opened', (e) => seen.push(['opened', e]))
    b.on('failed', (e) => seen.push(['failed', (e.error as Error).message]))
    b.on('rejected', (e) => seen.push(['rejected', e.error.code]))
    await b.execute(() => Promise.reject(new Error('down'))).catch(() => {})
    await b.execute(() => 1).catch(() => {})
    expect(seen).toEqual([
      ['failed', 'down'],
      ['opened', { name: b.name, calls: 1, failed: 1 }],
      ['rejected', 'E_RESILIENCE_BREAKER_OPEN'],
    ])
    await b.close()
  })

  it('a degrader follows its breakers through opened, half-opened and closed', async () => {
    const b = circuitBreaker({ volumeThreshold: 1, resetTimeout: 60_000 })
    const d = createDegrader({
      features: { reviews: { priority: 1, breakers: [b] } },
      overload: false,
    })
    const changes: string[] = []
    d.on('level-changed', ({ feature, from, to, reason }) =>
      changes.push(`${feature}:${from}->${to}:${reason}`),
    )
    b.trip()
    b.reset()
    expect(changes).toEqual(['reviews:full->off:breaker', 'reviews:off->full:breaker'])
    await d.close()
    await b.close()
  })
})
