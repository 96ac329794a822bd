/** The cache's own counters since creation (the bus counts its messages itself). */
export interface CacheCounters {
  l1Hits: number
  l1Misses: number
  l2Hits: number
  l2Misses: number
  l2Failed: number
  decodeFailed: number
  loaderCalls: number
  loaderSucceeded: number
  loaderFailed: number
  loaderTimedOut: number
  staleServed: number
  coalesced: number
  lockWaits: number
  conflicts: number
  flushes: number
}

export function createCounters(): CacheCounters {
  return {
    l1Hits: 0,
    l1Misses: 0,
    l2Hits: 0,
    l2Misses: 0,
    l2Failed: 0,
    decodeFailed: 0,
    loaderCalls: 0,
    loaderSucceeded: 0,
    loaderFailed: 0,
    loaderTimedOut: 0,
    staleServed: 0,
    coalesced: 0,
    lockWaits: 0,
    conflicts: 0,
    flushes: 0,
  }
}
