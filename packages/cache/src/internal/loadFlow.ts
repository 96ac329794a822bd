import type { CacheEvents, StaleReason } from '../cacheEvents.js'
import type { BatchLoader, Loader, LoaderContext } from '../cacheOptions.js'
import { LoaderTimeoutError } from '../errors.js'
import type { L1Entry, L1Store } from '../l1Store.js'
import { type Serializer, serializeOrThrow } from '../serializer.js'
import { keyFilled, type OutgoingMessage } from './busMessages.js'
import { exactNow, now } from './clock.js'
import type { CacheCounters } from './counters.js'
import type { PreparedWrite } from './entries.js'
import type { Envelope } from './envelope.js'
import type { InvalidationEpochs } from './invalidations.js'
import type { KeyNames } from './keys.js'
import type { L2Runner } from './l2.js'
import type { CallOptions, ResolvedOptions } from './options.js'
import { type CacheTelemetry, L2_CALLS } from './telemetry.js'
import { argument } from './validate.js'

/** A value within grace that may be served if the loader or L2 fails. */
export interface Stale {
  value: unknown
}

/** What an L2 read found. */
export type L2Read =
  | { ok: true; token: string; envelope: Envelope | undefined; raw: string | null }
  | { ok: false; token: undefined; envelope?: undefined; raw?: undefined }

/** Settles a race against a timer: the load did not finish first. */
const TIMED_OUT = Symbol('timed out')

function delay<T>(ms: number, value: T): { promise: Promise<T>; cancel(): void } {
  let timer: NodeJS.Timeout | undefined
  const promise = new Promise<T>((resolve) => {
    timer = setTimeout(() => resolve(value), ms)
  })
  return { promise, cancel: () => clearTimeout(timer) }
}

/** What the load flow uses of the cache: its state, its L2 reads and its invalidations. */
export interface LoadHost {
  readonly options: ResolvedOptions
  readonly l1: L1Store | undefined
  readonly keys: KeyNames
  readonly epochs: InvalidationEpochs
  readonly counters: CacheCounters
  readonly serializer: Serializer
  /** The load span and histogram. */
  readonly telemetry: CacheTelemetry
  readonly hasL2: boolean
  readonly hasBloom: boolean
  readonly closed: boolean
  readL2(key: string): Promise<L2Read & { epoch: number }>
  fromL2(key: string, envelope: Envelope, epoch: number): unknown
  staleCandidate(
    key: string,
    envelope: Envelope | undefined,
    now: number,
    l2ok: boolean,
  ): Stale | undefined
  bloomMightContain(key: string): Promise<boolean>
  bloomAdd(keys: readonly string[]): Promise<void>
  run: L2Runner
  l2Failed(operation: string, error: unknown): void
  served(key: string, reason: StaleReason): void
  emit<E extends keyof CacheEvents>(event: E, payload: CacheEvents[E]): void
  tombstone(keys: readonly string[]): Promise<void>
  defer(keys: readonly string[], tags: readonly string[], clear: boolean): void
  publish(message: OutgoingMessage): Promise<void>
  token(): string
  prepareWrite(
    key: string,
    value: unknown,
    payload: string,
    negative: boolean,
    call: CallOptions,
    now: number,
  ): PreparedWrite
  l1Set(key: string, entry: L1Entry): void
}

/**
 * The load flow of `getOrSet` and `getOrSetMany`: one load per key per process at a time
 * (single flight), the lease lock across instances (`lock: true`) whose waiters are woken by
 * the holder's message, the soft and hard timeouts with the stale fallback (fail-safe), and
 * the versioned write-back of what was loaded.
 */
export class LoadFlow {
  readonly #host: LoadHost
  /** Calls of getOrSet in flight per key: the L2 read, the lock, then the load. */
  readonly #flights = new Map<string, Promise<unknown>>()
  /** Loader calls in flight per key, with their write-back. */
  readonly #loads = new Map<string, Promise<unknown>>()
  /** Waiters for a lock holder's value, per key. */
  readonly #fillWaiters = new Map<string, Set<() => void>>()

  constructor(host: LoadHost) {
    this.#host = host
  }

