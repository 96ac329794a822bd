import {
  type Duration,
  Emitter,
  type Listener,
  merge,
  type ObservedInstrument,
  observe,
  type TelemetryOptions,
  type Unsubscribe,
} from '@ballast/shared'
import type { Meter, Span } from '@opentelemetry/api'
import { RateLimitedError, RateLimiterUnavailableError, ResilienceClosedError } from './errors.js'
import { isRedisLike, type RedisLike, withTimeout } from './internal/lua.js'
import { GCRA_BATCH_SCRIPT, GCRA_SCRIPT } from './internal/scripts.js'
import {
  DECISION,
  RATE_LIMITER_NAME,
  RedisRoundTrips,
  type RoundTrip,
  resilienceTelemetry,
} from './internal/telemetry.js'
import { check, checkArgument } from './internal/validate.js'

/** Options of {@link createRateLimiter}. */
export interface RateLimiterOptions extends TelemetryOptions {
  /** Calls allowed per `interval` on average, per key. */
  limit: number
  /**
   * Name of the limiter in telemetry (the `ballast.resilience.rate_limiter.name` attribute):
   * give each limiter of a process its own, from a fixed set (`'login'`, `'api'`).
   * @default 'rate-limiter'
   */
  name?: string
  /**
   * The period `limit` is counted over: milliseconds, or a string such as `'1m'`.
   * @default 1000
   */
  interval?: Duration
  /**
   * How many calls may come at once after a quiet period (the bucket's size).
   * @default limit
   */
  burst?: number
  /**
   * An ioredis `Redis` or `Cluster`: every instance then counts against one budget per key
   * (GCRA in one Lua script, one round trip per decision, on Redis's clock). Without it the
   * limiter is a token bucket in this process.
   * @default none (local)
   */
  redis?: RedisLike
  /**
   * Prefix of the Redis keys (`<prefix><key>`).
   * @default 'rl:'
   */
  prefix?: string
  /**
   * Redis limiter on a standalone `Redis` only: decisions asked for in the same tick go to
   * Redis in one EVALSHA (still one round trip each, fewer commands for the server and the
   * client). Ignored on a `Cluster`, where keys live on different nodes.
   * @default true
   */
  batch?: boolean
  /**
   * Redis limiter only: the longest wait for one round trip. Past it, or when the client
   * fails the call, the decision rejects with {@link RateLimiterUnavailableError}
   * (retryable); a reply that comes later is dropped.
   * @default 2000
   */
  commandTimeout?: Duration
  /**
   * Local limiter only: keys kept in memory. When it is full, a new key evicts the least
   * recently used one (a call, allowed or refused, is a use), in O(1). An evicted key starts
   * again with a full bucket, so size it above the number of keys active within one
   * `interval`.
   * @default 100000
   */
  maxKeys?: number
}

/** Defaults of {@link RateLimiterOptions} (frozen; `limit` has none, `burst` defaults to `limit`). */
export const DEFAULT_RATE_LIMITER_OPTIONS: Readonly<
  Required<
    Pick<
      RateLimiterOptions,
      'name' | 'interval' | 'batch' | 'prefix' | 'commandTimeout' | 'maxKeys'
    >
  >
> = Object.freeze({
  name: 'rate-limiter',
  interval: 1000,
  batch: true,
  prefix: 'rl:',
  commandTimeout: 2000,
  maxKeys: 100_000,
})

/** The decision on one call. */
export interface RateLimitResult {
  /** Whether the call may go ahead. */
  allowed: boolean
  /** Calls of cost 1 still allowed right now. */
  remaining: number
  /** When refused: milliseconds until a call of the same cost would be allowed; else 0. */
  retryAfterMs: number
}

/** Events of a {@link RateLimiter}, by name. */
export interface RateLimiterEvents {
  /** A call was refused. */
  limited: LimitedEvent
}

/** Payload of `limited`. */
export interface LimitedEvent {
  /** The key that was limited. */
  key: string
  /** Milliseconds until a call would be allowed. */
  retryAfterMs: number
}

