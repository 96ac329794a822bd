/**
 * What L1 keeps per key. The cache builds these; a custom {@link L1Store} only stores them
 * and reads {@link L1Entry.size} for its byte bound.
 */
export interface L1Entry {
  /** The cached value (`undefined` for a negative entry). Shared by reference: do not mutate it. */
  readonly value: unknown
  /** Wall-clock ms after which the entry is stale (served only as a fallback, within grace). */
  readonly freshUntil: number
  /** Wall-clock ms after which the entry is useless, even as a fallback. */
  readonly staleUntil: number
  /** Wall-clock ms after which a read starts a background refresh (`Infinity`: never). */
  readonly refreshAt: number
  /** The entry's tags, for `deleteByTag`. */
  readonly tags: readonly string[] | undefined
  /** True when the entry records that the key does not exist (negative caching). */
  readonly negative: boolean
  /** The version of the L2 write this entry copies, so an invalidation for that same write can keep it. */
  readonly version: string | undefined
  /** Approximate bytes the entry holds (key, serialized value and bookkeeping). */
  readonly size: number
  /** A resolved promise of the value, made once on the first async hit and reused after. */
  promise: Promise<unknown> | undefined
}

/**
 * The L1 engine: a bounded in-process map. The cache checks freshness itself, so a store
 * only has to keep entries, evict under its bounds and report what it holds. Use
 * {@link createLruStore} (the default) or {@link createNodeCacheStore}, or write one.
 */
export interface L1Store {
  /** A short name, shown in `stats()`. */
  readonly name: string
  /** The entry of `key`, if held. Called on every hit: keep it cheap. */
  get(key: string): L1Entry | undefined
  /** Stores `entry`; `ttl` (ms) is when it may be dropped at the latest. May evict others. */
  set(key: string, entry: L1Entry, ttl: number): void
  /** Drops `key`. */
  delete(key: string): void
  /** Drops everything. */
  clear(): void
  /** Every key and entry held, for tag invalidation. */
  entries(): Iterable<[string, L1Entry]>
  /** Entries held. */
  readonly size: number
  /** Approximate bytes held (sum of {@link L1Entry.size}). */
  readonly bytes: number
  /** Releases timers, if the engine has any. */
  close?(): void
}
