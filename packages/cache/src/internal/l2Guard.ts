import { type CircuitBreaker, circuitBreaker, isResilienceError } from '@ballast/resilience'
import type { CircuitState } from '../cacheEvents.js'
import { L2UnavailableError } from '../errors.js'

export interface L2GuardOptions {
  name: string
  timeout: number
  windowSize: number
  errorThresholdPercentage: number
  volumeThreshold: number
  resetTimeout: number
  onStateChange(state: CircuitState): void
}

/**
 * Every L2 call goes through here: `@ballast/resilience`'s circuit breaker with its per-call
 * timeout, so a hung Redis costs at most `timeout` and a dead one costs microseconds once
 * the breaker is open. Failures come out as {@link L2UnavailableError}.
 */
export class L2Guard {
  readonly #breaker: CircuitBreaker<[], never>

  constructor(options: L2GuardOptions) {
    this.#breaker = circuitBreaker({
      name: options.name,
      window: { type: 'count', size: options.windowSize },
      errorThresholdPercentage: options.errorThresholdPercentage,
      volumeThreshold: options.volumeThreshold,
      resetTimeout: options.resetTimeout,
      timeout: options.timeout,
    })
    this.#breaker.on('open', () => options.onStateChange('open'))
    this.#breaker.on('halfOpen', () => options.onStateChange('halfOpen'))
    this.#breaker.on('close', () => options.onStateChange('closed'))
  }

  get state(): CircuitState {
    return this.#breaker.state
  }

  /** Whether a call may be let through now (not open). */
  get available(): boolean {
    return this.#breaker.state !== 'open'
  }

  async run<T>(operation: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await this.#breaker.execute(fn)
    } catch (error) {
      const why = isResilienceError(error)
        ? error.code === 'E_RESILIENCE_BREAKER_OPEN'
          ? 'the circuit breaker is open'
          : error.message
        : error instanceof Error
          ? error.message
          : String(error)
      throw new L2UnavailableError(`L2 ${operation} failed: ${why}`, { cause: error })
    }
  }

  async close(): Promise<void> {
    await this.#breaker.close()
  }
}
