import {
  type CircuitBreaker,
  circuitBreaker,
  isResilienceError,
  TimeoutError,
} from '@ballast/resilience'
import type { TelemetryOptions } from '@ballast/shared'
import type { CircuitState } from '../cacheEvents.js'
import { L2UnavailableError } from '../errors.js'

export interface L2GuardOptions {
  name: string
  timeout: number
  windowSize: number
  errorThresholdPercentage: number
  volumeThreshold: number
  resetTimeout: number
  /** The cache's own providers: the breaker reports its state and calls through them. */
  telemetry: TelemetryOptions
  onStateChange(state: CircuitState): void
}

/** One L2 call on the closed path: settled by its result or by the sweeper at its deadline. */
interface Call {
  deadline: number
  done: boolean
  operation: string
  reject: (error: unknown) => void
}

/**
 * Every L2 call goes through here, so a hung Redis costs at most `timeout` and a dead one
 * costs microseconds once the breaker is open. Failures come out as {@link L2UnavailableError}.
 *
 * The state machine is `@ballast/resilience`'s circuit breaker (open, half-open probes with
 * its own timeout, close). While it is closed, which is every call of a healthy cache, the
 * calls do not go through `execute`: that costs ~2 µs a call (a promise chain, two events and
 * a `setTimeout`/`clearTimeout` per call), more than the rest of an L2 hit. Instead the guard
 * keeps the same count window here (the last `windowSize` outcomes; past `volumeThreshold`
 * calls, a failure share above `errorThresholdPercentage` trips the breaker) and times calls
 * out with one timer for all of them: every call has the same timeout, so calls in start
 * order are in deadline order, and one timer armed at the oldest pending deadline is enough.
 */
export class L2Guard {
  readonly #breaker: CircuitBreaker<[], never>
  readonly #timeout: number
  readonly #threshold: number
  readonly #volume: number
  // the count window: 1 = failure, in a ring of the last `size` outcomes
  readonly #ring: Uint8Array
  #at = 0
  #calls = 0
  #failures = 0
  // pending calls of the closed path, oldest first (deadline order)
  #queue: Call[] = []
  #head = 0
  #timer: NodeJS.Timeout | undefined

  constructor(options: L2GuardOptions) {
    this.#timeout = options.timeout
    this.#threshold = options.errorThresholdPercentage
    this.#volume = options.volumeThreshold
    this.#ring = new Uint8Array(options.windowSize)
    this.#breaker = circuitBreaker({
      name: options.name,
      window: { type: 'count', size: options.windowSize },
      errorThresholdPercentage: options.errorThresholdPercentage,
      volumeThreshold: options.volumeThreshold,
      resetTimeout: options.resetTimeout,
      timeout: options.timeout,
      ...options.telemetry,
    })
    this.#breaker.on('opened', () => options.onStateChange('open'))
    this.#breaker.on('half-opened', () => options.onStateChange('halfOpen'))
    this.#breaker.on('closed', () => {
      this.#clearWindow()
      options.onStateChange('closed')
    })
  }

  get state(): CircuitState {
    return this.#breaker.state
  }

  /** Whether a call may be let through now (not open). */
  get available(): boolean {
    return this.#breaker.state !== 'open'
  }

  /** `fn(target, arg)` under the breaker and the timeout (arguments, not a closure: no allocation per call). */
  run<T, C, A>(
    operation: string,
    fn: (target: C, arg: A) => Promise<T>,
    target: C,
    arg: A,
  ): Promise<T> {
    if (this.#breaker.state !== 'closed') {
      return this.#throughBreaker(operation, () => fn(target, arg))
    }
    return new Promise<T>((resolve, reject) => {
      const call: Call = { deadline: Date.now() + this.#timeout, done: false, operation, reject }
      this.#queue.push(call)
      if (this.#timer === undefined) this.#arm()
      fn(target, arg).then(
        (value) => {
          if (call.done) return
          call.done = true
          this.#record(false)
          this.#drop()
          resolve(value)
        },
        (error: unknown) => {
          if (call.done) return
          call.done = true
          this.#record(true)
          this.#drop()
          reject(failure(operation, error))
        },
      )
    })
  }

  async close(): Promise<void> {
    await this.#breaker.close()
  }

  async #throughBreaker<T>(operation: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await this.#breaker.execute(fn)
    } catch (error) {
      throw failure(operation, error)
    }
  }

  /** Counts an outcome of the closed path; trips the breaker as its own window would. */
  #record(failed: boolean): void {
    const ring = this.#ring
    const at = this.#at
    if (this.#calls === ring.length) this.#failures -= ring[at] as number
    else this.#calls++
    ring[at] = failed ? 1 : 0
    this.#at = at + 1 === ring.length ? 0 : at + 1
    if (!failed) return
    this.#failures++
    if (
      this.#calls >= this.#volume &&
      (this.#failures / this.#calls) * 100 > this.#threshold &&
      this.#breaker.state === 'closed'
    ) {
      this.#breaker.trip()
    }
  }

  #clearWindow(): void {
    this.#ring.fill(0)
    this.#at = 0
    this.#calls = 0
    this.#failures = 0
  }

  /** Forgets settled calls at the head of the queue. */
  #drop(): void {
    const queue = this.#queue
    let head = this.#head
    while (head < queue.length && (queue[head] as Call).done) head++
    if (head === queue.length) {
      queue.length = 0
      head = 0
    } else if (head > 1024 && head * 2 > queue.length) {
      queue.splice(0, head)
      head = 0
    }
    this.#head = head
  }

  #arm(): void {
    const next = this.#queue[this.#head]
    if (next === undefined) return
    this.#timer = setTimeout(this.#sweep, Math.max(0, next.deadline - Date.now()))
    this.#timer.unref?.()
  }

  readonly #sweep = (): void => {
    this.#timer = undefined
    const t = Date.now()
    const queue = this.#queue
    while (this.#head < queue.length) {
      const call = queue[this.#head] as Call
      if (!call.done) {
        if (call.deadline > t) break
        call.done = true
        this.#record(true)
        // the cause says "timeout" as the breaker's own probes do (E_RESILIENCE_TIMEOUT)
        call.reject(
          new L2UnavailableError(
            `L2 ${call.operation} failed: timed out after ${this.#timeout} ms`,
            { cause: new TimeoutError(this.#timeout) },
          ),
        )
      }
      this.#head++
    }
    this.#drop()
    this.#arm()
  }
}

function failure(operation: string, error: unknown): L2UnavailableError {
  const why = isResilienceError(error)
    ? error.code === 'E_RESILIENCE_BREAKER_OPEN'
      ? 'the circuit breaker is open'
      : error.message
    : error instanceof Error
      ? error.message
      : String(error)
  return new L2UnavailableError(`L2 ${operation} failed: ${why}`, { cause: error })
}
