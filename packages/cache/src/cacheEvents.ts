/** State of the L2 circuit breaker (as `@ballast/resilience` names it). */
export type CircuitState = 'closed' | 'open' | 'halfOpen'

/** Why L1 of a namespace was emptied. */
export type FlushReason = 'clear' | 'gap' | 'resubscribed' | 'overflow'

/** Why a stale value was served. */
export type StaleReason = 'loader-error' | 'soft-timeout' | 'l2-unavailable'

/** The events of a cache, by name, with their payloads. */
export interface CacheEvents {
  /** An L2 call failed or timed out; the cache degraded as documented. */
  'l2:error': { operation: string; error: Error }
  /** The L2 circuit breaker changed state. */
  breaker: { state: CircuitState }
  /** The invalidation subscription is lost or silent: L1 is not trusted until it returns. */
  'bus:down': { reason: string }
  /** The invalidation subscription works again (L1 was flushed first). */
  'bus:up': Record<string, never>
  /** L1 was emptied. */
  'l1:flush': { reason: FlushReason }
  /** A stale value (within grace) was served. */
  stale: { key: string; reason: StaleReason }
  /** A loader threw or timed out. */
  'loader:error': { key: string; error: unknown }
  /** Another instance invalidated keys, tags or the namespace. */
  invalidation: {
    origin: string
    keys?: readonly string[]
    tags?: readonly string[]
    clear?: boolean
  }
  /** A fill was not written back because the key changed while it loaded (versioned write). */
  conflict: { key: string }
  /** Invalidations made during an L2 outage were replayed. */
  replayed: { keys: number; tags: number; clear: boolean }
}

/** Counters since creation, from `stats()`. */
export interface CacheStats {
  /** L1 counters and what it holds now. */
  l1: { hits: number; misses: number; entries: number; bytes: number; engine: string }
  /** L2 counters. */
  l2: { hits: number; misses: number; errors: number }
  /** Loader calls and their failures. */
  loader: { calls: number; errors: number; timeouts: number }
  /** Stale values served (fail-safe and stale-while-revalidate). */
  staleServed: number
  /** Calls that joined a load already in flight instead of starting one. */
  coalesced: number
  /** Fills not written back because the key changed meanwhile. */
  conflicts: number
  /** Invalidation bus counters; `healthy` false while the subscription is lost. */
  bus: { healthy: boolean; published: number; received: number; gaps: number; flushes: number }
  /** The L2 breaker's state. */
  breaker: CircuitState
  /** Invalidations waiting for L2 to return. */
  pendingInvalidations: number
}
