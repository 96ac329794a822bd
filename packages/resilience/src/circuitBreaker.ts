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
import OpossumBreaker from 'opossum'
import { BreakerOpenError, ResilienceClosedError, ResilienceError, TimeoutError } from './errors.js'
import { BreakerWindow, type WindowSpec } from './internal/breakerWindow.js'
import { RUN, rootContext } from './internal/context.js'
import {
  addActiveSpanEvent,
  BREAKER_NAME,
  OPENED_EVENT,
  OUTCOME,
  REJECTED_EVENT,
  resilienceTelemetry,
  STATE,
  TIMED_OUT_EVENT,
} from './internal/telemetry.js'
import { check, checkArgument } from './internal/validate.js'
import type { ExecutionContext, Operation, Policy } from './policy.js'

/** The breaker trips on the failure rate over a rolling time span. */
export interface TimeWindow {
  /** Trip on the calls of the last `duration`. */
  type: 'time'
  /** Length of the window: milliseconds, or a string such as `'10s'`. */
  duration: Duration
  /**
   * Slices the window is counted in; old slices drop out as time passes.
   * @default 10
   */
  buckets?: number
}

/** The breaker trips on the failure rate over the last `size` calls. */
export interface CountWindow {
  /** Trip on the last `size` calls. */
  type: 'count'
  /** How many of the latest calls count. */
  size: number
}

/** The state of a breaker: `closed` lets calls through, `open` refuses them, `halfOpen` lets probes through. */
export type BreakerState = 'closed' | 'open' | 'halfOpen'

/** Options of {@link circuitBreaker}. `A` are the arguments of the protected function, `R` its result. */
export interface CircuitBreakerOptions<A extends unknown[] = [], R = never>
  extends TelemetryOptions {
  /**
   * Name used in errors, events, stats and telemetry (the `ballast.resilience.breaker.name`
   * attribute: keep it to a fixed set, one per dependency).
   * @default the function's name, else `"breaker"`
   */
  name?: string
  /**
   * Which calls the failure rate is measured over.
   * @default { type: 'time', duration: 10000, buckets: 10 }
   */
  window?: TimeWindow | CountWindow
  /**
   * The breaker opens when more than this percentage of the calls in the window failed.
   * @default 50
   */
  errorThresholdPercentage?: number
  /**
   * The breaker never opens while the window holds fewer calls than this, so one early
   * failure does not cut a dependency off.
   * @default 10
   */
  volumeThreshold?: number
  /**
   * How long the breaker stays open before it lets probes through: milliseconds, or a string
   * such as `'10s'`.
   * @default 10000
   */
  resetTimeout?: Duration
  /**
   * How many probe calls the half-open breaker lets through; it closes when all of them
   * succeed and opens again on the first failure. Calls beyond them are refused.
   * @default 1
   */
  halfOpenProbes?: number
  /**
   * A time limit per call (a timeout counts as a failure): milliseconds, or a string such as
   * `'2s'`; or `false` for none. For
   * cancellation through an `AbortSignal`, put a `timeout()` policy inside the breaker in
   * a `pipeline()` instead.
   * @default false
   */
  timeout?: Duration | false
  /**
   * Errors for which this returns `true` do not count as failures (a 404, a validation
   * error): the breaker counts the call as a success, the error still goes to the caller and
   * the fallback is not called.
   * @default every error counts
   */
  errorFilter?: (error: unknown, ...args: A) => boolean
  /**
   * Answers a failed or refused call instead of rejecting: receives the error
   * ({@link BreakerOpenError} when refused) and the call's arguments.
   * @default none: the call rejects
   */
  fallback?: (error: unknown, ...args: A) => R | PromiseLike<R>
  /**
   * Keep call latencies and report percentiles in `stats()`. Off by default: opossum's own
   * percentiles sort the whole window on every failure. Here they are computed only when
   * `stats()` is called, over the last `latencySamples` calls.
   * @default false
   */
  rollingPercentiles?: boolean
  /**
   * How many recent latencies to keep when `rollingPercentiles` is on.
   * @default 1024
   */
  latencySamples?: number
}

