import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  createRateLimiter,
  InvalidArgumentError,
  LocalRateLimiter,
  RateLimitedError,
} from '../src/index.js'

describe('LocalRateLimiter', () => {
  it('allows a burst, then one call per emission interval', () => {
    let now = 1_000_000
    const limiter = new LocalRateLimiter({ limit: 10, interval: 1000, burst: 3 }, () => now)
    expect([1, 2, 3].map(() => limiter.takeSync('u').allowed)).toEqual([true, true, true])
    const refused = limiter.takeSync('u')
    expect(refused).toEqual({ allowed: false, remaining: 0, retryAfterMs: 100 })
    now += 100
    expect(limiter.takeSync('u')).toMatchObject({ allowed: true, remaining: 0 })
    expect(limiter.takeSync('other').allowed).toBe(true)
  })

  it('property: over any span, allowed calls never exceed burst + span / interval', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 50 }), { minLength: 1, maxLength: 300 }),
        fc.integer({ min: 1, max: 5 }),
        (gaps, burst) => {
          let now = 0
          const limiter = new LocalRateLimiter({ limit: 1, interval: 10, burst }, () => now)
          let allowed = 0
          for (const gap of gaps) {
            now += gap
            if (limiter.takeSync('k').allowed) allowed++
          }
          expect(allowed).toBeLessThanOrEqual(burst + Math.floor(now / 10))
        },
      ),
      { seed: 0x10ad, numRuns: 100 },
    )
  })

  it('gives a key its whole budget back on reset(key), and leaves other keys alone', async () => {
    const limiter = createRateLimiter({ limit: 3, interval: 60_000 })
    for (let i = 0; i < 3; i++) await limiter.consume('login:ana')
    await limiter.consume('login:bob')
    expect((await limiter.take('login:ana')).allowed).toBe(false)
    await limiter.reset('login:ana')
    expect(await limiter.take('login:ana')).toMatchObject({ allowed: true, remaining: 2 })
    expect(await limiter.take('login:bob')).toMatchObject({ allowed: true, remaining: 1 })
    await limiter.reset('never-seen') // a no-op
  })

  it.each([0, -1, Number.NaN, Number.POSITIVE_INFINITY, '2' as unknown as number])(
    'refuses a cost of %s with InvalidArgumentError naming it, and counts nothing',
    async (cost) => {
      const limiter = createRateLimiter({ limit: 1, interval: 60_000 })
      expect(() => (limiter as LocalRateLimiter).takeSync('k', cost)).toThrow(InvalidArgumentError)
      const error = await limiter.take('k', cost).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(InvalidArgumentError)
      expect((error as Error).message).toContain('"cost"')
      expect(limiter.stats()).toEqual({ allowed: 0, limited: 0, keys: 0 })
    },
  )

  it('rejects with a typed error carrying the retry time from consume()', async () => {
    const limiter = createRateLimiter({ limit: 1, interval: 60_000 })
    await limiter.consume('ip')
    const error = await limiter.consume('ip').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(RateLimitedError)
    expect((error as RateLimitedError).retryAfterMs).toBeGreaterThan(59_000)
    expect((error as RateLimitedError).retryable).toBe(true)
    expect(limiter.stats()).toEqual({ allowed: 1, limited: 1, keys: 1 })
  })

  it('keeps a busy key blocked while a spray of more than maxKeys other keys goes by', () => {
    let now = 0
    const limiter = new LocalRateLimiter({ limit: 1, interval: 60_000, maxKeys: 100 }, () => now)
    expect(limiter.takeSync('busy').allowed).toBe(true)
    expect(limiter.takeSync('busy').allowed).toBe(false)
    for (let i = 0; i < 1000; i++) {
      now += 1
      limiter.takeSync(`spray-${i}`)
      // the busy key keeps knocking: it is the most recently used, never the one evicted
      if (i % 50 === 0) expect(limiter.takeSync('busy').allowed).toBe(false)
    }
    expect(limiter.takeSync('busy').allowed).toBe(false)
    expect(limiter.stats().keys).toBeLessThanOrEqual(100)
  })

  it('evicts the least recently used key, not the oldest inserted', () => {
    let now = 0
    const limiter = new LocalRateLimiter({ limit: 1, interval: 60_000, maxKeys: 3 }, () => now)
    for (const k of ['a', 'b', 'c']) limiter.takeSync(k)
    now += 1
    limiter.takeSync('a') // refused, but touched: 'b' is now the least recently used
    limiter.takeSync('d') // full: evicts 'b'
    expect(limiter.takeSync('a').allowed).toBe(false)
    expect(limiter.takeSync('c').allowed).toBe(false)
    expect(limiter.takeSync('b').allowed).toBe(true) // forgotten, so a fresh budget
  })

  it('keeps at most maxKeys keys, dropping the least recently used', () => {
    let now = 0
    const limiter = new LocalRateLimiter({ limit: 1, interval: 10, maxKeys: 100 }, () => now)
    for (let i = 0; i < 1000; i++) {
      now += 1
      limiter.takeSync(`k${i}`)
    }
    expect(limiter.stats().keys).toBeLessThanOrEqual(100)
  })

  it('fuzz: decides like a least-recently-used model through any takes, resets and evictions', () => {
    /** The rule in its plainest form: a Map in order of use, re-inserted on every use. */
    class Model {
      readonly tat = new Map<string, number>()
      constructor(
        readonly t: number,
        readonly tau: number,
        readonly maxKeys: number,
      ) {}
      take(key: string, cost: number, now: number): boolean {
        const stored = this.tat.get(key)
        const next = Math.max(stored ?? now, now) + this.t * cost
        if (next - now - this.tau > 0) {
          if (stored !== undefined) {
            this.tat.delete(key)
            this.tat.set(key, stored)
          }
          return false
        }
        if (stored === undefined && this.tat.size >= this.maxKeys) {
          this.tat.delete(this.tat.keys().next().value as string)
        }
        this.tat.delete(key)
        this.tat.set(key, next)
        return true
      }
    }
    const op = fc.oneof(
      fc.record({
        kind: fc.constant('take' as const),
        key: fc.constantFrom('a', 'b', 'c', 'd', 'e'),
        cost: fc.integer({ min: 1, max: 3 }),
        gap: fc.integer({ min: 0, max: 20 }),
      }),
      fc.record({ kind: fc.constant('reset' as const), key: fc.constantFrom('a', 'b', 'c', 'f') }),
    )
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 4 }),
        fc.array(op, { maxLength: 120 }),
        (maxKeys, ops) => {
          let now = 0
          const limiter = new LocalRateLimiter(
            { limit: 1, interval: 100, burst: 2, maxKeys },
            () => now,
          )
          const model = new Model(100, 200, maxKeys)
          for (const o of ops) {
            if (o.kind === 'reset') {
              void limiter.reset(o.key)
              model.tat.delete(o.key)
            } else {
              now += o.gap
              expect(limiter.takeSync(o.key, o.cost).allowed).toBe(model.take(o.key, o.cost, now))
            }
            expect(limiter.stats().keys).toBe(model.tat.size)
          }
        },
      ),
      { seed: 0x10ad, numRuns: 300 },
    )
  })

  it.each([
    [{ limit: 0 }, 'limit'],
    [{ limit: 5, interval: -1 }, 'interval'],
    [{ limit: 5, burst: 0 }, 'burst'],
    [{ limit: 5, redis: {} }, 'redis'],
    [{ limit: 5, prefix: '' }, 'prefix'],
  ])('rejects %j naming %s', (options, name) => {
    expect(() => createRateLimiter(options as never)).toThrow(`invalid option "${name}"`)
  })
})
