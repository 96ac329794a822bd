// The cache's telemetry in one place: instrument and attribute names, the observable counters
// read from stats(), the CLIENT span of each L2 round trip and the INTERNAL span of each load.
// An L1 hit touches none of it: metrics are read from the counters it already moves.
import {
  durationHistogram,
  errorType,
  failSpan,
  type ObservedInstrument,
  observe,
  type TelemetryOptions,
  telemetry,
} from '@ballast/shared'
import {
  type Attributes,
  context,
  createNoopMeter,
  type Histogram,
  type Meter,
  ProxyTracer,
  type Span,
  SpanKind,
  type SpanOptions,
  SpanStatusCode,
  type Tracer,
  trace,
} from '@opentelemetry/api'
import type { Cluster, Redis } from 'ioredis'
import type { CacheStats, CircuitState } from '../cacheEvents.js'
import type { RedisClient } from './l2.js'
import type { L2Guard } from './l2Guard.js'

/** Instrumentation scope of the package's meter and tracer. */
export const SCOPE = '@ballast/cache'

/** The cache's namespace (`ballast.cache.namespace`): set by the application, bounded. */
export const NAMESPACE = 'ballast.cache.namespace'
/** Which level answered or missed: `l1`, `l2`. */
export const LEVEL = 'ballast.cache.level'
/** How a load ended: `succeeded`, `failed`. */
export const OUTCOME = 'ballast.cache.outcome'
/** Direction of an invalidation message: `sent`, `received`. */
export const DIRECTION = 'ballast.cache.direction'
/** A breaker state: `closed`, `open`, `halfOpen`. */
export const STATE = 'ballast.cache.state'
/** The cache step an L2 round trip serves (`get`, `cas`, `lock`, `deleteByTag`, ...). */
export const OPERATION = 'ballast.cache.operation'
/** How many keys a batch loader was given. */
export const LOAD_KEYS = 'ballast.cache.load.keys'

/** The INTERNAL span of a loader call. */
export const LOAD_SPAN = 'ballast.cache.load'
/** The histogram of loader calls. */
export const LOAD_DURATION = 'ballast.cache.load.duration'
/** The histogram of L2 round trips (database client semantic conventions). */
export const L2_DURATION = 'db.client.operation.duration'

const STATES: readonly CircuitState[] = ['closed', 'open', 'halfOpen']