/** The default window: the calls of the last 10 seconds, counted in 10 slices. */
const DEFAULT_TIME_WINDOW: Readonly<Required<TimeWindow>> = Object.freeze({
  type: 'time',
  duration: 10_000,
  buckets: 10,
})

/** Defaults of {@link CircuitBreakerOptions}, in one place (frozen). */
export const DEFAULT_CIRCUIT_BREAKER_OPTIONS: Readonly<
  Required<
    Omit<CircuitBreakerOptions, 'name' | 'errorFilter' | 'fallback' | keyof TelemetryOptions>
  >
> = Object.freeze({
  window: DEFAULT_TIME_WINDOW as TimeWindow | CountWindow,
  errorThresholdPercentage: 50,
  volumeThreshold: 10,
  resetTimeout: 10_000,
  halfOpenProbes: 1,
  timeout: false as Duration | false,
  rollingPercentiles: false,
  latencySamples: 1024,
})

/** Events of a {@link CircuitBreaker}, by name. */
export interface CircuitBreakerEvents {
  /** The breaker opened; calls are refused for `resetTimeout`. */
  opened: BreakerOpenedEvent
  /** The open time passed; probes are let through. */
  'half-opened': BreakerStateEvent
  /** The breaker closed: probes succeeded, or it was reset. */
  closed: BreakerStateEvent
  /** A call succeeded (or failed with an error the `errorFilter` excused). Subscribing costs a little per call. */
  succeeded: BreakerSucceededEvent
  /** A call failed and counted against the breaker. */
  failed: BreakerFailedEvent
  /** A call was refused because the breaker is open. */
  rejected: BreakerRejectedEvent
  /** A call ran past the breaker's own `timeout`. */
  'timed-out': BreakerTimedOutEvent
  /** The fallback answered a failed or refused call. */
  'fell-back': BreakerFellBackEvent
}

/** Payload of `opened`. */
export interface BreakerOpenedEvent {
  /** The breaker's name. */
  name: string
  /** Calls in the window when it opened. */
  calls: number
  /** Of those, the ones that failed. */
  failed: number
}

/** Payload of `half-opened` and `closed`. */
export interface BreakerStateEvent {
  /** The breaker's name. */
  name: string
}

/** Payload of `succeeded`. */
export interface BreakerSucceededEvent {
  /** The breaker's name. */
  name: string
  /** How long the call took, in milliseconds. */
  latencyMs: number
}

/** Payload of `failed`. */
export interface BreakerFailedEvent {
  /** The breaker's name. */
  name: string
  /** The call's error. */
  error: unknown
}

/** Payload of `rejected`. */
export interface BreakerRejectedEvent {
  /** The breaker's name. */
  name: string
  /** The refusal the caller got (or the fallback answered). */
  error: BreakerOpenError
}

/** Payload of `timed-out`. */
export interface BreakerTimedOutEvent {
  /** The breaker's name. */
  name: string
  /** The timeout error. */
  error: TimeoutError
}

/** Payload of `fell-back`. */
export interface BreakerFellBackEvent {
  /** The breaker's name. */
  name: string
  /** The error the fallback answered. */
  error: unknown
}

/** Calls and failures in a breaker's current window. */
export interface BreakerWindowCounts {
  /** Calls that completed in the window. */
  calls: number
  /** Of those, the ones that failed. */
  failed: number
}

/** Latency percentiles over recent calls, in milliseconds. */
export interface LatencyPercentiles {
  /** Mean. */
  mean: number
  /** Median. */
  p50: number
  /** 90th percentile. */
  p90: number
  /** 99th percentile. */
  p99: number
}

/** Counters and state of a {@link CircuitBreaker}. */
export interface CircuitBreakerStats {
  /** The breaker's name. */
  name: string
  /** The current state. */
  state: BreakerState
  /** Calls started since creation (refused ones excluded). */
  calls: number
  /** Calls that succeeded since creation (errors the `errorFilter` excused included). */
  succeeded: number
  /** Calls that failed since creation. */
  failed: number
  /** Calls refused while open since creation. */
  rejected: number
  /** Calls that timed out since creation. */
  timedOut: number
  /** Calls the fallback answered since creation. */
  fellBack: number
  /** How many times the breaker opened since creation. */
  opened: number
  /** How many times the breaker half-opened (let probes through) since creation. */
  halfOpened: number
  /** How many times the breaker closed again (probes succeeded, or a reset) since creation. */
  closed: number
  /** Calls and failures in the current window. */
  window: BreakerWindowCounts
  /** Latency percentiles in milliseconds, when `rollingPercentiles` is on. */
  latency: LatencyPercentiles | undefined
}

