import { createHash, randomUUID } from 'node:crypto'
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
import {
  IdempotencyFencedError,
  IdempotencyInFlightError,
  IdempotencyKeyInvalidError,
  IdempotencyMismatchError,
  IdempotencyNotReplicatedError,
  IdempotencyScopeMissingError,
  IdempotencyUnavailableError,
  IdempotentFailureError,
  ResilienceClosedError,
} from './errors.js'
import { NEVER_ABORTED } from './internal/context.js'
import { fingerprintOf } from './internal/fingerprint.js'
import {
  isRedisLike,
  type LuaScript,
  type RedisLike,
  runAndWait,
  withTimeout,
} from './internal/lua.js'
import { CLAIM_SCRIPT, COMPLETE_SCRIPT, RELEASE_SCRIPT, RENEW_SCRIPT } from './internal/scripts.js'
import {
  IDEMPOTENCY_NAME,
  OUTCOME,
  RedisRoundTrips,
  type RoundTrip,
  resilienceTelemetry,
} from './internal/telemetry.js'
import { check, checkArgument } from './internal/validate.js'

/** Options of {@link createIdempotency}. */
export interface IdempotencyOptions extends TelemetryOptions {
  /** The ioredis `Redis` or `Cluster` the records live in. Its lifecycle is yours. */
  redis: RedisLike
  /**
   * Name of the store in telemetry (the `ballast.resilience.idempotency.name` attribute):
   * give each store of a process its own, from a fixed set.
   * @default 'idempotency'
   */
  name?: string
  /**
   * Prefix of the Redis keys. Each idempotency key is one Redis hash at
   * `<prefix>{<key>}`, or `<prefix>~<scope hash>{<key>}` when claimed with a `scope`
   * (the scope's SHA-256, base64url, a fixed 43 characters: unambiguous, and no user ids in
   * key names). The hash tag keeps everything of one key in one Cluster slot.
   * @default 'idem:'
   */
  prefix?: string
  /**
   * How long a claim holds the key without renewal (milliseconds, or a string such as
   * `'30s'`; at least 30 ms). The holder renews it every third of that while the work runs;
   * if the holder dies, another caller can reclaim the key once it runs out.
   * @default 30000
   */
  lease?: Duration
  /**
   * How long a completed result (or a permanent failure) is kept and replayed (milliseconds,
   * or a string such as `'1d'`; at least the lease).
   * @default 86400000 (24 h)
   */
  retention?: Duration
  /**
   * How long a duplicate that finds the key in flight waits for the holder's result before
   * giving up with an {@link IdempotencyInFlightError} (HTTP 409): milliseconds, or a string
   * such as `'2s'`. 0 answers at once.
   * @default 0
   */
  wait?: Duration
  /**
   * When Redis cannot be reached: `false` fails closed (an {@link IdempotencyUnavailableError},
   * the work does not run); `true` runs the work unprotected and emits `ran-unprotected`.
   * @default false
   */
  failOpen?: boolean
  /**
   * Time limit of each Redis round trip (milliseconds, or a string such as `'2s'`); past it
   * Redis counts as unreachable.
   * @default 2000
   */
  commandTimeout?: Duration
  /**
   * What a well-formed key looks like; others are refused with an {@link IdempotencyKeyInvalidError}.
   * Without the `g` or `y` flag (they make `test()` depend on the previous call).
   * @default /^[\x21-\x7E]{1,255}$/ (1 to 255 printable ASCII characters, no spaces)
   */
  keyPattern?: RegExp
  /**
   * Whether an error thrown by the work is transient: the key is then released so a retry
   * runs the work again. Otherwise the failure is stored and replayed to retries as an
   * {@link IdempotentFailureError}.
   * @default error => error.retryable !== false (only errors that say they are final are stored)
   */
  isTransient?: (error: unknown) => boolean
  /**
   * Waits for replicas after each write that matters: after a claim is acquired and after
   * `complete` or `fail`, the store sends `WAIT <replicas> <timeout>` to the key's own master
   * (in one pipeline with the script, on its connection). Fewer replicas within the timeout
   * fail closed with a retryable {@link IdempotencyNotReplicatedError}: after a claim, the
   * work does not run and the claim is given back. This narrows what a failover can lose
   * (Redis replicates asynchronously: a claim acknowledged by a master that dies before its
   * replica has it is forgotten, and a retry runs the work again); it does not close it
   * (WAIT is not a consensus: a replica that acknowledged can still lose the write if it is
   * not the one promoted). `false`: no WAIT. A standalone Redis without replicas fails every
   * claim with it on.
   * @default false
   */
  replication?: false | IdempotencyReplicationOptions
}

/** The `replication` option of {@link IdempotencyOptions}: how many replicas, how long to wait for them. */
export interface IdempotencyReplicationOptions {
  /**
   * Replicas that must acknowledge the write (`WAIT`'s first argument); a positive integer.
   * @default 1
   */
  replicas?: number
  /**
   * How long `WAIT` waits for them (milliseconds, or a string such as `'100ms'`; more than 0,
   * as `WAIT ... 0` would block forever, and less than `commandTimeout`, which bounds the
   * whole round trip).
   * @default 100
   */
  timeout?: Duration
}

/** Defaults of {@link IdempotencyReplicationOptions} (frozen), used when `replication` is given. */
export const DEFAULT_IDEMPOTENCY_REPLICATION_OPTIONS: Readonly<
  Required<IdempotencyReplicationOptions>
> = Object.freeze({
  replicas: 1,
  timeout: 100,
})

/** Defaults of {@link IdempotencyOptions} (frozen; `redis` has none and must be given). */
export const DEFAULT_IDEMPOTENCY_OPTIONS: Readonly<
  Required<Omit<IdempotencyOptions, 'redis' | keyof TelemetryOptions>>
> = Object.freeze({
  name: 'idempotency',
  prefix: 'idem:',
  lease: 30_000,
  retention: 86_400_000,
  wait: 0,
  failOpen: false,
  commandTimeout: 2000,
  keyPattern: /^[\x21-\x7E]{1,255}$/,
  isTransient: (error: unknown): boolean =>
    (error as { retryable?: unknown } | null)?.retryable !== false,
  replication: false,
})

