import { type Checks, checks, type Duration, merge } from '@ballast/shared'
import { InvalidArgumentError } from './errors.js'

/** Options of {@link createRetryBudget}. */
export interface RetryBudgetOptions {
  /**
   * Retries allowed as a share of the requests over the window (Finagle and Linkerd use 0.2).
   * @default 0.2
   */
  ratio?: number
  /**
   * A floor of retries per second that is always allowed, so a quiet service can still retry.
   * @default 10
   */
  minPerSecond?: number
  /**
   * The window over which requests and retries are counted.
   * @default 10000
   */
  window?: Duration
  /**
   * Clock in milliseconds.
   * @default Date.now
   */
  clock?: () => number
}

/** The defaults of {@link RetryBudgetOptions}. */
export const DEFAULT_RETRY_BUDGET_OPTIONS: Readonly<Required<RetryBudgetOptions>> = Object.freeze({
  ratio: 0.2,
  minPerSecond: 10,
  window: 10_000,
  clock: Date.now,
})

const check: Checks = checks(InvalidArgumentError)

/** A retry budget's settings as it runs: the window in milliseconds. */
interface BudgetSettings {
  ratio: number
  minPerSecond: number
  windowMs: number
  clock: () => number
}

/** A snapshot of a {@link RetryBudget}. */
export interface RetryBudgetStats {
  /** First attempts counted in the window. */
  requests: number
  /** Retries granted in the window. */
  retries: number
  /** Retries refused since creation because the budget was spent. */
  refused: number
  /** Retries that would be granted now. */
  available: number
}

/**
 * Caps retries at a share of recent requests plus a small floor, so a failing backend does
 * not get a retry storm: with ratio 0.2 the load on a dead service grows by at most 20 %.
 */
export interface RetryBudget {
  /** Counts a first attempt (not a retry). */
  recordRequest(): void
  /** Takes one retry from the budget; false when it is spent (the caller must not retry). */
  tryRetry(): boolean
  /** Counters of the current window. */
  stats(): RetryBudgetStats
}

const SLOTS = 10

class SlidingBudget implements RetryBudget {
  readonly #ratio: number
  readonly #floor: number
  readonly #slotMs: number
  readonly #clock: () => number
  readonly #requests = new Float64Array(SLOTS)
  readonly #retries = new Float64Array(SLOTS)
  #slot = 0
  #slotStart = 0
  #refused = 0

  constructor(o: BudgetSettings) {
    this.#ratio = o.ratio
    this.#floor = (o.minPerSecond * o.windowMs) / 1000
    this.#slotMs = o.windowMs / SLOTS
    this.#clock = o.clock
    this.#slotStart = this.#clock()
  }

  #advance(): void {
    const now = this.#clock()
    let steps = Math.floor((now - this.#slotStart) / this.#slotMs)
    if (steps <= 0) return
    this.#slotStart += steps * this.#slotMs
    if (steps > SLOTS) steps = SLOTS
    for (let i = 0; i < steps; i++) {
      this.#slot = (this.#slot + 1) % SLOTS
      this.#requests[this.#slot] = 0
      this.#retries[this.#slot] = 0
    }
  }

  #sum(a: Float64Array): number {
    let s = 0
    for (let i = 0; i < SLOTS; i++) s += a[i]!
    return s
  }

  #available(): number {
    return Math.floor(
      this.#floor + this.#ratio * this.#sum(this.#requests) - this.#sum(this.#retries),
    )
  }

  recordRequest(): void {
    this.#advance()
    this.#requests[this.#slot]!++
  }

  tryRetry(): boolean {
    this.#advance()
    if (this.#available() < 1) {
      this.#refused++
      return false
    }
    this.#retries[this.#slot]!++
    return true
  }

  stats(): RetryBudgetStats {
    this.#advance()
    return {
      requests: this.#sum(this.#requests),
      retries: this.#sum(this.#retries),
      refused: this.#refused,
      available: Math.max(0, this.#available()),
    }
  }
}

/**
 * Creates a retry budget (Finagle's design): over a sliding window, retries may reach
 * `ratio` × first attempts plus `minPerSecond` × window seconds.
 *
 * @example
 * ```ts
 * import { createRetryBudget } from '@ballast/lb'
 *
 * const budget = createRetryBudget({ ratio: 0.2, minPerSecond: 10 })
 * budget.recordRequest()
 * if (failed && budget.tryRetry()) {
 *   // retry on another endpoint
 * }
 * ```
 */
export function createRetryBudget(options: RetryBudgetOptions = {}): RetryBudget {
  const o = merge(DEFAULT_RETRY_BUDGET_OPTIONS, options)
  check.number('ratio', o.ratio, { min: 0 })
  check.number('minPerSecond', o.minPerSecond, { min: 0 })
  const windowMs = check.duration('window', o.window, { positive: true })
  check.func('clock', o.clock)
  return new SlidingBudget({
    ratio: o.ratio,
    minPerSecond: o.minPerSecond,
    windowMs,
    clock: o.clock,
  })
}
