import {
  Emitter,
  type Listener,
  merge,
  type ObservedInstrument,
  observe,
  type TelemetryOptions,
  type Unsubscribe,
} from '@ballast/shared'
import { ResilienceClosedError } from './errors.js'
import { RUN, rootContext } from './internal/context.js'
import { FALLBACK_NAME, resilienceTelemetry } from './internal/telemetry.js'
import { check, checkArgument } from './internal/validate.js'
import type { ExecutionContext, Operation, Policy } from './policy.js'

/** Options of {@link fallback}. */
export interface FallbackOptions extends TelemetryOptions {
  /**
   * Which errors the fallback answers; others go to the caller unchanged.
   * @default every error
   */
  when?: (error: unknown) => boolean
  /**
   * Name of the policy in telemetry (the `ballast.resilience.fallback.name` attribute): give
   * each fallback of a process its own, from a fixed set.
   * @default 'fallback'
   */
  name?: string
}

/** Defaults of {@link FallbackOptions} (frozen). */
export const DEFAULT_FALLBACK_OPTIONS: Readonly<
  Required<Omit<FallbackOptions, keyof TelemetryOptions>>
> = Object.freeze({
  when: () => true,
  name: 'fallback',
})

/** The fallback policy's instruments (README, Telemetry). */
const FALLBACK_INSTRUMENTS = {
  'ballast.resilience.fallback.calls': {
    kind: 'counter',
    unit: '{call}',
    description: 'Calls started',
  },
  'ballast.resilience.fallback.fallbacks': {
    kind: 'counter',
    unit: '{call}',
    description: 'Failed calls the fallback answered',
  },
} satisfies Record<string, ObservedInstrument>

/** Events of a {@link FallbackPolicy}, by name. */
export interface FallbackEvents {
  /** The work failed and the fallback answered instead. */
  'fell-back': FellBackEvent
}

/** Payload of `fell-back`. */
export interface FellBackEvent {
  /** The error the fallback answered. */
  error: unknown
}

/** Counters of a {@link FallbackPolicy} since it was created. */
export interface FallbackStats {
  /** Calls started. */
  calls: number
  /** Calls the fallback answered. */
  fellBack: number
}

/**
 * Answers failed work with a substitute value: a cached price, an empty recommendation list.
 * Create it with {@link fallback}. `F` is the substitute's type; in a {@link pipeline} the
 * result type becomes `T | F`.
 */
export class FallbackPolicy<F> implements Policy<F> {
  readonly #handler: (error: unknown, context: ExecutionContext) => F | PromiseLike<F>
  readonly #when: (error: unknown) => boolean
  readonly #events = new Emitter<FallbackEvents>()
  #calls = 0
  #fellBack = 0
  #closed = false
  readonly #name: string
  readonly #stopMetrics: () => void

  /** Use {@link fallback}. */
  constructor(
    handler: (error: unknown, context: ExecutionContext) => F | PromiseLike<F>,
    options: FallbackOptions = {},
  ) {
    checkArgument.func('handler', handler)
    const o = merge(DEFAULT_FALLBACK_OPTIONS, options)
    this.#handler = handler
    this.#when = check.func<(error: unknown) => boolean>('when', o.when)
    this.#name = check.string('name', o.name)
    const { meter } = resilienceTelemetry(options)
    const named = Object.freeze({ [FALLBACK_NAME]: this.#name })
    this.#stopMetrics = observe(meter, FALLBACK_INSTRUMENTS, (record) => {
      record('ballast.resilience.fallback.calls', this.#calls, named)
      record('ballast.resilience.fallback.fallbacks', this.#fellBack, named)
    })
  }

  /** The policy's name in telemetry. */
  get name(): string {
    return this.#name
  }

  /** Runs `fn`; if it fails with an error `when` accepts, resolves with the fallback instead. */
  execute<T>(fn: Operation<T>, signal?: AbortSignal): Promise<T | F> {
    return this[RUN](fn, rootContext(signal))
  }

  /** @internal */
  [RUN]<T>(fn: Operation<T>, context: ExecutionContext): Promise<T | F> {
    if (this.#closed) {
      return Promise.reject(new ResilienceClosedError('fallback policy', 'execute'))
    }
    this.#calls++
    let result: T | PromiseLike<T>
    try {
      result = fn(context)
    } catch (error) {
      return this.#answer(error, context)
    }
    return Promise.resolve(result).then(undefined, (error: unknown) => this.#answer(error, context))
  }

  /** Counters since creation. */
  stats(): FallbackStats {
    return { calls: this.#calls, fellBack: this.#fellBack }
  }

  /**
   * Adds a listener; a listener that throws does not break the call (its error is rethrown
   * in a microtask).
   * @returns A function that removes the listener.
   */
  on<K extends keyof FallbackEvents>(event: K, listener: Listener<FallbackEvents[K]>): Unsubscribe {
    return this.#events.on(event, listener)
  }

  /** Adds a listener called at most once; returns a function that removes it. */
  once<K extends keyof FallbackEvents>(
    event: K,
    listener: Listener<FallbackEvents[K]>,
  ): Unsubscribe {
    return this.#events.once(event, listener)
  }

  /** Removes a listener. */
  off<K extends keyof FallbackEvents>(event: K, listener: Listener<FallbackEvents[K]>): void {
    this.#events.off(event, listener)
  }

  /**
   * Stops reporting metrics and removes the listeners; later calls reject with
   * {@link ResilienceClosedError}. Calls already running finish as before.
   */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#stopMetrics()
    this.#events.removeAllListeners()
  }

  #answer(error: unknown, context: ExecutionContext): Promise<F> {
    if (!this.#when(error)) return Promise.reject(error)
    this.#fellBack++
    if (this.#events.has('fell-back')) this.#events.emit('fell-back', { error })
    try {
      return Promise.resolve(this.#handler(error, context))
    } catch (fallbackError) {
      return Promise.reject(fallbackError)
    }
  }
}

/**
 * Creates a {@link FallbackPolicy} that answers failed work with `handler(error)`.
 *
 * @param handler Returns (or resolves to) the substitute result.
 * @example
 * ```ts
 * import { fallback } from '@ballast/resilience'
 *
 * const noRecommendations = fallback(() => [] as string[])
 * const ids = await noRecommendations.execute(() => recommender.forUser(userId))
 * ```
 */
export function fallback<F>(
  handler: (error: unknown, context: ExecutionContext) => F | PromiseLike<F>,
  options?: FallbackOptions,
): FallbackPolicy<F> {
  return new FallbackPolicy(handler, options)
}
