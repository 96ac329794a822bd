/**
 * The catalog's two-level cache, `@ballast/cache`: L1 in each process, L2 in Redis, and an
 * invalidation bus so a price change drops the entry from every instance's L1. The shop codes
 * against {@link ProductCache}; this file is the only place that knows the package.
 */
import { createCache, type TwoLevelCache } from '@ballast/cache'
import type { Redis } from 'ioredis'

export interface CacheStats {
  l1Hits: number
  l2Hits: number
  misses: number
  l2Errors: number
  invalidationsReceived: number
  breaker: string
}

export interface ProductCache {
  getOrLoad<T>(key: string, loader: () => Promise<T>): Promise<T>
  /** Deletes the key here, in L2 and in every instance's L1. */
  invalidate(key: string): Promise<void>
  stats(): CacheStats
  close(): Promise<void>
}

export interface ProductCacheOptions {
  redis: Redis
  /** Prefix of the cache's Redis keys and bus channel. */
  prefix: string
  /** How long an entry stays fresh (both levels; the bus keeps L1 honest meanwhile). */
  ttlMs: number
}

export function createProductCache(o: ProductCacheOptions): ProductCache {
  const cache: TwoLevelCache<unknown> = createCache<unknown>({
    redis: o.redis,
    namespace: 'catalog',
    prefix: o.prefix,
    ttl: o.ttlMs,
    // Serve a stale entry for up to an hour when the loader (MariaDB) fails.
    grace: '1h',
  })
  return {
    getOrLoad<T>(key: string, loader: () => Promise<T>): Promise<T> {
      return cache.getOrSet(key, loader)
    },
    invalidate: (key) => cache.delete(key),
    stats() {
      const s = cache.stats()
      return {
        l1Hits: s.l1.hits,
        l2Hits: s.l2.hits,
        misses: s.loader.calls,
        l2Errors: s.l2.failed,
        invalidationsReceived: s.bus.received,
        breaker: String(s.breaker),
      }
    },
    close: () => cache.close(),
  }
}
