/**
 * ADAPTER for `@ballast/cache` (the catalog's two-level cache). The shop codes against
 * {@link ProductCache}; this file is the only place that knows how it is implemented.
 * Until the package's TwoLevelCache lands, a minimal in-shop version lives here:
 * L1 a Map with TTL, L2 Redis, invalidation over Redis pub/sub.
 */
import type { Redis } from 'ioredis'

export interface CacheStats {
  l1Hits: number
  l2Hits: number
  misses: number
  l2Errors: number
  invalidationsReceived: number
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
  subscriber: Redis
  prefix: string
  l1TtlMs: number
  l2TtlMs: number
}

export function createProductCache(o: ProductCacheOptions): ProductCache {
  const l1 = new Map<string, { value: unknown; expires: number }>()
  const inflight = new Map<string, Promise<unknown>>()
  const s: CacheStats = { l1Hits: 0, l2Hits: 0, misses: 0, l2Errors: 0, invalidationsReceived: 0 }
  const channel = `${o.prefix}invalidate`
  void o.subscriber.subscribe(channel).catch(() => {})
  o.subscriber.on('message', (ch: string, key: string) => {
    if (ch !== channel) return
    s.invalidationsReceived++
    l1.delete(key)
  })
  const L1_MAX = 5000
  return {
    async getOrLoad<T>(key: string, loader: () => Promise<T>): Promise<T> {
      const hit = l1.get(key)
      if (hit && hit.expires > Date.now()) {
        s.l1Hits++
        return hit.value as T
      }
      const running = inflight.get(key)
      if (running) return running as Promise<T>
      const p = (async () => {
        try {
          const raw = await o.redis.get(o.prefix + key)
          if (raw !== null) {
            s.l2Hits++
            const value = JSON.parse(raw) as T
            l1.set(key, { value, expires: Date.now() + o.l1TtlMs })
            return value
          }
        } catch {
          s.l2Errors++
        }
        s.misses++
        const value = await loader()
        if (l1.size >= L1_MAX) l1.delete(l1.keys().next().value as string)
        l1.set(key, { value, expires: Date.now() + o.l1TtlMs })
        o.redis.set(o.prefix + key, JSON.stringify(value), 'PX', o.l2TtlMs).catch(() => {
          s.l2Errors++
        })
        return value
      })()
      inflight.set(key, p)
      try {
        return await p
      } finally {
        inflight.delete(key)
      }
    },
    async invalidate(key: string): Promise<void> {
      l1.delete(key)
      await o.redis.del(o.prefix + key)
      await o.redis.publish(channel, key)
    },
    stats: () => ({ ...s }),
    async close() {
      l1.clear()
    },
  }
}
