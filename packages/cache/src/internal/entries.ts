import type { L1Entry, L1Store } from '../l1Store.js'
import { encodeEnvelope } from './envelope.js'
import type { CallOptions } from './options.js'

const ONE_BYTE = /^[\0-\xff]*$/

/** Approximate heap bytes of an L1 entry. */
export function entryBytes(
  key: string,
  value: unknown,
  payload: string,
  tags: readonly string[] | undefined,
): number {
  // Calibrated on Node 24 under churn (bench/cache/memory.bench.ts): ~300 bytes of entry,
  // version token, LRU slot and map bookkeeping, the key, and the live value: a string as
  // V8 stores it (one byte a character unless it needs two), anything else at about twice
  // its serialized length.
  let bytes = 300 + key.length
  if (typeof value === 'string')
    bytes += 16 + (ONE_BYTE.test(value) ? value.length : 2 * value.length)
  else bytes += 2 * payload.length
  if (tags !== undefined) for (const tag of tags) bytes += 24 + tag.length
  return bytes
}

/** A write, ready for both levels: the L1 entry, the L2 envelope text and its L2 lifetime (ms). */
export interface PreparedWrite {
  entry: L1Entry
  text: string
  px: number
}

/** How the cache's options shape every write. */
export interface WritePolicy {
  jitter: number
  earlyRefresh: number
}

/**
 * The L1 entry and L2 text of a write made at `now`: the TTL with jitter (a negative entry
 * takes `negativeTtl` and no grace), and `version`, unique per write.
 */
export function prepareWrite(
  key: string,
  value: unknown,
  payload: string,
  negative: boolean,
  call: CallOptions,
  now: number,
  policy: WritePolicy,
  version: string,
): PreparedWrite {
  const ttl = negative
    ? call.negativeTtl
    : Math.max(1, Math.round(call.ttl * (1 - policy.jitter * Math.random())))
  const grace = negative ? 0 : call.grace
  const freshUntil = now + ttl
  const staleUntil = freshUntil + grace
  const refreshAt =
    !negative && policy.earlyRefresh > 0
      ? now + ttl * policy.earlyRefresh
      : Number.POSITIVE_INFINITY
  const text = encodeEnvelope(
    negative ? 'n' : 'v',
    version,
    freshUntil,
    staleUntil,
    refreshAt,
    call.tags,
    payload,
  )
  return {
    entry: {
      value: negative ? undefined : value,
      freshUntil,
      staleUntil,
      refreshAt,
      tags: call.tags,
      negative,
      version,
      size: entryBytes(key, value, payload, call.tags),
      promise: undefined,
    },
    text,
    px: Math.max(1, staleUntil - now),
  }
}

/** Stores an entry in L1 for as long as it may serve (nothing if it is already useless). */
export function storeInL1(l1: L1Store | undefined, key: string, entry: L1Entry, now: number): void {
  if (l1 === undefined) return
  const ttl = entry.staleUntil - now
  if (ttl <= 0) return
  l1.set(key, entry, ttl)
}
