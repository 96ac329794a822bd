import NodeCache from 'node-cache'
import { integer } from './internal/validate.js'
import type { L1Entry, L1Store } from './l1Store.js'

/** Bounds of the node-cache L1 adapter. */
export interface NodeCacheStoreOptions {
  /**
   * Most entries held. node-cache has no eviction: once full, new entries are not kept
   * (the cache still answers, from L2).
   * @default 10000
   */
  maxEntries?: number
  /**
   * Seconds between node-cache's sweeps of expired entries.
   * @default 60
   */
  checkPeriodSeconds?: number
}

/** The defaults of {@link NodeCacheStoreOptions}. */
export const DEFAULT_NODE_CACHE_STORE_OPTIONS: Required<NodeCacheStoreOptions> = {
  maxEntries: 10_000,
  checkPeriodSeconds: 60,
}

/**
 * An L1 engine on node-cache (without clones), for applications that already use it. It is
 * bounded by entries only, refuses new entries when full instead of evicting, and its TTLs
 * are whole seconds; the default {@link createLruStore} has none of these limits.
 *
 * @example
 * ```ts
 * createCache({ redis, namespace: 'dict', l1: createNodeCacheStore({ maxEntries: 5000 }) })
 * ```
 */
export function createNodeCacheStore(options: NodeCacheStoreOptions = {}): L1Store {
  const merged = { ...DEFAULT_NODE_CACHE_STORE_OPTIONS, ...options }
  const maxKeys = integer('l1.maxEntries', merged.maxEntries, 1)
  const checkperiod = integer('l1.checkPeriodSeconds', merged.checkPeriodSeconds, 0)
  const cache = new NodeCache({
    useClones: false,
    stdTTL: 0,
    checkperiod,
    maxKeys,
    deleteOnExpire: true,
  })
  let bytes = 0
  const drop = (_key: string, entry: L1Entry) => {
    bytes -= entry.size
  }
  cache.on('del', drop)
  cache.on('expired', drop)
  return {
    name: 'node-cache',
    get: (key) => cache.get<L1Entry>(key),
    set: (key, entry, ttl) => {
      const previous = cache.get<L1Entry>(key)
      try {
        // node-cache counts seconds; round up so the entry never outlives its TTL by less than a second
        cache.set(key, entry, Math.max(1, Math.ceil(ttl / 1000)))
      } catch {
        return // ECACHEFULL: node-cache does not evict; the entry is simply not kept
      }
      if (previous !== undefined) bytes -= previous.size
      bytes += entry.size
    },
    delete: (key) => {
      cache.del(key)
    },
    clear: () => {
      cache.flushAll()
      bytes = 0
    },
    *entries() {
      for (const key of cache.keys()) {
        const entry = cache.get<L1Entry>(key)
        if (entry !== undefined) yield [key, entry] as [string, L1Entry]
      }
    },
    get size() {
      return cache.keys().length
    },
    get bytes() {
      return bytes
    },
    close: () => cache.close(),
  }
}
