import { RUN, rootContext } from './internal/context.js'
import { Emitter, type Listener } from './internal/emitter.js'
import { invalid, merge, optionalFunction } from './internal/validate.js'
import type { ExecutionContext, Operation, Policy } from './policy.js'

/** Options of {@link fallback}. */
export interface FallbackOptions {
  /**
   * Which errors the fallback answers; others go to the caller unchanged.
   * @default every error
   */
  when?: (error: unknown) => boolean
}

/** Defaults of {@link FallbackOptions}. */
export const DEFAULT_FALLBACK_OPTIONS: Readonly<Required<FallbackOptions>> = Object.freeze({
  when: () => true,
})

/** Events of a {@link FallbackPolicy}. */
export interface FallbackEvents {
  /** The work failed and the fallback answered instead. */
  fallback: {
    /** The error the fallback answered. */
    error: unknown
  }
}

/** Counters of a {@link FallbackPolicy} since it was created. */
export interface FallbackStats {
  /** Calls started. */
  calls: number
  /** Calls the fallback answered. */
  fallbacks: number
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
  #fallbacks = 0

  /** Use {@link fallback}. */
  constructor(
    handler: (error: unknown, context: ExecutionContext) => F | PromiseLike<F>,
    options: FallbackOptions = {},
  ) {
    if (typeof handler !== 'function') invalid('handler', 'a function', handler)
    const o = merge(DEFAULT_FALLBACK_OPTIONS, options)
    this.#handler = handler
    this.#when = optionalFunction<(error: unknown) => boolean>('when', o.when) ?? (() => true)
  }

  /** Runs `fn`; if it fails with an error `when` accepts, resolves with the fallback instead. */
  execute<T>(fn: Operation<T>, signal?: AbortSignal): Promise<T | F> {
    return this[RUN](fn, rootContext(signal))
  }

  /** @internal */
  [RUN]<T>(fn: Operation<T>, context: ExecutionContext): Promise<T | F> {
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
    return { calls: this.#calls, fallbacks: this.#fallbacks }
  }

  /** Subscribes to an event. */
  on<K extends keyof FallbackEvents>(event: K, listener: Listener<FallbackEvents[K]>): this {
    this.#events.on(event, listener)
    return this
  }

  /** Unsubscribes from an event. */
  off<K extends keyof FallbackEvents>(event: K, listener: Listener<FallbackEvents[K]>): this {
    this.#events.off(event, listener)
    return this
  }

  #answer(error: unknown, context: ExecutionContext): Promise<F> {
    if (!this.#when(error)) return Promise.reject(error)
    this.#fallbacks++
    if (this.#events.has('fallback')) this.#events.emit('fallback', { error })
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
