import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  createCache,
  createLruStore,
  createNodeCacheStore,
  DEFAULT_BLOOM_OPTIONS,
  DEFAULT_CACHE_OPTIONS,
  DEFAULT_L2_BREAKER_OPTIONS,
  DEFAULT_LOCK_OPTIONS,
  DEFAULT_LRU_STORE_OPTIONS,
  DEFAULT_NODE_CACHE_STORE_OPTIONS,
  InvalidArgumentError,
} from '../src/index.js'

afterEach(() => {
  vi.useRealTimers()
})

describe('options', () => {
  it('exports one frozen DEFAULT_*_OPTIONS per options object, nested ones included', () => {
    for (const defaults of [
      DEFAULT_CACHE_OPTIONS,
      DEFAULT_L2_BREAKER_OPTIONS,
      DEFAULT_LOCK_OPTIONS,
      DEFAULT_BLOOM_OPTIONS,
      DEFAULT_LRU_STORE_OPTIONS,
      DEFAULT_NODE_CACHE_STORE_OPTIONS,
    ]) {
      expect(Object.isFrozen(defaults)).toBe(true)
    }
    expect(DEFAULT_CACHE_OPTIONS.breaker).toBe(DEFAULT_L2_BREAKER_OPTIONS)
    expect(DEFAULT_CACHE_OPTIONS.lock).toBe(DEFAULT_LOCK_OPTIONS)
    expect(DEFAULT_NODE_CACHE_STORE_OPTIONS.checkPeriod).toBe(60_000)
  })

  it('an option given as undefined keeps its default, in the nested breaker and lock too', () => {
    expect(() =>
      createCache({
        ttl: undefined,
        namespace: undefined,
        breaker: { windowSize: undefined, resetTimeout: undefined },
        lock: { lease: undefined, wait: undefined },
        bloom: undefined,
        l1: undefined,
      }).close(),
    ).not.toThrow()
  })

  it('a ttl given as undefined keeps the default of one minute', async () => {
    vi.useFakeTimers({ toFake: ['Date', 'setTimeout', 'clearTimeout'] })
    const cache = createCache<number>({ ttl: undefined, jitter: 0 })
    await cache.set('k', 1, { ttl: undefined })
    vi.advanceTimersByTime((DEFAULT_CACHE_OPTIONS.ttl as number) - 1000)
    expect(cache.peek('k')).toBe(1)
    vi.advanceTimersByTime(2000)
    expect(cache.peek('k')).toBeUndefined()
    await cache.close()
  })

  it('createLruStore and createNodeCacheStore keep their defaults for undefined bounds', () => {
    expect(() => createLruStore({ maxEntries: undefined, maxBytes: undefined })).not.toThrow()
    const store = createNodeCacheStore({ maxEntries: undefined, checkPeriod: undefined })
    store.close?.()
    createNodeCacheStore({ checkPeriod: '30s' }).close?.()
  })

  it('a bad duration string throws InvalidArgumentError naming the option, nested ones with their path', () => {
    expect(() => createCache({ grace: 'soon' as never })).toThrow(InvalidArgumentError)
    expect(() => createCache({ grace: 'soon' as never })).toThrow(
      /^invalid option "grace": expected a non-negative duration .*, got "soon"$/,
    )
    expect(() => createCache({ lock: { lease: '0s' } })).toThrow('invalid option "lock.lease"')
    expect(() => createCache({ breaker: { resetTimeout: '30' as never } })).toThrow(
      'invalid option "breaker.resetTimeout"',
    )
    expect(() => createNodeCacheStore({ checkPeriod: '30' as never })).toThrow(
      'invalid option "l1.checkPeriod"',
    )
    expect(() => createCache({ breaker: { windowSize: 0 } })).toThrow(
      'invalid option "breaker.windowSize": expected an integer >= 1, got 0',
    )
  })

  it('ready() takes its timeout as a Duration', async () => {
    const cache = createCache()
    await expect(cache.ready('1s')).resolves.toBeUndefined()
    await expect(cache.ready('soon' as never)).rejects.toThrow('invalid argument "timeout"')
    await cache.close()
  })

  it('per-call durations are checked with the argument message shape', async () => {
    const cache = createCache()
    await expect(cache.set('k', 1, { ttl: '1 fortnight' as never })).rejects.toThrow(
      /^invalid argument "ttl": expected a positive duration/,
    )
    await expect(cache.getOrSet('k', () => 1, { softTimeout: -1 })).rejects.toThrow(
      'invalid argument "softTimeout"',
    )
    await cache.close()
  })
})
