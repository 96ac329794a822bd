import type { AddressInfo } from 'node:net'
import { request } from 'undici'
import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  type CachedResponse,
  createBalancedClient,
  createBalancer,
  createHealthChecker,
  createProxy,
  createRetryBudget,
  DEFAULT_BALANCED_CLIENT_OPTIONS,
  DEFAULT_BALANCER_OPTIONS,
  DEFAULT_HASH_RING_OPTIONS,
  DEFAULT_HEALTH_CHECKER_OPTIONS,
  DEFAULT_OUTLIER_DETECTION_OPTIONS,
  DEFAULT_PROXY_OPTIONS,
  DEFAULT_RETRY_BUDGET_OPTIONS,
  DEFAULT_SIMULATION_OPTIONS,
  DEFAULT_SLOW_START_OPTIONS,
  HashRing,
  InvalidArgumentError,
  type ProxyOptions,
  simulate,
} from '../src/index.js'
import { startBackends } from './fixtures/backend.js'

/** Every key of a defaults object, given as `undefined`: what a caller's spread config sends. */
function allUndefined<T extends object>(defaults: T): { [K in keyof T]?: undefined } {
  return Object.fromEntries(Object.keys(defaults).map((k) => [k, undefined])) as {
    [K in keyof T]?: undefined
  }
}

let cleanup: Array<() => Promise<void>> = []
afterEach(async () => {
  vi.useRealTimers()
  for (const fn of cleanup.reverse()) await fn()
  cleanup = []
})

describe('options given as undefined keep their defaults', () => {
  it('createBalancer: the default strategy and outlier detection (5 consecutive failures) apply', () => {
    const b = createBalancer({
      endpoints: ['a', 'b', 'c', 'd'],
      ...allUndefined(DEFAULT_BALANCER_OPTIONS),
      outlierDetection: {
        ...allUndefined(DEFAULT_OUTLIER_DETECTION_OPTIONS),
        maxEjectionShare: 0.5,
      },
      slowStart: allUndefined(DEFAULT_SLOW_START_OPTIONS),
    })
    cleanup.push(() => b.close())
    expect(b.strategy).toBe(DEFAULT_BALANCER_OPTIONS.strategy)
    const a = b.get('a')!
    for (let i = 1; i < DEFAULT_OUTLIER_DETECTION_OPTIONS.consecutiveFailures; i++) {
      b.end(a, b.begin(a), false)
    }
    expect(a.ejected).toBe(false)
    b.end(a, b.begin(a), false)
    expect(a.ejected).toBe(true)
  })

  it('createHealthChecker: checks on the default interval', async () => {
    vi.useFakeTimers()
    const counts = [0, 0]
    const make = (i: number, extra: object) => {
      const balancer = createBalancer({ endpoints: ['a'] })
      const checker = createHealthChecker({
        balancer,
        ...extra,
        check: () => {
          counts[i]!++
          return true
        },
      })
      cleanup.push(async () => {
        await checker.close()
        await balancer.close()
      })
    }
    make(0, {})
    make(1, allUndefined(DEFAULT_HEALTH_CHECKER_OPTIONS))
    await vi.advanceTimersByTimeAsync((DEFAULT_HEALTH_CHECKER_OPTIONS.interval as number) * 3 + 1)
    expect(counts[0]).toBeGreaterThan(0)
    expect(counts[1]).toBe(counts[0])
  })

  it('createRetryBudget: grants the default floor of retries', () => {
    vi.useFakeTimers()
    const grants = (budget: ReturnType<typeof createRetryBudget>) => {
      let n = 0
      while (n < 10_000 && budget.tryRetry()) n++
      return n
    }
    const expected = grants(createRetryBudget())
    expect(expected).toBeGreaterThan(0)
    expect(grants(createRetryBudget(allUndefined(DEFAULT_RETRY_BUDGET_OPTIONS)))).toBe(expected)
  })

  it('HashRing: places keys as the default ring does', () => {
    const nodes = ['a', 'b', 'c']
    const plain = new HashRing(nodes)
    const ring = new HashRing(nodes, allUndefined(DEFAULT_HASH_RING_OPTIONS))
    for (let i = 0; i < 200; i++) expect(ring.get(`key-${i}`)).toBe(plain.get(`key-${i}`))
  })

  it('simulate: gives the same figures as with no options', () => {
    const base = { strategy: 'round-robin' as const, duration: 5000 }
    expect(
      simulate({ ...allUndefined(DEFAULT_SIMULATION_OPTIONS), ...base, balancer: undefined }),
    ).toEqual(simulate(base))
  })

  it('createBalancedClient: builds with defaults and nested undefined options', async () => {
    const client = createBalancedClient({
      endpoints: ['http://127.0.0.1:1'],
      ...allUndefined(DEFAULT_BALANCED_CLIENT_OPTIONS),
      healthCheck: undefined,
      retryBudget: allUndefined(DEFAULT_RETRY_BUDGET_OPTIONS),
      balancer: allUndefined(DEFAULT_BALANCER_OPTIONS),
    })
    cleanup.push(() => client.close())
    expect(client.balancer.strategy).toBe(DEFAULT_BALANCER_OPTIONS.strategy)
    expect(client.stats()).toMatchObject({ requests: 0, retries: 0 })
  })

  it('createProxy: forwards requests with defaults, compression and cache given as undefined', async () => {
    const [backend] = await startBackends('a')
    cleanup.push(() => backend!.kill())
    const map = new Map<string, CachedResponse>()
    const proxy = createProxy({
      routes: [{ upstream: [backend!.url] }],
      ...allUndefined(DEFAULT_PROXY_OPTIONS),
      compression: { level: undefined, threshold: undefined, brotli: undefined },
      cache: {
        store: { get: (k) => map.get(k), set: (k, v) => void map.set(k, v) },
        maxBodyBytes: undefined,
      },
    })
    cleanup.push(() => proxy.close())
    const address: AddressInfo = await proxy.listen(0, '127.0.0.1')
    const res = await request(`http://127.0.0.1:${address.port}/hello`, {
      headers: { 'accept-encoding': 'gzip' },
    })
    await res.body.text()
    expect(res.statusCode).toBe(200)
    expect(proxy.stats()).toMatchObject({ requests: 1, badGateway: 0 })
  })
})