/** The breaker's instruments (README, Telemetry). */
const BREAKER_INSTRUMENTS = {
  'ballast.resilience.breaker.state': {
    kind: 'gauge',
    unit: '1',
    description:
      'Breaker state: one series per state (closed, open, halfOpen), 1 for the current one, 0 for the others',
  },
  'ballast.resilience.breaker.transitions': {
    kind: 'counter',
    unit: '{transition}',
    description:
      'Times the breaker entered a state (opened, half-opened, closed), by the new state',
  },
  'ballast.resilience.breaker.calls': {
    kind: 'counter',
    unit: '{call}',
    description:
      'Calls by outcome: succeeded (errors the errorFilter excused included), failed (timeouts included), rejected (refused while open or half-open)',
  },
  'ballast.resilience.breaker.timeouts': {
    kind: 'counter',
    unit: '{call}',
    description: "Calls that ran past the breaker's own timeout (also counted as failed)",
  },
  'ballast.resilience.breaker.fallbacks': {
    kind: 'counter',
    unit: '{call}',
    description: 'Failed or refused calls the fallback answered',
  },
} satisfies Record<string, ObservedInstrument>

const FIRE: unique symbol = Symbol('fire')
let unnamed = 0

type Action = (a: unknown, b: unknown) => Promise<unknown>

/**
 * A circuit breaker on opossum: it counts failures in a rolling window, opens when they pass
 * the threshold (calls then fail fast with a {@link BreakerOpenError} or get the fallback),
 * lets probes through after `resetTimeout`, and closes when they succeed. A closed breaker
 * holds no timer; an open one holds one unreferenced timer until it half-opens. Create it
 * with {@link circuitBreaker}.
 */
export class CircuitBreaker<A extends unknown[] = [], R = never> implements Policy<R> {
  readonly #name: string
  readonly #cb: OpossumBreaker<[unknown, unknown], unknown>
  readonly #window: BreakerWindow
  readonly #events = new Emitter<CircuitBreakerEvents>()
  readonly #fn: ((...args: A) => unknown) | undefined
  readonly #errorFilter: ((error: unknown, ...args: A) => boolean) | undefined
  readonly #fallback: ((error: unknown, ...args: A) => R | PromiseLike<R>) | undefined
  readonly #probes: number
  /** The per-call time limit in milliseconds, or `false`. */
  readonly #timeout: number | false
  #state: BreakerState = 'closed'
  #probesStarted = 0
  #probesSucceeded = 0
  #halfOpened = 0
  #closed = 0
  #shutdown = false
  /** Unregisters the observable instruments (from `close()`). */
  readonly #stopMetrics: () => void

