import {
  type Duration,
  Emitter,
  errorType,
  type Listener,
  merge,
  type ObservedInstrument,
  observe,
  type TelemetryOptions,
  type Unsubscribe,
} from '@ballast/shared'
import { AbortedError, ResilienceClosedError } from './errors.js'
import { RUN, rootContext } from './internal/context.js'
import {
  ATTEMPT,
  addActiveSpanEvent,
  OUTCOME,
  RETRIED_EVENT,
  RETRY_NAME,
  resilienceTelemetry,
} from './internal/telemetry.js'
import { check } from './internal/validate.js'
import type { ExecutionContext, Operation, Policy } from './policy.js'

/** Options of {@link retry}. */
export interface RetryOptions extends TelemetryOptions {
  /**
   * Name of the policy in telemetry (the `ballast.resilience.retry.name` attribute): give each
   * retry policy of a process its own, from a fixed set (one per dependency).
   * @default 'retry'
   */
  name?: string
  /**
   * Tries in all, the first included (3 means one try and two retries).
   * @default 3
   */
  maxAttempts?: number
  /**
   * Upper bound of the first backoff (milliseconds, or a string such as `'100ms'`); the n-th
   * retry waits a random time in `[0, min(maxDelay, initialDelay * factor^(n-1))]` (full
   * jitter).
   * @default 100
   */
  initialDelay?: Duration
  /**
   * Growth of the backoff bound per retry.
   * @default 2
   */
  factor?: number
  /**
   * Cap of the backoff bound (milliseconds, or a string such as `'10s'`).
   * @default 10000
   */
  maxDelay?: Duration
  /**
   * Give up when the next retry would start later than this after the first try started
   * (milliseconds, or a string such as `'30s'`). `Infinity` for no limit.
   * @default 30000
   */
  maxElapsed?: Duration
  /**
   * Which errors to retry. By default only errors that say so: `error.retryable === true`
   * (every ballast error carries the flag). A retry waits at least `error.retryAfterMs`
   * when the error has one (rate limits, in-flight idempotency keys).
   * @default isRetryableError
   */
  retryOn?: (error: unknown, attempt: number) => boolean
  /**
   * Source of randomness in `[0, 1)`, for tests.
   * @default Math.random
   */
  random?: () => number
}

/** Defaults of {@link RetryOptions} (frozen). */
export const DEFAULT_RETRY_OPTIONS: Readonly<Required<Omit<RetryOptions, keyof TelemetryOptions>>> =
  Object.freeze({
    name: 'retry',
    maxAttempts: 3,
    initialDelay: 100,
    factor: 2,
    maxDelay: 10_000,
    maxElapsed: 30_000,
    retryOn: isRetryableError,
    random: Math.random,
  })

/** Whether an error says a retry can help: it has `retryable: true`. */
export function isRetryableError(error: unknown): boolean {
  return (
    typeof error === 'object' &&
    error !== null &&
    (error as { retryable?: unknown }).retryable === true
  )
}

/** Events of a {@link RetryPolicy}, by name. */
export interface RetryEvents {
  /** An attempt failed and another will start after `delayMs`. */
  retried: RetriedEvent
  /** The last attempt failed, or the error was not retryable; the error goes to the caller. */
  'gave-up': GaveUpEvent
}

/** Payload of `retried`. */
export interface RetriedEvent {
  /** The error of the failed attempt. */
  error: unknown
  /** The attempt that failed (1 for the first try). */
  attempt: number
  /** Milliseconds until the next attempt. */
  delayMs: number
}

/** Payload of `gave-up`. */
export interface GaveUpEvent {
  /** The error the caller gets. */
  error: unknown
  /** Attempts made. */
  attempts: number
  /** Why no further attempt is made. */
  reason: 'not-retryable' | 'max-attempts' | 'max-elapsed'
}

/** Counters of a {@link RetryPolicy} since it was created. */
export interface RetryStats {
  /** Calls started. */
  calls: number
  /** Retries made (attempts after the first). */
  retries: number
  /** Calls that succeeded, on any attempt. */
  succeeded: number
  /** Calls that failed after their last attempt. */
  failed: number
}

/** {@link RetryOptions} validated, durations in milliseconds. */
interface ResolvedRetryOptions {
  readonly maxAttempts: number
  readonly initialDelay: number
  readonly factor: number
  readonly maxDelay: number
  readonly maxElapsed: number
  readonly retryOn: (error: unknown, attempt: number) => boolean
  readonly random: () => number
}

/** The retry policy's instruments (README, Telemetry). */
const RETRY_INSTRUMENTS = {
  'ballast.resilience.retry.calls': {
    kind: 'counter',
    unit: '{call}',
    description: 'Calls by outcome: succeeded (on any attempt), failed (after the last attempt)',
  },
  'ballast.resilience.retry.retries': {
    kind: 'counter',
    unit: '{retry}',
    description: 'Retries made (attempts after the first)',
  },
} satisfies Record<string, ObservedInstrument>

class AttemptContext implements ExecutionContext {
  readonly #parent: ExecutionContext
  readonly attempt: number
  constructor(parent: ExecutionContext, attempt: number) {
    this.#parent = parent
    this.attempt = attempt
  }
  get signal(): AbortSignal {
    return this.#parent.signal
  }
}

/**
 * Retries failed work with exponential backoff and full jitter, within a number of attempts
 * and a time budget, only for errors that are retryable. Create it with {@link retry}.
 */
export class RetryPolicy implements Policy {
  readonly #options: ResolvedRetryOptions
  readonly #events = new Emitter<RetryEvents>()
  #calls = 0
  #retries = 0
  #succeeded = 0
  #failed = 0
  #closed = false
  readonly #name: string
  readonly #stopMetrics: () => void

