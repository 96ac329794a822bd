import {
  Emitter,
  type Listener,
  merge,
  type ObservedInstrument,
  observe,
  type TelemetryOptions,
  type Unsubscribe,
} from '@ballast/shared'
import { AbortedError, BulkheadRejectedError, ResilienceClosedError } from './errors.js'
import { RUN, rootContext } from './internal/context.js'
import { BULKHEAD_NAME, OUTCOME, resilienceTelemetry } from './internal/telemetry.js'
import { check } from './internal/validate.js'
import type { ExecutionContext, Operation, Policy } from './policy.js'

/** Options of {@link bulkhead}. */
export interface BulkheadOptions extends TelemetryOptions {
  /** How many calls may run at once. */
  limit: number
  /**
   * How many calls may wait for a slot; a call beyond that is refused at once with a
   * {@link BulkheadRejectedError}.
   * @default 0
   */
  queue?: number
  /**
   * Name of the bulkhead in telemetry (the `ballast.resilience.bulkhead.name` attribute): give
   * each bulkhead of a process its own, from a fixed set (one per dependency).
   * @default 'bulkhead'
   */
  name?: string
}

/** Defaults of {@link BulkheadOptions} (frozen; `limit` has none and must be given). */
export const DEFAULT_BULKHEAD_OPTIONS: Readonly<
  Omit<Required<BulkheadOptions>, 'limit' | keyof TelemetryOptions>
> = Object.freeze({ queue: 0, name: 'bulkhead' })

/** Events of a {@link BulkheadPolicy}, by name. */
export interface BulkheadEvents {
  /** A call was refused because every slot and queue place was taken. */
  rejected: BulkheadRejectedEvent
}

/** Payload of `rejected`. */
export interface BulkheadRejectedEvent {
  /** The refusal the caller got. */
  error: BulkheadRejectedError
}

/** Counters of a {@link BulkheadPolicy}. */
export interface BulkheadStats {
  /** Calls running now. */
  active: number
  /** Calls waiting for a slot now. */
  queued: number
  /** Calls that were given a slot since creation. */
  executed: number
  /** Calls refused since creation. */
  rejected: number
  /** Queued calls abandoned by their signal since creation. */
  aborted: number
}

/** The bulkhead's instruments (README, Telemetry). */
const BULKHEAD_INSTRUMENTS = {
  'ballast.resilience.bulkhead.active': {
    kind: 'upDownCounter',
    unit: '{call}',
    description: 'Calls running now (holding a slot)',
  },
  'ballast.resilience.bulkhead.queued': {
    kind: 'upDownCounter',
    unit: '{call}',
    description: 'Calls waiting for a slot now',
  },
  'ballast.resilience.bulkhead.calls': {
    kind: 'counter',
    unit: '{call}',
    description:
      'Calls by outcome: executed (given a slot, at once or after queueing), rejected (no slot and no queue place), aborted (left the queue on their signal)',
  },
} satisfies Record<string, ObservedInstrument>

interface Waiter {
  fn: Operation<unknown>
  context: ExecutionContext
  resolve: (value: unknown) => void
  reject: (error: unknown) => void
  next: Waiter | undefined
  prev: Waiter | undefined
  detach: (() => void) | undefined
}

/**
 * A concurrency limit with a bounded FIFO queue: keeps one slow dependency from taking every
 * connection or worker. Create it with {@link bulkhead}.
 */
export class BulkheadPolicy implements Policy {
  readonly #limit: number
  readonly #maxQueue: number
  readonly #events = new Emitter<BulkheadEvents>()
  #active = 0
  #queued = 0
  #executed = 0
  #rejected = 0
  #aborted = 0
  #head: Waiter | undefined = undefined
  #tail: Waiter | undefined = undefined
  #closed = false
  readonly #name: string
  readonly #stopMetrics: () => void

