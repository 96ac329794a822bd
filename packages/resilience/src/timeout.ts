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
import { type Context, context as otelContext, trace } from '@opentelemetry/api'
import { ResilienceClosedError, TimeoutError } from './errors.js'
import { NEVER_ABORTED, RUN, rootContext } from './internal/context.js'
import {
  canRecord,
  resilienceTelemetry,
  TIMED_OUT_EVENT,
  TIMEOUT_NAME,
} from './internal/telemetry.js'
import { check } from './internal/validate.js'
import type { ExecutionContext, Operation, Policy } from './policy.js'

/** Options of {@link timeout}. */
export interface TimeoutOptions extends TelemetryOptions {
  /**
   * How long the work may run before it is abandoned with a {@link TimeoutError}:
   * milliseconds, or a string such as `'2s'`.
   * @default 10000
   */
  duration?: Duration
  /**
   * Name of the policy in telemetry (the `ballast.resilience.timeout.name` attribute): give
   * each timeout policy of a process its own, from a fixed set (one per dependency).
   * @default 'timeout'
   */
  name?: string
}

/** Defaults of {@link TimeoutOptions} (frozen). */
export const DEFAULT_TIMEOUT_OPTIONS: Readonly<
  Required<Omit<TimeoutOptions, keyof TelemetryOptions>>
> = Object.freeze({
  duration: 10_000,
  name: 'timeout',
})

/** Events of a {@link TimeoutPolicy}, by name. */
export interface TimeoutEvents {
  /** A call ran out of time; its signal was aborted with the {@link TimeoutError}. */
  'timed-out': TimedOutEvent
}

/** Payload of `timed-out`. */
export interface TimedOutEvent {
  /** The error the caller got and the signal was aborted with. */
  error: TimeoutError
}

/** Counters of a {@link TimeoutPolicy} since it was created. */
export interface TimeoutStats {
  /** Calls started. */
  calls: number
  /** Calls that ran out of time. */
  timedOut: number
  /** Calls running now. */
  inFlight: number
}

/**
 * One call in flight: its context (with a signal created only when read) and its place in
 * the deadline queue. Every call of one policy has the same duration, so deadlines come in
 * start order and the queue is a FIFO list watched by a single timer.
 */
class TimeoutCall<T> implements ExecutionContext {
  readonly parent: ExecutionContext
  readonly deadline: number
  prev: TimeoutCall<unknown> | undefined = undefined
  next: TimeoutCall<unknown> | undefined = undefined
  settled = false
  controller: AbortController | undefined = undefined
  resolve!: (value: T) => void
  reject!: (error: unknown) => void
  reason: TimeoutError | undefined = undefined
  /** The caller's context, kept only while spans can be recorded (for the timeout's span event). */
  caller: Context | undefined = undefined
  #detach: (() => void) | undefined = undefined

  constructor(parent: ExecutionContext, deadline: number) {
    this.parent = parent
    this.deadline = deadline
  }

  get attempt(): number {
    return this.parent.attempt
  }

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      const controller = new AbortController()
      this.controller = controller
      if (this.reason !== undefined) controller.abort(this.reason)
      else {
        const parentSignal = this.parent.signal
        if (parentSignal !== NEVER_ABORTED) {
          if (parentSignal.aborted) controller.abort(parentSignal.reason)
          else if (!this.settled) {
            const onAbort = () => controller.abort(parentSignal.reason)
            parentSignal.addEventListener('abort', onAbort, { once: true })
            this.#detach = () => parentSignal.removeEventListener('abort', onAbort)
          }
        }
      }
    }
    return this.controller.signal
  }

  detach(): void {
    if (this.#detach !== undefined) {
      this.#detach()
      this.#detach = undefined
    }
  }
}

