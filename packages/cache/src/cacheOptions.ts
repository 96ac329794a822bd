import type { Duration, TelemetryOptions } from '@ballast/shared'
import type { Cluster, Redis } from 'ioredis'
import type { L1Store } from './l1Store.js'
import type { LruStoreOptions } from './lruStore.js'
import type { Serializer } from './serializer.js'

/**
 * Options of {@link createCache}. Durations are milliseconds or strings like `'15m'`.
 * `meterProvider` and `tracerProvider` (from the shared `TelemetryOptions`, both defaulting to
 * the global providers) receive the cache's metrics and the spans of its L2 calls and loads.
 */
export interface CacheOptions extends TelemetryOptions {
  /**
   * The L2 client: an ioredis `Redis` or `Cluster` you own (the cache never closes it). For
   * outages to cost no more than `l2Timeout`, create it with `enableOfflineQueue: false`.
   * Without it the cache is L1 only.
   * @default undefined (L1 only)
   */
  redis?: Redis | Cluster
  /**
   * The connection used for the invalidation subscription.
   * @default `redis.duplicate()` (with `shardedSubscribers: true` on a Cluster), closed by `close()`
   */
  subscriber?: Redis | Cluster
  /**
   * The namespace: keys, tags, `clear()` and invalidation messages are scoped to it. No `:`,
   * whitespace or braces (`'a'` and `'a:0:e'` would share keys).
   * @default 'default'
   */
  namespace?: string
  /**
   * The prefix of every Redis key and channel the cache uses.
   * @default 'ballast:cache'
   */
  prefix?: string
  /**
   * How long a value is fresh.
   * @default 60000 (1 minute)
   */
  ttl?: Duration
  /**
   * How long after `ttl` an expired value is kept to be served when the loader fails, times
   * out (see `softTimeout`) or L2 is down (fail-safe). 0 turns fail-safe off.
   * @default 0
   */
  grace?: Duration
  /**
   * Share of the TTL removed at random from each write, so keys written together do not
   * expire together (avalanche). 0.1 means a TTL between 90% and 100% of `ttl`.
   * @default 0.1
   */
  jitter?: number
  /**
   * How long "the loader found nothing" (it returned `undefined`) is cached (penetration).
   * @default 10000 (10 seconds)
   */
  negativeTtl?: Duration
  /**
   * Share of the TTL after which a hit through `getOrSet` refreshes the value in the
   * background (the caller still gets the cached value at once). 0 turns it off.
   * @default 0
   */
  earlyRefresh?: number
  /**
   * With a stale value at hand (within grace), how long `getOrSet` waits for the loader
   * before returning the stale value; the loader goes on in the background.
   * @default 0 (return the stale value at once: stale-while-revalidate)
   */
  softTimeout?: Duration
  /**
   * With no stale value at hand, how long `getOrSet` waits for the loader before rejecting
   * with `LoaderTimeoutError`. 0 waits as long as the loader takes.
   * @default 0
   */
  hardTimeout?: Duration
  /**
   * The L1 engine, or the bounds of the default one. `false`: no L1.
   * @default createLruStore({ maxEntries: 10000, maxBytes: 64 MiB })
   */
  l1?: L1Store | LruStoreOptions | false
  /**
   * How values are turned into strings for L2 and sized for L1. Its `name` is written with
   * every value, so an instance with another serializer reads such a value as a miss.
   * @default devalueSerializer (Date, BigInt, Map, Set, undefined round-trip)
   */
  serializer?: Serializer
  /**
   * Longest key accepted, in characters.
   * @default 1024
   */
  maxKeyLength?: number
  /**
   * Longest wait for one Redis call; after it the call counts as failed.
   * @default 250
   */
  l2Timeout?: Duration
  /**
   * The L2 circuit breaker (`@ballast/resilience`): while open, L2 calls fail in
   * microseconds instead of waiting for `l2Timeout`.
   * @default { windowSize: 20, errorThresholdPercentage: 50, volumeThreshold: 5, resetTimeout: 1000 }
   */
  breaker?: L2BreakerOptions
  /**
   * How often each instance checks its invalidation subscription by echoing a heartbeat.
   * @default 1000
   */
  heartbeatInterval?: Duration
  /**
   * After this long without its heartbeat echo, an instance stops trusting its L1 (reads go
   * to L2) and flushes L1 when the subscription works again.
   * @default 3000
   */
  heartbeatTimeout?: Duration
  /**
   * How long a delete leaves a tombstone in L2, which stops a fill that started before the
   * delete from writing its old value back. A fill that takes longer is not written back.
   * @default 60000
   */
  tombstoneTtl?: Duration
  /**
   * Distributed lock of `getOrSet(..., { lock: true })`: `lease` bounds how long a crashed
   * holder blocks others; `wait` how long others wait before loading anyway.
   * @default { lease: 10000, wait: 10000 }
   */
  lock?: LockOptions
  /**
   * A Bloom filter of keys that exist, shared in Redis, checked before a loader is called
   * for a key that is in neither level. Keys enter it through `set`, fills, and
   * `addToFilter` (seed it with your existing ids: a key that never entered it is
   * reported as absent).
   * @default false
   */
  bloom?: false | BloomOptions
  /**
   * Invalidations that could not reach L2 (an outage, one timed-out call) are replayed: after
   * `breaker.resetTimeout` and again after each failed replay, and when the breaker closes or
   * the bus comes back. L2 is not read while any wait. Past this many, the replay is a
   * `clear()` of the namespace.
   * @default 10000
   */
  maxPendingInvalidations?: number
}

