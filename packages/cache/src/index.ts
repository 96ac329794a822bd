export {
  type Duration,
  parseDuration,
  type TelemetryOptions,
  type Unsubscribe,
} from '@ballast/shared'
export type {
  BreakerChangedEvent,
  BusConnectedEvent,
  BusDisconnectedEvent,
  BusMessageRejectedEvent,
  CacheEvents,
  CacheStats,
  CircuitState,
  ConflictDetectedEvent,
  DecodeFailedEvent,
  FlushReason,
  InvalidatedEvent,
  InvalidationsReplayedEvent,
  L1FlushedEvent,
  L2FailedEvent,
  LoadFailedEvent,
  StaleReason,
  StaleServedEvent,
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
export {
  DEFAULT_BLOOM_OPTIONS,
  DEFAULT_CACHE_OPTIONS,
  DEFAULT_GET_OR_SET_OPTIONS,
  DEFAULT_L2_BREAKER_OPTIONS,
  DEFAULT_LOCK_OPTIONS,
} from './cacheOptions.js'
export { createCache } from './createCache.js'
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
