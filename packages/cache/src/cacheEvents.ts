/** State of the L2 circuit breaker (as `@ballast/resilience` names it). */
export type CircuitState = 'closed' | 'open' | 'halfOpen'

/** Why L1 of a namespace was emptied. */
export type FlushReason = 'clear' | 'gap' | 'resubscribed' | 'overflow'

/** Why a stale value was served. */
export type StaleReason = 'load-failed' | 'soft-timeout' | 'l2-unavailable'

/** Payload of `l2-failed`: an L2 call failed or timed out; the cache degraded as documented. */
export interface L2FailedEvent {
  /** The cache operation that called L2 (`get`, `mget`, `set`, `cas`, `publish`, ...). */
  operation: string
  /** The failure, usually an `L2UnavailableError` with the client's error as `cause`. */
  error: Error
}

/**
 * Payload of `breaker-changed`: an L2 circuit breaker changed state. A standalone Redis has one
 * breaker; a Redis Cluster has one per master node, so a dead master opens only its own.
 */
export interface BreakerChangedEvent {
  /** The new state. */
  state: CircuitState
  /** The Redis node whose breaker it is, `host:port` (as the Cluster client's slots table names it). */
  node: string
}

/** Payload of `bus-disconnected`: the invalidation subscription is lost or silent; L1 is not trusted until it returns. */
export interface BusDisconnectedEvent {
  /** What was noticed. */
  reason: string
}

/** Payload of `bus-connected`: the invalidation subscription works again (L1 was flushed first). */
export type BusConnectedEvent = Record<string, never>

/**
 * Payload of `bus-message-rejected`: a message on the invalidation channel was dropped,
 * malformed (anyone with access to Redis can publish there) or its handling failed. Counted in
 * `stats().bus.rejected`.
 */
export interface BusMessageRejectedEvent {
  /** What was wrong with it, such as `bad keys` or `not JSON`. */
  reason: string
}

/**
 * Payload of `decode-failed`: an L2 value could not be decoded (not an envelope of this cache,
 * written with another serializer, or the serializer threw) and was treated as a miss. Counted
 * in `stats().l2.decodeFailed`.
 */
export interface DecodeFailedEvent {
  /** The key. */
  key: string
  /** Why it could not be decoded: a `DecodeError`. */
  error: Error
}

/** Payload of `l1-flushed`: L1 was emptied. */
export interface L1FlushedEvent {
  /** Why. */
  reason: FlushReason
}

/** Payload of `stale-served`: a stale value (within grace) was served. */
export interface StaleServedEvent {
  /** The key. */
  key: string
  /** Why the stale value was served instead of a fresh one. */
  reason: StaleReason
}

/** Payload of `load-failed`: a loader threw (or its result was refused). Counted in `stats().loader.failed`. */
export interface LoadFailedEvent {
  /** The key being loaded. */
  key: string
  /** What the loader threw. */
  error: unknown
}

/** Payload of `invalidated`: another instance invalidated keys, tags or the namespace. */
export interface InvalidatedEvent {
  /** The id of the instance that sent it. */
  origin: string
  /** The keys invalidated, for a set or delete. */
  keys?: readonly string[]
  /** The tags invalidated, for a deleteByTag. */
  tags?: readonly string[]
  /** True for a clear of the namespace. */
  clear?: boolean
}

/** Payload of `conflict-detected`: a fill was not written back because the key changed while it loaded. */
export interface ConflictDetectedEvent {
  /** The key. */
  key: string
}

/** Payload of `invalidations-replayed`: invalidations made during an L2 outage were replayed. */
export interface InvalidationsReplayedEvent {
  /** How many keys were invalidated. */
  keys: number
  /** How many tags were invalidated. */
  tags: number
  /** Whether the replay was a clear of the namespace (too many to replay one by one). */
  clear: boolean
}

/** The events of a cache, by name, with their payloads. */
export interface CacheEvents {
  /** An L2 call failed or timed out; the cache degraded as documented. */
  'l2-failed': L2FailedEvent
  /** The L2 circuit breaker changed state. */
  'breaker-changed': BreakerChangedEvent
  /** The invalidation subscription is lost or silent: L1 is not trusted until it returns. */
  'bus-disconnected': BusDisconnectedEvent
  /** The invalidation subscription works again (L1 was flushed first). */
  'bus-connected': BusConnectedEvent
  /** A message on the invalidation channel was dropped. */
  'bus-message-rejected': BusMessageRejectedEvent
  /** An L2 value could not be decoded and was treated as a miss. */
  'decode-failed': DecodeFailedEvent
  /** L1 was emptied. */
  'l1-flushed': L1FlushedEvent
  /** A stale value (within grace) was served. */
  'stale-served': StaleServedEvent
  /** A loader threw. */
  'load-failed': LoadFailedEvent
  /** Another instance invalidated keys, tags or the namespace. */
  invalidated: InvalidatedEvent
  /** A fill was not written back because the key changed while it loaded (versioned write). */
  'conflict-detected': ConflictDetectedEvent
  /** Invalidations made during an L2 outage were replayed. */
  'invalidations-replayed': InvalidationsReplayedEvent
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
    failed: number
    /** L2 values that could not be decoded and were treated as misses. */
    decodeFailed: number
  }
  /** Loader calls and their failures. */
  loader: {
    /** Loader calls (a batch loader call counts once). */
    calls: number
    /** Loads whose value was accepted and cached (in L1, and in L2 if it answered); a batch load counts once per key, as `failed` does. */
    succeeded: number
    /** Loader calls that threw or whose value was refused (a batch load counts once per key). */
    failed: number
    /** Waits that hit the hard timeout. */
    timedOut: number
  }
  /** Stale values served (fail-safe and stale-while-revalidate). */
  staleServed: number
  /** Calls that joined a load already in flight instead of starting one. */
  coalesced: number
  /** Waits of `getOrSet(..., { lock: true })` for another instance's load (the lock was held). */
  lockWaits: number
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
    /** Invalidation messages (keys, tags, clear; not heartbeats) published. */
    invalidationsPublished: number
    /** Invalidation messages (keys, tags, clear; not heartbeats) received from other instances. */
    invalidationsReceived: number
    /** Times L1 was flushed (clear, gap, resubscription). */
    flushes: number
  }
  /**
   * The L2 breakers' worst state: `open` if any is open, else `halfOpen` if any is, else
   * `closed`. A standalone Redis has one breaker; a Cluster one per master node (see `breakers`).
   */
  breaker: CircuitState
  /**
   * Each L2 breaker's state by node (`host:port`): one entry for a standalone Redis, one per
   * master a Cluster has sent calls to (a node that no longer serves slots drops out). Empty
   * without L2.
   */
  breakers: Record<string, CircuitState>
  /** Invalidations waiting for L2 to return. */
  pendingInvalidations: number
  /** The namespace generation this instance reads and writes (moved by `clear()`). */
  generation: number
}