/** Every observable instrument, read from `stats()` at collection time. */
export const INSTRUMENTS = {
  'ballast.cache.hits': {
    kind: 'counter',
    unit: '{hit}',
    description: 'Reads answered, by level (l1, l2)',
  },
  'ballast.cache.misses': {
    kind: 'counter',
    unit: '{miss}',
    description: 'Reads a level could not answer, by level (l1, l2)',
  },
  'ballast.cache.loads': {
    kind: 'counter',
    unit: '{load}',
    description:
      'Loads settled, by outcome: succeeded, failed (the loader threw or its value was refused); a batch load counts once per key',
  },
  'ballast.cache.load.timed_out': {
    kind: 'counter',
    unit: '{wait}',
    description: 'Waits for a load that hit hardTimeout (the load itself went on)',
  },
  'ballast.cache.coalesced': {
    kind: 'counter',
    unit: '{call}',
    description: 'Calls that waited for a load already in flight in this process (stampede waits)',
  },
  'ballast.cache.lock.waits': {
    kind: 'counter',
    unit: '{wait}',
    description:
      "Waits of getOrSet(..., { lock: true }) for another instance's load (stampede waits across the deployment)",
  },
  'ballast.cache.invalidations': {
    kind: 'counter',
    unit: '{message}',
    description:
      'Invalidation messages (keys, tags, clear) by direction: sent by this instance, received from others',
  },
  'ballast.cache.bus.gaps': {
    kind: 'counter',
    unit: '{gap}',
    description: "Gaps in other instances' sequence numbers (each one flushes L1)",
  },
  'ballast.cache.bus.rejected': {
    kind: 'counter',
    unit: '{message}',
    description: 'Messages on the invalidation channel dropped as malformed',
  },
  'ballast.cache.l1.flushes': {
    kind: 'counter',
    unit: '{flush}',
    description: 'Times L1 was emptied (clear, gap, resubscription)',
  },
  'ballast.cache.l2.failed': {
    kind: 'counter',
    unit: '{call}',
    description: 'L2 calls that failed or timed out (the cache degraded as documented)',
  },
  'ballast.cache.l2.decode_failed': {
    kind: 'counter',
    unit: '{value}',
    description: 'L2 values that could not be decoded and were read as misses',
  },
  'ballast.cache.stale_served': {
    kind: 'counter',
    unit: '{value}',
    description: 'Stale values served within grace (fail-safe, stale-while-revalidate)',
  },
  'ballast.cache.conflicts': {
    kind: 'counter',
    unit: '{fill}',
    description: 'Loaded values not written back because the key changed while they loaded',
  },
  'ballast.cache.breaker.state': {
    kind: 'gauge',
    unit: '1',
    description:
      'The L2 circuit breaker: 1 for its current state (closed, open, halfOpen), 0 for the others',
  },
  'ballast.cache.bus.healthy': {
    kind: 'gauge',
    unit: '1',
    description: 'Whether the invalidation subscription works now (1) or L1 is not trusted (0)',
  },
  'ballast.cache.l1.entries': {
    kind: 'upDownCounter',
    unit: '{entry}',
    description: 'Entries L1 holds now',
  },
  'ballast.cache.l1.bytes': {
    kind: 'upDownCounter',
    unit: 'By',
    description: 'Approximate bytes L1 holds now',
  },
  'ballast.cache.pending_invalidations': {
    kind: 'upDownCounter',
    unit: '{invalidation}',
    description: 'Invalidations waiting for L2 to return (L2 is not read while any wait)',
  },
} as const satisfies Record<string, ObservedInstrument>

/** One L2 call as a span names it: the cache step and the Redis command(s) it sends. */
export interface L2Call {
  /** The cache step (`get`, `cas`, ...): what `l2-failed` events and errors name. */
  readonly operation: string
  /** `db.operation.name`: the Redis command, `BATCH <command>` or `BATCH` for a pipeline. */
  readonly command: string
  /** `db.operation.batch.size`, for a batch. */
  readonly batchSize?: number
  /** False for the bus heartbeat: a root span every second would drown the traces. */
  readonly traced?: boolean
}

/** The L2 calls whose command never changes. */
export const L2_CALLS = {
  get: { operation: 'get', command: 'GET' },
  generation: { operation: 'generation', command: 'GET' },
  mget: { operation: 'mget', command: 'MGET' },
  lock: { operation: 'lock', command: 'SET' },
  unlock: { operation: 'unlock', command: 'EVALSHA' },
  tag: { operation: 'tag', command: 'EVALSHA' },
  cas: { operation: 'cas', command: 'EVALSHA' },
  bloomAdd: { operation: 'bloom', command: 'BITFIELD' },
  bloomCheck: { operation: 'bloom', command: 'BITFIELD_RO' },
  clear: { operation: 'clear', command: 'INCR' },
  pruneTag: { operation: 'deleteByTag', command: 'EVALSHA' },
  scanTag: { operation: 'deleteByTag', command: 'ZSCAN' },
  removeTagMembers: { operation: 'deleteByTag', command: 'EVALSHA' },
  scanLegacyTag: { operation: 'deleteByTag', command: 'SSCAN' },
  removeLegacyTagMembers: { operation: 'deleteByTag', command: 'SREM' },
  publish: { operation: 'publish', command: 'PUBLISH' },
  spublish: { operation: 'publish', command: 'SPUBLISH' },
  heartbeat: { operation: 'publish', command: 'PUBLISH', traced: false },
  sheartbeat: { operation: 'publish', command: 'SPUBLISH', traced: false },
} as const satisfies Record<string, L2Call>

