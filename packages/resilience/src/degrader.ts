import { monitorEventLoopDelay } from 'node:perf_hooks'
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
import type { Meter } from '@opentelemetry/api'
import type { CircuitBreaker } from './circuitBreaker.js'
import { InvalidArgumentError, ResilienceClosedError } from './errors.js'
import { FEATURE, LEVEL, resilienceTelemetry } from './internal/telemetry.js'
import { check, checkArgument } from './internal/validate.js'

/** How much of a feature runs: all of it, a cheaper variant, or none. */
export type FeatureLevel = 'full' | 'degraded' | 'off'

type EventLoopHistogram = ReturnType<typeof monitorEventLoopDelay>

const LEVELS: readonly FeatureLevel[] = ['full', 'degraded', 'off']
const RANK: Record<FeatureLevel, number> = { full: 0, degraded: 1, off: 2 }

/** One named feature of a {@link Degrader}. */
export interface FeatureOptions {
  /**
   * Shedding order under overload: lower numbers go first (recommendations at 10 before
   * reviews at 20 before checkout at 100).
   */
  priority: number
  /**
   * The lowest level overload may take the feature to; `'full'` exempts it from shedding
   * (checkout). Breakers and manual overrides are not bound by it.
   * @default 'off'
   */
  minLevel?: FeatureLevel
  /**
   * Breakers of the feature's dependencies: while any of them is open (or half-open), the
   * feature is at `breakerLevel`.
   * @default []
   */
  breakers?: readonly CircuitBreaker<any, any>[]
  /**
   * The level while a breaker of the feature is not closed.
   * @default 'off'
   */
  breakerLevel?: 'degraded' | 'off'
}

/** What counts as overload. A limit left out is not watched. */
export interface OverloadOptions {
  /**
   * Overloaded when the event loop's p99 delay over the last sample interval exceeds this
   * (milliseconds, or a string such as `'200ms'`).
   * @default 200
   */
  maxEventLoopDelay?: Duration
  /**
   * Overloaded when more than this many requests are in flight (counted with
   * {@link Degrader.begin} or {@link Degrader.track}).
   * @default Infinity
   */
  maxInFlight?: number
  /**
   * How often pressure is sampled and one shedding step taken or undone (milliseconds, or a
   * string such as `'500ms'`).
   * @default 500
   */
  interval?: Duration
  /**
   * Hysteresis: a shed step is undone only when pressure falls below this fraction of the
   * limits, so levels do not flap.
   * @default 0.7
   */
  recoverBelow?: number
}

/** Options of {@link createDegrader}. */
export interface DegraderOptions<F extends string = string> extends TelemetryOptions {
  /** The features by name. */
  features: Record<F, FeatureOptions>
  /**
   * Automatic shedding under overload, or `false` for none (no timer, no monitor).
   * @default {@link DEFAULT_OVERLOAD_OPTIONS}
   */
  overload?: OverloadOptions | false
}

/** Defaults of {@link FeatureOptions} (frozen; `priority` has none and must be given). */
export const DEFAULT_FEATURE_OPTIONS: Readonly<Required<Omit<FeatureOptions, 'priority'>>> =
  Object.freeze({
    minLevel: 'off' as FeatureLevel,
    breakers: Object.freeze([]) as readonly CircuitBreaker<any, any>[],
    breakerLevel: 'off' as 'degraded' | 'off',
  })

/** Defaults of {@link OverloadOptions} (frozen). */
export const DEFAULT_OVERLOAD_OPTIONS: Readonly<Required<OverloadOptions>> = Object.freeze({
  maxEventLoopDelay: 200,
  maxInFlight: Number.POSITIVE_INFINITY,
  interval: 500,
  recoverBelow: 0.7,
})

/** Defaults of {@link DegraderOptions} (frozen; `features` has none and must be given). */
export const DEFAULT_DEGRADER_OPTIONS: Readonly<{ overload: Readonly<Required<OverloadOptions>> }> =
  Object.freeze({ overload: DEFAULT_OVERLOAD_OPTIONS })

/** The degrader's instruments (README, Telemetry). */
const DEGRADER_INSTRUMENTS = {
  'ballast.resilience.degrader.level': {
    kind: 'gauge',
    unit: '1',
    description:
      'Feature levels: one series per feature and level (full, degraded, off), 1 for the current one, 0 for the others',
  },
  'ballast.resilience.degrader.shed_steps': {
    kind: 'gauge',
    unit: '{step}',
    description: 'Shedding steps in force (0 when not overloaded)',
  },
  'ballast.resilience.degrader.in_flight': {
    kind: 'upDownCounter',
    unit: '{request}',
    description: 'Requests in flight now (begin() and track())',
  },
  'ballast.resilience.degrader.event_loop_delay': {
    kind: 'gauge',
    unit: 's',
    description: 'The latest event-loop p99 delay sample (only while watching overload)',
  },
} satisfies Record<string, ObservedInstrument>

