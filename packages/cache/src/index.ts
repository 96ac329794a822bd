export type {
  CacheEvents,
  CacheStats,
  CircuitState,
  FlushReason,
  StaleReason,
} from './cacheEvents.js'
export type {
  BatchLoader,
  BloomOptions,
  CacheDefaults,
  CacheOptions,
  GetOrSetOptions,
  L2BreakerOptions,
  Loader,
  LoaderContext,
  LockOptions,
  SetOptions,
} from './cacheOptions.js'
export { DEFAULT_CACHE_OPTIONS } from './cacheOptions.js'
export { createCache } from './createCache.js'
export type { Duration } from './duration.js'
export { parseDuration } from './duration.js'
export type { CacheErrorOptions } from './errors.js'
export {
  CacheClosedError,
  CacheError,
  DecodeError,
  errors,
  InvalidArgumentError,
  isCacheError,
  L2UnavailableError,
  LoaderTimeoutError,
  SerializationError,
} from './errors.js'
export type { L1Entry, L1Store } from './l1Store.js'
export type { LruStoreOptions } from './lruStore.js'
export { createLruStore, DEFAULT_LRU_STORE_OPTIONS, LRU_SLOT_BYTES } from './lruStore.js'
export type { NodeCacheStoreOptions } from './nodeCacheStore.js'
export { createNodeCacheStore, DEFAULT_NODE_CACHE_STORE_OPTIONS } from './nodeCacheStore.js'
export type { Serializer } from './serializer.js'
export { devalueSerializer, jsonSerializer } from './serializer.js'
export { TwoLevelCache } from './twoLevelCache.js'