/** The L2 circuit breaker's settings, passed to `@ballast/resilience`'s `circuitBreaker`. */
export interface L2BreakerOptions {
  /**
   * How many of the latest L2 calls the failure rate is measured over.
   * @default 20
   */
  windowSize?: number
  /**
   * The breaker opens when more than this percentage of the calls in the window failed.
   * @default 50
   */
  errorThresholdPercentage?: number
  /**
   * The breaker never opens while the window holds fewer calls than this.
   * @default 5
   */
  volumeThreshold?: number
  /**
   * How long the breaker stays open before a probe call is let through.
   * @default 1000
   */
  resetTimeout?: Duration
}

/** The distributed lock of `getOrSet(..., { lock: true })`. */
export interface LockOptions {
  /**
   * How long a lock is held at most; a holder that crashed blocks others no longer.
   * @default 10000
   */
  lease?: Duration
  /**
   * How long other instances wait for the holder before loading anyway.
   * @default 10000
   */
  wait?: Duration
}

/** The shared Bloom filter of keys that exist. */
export interface BloomOptions {
  /** How many keys the filter is sized for. */
  expectedItems: number
  /**
   * Chance that a key that never existed is reported as maybe existing (the loader then runs).
   * @default 0.01
   */
  falsePositiveRate?: number
}

/** The defaults of {@link L2BreakerOptions}. */
export const DEFAULT_L2_BREAKER_OPTIONS: Readonly<Required<L2BreakerOptions>> = Object.freeze({
  windowSize: 20,
  errorThresholdPercentage: 50,
  volumeThreshold: 5,
  resetTimeout: 1000,
})

/** The defaults of {@link LockOptions}. */
export const DEFAULT_LOCK_OPTIONS: Readonly<Required<LockOptions>> = Object.freeze({
  lease: 10_000,
  wait: 10_000,
})

/** The defaults of {@link BloomOptions} (`expectedItems` has none: it is required). */
export const DEFAULT_BLOOM_OPTIONS: Readonly<Required<Omit<BloomOptions, 'expectedItems'>>> =
  Object.freeze({ falsePositiveRate: 0.01 })

/** The shape of {@link DEFAULT_CACHE_OPTIONS}: every plain option with its default. */
export type CacheDefaults = Readonly<
  Required<
    Omit<
      CacheOptions,
      | 'redis'
      | 'subscriber'
      | 'l1'
      | 'serializer'
      | 'breaker'
      | 'lock'
      | 'meterProvider'
      | 'tracerProvider'
    >
  >
