import { checkProviders, merge, type TelemetryOptions } from '@ballast/shared'
import type { CacheOptions, GetOrSetOptions, SetOptions } from '../cacheOptions.js'
import {
  DEFAULT_BLOOM_OPTIONS,
  DEFAULT_CACHE_OPTIONS,
  DEFAULT_GET_OR_SET_OPTIONS,
} from '../cacheOptions.js'
import type { L1Store } from '../l1Store.js'
import { createLruStore, type LruStoreOptions } from '../lruStore.js'
import { devalueSerializer, type Serializer } from '../serializer.js'
import { type BloomShape, bloomShape } from './bloom.js'
import type { RedisClient } from './l2.js'
import { argument, option } from './validate.js'

/** The cache's options after defaults and validation, durations in ms. */
export interface ResolvedOptions {
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
  maxPendingInvalidations: number
  /** How long after a failed invalidation (or a failed replay) the replay is tried again. */
  replayDelay: number
}

/** Per-call options after defaults. */
export interface CallOptions {
  ttl: number
  grace: number
  tags: readonly string[] | undefined
  softTimeout: number
  hardTimeout: number
  lock: boolean
  negativeTtl: number
}

/** The L2 side of the options: absent without `redis`. */
export interface ResolvedL2 {
  redis: RedisClient
  subscriber: RedisClient | undefined
  timeout: number
  breaker: {
    windowSize: number
    errorThresholdPercentage: number
    volumeThreshold: number
    resetTimeout: number
  }
  heartbeatInterval: number
  heartbeatTimeout: number
}

/** Everything the cache needs from its options, checked. */
export interface Resolution {
  options: ResolvedOptions
  serializer: Serializer
  l1: L1Store | undefined
  bloom: BloomShape | undefined
  l2: ResolvedL2 | undefined
  /** The providers given (checked), or none: the global ones. */
  telemetry: TelemetryOptions
}

/**
 * Merges the options over {@link DEFAULT_CACHE_OPTIONS} (an option given as `undefined` keeps
 * its default, nested `breaker`, `lock` and `bloom` included) and checks every one of them.
 *
 * @throws InvalidArgumentError naming the first bad option.
 */
export function resolveOptions(options: CacheOptions): Resolution {
  if (typeof options !== 'object' || options === null) option.object('options', options)
  const merged = merge(DEFAULT_CACHE_OPTIONS, options)
  // no ':' in a namespace: `a` and `a:0:e` would share keys
  const namespace = option.string('namespace', merged.namespace, { pattern: /^[^\s{}:]+$/ })
  const prefix = option.string('prefix', merged.prefix, { pattern: /^[^\s{}]+$/ })
  const breaker = option.object('breaker', merged.breaker)
  const lock = option.object('lock', merged.lock)
  const resolved: ResolvedOptions = {
    namespace,
    prefix,
    ttl: option.duration('ttl', merged.ttl, { positive: true }),
    grace: option.duration('grace', merged.grace),
    jitter: option.number('jitter', merged.jitter, { min: 0, max: 0.9 }),
    negativeTtl: option.duration('negativeTtl', merged.negativeTtl),
    earlyRefresh: option.number('earlyRefresh', merged.earlyRefresh, { min: 0, max: 0.99 }),
    softTimeout: option.duration('softTimeout', merged.softTimeout),
    hardTimeout: option.duration('hardTimeout', merged.hardTimeout),
    maxKeyLength: option.positiveInteger('maxKeyLength', merged.maxKeyLength),
    tombstoneTtl: option.duration('tombstoneTtl', merged.tombstoneTtl, { positive: true }),
    lockLease: option.duration('lock.lease', lock.lease, { positive: true }),
    lockWait: option.duration('lock.wait', lock.wait),
    maxPendingInvalidations: option.positiveInteger(
      'maxPendingInvalidations',
      merged.maxPendingInvalidations,
    ),
    replayDelay: 0,
  }
  const l2Timeout = option.duration('l2Timeout', merged.l2Timeout, { positive: true })
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
  resolved.replayDelay = resetTimeout
  const heartbeatInterval = option.duration('heartbeatInterval', merged.heartbeatInterval, {
    positive: true,
  })
  const heartbeatTimeout = option.duration('heartbeatTimeout', merged.heartbeatTimeout, {
    positive: true,
  })
  if (heartbeatTimeout <= heartbeatInterval) {
    option.invalid(
      'heartbeatTimeout',
      `more than heartbeatInterval (${heartbeatInterval} ms)`,
      heartbeatTimeout,
    )
  }

  const serializer = merged.serializer ?? devalueSerializer
  if (typeof serializer?.serialize !== 'function' || typeof serializer.deserialize !== 'function') {
    option.invalid('serializer', 'an object with serialize() and deserialize()', serializer)
  }
  // the name goes into every value's token: a reader with another serializer then knows
  option.string('serializer.name', serializer.name, { pattern: /^[A-Za-z0-9_.-]{1,64}$/ })

  const l1Option = merged.l1 ?? {}
  let l1: L1Store | undefined
  if (l1Option === false) l1 = undefined
  else if (typeof (l1Option as L1Store).get === 'function') l1 = l1Option as L1Store
  else if (typeof l1Option === 'object' && l1Option !== null)
    l1 = createLruStore(l1Option as LruStoreOptions)
  else option.invalid('l1', 'an L1Store, LRU bounds or false', l1Option)

  const bloomOption = merged.bloom
  let bloom: BloomShape | undefined
  if (bloomOption === false) bloom = undefined
  else {
    const bloomOptions = merge(DEFAULT_BLOOM_OPTIONS, option.object('bloom', bloomOption))
    const items = option.positiveInteger('bloom.expectedItems', bloomOptions.expectedItems)
    const rate = option.number('bloom.falsePositiveRate', bloomOptions.falsePositiveRate, {
      min: 1e-9,
      max: 0.5,
    })
    bloom = bloomShape(items, rate)
  }

  const telemetry = checkProviders(option, options)
  const redis = merged.redis as RedisClient | undefined
  if (redis === undefined) {
    if (merged.subscriber !== undefined)
      option.invalid('subscriber', 'no subscriber without "redis"', 'a client')
    if (bloom !== undefined)
      option.invalid('bloom', 'false without "redis" (the filter lives in Redis)', bloomOption)
    return { options: resolved, serializer, l1, bloom, l2: undefined, telemetry }
  }
  if (typeof (redis as { get?: unknown }).get !== 'function') {
    option.invalid('redis', 'an ioredis Redis or Cluster', redis)
  }
  return {
    options: resolved,
    serializer,
    l1,
    bloom,
    telemetry,
    l2: {
      redis,
      subscriber: merged.subscriber as RedisClient | undefined,
      timeout: l2Timeout,
      breaker: { windowSize, errorThresholdPercentage, volumeThreshold, resetTimeout },
      heartbeatInterval,
      heartbeatTimeout,
    },
  }
}

