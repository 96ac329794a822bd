import { merge } from '@ballast/shared'
import { LRUCache } from 'lru-cache'
import { option } from './internal/validate.js'
import type { L1Entry, L1Store } from './l1Store.js'

/** Bounds of the default L1 engine. */
export interface LruStoreOptions {
  /**
   * Most entries held; the least recently used go first.
   * @default 10000
   */
  maxEntries?: number
  /**
   * Most approximate bytes held, everything L1 keeps on the heap: the arrays lru-cache
   * preallocates for `maxEntries` ({@link LRU_SLOT_BYTES} per slot), and per entry ~300 bytes
   * of bookkeeping, the key, and the value (twice its serialized length for objects, its
   * length for strings: about what V8 keeps for them). Must exceed the slots' share.
   * @default 67108864 (64 MiB)
   */
  maxBytes?: number
}

/** The defaults of {@link LruStoreOptions} (frozen). */
export const DEFAULT_LRU_STORE_OPTIONS: Readonly<Required<LruStoreOptions>> = Object.freeze({
  maxEntries: 10_000,
  maxBytes: 64 * 1024 * 1024,
})

/**
 * Heap bytes lru-cache preallocates per `maxEntries` slot (measured on Node 24 with V8's
 * pointer compression, `bench/cache/memory.bench.ts`): reserved out of `maxBytes`.
 */
export const LRU_SLOT_BYTES = 24

/**
 * The default L1 engine, on lru-cache: bounded by entries and bytes, least recently used
 * evicted first. Chosen by benchmark (`bench/cache/l1Hit.bench.ts`, the `peek` table): lru-cache's `get`
 * is ~3x faster than node-cache's and it is bounded by construction.
 *
 * @example
 * ```ts
 * createCache({ redis, namespace: 'products', l1: createLruStore({ maxEntries: 50_000, maxBytes: 128 << 20 }) })
 * ```
 */
export function createLruStore(options: LruStoreOptions = {}): L1Store {
  if (typeof options !== 'object' || options === null) option.object('l1', options)
  const merged = merge(DEFAULT_LRU_STORE_OPTIONS, options)
  const max = option.positiveInteger('l1.maxEntries', merged.maxEntries)
  const maxBytes = option.positiveInteger('l1.maxBytes', merged.maxBytes)
  const slots = max * LRU_SLOT_BYTES
  if (maxBytes <= slots) {
    option.invalid(
      'l1.maxBytes',
      `more than the ${LRU_SLOT_BYTES} bytes per slot lru-cache preallocates for maxEntries (${slots})`,
      maxBytes,
    )
  }
  const lru = new LRUCache<string, L1Entry>({ max, maxSize: maxBytes - slots })
  return {
    name: 'lru-cache',
    get: (key) => lru.get(key),
    set: (key, entry) => {
      lru.set(key, entry, { size: Math.max(1, entry.size) })
    },
    delete: (key) => {
      lru.delete(key)
    },
    clear: () => lru.clear(),
    entries: () => lru.entries(),
    get size() {
      return lru.size
    },
    get bytes() {
      return slots + lru.calculatedSize
    },
  }
}