/** Writes of `count` entries (SET, or a pipeline of SETs); `tagged` adds the tag scripts before them. */
export function writeCall(operation: string, count: number, tagged = false): L2Call {
  if (tagged) return { operation, command: 'BATCH' }
  return count === 1
    ? { operation, command: 'SET' }
    : { operation, command: 'BATCH SET', batchSize: count }
}

/**
 * Whether the tracer can record at all: false for the global tracer while no SDK is installed
 * (a `ProxyTracer` with no delegate), so an L2 call then costs one boolean test, not a span.
 */
function canRecord(tracer: Tracer): boolean {
  return !(tracer instanceof ProxyTracer)
}

/** The default port of Redis, which `server.port` is not given for. */
const REDIS_PORT = 6379

/** `db.system.name`, and for a standalone client the server and database index it talks to. */
function redisAttributes(client: RedisClient | undefined): Attributes {
  const attributes: Attributes = { 'db.system.name': 'redis' }
  if (client === undefined || (client as Cluster).isCluster === true) return attributes
  const options = (client as Redis).options as
    | { host?: unknown; port?: unknown; path?: unknown; db?: unknown }
    | undefined
  if (options === undefined) return attributes
  if (typeof options.host === 'string' && options.path == null) {
    attributes['server.address'] = options.host
    // the conventions ask for the port only when it is not the default: one attribute less
    // for the SDK to hash on every point
    if (typeof options.port === 'number' && options.port !== REDIS_PORT)
      attributes['server.port'] = options.port
  }
  if (typeof options.db === 'number') attributes['db.namespace'] = String(options.db)
  return attributes
}

/** Run `fn` with `span` active, so spans the loader or the client start are its children. */
function withSpan<T>(span: Span, fn: () => T): T {
  return context.with(trace.setSpan(context.active(), span), fn)
}

/** The class of the histograms a no-op meter makes (the global meter while no SDK is installed). */
const NOOP_HISTOGRAM: unknown = createNoopMeter().createHistogram('noop').constructor

/**
 * The `error.type` of a failed L2 call: the code of what the guard caught when it has one
 * (`E_RESILIENCE_TIMEOUT` for a timeout, `E_RESILIENCE_BREAKER_OPEN` for a call the half-open
 * breaker refused, a socket's `ECONNRESET`), else the guard's own `E_CACHE_L2_UNAVAILABLE`
 * (a closed connection, an error reply).
 */
export function l2ErrorType(error: unknown): string {
  const cause = (error as { cause?: unknown } | null)?.cause
  const code = (cause as { code?: unknown } | null | undefined)?.code
  if (typeof code === 'string' && code.length > 0) return code
  return errorType(error)
}

/**
 * What one kind of L2 call records. The SDK hashes a point's attributes on every record and
 * copies a span's start attributes even when it does not sample it, both at a cost per
 * attribute: the point carries the semantic-convention attributes only, and a span starts with
 * the two a sampler may look at and gets the rest only once it is known to record.
 */
interface CallShape {
  /** `db.client.operation.duration`: `db.system.name`, the server, `db.operation.name`. */
  readonly point: Attributes
  /** The CLIENT span as it starts. */
  readonly start: SpanOptions
  /** Set on a recording span: the server, the cache step, the namespace, a batch's size. */
  readonly span: Attributes
}

/** The telemetry of one cache: its meter's instruments and its tracer's spans. */
export class CacheTelemetry {
  readonly #meter: Meter
  readonly #tracer: Tracer
  readonly #tracing: boolean
  /** Whether L2 calls are timed and traced at all: false with neither an SDK meter nor tracer. */
  readonly #active: boolean
  readonly #loadDuration: Histogram
  readonly #l2Duration: Histogram
  /** `db.system.name` and the server: what every round trip's point and span start from. */
  readonly #redis: Attributes
  /** Per kind of L2 call, what its point and its span carry, built once. */
  readonly #shapes = new Map<L2Call, CallShape>()
  readonly #loadSucceeded: Attributes
  readonly #namespace: string
  #stopObserving: (() => void) | undefined