> & {
  readonly breaker: Readonly<Required<L2BreakerOptions>>
  readonly lock: Readonly<Required<LockOptions>>
}

/** The defaults of {@link CacheOptions} that are plain values (frozen). */
export const DEFAULT_CACHE_OPTIONS: CacheDefaults = Object.freeze({
  namespace: 'default',
  prefix: 'ballast:cache',
  ttl: 60_000,
  grace: 0,
  jitter: 0.1,
  negativeTtl: 10_000,
  earlyRefresh: 0,
  softTimeout: 0,
  hardTimeout: 0,
  maxKeyLength: 1024,
  l2Timeout: 250,
  breaker: DEFAULT_L2_BREAKER_OPTIONS,
  heartbeatInterval: 1000,
  heartbeatTimeout: 3000,
  tombstoneTtl: 60_000,
  lock: DEFAULT_LOCK_OPTIONS,
  bloom: false,
  maxPendingInvalidations: 10_000,
})

/** Per-write options of `set`, `setMany` and loaders' results. */
export interface SetOptions {
  /**
   * How long the value is fresh.
   * @default the cache's `ttl`
   */
  ttl?: Duration
  /**
   * How long after `ttl` it may be served as a fallback.
   * @default the cache's `grace`
   */
  grace?: Duration
  /**
   * Tags for `deleteByTag`.
   * @default none
   */
  tags?: readonly string[]
}

/** Options of `getOrSet` and `getOrSetMany`; the call that starts a load decides them for everyone waiting on it. */
export interface GetOrSetOptions extends SetOptions {
  /**
   * See {@link CacheOptions.softTimeout}.
   * @default the cache's `softTimeout`
   */
  softTimeout?: Duration
  /**
   * See {@link CacheOptions.hardTimeout}.
   * @default the cache's `hardTimeout`
   */
  hardTimeout?: Duration
  /**
   * Take a lease lock in Redis so one instance in the whole deployment calls the loader;
   * the others wait to be woken by its invalidation message, then read L2.
   * @default false
   */
  lock?: boolean
  /**
   * See {@link CacheOptions.negativeTtl}.
   * @default the cache's `negativeTtl`
   */
  negativeTtl?: Duration
}

/**
 * The defaults of {@link GetOrSetOptions} that are constants (frozen). The others default to
 * the cache's own settings (`ttl`, `grace`, `softTimeout`, `hardTimeout`, `negativeTtl`).
 */
export const DEFAULT_GET_OR_SET_OPTIONS: Readonly<Required<Pick<GetOrSetOptions, 'lock'>>> =
  Object.freeze({ lock: false })

/**
 * What a loader receives: the key, the stale value if one is at hand, and options it may
 * change from what it loaded (adaptive TTL and tags).
 */
export interface LoaderContext<T> {
  /** The key being loaded. */
  readonly key: string
  /** The expired value still within grace, if any. */
  readonly staleValue: T | undefined
  /** TTL of the value about to be cached, in ms; assign to change it. */
  ttl: number
  /** Tags of the value about to be cached; assign to change them. */
  tags: readonly string[] | undefined
}

/**
 * Loads one key from the source of truth. Return `undefined` when the key does not exist:
 * that is cached for `negativeTtl`. `getOrSet` returns what the loader's type says (a loader
 * typed `Promise<Product | undefined>` makes it `Promise<Product | undefined>`).
 */
export type Loader<T> = (context: LoaderContext<T>) => T | Promise<T>

/**
 * Loads many keys in one call. Return a `Map` or a plain object by key, or an array in the
 * order of `keys`; a missing key means "does not exist".
 */
export type BatchLoader<T> = (
  keys: readonly string[],
) =>
  | Map<string, T | undefined>
  | Record<string, T | undefined>
  | readonly (T | undefined)[]
  | Promise<Map<string, T | undefined> | Record<string, T | undefined> | readonly (T | undefined)[]>
