import { createFaultProxy, type FaultProxy, redisUrl } from '@ballast/testkit'
import { Redis } from 'ioredis'
import { afterEach, describe, expect, it } from 'vitest'
import type { TwoLevelCache } from '../src/index.js'
import { CacheGroup, eventually, sleep } from './fixtures.js'

const L2_TIMEOUT = 100
// Bound on any one operation: a write makes at most two Redis calls in a row (the write, then the
// publish), each bounded by the L2 timeout, plus timer lateness on a shared 2-core machine running
// the other test files. What it rules out is waiting for TCP timeouts or reconnects (seconds).
const BOUND = 3 * L2_TIMEOUT + 50

describe('TwoLevelCache when Redis is cut off (fault proxy)', () => {
  let group: CacheGroup
  let proxy: FaultProxy
  afterEach(async () => {
    await group.close()
    await proxy.close()
  })

  async function setup(): Promise<{ a: TwoLevelCache; b: TwoLevelCache }> {
    group = new CacheGroup('standalone')
    const url = new URL(await redisUrl())
    proxy = await createFaultProxy({ host: url.hostname, port: Number(url.port || 6379) })
    const viaProxy = new Redis(proxy.url(url.toString()), {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: () => 50,
    })
    viaProxy.on('error', () => undefined) // reconnects are expected here
    group.clients.push(viaProxy)
    const options = {
      grace: 60_000,
      l2Timeout: L2_TIMEOUT,
      heartbeatInterval: 50,
      heartbeatTimeout: 200,
      breaker: { windowSize: 10, volumeThreshold: 3, resetTimeout: 100 },
    }
    const a = await group.add(options, viaProxy)
    const b = await group.add(options)
    return { a, b }
  }

  it('serves L1 and grace, sends other keys to the loader, never waits past the L2 timeout, and is consistent after the reconnect', async () => {
    const { a, b } = await setup()
    for (let i = 0; i < 100; i++) await a.getOrSet(`hot:${i}`, () => `v${i}`)
    await b.set('changed', 'before')
    expect(await a.get('changed')).toBe('before')

    const errors: unknown[] = []
    const breaker: string[] = []
    a.on('breaker-changed', ({ state }) => breaker.push(state))
    let slowest = 0
    let loaderCalls = 0
    let outage = false
    let deferredDelete = false
    const loader = async () => {
      loaderCalls++
      return 'loaded'
    }
    for (let i = 0; i < 10_000; i++) {
      if (i === 2000) {
        proxy.refuse()
        proxy.cut()
        outage = true
      }
      if (outage && i === 4000) {
        // invalidations sent while a cannot hear them, and one a makes while it cannot reach L2
        await b.set('changed', 'during outage')
        await a.delete('hot:7')
        deferredDelete = true
      }
      if (i === 8000) {
        proxy.restore()
        outage = false
      }
      const t0 = performance.now()
      try {
        const op = i % 10
        if (op < 6) {
          const key = `hot:${(i * 7) % 100}`
          const value = await a.getOrSet(key, loader)
          if (key !== 'hot:7' || !deferredDelete)
            expect(value === `v${(i * 7) % 100}` || value === 'loaded').toBe(true)
        } else if (op < 8) {
          await a.getOrSet(`cold:${i}`, loader)
        } else if (op < 9) {
          await a.get(`hot:${i % 100}`)
        } else {
          await a.set(`written:${i % 50}`, i)
        }
      } catch (error) {
        errors.push(error)
      }
      slowest = Math.max(slowest, performance.now() - t0)
      if (i % 500 === 0) await sleep(5) // let timers and reconnects run
    }
    expect(errors).toEqual([])
    expect(slowest).toBeLessThan(BOUND)
    expect(loaderCalls).toBeGreaterThanOrEqual(2000) // every cold key went to the loader
    // after the reconnect: a flushed its L1 and replayed its delete; nothing older than an invalidation survives
    await eventually(() => a.stats().bus.healthy && a.stats().pendingInvalidations === 0, 3000)
    expect(breaker.at(-1) ?? 'closed').toBe('closed')
    const seen: unknown[] = []
    await eventually(async () => {
      const value = await a.get('changed')
      seen.push(value)
      return value === 'during outage'
    })
    expect(seen).not.toContain('before') // L1 was flushed: the value b replaced during the outage never came back
    // a's delete of hot:7 made during the outage was replayed: the value before it is gone everywhere
    // (a later getOrSet may have loaded it again: that is the loader's 'loaded', never 'v7')
    await eventually(async () => (await b.get('hot:7')) !== 'v7', 2000)
    expect(await a.get('hot:7')).not.toBe('v7')
    expect(a.stats().bus.flushes).toBeGreaterThanOrEqual(1)
    expect(a.stats().staleServed + a.stats().l1.hits).toBeGreaterThan(0)
  })

  it('a black-holed connection is noticed by the heartbeat: L1 stops being trusted, then is flushed on return', async () => {
    const { a, b } = await setup()
    await b.set('k', 'v1')
    expect(await a.get('k')).toBe('v1')
    const down = new Promise((resolve) => a.on('bus-disconnected', resolve))
    proxy.blackhole()
    await down
    await b.set('k', 'v2') // a cannot hear this
    const t0 = performance.now()
    expect(await a.get('k')).toBe('v1') // L2 unreachable: L1 answers as the documented fallback
    expect(performance.now() - t0).toBeLessThan(BOUND)
    // a hung connection (still 'ready' to ioredis) trips the breaker: then L2 costs nothing
    const opened = new Promise((resolve) =>
      a.on('breaker-changed', ({ state }) => state === 'open' && resolve(state)),
    )
    for (let i = 0; i < 5; i++) await a.get(`other:${i}`)
    await opened
    // with the breaker open, L2 is not even tried: no call fails, L1 answers
    const failedBefore = a.stats().l2.failed
    expect(await a.get('k')).toBe('v1')
    expect(a.stats().l2.failed).toBe(failedBefore)
    expect(a.stats().breaker).toBe('open')
    const up = new Promise((resolve) => a.on('bus-connected', resolve))
    proxy.restore()
    await up
    // from the reconnect on, a never serves v1 again: a miss while it re-reads the generation, then v2
    const seen: unknown[] = []
    await eventually(async () => {
      const value = await a.get('k')
      seen.push(value)
      return value === 'v2'
    })
    expect(seen).not.toContain('v1')
  })
})