  constructor(options: TelemetryOptions, namespace: string, client: RedisClient | undefined) {
    const { meter, tracer } = telemetry(SCOPE, options)
    this.#meter = meter
    this.#tracer = tracer
    this.#tracing = canRecord(tracer)
    this.#namespace = namespace
    this.#redis = redisAttributes(client)
    this.#loadDuration = durationHistogram(
      meter,
      LOAD_DURATION,
      'Duration of loader calls (a batch loader call counts once), by outcome',
    )
    this.#l2Duration = durationHistogram(
      meter,
      L2_DURATION,
      'Duration of the L2 (Redis) round trips of the cache, timeouts included',
    )
    this.#active = this.#tracing || this.#l2Duration.constructor !== NOOP_HISTOGRAM
    this.#loadSucceeded = Object.freeze({ [NAMESPACE]: namespace, [OUTCOME]: 'succeeded' })
    for (const call of Object.values(L2_CALLS)) this.#shapes.set(call, this.#shapeOf(call))
  }

  /**
   * Registers the observable instruments, read from `stats()` when the SDK collects. Without
   * L2 (`hasL2` false) the L2, bus and breaker instruments report nothing: an L1-only cache
   * has no subscription to be unhealthy, and must not look like one.
   */
  observe(stats: () => CacheStats, hasL2: boolean): void {
    const ns = this.#namespace
    const at = (extra: Attributes): Attributes => ({ [NAMESPACE]: ns, ...extra })
    const l1 = at({ [LEVEL]: 'l1' })
    const l2 = at({ [LEVEL]: 'l2' })
    const succeeded = at({ [OUTCOME]: 'succeeded' })
    const failed = at({ [OUTCOME]: 'failed' })
    const sent = at({ [DIRECTION]: 'sent' })
    const received = at({ [DIRECTION]: 'received' })
    const states = STATES.map((state) => [state, at({ [STATE]: state })] as const)
    const plain = at({})
    this.#stopObserving = observe(this.#meter, INSTRUMENTS, (record) => {
      const s = stats()
      record('ballast.cache.hits', s.l1.hits, l1)
      record('ballast.cache.misses', s.l1.misses, l1)
      record('ballast.cache.loads', s.loader.succeeded, succeeded)
      record('ballast.cache.loads', s.loader.failed, failed)
      record('ballast.cache.load.timed_out', s.loader.timedOut, plain)
      record('ballast.cache.coalesced', s.coalesced, plain)
      record('ballast.cache.stale_served', s.staleServed, plain)
      record('ballast.cache.l1.flushes', s.bus.flushes, plain)
      record('ballast.cache.l1.entries', s.l1.entries, plain)
      record('ballast.cache.l1.bytes', s.l1.bytes, plain)
      if (!hasL2) return
      record('ballast.cache.hits', s.l2.hits, l2)
      record('ballast.cache.misses', s.l2.misses, l2)
      record('ballast.cache.lock.waits', s.lockWaits, plain)
      record('ballast.cache.invalidations', s.bus.invalidationsPublished, sent)
      record('ballast.cache.invalidations', s.bus.invalidationsReceived, received)
      record('ballast.cache.bus.gaps', s.bus.gaps, plain)
      record('ballast.cache.bus.rejected', s.bus.rejected, plain)
      record('ballast.cache.bus.healthy', s.bus.healthy ? 1 : 0, plain)
      record('ballast.cache.l2.failed', s.l2.failed, plain)
      record('ballast.cache.l2.decode_failed', s.l2.decodeFailed, plain)
      record('ballast.cache.conflicts', s.conflicts, plain)
      for (const [state, attributes] of states)
        record('ballast.cache.breaker.state', s.breaker === state ? 1 : 0, attributes)
      record('ballast.cache.pending_invalidations', s.pendingInvalidations, plain)
    })
  }

  /** Unregisters the observable instruments (`close()`). */
  close(): void {
    this.#stopObserving?.()
    this.#stopObserving = undefined
  }

  /**
   * One guarded L2 call: a point of `db.client.operation.duration` and a CLIENT span (not for
   * the heartbeat), both settled when the guard settles the call (a timeout settles them too).
   * A call the open breaker refuses makes no round trip and is neither timed nor traced (it
   * counts in `ballast.cache.l2.failed`). With no SDK: the guard's own promise, untouched.
   */
  l2<R, A>(
    call: L2Call,
    guard: L2Guard,
    fn: (target: never, arg: A) => Promise<R>,
    target: unknown,
    arg: A,
  ): Promise<R> {
    const run = fn as (target: unknown, arg: A) => Promise<R>
    if (!this.#active || guard.state === 'open') return guard.run(call.operation, run, target, arg)
    const shape = this.#shapes.get(call) ?? this.#shapeOf(call)
    let span: Span | undefined
    if (this.#tracing && call.traced !== false) {
      span = this.#tracer.startSpan(call.command, shape.start)
      if (span.isRecording()) span.setAttributes(shape.span)
      else span = undefined
    }
    const attributes = shape.point
    const started = performance.now()
    const pending =
      span === undefined
        ? guard.run(call.operation, run, target, arg)
        : withSpan(span, () => guard.run(call.operation, run, target, arg))
    return pending.then(
      (value) => {
        this.#l2Duration.record((performance.now() - started) / 1000, attributes)
        span?.end()
        return value
      },
      (error: unknown) => {
        const type = l2ErrorType(error)
        this.#l2Duration.record((performance.now() - started) / 1000, {
          ...attributes,
          'error.type': type,
        })
        if (span !== undefined) {
          failSpan(span, error)
          span.setAttribute('error.type', type)
          span.end()
        }
        throw error
      },
    )
  }

  /**
   * One loader call in an INTERNAL span (active while the loader runs, so its own spans are
   * children) and a point of the load histogram. The span ends when the loader settles: the
   * L2 writes that follow are its siblings. A failure records `error.type` and no message (a
   * loader's error may name the key).
   */
  load<T>(keys: number | undefined, loader: () => T | Promise<T>): Promise<T> {
    const started = performance.now()
    let span: Span | undefined
    if (this.#tracing) {
      span = this.#tracer.startSpan(LOAD_SPAN, {
        kind: SpanKind.INTERNAL,
        attributes:
          keys === undefined
            ? { [NAMESPACE]: this.#namespace }
            : { [NAMESPACE]: this.#namespace, [LOAD_KEYS]: keys },
      })
      if (!span.isRecording()) span = undefined
    }
    let result: Promise<T>
    try {
      result = Promise.resolve(span === undefined ? loader() : withSpan(span, loader))
    } catch (error) {
      result = Promise.reject(error)
    }
    return result.then(
      (value) => {
        if (span !== undefined) {
          span.setAttribute(OUTCOME, 'succeeded')
          span.end()
        }
        this.#loadDuration.record((performance.now() - started) / 1000, this.#loadSucceeded)
        return value
      },
      (error: unknown) => {
        const type = errorType(error)
        if (span !== undefined) {
          span.setAttributes({ [OUTCOME]: 'failed', 'error.type': type })
          span.setStatus({ code: SpanStatusCode.ERROR })
          span.end()
        }
        this.#loadDuration.record((performance.now() - started) / 1000, {
          [NAMESPACE]: this.#namespace,
          [OUTCOME]: 'failed',
          'error.type': type,
        })
        throw error
      },
    )
  }

  #shapeOf(call: L2Call): CallShape {
    const point: Attributes = { ...this.#redis, 'db.operation.name': call.command }
    const span: Attributes = {
      ...this.#redis,
      [OPERATION]: call.operation,
      [NAMESPACE]: this.#namespace,
    }
    if (call.batchSize !== undefined) span['db.operation.batch.size'] = call.batchSize
    return {
      point,
      start: {
        kind: SpanKind.CLIENT,
        attributes: { 'db.system.name': 'redis', 'db.operation.name': call.command },
      },
      span,
    }
  }
}