describe('createProxy validates compression and cache options', () => {
  const store = { get: () => undefined, set: () => {} }
  const build = (extra: Partial<ProxyOptions>) => () =>
    createProxy({ routes: [{ upstream: ['http://127.0.0.1:1'] }], ...extra })

  it.each([0, 10, 1.5, Number.NaN, '6'])('rejects compression.level %s', (level) => {
    expect(build({ compression: { level: level as number } })).toThrow(InvalidArgumentError)
    expect(build({ compression: { level: level as number } })).toThrow(
      /invalid option "compression\.level": expected an integer from 1 to 9, got /,
    )
  })

  it.each([-1, 1.5, Number.POSITIVE_INFINITY])('rejects compression.threshold %s', (threshold) => {
    expect(build({ compression: { threshold } })).toThrow(
      /invalid option "compression\.threshold": expected an integer >= 0, got /,
    )
  })

  it.each([0, -1, 1.5])('rejects cache.maxBodyBytes %s', (maxBodyBytes) => {
    expect(build({ cache: { store, maxBodyBytes } })).toThrow(InvalidArgumentError)
    expect(build({ cache: { store, maxBodyBytes } })).toThrow(
      /invalid option "cache\.maxBodyBytes": expected a positive integer, got /,
    )
  })

  it('accepts the bounds', async () => {
    for (const extra of [
      { compression: { level: 1, threshold: 0 } },
      { compression: { level: 9 } },
      { cache: { store, maxBodyBytes: 1 } },
    ]) {
      await build(extra)().close()
    }
  })
})