/** A failure stored for replay. */
export interface StoredFailure {
  /** The error's `name`. */
  name: string
  /** The error's message. */
  message: string
  /** The error's `code`, when it had a string one. */
  code?: string
}

/** A stored outcome: the value the work returned, or its permanent failure. */
export type IdempotencyRecord = StoredValue | StoredFailureRecord

/** A stored successful outcome. */
export interface StoredValue {
  /** `true`: the work succeeded. */
  ok: true
  /** What the work returned (as it came back from JSON). */
  value: unknown
}

/** A stored permanent failure. */
export interface StoredFailureRecord {
  /** `false`: the work failed permanently. */
  ok: false
  /** The failure. */
  error: StoredFailure
}

/** The answer to {@link Idempotency.claim}. */
export type ClaimOutcome = ClaimAcquired | ClaimCompleted | ClaimInFlight | ClaimMismatch

/** The caller holds the key and must run the work, then complete, fail or release the claim. */
export interface ClaimAcquired {
  /** Discriminant. */
  status: 'acquired'
  /** The held claim. */
  claim: IdempotencyClaim
}

/** The work was done before: replay the record, do not run it again. */
export interface ClaimCompleted {
  /** Discriminant. */
  status: 'completed'
  /** The stored outcome. */
  record: IdempotencyRecord
}

/** Another holder is working on the key (still, after waiting `wait` if configured). */
export interface ClaimInFlight {
  /** Discriminant. */
  status: 'inFlight'
  /** Milliseconds until the holder's lease runs out if it is not renewed. */
  retryAfterMs: number
}

/** The key was used with a different fingerprint. Nothing runs. */
export interface ClaimMismatch {
  /** Discriminant. */
  status: 'mismatch'
}

/** Options of one {@link Idempotency.claim}. */
export interface ClaimOptions {
  /**
   * How long a duplicate that finds the key in flight waits: milliseconds, or a string such
   * as `'2s'`.
   * @default the store's `wait`
   */
  wait?: Duration
  /**
   * Who the key belongs to (a user, tenant or API key id): keys of different scopes are
   * different records, so one caller can neither replay nor block another's request with
   * the same key. Must be a non-empty string when given.
   * @default none (the key is shared by every caller of the store)
   */
  scope?: string
}

/** Options of one {@link Idempotency.run}. */
export interface RunOptions {
  /**
   * Who the key belongs to; see {@link ClaimOptions.scope}.
   * @default none (the key is shared by every caller of the store)
   */
  scope?: string
}

/** What the work receives from {@link Idempotency.run}. */
export interface IdempotencyContext {
  /** The idempotency key. */
  readonly key: string
  /** The scope the key was claimed in, if any. */
  readonly scope?: string | undefined
  /** The fencing token of this claim (0 when running unprotected after fail-open). */
  readonly token: number
  /**
   * Aborted when the claim's lease is lost (another holder took over, or Redis was
   * unreachable for longer than the lease): stop, the result will not be stored.
   */
  readonly signal: AbortSignal
}

/** The result of {@link Idempotency.run}. */
export interface IdempotentResult<T> {
  /** The work's value, fresh or replayed. */
  value: T
  /** `true` when the value is a stored result and the work did not run now. */
  replayed: boolean
}

/** Events of an {@link Idempotency} store, by name. */
export interface IdempotencyEvents {
  /** A caller took the key (`reclaimed` when a dead holder's lease had run out). */
  acquired: AcquiredEvent
  /** A stored result was handed back instead of running the work. */
  replayed: IdempotencyKeyEvent
  /** A duplicate found the key in flight and was refused (after waiting `wait`, if set). */
  'in-flight-refused': InFlightRefusedEvent
  /** A key was reused with a different fingerprint. */
  mismatched: IdempotencyKeyEvent
  /** A holder lost its lease: its signal was aborted. */
  'lease-lost': LeaseLostEvent
  /** A stale holder's write was refused by the fence. */
  fenced: FencedEvent
  /** Redis could not be reached. */
  'redis-call-failed': RedisCallFailedEvent
  /** Redis could not be reached and the work ran unprotected (`failOpen: true`). */
  'ran-unprotected': IdempotencyKeyEvent
  /** The work ran but its result could not be stored or its key released (Redis lost meanwhile). */
  'result-not-stored': ResultNotStoredEvent
  /** Fewer replicas than `replication.replicas` acknowledged a claim or a stored result within its timeout. */
  'not-replicated': NotReplicatedEvent
}

/** Payload of the events that report only the key: `replayed`, `mismatched`, `ran-unprotected`. */
export interface IdempotencyKeyEvent {
  /** The idempotency key. */
  key: string
}

/** Payload of `acquired`. */
export interface AcquiredEvent {
  /** The idempotency key. */
  key: string
  /** The new fencing token. */
  token: number
  /** Whether a holder's expired lease was taken over. */
  reclaimed: boolean
}

/** Payload of `in-flight-refused`. */
export interface InFlightRefusedEvent {
  /** The idempotency key. */
  key: string
  /** Milliseconds left on the holder's lease. */
  retryAfterMs: number
}

/** Payload of `lease-lost`. */
export interface LeaseLostEvent {
  /** The idempotency key. */
  key: string
  /** The holder's fencing token. */
  token: number
  /** Why: fenced by a newer holder, or Redis unreachable past the lease. */
  error: Error
}

/** Payload of `fenced`. */
export interface FencedEvent {
  /** The idempotency key. */
  key: string
  /** The stale fencing token. */
  token: number
}

/** Payload of `redis-call-failed`. */
export interface RedisCallFailedEvent {
  /** The idempotency key. */
  key: string
  /** The error (its `cause` is the client's). */
  error: IdempotencyUnavailableError
}

