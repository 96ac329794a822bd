import {
  type Checks,
  checkProviders,
  checks,
  type Duration,
  Emitter,
  type Listener,
  merge,
  observe,
  show,
  type TelemetryOptions,
  telemetry,
  type Unsubscribe,
} from '@ballast/shared'
import type { Attributes } from '@opentelemetry/api'
import type { Endpoint, EndpointInput, EndpointStats } from './endpoint.js'
import {
  DuplicateEndpointError,
  EmptyEndpointsError,
  InvalidArgumentError,
  InvalidWeightError,
  LbClosedError,
  NoEndpointAvailableError,
  UnknownEndpointError,
} from './errors.js'
import type { HashKey } from './hash.js'
import { HashRing, type HashRingOptions } from './hashRing.js'
import { EndpointState } from './internal/endpointState.js'
import {
  BoundedLoad,
  ConsistentHash,
  type Exclude,
  LeastRequest,
  observeLatency,
  PeakEwma,
  RoundRobin,
  SmoothWeightedRoundRobin,
  type Strategy,
  type StrategyContext,
  WeightedRandom,
} from './internal/strategies.js'
import { BALANCER_ATTRIBUTES, SCOPE } from './internal/telemetry.js'

/**
 * How a balancer picks an endpoint:
 * - `round-robin`: each usable endpoint in turn, ignoring weights.
 * - `weighted-round-robin`: nginx's smooth weighted round robin ({5,1,1} → a a b a c a a).
 * - `random`: weighted random.
 * - `least-request`: power of two choices, fewer in-flight requests per unit of weight wins.
 * - `peak-ewma`: power of two choices on Finagle's peak-EWMA latency × (in flight + 1).
 * - `consistent-hash`: the key's owner on a {@link HashRing} of all endpoints.
 * - `bounded-load`: consistent hashing where no endpoint takes more than `balanceFactor` × its
 *   share of the requests in flight (HAProxy's hash-balance-factor).
 */
export type StrategyName =
  | 'round-robin'
  | 'weighted-round-robin'
  | 'random'
  | 'least-request'
  | 'peak-ewma'
  | 'consistent-hash'
  | 'bounded-load'

/** Every strategy name, in the order the docs and benchmarks list them. */
export const STRATEGIES: readonly StrategyName[] = [
  'round-robin',
  'weighted-round-robin',
  'random',
  'least-request',
  'peak-ewma',
  'consistent-hash',
  'bounded-load',
]

/** Passive health: when to eject an endpoint from rotation for a while (Envoy's outlier detection). */
export interface OutlierDetectionOptions {
  /**
   * Eject after this many failures in a row.
   * @default 5
   */
  consecutiveFailures?: number
  /**
   * Eject when the share of failures over the window reaches this (0..1]; `1` ejects only on
   * all-failure windows.
   * @default 0.5
   */
  failureRateThreshold?: number
  /**
   * The failure rate is judged only once the window holds this many requests.
   * @default 20
   */
  failureRateMinimumRequests?: number
  /**
   * Length of the failure-rate window (the current and the previous window count).
   * @default 10000
   */
  failureRateWindow?: Duration
  /**
   * Ejection time of a first ejection; the n-th ejection lasts n times this (the count drops by
   * one for each such period without ejection).
   * @default 30000
   */
  baseEjectionTime?: Duration
  /**
   * Upper bound of one ejection.
   * @default 300000
   */
  maxEjectionTime?: Duration
  /**
   * Largest share of endpoints ejected at once; one endpoint can always be ejected when none is.
   * @default 0.1
   */
  maxEjectionShare?: number
}

/** Slow start: a new or recovered endpoint's weight ramps from a floor to its full value. */
export interface SlowStartOptions {
  /**
   * How long the ramp lasts; `0` disables slow start.
   * @default 10000
   */
  window?: Duration
  /**
   * Shape of the ramp: weight × (elapsed / window)^(1 / aggression); 1 is linear, higher ramps faster early.
   * @default 1
   */
  aggression?: number
  /**
   * The floor of the ramp, as a share of the weight (0..1].
   * @default 0.1
   */
  minWeightShare?: number
}

/**
 * Options of {@link createBalancer}. `meterProvider` (from {@link TelemetryOptions}) receives the
 * per-endpoint instruments, read from the counters at collection time: `pick()` makes no
 * telemetry call.
 */