/** Counters of a {@link RateLimiter} since it was created. */
export interface RateLimiterStats {
  /** Calls allowed. */
  allowed: number
  /** Calls refused. */
  limited: number
  /** Keys held in memory (local limiter only; 0 for Redis). */
  keys: number
}

/**
 * A rate limiter per key (user, IP, API token, dependency): {@link LocalRateLimiter} in
 * process, {@link RedisRateLimiter} shared by every instance. Create one with
 * {@link createRateLimiter}.
 */
export interface RateLimiter {
  /** Decides on a call of `cost` (default 1) for `key`; resolves with the decision, never rejects on a limit. */
  take(key: string, cost?: number): Promise<RateLimitResult>
  /** Like {@link RateLimiter.take}, but rejects with a {@link RateLimitedError} when refused. */
  consume(key: string, cost?: number): Promise<RateLimitResult>
  /**
   * Gives `key` its full budget back, e.g. an account's login attempts after a successful
   * login. With Redis, for every instance at once.
   */
  reset(key: string): Promise<void>
  /** Counters since creation. */
  stats(): RateLimiterStats
  /**
   * Adds a listener; a listener that throws does not break the decision (its error is
   * rethrown in a microtask).
   * @returns A function that removes the listener.
   */
  on<K extends keyof RateLimiterEvents>(
    event: K,
    listener: Listener<RateLimiterEvents[K]>,
  ): Unsubscribe
  /** Adds a listener called at most once; returns a function that removes it. */
  once<K extends keyof RateLimiterEvents>(
    event: K,
    listener: Listener<RateLimiterEvents[K]>,
  ): Unsubscribe
  /** Removes a listener. */
  off<K extends keyof RateLimiterEvents>(event: K, listener: Listener<RateLimiterEvents[K]>): void
  /**
   * Releases timers and memory; a Redis client is the caller's to close. Afterwards `take()`,
   * `consume()` and `reset()` reject with {@link ResilienceClosedError}.
   */
  close(): Promise<void>
}

/** The rate limiter's instruments (README, Telemetry). */
const RATE_LIMITER_INSTRUMENTS = {
  'ballast.resilience.rate_limiter.decisions': {
    kind: 'counter',
    unit: '{decision}',
    description: 'Decisions by outcome: allowed, limited',
  },
  'ballast.resilience.rate_limiter.keys': {
    kind: 'upDownCounter',
    unit: '{key}',
    description: 'Keys held in memory (local limiter; 0 with Redis)',
  },
} satisfies Record<string, ObservedInstrument>

/** Registers the limiter's observable instruments, read from its `stats()`. */
function observeLimiter(meter: Meter, name: string, limiter: RateLimiter): () => void {
  const named = Object.freeze({ [RATE_LIMITER_NAME]: name })
  const allowed = Object.freeze({ ...named, [DECISION]: 'allowed' })
  const limited = Object.freeze({ ...named, [DECISION]: 'limited' })
  return observe(meter, RATE_LIMITER_INSTRUMENTS, (record) => {
    const s = limiter.stats()
    record('ballast.resilience.rate_limiter.decisions', s.allowed, allowed)
    record('ballast.resilience.rate_limiter.decisions', s.limited, limited)
    record('ballast.resilience.rate_limiter.keys', s.keys, named)
  })
}

/** The decision a GCRA reply stands for, on its span. */
function describeDecision(span: Span, reply: unknown): void {
  span.setAttribute(DECISION, (reply as number) >= 0 ? 'allowed' : 'limited')
}

const ALLOWED_IN_BATCH = 'ballast.resilience.rate_limiter.allowed'
const LIMITED_IN_BATCH = 'ballast.resilience.rate_limiter.limited'

/** The decisions of a batched reply, on its span: how many, how many of each. */
function describeDecisions(span: Span, replies: unknown): void {
  const r = replies as number[]
  let allowed = 0
  for (const reply of r) if (reply >= 0) allowed++
  span.setAttribute('db.operation.batch.size', r.length)
  span.setAttribute(ALLOWED_IN_BATCH, allowed)
  span.setAttribute(LIMITED_IN_BATCH, r.length - allowed)
}