/** The timeout policy's instruments (README, Telemetry). */
const TIMEOUT_INSTRUMENTS = {
  'ballast.resilience.timeout.calls': {
    kind: 'counter',
    unit: '{call}',
    description: 'Calls started',
  },
  'ballast.resilience.timeout.timeouts': {
    kind: 'counter',
    unit: '{call}',
    description: 'Calls that ran out of time (rejected with a TimeoutError, their signal aborted)',
  },
  'ballast.resilience.timeout.in_flight': {
    kind: 'upDownCounter',
    unit: '{call}',
    description: 'Calls running now',
  },
} satisfies Record<string, ObservedInstrument>

/**
 * A policy that abandons work after a fixed time: the call rejects with a {@link TimeoutError}
 * and the work's {@link ExecutionContext.signal} is aborted so it can stop. One timer per
 * policy, whatever the number of calls in flight. Create it with {@link timeout}.
 */
export class TimeoutPolicy implements Policy {
  readonly #duration: number
  readonly #events = new Emitter<TimeoutEvents>()
  #head: TimeoutCall<unknown> | undefined = undefined
  #tail: TimeoutCall<unknown> | undefined = undefined
  #timer: NodeJS.Timeout | undefined = undefined
  #calls = 0
  #timedOut = 0
  #inFlight = 0
  #closed = false
  /**
   * Whether spans can be recorded: only then does a call keep its caller's context, which the
   * single deadline timer needs to put the timeout's event on the right span.
   */
  readonly #traced: boolean
  readonly #name: string
  readonly #stopMetrics: () => void