/** Why a feature changed level. */
export type ChangeReason = 'overload' | 'recovered' | 'breaker' | 'override'

/** Events of a {@link Degrader}, by name. */
export interface DegraderEvents<F extends string = string> {
  /** A feature's effective level changed. */
  'level-changed': LevelChangedEvent<F>
  /** A sample of pressure was taken (every `interval`). */
  sampled: PressureSampledEvent
}

/** Payload of `level-changed`. */
export interface LevelChangedEvent<F extends string = string> {
  /** The feature. */
  feature: F
  /** Its level before. */
  from: FeatureLevel
  /** Its level now. */
  to: FeatureLevel
  /** What moved it. */
  reason: ChangeReason
}

/** Payload of `sampled`. */
export interface PressureSampledEvent {
  /** Event-loop p99 delay over the last interval, in milliseconds. */
  eventLoopDelayMs: number
  /** Requests in flight. */
  inFlight: number
  /** The highest of delay / maxEventLoopDelay and inFlight / maxInFlight; above 1 is overload. */
  pressure: number
  /** Shedding steps in force after this sample. */
  shedSteps: number
}

/** One feature in {@link DegraderStats}. */
export interface FeatureStats {
  /** The effective level now. */
  level: FeatureLevel
  /** The manual override, if any. */
  override: FeatureLevel | undefined
  /** Whether a breaker of the feature is not closed. */
  breakerOpen: boolean
  /** The feature's shedding priority. */
  priority: number
}

/** State of a {@link Degrader}. */
export interface DegraderStats<F extends string = string> {
  /** Every feature by name. */
  features: Record<F, FeatureStats>
  /** How many shedding steps are in force (0 when not overloaded). */
  shedSteps: number
  /** The latest event-loop p99 delay sample, in milliseconds. */
  eventLoopDelayMs: number
  /** Requests in flight now. */
  inFlight: number
}

/** {@link OverloadOptions} validated, durations in milliseconds. */
interface ResolvedOverload {
  readonly maxEventLoopDelay: number
  readonly maxInFlight: number
  readonly interval: number
  readonly recoverBelow: number
}

interface Feature {
  name: string
  priority: number
  minLevel: FeatureLevel
  breakerLevel: FeatureLevel
  breakers: readonly CircuitBreaker<any, any>[]
  override: FeatureLevel | undefined
  shedLevel: FeatureLevel
  level: FeatureLevel
}

/**
 * A switchboard of named features at levels `full`, `degraded` or `off`. Under overload
 * (event-loop delay, requests in flight) it sheds the lowest-priority features first, one
 * step per sample, and restores them in reverse order once pressure falls; a feature whose
 * breaker opens drops at once; operators can override any feature. Create it with
 * {@link createDegrader}.
 */
export class Degrader<F extends string = string> {
  readonly #features = new Map<string, Feature>()
  readonly #steps: { feature: Feature; level: FeatureLevel }[] = []
  readonly #events = new Emitter<DegraderEvents<F>>()
  readonly #overload: ResolvedOverload | undefined
  readonly #histogram: EventLoopHistogram | undefined
  readonly #timer: NodeJS.Timeout | undefined
  readonly #unsubscribe: (() => void)[] = []
  readonly #stopMetrics: () => void
  #shedSteps = 0
  #inFlight = 0
  #eventLoopDelay = 0
  #closed = false

