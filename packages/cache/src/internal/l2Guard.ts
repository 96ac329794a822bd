import { L2UnavailableError } from '../errors.js'

/** The breaker's state as `stats()` reports it. */
export type BreakerState = 'closed' | 'open' | 'half-open'

export interface L2GuardOptions {
  timeout: number
  failureThreshold: number
  halfOpenAfter: number
  onStateChange(state: BreakerState): void
}

/**
 * Every L2 call goes through here: a timeout (a hung Redis costs at most `timeout`) and a
 * circuit breaker (a dead Redis costs microseconds once it is open).
 */
export class L2Guard {
  readonly #options: L2GuardOptions
  #state: BreakerState = 'closed'
  #failures = 0
  #openedAt = 0
  #probing = false

  constructor(options: L2GuardOptions) {
    this.#options = options
  }

  get state(): BreakerState {
    if (this.#state === 'open' && Date.now() - this.#openedAt >= this.#options.halfOpenAfter)
      return 'half-open'
    return this.#state
  }

  /** Whether a call would be let through now (closed, or half-open with no probe running). */
  get available(): boolean {
    const state = this.state
    return state === 'closed' || (state === 'half-open' && !this.#probing)
  }

  async run<T>(operation: string, fn: () => Promise<T>): Promise<T> {
    const state = this.state
    let probe = false
    if (state === 'open' || (state === 'half-open' && this.#probing)) {
      throw new L2UnavailableError(`L2 ${operation} skipped: the circuit breaker is open`)
    }
    if (state === 'half-open') {
      probe = true
      this.#probing = true
      this.#set('half-open')
    }
    let timer: NodeJS.Timeout | undefined
    try {
      const result = await Promise.race([
        fn(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                new L2UnavailableError(
                  `L2 ${operation} timed out after ${this.#options.timeout} ms`,
                ),
              ),
            this.#options.timeout,
          )
        }),
      ])
      this.#failures = 0
      if (this.#state !== 'closed') this.#set('closed')
      return result
    } catch (error) {
      this.#failures++
      if (probe || this.#failures >= this.#options.failureThreshold) {
        this.#openedAt = Date.now()
        this.#set('open')
      }
      if (error instanceof L2UnavailableError) throw error
      throw new L2UnavailableError(
        `L2 ${operation} failed: ${error instanceof Error ? error.message : String(error)}`,
        {
          cause: error,
        },
      )
    } finally {
      clearTimeout(timer)
      if (probe) this.#probing = false
    }
  }

  #set(state: BreakerState): void {
    if (this.#state === state) return
    this.#state = state
    this.#options.onStateChange(state)
  }
}
