/** State of the L2 circuit breaker (as `@ballast/resilience` names it). */
export type CircuitState = 'closed' | 'open' | 'halfOpen'

/** Why L1 of a namespace was emptied. */
export type FlushReason = 'clear' | 'gap' | 'resubscribed' | 'overflow'

/** Why a stale value was served. */
export type StaleReason = 'loader-error' | 'soft-timeout' | 'l2-unavailable'

/** The events of a cache, by name, with their payloads. */
export interface CacheEvents {
  /** An L2 call failed or timed out; the cache degraded as documented. */
  'l2:error': {
    /** The cache operation that called L2 (`get`, `mget`, `set`, `cas`, `publish`, ...). */
    operation: string
    /** The failure, usually an `L2UnavailableError` with the client's error as `cause`. */
    error: Error
  }
  /** The L2 circuit breaker changed state. */
  breaker: {
    /** The new state. */
    state: CircuitState
  }
  /** The invalidation subscription is lost or silent: L1 is not trusted until it returns. */
  'bus:down': {
    /** What was noticed. */
    reason: string
  }
  /**
   * A message on the invalidation channel was dropped: malformed (anyone with access to
   * Redis can publish there), or its handling failed. Counted in `stats().bus.rejected`.
   */
  'bus:rejected': {
    /** What was wrong with it, such as `bad keys` or `not JSON`. */
    reason: string
  }
  /**
   * An L2 value could not be decoded (not an envelope of this cache, written with another
   * serializer, or the serializer threw): it was treated as a miss. Counted in
   * `stats().l2.decodeErrors`.
   */
  'decode:error': {
    /** The key. */
    key: string
    /** Why it could not be decoded. */
    error: Error
  }
  /** The invalidation subscription works again (L1 was flushed first). */
  'bus:up': Record<string, never>
  /** L1 was emptied. */
  'l1:flush': {
    /** Why. */
    reason: FlushReason
  }
  /** A stale value (within grace) was served. */
  stale: {
    /** The key. */
    key: string
    /** Why the stale value was served instead of a fresh one. */
    reason: StaleReason
  }
  /** A loader threw or timed out. */
  'loader:error': {
    /** The key being loaded. */
    key: string
    /** What the loader threw. */
    error: unknown
  }
  /** Another instance invalidated keys, tags or the namespace. */
  invalidation: {
    /** The id of the instance that sent it. */
    origin: string
    /** The keys invalidated, for a set or delete. */
    keys?: readonly string[]
    /** The tags invalidated, for a deleteByTag. */
    tags?: readonly string[]
    /** True for a clear of the namespace. */
    clear?: boolean
  }
  /** A fill was not written back because the key changed while it loaded (versioned write). */
  conflict: {
    /** The key. */
    key: string
  }
  /** Invalidations made during an L2 outage were replayed. */
  replayed: {
    /** How many keys were invalidated. */
    keys: number
    /** How many tags were invalidated. */
    tags: number
    /** Whether the replay was a clear of the namespace (too many to replay one by one). */
    clear: boolean
  }
}

/** Counters since creation, from `stats()`. */
export interface CacheStats {
  /** L1 counters and what it holds now. */
  l1: {
    /** Reads answered by L1. */
    hits: number
    /** Reads L1 could not answer. */
    misses: number
    /** Entries held now. */
    entries: number
    /** Approximate bytes held now. */
    bytes: number
    /** The engine's name. */
    engine: string
  }
  /** L2 counters. */
  l2: {
    /** Reads answered by L2. */
    hits: number
    /** Reads L2 could not answer. */
    misses: number
    /** L2 calls that failed or timed out. */
    errors: number
    /** L2 values that could not be decoded and were treated as misses. */
    decodeErrors: number
  }
  /** Loader calls and their failures. */
  loader: {
    /** Loader calls (a batch loader call counts once). */
    calls: number
    /** Loader calls that threw. */
    errors: number
    /** Waits that hit the hard timeout. */
    timeouts: number
  }
  /** Stale values served (fail-safe and stale-while-revalidate). */
  staleServed: number
  /** Calls that joined a load already in flight instead of starting one. */
  coalesced: number
  /** Fills not written back because the key changed meanwhile. */
  conflicts: number
  /** Invalidation bus counters. */
  bus: {
    /** Whether the subscription works now (own heartbeats come back). */
    healthy: boolean
    /** Messages published. */
    published: number
    /** Messages received from other instances. */
    received: number
    /** Gaps seen in other instances' sequence numbers. */
    gaps: number
    /** Messages dropped because they were malformed or their handling failed. */
    rejected: number
    /** Times L1 was flushed (clear, gap, resubscription). */
    flushes: number
  }
  /** The L2 breaker's state. */
  breaker: CircuitState
  /** Invalidations waiting for L2 to return. */
  pendingInvalidations: number
  /** The namespace generation this instance reads and writes (moved by `clear()`). */
  generation: number
}