  /** Use {@link retry}. */
  constructor(options: RetryOptions = {}) {
    if (options !== undefined && (typeof options !== 'object' || options === null)) {
      check.invalid('options', 'an object', options)
    }
    const o = merge(DEFAULT_RETRY_OPTIONS, options)
    this.#options = Object.freeze({
      maxAttempts: check.positiveInteger('maxAttempts', o.maxAttempts),
      initialDelay: check.duration('initialDelay', o.initialDelay),
      factor: check.number('factor', o.factor, { min: 1 }),
      maxDelay: check.duration('maxDelay', o.maxDelay),
      maxElapsed: check.duration('maxElapsed', o.maxElapsed, { positive: true, infinite: true }),
      retryOn: check.func<(error: unknown, attempt: number) => boolean>('retryOn', o.retryOn),
      random: check.func<() => number>('random', o.random),
    })
    this.#name = check.string('name', o.name)
    const { meter } = resilienceTelemetry(options)
    const named = Object.freeze({ [RETRY_NAME]: this.#name })
    const succeeded = Object.freeze({ ...named, [OUTCOME]: 'succeeded' })
    const failed = Object.freeze({ ...named, [OUTCOME]: 'failed' })
    this.#stopMetrics = observe(meter, RETRY_INSTRUMENTS, (record) => {
      record('ballast.resilience.retry.calls', this.#succeeded, succeeded)
      record('ballast.resilience.retry.calls', this.#failed, failed)
      record('ballast.resilience.retry.retries', this.#retries, named)
    })
  }

  /** The policy's name in telemetry. */
  get name(): string {
    return this.#name
  }

  /** Runs `fn`, retrying it as configured. Rejects with the last error when it gives up. */
  execute<T>(fn: Operation<T>, signal?: AbortSignal): Promise<T> {
    return this[RUN](fn, rootContext(signal))
  }

  /** @internal */
  async [RUN]<T>(fn: Operation<T>, context: ExecutionContext): Promise<T> {
    if (this.#closed) throw new ResilienceClosedError('retry policy', 'execute')
    this.#calls++
    const o = this.#options
    const started = Date.now()
    let attempt = 1
    for (;;) {
      try {
        const value = await fn(attempt === 1 ? context : new AttemptContext(context, attempt))
        this.#succeeded++
        return value
      } catch (error) {
        let reason: GaveUpEvent['reason'] | undefined
        let delay = 0
        if (attempt >= o.maxAttempts) reason = 'max-attempts'
        else if (!o.retryOn(error, attempt)) reason = 'not-retryable'
        else {
          const bound = Math.min(o.maxDelay, o.initialDelay * o.factor ** (attempt - 1))
          delay = o.random() * bound
          const retryAfter = (error as { retryAfterMs?: unknown } | null)?.retryAfterMs
          if (typeof retryAfter === 'number' && retryAfter > delay) delay = retryAfter
          if (Date.now() + delay - started > o.maxElapsed) reason = 'max-elapsed'
        }
        if (reason !== undefined) {
          this.#failed++
          if (this.#events.has('gave-up')) {
            this.#events.emit('gave-up', { error, attempts: attempt, reason })
          }
          throw error
        }
        this.#retries++
        // On the caller's span (this loop runs in its context), only when a retry happens.
        addActiveSpanEvent(RETRIED_EVENT, {
          [RETRY_NAME]: this.#name,
          [ATTEMPT]: attempt + 1,
          'error.type': errorType(error),
        })
        if (this.#events.has('retried')) {
          this.#events.emit('retried', { error, attempt, delayMs: delay })
        }
        await sleep(delay, context.signal)
        attempt++
      }
    }
  }

  /** Counters since creation. */
  stats(): RetryStats {
    return {
      calls: this.#calls,
      retries: this.#retries,
      succeeded: this.#succeeded,
      failed: this.#failed,
    }
  }

  /**
   * Adds a listener; a listener that throws does not break the call (its error is rethrown
   * in a microtask).
   * @returns A function that removes the listener.
   */
  on<K extends keyof RetryEvents>(event: K, listener: Listener<RetryEvents[K]>): Unsubscribe {
    return this.#events.on(event, listener)
  }

  /** Adds a listener called at most once; returns a function that removes it. */
  once<K extends keyof RetryEvents>(event: K, listener: Listener<RetryEvents[K]>): Unsubscribe {
    return this.#events.once(event, listener)
  }

  /** Removes a listener. */
  off<K extends keyof RetryEvents>(event: K, listener: Listener<RetryEvents[K]>): void {
    this.#events.off(event, listener)
  }

  /**
   * Stops reporting metrics and removes the listeners; later calls reject with
   * {@link ResilienceClosedError}. Calls already running finish as configured.
   */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#stopMetrics()
    this.#events.removeAllListeners()
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(new AbortedError({ cause: signal.reason }))
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer)
      reject(new AbortedError({ cause: signal.reason }))
    }
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal.addEventListener('abort', onAbort, { once: true })
  })
}

/**
 * Creates a {@link RetryPolicy}: exponential backoff with full jitter, `maxAttempts` tries
 * within `maxElapsed`, retrying only errors with `retryable: true` (or those
 * `retryOn` accepts), and stopping when the signal aborts.
 *
 * @example
 * ```ts
 * import { retry } from '@ballast/resilience'
 *
 * const threeTimes = retry({ maxAttempts: 3, initialDelay: 50 })
 * const stock = await threeTimes.execute(({ attempt }) => inventory.reserve(sku, 1, { attempt }))
 * ```
 */
export function retry(options: RetryOptions = {}): RetryPolicy {
  return new RetryPolicy(options)
}
