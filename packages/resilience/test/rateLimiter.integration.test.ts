import { createFaultProxy, redisUrl } from '@ballast/testkit'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import {
  createRateLimiter,
  RateLimitedError,
  RateLimiterUnavailableError,
  RedisRateLimiter,
} from '../src/index.js'
import { clusterFixture, redisFixture, uniquePrefix } from './helpers.js'

const prefix = uniquePrefix('rl')
let fixture: Awaited<ReturnType<typeof redisFixture>>
let other: Redis

beforeAll(async () => {
  fixture = await redisFixture(prefix)
  other = new Redis(await redisUrl())
})
afterAll(async () => {
  await other.quit()
  await fixture.cleanup()
})

describe('RedisRateLimiter', () => {
  it('counts every instance against one budget per key', async () => {
    const a = createRateLimiter({ redis: fixture.redis, prefix, limit: 10, interval: 60_000 })
    const b = createRateLimiter({ redis: other, prefix, limit: 10, interval: 60_000 })
    expect(a).toBeInstanceOf(RedisRateLimiter)
    const decisions = await Promise.all(
      Array.from({ length: 30 }, (_, i) => (i % 2 ? a : b).take('user:1')),
    )
    expect(decisions.filter((d) => d.allowed)).toHaveLength(10)
    const refused = decisions.find((d) => !d.allowed)
    expect(refused?.retryAfterMs).toBeGreaterThan(5000)
    expect(refused?.retryAfterMs).toBeLessThanOrEqual(6000)
    // another key has its own budget
    await expect(a.take('user:2')).resolves.toMatchObject({ allowed: true, remaining: 9 })
  })

  it('resets a key for every instance at once', async () => {
    const a = createRateLimiter({
      redis: fixture.redis,
      prefix: `${prefix}r:`,
      limit: 2,
      interval: 60_000,
    })
    const b = createRateLimiter({ redis: other, prefix: `${prefix}r:`, limit: 2, interval: 60_000 })
    await a.consume('login:ana')
    await b.consume('login:ana')
    expect((await b.take('login:ana')).allowed).toBe(false)
    await a.reset('login:ana')
    expect(await b.take('login:ana')).toMatchObject({ allowed: true, remaining: 1 })
  })

  it('decides a batch of concurrent calls in one script call, exactly as one by one', async () => {
    const batched = createRateLimiter({
      redis: fixture.redis,
      prefix: `${prefix}b:`,
      limit: 50,
      interval: 60_000,
    })
    const single = createRateLimiter({
      redis: fixture.redis,
      prefix: `${prefix}s:`,
      limit: 50,
      interval: 60_000,
      batch: false,
    })
    const evalsha = vi.spyOn(fixture.redis, 'evalsha')
    try {
      const a = await Promise.all(Array.from({ length: 80 }, (_, i) => batched.take(`k${i % 2}`)))
      const batchedCalls = evalsha.mock.calls.length
      const b = await Promise.all(Array.from({ length: 80 }, (_, i) => single.take(`k${i % 2}`)))
      expect(a.map((d) => d.allowed)).toEqual(b.map((d) => d.allowed))
      expect(a.filter((d) => d.allowed)).toHaveLength(80)
      expect(batchedCalls).toBe(1)
      expect(evalsha.mock.calls.length - batchedCalls).toBe(80)
      const over = await Promise.all(Array.from({ length: 30 }, () => batched.take('k0')))
      expect(over.filter((d) => d.allowed)).toHaveLength(10)
    } finally {
      evalsha.mockRestore()
    }
  })

  it('refills at the configured rate', async () => {
    const limiter = createRateLimiter({
      redis: fixture.redis,
      prefix,
      // one call per 500 ms: the second take, right after the first, is refused even on a
      // loaded machine (at 50 ms per call it was sometimes allowed)
      limit: 2,
      interval: '1s',
      burst: 1,
    })
    expect((await limiter.take('k')).allowed).toBe(true)
    const refused = await limiter.take('k')
    expect(refused.allowed).toBe(false)
    await new Promise((r) => setTimeout(r, refused.retryAfterMs + 5))
    expect((await limiter.take('k')).allowed).toBe(true)
  })

  it('makes one round trip per decision', async () => {
    const limiter = createRateLimiter({ redis: fixture.redis, prefix, limit: 1000 })
    await limiter.take('warm')
    const evalsha = vi.spyOn(fixture.redis, 'evalsha')
    const evalScript = vi.spyOn(fixture.redis, 'eval')
    try {
      for (let i = 0; i < 20; i++) await limiter.take(`rt:${i}`)
      expect(evalsha).toHaveBeenCalledTimes(20)
      expect(evalScript).not.toHaveBeenCalled()
    } finally {
      evalsha.mockRestore()
      evalScript.mockRestore()
    }
  })

  it('rejects with RateLimitedError carrying the retry time from consume()', async () => {
    const limiter = createRateLimiter({ redis: fixture.redis, prefix, limit: 1, interval: 10_000 })
    await limiter.consume('c')
    const error = await limiter.consume('c').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(RateLimitedError)
    expect((error as RateLimitedError).retryAfterMs).toBeGreaterThan(9000)
    expect(limiter.stats()).toEqual({ allowed: 1, limited: 1, keys: 0 })
  })

  it('loads its script again after SCRIPT FLUSH-like loss (NOSCRIPT)', async () => {
    const limiter = createRateLimiter({ redis: fixture.redis, prefix, limit: 5 })
    const evalsha = vi
      .spyOn(fixture.redis, 'evalsha')
      .mockRejectedValueOnce(new Error('NOSCRIPT No matching script.'))
    try {
      await expect(limiter.take('ns')).resolves.toMatchObject({ allowed: true })
    } finally {
      evalsha.mockRestore()
    }
  })

  it('works on a Redis Cluster', async () => {
    const clusterPrefix = uniquePrefix('rl-cluster')
    const { cluster, cleanup } = await clusterFixture(clusterPrefix)
    try {
      const limiter = createRateLimiter({
        redis: cluster,
        prefix: clusterPrefix,
        limit: 3,
        interval: 60_000,
      })
      for (const key of ['a', 'b', 'c', 'd']) {
        const d = await Promise.all([1, 2, 3, 4].map(() => limiter.take(key)))
        expect(d.map((x) => x.allowed)).toEqual([true, true, true, false])
      }
    } finally {
      await cleanup()
    }
  })
})