  /** Use {@link createDegrader}. */
  constructor(options: DegraderOptions<F>) {
    check.object('options', options)
    const { meter } = resilienceTelemetry(options)
    const features = check.object('features', options.features)
    const names = Object.keys(features)
    if (names.length === 0) check.invalid('features', 'at least one feature', features)
    for (const name of names) {
      check.object(`features.${name}`, features[name])
      const f = merge(DEFAULT_FEATURE_OPTIONS, features[name] as FeatureOptions)
      const priority = check.number(`features.${name}.priority`, f.priority)
      const minLevel = check.oneOf(`features.${name}.minLevel`, f.minLevel, LEVELS)
      const breakerLevel = check.oneOf(`features.${name}.breakerLevel`, f.breakerLevel, [
        'degraded',
        'off',
      ] as const)
      const breakers = f.breakers
      if (!Array.isArray(breakers))
        check.invalid(`features.${name}.breakers`, 'an array of circuit breakers', breakers)
      const feature: Feature = {
        name,
        priority,
        minLevel,
        breakerLevel,
        breakers: breakers as CircuitBreaker<any, any>[],
        override: undefined,
        shedLevel: 'full',
        level: 'full',
      }
      this.#features.set(name, feature)
      for (const breaker of feature.breakers) {
        const update = () => this.#update(feature, 'breaker')
        for (const event of ['opened', 'half-opened', 'closed'] as const) {
          this.#unsubscribe.push(breaker.on(event, update))
        }
      }
    }
    // The shedding plan: lowest priority first, each feature down to its minLevel.
    const ordered = [...this.#features.values()].sort((a, b) => a.priority - b.priority)
    for (const feature of ordered) {
      if (RANK[feature.minLevel] >= RANK.degraded) this.#steps.push({ feature, level: 'degraded' })
      if (RANK[feature.minLevel] >= RANK.off) this.#steps.push({ feature, level: 'off' })
    }
    for (const feature of this.#features.values()) feature.level = this.#effective(feature)

    if (options.overload !== false) {
      if (options.overload !== undefined) check.object('overload', options.overload)
      const o = merge(DEFAULT_DEGRADER_OPTIONS.overload, options.overload)
      const maxInFlight = o.maxInFlight
      if (maxInFlight !== Number.POSITIVE_INFINITY) {
        check.positiveNumber('overload.maxInFlight', maxInFlight)
      }
      if (typeof o.recoverBelow !== 'number' || !(o.recoverBelow > 0 && o.recoverBelow <= 1)) {
        check.invalid('overload.recoverBelow', 'a number > 0 and <= 1', o.recoverBelow)
      }
      const overload: ResolvedOverload = Object.freeze({
        maxEventLoopDelay: check.duration('overload.maxEventLoopDelay', o.maxEventLoopDelay, {
          positive: true,
        }),
        maxInFlight,
        interval: check.duration('overload.interval', o.interval, { positive: true }),
        recoverBelow: o.recoverBelow,
      })
      this.#overload = overload
      this.#histogram = monitorEventLoopDelay({ resolution: 10 })
      this.#histogram.enable()
      this.#timer = setInterval(() => this.evaluate(), overload.interval)
      this.#timer.unref()
    }
    this.#stopMetrics = this.#observe(meter)
  }

  /** The effective level of a feature. */
  level(feature: F): FeatureLevel {
    return this.#get(feature).level
  }

  /** Whether a feature runs at all (its level is not `off`). */
  isEnabled(feature: F): boolean {
    return this.#get(feature).level !== 'off'
  }

  /** Forces a feature to a level until {@link Degrader.clearOverride}; wins over everything else. */
  override(feature: F, level: FeatureLevel): void {
    if (this.#closed) throw new ResilienceClosedError('degrader', 'override')
    const f = this.#get(feature)
    f.override = checkArgument.oneOf('level', level, LEVELS)
    this.#update(f, 'override')
  }

  /** Removes a manual override; the feature follows overload and breakers again. */
  clearOverride(feature: F): void {
    if (this.#closed) throw new ResilienceClosedError('degrader', 'clearOverride')
    const f = this.#get(feature)
    f.override = undefined
    this.#update(f, 'override')
  }

  /** Counts one request in flight; call the returned function when it ends. */
  begin(): () => void {
    this.#inFlight++
    let done = false
    return () => {
      if (done) return
      done = true
      this.#inFlight--
    }
  }

  /** Runs `fn` counted as in flight. */
  async track<T>(fn: () => T | PromiseLike<T>): Promise<T> {
    const end = this.begin()
    try {
      return await fn()
    } finally {
      end()
    }
  }

  /**
   * Samples pressure and takes (or undoes) one shedding step. Runs every `interval` on its
   * own; call it to react at once.
   */
  evaluate(): void {
    if (this.#closed) throw new ResilienceClosedError('degrader', 'evaluate')
    const o = this.#overload
    if (o === undefined) return
    const h = this.#histogram as EventLoopHistogram
    this.#eventLoopDelay = h.count > 0 ? h.percentile(99) / 1e6 : 0
    h.reset()
    const pressure = Math.max(
      this.#eventLoopDelay / o.maxEventLoopDelay,
      this.#inFlight / o.maxInFlight,
    )
    if (pressure > 1 && this.#shedSteps < this.#steps.length) {
      const step = this.#steps[this.#shedSteps++]!
      step.feature.shedLevel = step.level
      this.#update(step.feature, 'overload')
    } else if (pressure < o.recoverBelow && this.#shedSteps > 0) {
      const step = this.#steps[--this.#shedSteps]!
      step.feature.shedLevel = step.level === 'off' ? 'degraded' : 'full'
      this.#update(step.feature, 'recovered')
    }
    if (this.#events.has('sampled')) {
      this.#events.emit('sampled', {
        eventLoopDelayMs: this.#eventLoopDelay,
        inFlight: this.#inFlight,
        pressure,
        shedSteps: this.#shedSteps,
      })
    }
  }

  /** Every feature's level and the pressure readings. */
  stats(): DegraderStats<F> {
    const features = {} as Record<F, FeatureStats>
    for (const f of this.#features.values()) {
      features[f.name as F] = {
        level: f.level,
        override: f.override,
        breakerOpen: this.#breakerOpen(f),
        priority: f.priority,
      }
    }
    return {
      features,
      shedSteps: this.#shedSteps,
      eventLoopDelayMs: this.#eventLoopDelay,
      inFlight: this.#inFlight,
    }
  }

  /**
   * Adds a listener; a listener that throws does not break the degrader (its error is
   * rethrown in a microtask).
   * @returns A function that removes the listener.
   */
  on<K extends keyof DegraderEvents<F> & string>(
    event: K,
    listener: Listener<DegraderEvents<F>[K]>,
  ): Unsubscribe {
    return this.#events.on(event, listener)
  }

  /** Adds a listener called at most once; returns a function that removes it. */
  once<K extends keyof DegraderEvents<F> & string>(
    event: K,
    listener: Listener<DegraderEvents<F>[K]>,
  ): Unsubscribe {
    return this.#events.once(event, listener)
  }

  /** Removes a listener. */
  off<K extends keyof DegraderEvents<F> & string>(
    event: K,
    listener: Listener<DegraderEvents<F>[K]>,
  ): void {
    this.#events.off(event, listener)
  }

  /**
   * Stops sampling and detaches from the breakers. Afterwards `override()`, `clearOverride()`
   * and `evaluate()` throw {@link ResilienceClosedError}; `level()`, `isEnabled()`, `begin()`
   * and `track()` keep answering with the last levels, so requests in flight at shutdown pass.
   */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#stopMetrics()
    if (this.#timer !== undefined) clearInterval(this.#timer)
    this.#histogram?.disable()
    for (const off of this.#unsubscribe) off()
    this.#events.removeAllListeners()
  }

  /** The observable instruments, read from the degrader's state when the SDK collects. */
  #observe(meter: Meter): () => void {
    const series = [...this.#features.values()].map((feature) => ({
      feature,
      byLevel: LEVELS.map((level) => Object.freeze({ [FEATURE]: feature.name, [LEVEL]: level })),
    }))
    return observe(meter, DEGRADER_INSTRUMENTS, (record) => {
      for (const { feature, byLevel } of series) {
        for (let i = 0; i < LEVELS.length; i++) {
          record(
            'ballast.resilience.degrader.level',
            feature.level === LEVELS[i] ? 1 : 0,
            byLevel[i],
          )
        }
      }
      record('ballast.resilience.degrader.shed_steps', this.#shedSteps)
      record('ballast.resilience.degrader.in_flight', this.#inFlight)
      if (this.#overload !== undefined) {
        record('ballast.resilience.degrader.event_loop_delay', this.#eventLoopDelay / 1000)
      }
    })
  }

  #get(name: string): Feature {
    const f = this.#features.get(name)
    if (f === undefined) {
      throw new InvalidArgumentError(
        `unknown feature ${JSON.stringify(name)}: expected one of ${[...this.#features.keys()].map((n) => JSON.stringify(n)).join(', ')}`,
      )
    }
    return f
  }

  #breakerOpen(f: Feature): boolean {
    for (const b of f.breakers) if (b.state !== 'closed') return true
    return false
  }

  #effective(f: Feature): FeatureLevel {
    if (f.override !== undefined) return f.override
    let level = f.shedLevel
    if (this.#breakerOpen(f) && RANK[f.breakerLevel] > RANK[level]) level = f.breakerLevel
    return level
  }

  #update(f: Feature, reason: ChangeReason): void {
    const from = f.level
    const to = this.#effective(f)
    if (from === to) return
    f.level = to
    this.#events.emit('level-changed', { feature: f.name as F, from, to, reason })
  }
}

/**
 * Creates a {@link Degrader}: named features with priorities that drop automatically when
 * their breaker opens or the process is overloaded (lowest priority first), and come back
 * when it recovers.
 *
 * @example
 * ```ts
 * import { circuitBreaker, createDegrader } from '@ballast/resilience'
 *
 * const recommender = circuitBreaker({ name: 'recommender' })
 * const features = createDegrader({
 *   features: {
 *     recommendations: { priority: 10, breakers: [recommender] },
 *     reviews: { priority: 20 },
 *     checkout: { priority: 100, minLevel: 'full' },
 *   },
 *   overload: { maxEventLoopDelay: 150, maxInFlight: 500 },
 * })
 * if (features.isEnabled('recommendations')) page.recommendations = await loadRecommendations()
 * ```
 */
export function createDegrader<const F extends string>(options: DegraderOptions<F>): Degrader<F> {
  return new Degrader<F>(options)
}
