import fc from 'fast-check'
import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  createCache,
  createLruStore,
  createNodeCacheStore,
  devalueSerializer,
  InvalidArgumentError,
  isCacheError,
  LoaderTimeoutError,
  parseDuration,
  SerializationError,
} from '../src/index.js'
import { deferred } from './fixtures.js'

afterEach(() => {
  vi.useRealTimers()
})

describe('createCache', () => {
  it('rejects bad options with an error naming the option', () => {
    expect(() => createCache({ ttl: -5 })).toThrow(
      'invalid option "ttl": expected a positive duration (milliseconds, or a string such as',
    )
    expect(() => createCache({ ttl: '5 parsecs' as never })).toThrow(InvalidArgumentError)
    expect(() => createCache({ jitter: 2 })).toThrow('invalid option "jitter"')
    expect(() => createCache({ namespace: 'a b' })).toThrow('invalid option "namespace"')
    expect(() => createCache({ l1: { maxEntries: 0 } })).toThrow('invalid option "l1.maxEntries"')
    expect(() => createCache({ heartbeatInterval: 5000, heartbeatTimeout: 1000 })).toThrow(
      'heartbeatTimeout',
    )
    expect(() => createCache({ bloom: { expectedItems: 100 } })).toThrow('invalid option "bloom"')
  })

  it('parses durations with the shared parser: a unit is required', () => {
    expect(parseDuration('15m')).toBe(900_000)
    expect(parseDuration('250ms')).toBe(250)
    expect(parseDuration(-1)).toBeUndefined()
    expect(parseDuration('30')).toBeUndefined()
    expect(() => createCache({ ttl: '30' as never })).toThrow('invalid option "ttl"')
  })
})