/** Payload of `not-replicated`. */
export interface NotReplicatedEvent {
  /** The idempotency key. */
  key: string
  /** The write that `WAIT` followed: the claim (given back, the work did not run), or the stored result. */
  operation: 'claim' | 'complete' | 'fail'
  /** Replicas that acknowledged it within `replication.timeout`. */
  acknowledged: number
  /** Replicas asked for. */
  required: number
}

/** Payload of `result-not-stored`. */
export interface ResultNotStoredEvent {
  /** The idempotency key. */
  key: string
  /** The store's error. */
  error: unknown
}

/** Counters of an {@link Idempotency} store since it was created. */
export interface IdempotencyStats {
  /** Claims attempted (well-formed keys). */
  claims: number
  /** Claims acquired, reclaims included. */
  acquired: number
  /** Claims acquired from a holder whose lease had run out. */
  reclaimed: number
  /** Stored results replayed. */
  replayed: number
  /** Duplicates refused because the key was in flight (the `in-flight-refused` event). */
  inFlightRefused: number
  /** Keys reused with a different fingerprint (the `mismatched` event). */
  mismatched: number
  /** Results stored. */
  completed: number
  /** Permanent failures stored. */
  failed: number
  /** Keys released after a transient failure. */
  released: number
  /** Stale writes refused. */
  fenced: number
  /** Redis round trips that failed or timed out (the `redis-call-failed` event). */
  redisCallsFailed: number
  /** Runs that went ahead without Redis, unprotected (`failOpen`, the `ran-unprotected` event). */
  ranUnprotected: number
  /** Claims and stored results that fewer replicas than asked acknowledged (`replication`, the `not-replicated` event). */
  notReplicated: number
  /** Claims held by this process now. */
  held: number
}

/** {@link IdempotencyOptions} validated, durations in milliseconds. */
interface ResolvedIdempotencyOptions {
  readonly redis: RedisLike
  readonly prefix: string
  readonly lease: number
  readonly retention: number
  readonly wait: number
  readonly failOpen: boolean
  readonly commandTimeout: number
  readonly keyPattern: RegExp
  readonly isTransient: (error: unknown) => boolean
  /** `WAIT` after claims and results, or `undefined` for none. */
  readonly replication: { readonly replicas: number; readonly timeout: number } | undefined
}

/**
 * A claim on an idempotency key: the caller holds it and runs the work. Its lease is renewed
 * while it is held. Finish with {@link IdempotencyClaim.complete} (store the result),
 * {@link IdempotencyClaim.fail} (store a permanent failure) or
 * {@link IdempotencyClaim.release} (let a retry run the work again). Every write carries the
 * fencing token: a holder whose lease ran out and was reclaimed cannot overwrite the newer
 * holder's result.
 */
export class IdempotencyClaim implements IdempotencyContext {
  readonly key: string
  readonly scope: string | undefined
  readonly token: number
  /** Whether the key was taken over from a holder whose lease had run out. */
  readonly reclaimed: boolean
  readonly #store: Idempotency
  /** The claim id its scripts carry, so a resent one recognises this claim's own writes. */
  readonly #id: string
  readonly #controller = new AbortController()
  #timer: NodeJS.Timeout | undefined
  #leaseEnd: number
  #done = false

  /** Claims come from {@link Idempotency.claim}. */
  private constructor(
    store: Idempotency,
    key: string,
    id: string,
    token: number,
    reclaimed: boolean,
    lease: number,
    scope?: string,
  ) {
    this.#store = store
    this.#id = id
    this.key = key
    this.scope = scope
    this.token = token
    this.reclaimed = reclaimed
    this.#leaseEnd = Date.now() + lease
  }

  /** @internal Claims come from {@link Idempotency.claim}. */
  static acquired(
    store: Idempotency,
    key: string,
    id: string,
    token: number,
    reclaimed: boolean,
    lease: number,
    scope?: string,
  ): IdempotencyClaim {
    return new IdempotencyClaim(store, key, id, token, reclaimed, lease, scope)
  }

  /** Aborted when the lease is lost; see {@link IdempotencyContext.signal}. */
  get signal(): AbortSignal {
    return this.#controller.signal
  }

  /** Whether the claim was completed, failed or released (or its lease was lost). */
  get settled(): boolean {
    return this.#done
  }

  /**
   * Stores the work's result for replay. `value` must survive `JSON.stringify`.
   * @throws {@link IdempotencyFencedError} when a newer holder owns the key.
   * @throws {@link IdempotencyNotReplicatedError} with `replication` on, when the result was
   *   stored on the master but fewer replicas acknowledged it in time.
   */
  complete(value: unknown): Promise<void> {
    return this.#finish(JSON.stringify({ ok: true, value } satisfies IdempotencyRecord), 'complete')
  }

  /**
   * Stores a permanent failure: retries get it replayed as an {@link IdempotentFailureError}.
   * @throws {@link IdempotencyFencedError} when a newer holder owns the key.
   */
  fail(error: unknown): Promise<void> {
    const e = error as { name?: unknown; message?: unknown; code?: unknown } | null
    const failure: StoredFailure = {
      name: typeof e?.name === 'string' ? e.name : 'Error',
      message: typeof e?.message === 'string' ? e.message : String(error),
    }
    if (typeof e?.code === 'string') failure.code = e.code
    return this.#finish(
      JSON.stringify({ ok: false, error: failure } satisfies IdempotencyRecord),
      'fail',
    )
  }

  /**
   * Gives the key back so a retry can run the work (after a transient failure). Resolves
   * `false` when the claim was no longer ours.
   */
  async release(): Promise<boolean> {
    if (this.#done) return false
    this.#stop()
    return this.#store[INTERNAL].release(this, this.#id)
  }

  /** @internal */
  startRenewal(lease: number): void {
    const every = Math.max(10, Math.floor(lease / 3))
    this.#timer = setInterval(() => {
      void this.#renew(lease)
    }, every)
    this.#timer.unref()
  }

  /** @internal */
  lose(error: Error): void {
    if (this.#done) return
    this.#stop()
    this.#controller.abort(error)
  }

  async #renew(lease: number): Promise<void> {
    if (this.#done) return
    const sent = Date.now()
    try {
      const ok = await this.#store[INTERNAL].renew(this, lease)
      if (this.#done) return
      if (ok) this.#leaseEnd = sent + lease
      else this.#store[INTERNAL].lost(this, new IdempotencyFencedError(this.key, this.token))
    } catch (error) {
      // Redis is unreachable: the lease may still hold; once it surely ran out, stop.
      if (!this.#done && Date.now() >= this.#leaseEnd) {
        this.#store[INTERNAL].lost(
          this,
          new IdempotencyUnavailableError('the lease ran out while Redis was unreachable', {
            cause: error,
          }),
        )
      }
    }
  }

  async #finish(record: string, kind: 'complete' | 'fail'): Promise<void> {
    if (this.#done && this.#controller.signal.aborted) {
      // The lease was lost: still try, the fence decides.
    } else if (this.#done) {
      throw new IdempotencyFencedError(this.key, this.token)
    }
    this.#stop()
    await this.#store[INTERNAL].finish(this, this.#id, record, kind)
  }

  #stop(): void {
    this.#done = true
    if (this.#timer !== undefined) {
      clearInterval(this.#timer)
      this.#timer = undefined
    }
    this.#store[INTERNAL].forget(this)
  }
}

