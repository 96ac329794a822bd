import { createFaultProxy, type FaultProxy, redisUrl } from '@ballast/testkit'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BreakerOpenError, circuitBreaker } from '../src/index.js'
import { uniquePrefix } from './helpers.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
let proxy: FaultProxy
let redis: Redis
const key = `${uniquePrefix('breaker')}probe`

beforeAll(async () => {
  const url = new URL(await redisUrl())
  proxy = await createFaultProxy({ host: url.hostname, port: Number(url.port || 6379) })
  redis = new Redis(proxy.url(await redisUrl()), {
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => 20,
  })
  await new Promise((resolve) => redis.once('ready', resolve))
  await redis.set(key, 'v', 'PX', 60_000)
})
afterAll(async () => {
  proxy.restore()
  redis.disconnect()
  await proxy.close()
})

describe('circuitBreaker around a real dependency (Redis through a fault proxy)', () => {
  it('opens within the configured window when Redis is cut, and closes again after it recovers', async () => {
    const breaker = circuitBreaker((k: string) => redis.get(k), {
      name: 'redis',
      window: { type: 'count', size: 10 },
      volumeThreshold: 5,
      errorThresholdPercentage: 50,
      resetTimeout: 300,
      timeout: 200,
    })
    const events: string[] = []
    breaker.on('opened', () => events.push('open'))
    breaker.on('half-opened', () => events.push('halfOpen'))
    breaker.on('closed', () => events.push('close'))
    for (let i = 0; i < 5; i++) await expect(breaker.fire(key)).resolves.toBe('v')

    proxy.refuse()
    proxy.cut()
    let failedCalls = 0
    while (breaker.state === 'closed' && failedCalls < 50) {
      await breaker.fire(key).catch(() => {})
      failedCalls++
    }
    expect(breaker.state).toBe('open')
    // 5 successes in a window of 10 at 50%: more than half must fail → the 6th failure opens it
    expect(failedCalls).toBe(6)
    await expect(breaker.fire(key)).rejects.toBeInstanceOf(BreakerOpenError)

    proxy.restore()
    // wait for the client to reconnect, then for the breaker to let a probe through
    const deadline = Date.now() + 5000
    while (breaker.state !== 'closed' && Date.now() < deadline) {
      await sleep(50)
      await breaker.fire(key).catch(() => {})
    }
    expect(breaker.state).toBe('closed')
    await expect(breaker.fire(key)).resolves.toBe('v')
    expect(events[0]).toBe('open')
    expect(events.at(-1)).toBe('close')
    expect(events).toContain('halfOpen')
    await breaker.close()
    await redis.del(key)
  })
})