  /** Use {@link circuitBreaker}. */
  constructor(
    fn: ((...args: A) => unknown) | undefined,
    options: CircuitBreakerOptions<A, R> = {},
  ) {
    const o = merge(
      DEFAULT_CIRCUIT_BREAKER_OPTIONS,
      options,
    ) as typeof DEFAULT_CIRCUIT_BREAKER_OPTIONS & CircuitBreakerOptions<A, R>
    if (fn !== undefined) checkArgument.func('fn', fn)
    this.#name =
      o.name === undefined ? fn?.name || `breaker-${++unnamed}` : check.string('name', o.name)
    const spec = validateWindow(o.window)
    const threshold = o.errorThresholdPercentage
    if (typeof threshold !== 'number' || !(threshold >= 0 && threshold < 100)) {
      check.invalid('errorThresholdPercentage', 'a number >= 0 and < 100', threshold)
    }
    const volume = check.nonNegativeInteger('volumeThreshold', o.volumeThreshold)
    const reset = check.duration('resetTimeout', o.resetTimeout, { positive: true })
    this.#probes = check.positiveInteger('halfOpenProbes', o.halfOpenProbes)
    this.#timeout =
      o.timeout === false ? false : check.duration('timeout', o.timeout, { positive: true })
    check.boolean('rollingPercentiles', o.rollingPercentiles)
    const samples = check.positiveInteger('latencySamples', o.latencySamples)
    this.#errorFilter =
      o.errorFilter === undefined ? undefined : check.func('errorFilter', o.errorFilter)
    this.#fallback = o.fallback === undefined ? undefined : check.func('fallback', o.fallback)
    this.#fn = fn
    const { meter } = resilienceTelemetry(options)

    this.#window = new BreakerWindow(spec, o.rollingPercentiles ? samples : 0)
    const errorFilter = this.#errorFilter
    const action: Action =
      fn === undefined
        ? (op, context) => settle((op as Operation<unknown>)(context as ExecutionContext))
        : (a, b) =>
            b === FIRE
              ? settle(fn.apply(undefined, a as A))
              : settle((a as Operation<unknown>)(b as ExecutionContext))
    this.#cb = new OpossumBreaker<[unknown, unknown], unknown>(action, {
      name: this.#name,
      status: this.#window as any,
      timeout: this.#timeout,
      resetTimeout: reset,
      errorThresholdPercentage: threshold,
      volumeThreshold: volume,
      rollingPercentilesEnabled: false,
      enableSnapshots: false,
      errorFilter:
        errorFilter === undefined
          ? undefined
          : (((error: unknown, a: unknown, b: unknown) =>
              b === FIRE
                ? errorFilter(error, ...(a as A))
                : errorFilter(error, ...([] as unknown as A))) as (error: unknown) => boolean),
    } as OpossumBreaker.Options<[unknown, unknown]>)
    // Every failure that counts reaches opossum's fallback hook, after it was counted: ours
    // translates opossum's timeout into a typed error and runs the user's fallback. Without
    // either there is nothing to do, and opossum rejects with the error at once.
    if (this.#fallback !== undefined || this.#timeout !== false) {
      this.#cb.fallback((a: unknown, b: unknown, raw: unknown) => this.#onFailure(a, b, raw))
    }
    this.#cb.on('open', () => {
      this.#state = 'open'
      // On the span of the call that tripped it (or of the caller of trip()): rare, so free.
      addActiveSpanEvent(OPENED_EVENT, { [BREAKER_NAME]: this.#name })
      if (this.#events.has('opened')) {
        const w = this.#window.windowCounts()
        this.#events.emit('opened', { name: this.#name, calls: w.calls, failed: w.failures })
      }
    })
    this.#cb.on('halfOpen', () => {
      this.#state = 'halfOpen'
      this.#halfOpened++
      this.#probesStarted = 0
      this.#probesSucceeded = 0
      this.#events.emit('half-opened', { name: this.#name })
    })
    this.#cb.on('close', () => {
      this.#state = 'closed'
      this.#closed++
      this.#events.emit('closed', { name: this.#name })
    })
    // opossum emits 'timeout' from the call's own timer, in the caller's context: the event
    // lands on the caller's span. Nothing is emitted on the success path.
    this.#cb.on('timeout', () =>
      addActiveSpanEvent(TIMED_OUT_EVENT, {
        [BREAKER_NAME]: this.#name,
        'error.type': 'E_RESILIENCE_TIMEOUT',
      }),
    )
    this.#stopMetrics = this.#observe(meter)
  }

  /**
   * The observable instruments, read from the counters `stats()` keeps when the SDK collects:
   * a call pays nothing for metrics.
   */
  #observe(meter: Meter): () => void {
    const name = { [BREAKER_NAME]: this.#name }
    const byState = (state: BreakerState) => ({ ...name, [STATE]: state })
    const closed = byState('closed')
    const open = byState('open')
    const halfOpen = byState('halfOpen')
    const byOutcome = (outcome: string) => ({ ...name, [OUTCOME]: outcome })
    const succeeded = byOutcome('succeeded')
    const failed = byOutcome('failed')
    const rejected = byOutcome('rejected')
    return observe(meter, BREAKER_INSTRUMENTS, (record) => {
      const w = this.#window
      const state = this.#state
      record('ballast.resilience.breaker.state', state === 'closed' ? 1 : 0, closed)
      record('ballast.resilience.breaker.state', state === 'open' ? 1 : 0, open)
      record('ballast.resilience.breaker.state', state === 'halfOpen' ? 1 : 0, halfOpen)
      record('ballast.resilience.breaker.transitions', w.opens, open)
      record('ballast.resilience.breaker.transitions', this.#halfOpened, halfOpen)
      record('ballast.resilience.breaker.transitions', this.#closed, closed)
      record('ballast.resilience.breaker.calls', w.successes, succeeded)
      record('ballast.resilience.breaker.calls', w.failures, failed)
      record('ballast.resilience.breaker.calls', w.rejects, rejected)
      record('ballast.resilience.breaker.timeouts', w.timeouts, name)
      record('ballast.resilience.breaker.fallbacks', w.fallbacks, name)
    })
  }

  /** The breaker's name. */
  get name(): string {
    return this.#name
  }

  /** The current state. */
  get state(): BreakerState {
    return this.#state
  }

  /**
   * Calls the protected function with `args` through the breaker.
   * @throws {@link BreakerOpenError} when open (unless a fallback answers).
   */
  fire(...args: A): Promise<R> {
    if (this.#fn === undefined) {
      return Promise.reject(
        new ResilienceError(
          'E_RESILIENCE_NO_FUNCTION',
          `circuit breaker "${this.#name}" was created without a function: use execute(fn)`,
        ),
      )
    }
    if (this.#state !== 'closed') return this.#notClosed(args, FIRE, 'fire')
    return this.#cb.call(undefined, args, FIRE) as Promise<R>
  }

  /** Runs `fn` through the breaker: the breaker as a {@link Policy}. */
  execute<T>(fn: Operation<T>, signal?: AbortSignal): Promise<T | R> {
    return this[RUN](fn, rootContext(signal))
  }

  /** @internal */
  [RUN]<T>(fn: Operation<T>, context: ExecutionContext): Promise<T | R> {
    if (this.#state !== 'closed') return this.#notClosed(fn, context, 'execute') as Promise<T | R>
    return this.#cb.call(undefined, fn, context) as Promise<T | R>
  }

  /** Opens the breaker now, as if the threshold had been passed (an operator's switch). */
  trip(): void {
    if (this.#shutdown) throw new ResilienceClosedError('circuit breaker', 'trip')
    this.#cb.open()
  }

  /** Closes the breaker now and clears its window. */
  reset(): void {
    if (this.#shutdown) throw new ResilienceClosedError('circuit breaker', 'reset')
    this.#cb.close()
    this.#window.reset()
  }

  /** Counters, the window and the state. */
  stats(): CircuitBreakerStats {
    const w = this.#window
    const inWindow = w.windowCounts()
    return {
      name: this.#name,
      state: this.#state,
      calls: w.fires,
      succeeded: w.successes,
      failed: w.failures,
      rejected: w.rejects,
      timedOut: w.timeouts,
      fellBack: w.fallbacks,
      opened: w.opens,
      halfOpened: this.#halfOpened,
      closed: this.#closed,
      window: { calls: inWindow.calls, failed: inWindow.failures },
      latency: w.latency(),
    }
  }

  /**
   * Adds a listener. A listener that throws does not break the call that emitted: its error
   * is rethrown in a microtask.
   * @returns A function that removes the listener.
   */
  on<K extends keyof CircuitBreakerEvents>(
    event: K,
    listener: Listener<CircuitBreakerEvents[K]>,
  ): Unsubscribe {
    this.#listenFor(event)
    return this.#events.on(event, listener)
  }

  /** Adds a listener called at most once; returns a function that removes it. */
  once<K extends keyof CircuitBreakerEvents>(
    event: K,
    listener: Listener<CircuitBreakerEvents[K]>,
  ): Unsubscribe {
    this.#listenFor(event)
    return this.#events.once(event, listener)
  }

  /** Removes a listener. */
  off<K extends keyof CircuitBreakerEvents>(
    event: K,
    listener: Listener<CircuitBreakerEvents[K]>,
  ): void {
    this.#events.off(event, listener)
  }

  /** Stops the breaker: clears its timer and listeners; later calls reject with {@link ResilienceClosedError}. */
  async close(): Promise<void> {
    if (this.#shutdown) return
    this.#shutdown = true
    this.#stopMetrics()
    this.#state = 'open'
    this.#cb.shutdown()
    this.#events.removeAllListeners()
  }

  #listenFor(event: keyof CircuitBreakerEvents): void {
    if (event === 'succeeded') this.#listenSuccess()
    else if (event === 'failed') this.#listenFailure()
    else if (event === 'timed-out') this.#listenTimeout()
  }

  #successListening = false
  #listenSuccess(): void {
    // Only a subscriber pays for per-call success events.
    if (this.#successListening) return
    this.#successListening = true
    this.#cb.on('success', (_result: unknown, latency: number) => {
      if (this.#events.has('succeeded')) {
        this.#events.emit('succeeded', { name: this.#name, latencyMs: latency })
      }
    })
  }

  #failureListening = false
  #listenFailure(): void {
    // Failures of closed-state calls come from opossum's event; probes emit their own.
    if (this.#failureListening) return
    this.#failureListening = true
    this.#cb.on('failure', (raw: unknown) => {
      if (!this.#events.has('failed')) return
      const error = this.#translate(raw)
      this.#events.emit('failed', { name: this.#name, error })
    })
  }

  #timeoutListening = false
  #listenTimeout(): void {
    if (this.#timeoutListening) return
    this.#timeoutListening = true
    this.#cb.on('timeout', (raw: unknown) => {
      const error = this.#translate(raw)
      if (error instanceof TimeoutError) this.#events.emit('timed-out', { name: this.#name, error })
    })
  }

  #translate(raw: unknown): unknown {
    if (raw instanceof Error && OpossumBreaker.isOurError(raw)) {
      if ((raw as { code?: unknown }).code === 'ETIMEDOUT') {
        return new TimeoutError(this.#timeout === false ? 0 : this.#timeout, { cause: raw })
      }
    }
    return raw
  }

  #onFailure(a: unknown, b: unknown, raw: unknown): unknown {
    if (raw instanceof Error && OpossumBreaker.isOurError(raw)) {
      if ((raw as { code?: unknown }).code === 'EOPENBREAKER') return this.#refuse(a, b)
    }
    return this.#answer(this.#translate(raw), a, b)
  }

  #answer(error: unknown, a: unknown, b: unknown): unknown {
    const fallback = this.#fallback
    if (fallback === undefined) throw error
    this.#window.fallbacks++
    if (this.#events.has('fell-back')) this.#events.emit('fell-back', { name: this.#name, error })
    return b === FIRE ? fallback(error, ...(a as A)) : fallback(error, ...([] as unknown as A))
  }

  #refuse(a: unknown, b: unknown): Promise<unknown> {
    this.#window.rejects++
    const error = new BreakerOpenError(this.#name)
    addActiveSpanEvent(REJECTED_EVENT, { [BREAKER_NAME]: this.#name, [STATE]: this.#state })
    if (this.#events.has('rejected')) this.#events.emit('rejected', { name: this.#name, error })
    try {
      return Promise.resolve(this.#answer(error, a, b))
    } catch (e) {
      return Promise.reject(e)
    }
  }

  #notClosed(a: unknown, b: unknown, operation: string): Promise<R> {
    // A closed breaker refuses for good: not a retryable BreakerOpenError, and no fallback.
    if (this.#shutdown) {
      return Promise.reject(new ResilienceClosedError('circuit breaker', operation))
    }
    if (this.#state === 'open') return this.#refuse(a, b) as Promise<R>
    // Half-open: let `halfOpenProbes` calls through, refuse the rest until they settle.
    if (this.#probesStarted >= this.#probes) return this.#refuse(a, b) as Promise<R>
    this.#probesStarted++
    return this.#probe(a, b) as Promise<R>
  }

  async #probe(a: unknown, b: unknown): Promise<unknown> {
    const started = Date.now()
    this.#window.fires++
    let timer: NodeJS.Timeout | undefined
    try {
      const work =
        b === FIRE
          ? settle((this.#fn as (...args: A) => unknown)(...(a as A)))
          : settle((a as Operation<unknown>)(b as ExecutionContext))
      const limit = this.#timeout
      const value =
        limit === false
          ? await work
          : await Promise.race([
              work,
              new Promise<never>((_, reject) => {
                timer = setTimeout(() => reject(new TimeoutError(limit)), limit)
              }),
            ])
      this.#probeSucceeded(Date.now() - started)
      return value
    } catch (error) {
      const excused =
        this.#errorFilter !== undefined &&
        (b === FIRE
          ? this.#errorFilter(error, ...(a as A))
          : this.#errorFilter(error, ...([] as unknown as A)))
      if (excused) {
        this.#probeSucceeded(Date.now() - started)
        throw error
      }
      this.#window.increment('failures', Date.now() - started)
      if (error instanceof TimeoutError) {
        this.#window.timeouts++
        addActiveSpanEvent(TIMED_OUT_EVENT, {
          [BREAKER_NAME]: this.#name,
          'error.type': 'E_RESILIENCE_TIMEOUT',
        })
        this.#events.emit('timed-out', { name: this.#name, error })
      }
      if (this.#state === 'halfOpen') this.#cb.open()
      if (this.#events.has('failed')) this.#events.emit('failed', { name: this.#name, error })
      return this.#answer(error, a, b)
    } finally {
      if (timer !== undefined) clearTimeout(timer)
    }
  }

  #probeSucceeded(latency: number): void {
    this.#window.increment('successes', latency)
    if (this.#state !== 'halfOpen') return
    this.#probesSucceeded++
    if (this.#probesSucceeded >= this.#probes) this.#cb.close()
  }
}

/** Opossum calls `.then` on the action's result: hand it a promise for every value, even `undefined`. */
function settle(result: unknown): Promise<unknown> {
  return result instanceof Promise ? result : Promise.resolve(result)
}

function validateWindow(window: unknown): WindowSpec {
  if (typeof window !== 'object' || window === null) {
    check.invalid('window', "{ type: 'time', duration } or { type: 'count', size }", window)
  }
  const w = window as Partial<TimeWindow> & Partial<CountWindow>
  if (w.type === 'count')
    return { type: 'count', size: check.positiveInteger('window.size', w.size) }
  if (w.type === 'time') {
    const buckets = check.positiveInteger(
      'window.buckets',
      w.buckets ?? DEFAULT_TIME_WINDOW.buckets,
    )
    const span = check.duration('window.duration', w.duration, { positive: true })
    return { type: 'time', duration: span, buckets }
  }
  return check.invalid('window.type', '"time" or "count"', w.type)
}

/**
 * Creates a {@link CircuitBreaker} around `fn` (call it with `fire(...args)`), or, without a
 * function, a breaker to use as a policy (`execute(fn)`, or in a {@link pipeline}).
 *
 * @example
 * ```ts
 * import { circuitBreaker, isResilienceError } from '@ballast/resilience'
 *
 * const getRates = circuitBreaker((currency: string) => fx.rates(currency), {
 *   window: { type: 'count', size: 50 },
 *   errorFilter: (error) => (error as { status?: number }).status === 404,
 *   fallback: () => cachedRates,
 * })
 * getRates.on('opened', ({ name }) => log.warn(`${name} is open`))
 * const rates = await getRates.fire('EUR')
 * ```
 */
export function circuitBreaker<A extends unknown[], R>(
  fn: (...args: A) => R | PromiseLike<R>,
  options?: CircuitBreakerOptions<A, Awaited<R>>,
): CircuitBreaker<A, Awaited<R>>
export function circuitBreaker<F = never>(
  options?: CircuitBreakerOptions<[], F>,
): CircuitBreaker<[], F>
export function circuitBreaker(
  fnOrOptions?: ((...args: unknown[]) => unknown) | CircuitBreakerOptions<unknown[], unknown>,
  options?: CircuitBreakerOptions<unknown[], unknown>,
): CircuitBreaker<unknown[], unknown> {
  if (typeof fnOrOptions === 'function') return new CircuitBreaker(fnOrOptions, options)
  return new CircuitBreaker<unknown[], unknown>(undefined, fnOrOptions)
}