const INTERNAL: unique symbol = Symbol('ballast.idempotency.internal')

/** The store's instruments (README, Telemetry). */
const IDEMPOTENCY_INSTRUMENTS = {
  'ballast.resilience.idempotency.claims': {
    kind: 'counter',
    unit: '{claim}',
    description:
      'Claims by outcome: new (the caller runs the work; reclaims included), replayed (a stored result handed back), conflict (the key was in flight), mismatch (the key was reused with another request)',
  },
  'ballast.resilience.idempotency.reclaimed': {
    kind: 'counter',
    unit: '{claim}',
    description: 'New claims taken over from a holder whose lease had run out',
  },
  'ballast.resilience.idempotency.results': {
    kind: 'counter',
    unit: '{claim}',
    description:
      'How held claims ended: completed (result stored), failed (permanent failure stored), released (transient failure, key given back), fenced (a stale holder refused)',
  },
  'ballast.resilience.idempotency.redis_calls_failed': {
    kind: 'counter',
    unit: '{call}',
    description: 'Redis round trips that failed or timed out (the store was unavailable)',
  },
  'ballast.resilience.idempotency.unprotected': {
    kind: 'counter',
    unit: '{run}',
    description: 'Runs that went ahead without Redis (failOpen: true), unprotected',
  },
  'ballast.resilience.idempotency.held': {
    kind: 'upDownCounter',
    unit: '{claim}',
    description: 'Claims this process holds now (their leases being renewed)',
  },
} satisfies Record<string, ObservedInstrument>

/** What the claim script answered, on its span: never the key, the scope or the fingerprint. */
function describeClaim(span: Span, reply: unknown): void {
  const status = (reply as [string])[0]
  span.setAttribute(
    OUTCOME,
    status === 'a' ? 'new' : status === 'd' ? 'replayed' : status === 'p' ? 'conflict' : 'mismatch',
  )
}

/** A write that the fence let through (`stored`, `renewed`, `released`) or refused (`fenced`). */
function describeWrite(done: string): (span: Span, reply: unknown) => void {
  return (span, reply) => span.setAttribute(OUTCOME, reply === 1 ? done : 'fenced')
}
const DESCRIBE_RENEW = describeWrite('renewed')
const DESCRIBE_STORE = describeWrite('stored')
const DESCRIBE_RELEASE = describeWrite('released')

/** The kinds of round trip of a store, each with its span name and attributes built once. */
interface Trips {
  readonly claim: RoundTrip
  readonly renew: RoundTrip
  readonly complete: RoundTrip
  readonly fail: RoundTrip
  readonly release: RoundTrip
}

/** Registers the store's observable instruments, read from its counters at collection time. */
function observeStore(
  meter: Meter,
  name: string,
  s: Omit<IdempotencyStats, 'held'>,
  held: Set<IdempotencyClaim>,
): () => void {
  const store = { [IDEMPOTENCY_NAME]: name }
  const by = (outcome: string) => Object.freeze({ ...store, [OUTCOME]: outcome })
  const isNew = by('new')
  const replayed = by('replayed')
  const conflict = by('conflict')
  const mismatch = by('mismatch')
  const completed = by('completed')
  const failed = by('failed')
  const released = by('released')
  const fenced = by('fenced')
  return observe(meter, IDEMPOTENCY_INSTRUMENTS, (record) => {
    record('ballast.resilience.idempotency.claims', s.acquired, isNew)
    record('ballast.resilience.idempotency.claims', s.replayed, replayed)
    record('ballast.resilience.idempotency.claims', s.inFlightRefused, conflict)
    record('ballast.resilience.idempotency.claims', s.mismatched, mismatch)
    record('ballast.resilience.idempotency.reclaimed', s.reclaimed, store)
    record('ballast.resilience.idempotency.results', s.completed, completed)
    record('ballast.resilience.idempotency.results', s.failed, failed)
    record('ballast.resilience.idempotency.results', s.released, released)
    record('ballast.resilience.idempotency.results', s.fenced, fenced)
    record('ballast.resilience.idempotency.redis_calls_failed', s.redisCallsFailed, store)
    record('ballast.resilience.idempotency.unprotected', s.ranUnprotected, store)
    record('ballast.resilience.idempotency.held', held.size, store)
  })
}

interface StoreInternals {
  renew(claim: IdempotencyClaim, lease: number): Promise<boolean>
  finish(
    claim: IdempotencyClaim,
    id: string,
    record: string,
    kind: 'complete' | 'fail',
  ): Promise<void>
  release(claim: IdempotencyClaim, id: string): Promise<boolean>
  lost(claim: IdempotencyClaim, error: Error): void
  forget(claim: IdempotencyClaim): void
}