export interface BalancerOptions<T = string> extends TelemetryOptions {
  /**
   * How endpoints are picked; see {@link StrategyName}.
   * @default 'peak-ewma'
   */
  strategy?: StrategyName
  /** The endpoints: ids (such as URLs), or `{ id, weight, value }`. At least one, ids unique. */
  endpoints: ReadonlyArray<string | EndpointInput<T>>
  /**
   * When fewer than this share of endpoints is healthy (and not ejected), but at least one is,
   * spread traffic over all endpoints rather than overload the few (Envoy's panic mode). When
   * none is healthy, `pick()` throws {@link NoEndpointAvailableError} at once. `0` disables panic.
   * @default 0.5
   */
  panicThreshold?: number
  /**
   * Passive outlier detection, fed by `end(endpoint, startedAt, ok)`; `false` turns it off.
   * @default {} (the defaults of {@link OutlierDetectionOptions})
   */
  outlierDetection?: OutlierDetectionOptions | false
  /**
   * Slow start for endpoints added at run time or restored after ejection or failed health
   * checks (weighted strategies and P2C; the hashing strategies keep their key mapping).
   * @default {} (the defaults of {@link SlowStartOptions})
   */
  slowStart?: SlowStartOptions | false
  /**
   * Decay time (τ) of the peak-EWMA latency.
   * @default 10000
   */
  ewmaDecay?: Duration
  /**
   * Latency recorded for a failed request when it is lower, so fast failures do not attract
   * traffic under `peak-ewma`.
   * @default 1000
   */
  failurePenalty?: Duration
  /**
   * `bounded-load`: no endpoint takes more than this times its share of the in-flight requests (> 1).
   * @default 1.25
   */
  balanceFactor?: number
  /**
   * Options of the hash ring used by `consistent-hash` and `bounded-load`.
   * @default {} (the defaults of {@link HashRingOptions})
   */
  ring?: HashRingOptions
  /**
   * Clock in milliseconds; the simulator passes a simulated one.
   * @default performance.now
   */
  clock?: () => number
  /**
   * Source of uniform numbers in [0, 1); pass a seeded one for reproducible picks.
   * @default Math.random
   */
  random?: () => number
}

/** The defaults of {@link BalancerOptions}. */
export const DEFAULT_BALANCER_OPTIONS: Readonly<
  Required<
    Pick<
      BalancerOptions,
      | 'strategy'
      | 'panicThreshold'
      | 'ewmaDecay'
      | 'failurePenalty'
      | 'balanceFactor'
      | 'clock'
      | 'random'
    >
  >
> = Object.freeze({
  strategy: 'peak-ewma',
  panicThreshold: 0.5,
  ewmaDecay: 10_000,
  failurePenalty: 1000,
  balanceFactor: 1.25,
  clock: () => performance.now(),
  random: Math.random,
})

/** The defaults of {@link OutlierDetectionOptions}. */
export const DEFAULT_OUTLIER_DETECTION_OPTIONS: Readonly<Required<OutlierDetectionOptions>> =
  Object.freeze({
    consecutiveFailures: 5,
    failureRateThreshold: 0.5,
    failureRateMinimumRequests: 20,
    failureRateWindow: 10_000,
    baseEjectionTime: 30_000,
    maxEjectionTime: 300_000,
    maxEjectionShare: 0.1,
  })

/** The defaults of {@link SlowStartOptions}. */
export const DEFAULT_SLOW_START_OPTIONS: Readonly<Required<SlowStartOptions>> = Object.freeze({
  window: 10_000,
  aggression: 1,
  minWeightShare: 0.1,
})

/** Why an endpoint was ejected. */
export type EjectionReason = 'consecutive-failures' | 'failure-rate'

/** Why an endpoint is back in rotation. */
export type RestoreReason = 'ejection-expired' | 'health-check'

/** Payload of the balancer's `ejected` event. */
export interface EjectedEvent<T = string> {
  /** The endpoint taken out of rotation. */
  endpoint: Endpoint<T>
  /** What tripped the ejection. */
  reason: EjectionReason
  /** How long it stays out, in milliseconds. */
  durationMs: number
  /** Its ejection count, which multiplies the base ejection time. */
  ejections: number
}

/** Payload of the balancer's `restored` event. */
export interface RestoredEvent<T = string> {
  /** The endpoint back in rotation. */
  endpoint: Endpoint<T>
  /** Why it is back. */
  reason: RestoreReason
}

/** Payload of the balancer's `health-changed` event. */
export interface HealthChangedEvent<T = string> {
  /** The endpoint checked. */
  endpoint: Endpoint<T>
  /** The new verdict. */
  healthy: boolean
}

/** Payload of the balancer's `picked` event. */
export interface PickedEvent<T = string> {
  /** The endpoint `pick()` returned. */
  endpoint: Endpoint<T>
}