describe('RedisRateLimiter when Redis fails', () => {
  const through = async () => {
    const url = new URL(await redisUrl())
    const proxy = await createFaultProxy({ host: url.hostname, port: Number(url.port || 6379) })
    const redis = new Redis(proxy.url(await redisUrl()), {
      maxRetriesPerRequest: 1,
      retryStrategy: () => 50,
    })
    redis.on('error', () => {}) // reconnect noise while the proxy refuses
    return {
      proxy,
      redis,
      async [Symbol.asyncDispose]() {
        proxy.restore()
        redis.disconnect()
        await proxy.close()
      },
    }
  }

  for (const batch of [true, false]) {
    it(`rejects a decision on a silent Redis with its typed, retryable error within commandTimeout (batch: ${batch}), and decides again once Redis answers`, async () => {
      await using link = await through()
      const limiter = createRateLimiter({
        redis: link.redis,
        prefix,
        limit: 5,
        interval: 60_000,
        commandTimeout: 250,
        batch,
      })
      await expect(limiter.take('silent')).resolves.toMatchObject({ allowed: true })
      link.proxy.blackhole()
      const failures = await Promise.all(
        ['silent', 'silent', 'other'].map((key) => limiter.take(key).catch((e: unknown) => e)),
      )
      for (const error of failures) {
        expect(error).toBeInstanceOf(RateLimiterUnavailableError)
        expect(error).toMatchObject({
          code: 'E_RESILIENCE_RATE_LIMITER_UNAVAILABLE',
          retryable: true,
        })
        // the limiter's own bound answered, not ioredis (whose command waits on a silent socket)
        expect((error as Error).message).toContain('did not answer within 250 ms')
      }
      await expect(limiter.consume('silent')).rejects.toBeInstanceOf(RateLimiterUnavailableError)
      await expect(limiter.reset('silent')).rejects.toBeInstanceOf(RateLimiterUnavailableError)
      link.proxy.restore()
      link.proxy.cut() // the connection held by the blackhole is dead: ioredis reconnects
      await vi.waitFor(() => expect(link.redis.status).toBe('ready'), { timeout: 5000 })
      await expect(limiter.take('silent')).resolves.toMatchObject({ allowed: true })
    })
  }

  it('gives a refused connection the same typed error, the client error as its cause', async () => {
    await using link = await through()
    const limiter = createRateLimiter({ redis: link.redis, prefix, limit: 5, commandTimeout: 2000 })
    link.proxy.refuse()
    link.proxy.cut()
    const error = await limiter.take('refused').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(RateLimiterUnavailableError)
    expect((error as Error).cause).toBeInstanceOf(Error)
    expect((error as Error).message).not.toContain('did not answer within')
  })
})