/**
 * Idempotency keys in Redis: a retried request or a redelivered message takes effect once.
 * Use {@link Idempotency.run} for any handler (an AMQP consumer with the message id as key),
 * {@link Idempotency.claim} for control over each step, or the HTTP adapters in
 * `@ballast/resilience/express` and `@ballast/resilience/fastify`. Create it with
 * {@link createIdempotency}.
 */
export class Idempotency {
  readonly #options: ResolvedIdempotencyOptions
  readonly #events = new Emitter<IdempotencyEvents>()
  readonly #held = new Set<IdempotencyClaim>()
  readonly #stats: Omit<IdempotencyStats, 'held'> = {
    claims: 0,
    acquired: 0,
    reclaimed: 0,
    replayed: 0,
    inFlightRefused: 0,
    mismatched: 0,
    completed: 0,
    failed: 0,
    released: 0,
    fenced: 0,
    redisCallsFailed: 0,
    ranUnprotected: 0,
    notReplicated: 0,
  }
  #closed = false
  readonly #name: string
  readonly #roundTrips: RedisRoundTrips
  readonly #trips: Trips
  readonly #stopMetrics: () => void

  /** Use {@link createIdempotency}. */
  constructor(options: IdempotencyOptions) {
    check.object('options', options)
    if (!isRedisLike(options.redis)) {
      check.invalid('redis', 'an ioredis Redis or Cluster', options.redis)
    }
    const o = merge(DEFAULT_IDEMPOTENCY_OPTIONS, options)
    const prefix = check.string('prefix', o.prefix)
    if (/[{}]/.test(prefix))
      check.invalid('prefix', 'a prefix without "{" or "}" (the key is the hash tag)', prefix)
    const lease = check.duration('lease', o.lease, { positive: true })
    if (lease < 30) check.invalid('lease', 'at least 30 milliseconds', o.lease)
    const retention = check.duration('retention', o.retention, { positive: true })
    if (retention < lease)
      check.invalid('retention', `at least the lease (${lease} ms)`, o.retention)
    const keyPattern = o.keyPattern
    if (!(keyPattern instanceof RegExp)) check.invalid('keyPattern', 'a RegExp', keyPattern)
    // test() on a global or sticky RegExp starts at its lastIndex: one key would be accepted,
    // then refused on the next call.
    if (keyPattern.global || keyPattern.sticky)
      check.invalid('keyPattern', 'a RegExp without the g or y flag', String(keyPattern))
    const commandTimeout = check.duration('commandTimeout', o.commandTimeout, { positive: true })
    this.#options = Object.freeze({
      redis: options.redis,
      prefix,
      lease,
      retention,
      wait: check.duration('wait', o.wait),
      failOpen: check.boolean('failOpen', o.failOpen),
      commandTimeout,
      keyPattern,
      isTransient: check.func<(error: unknown) => boolean>('isTransient', o.isTransient),
      replication: resolveReplication(o.replication, commandTimeout),
    })
    this.#name = check.string('name', o.name)
    const { meter, tracer } = resilienceTelemetry(options)
    const trips = new RedisRoundTrips(tracer, meter, options.redis, {
      [IDEMPOTENCY_NAME]: this.#name,
    })
    this.#roundTrips = trips
    this.#trips = Object.freeze({
      claim: trips.kind('EVALSHA', 'claim'),
      renew: trips.kind('EVALSHA', 'renew'),
      complete: trips.kind('EVALSHA', 'complete'),
      fail: trips.kind('EVALSHA', 'fail'),
      release: trips.kind('EVALSHA', 'release'),
    })
    this.#stopMetrics = observeStore(meter, this.#name, this.#stats, this.#held)
  }

  /** The store's name in telemetry. */
  get name(): string {
    return this.#name
  }

  /** Whether Redis being unreachable lets work run unprotected. */
  get failOpen(): boolean {
    return this.#options.failOpen
  }

  /**
   * The fingerprint of a request: SHA-256 of its canonical form (object keys sorted at every
   * depth; strings and bytes as they are). Same request, same fingerprint.
   */
  fingerprint(input: unknown): string {
    return fingerprintOf(input)
  }

  /**
   * Checks that `key` is present and well formed.
   * @throws {@link IdempotencyKeyInvalidError} (HTTP 400) when it is missing or malformed.
   */
  validateKey(key: unknown): asserts key is string {
    if (key === undefined || key === null || key === '') {
      throw new IdempotencyKeyInvalidError('an idempotency key is required')
    }
    if (typeof key !== 'string') {
      // Never String(key): a hostile object (null prototype, a toString that is not a
      // function) would throw a TypeError instead of this error.
      throw new IdempotencyKeyInvalidError(
        `malformed idempotency key: expected a string, got ${typeof key}`,
      )
    }
    if (!this.#options.keyPattern.test(key)) {
      throw new IdempotencyKeyInvalidError(
        `malformed idempotency key: expected ${String(this.#options.keyPattern)}, got ${JSON.stringify(key).slice(0, 80)}`,
      )
    }
  }

  /**
   * Claims `key` atomically (one Lua script, one round trip). With `wait` configured, a
   * duplicate of a key in flight polls until the holder's result is stored, its lease runs
   * out (then this caller takes over), or the wait ends.
   *
   * @param key The idempotency key.
   * @param input What identifies the request (its canonicalized body, a message's payload);
   *   the same key with a different input is a `mismatch`. `undefined` skips the check.
   * @param options `wait`, and the `scope` (user, tenant, API key) the key belongs to.
   * @throws {@link IdempotencyKeyInvalidError} for a missing or malformed key.
   * @throws {@link IdempotencyScopeMissingError} for a `scope` given empty or not a string.
   * @throws {@link InvalidArgumentError} for a `wait` that is not a duration.
   * @throws {@link IdempotencyUnavailableError} when Redis does not answer.
   * @throws {@link IdempotencyNotReplicatedError} with `replication` on, when fewer replicas
   *   acknowledged an acquired claim in time (the claim was given back; retryable).
   * @throws {@link ResilienceClosedError} after {@link Idempotency.close} (never retryable).
   */
  async claim(key: string, input?: unknown, options: ClaimOptions = {}): Promise<ClaimOutcome> {
    if (this.#closed) throw new ResilienceClosedError('idempotency store', 'claim')
    this.validateKey(key)
    const scope = validateScope(options.scope)
    // Checked like the store's own: NaN would make a duplicate poll Redis every millisecond.
    const wait =
      options.wait === undefined ? this.#options.wait : checkArgument.duration('wait', options.wait)
    const fingerprint = input === undefined ? '' : fingerprintOf(input)
    this.#stats.claims++
    const deadline = Date.now() + wait
    const redisKey = this.redisKey(key, scope)
    let pause = 10
    for (;;) {
      const outcome = await this.#claimOnce(key, scope, redisKey, fingerprint)
      if (outcome.status !== 'inFlight' || wait <= 0) return this.#count(key, outcome)
      const left = deadline - Date.now()
      if (left <= 0) return this.#count(key, outcome)
      await new Promise((r) => setTimeout(r, Math.min(pause, left, outcome.retryAfterMs + 1)))
      pause = Math.min(pause * 2, 250)
    }
  }

  /**
   * Runs `fn` once per key: the first caller runs it and its result is stored; duplicates get
   * the stored result (`replayed: true`) without running it, or an
   * {@link IdempotencyInFlightError} while it is running. A transient failure releases the
   * key; a permanent one is stored and replayed as an {@link IdempotentFailureError}.
   *
   * @param key The idempotency key (an `Idempotency-Key` header, an AMQP message id).
   * @param input What identifies the request, for the fingerprint check; `undefined` skips it.
   * @param fn The work. Its value must survive `JSON.stringify`.
   * @param options The `scope` (user, tenant, API key) the key belongs to; see
   *   {@link ClaimOptions.scope}.
   * @throws {@link IdempotencyKeyInvalidError} for a missing or malformed key.
   * @throws {@link IdempotencyScopeMissingError} for a `scope` given empty or not a string.
   * @throws {@link IdempotencyMismatchError} when the key was used with a different input.
   * @throws {@link IdempotencyInFlightError} when another holder is running it.
   * @throws {@link IdempotencyUnavailableError} when Redis is unreachable (unless `failOpen`).
   * @throws {@link IdempotencyNotReplicatedError} with `replication` on, when the claim was not
   *   acknowledged by enough replicas: the work did not run (even with `failOpen`, which is
   *   about an unreachable Redis). A result stored but not acknowledged after the work ran does
   *   not throw: the value is returned and `not-replicated` is emitted.
   * @throws {@link ResilienceClosedError} after {@link Idempotency.close}, even with `failOpen`.
   * @example
   * ```ts
   * // An AMQP consumer: a redelivered message does not charge twice.
   * channel.consume('payments', async (msg) => {
   *   const { value } = await idempotency.run(msg.properties.messageId, msg.content, () => charge(msg))
   *   channel.ack(msg)
   * })
   * ```
   */
  async run<T>(
    key: string,
    input: unknown,
    fn: (context: IdempotencyContext) => T | PromiseLike<T>,
    options: RunOptions = {},
  ): Promise<IdempotentResult<T>> {
    // Before failOpen is looked at: a closed store never runs the work unprotected.
    if (this.#closed) throw new ResilienceClosedError('idempotency store', 'run')
    let outcome: ClaimOutcome
    try {
      outcome = await this.claim(key, input, { scope: options.scope })
    } catch (error) {
      if (error instanceof IdempotencyUnavailableError && this.#options.failOpen) {
        this.#stats.ranUnprotected++
        this.#events.emit('ran-unprotected', { key })
        const context = { key, scope: options.scope, token: 0, signal: NEVER_ABORTED }
        return { value: await fn(context), replayed: false }
      }
      throw error
    }
    switch (outcome.status) {
      case 'mismatch':
        throw new IdempotencyMismatchError(key)
      case 'inFlight':
        throw new IdempotencyInFlightError(key, outcome.retryAfterMs)
      case 'completed': {
        const record = outcome.record
        if (record.ok) return { value: record.value as T, replayed: true }
        throw new IdempotentFailureError(record.error.message, record.error.name, record.error.code)
      }
      case 'acquired': {
        const claim = outcome.claim
        let value: T
        try {
          value = await fn(claim)
        } catch (error) {
          if (this.#options.isTransient(error)) {
            await claim
              .release()
              .catch((e: unknown) => this.#events.emit('result-not-stored', { key, error: e }))
          } else {
            await claim.fail(error).catch((e: unknown) => {
              // fenced, or stored but not replicated (its own event): not a result left unstored
              if (
                !(e instanceof IdempotencyFencedError || e instanceof IdempotencyNotReplicatedError)
              )
                this.#events.emit('result-not-stored', { key, error: e })
            })
          }
          throw error
        }
        try {
          await claim.complete(value)
        } catch (error) {
          if (error instanceof IdempotencyFencedError) throw error
          // Stored on the master but not acknowledged by enough replicas (`not-replicated` was
          // emitted): the work is done, its value is the answer; a failover may still lose the record.
          if (!(error instanceof IdempotencyNotReplicatedError)) {
            // The work is done; only the record is missing. The key stays in flight until its
            // lease runs out, then a retry may run the work again.
            this.#events.emit('result-not-stored', { key, error })
          }
        }
        return { value, replayed: false }
      }
    }
  }

  /** Counters since creation. */
  stats(): IdempotencyStats {
    return { ...this.#stats, held: this.#held.size }
  }

  /**
   * Adds a listener; a listener that throws does not break the claim or run that emitted (its
   * error is rethrown in a microtask).
   * @returns A function that removes the listener.
   */
  on<K extends keyof IdempotencyEvents>(
    event: K,
    listener: Listener<IdempotencyEvents[K]>,
  ): Unsubscribe {
    return this.#events.on(event, listener)
  }

  /** Adds a listener called at most once; returns a function that removes it. */
  once<K extends keyof IdempotencyEvents>(
    event: K,
    listener: Listener<IdempotencyEvents[K]>,
  ): Unsubscribe {
    return this.#events.once(event, listener)
  }

  /** Removes a listener. */
  off<K extends keyof IdempotencyEvents>(event: K, listener: Listener<IdempotencyEvents[K]>): void {
    this.#events.off(event, listener)
  }

  /**
   * Stops renewing the claims this process holds (their leases then run out and others can
   * reclaim them) and refuses new claims. The Redis client is the caller's to close.
   */
  async close(): Promise<void> {
    if (!this.#closed) this.#stopMetrics()
    this.#closed = true
    for (const claim of [...this.#held]) {
      claim.lose(new ResilienceClosedError('idempotency store', 'renew'))
    }
    this.#events.removeAllListeners()
  }

  /**
   * The Redis key of an idempotency key, in `scope` if given: `<prefix>{<key>}`, or
   * `<prefix>~<SHA-256 of the scope, base64url>{<key>}`. The scope's hash has a fixed
   * length, so no scope and key pair can spell another's; `~` after the prefix keeps scoped
   * records apart from unscoped ones. Each record is this one Redis key (the scripts touch
   * nothing else), so it lives in one Cluster slot: the key's own (its text up to a `}`).
   */
  redisKey(key: string, scope?: string): string {
    if (scope === undefined) return `${this.#options.prefix}{${key}}`
    return `${this.#options.prefix}~${scopeHash(scope)}{${key}}`
  }

  /** @internal */
  readonly [INTERNAL]: StoreInternals = {
    renew: async (claim, lease) =>
      (await this.#call(
        claim.key,
        this.redisKey(claim.key, claim.scope),
        RENEW_SCRIPT,
        [String(claim.token), lease],
        this.#trips.renew,
        DESCRIBE_RENEW,
      )) === 1,
    finish: async (claim, id, record, kind) => {
      const [ok, acknowledged] = await this.#callAndWait(
        claim.key,
        this.redisKey(claim.key, claim.scope),
        COMPLETE_SCRIPT,
        [String(claim.token), record, this.#options.retention, id],
        kind === 'complete' ? this.#trips.complete : this.#trips.fail,
        DESCRIBE_STORE,
      )
      if (ok !== 1) {
        this.#stats.fenced++
        this.#events.emit('fenced', { key: claim.key, token: claim.token })
        throw new IdempotencyFencedError(claim.key, claim.token)
      }
      if (kind === 'complete') this.#stats.completed++
      else this.#stats.failed++
      // stored on the master: a failover before a replica has it loses it
      this.#checkReplicated(claim.key, kind, acknowledged)
    },
    release: async (claim, id) => {
      const ok =
        (await this.#call(
          claim.key,
          this.redisKey(claim.key, claim.scope),
          RELEASE_SCRIPT,
          [String(claim.token), id],
          this.#trips.release,
          DESCRIBE_RELEASE,
        )) === 1
      if (ok) this.#stats.released++
      return ok
    },
    lost: (claim, error) => {
      claim.lose(error)
      this.#events.emit('lease-lost', { key: claim.key, token: claim.token, error })
    },
    forget: (claim) => {
      this.#held.delete(claim)
    },
  }

  async #claimOnce(
    key: string,
    scope: string | undefined,
    redisKey: string,
    fingerprint: string,
  ): Promise<ClaimOutcome> {
    if (this.#closed) throw new ResilienceClosedError('idempotency store', 'claim')
    // Made before the first send: if ioredis sends the claim again (its reply lost when a
    // master died after running it, the promoted replica having the write), the script finds
    // this id on the claim in flight and answers it as acquired instead of in flight.
    const id = randomUUID()
    const args = [fingerprint, this.#options.lease, this.#options.retention, id]
    const [answer, acknowledged] = await this.#callAndWait(
      key,
      redisKey,
      CLAIM_SCRIPT,
      args,
      this.#trips.claim,
      describeClaim,
      (late) => {
        // The claim timed out here but reached Redis after all: give the key back at once
        // rather than leave it in flight, owned by no one, until its lease runs out.
        const r = late as [string, number?]
        if (r[0] === 'a') {
          RELEASE_SCRIPT.run(this.#options.redis, [redisKey], [String(r[1]), id]).catch(() => {})
        }
      },
    )
    const reply = answer as [string, (string | number)?, number?]
    if (reply[0] === 'a' && this.#short(acknowledged)) {
      // The claim reached the master only, and the work has not run: give it back (bounded,
      // best effort: if that fails too, the key stays in flight until its lease runs out), so
      // a retry can claim it, then fail closed.
      await withTimeout(
        RELEASE_SCRIPT.run(this.#options.redis, [redisKey], [String(reply[1]), id]),
        this.#options.commandTimeout,
        () => new Error('release timed out'),
      ).catch(() => {})
      this.#checkReplicated(key, 'claim', acknowledged)
    }
    switch (reply[0]) {
      case 'a': {
        const claim = IdempotencyClaim.acquired(
          this,
          key,
          id,
          Number(reply[1]),
          reply[2] === 1,
          this.#options.lease,
          scope,
        )
        this.#held.add(claim)
        claim.startRenewal(this.#options.lease)
        return { status: 'acquired', claim }
      }
      case 'd':
        return { status: 'completed', record: JSON.parse(String(reply[1])) as IdempotencyRecord }
      case 'p':
        return { status: 'inFlight', retryAfterMs: Number(reply[1]) }
      default:
        return { status: 'mismatch' }
    }
  }

  #count(key: string, outcome: ClaimOutcome): ClaimOutcome {
    const s = this.#stats
    switch (outcome.status) {
      case 'acquired':
        s.acquired++
        if (outcome.claim.reclaimed) s.reclaimed++
        this.#events.emit('acquired', {
          key,
          token: outcome.claim.token,
          reclaimed: outcome.claim.reclaimed,
        })
        break
      case 'completed':
        s.replayed++
        this.#events.emit('replayed', { key })
        break
      case 'inFlight':
        s.inFlightRefused++
        this.#events.emit('in-flight-refused', { key, retryAfterMs: outcome.retryAfterMs })
        break
      case 'mismatch':
        s.mismatched++
        this.#events.emit('mismatched', { key })
        break
    }
    return outcome
  }

  async #call(
    key: string,
    redisKey: string,
    script: LuaScript,
    args: (string | number)[],
    trip: RoundTrip,
    describe: (span: Span, reply: unknown) => void,
  ): Promise<unknown> {
    // One client span per round trip, the command timeout included: a cut or a silent Redis
    // shows as E_RESILIENCE_IDEMPOTENCY_UNAVAILABLE on it.
    return this.#roundTrips.run(
      trip,
      () => this.#send(key, () => script.run(this.#options.redis, [redisKey], args)),
      describe,
    )
  }

  /**
   * {@link Idempotency.#call} followed, with `replication` on, by `WAIT` in the same pipeline
   * (one round trip, on the connection of the key's master). Resolves with the script's reply
   * and how many replicas acknowledged (`Infinity` without `replication`).
   */
  async #callAndWait(
    key: string,
    redisKey: string,
    script: LuaScript,
    args: (string | number)[],
    trip: RoundTrip,
    describe: (span: Span, reply: unknown) => void,
    onLateReply?: (reply: unknown) => void,
  ): Promise<[unknown, number]> {
    const replication = this.#options.replication
    const redis = this.#options.redis
    if (replication === undefined) {
      const reply = await this.#roundTrips.run(
        trip,
        () => this.#send(key, () => script.run(redis, [redisKey], args), onLateReply),
        describe,
      )
      return [reply, Number.POSITIVE_INFINITY]
    }
    return this.#roundTrips.run(
      trip,
      () =>
        this.#send(
          key,
          () =>
            runAndWait(script, redis, [redisKey], args, replication.replicas, replication.timeout),
          onLateReply === undefined ? undefined : (late) => onLateReply(late[0]),
        ),
      (span, reply) => describe(span, reply[0]),
    )
  }

  /** Whether `WAIT` saw fewer replicas than `replication` asks for. */
  #short(acknowledged: number): boolean {
    const replication = this.#options.replication
    return replication !== undefined && acknowledged < replication.replicas
  }

  /** Counts, reports and throws a write that fewer replicas than asked acknowledged. */
  #checkReplicated(
    key: string,
    operation: 'claim' | 'complete' | 'fail',
    acknowledged: number,
  ): void {
    const replication = this.#options.replication
    if (replication === undefined || acknowledged >= replication.replicas) return
    const required = replication.replicas
    this.#stats.notReplicated++
    this.#events.emit('not-replicated', { key, operation, acknowledged, required })
    const what =
      operation === 'claim' ? 'the claim (given back; the work did not run)' : 'the stored result'
    throw new IdempotencyNotReplicatedError(
      `${what} reached the master but ${acknowledged} of ${required} replica(s) acknowledged it within ${replication.timeout} ms (WAIT)`,
      acknowledged,
      required,
    )
  }

  async #send<T>(key: string, run: () => Promise<T>, onLateReply?: (reply: T) => void): Promise<T> {
    const ms = this.#options.commandTimeout
    const sent = run()
    try {
      return await withTimeout(sent, ms, () => {
        if (onLateReply !== undefined) sent.then(onLateReply, () => {})
        return new Error(`Redis did not answer within ${ms} ms`)
      })
    } catch (cause) {
      this.#stats.redisCallsFailed++
      const error = new IdempotencyUnavailableError(
        `idempotency store unreachable: ${cause instanceof Error ? cause.message : String(cause)}`,
        { cause },
      )
      this.#events.emit('redis-call-failed', { key, error })
      throw error
    }
  }
}