describe('TwoLevelCache without Redis (L1 only)', () => {
  it('answers a hit from L1 and peek synchronously', async () => {
    const cache = createCache<number>()
    await cache.set('a', 1)
    expect(await cache.get('a')).toBe(1)
    expect(cache.peek('a')).toBe(1)
    expect(await cache.has('a')).toBe(true)
    expect(await cache.get('b')).toBeUndefined()
    expect(cache.stats().l1.hits).toBe(2)
    await cache.close()
  })

  it('rejects empty and over-long keys and bad per-call TTLs, writing nothing', async () => {
    const cache = createCache({ maxKeyLength: 10 })
    await expect(cache.set('', 1)).rejects.toThrow('invalid argument "key"')
    await expect(cache.set('x'.repeat(11), 1)).rejects.toThrow(InvalidArgumentError)
    await expect(cache.get('')).rejects.toThrow(InvalidArgumentError)
    await expect(cache.set('k', 1, { ttl: 0 })).rejects.toThrow('invalid argument "ttl"')
    await expect(cache.set('k', 1, { ttl: Number.NaN })).rejects.toThrow('invalid argument "ttl"')
    expect(cache.stats().l1.entries).toBe(0)
    await cache.close()
  })

  it('rejects a value it cannot serialize with a typed error and caches nothing', async () => {
    const cache = createCache()
    const error = await cache.set('f', { run: () => 1 }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(SerializationError)
    expect(isCacheError(error) && error.code).toBe('E_CACHE_SERIALIZATION')
    expect(await cache.get('f')).toBeUndefined()
    await expect(cache.getOrSet('g', () => ({ sym: Symbol('x') }) as never)).rejects.toThrow(
      SerializationError,
    )
    expect(cache.peek('g')).toBeUndefined()
    await cache.close()
  })

  it('expires entries after their TTL, with jitter only shortening it', async () => {
    vi.useFakeTimers({ now: 1_000_000 })
    const cache = createCache<number>({ ttl: 1000, jitter: 0.2 })
    await cache.set('a', 1)
    vi.advanceTimersByTime(799)
    expect(cache.peek('a')).toBe(1)
    vi.advanceTimersByTime(202)
    expect(cache.peek('a')).toBeUndefined()
    await cache.close()
  })
})

describe('getOrSet', () => {
  it('calls the loader once for concurrent callers of one key (single-flight)', async () => {
    const cache = createCache<string>()
    let calls = 0
    const loader = async () => {
      calls++
      await new Promise((resolve) => setTimeout(resolve, 10))
      return 'v'
    }
    const values = await Promise.all(Array.from({ length: 200 }, () => cache.getOrSet('k', loader)))
    expect(new Set(values)).toEqual(new Set(['v']))
    expect(calls).toBe(1)
    expect(await cache.getOrSet('k', loader)).toBe('v')
    expect(calls).toBe(1)
    await cache.close()
  })

  it('caches "not found" for negativeTtl (penetration)', async () => {
    vi.useFakeTimers({ now: 1_000_000 })
    const cache = createCache<string>({ negativeTtl: 500 })
    const loader = vi.fn(async () => undefined)
    expect(await cache.getOrSet('ghost', loader)).toBeUndefined()
    expect(await cache.getOrSet('ghost', loader)).toBeUndefined()
    expect(loader).toHaveBeenCalledTimes(1)
    expect(await cache.has('ghost')).toBe(false)
    vi.advanceTimersByTime(501)
    await cache.getOrSet('ghost', loader)
    expect(loader).toHaveBeenCalledTimes(2)
    await cache.close()
  })

  it('serves the expired value within grace when the loader fails (fail-safe), and throws without grace', async () => {
    vi.useFakeTimers({ now: 1_000_000 })
    const cache = createCache<string>({ ttl: 1000, jitter: 0, grace: 60_000, softTimeout: 1000 })
    await cache.getOrSet('k', () => 'old')
    vi.advanceTimersByTime(1500)
    const failing = async () => {
      throw new Error('db down')
    }
    expect(await cache.getOrSet('k', failing)).toBe('old')
    expect(cache.stats().staleServed).toBe(1)
    vi.advanceTimersByTime(60_000)
    await expect(cache.getOrSet('k', failing)).rejects.toThrow('db down')
    const strict = createCache<string>({ ttl: 1000 })
    await strict.getOrSet('k', () => 'old')
    vi.advanceTimersByTime(1500)
    await expect(strict.getOrSet('k', failing)).rejects.toThrow('db down')
    await cache.close()
    await strict.close()
  })

  it('returns the stale value after the soft timeout and refreshes in the background', async () => {
    vi.useFakeTimers({ now: 1_000_000 })
    const cache = createCache<string>({ ttl: 1000, jitter: 0, grace: 60_000, softTimeout: 50 })
    await cache.getOrSet('k', () => 'old')
    vi.advanceTimersByTime(1001)
    let release: (v: string) => void = () => undefined
    const slow = () => new Promise<string>((resolve) => (release = resolve))
    const pending = cache.getOrSet('k', slow)
    await vi.advanceTimersByTimeAsync(60)
    expect(await pending).toBe('old')
    release('new')
    await vi.advanceTimersByTimeAsync(1)
    expect(cache.peek('k')).toBe('new')
    await cache.close()
  })

  it('rejects with LoaderTimeoutError after the hard timeout when nothing stale is at hand', async () => {
    vi.useFakeTimers({ now: 1_000_000 })
    const cache = createCache<string>({ hardTimeout: 100 })
    const pending = cache.getOrSet('k', () => new Promise<string>(() => undefined))
    const assertion = expect(pending).rejects.toBeInstanceOf(LoaderTimeoutError)
    await vi.advanceTimersByTimeAsync(101)
    await assertion
    expect(cache.stats().loader.timedOut).toBe(1)
    await cache.close()
  })

  it('refreshes early in the background at the configured share of the TTL', async () => {
    vi.useFakeTimers({ now: 1_000_000 })
    const cache = createCache<number>({ ttl: 1000, jitter: 0, earlyRefresh: 0.5 })
    let n = 0
    const loader = async () => ++n
    expect(await cache.getOrSet('k', loader)).toBe(1)
    vi.advanceTimersByTime(600)
    expect(await cache.getOrSet('k', loader)).toBe(1) // served at once...
    await vi.advanceTimersByTimeAsync(1)
    expect(cache.peek('k')).toBe(2) // ...while the refresh replaced it
    await cache.close()
  })

  it('lets the loader adapt TTL and tags to what it loaded', async () => {
    vi.useFakeTimers({ now: 1_000_000 })
    const cache = createCache<string>({ ttl: 60_000, jitter: 0 })
    await cache.getOrSet('k', (ctx) => {
      ctx.ttl = 100
      ctx.tags = ['short']
      return 'v'
    })
    vi.advanceTimersByTime(101)
    expect(cache.peek('k')).toBeUndefined()
    await cache.close()
  })
})

describe('getOrSetMany', () => {
  it('calls the batch loader once for the misses and joins loads in flight', async () => {
    const cache = createCache<string>()
    await cache.set('a', 'A')
    const b = deferred<string>()
    const single = cache.getOrSet('b', () => b.promise)
    const batch = vi.fn(
      async (keys: readonly string[]) => new Map(keys.map((k) => [k, k.toUpperCase()])),
    )
    const many = cache.getOrSetMany(['a', 'b', 'c', 'd', 'c'], batch)
    b.resolve('B')
    expect(await many).toEqual(['A', 'B', 'C', 'D', 'C'])
    expect(await single).toBe('B')
    expect(batch).toHaveBeenCalledTimes(1)
    expect(batch.mock.calls[0]?.[0]).toEqual(['c', 'd'])
    expect(cache.peek('d')).toBe('D')
    await cache.close()
  })

  it('reads an array result by position, for duplicates and large batches alike', async () => {
    const cache = createCache<string>({ l1: { maxEntries: 50_000 } })
    await cache.set('k:3', 'cached')
    const keys = Array.from({ length: 20_000 }, (_, i) => `k:${i % 10_000}`) // each key twice
    let asked: readonly string[] = []
    const values = await cache.getOrSetMany(keys, async (missing) => {
      asked = missing
      return missing.map((key) => `v${key}`)
    })
    expect(asked).toHaveLength(9_999) // each missing key once, k:3 from L1
    expect(values).toEqual(keys.map((key) => (key === 'k:3' ? 'cached' : `v${key}`)))
    expect(cache.peek('k:9999')).toBe('vk:9999')
    await cache.close()
  })

  it('keeps grace per key when the batch loader fails', async () => {
    vi.useFakeTimers({ now: 1_000_000 })
    const cache = createCache<string>({ ttl: 1000, jitter: 0, grace: 10_000, softTimeout: 1000 })
    await cache.set('a', 'old-a')
    vi.advanceTimersByTime(1001)
    const failing = async (): Promise<string[]> => {
      throw new Error('db down')
    }
    expect(await cache.getOrSetMany(['a'], failing)).toEqual(['old-a'])
    await expect(cache.getOrSetMany(['a', 'b'], failing)).rejects.toThrow('db down')
    await cache.close()
  })
})

describe('tags and clear (local)', () => {
  it('deleteByTag drops every key carrying the tag and grace does not bring it back', async () => {
    const cache = createCache<number>({ grace: 60_000 })
    await cache.set('a', 1, { tags: ['x'] })
    await cache.set('b', 2, { tags: ['x', 'y'] })
    await cache.set('c', 3, { tags: ['y'] })
    await cache.deleteByTag('x')
    expect([cache.peek('a'), cache.peek('b'), cache.peek('c')]).toEqual([undefined, undefined, 3])
    await expect(cache.getOrSet('a', () => Promise.reject(new Error('down')))).rejects.toThrow(
      'down',
    )
    await cache.clear()
    expect(cache.peek('c')).toBeUndefined()
    await cache.close()
  })
})

describe('L1 engines', () => {
  it('the LRU engine stays within its byte bound under churn', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.string({ minLength: 1, maxLength: 20 }), fc.nat(2000)), {
          maxLength: 300,
        }),
        (ops) => {
          const store = createLruStore({ maxEntries: 100, maxBytes: 20_000 })
          for (const [key, size] of ops) {
            store.set(
              key,
              {
                value: 1,
                freshUntil: 1,
                staleUntil: 1,
                refreshAt: 1,
                tags: undefined,
                negative: false,
                version: undefined,
                size: size + 1,
                promise: undefined,
              },
              1000,
            )
            if (store.bytes > 20_000) return false
          }
          return true
        },
      ),
      { seed: 16, numRuns: 100 },
    )
  })

  it('the node-cache adapter serves hits and refuses entries past its bound instead of throwing', async () => {
    const l1 = createNodeCacheStore({ maxEntries: 2, checkPeriod: 0 })
    const cache = createCache<number>({ l1 })
    await cache.setMany([
      { key: 'a', value: 1 },
      { key: 'b', value: 2 },
      { key: 'c', value: 3 },
    ])
    expect(cache.peek('a')).toBe(1)
    expect(cache.peek('c')).toBeUndefined()
    expect(cache.stats().l1).toMatchObject({ entries: 2, engine: 'node-cache' })
    await cache.delete('a')
    expect(cache.peek('a')).toBeUndefined()
    await cache.close()
  })
})

describe('devalueSerializer', () => {
  it('round-trips Date, BigInt, Map, Set and undefined vs null without loss', () => {
    const value = fc.letrec((tie) => ({
      tree: fc.oneof(
        { depthSize: 'small' },
        fc.constantFrom(undefined, null, -0, Number.NaN),
        fc.bigInt(),
        fc.date({ noInvalidDate: true }),
        fc.string(),
        fc.double(),
        fc.array(tie('tree'), { maxLength: 4 }),
        fc.dictionary(
          fc.stringMatching(/^[a-z]{1,8}$/).filter((k) => k !== 'constructor'),
          tie('tree'),
          { maxKeys: 4 },
        ),
        fc.array(tie('tree'), { maxLength: 3 }).map((items) => new Set(items)),
        fc
          .array(fc.tuple(fc.string(), tie('tree')), { maxLength: 3 })
          .map((entries) => new Map(entries)),
      ),
    })).tree
    fc.assert(
      fc.property(value, (v) => {
        expect(devalueSerializer.deserialize(devalueSerializer.serialize(v))).toStrictEqual(v)
      }),
      { seed: 16, numRuns: 100 },
    )
  })
})