/** Throws the `invalid argument` error unless `key` is a non-empty string of at most `maxKeyLength`. */
export function checkKey(key: unknown, maxKeyLength: number, what = 'key'): void {
  if (typeof key !== 'string' || key.length === 0 || key.length > maxKeyLength) {
    argument.invalid(
      what,
      `a non-empty string of at most ${maxKeyLength} characters`,
      typeof key === 'string' && key.length > 64 ? `a string of ${key.length} characters` : key,
    )
  }
}

/** A call's options over the cache's: what is not given is the cache's. */
export function resolveCallOptions(
  defaults: ResolvedOptions,
  options: (SetOptions & Partial<GetOrSetOptions>) | undefined,
): CallOptions {
  if (options === undefined) {
    return {
      ttl: defaults.ttl,
      grace: defaults.grace,
      tags: undefined,
      softTimeout: defaults.softTimeout,
      hardTimeout: defaults.hardTimeout,
      lock: false,
      negativeTtl: defaults.negativeTtl,
    }
  }
  const tags = options.tags
  if (tags !== undefined) {
    if (!Array.isArray(tags)) argument.invalid('tags', 'an array of strings', tags)
    for (const tag of tags) checkKey(tag, defaults.maxKeyLength, 'tags')
  }
  return {
    ttl:
      options.ttl === undefined
        ? defaults.ttl
        : argument.duration('ttl', options.ttl, { positive: true }),
    grace: options.grace === undefined ? defaults.grace : argument.duration('grace', options.grace),
    tags: tags === undefined || tags.length === 0 ? undefined : [...tags],
    softTimeout:
      options.softTimeout === undefined
        ? defaults.softTimeout
        : argument.duration('softTimeout', options.softTimeout),
    hardTimeout:
      options.hardTimeout === undefined
        ? defaults.hardTimeout
        : argument.duration('hardTimeout', options.hardTimeout),
    lock:
      options.lock === undefined
        ? DEFAULT_GET_OR_SET_OPTIONS.lock
        : argument.boolean('lock', options.lock),
    negativeTtl:
      options.negativeTtl === undefined
        ? defaults.negativeTtl
        : argument.duration('negativeTtl', options.negativeTtl),
  }
}