/** The `replication` option checked, its timeout in milliseconds; `undefined` when off. */
function resolveReplication(
  value: unknown,
  commandTimeout: number,
): ResolvedIdempotencyOptions['replication'] {
  if (value === false || value === undefined) return undefined
  check.object('replication', value)
  const o = merge(DEFAULT_IDEMPOTENCY_REPLICATION_OPTIONS, value as IdempotencyReplicationOptions)
  const replicas = check.positiveInteger('replication.replicas', o.replicas)
  const timeout = check.duration('replication.timeout', o.timeout, { positive: true })
  if (timeout >= commandTimeout)
    check.invalid(
      'replication.timeout',
      `less than commandTimeout (${commandTimeout} ms), which bounds the round trip with its WAIT`,
      o.timeout,
    )
  return Object.freeze({ replicas, timeout })
}

/** A scope given must be a non-empty string: an empty one would silently share the key. */
function validateScope(scope: unknown): string | undefined {
  if (scope === undefined) return undefined
  if (typeof scope !== 'string' || scope === '') {
    throw new IdempotencyScopeMissingError(
      `an idempotency scope must be a non-empty string, got ${scope === '' ? 'an empty string' : typeof scope}`,
    )
  }
  return scope
}

/**
 * SHA-256 of the scope's UTF-16 code units, base64url (43 characters). UTF-16 rather than
 * UTF-8: every JavaScript string, lone surrogates included, maps to distinct bytes (UTF-8
 * would turn each lone surrogate into U+FFFD and let two scopes share a record).
 */
function scopeHash(scope: string): string {
  return createHash('sha256').update(scope, 'utf16le').digest('base64url')
}

/**
 * Creates an {@link Idempotency} store on an ioredis `Redis` or `Cluster`.
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis'
 * import { createIdempotency } from '@ballast/resilience'
 *
 * const idempotency = createIdempotency({ redis: new Redis(), lease: '15s', wait: '2s' })
 * const { value: receipt, replayed } = await idempotency.run(
 *   request.headers['idempotency-key'],
 *   { method: 'POST', path: '/payments', body: request.body },
 *   () => payments.charge(request.body),
 * )
 * ```
 */
export function createIdempotency(options: IdempotencyOptions): Idempotency {
  return new Idempotency(options)
}
