import { randomBytes } from 'node:crypto'
import { Emitter, merge, type Unsubscribe } from '@ballast/shared'
import type { CacheEvents, CacheStats, FlushReason, StaleReason } from './cacheEvents.js'
import type {
  BatchLoader,
  CacheOptions,
  GetOrSetOptions,
  Loader,
  LoaderContext,
  SetOptions,
} from './cacheOptions.js'
import { DEFAULT_BLOOM_OPTIONS, DEFAULT_CACHE_OPTIONS } from './cacheOptions.js'
import {
  CacheClosedError,
  DecodeError,
  InvalidArgumentError,
  L2UnavailableError,
  LoaderTimeoutError,
} from './errors.js'
import { type BloomShape, bloomOffsets, bloomShape } from './internal/bloom.js'
import { Bus, type BusMessage } from './internal/bus.js'
import { exactNow, now } from './internal/clock.js'
import {
  decodeEnvelope,
  type Envelope,
  encodeEnvelope,
  envelopeToken,
  SERIALIZER_MARK,
} from './internal/envelope.js'
import { L2, type RedisClient, TAG_CHUNK, type TagMember } from './internal/l2.js'
import { L2Guard } from './internal/l2Guard.js'
import { argument, option } from './internal/validate.js'
import type { L1Entry, L1Store } from './l1Store.js'
import { createLruStore, type LruStoreOptions } from './lruStore.js'
import { devalueSerializer, type Serializer, serializeOrThrow } from './serializer.js'

interface Resolved {
  namespace: string
  prefix: string
  ttl: number
  grace: number
  jitter: number
  negativeTtl: number
  earlyRefresh: number
  softTimeout: number
  hardTimeout: number
  maxKeyLength: number
  tombstoneTtl: number
  lockLease: number
  lockWait: number
  maxPending: number
  /** How long after a failed invalidation (or a failed replay) the replay is tried again. */
  replayDelay: number
}

/** Per-call options after defaults. */
interface CallOptions {
  ttl: number
  grace: number
  tags: readonly string[] | undefined
  softTimeout: number
  hardTimeout: number
  lock: boolean
  negativeTtl: number
}

/** A value within grace that may be served if the loader or L2 fails. */
interface Stale {
  value: unknown
}

/** What an L2 read found. */
type L2Read =
  | { ok: true; token: string; envelope: Envelope | undefined; raw: string | null }
  | { ok: false; token: undefined; envelope?: undefined; raw?: undefined }

const MISSING = Symbol('missing')
const GET = (l2: L2, key: string) => l2.get(key)
const MAX_TRACKED_INVALIDATIONS = 10_000