/** Payload of the balancer's `endpoint-added` event. */
export interface EndpointAddedEvent<T = string> {
  /** The endpoint added (it slow-starts). */
  endpoint: Endpoint<T>
}

/** Payload of the balancer's `endpoint-removed` event. */
export interface EndpointRemovedEvent<T = string> {
  /** The endpoint removed. */
  endpoint: Endpoint<T>
}

/** Payload of the balancer's `panic-changed` event. */
export interface PanicChangedEvent {
  /** Whether panic mode is now on. */
  active: boolean
  /** Endpoints healthy and not ejected. */
  healthy: number
  /** All endpoints. */
  total: number
}

/** Payload of the balancer's `weight-changed` event. */
export interface WeightChangedEvent<T = string> {
  /** The endpoint, carrying its new weight. */
  endpoint: Endpoint<T>
  /** The weight before the change. */
  previous: number
}

/** The events of a {@link Balancer}, each with its one payload object. */
export interface BalancerEvents<T = string> {
  /** An endpoint was returned by `pick()` (the payload is built only while someone listens). */
  picked: PickedEvent<T>
  /** Outlier detection took an endpoint out of rotation for `durationMs`. */
  ejected: EjectedEvent<T>
  /** An ejected endpoint is back in rotation (its ejection expired, or a health check passed). */
  restored: RestoredEvent<T>
  /** Active health checks changed their verdict on an endpoint. */
  'health-changed': HealthChangedEvent<T>
  /** Panic mode started (`active: true`: too few endpoints healthy, all are used) or ended. */
  'panic-changed': PanicChangedEvent
  /** An endpoint was added at run time with `add()`. */
  'endpoint-added': EndpointAddedEvent<T>
  /** An endpoint was removed with `remove()`. */
  'endpoint-removed': EndpointRemovedEvent<T>
  /** An endpoint's configured weight changed with `setWeight()`. */
  'weight-changed': WeightChangedEvent<T>
}

/** A snapshot of a balancer's state, from `stats()`. */
export interface BalancerStats {
  /** The strategy in use. */
  strategy: StrategyName
  /** How many endpoints it holds. */
  total: number
  /** How many are healthy and not ejected. */
  available: number
  /** Whether it is in panic mode. */
  panicking: boolean
  /** Picks that found no endpoint. */
  noEndpoint: number
  /** Requests in flight over all endpoints. */
  inFlight: number
  /** One entry per endpoint. */
  endpoints: EndpointStats[]
}

/**
 * Picks endpoints for requests and learns from their outcomes. Call {@link Balancer.pick},
 * then {@link Balancer.begin} when the request starts and {@link Balancer.end} when it ends,
 * so in-flight counts, latency and outlier detection stay accurate.
 */
export interface Balancer<T = string> {
  /** The strategy in use. */
  readonly strategy: StrategyName
  /** How many endpoints it holds. */
  readonly size: number
  /** Whether panic mode is on (too few healthy endpoints, so all are used). */
  readonly panicking: boolean
  /**
   * Picks an endpoint. `key` routes the hashing strategies (others ignore it); `exclude` skips
   * endpoints already tried, so a retry goes elsewhere.
   * @throws NoEndpointAvailableError when no endpoint can be used, at once.
   */
  pick(key?: HashKey, exclude?: Endpoint<T> | readonly Endpoint<T>[]): Endpoint<T>
  /** Marks a request started on the endpoint; returns the start time to pass to `end`. */
  begin(endpoint: Endpoint<T>): number
  /** Marks a request ended: `ok` false counts as a failure for outlier detection. */
  end(endpoint: Endpoint<T>, startedAt: number, ok: boolean): void
  /** Adds an endpoint at run time (it slow-starts). */
  add(endpoint: string | EndpointInput<T>): Endpoint<T>
  /** Removes an endpoint; returns whether it was there. In-flight requests on it may still end. */
  remove(id: string): boolean
  /** Changes an endpoint's weight. */
  setWeight(id: string, weight: number): void
  /** Sets the active-health verdict of an endpoint (health checkers call this). */
  setHealthy(id: string, healthy: boolean): void
  /** The endpoint with this id, if any. */
  get(id: string): Endpoint<T> | undefined
  /** Every endpoint, in insertion order. */
  endpoints(): readonly Endpoint<T>[]
  /** Counters and state of the balancer and each endpoint. */
  stats(): BalancerStats
  /**
   * Adds an event listener; returns a function that removes it. A listener that throws does
   * not break the balancer: its error is rethrown in a microtask.
   */
  on<K extends keyof BalancerEvents<T> & string>(
    event: K,
    listener: Listener<BalancerEvents<T>[K]>,
  ): Unsubscribe
  /** Adds a listener called at most once; returns a function that removes it. */
  once<K extends keyof BalancerEvents<T> & string>(
    event: K,
    listener: Listener<BalancerEvents<T>[K]>,
  ): Unsubscribe
  /** Removes a listener. */
  off<K extends keyof BalancerEvents<T> & string>(
    event: K,
    listener: Listener<BalancerEvents<T>[K]>,
  ): void
  /** Stops its timers (ejections, slow start). Picking still works afterwards. */
  close(): Promise<void>
}

