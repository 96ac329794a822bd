import { randomBytes } from 'node:crypto'
import { type Duration, Emitter, type TelemetryOptions, type Unsubscribe } from '@ballast/shared'
import type { CacheEvents, CacheStats, FlushReason, StaleReason } from './cacheEvents.js'
import type {
  BatchLoader,
  CacheOptions,
  GetOrSetOptions,
  Loader,
  SetOptions,
} from './cacheOptions.js'
import {
  CacheClosedError,
  DecodeError,
  InvalidArgumentError,
  L2UnavailableError,
} from './errors.js'
import { type BloomShape, bloomOffsets } from './internal/bloom.js'
import { Bus, type BusMessage } from './internal/bus.js'
import {
  keysInvalidated,
  MESSAGE_TYPE,
  type OutgoingMessage,
  tagsInvalidated,
} from './internal/busMessages.js'
import { exactNow, now } from './internal/clock.js'
import { type CacheCounters, createCounters } from './internal/counters.js'
import { entryBytes, type PreparedWrite, prepareWrite, storeInL1 } from './internal/entries.js'
import {
  decodeEnvelope,
  type Envelope,
  envelopeToken,
  SERIALIZER_MARK,
} from './internal/envelope.js'
import { InvalidationEpochs } from './internal/invalidations.js'
import { KeyNames, type TagWrite } from './internal/keys.js'
import { L2, type RedisClient } from './internal/l2.js'
import { L2Guards } from './internal/l2Guards.js'
import { L2Invalidations } from './internal/l2Invalidations.js'
import { type L2Read, LoadFlow, type Stale } from './internal/loadFlow.js'
import {
  type CallOptions,
  checkKey,
  type ResolvedOptions,
  resolveCallOptions,
  resolveOptions,
} from './internal/options.js'
import { CacheTelemetry, L2_CALLS, type L2Call, writeCall } from './internal/telemetry.js'
import { argument } from './internal/validate.js'
import type { L1Entry, L1Store } from './l1Store.js'
import { type Serializer, serializeOrThrow } from './serializer.js'

const MISSING = Symbol('missing')
/** A key L2 could not read (its node's breaker is open, or the call failed). */
const UNAVAILABLE: L2Read = Object.freeze({ ok: false, token: undefined })
const GET = (l2: L2, key: string) => l2.get(key)
const PUBLISH = (l2: L2, [channel, message]: [string, string]) => l2.publish(channel, message)

/** The entry's resolved promise, made on the first async hit and reused: a hit allocates nothing. */
function promiseOf(entry: L1Entry): Promise<unknown> {
  let promise = entry.promise
  if (promise === undefined) {
    promise = Promise.resolve(entry.value)
    entry.promise = promise
  }
  return promise
}

/**
 * A two-level cache: L1 in process, L2 in Redis (standalone or Cluster), invalidation of
 * every instance's L1 over pub/sub. Create it with {@link createCache}.
 *
 * @typeParam T The type of the values. Without it (`unknown`), `getOrSet` returns its loader's
 *   type and `get<Product>(key)` narrows a read.
 */
export class TwoLevelCache<T = unknown> {
  readonly #options: ResolvedOptions
  readonly #l1: L1Store | undefined
  readonly #l2: L2 | undefined
  /** The L2 breakers: one for a standalone Redis, one per master of a Cluster. */
  readonly #guards: L2Guards | undefined
  readonly #bus: Bus | undefined
  readonly #serializer: Serializer
  readonly #bloom: BloomShape | undefined
  readonly #events = new Emitter<CacheEvents>()
  readonly #instanceId = randomBytes(6).toString('base64url')
  /** Redis key names; their generation moves with `clear()`. */
  readonly #keys: KeyNames
  #tokenCounter = 0

  /** L1 may answer on its own: no bus, or a bus that is working. */
  #l1Trusted: boolean
  #generationLoad: Promise<void> | undefined
  #closed = false

  /** Local invalidation bookkeeping: a fill that started before an invalidation may not write L1. */
  readonly #epochs = new InvalidationEpochs()
  /** Tombstones, tag deletion, clears, and the replay of those that could not reach L2. */
  readonly #l2Invalidations: L2Invalidations

  readonly #counters: CacheCounters = createCounters()
  /** Spans of L2 calls and loads, the load histogram, and the instruments read from stats(). */
  readonly #telemetry: CacheTelemetry
  /** The `meterProvider` and `tracerProvider` given (the L2 breakers report through them too). */
  readonly #providers: TelemetryOptions
  /** Single flight, locks and write-back of getOrSet and getOrSetMany. */
  readonly #loadFlow: LoadFlow

  /** Use {@link createCache}. */
  constructor(options: CacheOptions = {}) {
    const resolved = resolveOptions(options)
    this.#options = resolved.options
    this.#serializer = resolved.serializer
    this.#l1 = resolved.l1
    this.#bloom = resolved.bloom
    this.#keys = new KeyNames(this.#options.prefix, this.#options.namespace)
    this.#providers = resolved.telemetry
    this.#telemetry = new CacheTelemetry(
      resolved.telemetry,
      this.#options.namespace,
      resolved.l2?.redis,
    )
    this.#telemetry.observe(() => this.stats(), resolved.l2 !== undefined)
    this.#l2Invalidations = this.#createL2Invalidations()
    this.#loadFlow = this.#createLoadFlow(resolved.l2 !== undefined)