interface Gcra {
  /** Emission interval: ms per unit of cost. */
  emissionInterval: number
  /** Burst tolerance: how far ahead of now the schedule may run, in ms. */
  burstTolerance: number
}

function validate(options: RateLimiterOptions): Gcra & {
  name: string
  prefix: string
  batch: boolean
  commandTimeout: number
  maxKeys: number
} {
  check.object('options', options)
  const o = merge(DEFAULT_RATE_LIMITER_OPTIONS, options)
  const limit = check.positiveNumber('limit', o.limit)
  const interval = check.duration('interval', o.interval, { positive: true })
  const burst = o.burst === undefined ? limit : check.positiveInteger('burst', o.burst)
  if (o.redis !== undefined && !isRedisLike(o.redis))
    check.invalid('redis', 'an ioredis Redis or Cluster', o.redis)
  const emissionInterval = interval / limit
  return {
    name: check.string('name', o.name),
    prefix: check.string('prefix', o.prefix),
    batch: check.boolean('batch', o.batch),
    commandTimeout: check.duration('commandTimeout', o.commandTimeout, { positive: true }),
    maxKeys: check.positiveInteger('maxKeys', o.maxKeys),
    emissionInterval,
    burstTolerance: emissionInterval * burst,
  }
}

function checkCost(cost: number): void {
  checkArgument.positiveNumber('cost', cost)
}

/** One key of the local limiter, linked in order of use. */
interface KeyEntry {
  readonly key: string
  /** GCRA's theoretical arrival time, in ms. */
  tat: number
  /** The entry used just before this one (towards the least recently used). */
  older: KeyEntry | undefined
  /** The entry used just after this one (towards the most recently used). */
  newer: KeyEntry | undefined
}

/**
 * A token bucket per key in this process, stored as GCRA's theoretical arrival time: one
 * number per key, no timer, at most `maxKeys` keys, the least recently used evicted first.
 * Decisions are synchronous underneath ({@link LocalRateLimiter.takeSync}).
 */
export class LocalRateLimiter implements RateLimiter {
  readonly #emissionInterval: number
  readonly #burstTolerance: number
  readonly #maxKeys: number
  /**
   * The keys, each also on a list in order of use (`#oldest` ... `#newest`): a use relinks
   * two pointers and never deletes and re-inserts the key in the Map. Re-inserting one key
   * over and over is slow in V8: each delete leaves a tombstone in that key's hash bucket
   * until the table is rebuilt, and every lookup of the key walks them all (a hot key cost
   * 50-300 µs a call at 10 000-100 000 keys). The Map only sees new keys and evictions.
   */
  readonly #entries = new Map<string, KeyEntry>()
  #oldest: KeyEntry | undefined
  #newest: KeyEntry | undefined
  readonly #events = new Emitter<RateLimiterEvents>()
  readonly #now: () => number
  #allowed = 0
  #limited = 0
  #closed = false
  readonly #name: string
  readonly #stopMetrics: () => void

  /** Use {@link createRateLimiter}. */
  constructor(options: RateLimiterOptions, now: () => number = Date.now) {
    const o = validate(options)
    this.#emissionInterval = o.emissionInterval
    this.#burstTolerance = o.burstTolerance
    this.#maxKeys = o.maxKeys
    this.#now = now
    this.#name = o.name
    this.#stopMetrics = observeLimiter(resilienceTelemetry(options).meter, o.name, this)
  }

  /** The limiter's name in telemetry. */
  get name(): string {
    return this.#name
  }