function entryBytes(
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

const ONE_BYTE = /^[\0-\xff]*$/

/** The entry's resolved promise, made on the first async hit and reused: a hit allocates nothing. */
function promiseOf(entry: L1Entry): Promise<unknown> {
  let promise = entry.promise
  if (promise === undefined) {
    promise = Promise.resolve(entry.value)
    entry.promise = promise
  }
  return promise
}

function delay<T>(ms: number, value: T): { promise: Promise<T>; cancel(): void } {
  let timer: NodeJS.Timeout | undefined
  const promise = new Promise<T>((resolve) => {
    timer = setTimeout(() => resolve(value), ms)
  })
  return { promise, cancel: () => clearTimeout(timer) }
}

/**
 * A two-level cache: L1 in process, L2 in Redis (standalone or Cluster), invalidation of
 * every instance's L1 over pub/sub. Create it with {@link createCache}.
 *
 * @typeParam T The type of the values (use `unknown` for mixed namespaces).
 */
export class TwoLevelCache<T = unknown> {
  readonly #o: Resolved
  readonly #l1: L1Store | undefined
  readonly #l2: L2 | undefined
  readonly #guard: L2Guard | undefined
  readonly #bus: Bus | undefined
  readonly #serializer: Serializer
  readonly #bloom: BloomShape | undefined
  readonly #events = new Emitter<CacheEvents>()
  readonly #instanceId = randomBytes(6).toString('base64url')
  readonly #base: string
  #tokenCounter = 0

  /** L1 may answer on its own: no bus, or a bus that is working. */
  #l1Trusted: boolean
  #gen = 0
  #genLoad: Promise<void> | undefined
  #closed = false

  // local invalidation bookkeeping: a fill that started before an invalidation may not write L1
  #epoch = 0
  #floorEpoch = 0
  readonly #keyEpochs = new Map<string, number>()
  readonly #tagEpochs = new Map<string, number>()
  /** The version named by the last invalidation of a key (a set), if any. */
  readonly #keyVersions = new Map<string, string | undefined>()

  readonly #flights = new Map<string, Promise<unknown>>()
  readonly #loads = new Map<string, Promise<unknown>>()
  readonly #fillWaiters = new Map<string, Set<() => void>>()

  /**
   * Invalidations waiting for replay, each with the number of its latest deferral (`clear`: 0
   * for none), so that a replay forgets only what it replayed: a key deferred again while the
   * replay runs stays pending.
   */
  readonly #pending = { keys: new Map<string, number>(), tags: new Map<string, number>(), clear: 0 }
  #deferrals = 0
  #replaying: Promise<void> | undefined
  /** Retries the replay: a failure that never opens the breaker nor drops the bus must not keep L2 unread. */
  #replayTimer: NodeJS.Timeout | undefined

  readonly #s = {
    l1Hits: 0,
    l1Misses: 0,
    l2Hits: 0,
    l2Misses: 0,
    l2Failed: 0,
    decodeFailed: 0,
    loaderCalls: 0,
    loaderFailed: 0,
    loaderTimedOut: 0,
    staleServed: 0,
    coalesced: 0,
    conflicts: 0,
    flushes: 0,
  }

  /** Use {@link createCache}. */
  constructor(options: CacheOptions = {}) {
    if (typeof options !== 'object' || options === null) option.object('options', options)
    // an option given as undefined keeps its default, nested `breaker` and `lock` included
    const o = merge(DEFAULT_CACHE_OPTIONS, options)
    // no ':' in a namespace: `a` and `a:0:e` would share keys
    const namespace = option.string('namespace', o.namespace, { pattern: /^[^\s{}:]+$/ })
    const prefix = option.string('prefix', o.prefix, { pattern: /^[^\s{}]+$/ })
    const breaker = option.object('breaker', o.breaker)
    const lock = option.object('lock', o.lock)
    this.#o = {
      namespace,
      prefix,
      ttl: option.duration('ttl', o.ttl, { positive: true }),
      grace: option.duration('grace', o.grace),
      jitter: option.number('jitter', o.jitter, { min: 0, max: 0.9 }),
      negativeTtl: option.duration('negativeTtl', o.negativeTtl),
      earlyRefresh: option.number('earlyRefresh', o.earlyRefresh, { min: 0, max: 0.99 }),
      softTimeout: option.duration('softTimeout', o.softTimeout),
      hardTimeout: option.duration('hardTimeout', o.hardTimeout),
      maxKeyLength: option.positiveInteger('maxKeyLength', o.maxKeyLength),
      tombstoneTtl: option.duration('tombstoneTtl', o.tombstoneTtl, { positive: true }),
      lockLease: option.duration('lock.lease', lock.lease, { positive: true }),
      lockWait: option.duration('lock.wait', lock.wait),
      maxPending: option.positiveInteger('maxPendingInvalidations', o.maxPendingInvalidations),
      replayDelay: 0,
    }
    const l2Timeout = option.duration('l2Timeout', o.l2Timeout, { positive: true })
    const windowSize = option.positiveInteger('breaker.windowSize', breaker.windowSize)
    const errorThresholdPercentage = option.number(
      'breaker.errorThresholdPercentage',
      breaker.errorThresholdPercentage,
      { min: 0, max: 99.999 },
    )
    const volumeThreshold = option.nonNegativeInteger(
      'breaker.volumeThreshold',
      breaker.volumeThreshold,
    )
    const resetTimeout = option.duration('breaker.resetTimeout', breaker.resetTimeout, {
      positive: true,
    })
    this.#o.replayDelay = resetTimeout
    const heartbeatInterval = option.duration('heartbeatInterval', o.heartbeatInterval, {
      positive: true,
    })
    const heartbeatTimeout = option.duration('heartbeatTimeout', o.heartbeatTimeout, {
      positive: true,
    })
    if (heartbeatTimeout <= heartbeatInterval) {
      option.invalid(
        'heartbeatTimeout',
        `more than heartbeatInterval (${heartbeatInterval} ms)`,
        heartbeatTimeout,
      )
    }

    const serializer = o.serializer ?? devalueSerializer
    if (
      typeof serializer?.serialize !== 'function' ||
      typeof serializer.deserialize !== 'function'
    ) {
      option.invalid('serializer', 'an object with serialize() and deserialize()', serializer)
    }
    // the name goes into every value's token: a reader with another serializer then knows
    option.string('serializer.name', serializer.name, { pattern: /^[A-Za-z0-9_.-]{1,64}$/ })
    this.#serializer = serializer

    const l1 = o.l1 ?? {}
    if (l1 === false) this.#l1 = undefined
    else if (typeof (l1 as L1Store).get === 'function') this.#l1 = l1 as L1Store
    else if (typeof l1 === 'object' && l1 !== null) this.#l1 = createLruStore(l1 as LruStoreOptions)
    else option.invalid('l1', 'an L1Store, LRU bounds or false', l1)

    const bloom = o.bloom
    if (bloom === false) this.#bloom = undefined
    else {
      const bloomOptions = merge(DEFAULT_BLOOM_OPTIONS, option.object('bloom', bloom))
      const items = option.positiveInteger('bloom.expectedItems', bloomOptions.expectedItems)
      const rate = option.number('bloom.falsePositiveRate', bloomOptions.falsePositiveRate, {
        min: 1e-9,
        max: 0.5,
      })
      this.#bloom = bloomShape(items, rate)
    }

    this.#base = `${prefix}:${namespace}:`
    const redis = o.redis as RedisClient | undefined
    if (redis === undefined) {
      if (o.subscriber !== undefined)
        option.invalid('subscriber', 'no subscriber without "redis"', 'a client')
      if (this.#bloom !== undefined)
        option.invalid('bloom', 'false without "redis" (the filter lives in Redis)', bloom)
      this.#l2 = undefined
      this.#guard = undefined
      this.#bus = undefined
      this.#l1Trusted = true
      return
    }
    if (typeof (redis as { get?: unknown }).get !== 'function') {
      option.invalid('redis', 'an ioredis Redis or Cluster', redis)
    }
    this.#l2 = new L2(redis)
    this.#guard = new L2Guard({
      name: `cache L2 ${namespace}`,
      timeout: l2Timeout,
      windowSize,
      errorThresholdPercentage,
      volumeThreshold,
      resetTimeout,
      onStateChange: (state) => {
        this.#emit('breaker-changed', { state })
        if (state === 'closed') void this.#replay()
      },
    })
    this.#l1Trusted = false
    this.#bus = new Bus({
      client: redis,
      subscriber: o.subscriber as RedisClient | undefined,
      channel: `${this.#base}bus`,
      instanceId: this.#instanceId,
      heartbeatInterval,
      heartbeatTimeout,
      publish: (channel, message) => this.#run('publish', (l2) => l2.publish(channel, message)),
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
    this.#genLoad = connected.then(() => this.#loadGen())
    this.#genLoad.catch(() => undefined)
    void connected.then(() => bus.start())
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
        this.#s.l1Hits++
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
    this.#checkKey(key)
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
    for (const key of keys) this.#checkKey(key)
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
        this.#s.l2Hits++
        out[i] = this.#fromL2(key, read.envelope, reads.epoch) as V | undefined
      } else {
        this.#s.l2Misses++
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
          this.#s.l1Hits++
          if (entry.refreshAt <= t)
            this.#refreshInBackground(key, loader as Loader<unknown>, this.#callOptions(undefined))
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
    for (const key of keys) this.#checkKey(key)
    const o = this.#callOptions(options)
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
      const running = this.#loads.get(key) ?? this.#flights.get(key)
      if (running !== undefined) {
        this.#s.coalesced++
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
        const env = read.ok ? read.envelope : undefined
        if (env !== undefined && env.kind !== 't' && env.freshUntil > t) {
          this.#s.l2Hits++
          waits.set(key, Promise.resolve(this.#fromL2(key, env, reads.epoch)))
          continue
        }
        if (read.ok) this.#s.l2Misses++
        tokens.set(key, read.token)
        const candidate = this.#staleCandidate(key, env, t, read.ok)
        if (candidate !== undefined) stale.set(key, candidate)
        toLoad.push(key)
      }
    }

    if (toLoad.length > 0) {
      const startEpoch = this.#epoch
      const started = exactNow()
      this.#s.loaderCalls++
      const batch = Promise.resolve().then(() => loader(toLoad))
      // an array result is read by position: one index for all keys, not an indexOf per key
      let positions: Map<string, number> | undefined
      const positionOf = (key: string): number => {
        if (positions === undefined) {
          positions = new Map()
          for (let i = 0; i < toLoad.length; i++) positions.set(toLoad[i] as string, i)
        }
        return positions.get(key) as number
      }
      for (const key of toLoad) {
        const one = batch.then(async (result) => {
          const value = pick(result, key, positionOf)
          await this.#writeBack(key, value, o, tokens.get(key), started, startEpoch)
          return value
        })
        this.#track(key, one)
        waits.set(key, this.#settle(key, one, stale.get(key), o))
      }
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
      this.#checkKey(entry.key)
      const o = this.#callOptions(entry)
      const negative = entry.value === undefined
      const payload = negative ? '' : serializeOrThrow(this.#serializer, entry.key, entry.value)
      return { key: entry.key, value: entry.value, o, negative, payload }
    })
    const keys = prepared.map((p) => p.key)
    this.#invalidateLocal(keys)
    const t = exactNow()
    const l1Entries: [string, L1Entry, string][] = []
    const writes: { key: string; value: string; px: number }[] = [] // key: the user's key
    const tagWrites: { tags: readonly string[]; key: string; px: number }[] = []
    for (const p of prepared) {
      const w = this.#shape(p.key, p.value, p.payload, p.negative, p.o, t)
      l1Entries.push([p.key, w.entry, w.text])
      writes.push({ key: p.key, value: w.text, px: w.px })
      if (p.o.tags !== undefined && p.o.tags.length > 0)
        tagWrites.push({ tags: p.o.tags, key: p.key, px: w.px })
    }
    if (this.#l2 !== undefined) {
      try {
        await this.#ready()
        if (tagWrites.length === 0 && this.#bloom === undefined && !this.#l2.isCluster) {
          // the writes and their message in one round trip
          const l2Writes = writes.map((w) => ({ ...w, key: this.#entryKey(w.key) }))
          const bus = this.#bus as Bus
          await bus.publishVia(
            'k',
            { k: keys, v: l1Entries.map(([, entry]) => entry.version ?? '') },
            (channel, message) =>
              this.#run('set', (l2) => l2.setManyAndPublish(l2Writes, channel, message)),
          )
          for (const [key, entry] of l1Entries) this.#l1Set(key, entry)
          return
        }
        await this.#run('set', async (l2) => {
          if (tagWrites.length > 0) await l2.addTags(this.#tagMembers(tagWrites, t), t)
          await l2.setMany(writes.map((w) => ({ ...w, key: this.#entryKey(w.key) })))
        })
        if (this.#bloom !== undefined)
          await this.#bloomAdd(keys.filter((_, i) => !prepared[i]?.negative))
        await this.#publish('k', { k: keys, v: l1Entries.map(([, entry]) => entry.version ?? '') })
      } catch (error) {
        this.#l2Failed('set', error)
        this.#defer(keys, [], false)
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
    for (const key of keys) this.#checkKey(key)
    this.#invalidateLocal(keys)
    if (this.#l2 === undefined || keys.length === 0) return
    try {
      await this.#ready()
      await this.#tombstone(keys)
      await this.#publish('k', { k: [...keys] })
    } catch (error) {
      this.#l2Failed('delete', error)
      this.#defer(keys, [], false)
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
    for (const tag of list) this.#checkKey(tag, 'tag')
    this.#invalidateTagsLocal(list)
    if (this.#l2 === undefined || list.length === 0) return
    try {
      await this.#ready()
      await this.#deleteTagsL2(list)
      await this.#publish('g', { g: list })
    } catch (error) {
      this.#l2Failed('deleteByTag', error)
      this.#defer([], list, false)
    }
  }

  /** Drops every key of the namespace, in L2 (by moving to a new generation) and in every instance's L1. */
  async clear(): Promise<void> {
    this.#assertOpen('clear')
    this.#flush('clear')
    if (this.#l2 === undefined) return
    try {
      await this.#ready()
      await this.#clearL2()
    } catch (error) {
      this.#l2Failed('clear', error)
      this.#defer([], [], true)
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
    for (const key of list) this.#checkKey(key)
    await this.#bloomAdd(list)
  }

  // ---------------------------------------------------------------- observability and lifecycle

  /** Counters since creation and the state of L1, the bus and the breaker. */
  stats(): CacheStats {
    const s = this.#s
    const bus = this.#bus?.stats()
    return {
      l1: {
        hits: s.l1Hits,
        misses: s.l1Misses,
        entries: this.#l1?.size ?? 0,
        bytes: this.#l1?.bytes ?? 0,
        engine: this.#l1?.name ?? 'none',
      },
      l2: {
        hits: s.l2Hits,
        misses: s.l2Misses,
        failed: s.l2Failed,
        decodeFailed: s.decodeFailed,
      },
      loader: { calls: s.loaderCalls, failed: s.loaderFailed, timedOut: s.loaderTimedOut },
      staleServed: s.staleServed,
      coalesced: s.coalesced,
      conflicts: s.conflicts,
      bus: {
        healthy: bus?.healthy ?? false,
        published: bus?.published ?? 0,
        received: bus?.received ?? 0,
        gaps: bus?.gaps ?? 0,
        rejected: bus?.rejected ?? 0,
        flushes: s.flushes,
      },
      breaker: this.#guard?.state ?? 'closed',
      pendingInvalidations: this.#pendingCount(),
      generation: this.#gen,
    }
  }

  /**
   * Resolves once the invalidation subscription works and the namespace generation is read
   * (at once without Redis); rejects after `timeoutMs`.
   */
  async ready(timeoutMs = 5000): Promise<void> {
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
    clearTimeout(this.#replayTimer)
    this.#replayTimer = undefined
    for (const waiters of this.#fillWaiters.values()) for (const wake of waiters) wake()
    this.#fillWaiters.clear()
    await this.#bus?.close()
    await this.#guard?.close()
    this.#l1?.clear()
    this.#l1?.close?.()
  }

  // ---------------------------------------------------------------- internals: reads

  /** L1 answer for key: the value, or MISSING. Counts hits and misses. */
  #l1Hit(key: string): unknown {
    if (this.#l1 === undefined || !this.#l1Trusted) return MISSING
    const entry = this.#l1.get(key)
    if (entry !== undefined && entry.freshUntil > now()) {
      this.#s.l1Hits++
      return entry.value
    }
    this.#s.l1Misses++
    return MISSING
  }

  async #getSlow(key: string): Promise<unknown> {
    this.#checkKey(key)
    this.#assertOpen('get')
    const local = this.#l1Hit(key)
    if (local !== MISSING) return local
    if (this.#l2 === undefined) return undefined
    // #readL2, inlined: this is the hot L2 path, and every layer of promises costs
    const epoch = this.#epoch
    let raw: string | null
    if (!this.#l2Readable) return this.#l2Fallback(key)
    try {
      if (this.#genLoad !== undefined) await this.#ready()
      raw = await this.#run('get', GET, this.#entryKey(key))
    } catch (error) {
      this.#l2Failed('get', error)
      return this.#l2Fallback(key)
    }
    const env = raw === null ? undefined : this.#decode(key, raw)
    if (env !== undefined && env.kind !== 't' && env.freshUntil > now()) {
      this.#s.l2Hits++
      return this.#fromL2(key, env, epoch)
    }
    this.#s.l2Misses++
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
    this.#s.staleServed++
    this.#emit('stale-served', { key, reason })
  }

  /** Whether L2 may be read: configured, and no invalidation waiting to be replayed. */
  get #l2Readable(): boolean {
    return this.#l2 !== undefined && this.#pendingCount() === 0 && this.#guard?.available === true
  }

  async #readL2(key: string): Promise<L2Read & { epoch: number }> {
    const epoch = this.#epoch
    if (!this.#l2Readable) return { ok: false, token: undefined, epoch }
    try {
      if (this.#genLoad !== undefined) await this.#ready()
      const raw = await this.#run('get', GET, this.#entryKey(key))
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

  async #readL2Many(keys: readonly string[]): Promise<L2Read[] & { epoch: number }> {
    const epoch = this.#epoch
    const fail = () =>
      Object.assign(
        keys.map((): L2Read => ({ ok: false, token: undefined })),
        { epoch },
      )
    if (!this.#l2Readable) return fail()
    try {
      if (this.#genLoad !== undefined) await this.#ready()
      const raws = await this.#run('mget', (l2) => l2.mget(keys.map((key) => this.#entryKey(key))))
      return Object.assign(
        raws.map(
          (raw, i): L2Read => ({
            ok: true,
            token: envelopeToken(raw),
            envelope: raw === null ? undefined : this.#decode(keys[i] as string, raw),
            raw,
          }),
        ),
        { epoch },
      )
    } catch (error) {
      this.#l2Failed('mget', error)
      return fail()
    }
  }

  /** A fresh L2 entry: deserialize, copy to L1 with L2's remaining TTL (unless invalidated since the read began). */
  #fromL2(key: string, env: Envelope, epoch: number): unknown {
    if (env.kind === 'n') {
      this.#maybeBackfill(key, env, undefined, epoch)
      return undefined
    }
    const value = env.value
    this.#maybeBackfill(key, env, value, epoch)
    return value
  }

  /**
   * The envelope of a raw L2 value with its payload deserialized, or `undefined` (a miss, with
   * a `decode:error` event) when it cannot be read: not an envelope, a value written with
   * another serializer (a rolling deploy), or a payload the serializer rejects. Whatever
   * is stored at our keys, reads never reject because of it.
   */
  #decode(key: string, raw: string): Envelope | undefined {
    const env = decodeEnvelope(raw)
    if (env === undefined) {
      this.#decodeFailed(key, 'it is not an envelope of @ballast/cache')
      return undefined
    }
    if (env.kind !== 'v') return env
    const name = this.#serializer.name
    if (env.serializer !== undefined && env.serializer !== name) {
      this.#decodeFailed(key, `it was written with the ${env.serializer} serializer, not ${name}`)
      return undefined
    }
    try {
      env.value = this.#serializer.deserialize(env.payload)
    } catch (cause) {
      const why = cause instanceof Error ? cause.message : String(cause)
      this.#decodeFailed(key, `the ${name} serializer rejected its payload: ${why}`, cause)
      return undefined
    }
    return env
  }

  #decodeFailed(key: string, why: string, cause?: unknown): void {
    this.#s.decodeFailed++
    if (!this.#events.has('decode-failed')) return
    const error = new DecodeError(
      `the L2 value of key ${JSON.stringify(key)} was treated as a miss: ${why}`,
      { cause },
    )
    this.#emit('decode-failed', { key, error })
  }

  #maybeBackfill(key: string, env: Envelope, value: unknown, epoch: number): void {
    if (this.#l1 === undefined || !this.#stillValid(key, env.tags, epoch, env.token)) return
    this.#l1Set(key, {
      value,
      freshUntil: env.freshUntil,
      staleUntil: env.staleUntil,
      refreshAt: env.refreshAt,
      tags: env.tags,
      negative: env.kind === 'n',
      version: env.token,
      size: entryBytes(key, value, env.payload, undefined),
      promise: undefined,
    })
  }

  /**
   * A value within grace: L2's, or L1's when L2 could not be read, or L1's when L1 is trusted
   * and L2 holds no tombstone. An untrusted L1 (bus down) may have missed an invalidation.
   */
  #staleCandidate(
    key: string,
    env: Envelope | undefined,
    t: number,
    l2ok: boolean,
  ): Stale | undefined {
    if (env !== undefined && env.kind === 'v' && env.staleUntil > t) {
      return { value: env.value }
    }
    if (l2ok && (env?.kind === 't' || !this.#l1Trusted)) return undefined
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
    this.#checkKey(key)
    this.#assertOpen('getOrSet')
    if (typeof loader !== 'function') argument.invalid('loader', 'a function', loader)
    const o = this.#callOptions(options)
    const local = this.#l1Hit(key)
    if (local !== MISSING) return local
    const running = this.#flights.get(key) ?? this.#loads.get(key)
    if (running !== undefined) {
      this.#s.coalesced++
      return running
    }
    const flight = this.#flight(key, loader, o)
    this.#flights.set(key, flight)
    const forget = () => {
      if (this.#flights.get(key) === flight) this.#flights.delete(key)
    }
    flight.then(forget, forget)
    return flight
  }

  async #flight(key: string, loader: Loader<unknown>, o: CallOptions): Promise<unknown> {
    let read = await this.#readL2(key)
    let env = read.ok ? read.envelope : undefined
    let t = now()
    if (env !== undefined && env.kind !== 't' && env.freshUntil > t) {
      this.#s.l2Hits++
      return this.#fromL2(key, env, read.epoch)
    }
    if (read.ok) this.#s.l2Misses++
    if (!read.ok) {
      // L2 is down: an L1 entry still fresh (bus down, so not trusted) answers before the loader
      const entry = this.#l1?.get(key)
      if (entry !== undefined && entry.freshUntil > t) return entry.value
    }
    let stale = this.#staleCandidate(key, env, t, read.ok)

    if (
      stale === undefined &&
      this.#bloom !== undefined &&
      read.ok &&
      !(await this.#bloomMightContain(key))
    ) {
      return undefined
    }

    let owner: string | undefined
    if (o.lock && read.ok) {
      const deadline = Date.now() + this.#o.lockWait
      owner = this.#token()
      for (;;) {
        const acquired = await this.#run('lock', (l2) =>
          l2.acquire(this.#lockKey(key), owner as string, this.#o.lockLease),
        ).catch(() => undefined)
        if (acquired === undefined) {
          owner = undefined // L2 failed: load without the lock
          break
        }
        if (!acquired)
          await this.#waitForFill(
            key,
            Math.max(1, Math.min(deadline - Date.now(), this.#o.lockLease)),
          )
        // re-read: after a wake (the holder stored the value), or after acquiring (a previous holder may have)
        read = await this.#readL2(key)
        env = read.ok ? read.envelope : undefined
        t = now()
        if (env !== undefined && env.kind !== 't' && env.freshUntil > t) {
          if (acquired) await this.#releaseLock(key, owner as string, false)
          this.#s.l2Hits++
          return this.#fromL2(key, env, read.epoch)
        }
        stale = this.#staleCandidate(key, env, t, read.ok) ?? stale
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

    const load = this.#load(key, loader, o, read.token, stale)
    if (owner !== undefined) {
      const lockOwner = owner
      load.then(
        () => this.#releaseLock(key, lockOwner, true),
        () => this.#releaseLock(key, lockOwner, true),
      )
    }
    return this.#settle(key, load, stale, o)
  }

  /** Starts (or joins) the one load of `key` in this process; it writes back when done. */
  #load(
    key: string,
    loader: Loader<unknown>,
    o: CallOptions,
    observed: string | undefined,
    stale: Stale | undefined,
  ): Promise<unknown> {
    const running = this.#loads.get(key)
    if (running !== undefined) return running
    const started = exactNow()
    const startEpoch = this.#epoch
    const context: LoaderContext<unknown> = {
      key,
      staleValue: stale?.value,
      ttl: o.ttl,
      tags: o.tags,
    }
    this.#s.loaderCalls++
    const load = (async () => {
      const value = await loader(context)
      const ttl = argument.duration('context.ttl', context.ttl, { positive: true })
      await this.#writeBack(
        key,
        value,
        { ...o, ttl, tags: context.tags },
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
    load.then(forget, (error: unknown) => {
      forget()
      this.#s.loaderFailed++
      this.#emit('load-failed', { key, error })
    })
  }

  /** Waits for a load with the soft/hard timeouts and serves the stale value on failure (fail-safe). */
  async #settle(
    key: string,
    load: Promise<unknown>,
    stale: Stale | undefined,
    o: CallOptions,
  ): Promise<unknown> {
    if (stale !== undefined) {
      if (o.softTimeout === 0) {
        // stale-while-revalidate: the load goes on in the background
        this.#served(key, 'soft-timeout')
        return stale.value
      }
      const timer = delay(o.softTimeout, MISSING)
      try {
        const first = await Promise.race([load, timer.promise])
        if (first === MISSING) {
          this.#served(key, 'soft-timeout')
          return stale.value
        }
        return first
      } catch {
        this.#served(key, 'load-failed')
        return stale.value
      } finally {
        timer.cancel()
      }
    }
    if (o.hardTimeout === 0) return load
    const timer = delay(o.hardTimeout, MISSING)
    try {
      const first = await Promise.race([load, timer.promise])
      if (first === MISSING) {
        this.#s.loaderTimedOut++
        throw new LoaderTimeoutError(
          `the loader of key ${JSON.stringify(key)} did not finish within ${o.hardTimeout} ms`,
        )
      }
      return first
    } finally {
      timer.cancel()
    }
  }

  #refreshInBackground(key: string, loader: Loader<unknown>, o: CallOptions): void {
    if (this.#loads.has(key) || this.#flights.has(key) || this.#closed) return
    const refresh = (async () => {
      const read = await this.#readL2(key)
      const env = read.ok ? read.envelope : undefined
      const t = now()
      if (env !== undefined && env.kind === 'v' && env.refreshAt > t && env.freshUntil > t) {
        // another instance refreshed it already
        this.#fromL2(key, env, read.epoch)
        return
      }
      await this.#load(key, loader, o, read.token, undefined)
    })()
    refresh.catch(() => {
      // counted and emitted by #track; the cached value keeps serving until it expires
    })
  }

  /** Writes a loaded value: L2 first, only if the key is unchanged since the load began; then L1. */
  async #writeBack(
    key: string,
    value: unknown,
    o: CallOptions,
    observed: string | undefined,
    started: number,
    startEpoch: number,
  ): Promise<void> {
    const negative = value === undefined
    const payload = negative ? '' : serializeOrThrow(this.#serializer, key, value)
    const t = exactNow()
    const w = this.#shape(key, value, payload, negative, o, t)
    if (observed !== undefined && this.#l2 !== undefined) {
      if (t - started >= this.#o.tombstoneTtl) {
        // a tombstone left by a delete during this load may be gone: we cannot tell, so do not write
        this.#s.conflicts++
        this.#emit('conflict-detected', { key })
        return
      }
      try {
        if (o.tags !== undefined && o.tags.length > 0) {
          const tags = o.tags
          await this.#run('tag', (l2) =>
            l2.addTags(this.#tagMembers([{ tags, key, px: w.px }], t), t),
          )
        }
        const written = await this.#run('cas', (l2) =>
          l2.cas(this.#entryKey(key), observed, w.text, w.px),
        )
        if (!written) {
          this.#s.conflicts++
          this.#emit('conflict-detected', { key })
          return
        }
        if (!negative && this.#bloom !== undefined)
          await this.#bloomAdd([key]).catch(() => undefined)
      } catch (error) {
        this.#l2Failed('cas', error)
      }
    }
    if (this.#stillValid(key, o.tags, startEpoch)) this.#l1Set(key, w.entry)
    else if (
      observed !== undefined &&
      o.tags !== undefined &&
      this.#tagInvalidatedSince(o.tags, startEpoch)
    ) {
      // a deleteByTag reached us while this load ran: its value may predate it, and if the
      // tombstone cannot be written now it is replayed like any failed invalidation
      await this.#tombstone([key]).catch((error: unknown) => {
        this.#l2Failed('delete', error)
        this.#defer([key], [], false)
      })
    }
  }

  /** The L1 entry and L2 text of a write. */
  #shape(
    key: string,
    value: unknown,
    payload: string,
    negative: boolean,
    o: CallOptions,
    t: number,
  ): { entry: L1Entry; text: string; px: number } {
    const ttl = negative
      ? o.negativeTtl
      : Math.max(1, Math.round(o.ttl * (1 - this.#o.jitter * Math.random())))
    const grace = negative ? 0 : o.grace
    const freshUntil = t + ttl
    const staleUntil = freshUntil + grace
    const refreshAt =
      !negative && this.#o.earlyRefresh > 0
        ? t + ttl * this.#o.earlyRefresh
        : Number.POSITIVE_INFINITY
    // a value's version names its serializer (see envelope.ts); a negative entry has no payload
    const version = negative
      ? this.#token()
      : `${this.#token()}${SERIALIZER_MARK}${this.#serializer.name}`
    const text = encodeEnvelope(
      negative ? 'n' : 'v',
      version,
      freshUntil,
      staleUntil,
      refreshAt,
      o.tags,
      payload,
    )
    return {
      entry: {
        value: negative ? undefined : value,
        freshUntil,
        staleUntil,
        refreshAt,
        tags: o.tags,
        negative,
        version,
        size: entryBytes(key, value, payload, o.tags),
        promise: undefined,
      },
      text,
      px: Math.max(1, staleUntil - t),
    }
  }

  #l1Set(key: string, entry: L1Entry): void {
    if (this.#l1 === undefined) return
    const ttl = entry.staleUntil - now()
    if (ttl <= 0) return
    this.#l1.set(key, entry, ttl)
  }

  // ---------------------------------------------------------------- internals: distributed lock

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

  #wake(keys: readonly string[]): void {
    for (const key of keys) {
      const waiters = this.#fillWaiters.get(key)
      if (waiters !== undefined) for (const wake of [...waiters]) wake()
    }
  }

  async #releaseLock(key: string, owner: string, announce: boolean): Promise<void> {
    try {
      await this.#run('unlock', (l2) => l2.release(this.#lockKey(key), owner))
      if (announce) await this.#publish('f', { k: [key] })
    } catch (error) {
      this.#l2Failed('unlock', error) // the lease expires by itself
    }
  }

  // ---------------------------------------------------------------- internals: Bloom filter

  async #bloomAdd(keys: readonly string[]): Promise<void> {
    const shape = this.#bloom
    if (shape === undefined || keys.length === 0) return
    const offsets = keys.flatMap((key) => bloomOffsets(shape, key))
    await this.#run('bloom', (l2) => l2.setBits(this.#bloomKey(), offsets))
  }

  async #bloomMightContain(key: string): Promise<boolean> {
    const shape = this.#bloom as BloomShape
    try {
      const bits = await this.#run('bloom', (l2) =>
        l2.getBits(this.#bloomKey(), bloomOffsets(shape, key)),
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
    const epoch = ++this.#epoch
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i] as string
      const version = versions?.[i]
      const known = version === undefined || version === '' ? undefined : version
      if (known === undefined || this.#l1?.get(key)?.version !== known) this.#l1?.delete(key)
      this.#keyEpochs.set(key, epoch)
      // absent reads as undefined: no entry to keep for a version nobody named
      if (known === undefined) this.#keyVersions.delete(key)
      else this.#keyVersions.set(key, known)
    }
    this.#wake(keys)
    if (this.#keyEpochs.size > MAX_TRACKED_INVALIDATIONS) this.#forgetEpochs()
  }

  #invalidateTagsLocal(tags: readonly string[]): void {
    const epoch = ++this.#epoch
    for (const tag of tags) this.#tagEpochs.set(tag, epoch)
    if (this.#l1 !== undefined) {
      // A Set, so the sweep costs L1 entries x their own tags, not x the message's tags: a
      // forged message with thousands of tags must not hold the event loop of every instance.
      const gone = new Set(tags)
      const doomed: string[] = []
      for (const [key, entry] of this.#l1.entries()) {
        if (entry.tags?.some((tag) => gone.has(tag))) doomed.push(key)
      }
      for (const key of doomed) this.#l1.delete(key)
    }
    if (this.#tagEpochs.size > MAX_TRACKED_INVALIDATIONS) this.#forgetEpochs()
  }

  /** Too many to track: every read in flight is treated as invalidated. */
  #forgetEpochs(): void {
    this.#keyEpochs.clear()
    this.#keyVersions.clear()
    this.#tagEpochs.clear()
    this.#floorEpoch = this.#epoch
  }

  #flush(reason: FlushReason): void {
    this.#epoch++
    this.#forgetEpochs()
    this.#l1?.clear()
    this.#s.flushes++
    this.#emit('l1-flushed', { reason })
  }

  #tagInvalidatedSince(tags: readonly string[], epoch: number): boolean {
    for (const tag of tags) if ((this.#tagEpochs.get(tag) ?? 0) > epoch) return true
    return false
  }

  /** Whether a read or load that began at `epoch` may still write L1. */
  #stillValid(
    key: string,
    tags: readonly string[] | undefined,
    epoch: number,
    version?: string,
  ): boolean {
    if (epoch < this.#floorEpoch) return false
    if ((this.#keyEpochs.get(key) ?? 0) > epoch) {
      // invalidated meanwhile; fine only if the invalidation was for the very write we read
      if (version === undefined || this.#keyVersions.get(key) !== version) return false
    }
    return tags === undefined || !this.#tagInvalidatedSince(tags, epoch)
  }

  #onBusMessage(message: BusMessage): void {
    switch (message.t) {
      case 'k':
        if (message.k !== undefined) {
          this.#invalidateLocal(message.k, Array.isArray(message.v) ? message.v : undefined)
          this.#emit('invalidated', { origin: message.o, keys: message.k })
        }
        return
      case 'g':
        if (message.g !== undefined) {
          this.#invalidateTagsLocal(message.g)
          this.#emit('invalidated', { origin: message.o, tags: message.g })
        }
        return
      case 'c':
        this.#flush('clear')
        // the message's number is not trusted (anyone with Redis access can publish): the
        // generation key is, and a genuine clear incremented it before publishing
        this.#genLoad = this.#loadGen()
        this.#emit('invalidated', { origin: message.o, clear: true })
        return
      case 'f':
        if (message.k !== undefined) this.#wake(message.k)
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

  async #publish(
    type: 'k' | 'g' | 'c' | 'f',
    fields: Pick<BusMessage, 'k' | 'v' | 'g' | 'n'>,
  ): Promise<void> {
    await this.#bus?.publish(type, fields)
  }

  // ---------------------------------------------------------------- internals: L2 plumbing

  #run<R, A = undefined>(
    operation: string,
    fn: (l2: L2, arg: A) => Promise<R>,
    arg?: A,
  ): Promise<R> {
    const l2 = this.#l2 as L2
    if (l2.client.status !== 'ready') {
      // reconnecting: fail at once, and do not count it against the breaker (nothing was tried).
      // The subscription may have dropped with the connection: L1 is not trusted until it is proven.
      this.#bus?.suspect(`the L2 client is ${l2.client.status}`)
      return Promise.reject(
        new L2UnavailableError(`L2 ${operation} skipped: the client is ${l2.client.status}`),
      )
    }
    return (this.#guard as L2Guard).run(operation, fn, l2, arg as A)
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
    this.#s.l2Failed++
    this.#emit('l2-failed', {
      operation,
      error: error instanceof Error ? error : new Error(String(error)),
    })
  }

  /** Reads the namespace generation; the returned promise may reject, and nobody has to await it. */
  #loadGen(): Promise<void> {
    const load = this.#readGen()
    load.catch(() => undefined)
    return load
  }

  async #readGen(): Promise<void> {
    try {
      const raw = await this.#run('generation', (l2) => l2.get(`${this.#base}gen`))
      const gen = raw === null ? 0 : /^\d{1,16}$/.test(raw) ? Number(raw) : Number.NaN
      if (!Number.isSafeInteger(gen)) {
        // written by someone else: which generation is current cannot be known, so L2 is not read
        throw new L2UnavailableError(
          `the generation key holds ${JSON.stringify(raw?.slice(0, 40))}, not a safe integer`,
        )
      }
      if (gen > this.#gen) this.#gen = gen
    } catch (error) {
      this.#l2Failed('generation', error)
      throw error
    }
  }

  /** Waits for the namespace generation; reloads it when the last attempt failed. */
  async #ready(): Promise<void> {
    const load = this.#genLoad
    if (load === undefined) return
    try {
      await load
      if (this.#genLoad === load) this.#genLoad = undefined
    } catch (error) {
      // fail fast (the caller falls back), and try again in the background
      if (this.#genLoad === load) this.#genLoad = this.#loadGen()
      throw error
    }
  }

  /** After a reconnect: reads the generation until it succeeds, then replays deferred invalidations. */
  async #recover(): Promise<void> {
    while (!this.#closed && this.#bus?.healthy === true) {
      this.#genLoad = this.#loadGen()
      try {
        await this.#genLoad
        this.#genLoad = undefined
        await this.#replay()
        return
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    }
  }

  async #tombstone(keys: readonly string[]): Promise<void> {
    const t = exactNow()
    const until = t + this.#o.tombstoneTtl
    await this.#run('delete', (l2) =>
      l2.setMany(
        keys.map((key) => ({
          key: this.#entryKey(key),
          value: encodeEnvelope('t', this.#token(), 0, until, 0, undefined, ''),
          px: this.#o.tombstoneTtl,
        })),
      ),
    )
  }

  /** Tag writes grouped by tag key: one script call per tag (and chunk), however many keys carry it. */
  #tagMembers(
    tagWrites: readonly { tags: readonly string[]; key: string; px: number }[],
    t: number,
  ): Map<string, TagMember[]> {
    const byTag = new Map<string, TagMember[]>()
    for (const tw of tagWrites) {
      for (const tag of tw.tags) {
        const tagKey = this.#tagKey(tag)
        let members = byTag.get(tagKey)
        if (members === undefined) {
          members = []
          byTag.set(tagKey, members)
        }
        members.push({ member: tw.key, until: t + tw.px })
      }
    }
    return byTag
  }

  /**
   * Tombstones a tag's members and removes them from its set, `TAG_CHUNK` at a time, so each
   * L2 call stays small and within `l2Timeout` whatever the size of the tag. Members are
   * removed only once tombstoned: a failure part-way leaves the rest for the replay.
   */
  async #deleteTagsL2(tags: readonly string[]): Promise<void> {
    for (const tag of tags) {
      const tagKey = this.#tagKey(tag)
      await this.#run('deleteByTag', (l2) => l2.pruneTag(tagKey, exactNow()))
      // by ZSCAN: every member present from start to end is reached, whatever writers add
      // meanwhile (a member written again during the scan keeps its place, see removeTagMembers)
      let zcursor = '0'
      do {
        const [next, members] = await this.#run('deleteByTag', (l2) =>
          l2.scanTag(tagKey, zcursor, TAG_CHUNK),
        )
        if (members.length > 0) {
          await this.#tombstone(members.map((m) => m.member))
          await this.#run('deleteByTag', (l2) => l2.removeTagMembers(tagKey, members))
        }
        zcursor = next
      } while (zcursor !== '0')
      // a tag set written by a version before sorted sets (a rolling deploy): same, by SSCAN
      const legacyKey = this.#legacyTagKey(tag)
      let cursor = '0'
      do {
        const [next, members] = await this.#run('deleteByTag', (l2) =>
          l2.scanLegacyTag(legacyKey, cursor, TAG_CHUNK),
        )
        if (members.length > 0) {
          await this.#tombstone(members)
          await this.#run('deleteByTag', (l2) => l2.removeLegacyTagMembers(legacyKey, members))
        }
        cursor = next
      } while (cursor !== '0')
    }
  }

  async #clearL2(): Promise<void> {
    const gen = await this.#run('clear', (l2) => l2.incr(`${this.#base}gen`))
    if (gen > this.#gen) this.#gen = gen
    await this.#publish('c', { n: gen })
  }

  #defer(keys: readonly string[], tags: readonly string[], clear: boolean): void {
    const p = this.#pending
    const stamp = ++this.#deferrals
    if (clear) p.clear = stamp
    for (const key of keys) p.keys.set(key, stamp)
    for (const tag of tags) p.tags.set(tag, stamp)
    if (p.keys.size + p.tags.size > this.#o.maxPending) {
      p.keys.clear()
      p.tags.clear()
      p.clear = stamp
    }
    this.#scheduleReplay()
  }

  #scheduleReplay(): void {
    if (this.#replayTimer !== undefined || this.#closed) return
    this.#replayTimer = setTimeout(() => {
      this.#replayTimer = undefined
      void this.#replay()
    }, this.#o.replayDelay)
    this.#replayTimer.unref()
  }

  #pendingCount(): number {
    const p = this.#pending
    return p.keys.size + p.tags.size + (p.clear > 0 ? 1 : 0)
  }

  /** Replays invalidations made while L2 was down, before L2 is read again. */
  #replay(): Promise<void> {
    if (this.#replaying !== undefined || this.#pendingCount() === 0 || this.#closed)
      return this.#replaying ?? Promise.resolve()
    const p = this.#pending
    const keyStamps = [...p.keys]
    const tagStamps = [...p.tags]
    const keys = keyStamps.map(([key]) => key)
    const tags = tagStamps.map(([tag]) => tag)
    const clearStamp = p.clear
    const clear = clearStamp > 0
    this.#replaying = (async () => {
      try {
        if (clear) await this.#clearL2()
        else {
          if (keys.length > 0) {
            await this.#tombstone(keys)
            await this.#publish('k', { k: keys })
          }
          if (tags.length > 0) {
            await this.#deleteTagsL2(tags)
            await this.#publish('g', { g: tags })
          }
        }
        // only what this replay covered: a deferral made meanwhile has a newer stamp and stays
        if (p.clear === clearStamp) p.clear = 0
        for (const [key, stamp] of keyStamps) if (p.keys.get(key) === stamp) p.keys.delete(key)
        for (const [tag, stamp] of tagStamps) if (p.tags.get(tag) === stamp) p.tags.delete(tag)
        this.#emit('invalidations-replayed', { keys: keys.length, tags: tags.length, clear })
      } catch (error) {
        this.#l2Failed('replay', error)
      } finally {
        this.#replaying = undefined
        // whatever is left (a failure, or deferred meanwhile) is tried again later
        if (this.#pendingCount() > 0) this.#scheduleReplay()
      }
    })()
    return this.#replaying
  }

  // ---------------------------------------------------------------- internals: names and checks

  #entryKey(key: string): string {
    return `${this.#base}${this.#gen}:e:${key}`
  }

  #tagKey(tag: string): string {
    return `${this.#base}${this.#gen}:z:${tag}`
  }

  /** Where versions before sorted-set tags kept a tag (a plain set, never pruned). */
  #legacyTagKey(tag: string): string {
    return `${this.#base}${this.#gen}:t:${tag}`
  }

  #lockKey(key: string): string {
    return `${this.#base}${this.#gen}:l:${key}`
  }

  #bloomKey(): string {
    return `${this.#base}bloom`
  }

  #token(): string {
    return `${this.#instanceId}.${(++this.#tokenCounter).toString(36)}`
  }

  #checkKey(key: unknown, what = 'key'): void {
    if (typeof key !== 'string' || key.length === 0 || key.length > this.#o.maxKeyLength) {
      argument.invalid(
        what,
        `a non-empty string of at most ${this.#o.maxKeyLength} characters`,
        typeof key === 'string' && key.length > 64 ? `a string of ${key.length} characters` : key,
      )
    }
  }

  #assertOpen(operation: string): void {
    if (this.#closed) throw new CacheClosedError('cache', operation)
  }

  #callOptions(options: (SetOptions & Partial<GetOrSetOptions>) | undefined): CallOptions {
    const o = this.#o
    if (options === undefined) {
      return {
        ttl: o.ttl,
        grace: o.grace,
        tags: undefined,
        softTimeout: o.softTimeout,
        hardTimeout: o.hardTimeout,
        lock: false,
        negativeTtl: o.negativeTtl,
      }
    }
    const tags = options.tags
    if (tags !== undefined) {
      if (!Array.isArray(tags)) argument.invalid('tags', 'an array of strings', tags)
      for (const tag of tags) this.#checkKey(tag, 'tags')
    }
    return {
      ttl:
        options.ttl === undefined
          ? o.ttl
          : argument.duration('ttl', options.ttl, { positive: true }),
      grace: options.grace === undefined ? o.grace : argument.duration('grace', options.grace),
      tags: tags === undefined || tags.length === 0 ? undefined : [...tags],
      softTimeout:
        options.softTimeout === undefined
          ? o.softTimeout
          : argument.duration('softTimeout', options.softTimeout),
      hardTimeout:
        options.hardTimeout === undefined
          ? o.hardTimeout
          : argument.duration('hardTimeout', options.hardTimeout),
      lock: options.lock === undefined ? false : argument.boolean('lock', options.lock),
      negativeTtl:
        options.negativeTtl === undefined
          ? o.negativeTtl
          : argument.duration('negativeTtl', options.negativeTtl),
    }
  }

  /** Emits only when someone listens; a listener that throws never reaches the caller (see Emitter). */
  #emit<E extends keyof CacheEvents>(event: E, payload: CacheEvents[E]): void {
    if (this.#events.has(event)) this.#events.emit(event, payload)
  }
}

function pick<T>(
  result: Map<string, T | undefined> | Record<string, T | undefined> | readonly (T | undefined)[],
  key: string,
  positionOf: (key: string) => number,
): T | undefined {
  if (result instanceof Map) return result.get(key)
  if (Array.isArray(result)) return result[positionOf(key)] as T | undefined
  if (typeof result === 'object' && result !== null) {
    return Object.hasOwn(result, key) ? (result as Record<string, T | undefined>)[key] : undefined
  }
  return undefined
}