  /** Use {@link timeout}. */
  constructor(options: TimeoutOptions = {}) {
    if (typeof options !== 'object' || options === null) {
      check.invalid('options', 'an object', options)
    }
    const o = merge(DEFAULT_TIMEOUT_OPTIONS, options)
    this.#duration = check.duration('duration', o.duration, { positive: true })
    this.#name = check.string('name', o.name)
    const { meter, tracer } = resilienceTelemetry(options)
    this.#traced = canRecord(tracer)
    const named = Object.freeze({ [TIMEOUT_NAME]: this.#name })
    this.#stopMetrics = observe(meter, TIMEOUT_INSTRUMENTS, (record) => {
      record('ballast.resilience.timeout.calls', this.#calls, named)
      record('ballast.resilience.timeout.timeouts', this.#timedOut, named)
      record('ballast.resilience.timeout.in_flight', this.#inFlight, named)
    })
  }

  /** The policy's name in telemetry. */
  get name(): string {
    return this.#name
  }

  /** The time limit in milliseconds. */
  get duration(): number {
    return this.#duration
  }

  /** Runs `fn`, rejecting with a {@link TimeoutError} if it takes longer than the duration. */
  execute<T>(fn: Operation<T>, signal?: AbortSignal): Promise<T> {
    return this[RUN](fn, rootContext(signal))
  }

  /** @internal */
  [RUN]<T>(fn: Operation<T>, parent: ExecutionContext): Promise<T> {
    if (this.#closed) {
      return Promise.reject(new ResilienceClosedError('timeout policy', 'execute'))
    }
    this.#calls++
    this.#inFlight++
    const call = new TimeoutCall<T>(parent, Date.now() + this.#duration)
    if (this.#traced) call.caller = otelContext.active()
    this.#enqueue(call as TimeoutCall<unknown>)
    return new Promise<T>((resolve, reject) => {
      call.resolve = resolve
      call.reject = reject
      let result: T | PromiseLike<T>
      try {
        result = fn(call)
      } catch (error) {
        this.#settle(call as TimeoutCall<unknown>)
        reject(error)
        return
      }
      if (
        result !== null &&
        typeof result === 'object' &&
        typeof (result as PromiseLike<T>).then === 'function'
      ) {
        ;(result as PromiseLike<T>).then(
          (value) => {
            if (call.settled) return
            this.#settle(call as TimeoutCall<unknown>)
            resolve(value)
          },
          (error: unknown) => {
            if (call.settled) return
            this.#settle(call as TimeoutCall<unknown>)
            reject(error)
          },
        )
      } else {
        this.#settle(call as TimeoutCall<unknown>)
        resolve(result as T)
      }
    })
  }

  /** Counters since creation. */
  stats(): TimeoutStats {
    return { calls: this.#calls, timedOut: this.#timedOut, inFlight: this.#inFlight }
  }

  /**
   * Adds a listener; a listener that throws does not break the call (its error is rethrown
   * in a microtask).
   * @returns A function that removes the listener.
   */
  on<K extends keyof TimeoutEvents>(event: K, listener: Listener<TimeoutEvents[K]>): Unsubscribe {
    return this.#events.on(event, listener)
  }

  /** Adds a listener called at most once; returns a function that removes it. */
  once<K extends keyof TimeoutEvents>(event: K, listener: Listener<TimeoutEvents[K]>): Unsubscribe {
    return this.#events.once(event, listener)
  }

  /** Removes a listener. */
  off<K extends keyof TimeoutEvents>(event: K, listener: Listener<TimeoutEvents[K]>): void {
    this.#events.off(event, listener)
  }

  /**
   * Stops reporting metrics and removes the listeners; later calls reject with
   * {@link ResilienceClosedError}. Calls already running keep their deadline.
   */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#stopMetrics()
    this.#events.removeAllListeners()
  }

  #enqueue(call: TimeoutCall<unknown>): void {
    const tail = this.#tail
    if (tail === undefined) this.#head = call
    else {
      tail.next = call
      call.prev = tail
    }
    this.#tail = call
    if (this.#timer === undefined) this.#arm(this.#duration)
  }

  #settle(call: TimeoutCall<unknown>): void {
    call.settled = true
    this.#inFlight--
    const { prev, next } = call
    if (prev === undefined) this.#head = next
    else prev.next = next
    if (next === undefined) this.#tail = prev
    else next.prev = prev
    call.prev = call.next = undefined
    call.detach()
  }

  #arm(delay: number): void {
    // Unreferenced: a pending deadline alone must not keep the process alive; the work
    // being timed holds its own handles.
    this.#timer = setTimeout(this.#onTimer, Math.max(1, delay))
    this.#timer.unref()
  }

  readonly #onTimer = (): void => {
    this.#timer = undefined
    const now = Date.now()
    let call = this.#head
    while (call !== undefined && call.deadline <= now) {
      const next = call.next
      this.#settle(call)
      this.#timedOut++
      const error = new TimeoutError(this.#duration)
      call.reason = error
      call.controller?.abort(error)
      if (call.caller !== undefined) {
        const span = trace.getSpan(call.caller)
        if (span?.isRecording()) {
          span.addEvent(TIMED_OUT_EVENT, { [TIMEOUT_NAME]: this.#name, 'error.type': error.code })
        }
        call.caller = undefined
      }
      if (this.#events.has('timed-out')) this.#events.emit('timed-out', { error })
      call.reject(error)
      call = next
    }
    if (this.#head !== undefined) this.#arm(this.#head.deadline - now)
  }
}

/**
 * Creates a {@link TimeoutPolicy}: work that runs longer than `duration` is abandoned with a
 * {@link TimeoutError}, and its signal is aborted so it can stop.
 *
 * @param options The time limit, as options or as a {@link Duration} (milliseconds, or a
 *   string such as `'2s'`).
 * @example
 * ```ts
 * import { timeout } from '@ballast/resilience'
 *
 * const twoSeconds = timeout('2s')
 * const res = await twoSeconds.execute(({ signal }) => fetch('https://psp.example/charge', { signal }))
 * ```
 */
export function timeout(options?: TimeoutOptions | Duration): TimeoutPolicy {
  if (typeof options === 'number' || typeof options === 'string') {
    return new TimeoutPolicy({ duration: options })
  }
  return new TimeoutPolicy(options)
}
