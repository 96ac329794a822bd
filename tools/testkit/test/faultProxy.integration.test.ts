import { Redis } from 'ioredis'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createFaultProxy, disposables, resolveServer } from '../src/index.js'
import { until } from './helpers.js'

const bin = disposables()
afterEach(() => bin.cleanup())

let target: { host: string; port: number; url: string }
beforeAll(async () => {
  target = await resolveServer('redis')
})

async function redisThroughProxy(options: { commandTimeout?: number } = {}) {
  const proxy = bin.use(await createFaultProxy({ host: target.host, port: target.port }))
  const errors: Error[] = []
  const redis = new Redis(proxy.url(target.url), {
    // fail fast instead of queueing or retrying, so the test sees what a user would
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => 50,
    ...options,
  })
  redis.on('error', (error: Error) => errors.push(error))
  bin.use(redis)
  await until(() => redis.status === 'ready', 5000, 'redis ready')
  return { proxy, redis, errors }
}

function waitFor(redis: Redis, event: 'ready' | 'close') {
  return new Promise<void>((resolve) => redis.once(event, () => resolve()))
}

async function timed<T>(work: () => Promise<T>): Promise<[T, number]> {
  const started = performance.now()
  const value = await work()
  return [value, performance.now() - started]
}

describe('FaultProxy with a real Redis client', () => {
  it('adds the latency it is given to every round trip', async () => {
    const { proxy, redis } = await redisThroughProxy()
    const [, base] = await timed(() => redis.ping())
    proxy.setLatency(80)
    const [reply, slow] = await timed(() => redis.ping())
    expect(reply).toBe('PONG')
    // 80 ms on the way there and 80 ms back
    expect(slow).toBeGreaterThanOrEqual(158)
    proxy.setLatency(0)
    const [, fast] = await timed(() => redis.ping())
    expect(fast).toBeLessThan(80 + base)
  })

  it('a cut makes the client see an error, and it reconnects and works again', async () => {
    const { proxy, redis } = await redisThroughProxy()
    await redis.set(`testkit:${proxy.port}:k`, 'v', 'PX', 10_000)
    proxy.setLatency(200)
    const inFlight = redis.get(`testkit:${proxy.port}:k`)
    const closed = waitFor(redis, 'close')
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(proxy.cut()).toBe(1)
    await expect(inFlight).rejects.toThrow(
      /max retries per request|Connection is closed|ECONNRESET/i,
    )
    await closed
    proxy.setLatency(0)
    proxy.restore()
    await until(() => redis.status === 'ready', 5000, 'reconnect')
    expect(await redis.get(`testkit:${proxy.port}:k`)).toBe('v')
    expect(proxy.stats()).toMatchObject({ cut: 1, accepted: 2 })
    await redis.del(`testkit:${proxy.port}:k`)
  })

  it('refuse keeps the client out until restore', async () => {
    const { proxy, redis } = await redisThroughProxy()
    proxy.refuse()
    proxy.cut()
    await until(() => proxy.stats().refused >= 2, 5000, 'two refused reconnects')
    await expect(redis.ping()).rejects.toThrow()
    proxy.restore()
    await waitFor(redis, 'ready')
    expect(await redis.ping()).toBe('PONG')
  })

  it('a black hole makes commands time out; restore lets the client reconnect', async () => {
    const { proxy, redis } = await redisThroughProxy({ commandTimeout: 300 })
    proxy.blackhole()
    const started = performance.now()
    await expect(redis.ping()).rejects.toThrow(/timed out/i)
    expect(performance.now() - started).toBeGreaterThanOrEqual(290)
    const ready = waitFor(redis, 'ready')
    proxy.restore()
    await ready
    expect(await redis.ping()).toBe('PONG')
    expect(proxy.stats().reset).toBe(1)
  })
})