  /** Joins the flight of `key` in this process, or starts one. */
  getOrSet(key: string, loader: Loader<unknown>, call: CallOptions): Promise<unknown> {
    const running = this.#flights.get(key) ?? this.#loads.get(key)
    if (running !== undefined) {
      this.#host.counters.coalesced++
      return running
    }
    const flight = this.#flight(key, loader, call)
    this.#flights.set(key, flight)
    const forget = () => {
      if (this.#flights.get(key) === flight) this.#flights.delete(key)
    }
    flight.then(forget, forget)
    return flight
  }

  /** The load or flight of `key` already running in this process, to join. */
  running(key: string): Promise<unknown> | undefined {
    return this.#loads.get(key) ?? this.#flights.get(key)
  }

  /**
   * One batch loader call for `keys` (found in neither level); each key is written back on its
   * own and settled with its own stale value. Adds each key's wait to `waits`.
   */
  loadBatch(
    keys: readonly string[],
    loader: BatchLoader<unknown>,
    call: CallOptions,
    tokens: ReadonlyMap<string, string | undefined>,
    stale: ReadonlyMap<string, Stale>,
    waits: Map<string, Promise<unknown>>,
  ): void {
    const startEpoch = this.#host.epochs.current
    const started = exactNow()
    this.#host.counters.loaderCalls++
    const batch = Promise.resolve().then(() =>
      this.#host.telemetry.load(keys.length, () => loader(keys)),
    )
    // an array result is read by position: one index for all keys, not an indexOf per key
    let positions: Map<string, number> | undefined
    const positionOf = (key: string): number => {
      if (positions === undefined) {
        positions = new Map()
        for (let i = 0; i < keys.length; i++) positions.set(keys[i] as string, i)
      }
      return positions.get(key) as number
    }
    for (const key of keys) {
      const one = batch.then(async (result) => {
        const value = batchValue(result, key, positionOf)
        await this.#writeBack(key, value, call, tokens.get(key), started, startEpoch)
        return value
      })
      this.#track(key, one)
      waits.set(key, this.#settle(key, one, stale.get(key), call))
    }
  }

  /** Wakes every waiter (the cache is closing). */
  wakeAll(): void {
    for (const waiters of this.#fillWaiters.values()) for (const wake of waiters) wake()
    this.#fillWaiters.clear()
  }

  async #flight(key: string, loader: Loader<unknown>, call: CallOptions): Promise<unknown> {
    let read = await this.#host.readL2(key)
    let envelope = read.ok ? read.envelope : undefined
    let t = now()
    if (envelope !== undefined && envelope.kind !== 't' && envelope.freshUntil > t) {
      this.#host.counters.l2Hits++
      return this.#host.fromL2(key, envelope, read.epoch)
    }
    if (read.ok) this.#host.counters.l2Misses++
    if (!read.ok) {
      // L2 is down: an L1 entry still fresh (bus down, so not trusted) answers before the loader
      const entry = this.#host.l1?.get(key)
      if (entry !== undefined && entry.freshUntil > t) return entry.value
    }
    let stale = this.#host.staleCandidate(key, envelope, t, read.ok)

    if (
      stale === undefined &&
      this.#host.hasBloom &&
      read.ok &&
      !(await this.#host.bloomMightContain(key))
    ) {
      return undefined
    }

    let owner: string | undefined
    if (call.lock && read.ok) {
      const deadline = Date.now() + this.#host.options.lockWait
      owner = this.#host.token()
      for (;;) {
        const acquired = await this.#host
          .run(L2_CALLS.lock, this.#host.keys.lock(key), (l2) =>
            l2.acquire(this.#host.keys.lock(key), owner as string, this.#host.options.lockLease),
          )
          .catch(() => undefined)
        if (acquired === undefined) {
          owner = undefined // L2 failed: load without the lock
          break
        }
        if (!acquired) {
          this.#host.counters.lockWaits++
          await this.#waitForFill(
            key,
            Math.max(1, Math.min(deadline - Date.now(), this.#host.options.lockLease)),
          )
        }
        // re-read: after a wake (the holder stored the value), or after acquiring (a previous holder may have)
        read = await this.#host.readL2(key)
        envelope = read.ok ? read.envelope : undefined
        t = now()
        if (envelope !== undefined && envelope.kind !== 't' && envelope.freshUntil > t) {
          if (acquired) await this.#releaseLock(key, owner as string, false)
          this.#host.counters.l2Hits++
          return this.#host.fromL2(key, envelope, read.epoch)
        }
        stale = this.#host.staleCandidate(key, envelope, t, read.ok) ?? stale
        if (acquired || !read.ok) {
          if (!acquired) owner = undefined
          break
        }
        if (Date.now() >= deadline) {
          owner = undefined // waited long enough: load without the lock
          break
        }
      }
    }

    const load = this.#load(key, loader, call, read.token, stale)
    if (owner !== undefined) {
      const lockOwner = owner
      load.then(
        () => this.#releaseLock(key, lockOwner, true),
        () => this.#releaseLock(key, lockOwner, true),
      )
    }
    return this.#settle(key, load, stale, call)
  }

  /** Starts (or joins) the one load of `key` in this process; it writes back when done. */
  #load(
    key: string,
    loader: Loader<unknown>,
    call: CallOptions,
    observed: string | undefined,
    stale: Stale | undefined,
  ): Promise<unknown> {
    const running = this.#loads.get(key)
    if (running !== undefined) return running
    const started = exactNow()
    const startEpoch = this.#host.epochs.current
    const context: LoaderContext<unknown> = {
      key,
      staleValue: stale?.value,
      ttl: call.ttl,
      tags: call.tags,
    }
    this.#host.counters.loaderCalls++
    const load = (async () => {
      const value = await this.#host.telemetry.load(undefined, () => loader(context))
      const ttl = argument.duration('context.ttl', context.ttl, { positive: true })
      await this.#writeBack(
        key,
        value,
        { ...call, ttl, tags: context.tags },
        observed,
        started,
        startEpoch,
      )
      return value
    })()
    this.#track(key, load)
    return load
  }

  #track(key: string, load: Promise<unknown>): void {
    this.#loads.set(key, load)
    const forget = () => {
      if (this.#loads.get(key) === load) this.#loads.delete(key)
    }
    load.then(
      () => {
        forget()
        this.#host.counters.loaderSucceeded++
      },
      (error: unknown) => {
        forget()
        this.#host.counters.loaderFailed++
        this.#host.emit('load-failed', { key, error })
      },
    )
  }

  /** Waits for a load with the soft/hard timeouts and serves the stale value on failure (fail-safe). */
  async #settle(
    key: string,
    load: Promise<unknown>,
    stale: Stale | undefined,
    call: CallOptions,
  ): Promise<unknown> {
    if (stale !== undefined) {
      if (call.softTimeout === 0) {
        // stale-while-revalidate: the load goes on in the background
        this.#host.served(key, 'soft-timeout')
        return stale.value
      }
      const timer = delay(call.softTimeout, TIMED_OUT)
      try {
        const first = await Promise.race([load, timer.promise])
        if (first === TIMED_OUT) {
          this.#host.served(key, 'soft-timeout')
          return stale.value
        }
        return first
      } catch {
        this.#host.served(key, 'load-failed')
        return stale.value
      } finally {
        timer.cancel()
      }
    }
    if (call.hardTimeout === 0) return load
    const timer = delay(call.hardTimeout, TIMED_OUT)
    try {
      const first = await Promise.race([load, timer.promise])
      if (first === TIMED_OUT) {
        this.#host.counters.loaderTimedOut++
        throw new LoaderTimeoutError(
          `the loader of key ${JSON.stringify(key)} did not finish within ${call.hardTimeout} ms`,
        )
      }
      return first
    } finally {
      timer.cancel()
    }
  }

  /** Refreshes `key` in the background (early refresh), unless it is loading already. */
  refreshInBackground(key: string, loader: Loader<unknown>, call: CallOptions): void {
    if (this.#loads.has(key) || this.#flights.has(key) || this.#host.closed) return
    const refresh = (async () => {
      const read = await this.#host.readL2(key)
      const envelope = read.ok ? read.envelope : undefined
      const t = now()
      if (
        envelope !== undefined &&
        envelope.kind === 'v' &&
        envelope.refreshAt > t &&
        envelope.freshUntil > t
      ) {
        // another instance refreshed it already
        this.#host.fromL2(key, envelope, read.epoch)
        return
      }
      await this.#load(key, loader, call, read.token, undefined)
    })()
    refresh.catch(() => {
      // counted and emitted by #track; the cached value keeps serving until it expires
    })
  }

  /** Writes a loaded value: L2 first, only if the key is unchanged since the load began; then L1. */
  async #writeBack(
    key: string,
    value: unknown,
    call: CallOptions,
    observed: string | undefined,
    started: number,
    startEpoch: number,
  ): Promise<void> {
    const negative = value === undefined
    const payload = negative ? '' : serializeOrThrow(this.#host.serializer, key, value)
    const t = exactNow()
    const write = this.#host.prepareWrite(key, value, payload, negative, call, t)
    if (observed !== undefined && this.#host.hasL2) {
      if (t - started >= this.#host.options.tombstoneTtl) {
        // a tombstone left by a delete during this load may be gone: we cannot tell, so do not write
        this.#host.counters.conflicts++
        this.#host.emit('conflict-detected', { key })
        return
      }
      try {
        if (call.tags !== undefined && call.tags.length > 0) {
          const tags = call.tags
          // tags on several nodes count against the first tag's node (see L2Guards)
          await this.#host.run(L2_CALLS.tag, this.#host.keys.tag(tags[0] as string), (l2) =>
            l2.addTags(this.#host.keys.tagMembers([{ tags, key, px: write.px }], t), t),
          )
        }
        const entryKey = this.#host.keys.entry(key)
        const written = await this.#host.run(L2_CALLS.cas, entryKey, (l2) =>
          l2.cas(entryKey, observed, write.text, write.px),
        )
        if (!written) {
          this.#host.counters.conflicts++
          this.#host.emit('conflict-detected', { key })
          return
        }
        if (!negative && this.#host.hasBloom)
          await this.#host.bloomAdd([key]).catch(() => undefined)
      } catch (error) {
        this.#host.l2Failed('cas', error)
      }
    }
    if (this.#host.epochs.stillValid(key, call.tags, startEpoch)) this.#host.l1Set(key, write.entry)
    else if (
      observed !== undefined &&
      call.tags !== undefined &&
      this.#host.epochs.tagInvalidatedSince(call.tags, startEpoch)
    ) {
      // a deleteByTag reached us while this load ran: its value may predate it, and if the
      // tombstone cannot be written now it is replayed like any failed invalidation
      await this.#host.tombstone([key]).catch((error: unknown) => {
        this.#host.l2Failed('delete', error)
        this.#host.defer([key], [], false)
      })
    }
  }

  // ---------------------------------------------------------------- the distributed lock

  #waitForFill(key: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      let set = this.#fillWaiters.get(key)
      if (set === undefined) {
        set = new Set()
        this.#fillWaiters.set(key, set)
      }
      const timer = setTimeout(() => wake(), ms)
      const wake = () => {
        clearTimeout(timer)
        set.delete(wake)
        if (set.size === 0 && this.#fillWaiters.get(key) === set) this.#fillWaiters.delete(key)
        resolve()
      }
      set.add(wake)
    })
  }

  /** Wakes the waiters of a lock holder's value for `keys`. */
  wake(keys: readonly string[]): void {
    for (const key of keys) {
      const waiters = this.#fillWaiters.get(key)
      if (waiters !== undefined) for (const wake of [...waiters]) wake()
    }
  }

  async #releaseLock(key: string, owner: string, announce: boolean): Promise<void> {
    try {
      const lockKey = this.#host.keys.lock(key)
      await this.#host.run(L2_CALLS.unlock, lockKey, (l2) => l2.release(lockKey, owner))
      if (announce) await this.#host.publish(keyFilled(key))
    } catch (error) {
      this.#host.l2Failed('unlock', error) // the lease expires by itself
    }
  }
}

/** The value of `key` in a batch loader's result: a Map, an array in the order of the keys, or a plain object. */
function batchValue(
  result: Map<string, unknown> | Record<string, unknown> | readonly unknown[],
  key: string,
  positionOf: (key: string) => number,
): unknown {
  if (result instanceof Map) return result.get(key)
  if (Array.isArray(result)) return result[positionOf(key)]
  if (typeof result === 'object' && result !== null) {
    return Object.hasOwn(result, key) ? (result as Record<string, unknown>)[key] : undefined
  }
  return undefined
}