const check: Checks = checks(InvalidArgumentError)
const argument: Checks = checks(InvalidArgumentError, 'argument')
/** How an endpoint given to the constructor, and one given to `add()`, are named in errors. */
const AS_OPTION = { c: check, name: 'endpoints' }
const AS_ARGUMENT = { c: argument, name: 'endpoint' }

/** Outlier detection as it runs: the options with durations in milliseconds. */
interface OutlierSettings {
  consecutiveFailures: number
  failureRateThreshold: number
  failureRateMinimumRequests: number
  failureRateWindowMs: number
  baseEjectionTimeMs: number
  maxEjectionTimeMs: number
  maxEjectionShare: number
}

/** Slow start as it runs: the options with the window in milliseconds. */
interface SlowStartSettings {
  windowMs: number
  aggression: number
  minWeightShare: number
}

/** A share above zero and at most one. */
function positiveShare(name: string, value: unknown): number {
  if (typeof value !== 'number' || !(value > 0 && value <= 1)) {
    check.invalid(name, 'a number above 0 and at most 1', value)
  }
  return value as number
}

/** Normalises an endpoint input, checking its id and weight. */
function normalise<T>(
  input: string | EndpointInput<T>,
  { c, name }: { c: Checks; name: string },
): { id: string; weight: number; value: T } {
  if (typeof input === 'string') {
    if (input === '') c.invalid(name, 'a non-empty id', input)
    return { id: input, weight: 1, value: input as unknown as T }
  }
  if (
    typeof input !== 'object' ||
    input === null ||
    typeof input.id !== 'string' ||
    input.id === ''
  ) {
    c.invalid(name, 'a non-empty string id or { id, weight?, value? }', input)
  }
  const weight = input.weight ?? 1
  if (typeof weight !== 'number' || !Number.isFinite(weight) || weight <= 0)
    throw new InvalidWeightError(input.id, weight)
  return { id: input.id, weight, value: ('value' in input ? input.value : input.id) as T }
}

class BalancerImpl<T> extends Emitter<BalancerEvents<T>> implements Balancer<T> {
  readonly strategy: StrategyName
  readonly #all: EndpointState<T>[] = []
  readonly #byId = new Map<string, EndpointState<T>>()
  readonly #strategy: Strategy<T>
  readonly #ring: HashRing | undefined
  readonly #clock: () => number
  readonly #panicThreshold: number
  readonly #outlier: OutlierSettings | undefined
  readonly #slowStart: SlowStartSettings | undefined
  readonly #ewmaDecayMs: number
  readonly #failurePenaltyMs: number
  readonly #isEwma: boolean
  #available = 0
  #ejectedCount = 0
  #panicking = false
  #totalInFlight = 0
  #noEndpoint = 0
  #slowStartTimer: ReturnType<typeof setInterval> | undefined
  #closed = false
  readonly #stopObserving: () => void