  /** Use {@link bulkhead}. */
  constructor(options: BulkheadOptions) {
    check.object('options', options)
    const merged = merge(DEFAULT_BULKHEAD_OPTIONS, options)
    this.#limit = check.positiveInteger('limit', merged.limit)
    this.#maxQueue = check.nonNegativeInteger('queue', merged.queue)
    this.#name = check.string('name', merged.name)
    const { meter } = resilienceTelemetry(options)
    const named = Object.freeze({ [BULKHEAD_NAME]: this.#name })
    const executed = Object.freeze({ ...named, [OUTCOME]: 'executed' })
    const rejected = Object.freeze({ ...named, [OUTCOME]: 'rejected' })
    const aborted = Object.freeze({ ...named, [OUTCOME]: 'aborted' })
    this.#stopMetrics = observe(meter, BULKHEAD_INSTRUMENTS, (record) => {
      record('ballast.resilience.bulkhead.active', this.#active, named)
      record('ballast.resilience.bulkhead.queued', this.#queued, named)
      record('ballast.resilience.bulkhead.calls', this.#executed, executed)
      record('ballast.resilience.bulkhead.calls', this.#rejected, rejected)
      record('ballast.resilience.bulkhead.calls', this.#aborted, aborted)
    })
  }

  /** The bulkhead's name in telemetry. */
  get name(): string {
    return this.#name
  }

  /** Runs `fn` when a slot is free, waits in the queue if there is room, else refuses it. */
  execute<T>(fn: Operation<T>, signal?: AbortSignal): Promise<T> {
    return this[RUN](fn, rootContext(signal))
  }

  /** @internal */
  [RUN]<T>(fn: Operation<T>, context: ExecutionContext): Promise<T> {
    if (this.#closed) {
      return Promise.reject(new ResilienceClosedError('bulkhead', 'execute'))
    }
    if (this.#active < this.#limit) {
      this.#active++
      this.#executed++
      return this.#start(fn, context)
    }
    if (this.#queued >= this.#maxQueue) {
      this.#rejected++
      const error = new BulkheadRejectedError(this.#active, this.#queued)
      if (this.#events.has('rejected')) this.#events.emit('rejected', { error })
      return Promise.reject(error)
    }
    const signal = context.signal
    if (signal.aborted) return Promise.reject(new AbortedError({ cause: signal.reason }))
    return new Promise<T>((resolve, reject) => {
      const waiter: Waiter = {
        fn: fn as Operation<unknown>,
        context,
        resolve: resolve as (value: unknown) => void,
        reject,
        next: undefined,
        prev: this.#tail,
        detach: undefined,
      }
      const onAbort = () => {
        this.#unlink(waiter)
        this.#aborted++
        reject(new AbortedError({ cause: signal.reason }))
      }
      signal.addEventListener('abort', onAbort, { once: true })
      waiter.detach = () => signal.removeEventListener('abort', onAbort)
      if (this.#tail === undefined) this.#head = waiter
      else this.#tail.next = waiter
      this.#tail = waiter
      this.#queued++
    })
  }

  /** Counters and current occupancy. */
  stats(): BulkheadStats {
    return {
      active: this.#active,
      queued: this.#queued,
      executed: this.#executed,
      rejected: this.#rejected,
      aborted: this.#aborted,
    }
  }

  /**
   * Adds a listener; a listener that throws does not break the call (its error is rethrown
   * in a microtask).
   * @returns A function that removes the listener.
   */
  on<K extends keyof BulkheadEvents>(event: K, listener: Listener<BulkheadEvents[K]>): Unsubscribe {
    return this.#events.on(event, listener)
  }

  /** Adds a listener called at most once; returns a function that removes it. */
  once<K extends keyof BulkheadEvents>(
    event: K,
    listener: Listener<BulkheadEvents[K]>,
  ): Unsubscribe {
    return this.#events.once(event, listener)
  }

  /** Removes a listener. */
  off<K extends keyof BulkheadEvents>(event: K, listener: Listener<BulkheadEvents[K]>): void {
    this.#events.off(event, listener)
  }

  /**
   * Stops reporting metrics and removes the listeners; later calls reject with
   * {@link ResilienceClosedError}. Running and queued calls go on as before.
   */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#stopMetrics()
    this.#events.removeAllListeners()
  }

  #start<T>(fn: Operation<T>, context: ExecutionContext): Promise<T> {
    let result: T | PromiseLike<T>
    try {
      result = fn(context)
    } catch (error) {
      this.#release()
      return Promise.reject(error)
    }
    return Promise.resolve(result).then(this.#onFulfilled, this.#onRejected) as Promise<T>
  }

  readonly #onFulfilled = (value: unknown): unknown => {
    this.#release()
    return value
  }

  readonly #onRejected = (error: unknown): never => {
    this.#release()
    throw error
  }

  #release(): void {
    const waiter = this.#head
    if (waiter === undefined) {
      this.#active--
      return
    }
    this.#unlink(waiter)
    this.#executed++
    this.#start(waiter.fn, waiter.context).then(waiter.resolve, waiter.reject)
  }

  #unlink(waiter: Waiter): void {
    const { prev, next } = waiter
    if (prev === undefined) this.#head = next
    else prev.next = next
    if (next === undefined) this.#tail = prev
    else next.prev = prev
    waiter.next = waiter.prev = undefined
    waiter.detach?.()
    waiter.detach = undefined
    this.#queued--
  }
}

/**
 * Creates a {@link BulkheadPolicy}: at most `limit` calls run at once, up to `queue` more wait
 * in order, and the rest are refused with a {@link BulkheadRejectedError}.
 *
 * @example
 * ```ts
 * import { bulkhead } from '@ballast/resilience'
 *
 * const pdfWorkers = bulkhead({ limit: 4, queue: 20 })
 * const pdf = await pdfWorkers.execute(() => renderInvoice(order))
 * ```
 */
export function bulkhead(options: BulkheadOptions): BulkheadPolicy {
  return new BulkheadPolicy(options)
}