  /** Decides on a call synchronously. O(1) whatever the number of keys. */
  takeSync(key: string, cost = 1): RateLimitResult {
    if (this.#closed) throw new ResilienceClosedError('rate limiter', 'take')
    checkCost(cost)
    const now = this.#now()
    const entry = this.#entries.get(key)
    const tat = entry === undefined || entry.tat < now ? now : entry.tat
    const next = tat + this.#emissionInterval * cost
    const wait = next - now - this.#burstTolerance
    if (wait > 0) {
      // A refused call is a use too: a key that keeps knocking while blocked is the last one
      // eviction picks, so it stays blocked.
      if (entry !== undefined) this.#use(entry)
      this.#limited++
      const retryAfterMs = Math.ceil(wait)
      if (this.#events.has('limited')) this.#events.emit('limited', { key, retryAfterMs })
      return {
        allowed: false,
        remaining: Math.max(
          0,
          Math.floor((this.#burstTolerance - (tat - now)) / this.#emissionInterval),
        ),
        retryAfterMs,
      }
    }
    if (entry === undefined) {
      if (this.#entries.size >= this.#maxKeys) this.#evictLeastRecentlyUsed()
      const added: KeyEntry = { key, tat: next, older: this.#newest, newer: undefined }
      if (this.#newest === undefined) this.#oldest = added
      else this.#newest.newer = added
      this.#newest = added
      this.#entries.set(key, added)
    } else {
      entry.tat = next
      this.#use(entry)
    }
    this.#allowed++
    return {
      allowed: true,
      remaining: Math.floor((this.#burstTolerance - (next - now)) / this.#emissionInterval),
      retryAfterMs: 0,
    }
  }

  take(key: string, cost = 1): Promise<RateLimitResult> {
    try {
      return Promise.resolve(this.takeSync(key, cost))
    } catch (error) {
      return Promise.reject(error)
    }
  }

  consume(key: string, cost = 1): Promise<RateLimitResult> {
    return this.take(key, cost).then((r) => {
      if (!r.allowed) throw new RateLimitedError(key, r.retryAfterMs)
      return r
    })
  }

  reset(key: string): Promise<void> {
    if (this.#closed) return Promise.reject(new ResilienceClosedError('rate limiter', 'reset'))
    const entry = this.#entries.get(key)
    if (entry !== undefined) {
      this.#unlink(entry)
      this.#entries.delete(key)
    }
    return Promise.resolve()
  }

  stats(): RateLimiterStats {
    return { allowed: this.#allowed, limited: this.#limited, keys: this.#entries.size }
  }

  on<K extends keyof RateLimiterEvents>(
    event: K,
    listener: Listener<RateLimiterEvents[K]>,
  ): Unsubscribe {
    return this.#events.on(event, listener)
  }

  once<K extends keyof RateLimiterEvents>(
    event: K,
    listener: Listener<RateLimiterEvents[K]>,
  ): Unsubscribe {
    return this.#events.once(event, listener)
  }

  off<K extends keyof RateLimiterEvents>(event: K, listener: Listener<RateLimiterEvents[K]>): void {
    this.#events.off(event, listener)
  }

  async close(): Promise<void> {
    if (!this.#closed) this.#stopMetrics()
    this.#closed = true
    this.#entries.clear()
    this.#oldest = undefined
    this.#newest = undefined
    this.#events.removeAllListeners()
  }

  /** Makes `entry` the most recently used: O(1), two pointers moved. */
  #use(entry: KeyEntry): void {
    if (entry === this.#newest) return
    this.#unlink(entry)
    entry.older = this.#newest
    entry.newer = undefined
    if (this.#newest === undefined) this.#oldest = entry
    else this.#newest.newer = entry
    this.#newest = entry
  }

  #unlink(entry: KeyEntry): void {
    if (entry.older === undefined) this.#oldest = entry.newer
    else entry.older.newer = entry.newer
    if (entry.newer === undefined) this.#newest = entry.older
    else entry.newer.older = entry.older
    entry.older = undefined
    entry.newer = undefined
  }

  /**
   * Drops the least recently used key, in O(1). Its bucket may not be full yet: a key idle
   * for longer than `maxKeys` other keys' calls gets its budget back early, which bounds
   * memory without ever scanning the keys.
   */
  #evictLeastRecentlyUsed(): void {
    const oldest = this.#oldest
    if (oldest === undefined) return
    this.#unlink(oldest)
    this.#entries.delete(oldest.key)
  }
}

/** Most decisions sent in one batched script call. */
const MAX_BATCH = 128

interface Pending {
  key: string
  cost: number
  resolve: (result: RateLimitResult) => void
  reject: (error: unknown) => void
}

/**
 * A rate limiter shared through Redis: GCRA in one Lua script (TIME, GET, SET: one EVALSHA,
 * one round trip per decision), so every instance counts against the same budget per key and
 * Redis's clock is the only clock.
 */
export class RedisRateLimiter implements RateLimiter {
  readonly #redis: RedisLike
  readonly #commandTimeout: number
  readonly #prefix: string
  readonly #emissionIntervalUs: string
  readonly #burstToleranceUs: string
  readonly #emissionInterval: number
  readonly #events = new Emitter<RateLimiterEvents>()
  readonly #batch: boolean
  #pending: Pending[] = []
  #scheduled = false
  #allowed = 0
  #limited = 0
  #closed = false
  readonly #name: string
  readonly #roundTrips: RedisRoundTrips
  readonly #take: RoundTrip
  readonly #del: RoundTrip
  readonly #stopMetrics: () => void

  /** Use {@link createRateLimiter}. */
  constructor(options: RateLimiterOptions & { redis: RedisLike }) {
    const o = validate(options)
    const { meter, tracer } = resilienceTelemetry(options)
    this.#name = o.name
    const trips = new RedisRoundTrips(tracer, meter, options.redis, { [RATE_LIMITER_NAME]: o.name })
    this.#roundTrips = trips
    this.#take = trips.kind('EVALSHA', 'rate_limit')
    this.#del = trips.kind('DEL')
    this.#stopMetrics = observeLimiter(meter, o.name, this)
    this.#redis = options.redis
    this.#commandTimeout = o.commandTimeout
    this.#batch = o.batch && (options.redis as { isCluster?: boolean }).isCluster !== true
    this.#prefix = o.prefix
    this.#emissionInterval = o.emissionInterval
    this.#emissionIntervalUs = String(Math.round(o.emissionInterval * 1000))
    this.#burstToleranceUs = String(Math.round(o.burstTolerance * 1000))
  }

  /** The limiter's name in telemetry. */
  get name(): string {
    return this.#name
  }

  take(key: string, cost = 1): Promise<RateLimitResult> {
    try {
      if (this.#closed) throw new ResilienceClosedError('rate limiter', 'take')
      checkCost(cost)
    } catch (error) {
      return Promise.reject(error)
    }
    if (!this.#batch) return this.#takeOne(key, cost)
    return new Promise<RateLimitResult>((resolve, reject) => {
      this.#pending.push({ key, cost, resolve, reject })
      if (!this.#scheduled) {
        this.#scheduled = true
        queueMicrotask(this.#flush)
      }
    })
  }

  readonly #flush = (): void => {
    this.#scheduled = false
    const all = this.#pending
    this.#pending = []
    for (let start = 0; start < all.length; start += MAX_BATCH) {
      const batch = all.length <= MAX_BATCH ? all : all.slice(start, start + MAX_BATCH)
      if (batch.length === 1) {
        const p = batch[0] as Pending
        this.#takeOne(p.key, p.cost).then(p.resolve, p.reject)
        continue
      }
      const keys = new Array<string>(batch.length)
      const args = new Array<string | number>(batch.length + 2)
      args[0] = this.#emissionIntervalUs
      args[1] = this.#burstToleranceUs
      for (let i = 0; i < batch.length; i++) {
        const p = batch[i] as Pending
        keys[i] = this.#prefix + p.key
        args[i + 2] = p.cost
      }
      this.#roundTrips
        .run(
          this.#take,
          () => this.#send(GCRA_BATCH_SCRIPT.run(this.#redis, keys, args)),
          describeDecisions,
        )
        .then(
          (replies) => {
            const r = replies as number[]
            for (let i = 0; i < batch.length; i++) {
              const p = batch[i] as Pending
              p.resolve(this.#decide(p.key, r[i] as number))
            }
          },
          (error: unknown) => {
            for (const p of batch) p.reject(error)
          },
        )
    }
  }

  /** One decision, one EVALSHA, in a client span that says what was decided (never the key). */
  #takeOne(key: string, cost: number): Promise<RateLimitResult> {
    return this.#roundTrips
      .run(
        this.#take,
        () =>
          this.#send(
            GCRA_SCRIPT.run(
              this.#redis,
              [this.#prefix + key],
              [this.#emissionIntervalUs, this.#burstToleranceUs, cost],
            ),
          ),
        describeDecision,
      )
      .then((reply) => this.#decide(key, reply as number))
  }

  /**
   * Bounds one round trip by `commandTimeout` and gives its failure one type: a client error
   * (ECONNREFUSED, "Too many Cluster redirections", a closed connection) or the timeout
   * becomes {@link RateLimiterUnavailableError}, with the original as `cause`.
   */
  async #send<T>(sent: Promise<T>): Promise<T> {
    const ms = this.#commandTimeout
    try {
      return await withTimeout(sent, ms, () => new Error(`Redis did not answer within ${ms} ms`))
    } catch (cause) {
      throw new RateLimiterUnavailableError(
        `rate limiter "${this.#name}" could not reach Redis: ${cause instanceof Error ? cause.message : String(cause)}`,
        { cause },
      )
    }
  }

  #decide(key: string, reply: number): RateLimitResult {
    if (reply >= 0) {
      this.#allowed++
      return { allowed: true, remaining: reply, retryAfterMs: 0 }
    }
    this.#limited++
    const retryAfterMs = Math.ceil(-reply / 1000)
    if (this.#events.has('limited')) this.#events.emit('limited', { key, retryAfterMs })
    return { allowed: false, remaining: 0, retryAfterMs }
  }

  async consume(key: string, cost = 1): Promise<RateLimitResult> {
    const r = await this.take(key, cost)
    if (!r.allowed) throw new RateLimitedError(key, r.retryAfterMs)
    return r
  }

  async reset(key: string): Promise<void> {
    if (this.#closed) throw new ResilienceClosedError('rate limiter', 'reset')
    await this.#roundTrips.run(this.#del, () => this.#send(this.#redis.del(this.#prefix + key)))
  }

  stats(): RateLimiterStats {
    return { allowed: this.#allowed, limited: this.#limited, keys: 0 }
  }

  on<K extends keyof RateLimiterEvents>(
    event: K,
    listener: Listener<RateLimiterEvents[K]>,
  ): Unsubscribe {
    return this.#events.on(event, listener)
  }

  once<K extends keyof RateLimiterEvents>(
    event: K,
    listener: Listener<RateLimiterEvents[K]>,
  ): Unsubscribe {
    return this.#events.once(event, listener)
  }

  off<K extends keyof RateLimiterEvents>(event: K, listener: Listener<RateLimiterEvents[K]>): void {
    this.#events.off(event, listener)
  }

  async close(): Promise<void> {
    if (!this.#closed) this.#stopMetrics()
    this.#closed = true
    this.#events.removeAllListeners()
  }

  /** Milliseconds per unit of cost (the emission interval). */
  get emissionInterval(): number {
    return this.#emissionInterval
  }
}

/**
 * Creates a rate limiter: a local token bucket, or with `redis` one budget shared by every
 * instance (GCRA in one Lua round trip). Refusals carry the time to retry; see
 * `@ballast/resilience/express` and `/fastify` for a 429 with `Retry-After`.
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis'
 * import { createRateLimiter } from '@ballast/resilience'
 *
 * // 5 login attempts per minute per account, across every instance
 * const logins = createRateLimiter({ redis: new Redis(), prefix: 'rl:login:', limit: 5, interval: '1m' })
 * const decision = await logins.take(email)
 * if (!decision.allowed) return reply.code(429).header('retry-after', Math.ceil(decision.retryAfterMs / 1000))
 * ```
 */
export function createRateLimiter(
  options: RateLimiterOptions & { redis: RedisLike },
): RedisRateLimiter
export function createRateLimiter(
  options: RateLimiterOptions & { redis?: undefined },
): LocalRateLimiter
export function createRateLimiter(options: RateLimiterOptions): RateLimiter
export function createRateLimiter(options: RateLimiterOptions): RateLimiter {
  if (options !== null && typeof options === 'object' && options.redis !== undefined) {
    return new RedisRateLimiter(options as RateLimiterOptions & { redis: RedisLike })
  }
  return new LocalRateLimiter(options)
}