  constructor(options: BalancerOptions<T>) {
    super()
    if (typeof options !== 'object' || options === null) {
      throw new InvalidArgumentError(`invalid options: expected an object, got ${show(options)}`)
    }
    const o = merge(DEFAULT_BALANCER_OPTIONS, options)
    check.oneOf('strategy', o.strategy, STRATEGIES)
    if (!Array.isArray(o.endpoints)) check.invalid('endpoints', 'an array', o.endpoints)
    if (o.endpoints.length === 0) throw new EmptyEndpointsError()
    this.strategy = o.strategy
    this.#panicThreshold = check.ratio('panicThreshold', o.panicThreshold)
    this.#ewmaDecayMs = check.duration('ewmaDecay', o.ewmaDecay, { positive: true })
    this.#failurePenaltyMs = check.duration('failurePenalty', o.failurePenalty)
    const balanceFactor = o.balanceFactor
    if (typeof balanceFactor !== 'number' || !(balanceFactor > 1 && balanceFactor < Infinity)) {
      check.invalid('balanceFactor', 'a number above 1', balanceFactor)
    }
    check.func('clock', o.clock)
    check.func('random', o.random)
    checkProviders(check, o)
    this.#clock = o.clock
    if (o.outlierDetection !== false) {
      const od = merge(DEFAULT_OUTLIER_DETECTION_OPTIONS, o.outlierDetection)
      check.positiveInteger('outlierDetection.consecutiveFailures', od.consecutiveFailures)
      positiveShare('outlierDetection.failureRateThreshold', od.failureRateThreshold)
      check.positiveNumber(
        'outlierDetection.failureRateMinimumRequests',
        od.failureRateMinimumRequests,
      )
      check.ratio('outlierDetection.maxEjectionShare', od.maxEjectionShare)
      this.#outlier = {
        consecutiveFailures: od.consecutiveFailures,
        failureRateThreshold: od.failureRateThreshold,
        failureRateMinimumRequests: od.failureRateMinimumRequests,
        failureRateWindowMs: check.duration(
          'outlierDetection.failureRateWindow',
          od.failureRateWindow,
          { positive: true },
        ),
        baseEjectionTimeMs: check.duration(
          'outlierDetection.baseEjectionTime',
          od.baseEjectionTime,
          { positive: true },
        ),
        maxEjectionTimeMs: check.duration('outlierDetection.maxEjectionTime', od.maxEjectionTime, {
          positive: true,
        }),
        maxEjectionShare: od.maxEjectionShare,
      }
    }
    if (o.slowStart !== false) {
      const ss = merge(DEFAULT_SLOW_START_OPTIONS, o.slowStart)
      const windowMs = check.duration('slowStart.window', ss.window)
      check.positiveNumber('slowStart.aggression', ss.aggression)
      positiveShare('slowStart.minWeightShare', ss.minWeightShare)
      if (windowMs > 0) {
        this.#slowStart = {
          windowMs,
          aggression: ss.aggression,
          minWeightShare: ss.minWeightShare,
        }
      }
    }
    const ctx: StrategyContext = {
      random: o.random,
      clock: o.clock,
      totalInFlight: () => this.#totalInFlight,
      ewmaDecayMs: this.#ewmaDecayMs,
      balanceFactor,
    }
    this.#isEwma = o.strategy === 'peak-ewma'
    this.#strategy = makeStrategy<T>(o.strategy, ctx)
    const seen = new Set<string>()
    const inputs = o.endpoints.map((e) => {
      const n = normalise<T>(e, AS_OPTION)
      if (seen.has(n.id)) throw new DuplicateEndpointError(n.id)
      seen.add(n.id)
      return n
    })
    if (o.strategy === 'consistent-hash' || o.strategy === 'bounded-load') {
      this.#ring = new HashRing(
        inputs.map(({ id, weight }) => ({ id, weight })),
        o.ring,
      )
    }
    const now = this.#clock()
    for (const n of inputs) {
      const ep = new EndpointState<T>(n.id, n.value, n.weight)
      ep.stamp = now
      this.#all.push(ep)
      this.#byId.set(n.id, ep)
    }
    this.#refresh()
    const extra = (options as { [BALANCER_ATTRIBUTES]?: Attributes })[BALANCER_ATTRIBUTES]
    this.#stopObserving = this.#observe(telemetry(SCOPE, o).meter, extra ?? {})
  }

  /** The per-endpoint instruments, read from the endpoints' counters when the SDK collects. */
  #observe(meter: ReturnType<typeof telemetry>['meter'], extra: Attributes): () => void {
    return observe(
      meter,
      {
        'ballast.lb.endpoint.picks': {
          kind: 'counter',
          description: 'Times pick() returned the endpoint',
          unit: '{pick}',
        },
        'ballast.lb.endpoint.requests': {
          kind: 'counter',
          description:
            'Requests on the endpoint that ended, by ballast.lb.outcome: success, or failure (an error, a timeout, a 5xx answer)',
          unit: '{request}',
        },
        'ballast.lb.endpoint.response_time': {
          kind: 'counter',
          description:
            'Sum of the times of the requests on the endpoint that ended, from begin() to end() (the proxy: until the response headers); over the rate of ballast.lb.endpoint.requests, their mean',
          unit: 's',
        },
        'ballast.lb.endpoint.ejections': {
          kind: 'counter',
          description: 'Times outlier detection ejected the endpoint',
          unit: '{ejection}',
        },
        'ballast.lb.endpoint.healthy': {
          kind: 'gauge',
          description: 'Whether active health checks consider the endpoint healthy (1) or not (0)',
          unit: '1',
        },
        'ballast.lb.endpoint.ejected': {
          kind: 'gauge',
          description: 'Whether the endpoint is ejected now (1) or not (0)',
          unit: '1',
        },
        'ballast.lb.endpoint.in_flight': {
          kind: 'upDownCounter',
          description: 'Requests on the endpoint begun and not yet ended',
          unit: '{request}',
        },
        'ballast.lb.no_endpoint': {
          kind: 'counter',
          description: 'Picks that found no usable endpoint',
          unit: '{pick}',
        },
        'ballast.lb.panicking': {
          kind: 'gauge',
          description: 'Whether panic mode is on (1: too few endpoints healthy, all are used)',
          unit: '1',
        },
      },
      (record) => {
        record('ballast.lb.no_endpoint', this.#noEndpoint, extra)
        record('ballast.lb.panicking', this.#panicking ? 1 : 0, extra)
        for (const ep of this.#all) {
          const attributes: Attributes = { ...extra, 'ballast.lb.endpoint': ep.id }
          record('ballast.lb.endpoint.picks', ep.picks, attributes)
          record('ballast.lb.endpoint.requests', ep.successes, {
            ...attributes,
            'ballast.lb.outcome': 'success',
          })
          record('ballast.lb.endpoint.requests', ep.failures, {
            ...attributes,
            'ballast.lb.outcome': 'failure',
          })
          record('ballast.lb.endpoint.response_time', ep.responseTimeMs / 1000, attributes)
          record('ballast.lb.endpoint.ejections', ep.totalEjections, attributes)
          record('ballast.lb.endpoint.healthy', ep.healthy ? 1 : 0, attributes)
          record('ballast.lb.endpoint.ejected', ep.ejected ? 1 : 0, attributes)
          record('ballast.lb.endpoint.in_flight', ep.inFlight, attributes)
        }
      },
    )
  }

  get size(): number {
    return this.#all.length
  }

  get panicking(): boolean {
    return this.#panicking
  }

  pick(key?: HashKey, exclude?: Endpoint<T> | readonly Endpoint<T>[]): Endpoint<T> {
    if (this.#closed) throw new LbClosedError('balancer', 'pick')
    const ep = this.#strategy.pick(key, exclude as Exclude<T>)
    if (ep === undefined) {
      this.#noEndpoint++
      throw new NoEndpointAvailableError(this.#all.length)
    }
    ep.picks++
    if (this.has('picked')) this.emit('picked', { endpoint: ep })
    return ep
  }

  begin(endpoint: Endpoint<T>): number {
    const ep = endpoint as EndpointState<T>
    ep.inFlight++
    this.#totalInFlight++
    return this.#clock()
  }

  end(endpoint: Endpoint<T>, startedAt: number, ok: boolean): void {
    const ep = endpoint as EndpointState<T>
    if (ep.inFlight > 0) {
      ep.inFlight--
      this.#totalInFlight--
    }
    const now = this.#clock()
    const rtt = now - startedAt
    if (rtt > 0) ep.responseTimeMs += rtt
    if (this.#isEwma)
      observeLatency(ep, ok ? rtt : Math.max(rtt, this.#failurePenaltyMs), now, this.#ewmaDecayMs)
    if (ok) {
      ep.successes++
      ep.consecutiveFailures = 0
    } else {
      ep.failures++
      ep.consecutiveFailures++
    }
    const od = this.#outlier
    if (od === undefined || ep.removed) return
    if (now - ep.windowStart >= od.failureRateWindowMs) {
      const stale = now - ep.windowStart >= 2 * od.failureRateWindowMs
      ep.previousRequests = stale ? 0 : ep.windowRequests
      ep.previousFailures = stale ? 0 : ep.windowFailures
      ep.windowRequests = 0
      ep.windowFailures = 0
      ep.windowStart = now
    }
    ep.windowRequests++
    if (ok) return
    ep.windowFailures++
    if (ep.ejected) return
    if (ep.consecutiveFailures >= od.consecutiveFailures) {
      this.#eject(ep, 'consecutive-failures', now)
      return
    }
    const requests = ep.windowRequests + ep.previousRequests
    if (
      requests >= od.failureRateMinimumRequests &&
      (ep.windowFailures + ep.previousFailures) / requests >= od.failureRateThreshold
    ) {
      this.#eject(ep, 'failure-rate', now)
    }
  }

  #eject(ep: EndpointState<T>, reason: EjectionReason, now: number): void {
    const od = this.#outlier!
    if (this.#ejectedCount > 0 && this.#ejectedCount + 1 > od.maxEjectionShare * this.#all.length)
      return
    if (ep.lastEjectionEnd > 0) {
      const decay = Math.floor((now - ep.lastEjectionEnd) / od.baseEjectionTimeMs)
      ep.ejections = Math.max(0, ep.ejections - decay)
    }
    ep.ejections++
    ep.totalEjections++
    const durationMs = Math.min(od.baseEjectionTimeMs * ep.ejections, od.maxEjectionTimeMs)
    ep.ejected = true
    this.#ejectedCount++
    ep.ejectionTimer = setTimeout(() => this.#restore(ep, 'ejection-expired'), durationMs)
    ep.ejectionTimer.unref?.()
    this.#refresh()
    this.emit('ejected', { endpoint: ep, reason, durationMs, ejections: ep.ejections })
  }

  #restore(ep: EndpointState<T>, reason: RestoreReason): void {
    if (!ep.ejected) return
    clearTimeout(ep.ejectionTimer)
    ep.ejectionTimer = undefined
    ep.ejected = false
    this.#ejectedCount--
    const now = this.#clock()
    ep.lastEjectionEnd = now
    ep.consecutiveFailures = 0
    ep.windowRequests = ep.windowFailures = ep.previousRequests = ep.previousFailures = 0
    ep.windowStart = now
    if (ep.healthy) this.#beginSlowStart(ep, now)
    this.#refresh()
    this.emit('restored', { endpoint: ep, reason })
  }

  add(endpoint: string | EndpointInput<T>): Endpoint<T> {
    if (this.#closed) throw new LbClosedError('balancer', 'add')
    const n = normalise<T>(endpoint, AS_ARGUMENT)
    if (this.#byId.has(n.id)) throw new DuplicateEndpointError(n.id)
    const ep = new EndpointState<T>(n.id, n.value, n.weight)
    const now = this.#clock()
    ep.stamp = now
    this.#ring?.add(n.id, n.weight)
    this.#all.push(ep)
    this.#byId.set(n.id, ep)
    this.#beginSlowStart(ep, now)
    this.#refresh()
    this.emit('endpoint-added', { endpoint: ep })
    return ep
  }

  remove(id: string): boolean {
    const ep = this.#byId.get(id)
    if (ep === undefined) return false
    if (ep.ejected) {
      clearTimeout(ep.ejectionTimer)
      this.#ejectedCount--
      ep.ejected = false
    }
    ep.removed = true
    ep.usable = false
    this.#byId.delete(id)
    this.#all.splice(this.#all.indexOf(ep), 1)
    this.#ring?.remove(id)
    this.#refresh()
    this.emit('endpoint-removed', { endpoint: ep })
    return true
  }

  setWeight(id: string, weight: number): void {
    const ep = this.#byId.get(id)
    if (ep === undefined) throw new UnknownEndpointError(id)
    if (typeof weight !== 'number' || !Number.isFinite(weight) || weight <= 0)
      throw new InvalidWeightError(id, weight)
    const previous = ep.weight
    if (previous === weight) return
    ep.weight = weight
    this.#ring?.setWeight(id, weight)
    this.#updateEffectiveWeight(ep, this.#clock())
    this.#refresh()
    this.emit('weight-changed', { endpoint: ep, previous })
  }

  setHealthy(id: string, healthy: boolean): void {
    const ep = this.#byId.get(id)
    if (ep === undefined) throw new UnknownEndpointError(id)
    if (ep.healthy === healthy) return
    ep.healthy = healthy
    if (healthy) {
      if (ep.ejected) {
        // A passing active check returns an ejected endpoint (Envoy's default).
        this.emit('health-changed', { endpoint: ep, healthy })
        this.#restore(ep, 'health-check')
        return
      }
      this.#beginSlowStart(ep, this.#clock())
    }
    this.#refresh()
    this.emit('health-changed', { endpoint: ep, healthy })
  }

  get(id: string): Endpoint<T> | undefined {
    return this.#byId.get(id)
  }

  endpoints(): readonly Endpoint<T>[] {
    return this.#all.slice()
  }

  stats(): BalancerStats {
    const now = this.#clock()
    return {
      strategy: this.strategy,
      total: this.#all.length,
      available: this.#available,
      panicking: this.#panicking,
      noEndpoint: this.#noEndpoint,
      inFlight: this.#totalInFlight,
      endpoints: this.#all.map((ep) => ({
        id: ep.id,
        weight: ep.weight,
        effectiveWeight: ep.effectiveWeight,
        healthy: ep.healthy,
        ejected: ep.ejected,
        slowStarting: !Number.isNaN(ep.slowStartFrom),
        ejections: ep.ejections,
        totalEjections: ep.totalEjections,
        inFlight: ep.inFlight,
        picks: ep.picks,
        succeeded: ep.successes,
        failed: ep.failures,
        consecutiveFailures: ep.consecutiveFailures,
        latencyEwmaMs: ep.cost * Math.exp(-Math.max(0, now - ep.stamp) / this.#ewmaDecayMs),
      })),
    }
  }

  async close(): Promise<void> {
    if (!this.#closed) this.#stopObserving()
    this.#closed = true
    if (this.#slowStartTimer !== undefined) clearInterval(this.#slowStartTimer)
    this.#slowStartTimer = undefined
    for (const ep of this.#all) {
      if (ep.ejectionTimer !== undefined) clearTimeout(ep.ejectionTimer)
      ep.ejectionTimer = undefined
    }
  }

  #beginSlowStart(ep: EndpointState<T>, now: number): void {
    const ss = this.#slowStart
    if (ss === undefined || this.#closed) return
    ep.slowStartFrom = now
    this.#updateEffectiveWeight(ep, now)
    if (this.#slowStartTimer === undefined) {
      const every = Math.max(ss.windowMs / 20, 10)
      this.#slowStartTimer = setInterval(() => this.#tickSlowStart(), every)
      this.#slowStartTimer.unref?.()
    }
  }

  #updateEffectiveWeight(ep: EndpointState<T>, now: number): void {
    const ss = this.#slowStart
    if (ss === undefined || Number.isNaN(ep.slowStartFrom)) {
      ep.effectiveWeight = ep.weight
      return
    }
    const elapsed = (now - ep.slowStartFrom) / ss.windowMs
    if (elapsed >= 1) {
      ep.slowStartFrom = Number.NaN
      ep.effectiveWeight = ep.weight
      return
    }
    const factor = Math.max(ss.minWeightShare, Math.max(elapsed, 0) ** (1 / ss.aggression))
    ep.effectiveWeight = ep.weight * factor
  }

  #tickSlowStart(): void {
    const now = this.#clock()
    let ramping = false
    for (const ep of this.#all) {
      if (Number.isNaN(ep.slowStartFrom)) continue
      this.#updateEffectiveWeight(ep, now)
      if (!Number.isNaN(ep.slowStartFrom)) ramping = true
    }
    if (!ramping) {
      clearInterval(this.#slowStartTimer)
      this.#slowStartTimer = undefined
    }
    this.#refresh()
  }

  /** Recomputes which endpoints are usable and whether panic mode is on, then rebuilds the strategy. */
  #refresh(): void {
    let available = 0
    for (const ep of this.#all) if (ep.healthy && !ep.ejected) available++
    const total = this.#all.length
    const panicking = available > 0 && available < this.#panicThreshold * total
    const usable: EndpointState<T>[] = []
    for (const ep of this.#all) {
      ep.usable = available > 0 && (panicking || (ep.healthy && !ep.ejected))
      if (ep.usable) usable.push(ep)
    }
    this.#available = available
    this.#strategy.rebuild(usable, this.#all, this.#ring)
    if (panicking !== this.#panicking) {
      this.#panicking = panicking
      this.emit('panic-changed', { active: panicking, healthy: available, total })
    }
  }
}

function makeStrategy<T>(name: StrategyName, ctx: StrategyContext): Strategy<T> {
  switch (name) {
    case 'round-robin':
      return new RoundRobin<T>()
    case 'weighted-round-robin':
      return new SmoothWeightedRoundRobin<T>()
    case 'random':
      return new WeightedRandom<T>(ctx)
    case 'least-request':
      return new LeastRequest<T>(ctx)
    case 'peak-ewma':
      return new PeakEwma<T>(ctx)
    case 'consistent-hash':
      return new ConsistentHash<T>(ctx)
    case 'bounded-load':
      return new BoundedLoad<T>(ctx)
  }
}

/**
 * Creates a load balancer over a set of endpoints: one of seven strategies, passive outlier
 * detection, a panic threshold and slow start. Endpoints can be added, removed, re-weighted
 * and marked (un)healthy at run time.
 *
 * @example
 * ```ts
 * import { createBalancer } from '@ballast/lb'
 *
 * const balancer = createBalancer({
 *   strategy: 'peak-ewma',
 *   endpoints: ['http://10.0.0.1:8080', 'http://10.0.0.2:8080', { id: 'http://10.0.0.3:8080', weight: 2 }],
 * })
 * const endpoint = balancer.pick()
 * const startedAt = balancer.begin(endpoint)
 * const ok = await callSomething(endpoint.id)
 * balancer.end(endpoint, startedAt, ok)
 * ```
 */
export function createBalancer<T = string>(options: BalancerOptions<T>): Balancer<T> {
  return new BalancerImpl<T>(options)
}