    const l2 = resolved.l2
    if (l2 === undefined) {
      this.#l2 = undefined
      this.#guards = undefined
      this.#bus = undefined
      this.#l1Trusted = true
      return
    }
    const redis = l2.redis
    const l2Client = new L2(redis)
    this.#l2 = l2Client
    const publishCall = l2Client.isCluster ? L2_CALLS.spublish : L2_CALLS.publish
    const heartbeatCall = l2Client.isCluster ? L2_CALLS.sheartbeat : L2_CALLS.heartbeat
    this.#guards = new L2Guards(redis, l2Client.isCluster, {
      name: `cache L2 ${this.#options.namespace}`,
      timeout: l2.timeout,
      ...l2.breaker,
      telemetry: this.#providers,
      onStateChange: (state, node) => {
        this.#emit('breaker-changed', { state, node })
        if (state === 'closed') void this.#l2Invalidations.replay()
      },
    })
    this.#l1Trusted = false
    this.#bus = new Bus({
      client: redis,
      subscriber: l2.subscriber,
      channel: this.#keys.channel(),
      instanceId: this.#instanceId,
      heartbeatInterval: l2.heartbeatInterval,
      heartbeatTimeout: l2.heartbeatTimeout,
      publish: (channel, message, heartbeat) =>
        this.#run(heartbeat ? heartbeatCall : publishCall, channel, PUBLISH, [channel, message]),
      handlers: {
        message: (message) => this.#onBusMessage(message),
        gap: () => this.#flush('gap'),
        up: () => this.#onBusUp(),
        down: (reason) => this.#onBusDown(reason),
        rejected: (reason) => this.#emit('bus-message-rejected', { reason }),
      },
    })
    // nothing is sent before the client is connected: with enableOfflineQueue: false those
    // commands would fail at once and open the breaker before the first call
    const bus = this.#bus
    const connected = this.#connected(redis)
    this.#generationLoad = connected.then(() => this.#loadGeneration())
    this.#generationLoad.catch(() => undefined)
    void connected.then(() => bus.start())
  }

  /** The L2 side of invalidations, with what it needs of this cache. */
  #createL2Invalidations(): L2Invalidations {
    const cache = this
    return new L2Invalidations({
      options: this.#options,
      keys: this.#keys,
      get closed() {
        return cache.#closed
      },
      run: (operation, route, fn, arg) => this.#run(operation, route, fn, arg),
      publish: (message) => this.#publish(message),
      token: () => this.#token(),
      l2Failed: (operation, error) => this.#l2Failed(operation, error),
      emit: (event, payload) => this.#emit(event, payload),
    })
  }

  /** The load flow, with what it needs of this cache. */
  #createLoadFlow(hasL2: boolean): LoadFlow {
    const cache = this
    return new LoadFlow({
      options: this.#options,
      l1: this.#l1,
      keys: this.#keys,
      epochs: this.#epochs,
      counters: this.#counters,
      serializer: this.#serializer,
      telemetry: this.#telemetry,
      hasL2,
      hasBloom: this.#bloom !== undefined,
      get closed() {
        return cache.#closed
      },
      readL2: (key) => this.#readL2(key),
      fromL2: (key, envelope, epoch) => this.#fromL2(key, envelope, epoch),
      staleCandidate: (key, envelope, t, l2ok) => this.#staleCandidate(key, envelope, t, l2ok),
      bloomMightContain: (key) => this.#bloomMightContain(key),
      bloomAdd: (keys) => this.#bloomAdd(keys),
      run: (operation, route, fn, arg) => this.#run(operation, route, fn, arg),
      l2Failed: (operation, error) => this.#l2Failed(operation, error),
      served: (key, reason) => this.#served(key, reason),
      emit: (event, payload) => this.#emit(event, payload),
      tombstone: (keys) => this.#l2Invalidations.tombstone(keys),
      defer: (keys, tags, clear) => this.#l2Invalidations.defer(keys, tags, clear),
      publish: (message) => this.#publish(message),
      token: () => this.#token(),
      prepareWrite: (key, value, payload, negative, call, t) =>
        this.#prepareWrite(key, value, payload, negative, call, t),
      l1Set: (key, entry) => this.#l1Set(key, entry),
    })
  }

  // ---------------------------------------------------------------- reads

  /**
   * The value of `key`, or `undefined` on a miss. An L1 hit does no I/O. During an L2
   * outage, L1 (fresh or within grace) answers, and a key in neither is a miss.
   */
  get<V extends T = T>(key: string): Promise<V | undefined> {
    if (this.#l1Trusted && this.#l1 !== undefined) {
      const entry = this.#l1.get(key)
      if (entry !== undefined && entry.freshUntil > now()) {
        this.#counters.l1Hits++
        return promiseOf(entry) as Promise<V | undefined>
      }
    }
    return this.#getSlow(key) as Promise<V | undefined>
  }

  /** The fresh L1 value of `key`, synchronously; `undefined` if L1 does not hold it. Never touches L2. */
  peek<V extends T = T>(key: string): V | undefined {
    if (!this.#l1Trusted || this.#l1 === undefined) {
      // off the hot path: a closed cache never trusts L1
      this.#assertOpen('peek')
      return undefined
    }
    const entry = this.#l1.get(key)
    return entry !== undefined && entry.freshUntil > now() ? (entry.value as V) : undefined
  }

  /** Whether a fresh, non-negative value of `key` is cached in L1 or L2. */
  async has(key: string): Promise<boolean> {
    checkKey(key, this.#options.maxKeyLength)
    this.#assertOpen('has')
    const local = this.#l1Hit(key)
    if (local !== MISSING) return local !== undefined
    if (this.#l2 === undefined) return false
    const read = await this.#readL2(key)
    if (!read.ok) return this.#fallback(key, 'l2-unavailable') !== MISSING
    const t = now()
    return read.envelope !== undefined && read.envelope.kind === 'v' && read.envelope.freshUntil > t
  }

  /** Values of `keys` in order (`undefined` for misses): one L1 pass, then one L2 round trip (one MGET per slot on a Cluster). */
  async getMany<V extends T = T>(keys: readonly string[]): Promise<(V | undefined)[]> {
    this.#assertOpen('getMany')
    for (const key of keys) checkKey(key, this.#options.maxKeyLength)
    const out = new Array<V | undefined>(keys.length)
    const missing: number[] = []
    for (let i = 0; i < keys.length; i++) {
      const local = this.#l1Hit(keys[i] as string)
      if (local === MISSING) missing.push(i)
      else out[i] = local as V | undefined
    }
    if (missing.length === 0 || this.#l2 === undefined) return out
    const reads = await this.#readL2Many(missing.map((i) => keys[i] as string))
    const t = now()
    for (let j = 0; j < missing.length; j++) {
      const i = missing[j] as number
      const key = keys[i] as string
      const read = reads[j] as L2Read
      if (!read.ok) {
        const fallback = this.#fallback(key, 'l2-unavailable')
        out[i] = fallback === MISSING ? undefined : (fallback as V)
      } else if (
        read.envelope !== undefined &&
        read.envelope.kind !== 't' &&
        read.envelope.freshUntil > t
      ) {
        this.#counters.l2Hits++
        out[i] = this.#fromL2(key, read.envelope, reads.epoch) as V | undefined
      } else {
        this.#counters.l2Misses++
        out[i] = undefined
      }
    }
    return out
  }

  /**
   * The value of `key`, loading it on a miss: one loader call per key per process at a
   * time (and per deployment with `lock: true`), fail-safe and stale-while-revalidate within
   * grace, negative caching of `undefined`.
   *
   * @example
   * ```ts
   * const product = await cache.getOrSet(`product:${id}`, () => db.products.find(id), { ttl: '5m', tags: ['products'] })
   * ```
   */
  getOrSet<V extends T | undefined>(
    key: string,
    loader: Loader<V>,
    options?: GetOrSetOptions,
  ): Promise<V> {
    if (options === undefined && this.#l1Trusted && this.#l1 !== undefined) {
      const entry = this.#l1.get(key)
      if (entry !== undefined) {
        const t = now()
        if (entry.freshUntil > t) {
          this.#counters.l1Hits++
          if (entry.refreshAt <= t)
            this.#loadFlow.refreshInBackground(
              key,
              loader as Loader<unknown>,
              resolveCallOptions(this.#options, undefined),
            )
          return promiseOf(entry) as Promise<V>
        }
      }
    }
    return this.#getOrSetSlow(key, loader as Loader<unknown>, options) as Promise<V>
  }

  /**
   * Values of `keys` in order, calling `loader` once for all the keys found in neither level
   * (keys already loading elsewhere in this process are joined, not loaded again).
   *
   * @example
   * ```ts
   * const prices = await cache.getOrSetMany(skus.map((s) => `price:${s}`), (keys) => db.prices.byKeys(keys))
   * ```
   */
  async getOrSetMany<V extends T = T>(
    keys: readonly string[],
    loader: BatchLoader<V>,
    options?: GetOrSetOptions,
  ): Promise<(V | undefined)[]> {
    this.#assertOpen('getOrSetMany')
    for (const key of keys) checkKey(key, this.#options.maxKeyLength)
    const call = resolveCallOptions(this.#options, options)
    const out = new Array<V | undefined>(keys.length)
    const pending = new Map<string, number[]>()
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i] as string
      const local = this.#l1Hit(key)
      if (local !== MISSING) out[i] = local as V | undefined
      else {
        const at = pending.get(key)
        if (at === undefined) pending.set(key, [i])
        else at.push(i)
      }
    }
    if (pending.size === 0) return out

    const waits = new Map<string, Promise<unknown>>()
    const toRead: string[] = []
    for (const key of pending.keys()) {
      const running = this.#loadFlow.running(key)
      if (running !== undefined) {
        this.#counters.coalesced++
        waits.set(key, running)
      } else toRead.push(key)
    }

    const stale = new Map<string, Stale>()
    const tokens = new Map<string, string | undefined>()
    const toLoad: string[] = []
    if (toRead.length > 0) {
      const reads = await this.#readL2Many(toRead)
      const t = now()
      for (let j = 0; j < toRead.length; j++) {
        const key = toRead[j] as string
        const read = reads[j] as L2Read
        const envelope = read.ok ? read.envelope : undefined
        if (envelope !== undefined && envelope.kind !== 't' && envelope.freshUntil > t) {
          this.#counters.l2Hits++
          waits.set(key, Promise.resolve(this.#fromL2(key, envelope, reads.epoch)))
          continue
        }
        if (read.ok) this.#counters.l2Misses++
        tokens.set(key, read.token)
        const candidate = this.#staleCandidate(key, envelope, t, read.ok)
        if (candidate !== undefined) stale.set(key, candidate)
        toLoad.push(key)
      }
    }

    if (toLoad.length > 0) {
      this.#loadFlow.loadBatch(toLoad, loader as BatchLoader<unknown>, call, tokens, stale, waits)
    }

    const settled = await Promise.all(
      [...pending.keys()].map((key) => waits.get(key) as Promise<unknown>),
    )
    let k = 0
    for (const indexes of pending.values()) {
      const value = settled[k++] as V | undefined
      for (const i of indexes) out[i] = value
    }
    return out
  }

  // ---------------------------------------------------------------- writes

  /**
   * Caches `value` in L2 and this L1, and drops the key from every other instance's L1.
   * A value the serializer cannot represent is rejected with `SerializationError` and
   * nothing is written. During an L2 outage the value goes to L1 only and the invalidation
   * is replayed when L2 returns.
   *
   * @example
   * ```ts
   * await cache.set('price:sku-1', { amount: 1999n, currency: 'EUR' }, { ttl: '10m', tags: ['prices'] })
   * ```
   */
  async set(key: string, value: T, options?: SetOptions): Promise<void> {
    this.#assertOpen('set')
    await this.setMany([{ key, value, ...options }])
  }

  /** Like {@link TwoLevelCache.set} for many keys: one L2 pipeline and one invalidation message. */
  async setMany(entries: readonly ({ key: string; value: T } & SetOptions)[]): Promise<void> {
    this.#assertOpen('setMany')
    const prepared = entries.map((entry) => {
      checkKey(entry.key, this.#options.maxKeyLength)
      const call = resolveCallOptions(this.#options, entry)
      const negative = entry.value === undefined
      const payload = negative ? '' : serializeOrThrow(this.#serializer, entry.key, entry.value)
      return { key: entry.key, value: entry.value, call, negative, payload }
    })
    const keys = prepared.map((item) => item.key)
    this.#invalidateLocal(keys)
    const t = exactNow()
    const l1Entries: [string, L1Entry, string][] = []
    const writes: { key: string; value: string; px: number }[] = [] // key: the user's key
    const tagWrites: TagWrite[] = []
    for (const item of prepared) {
      const write = this.#prepareWrite(
        item.key,
        item.value,
        item.payload,
        item.negative,
        item.call,
        t,
      )
      l1Entries.push([item.key, write.entry, write.text])
      writes.push({ key: item.key, value: write.text, px: write.px })
      if (item.call.tags !== undefined && item.call.tags.length > 0)
        tagWrites.push({ tags: item.call.tags, key: item.key, px: write.px })
    }
    if (this.#l2 !== undefined) {
      try {
        await this.#ready()
        if (tagWrites.length === 0 && this.#bloom === undefined && !this.#l2.isCluster) {
          // the writes and their message in one round trip
          const l2Writes = writes.map((w) => ({ ...w, key: this.#keys.entry(w.key) }))
          const bus = this.#bus as Bus
          await bus.publishVia(
            keysInvalidated(
              keys,
              l1Entries.map(([, entry]) => entry.version ?? ''),
            ),
            (channel, message) =>
              this.#run(
                { operation: 'set', command: 'BATCH', batchSize: l2Writes.length + 1 },
                channel,
                (l2) => l2.setManyAndPublish(l2Writes, channel, message),
              ),
          )
          for (const [key, entry] of l1Entries) this.#l1Set(key, entry)
          return
        }
        // writes on several nodes count against the first key's node (see L2Guards)
        const route = this.#keys.entry(keys[0] as string)
        await this.#run(
          writeCall('set', writes.length, tagWrites.length > 0),
          route,
          async (l2) => {
            if (tagWrites.length > 0) await l2.addTags(this.#keys.tagMembers(tagWrites, t), t)
            await l2.setMany(writes.map((w) => ({ ...w, key: this.#keys.entry(w.key) })))
          },
        )
        if (this.#bloom !== undefined)
          await this.#bloomAdd(keys.filter((_, i) => !prepared[i]?.negative))
        await this.#publish(
          keysInvalidated(
            keys,
            l1Entries.map(([, entry]) => entry.version ?? ''),
          ),
        )
      } catch (error) {
        this.#l2Failed('set', error)
        this.#l2Invalidations.defer(keys, [], false)
      }
    }
    for (const [key, entry] of l1Entries) this.#l1Set(key, entry)
  }

  /** Drops `key` from L2 and every instance's L1. */
  async delete(key: string): Promise<void> {
    this.#assertOpen('delete')
    await this.deleteMany([key])
  }

  /** Drops `keys` from L2 and every instance's L1, with one invalidation message. */
  async deleteMany(keys: readonly string[]): Promise<void> {
    this.#assertOpen('deleteMany')
    for (const key of keys) checkKey(key, this.#options.maxKeyLength)
    this.#invalidateLocal(keys)
    if (this.#l2 === undefined || keys.length === 0) return
    try {
      await this.#ready()
      await this.#l2Invalidations.tombstone(keys)
      await this.#publish(keysInvalidated(keys))
    } catch (error) {
      this.#l2Failed('delete', error)
      this.#l2Invalidations.defer(keys, [], false)
    }
  }

  /**
   * Drops every key carrying one of `tags`, in L2 and in every instance's L1, without
   * scanning the keyspace (each tag keeps the set of its keys). Grace never brings such a
   * value back: it is deleted, not expired.
   */
  async deleteByTag(tags: string | readonly string[]): Promise<void> {
    this.#assertOpen('deleteByTag')
    const list = typeof tags === 'string' ? [tags] : [...tags]
    for (const tag of list) checkKey(tag, this.#options.maxKeyLength, 'tag')
    this.#invalidateTagsLocal(list)
    if (this.#l2 === undefined || list.length === 0) return
    try {
      await this.#ready()
      await this.#l2Invalidations.deleteTags(list)
      await this.#publish(tagsInvalidated(list))
    } catch (error) {
      this.#l2Failed('deleteByTag', error)
      this.#l2Invalidations.defer([], list, false)
    }
  }

  /** Drops every key of the namespace, in L2 (by moving to a new generation) and in every instance's L1. */
  async clear(): Promise<void> {
    this.#assertOpen('clear')
    this.#flush('clear')
    if (this.#l2 === undefined) return
    try {
      await this.#ready()
      await this.#l2Invalidations.clearNamespace()
    } catch (error) {
      this.#l2Failed('clear', error)
      this.#l2Invalidations.defer([], [], true)
    }
  }

  /**
   * Adds keys to the Bloom filter of keys that exist (see {@link CacheOptions.bloom}).
   * Seed it with the ids that exist when you enable the filter, and add new ones as they are created.
   */
  async addToFilter(keys: string | readonly string[]): Promise<void> {
    this.#assertOpen('addToFilter')
    if (this.#bloom === undefined)
      throw new InvalidArgumentError(
        'addToFilter() needs a Bloom filter: the cache was created without the "bloom" option',
      )
    const list = typeof keys === 'string' ? [keys] : keys
    for (const key of list) checkKey(key, this.#options.maxKeyLength)
    await this.#bloomAdd(list)
  }

  // ---------------------------------------------------------------- observability and lifecycle

  /** Counters since creation and the state of L1, the bus and the breaker. */
  stats(): CacheStats {
    const counters = this.#counters
    const bus = this.#bus?.stats()
    return {
      l1: {
        hits: counters.l1Hits,
        misses: counters.l1Misses,
        entries: this.#l1?.size ?? 0,
        bytes: this.#l1?.bytes ?? 0,
        engine: this.#l1?.name ?? 'none',
      },
      l2: {
        hits: counters.l2Hits,
        misses: counters.l2Misses,
        failed: counters.l2Failed,
        decodeFailed: counters.decodeFailed,
      },
      loader: {
        calls: counters.loaderCalls,
        succeeded: counters.loaderSucceeded,
        failed: counters.loaderFailed,
        timedOut: counters.loaderTimedOut,
      },
      staleServed: counters.staleServed,
      coalesced: counters.coalesced,
      lockWaits: counters.lockWaits,
      conflicts: counters.conflicts,
      bus: {
        healthy: bus?.healthy ?? false,
        published: bus?.published ?? 0,
        received: bus?.received ?? 0,
        gaps: bus?.gaps ?? 0,
        rejected: bus?.rejected ?? 0,
        invalidationsPublished: bus?.invalidationsPublished ?? 0,
        invalidationsReceived: bus?.invalidationsReceived ?? 0,
        flushes: counters.flushes,
      },
      breaker: this.#guards?.state ?? 'closed',
      breakers: this.#guards?.states() ?? {},
      pendingInvalidations: this.#l2Invalidations.pendingCount,
      generation: this.#keys.generation,
    }
  }

  /**
   * Resolves once the invalidation subscription works and the namespace generation is read
   * (at once without Redis); rejects with `L2UnavailableError` after `timeout`.
   *
   * @param timeout How long to wait, a {@link Duration}. Default 5000 (5 seconds).
   */
  async ready(timeout: Duration = 5000): Promise<void> {
    const timeoutMs = argument.duration('timeout', timeout)
    const deadline = Date.now() + timeoutMs
    while (!this.#l1Trusted) {
      if (this.#closed) throw new CacheClosedError('cache', 'ready')
      if (Date.now() > deadline)
        throw new L2UnavailableError(`the invalidation bus was not ready after ${timeoutMs} ms`)
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
    // one slow or failed generation read (a loaded Redis at start) is not a verdict: retry until the deadline
    for (;;) {
      try {
        await this.#ready()
        return
      } catch (error) {
        if (this.#closed) throw new CacheClosedError('cache', 'ready')
        if (Date.now() > deadline) throw error
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
    }
  }

  /**
   * Adds a listener; returns a function that removes it. A listener that throws never makes
   * a cache call fail: its error is rethrown in a microtask (an `uncaughtException`).
   *
   * @example
   * ```ts
   * const off = cache.on('stale-served', ({ key, reason }) => log.warn({ key, reason }))
   * off()
   * ```
   */
  on<E extends keyof CacheEvents>(
    event: E,
    listener: (payload: CacheEvents[E]) => void,
  ): Unsubscribe {
    return this.#events.on(event, listener)
  }

  /** Adds a listener called at most once; returns a function that removes it. */
  once<E extends keyof CacheEvents>(
    event: E,
    listener: (payload: CacheEvents[E]) => void,
  ): Unsubscribe {
    return this.#events.once(event, listener)
  }

  /** Removes a listener added with `on()` or `once()`. */
  off<E extends keyof CacheEvents>(event: E, listener: (payload: CacheEvents[E]) => void): void {
    this.#events.off(event, listener)
  }

  /**
   * Stops the heartbeat, closes the subscription connection the cache opened (never the
   * `redis` client you passed) and releases L1. Calls after it reject with `CacheClosedError`.
   */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#l1Trusted = false
    this.#telemetry.close()
    this.#l2Invalidations.close()
    this.#loadFlow.wakeAll()
    await this.#bus?.close()
    await this.#guards?.close()
    this.#l1?.clear()
    this.#l1?.close?.()
  }

  // ---------------------------------------------------------------- internals: reads

  /** L1 answer for key: the value, or MISSING. Counts hits and misses. */
  #l1Hit(key: string): unknown {
    if (this.#l1 === undefined || !this.#l1Trusted) return MISSING
    const entry = this.#l1.get(key)
    if (entry !== undefined && entry.freshUntil > now()) {
      this.#counters.l1Hits++
      return entry.value
    }
    this.#counters.l1Misses++
    return MISSING
  }

  async #getSlow(key: string): Promise<unknown> {
    checkKey(key, this.#options.maxKeyLength)
    this.#assertOpen('get')
    const local = this.#l1Hit(key)
    if (local !== MISSING) return local
    if (this.#l2 === undefined) return undefined
    // #readL2, inlined: this is the hot L2 path, and every layer of promises costs
    const epoch = this.#epochs.current
    let raw: string | null
    const entryKey = this.#keys.entry(key)
    if (!this.#l2Readable(entryKey)) return this.#l2Fallback(key)
    try {
      if (this.#generationLoad !== undefined) await this.#ready()
      raw = await this.#run(L2_CALLS.get, entryKey, GET, entryKey)
    } catch (error) {
      this.#l2Failed('get', error)
      return this.#l2Fallback(key)
    }
    const envelope = raw === null ? undefined : this.#decode(key, raw)
    if (envelope !== undefined && envelope.kind !== 't' && envelope.freshUntil > now()) {
      this.#counters.l2Hits++
      return this.#fromL2(key, envelope, epoch)
    }
    this.#counters.l2Misses++
    return undefined
  }

  #l2Fallback(key: string): unknown {
    const fallback = this.#fallback(key, 'l2-unavailable')
    return fallback === MISSING ? undefined : fallback
  }

  /** L2 is down: an L1 entry that is fresh or within grace still answers. */
  #fallback(key: string, reason: StaleReason): unknown {
    const entry = this.#l1?.get(key)
    if (entry === undefined) return MISSING
    const t = now()
    if (entry.freshUntil > t) return entry.value
    if (entry.staleUntil > t) {
      this.#served(key, reason)
      return entry.value
    }
    return MISSING
  }

  #served(key: string, reason: StaleReason): void {
    this.#counters.staleServed++
    this.#emit('stale-served', { key, reason })
  }

  /**
   * Whether L2 may be read at `route` (a Redis key): configured, no invalidation waiting to be
   * replayed, and the breaker of the node that serves it not open.
   */
  #l2Readable(route: string): boolean {
    return (
      this.#l2 !== undefined &&
      this.#l2Invalidations.pendingCount === 0 &&
      this.#guards?.for(route).available === true
    )
  }

  async #readL2(key: string): Promise<L2Read & { epoch: number }> {
    const epoch = this.#epochs.current
    const entryKey = this.#keys.entry(key)
    if (!this.#l2Readable(entryKey)) return { ok: false, token: undefined, epoch }
    try {
      if (this.#generationLoad !== undefined) await this.#ready()
      const raw = await this.#run(L2_CALLS.get, entryKey, GET, entryKey)
      return {
        ok: true,
        token: envelopeToken(raw),
        envelope: raw === null ? undefined : this.#decode(key, raw),
        raw,
        epoch,
      }
    } catch (error) {
      this.#l2Failed('get', error)
      return { ok: false, token: undefined, epoch }
    }
  }

  /**
   * One MGET per L2 node (one per slot on a Cluster), each under its node's breaker: a key on a
   * node whose breaker is open, or whose MGET failed, is read as unavailable; the others are read.
   */
  async #readL2Many(keys: readonly string[]): Promise<L2Read[] & { epoch: number }> {
    const epoch = this.#epochs.current
    const out: L2Read[] & { epoch: number } = Object.assign(
      keys.map((): L2Read => UNAVAILABLE),
      { epoch },
    )
    const guards = this.#guards
    if (this.#l2 === undefined || guards === undefined || this.#l2Invalidations.pendingCount > 0)
      return out
    try {
      if (this.#generationLoad !== undefined) await this.#ready()
    } catch (error) {
      this.#l2Failed('mget', error)
      return out
    }
    const entries = keys.map((key) => this.#keys.entry(key))
    const byGuard = new Map<unknown, number[]>()
    for (let i = 0; i < entries.length; i++) {
      const guard = guards.for(entries[i] as string)
      if (!guard.available) continue
      const group = byGuard.get(guard)
      if (group === undefined) byGuard.set(guard, [i])
      else group.push(i)
    }
    await Promise.all(
      [...byGuard.values()].map(async (indexes) => {
        try {
          const raws = await this.#run(
            L2_CALLS.mget,
            entries[indexes[0] as number] as string,
            (l2) => l2.mget(indexes.map((i) => entries[i] as string)),
          )
          for (let j = 0; j < indexes.length; j++) {
            const i = indexes[j] as number
            const raw = raws[j] ?? null
            out[i] = {
              ok: true,
              token: envelopeToken(raw),
              envelope: raw === null ? undefined : this.#decode(keys[i] as string, raw),
              raw,
            }
          }
        } catch (error) {
          this.#l2Failed('mget', error)
        }
      }),
    )
    return out
  }

  /** A fresh L2 entry: deserialize, copy to L1 with L2's remaining TTL (unless invalidated since the read began). */
  #fromL2(key: string, envelope: Envelope, epoch: number): unknown {
    if (envelope.kind === 'n') {
      this.#maybeBackfill(key, envelope, undefined, epoch)
      return undefined
    }
    const value = envelope.value
    this.#maybeBackfill(key, envelope, value, epoch)
    return value
  }

  /**
   * The envelope of a raw L2 value with its payload deserialized, or `undefined` (a miss, with
   * a `decode:error` event) when it cannot be read: not an envelope, a value written with
   * another serializer (a rolling deploy), or a payload the serializer rejects. Whatever
   * is stored at our keys, reads never reject because of it.
   */
  #decode(key: string, raw: string): Envelope | undefined {
    const envelope = decodeEnvelope(raw)
    if (envelope === undefined) {
      this.#decodeFailed(key, 'it is not an envelope of @ballast/cache')
      return undefined
    }
    if (envelope.kind !== 'v') return envelope
    const name = this.#serializer.name
    if (envelope.serializer !== undefined && envelope.serializer !== name) {
      this.#decodeFailed(
        key,
        `it was written with the ${envelope.serializer} serializer, not ${name}`,
      )
      return undefined
    }
    try {
      envelope.value = this.#serializer.deserialize(envelope.payload)
    } catch (cause) {
      const why = cause instanceof Error ? cause.message : String(cause)
      this.#decodeFailed(key, `the ${name} serializer rejected its payload: ${why}`, cause)
      return undefined
    }
    return envelope
  }

  #decodeFailed(key: string, why: string, cause?: unknown): void {
    this.#counters.decodeFailed++
    if (!this.#events.has('decode-failed')) return
    const error = new DecodeError(
      `the L2 value of key ${JSON.stringify(key)} was treated as a miss: ${why}`,
      { cause },
    )
    this.#emit('decode-failed', { key, error })
  }

  #maybeBackfill(key: string, envelope: Envelope, value: unknown, epoch: number): void {
    if (
      this.#l1 === undefined ||
      !this.#epochs.stillValid(key, envelope.tags, epoch, envelope.token)
    )
      return
    this.#l1Set(key, {
      value,
      freshUntil: envelope.freshUntil,
      staleUntil: envelope.staleUntil,
      refreshAt: envelope.refreshAt,
      tags: envelope.tags,
      negative: envelope.kind === 'n',
      version: envelope.token,
      size: entryBytes(key, value, envelope.payload, undefined),
      promise: undefined,
    })
  }

  /**
   * A value within grace: L2's, or L1's when L2 could not be read, or L1's when L1 is trusted
   * and L2 holds no tombstone. An untrusted L1 (bus down) may have missed an invalidation.
   */
  #staleCandidate(
    key: string,
    envelope: Envelope | undefined,
    t: number,
    l2ok: boolean,
  ): Stale | undefined {
    if (envelope !== undefined && envelope.kind === 'v' && envelope.staleUntil > t) {
      return { value: envelope.value }
    }
    if (l2ok && (envelope?.kind === 't' || !this.#l1Trusted)) return undefined
    const entry = this.#l1?.get(key)
    if (entry !== undefined && !entry.negative && entry.staleUntil > t)
      return { value: entry.value }
    return undefined
  }

  // ---------------------------------------------------------------- internals: getOrSet

  async #getOrSetSlow(
    key: string,
    loader: Loader<unknown>,
    options: GetOrSetOptions | undefined,
  ): Promise<unknown> {
    checkKey(key, this.#options.maxKeyLength)
    this.#assertOpen('getOrSet')
    if (typeof loader !== 'function') argument.invalid('loader', 'a function', loader)
    const call = resolveCallOptions(this.#options, options)
    const local = this.#l1Hit(key)
    if (local !== MISSING) return local
    return this.#loadFlow.getOrSet(key, loader, call)
  }

  /** Builds a write with the cache's jitter and early refresh, and a new version naming the serializer. */
  #prepareWrite(
    key: string,
    value: unknown,
    payload: string,
    negative: boolean,
    call: CallOptions,
    t: number,
  ): PreparedWrite {
    // a value's version names its serializer (see envelope.ts); a negative entry has no payload
    const version = negative
      ? this.#token()
      : `${this.#token()}${SERIALIZER_MARK}${this.#serializer.name}`
    return prepareWrite(key, value, payload, negative, call, t, this.#options, version)
  }

  #l1Set(key: string, entry: L1Entry): void {
    storeInL1(this.#l1, key, entry, now())
  }

  // ---------------------------------------------------------------- internals: Bloom filter

  async #bloomAdd(keys: readonly string[]): Promise<void> {
    const shape = this.#bloom
    if (shape === undefined || keys.length === 0) return
    const offsets = keys.flatMap((key) => bloomOffsets(shape, key))
    const bloomKey = this.#keys.bloom()
    await this.#run(L2_CALLS.bloomAdd, bloomKey, (l2) => l2.setBits(bloomKey, offsets))
  }

  async #bloomMightContain(key: string): Promise<boolean> {
    const shape = this.#bloom as BloomShape
    try {
      const bloomKey = this.#keys.bloom()
      const bits = await this.#run(L2_CALLS.bloomCheck, bloomKey, (l2) =>
        l2.getBits(bloomKey, bloomOffsets(shape, key)),
      )
      return bits.every((bit) => bit === 1)
    } catch (error) {
      this.#l2Failed('bloom', error)
      return true // unknown: let the loader decide
    }
  }

  // ---------------------------------------------------------------- internals: invalidation

  /** Drops keys from L1; `versions[i]`, when given, is the write that caused it: a copy of that very write stays. */
  #invalidateLocal(keys: readonly string[], versions?: readonly string[]): void {
    this.#epochs.invalidateKeys(keys, versions, this.#l1)
    this.#loadFlow.wake(keys)
    this.#epochs.trimKeys()
  }

  #invalidateTagsLocal(tags: readonly string[]): void {
    this.#epochs.invalidateTags(tags, this.#l1)
  }

  #flush(reason: FlushReason): void {
    this.#epochs.flush()
    this.#l1?.clear()
    this.#counters.flushes++
    this.#emit('l1-flushed', { reason })
  }

  #onBusMessage(message: BusMessage): void {
    switch (message.t) {
      case MESSAGE_TYPE.keysInvalidated:
        if (message.k !== undefined) {
          this.#invalidateLocal(message.k, Array.isArray(message.v) ? message.v : undefined)
          this.#emit('invalidated', { origin: message.o, keys: message.k })
        }
        return
      case MESSAGE_TYPE.tagsInvalidated:
        if (message.g !== undefined) {
          this.#invalidateTagsLocal(message.g)
          this.#emit('invalidated', { origin: message.o, tags: message.g })
        }
        return
      case MESSAGE_TYPE.namespaceCleared:
        this.#flush('clear')
        // the message's number is not trusted (anyone with Redis access can publish): the
        // generation key is, and a genuine clear incremented it before publishing
        this.#generationLoad = this.#loadGeneration()
        this.#emit('invalidated', { origin: message.o, clear: true })
        return
      case MESSAGE_TYPE.keyFilled:
        if (message.k !== undefined) this.#loadFlow.wake(message.k)
        return
      default:
        return
    }
  }

  #onBusDown(reason: string): void {
    this.#l1Trusted = false
    this.#emit('bus-disconnected', { reason })
  }

  #onBusUp(): void {
    // whatever L1 holds may predate invalidations sent while we were deaf
    this.#flush('resubscribed')
    void this.#recover()
    this.#l1Trusted = true
    this.#emit('bus-connected', {})
  }

  async #publish(message: OutgoingMessage): Promise<void> {
    await this.#bus?.publish(message)
  }

  // ---------------------------------------------------------------- internals: L2 plumbing

  /** One L2 call under the breaker of the node that serves `route` (a Redis key it touches). */
  #run<R, A = undefined>(
    call: L2Call,
    route: string,
    fn: (l2: L2, arg: A) => Promise<R>,
    arg?: A,
  ): Promise<R> {
    const l2 = this.#l2 as L2
    if (l2.client.status !== 'ready') {
      // reconnecting: fail at once, and do not count it against the breaker (nothing was tried).
      // The subscription may have dropped with the connection: L1 is not trusted until it is proven.
      this.#bus?.suspect(`the L2 client is ${l2.client.status}`)
      return Promise.reject(
        new L2UnavailableError(`L2 ${call.operation} skipped: the client is ${l2.client.status}`),
      )
    }
    return this.#telemetry.l2(call, (this.#guards as L2Guards).for(route), fn, l2, arg as A)
  }

  /** Resolves when the client is connected (at once if it is). */
  #connected(client: RedisClient): Promise<void> {
    if (client.status === 'ready') return Promise.resolve()
    // a lazyConnect client connects on its first command; ours would wait for it forever
    if (client.status === 'wait') client.connect().catch(() => undefined)
    return new Promise((resolve) => {
      const onReady = () => {
        client.off('ready', onReady)
        resolve()
      }
      client.on('ready', onReady)
    })
  }

  #l2Failed(operation: string, error: unknown): void {
    this.#counters.l2Failed++
    this.#emit('l2-failed', {
      operation,
      error: error instanceof Error ? error : new Error(String(error)),
    })
  }

  /** Reads the namespace generation; the returned promise may reject, and nobody has to await it. */
  #loadGeneration(): Promise<void> {
    const load = this.#readGeneration()
    load.catch(() => undefined)
    return load
  }

  async #readGeneration(): Promise<void> {
    try {
      const generationKey = this.#keys.generationKey()
      const raw = await this.#run(L2_CALLS.generation, generationKey, (l2) => l2.get(generationKey))
      const gen = raw === null ? 0 : /^\d{1,16}$/.test(raw) ? Number(raw) : Number.NaN
      if (!Number.isSafeInteger(gen)) {
        // written by someone else: which generation is current cannot be known, so L2 is not read
        throw new L2UnavailableError(
          `the generation key holds ${JSON.stringify(raw?.slice(0, 40))}, not a safe integer`,
        )
      }
      if (gen > this.#keys.generation) this.#keys.generation = gen
    } catch (error) {
      this.#l2Failed('generation', error)
      throw error
    }
  }

  /** Waits for the namespace generation; reloads it when the last attempt failed. */
  async #ready(): Promise<void> {
    const load = this.#generationLoad
    if (load === undefined) return
    try {
      await load
      if (this.#generationLoad === load) this.#generationLoad = undefined
    } catch (error) {
      // fail fast (the caller falls back), and try again in the background
      if (this.#generationLoad === load) this.#generationLoad = this.#loadGeneration()
      throw error
    }
  }

  /** After a reconnect: reads the generation until it succeeds, then replays deferred invalidations. */
  async #recover(): Promise<void> {
    while (!this.#closed && this.#bus?.healthy === true) {
      this.#generationLoad = this.#loadGeneration()
      try {
        await this.#generationLoad
        this.#generationLoad = undefined
        await this.#l2Invalidations.replay()
        return
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    }
  }

  // ---------------------------------------------------------------- internals: versions and checks

  #token(): string {
    return `${this.#instanceId}.${(++this.#tokenCounter).toString(36)}`
  }

  #assertOpen(operation: string): void {
    if (this.#closed) throw new CacheClosedError('cache', operation)
  }

  /** Emits only when someone listens; a listener that throws never reaches the caller (see Emitter). */
  #emit<E extends keyof CacheEvents>(event: E, payload: CacheEvents[E]): void {
    if (this.#events.has(event)) this.#events.emit(event, payload)
  }
}
