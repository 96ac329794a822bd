import type { CacheOptions } from './cacheOptions.js'
import { TwoLevelCache } from './twoLevelCache.js'

/**
 * Creates a two-level cache: L1 in this process, L2 in Redis, and an invalidation bus so a
 * write on any instance drops the key from every instance's L1. Bad options throw an
 * `InvalidArgumentError` naming the option.
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis'
 * import { createCache } from '@ballast/cache'
 *
 * const redis = new Redis({ enableOfflineQueue: false })
 * const cache = createCache<Product>({ redis, namespace: 'products', ttl: '5m', grace: '1h' })
 * const product = await cache.getOrSet(`product:${id}`, () => db.findProduct(id))
 * await cache.delete(`product:${id}`) // every instance drops it
 * await cache.close()
 * ```
 */
export function createCache<T = unknown>(options: CacheOptions = {}): TwoLevelCache<T> {
  return new TwoLevelCache<T>(options)
}
