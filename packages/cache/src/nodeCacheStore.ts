import { type Duration, merge } from '@ballast/shared'
import NodeCache from 'node-cache'
import { option } from './internal/validate.js'
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
   * Time between node-cache's sweeps of expired entries (it counts whole seconds, so a
   * duration under a second sweeps every second); 0 turns the sweep off.
   * @default 60000 (1 minute)
   */
  checkPeriod?: Duration
}

/** The defaults of {@link NodeCacheStoreOptions} (frozen). */
export const DEFAULT_NODE_CACHE_STORE_OPTIONS: Readonly<Required<NodeCacheStoreOptions>> =
  Object.freeze({
    maxEntries: 10_000,
    checkPeriod: 60_000,
  })

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
  if (typeof options !== 'object' || options === null) option.object('l1', options)
  const merged = merge(DEFAULT_NODE_CACHE_STORE_OPTIONS, options)
  const maxKeys = option.positiveInteger('l1.maxEntries', merged.maxEntries)
  const checkPeriod = option.duration('l1.checkPeriod', merged.checkPeriod)
  // node-cache counts seconds (0: no sweep)
  const checkperiod = checkPeriod === 0 ? 0 : Math.max(1, Math.round(checkPeriod / 1000))
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
