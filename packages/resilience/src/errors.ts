const BRAND = Symbol.for('ballast.error')

/** Options every {@link ResilienceError} accepts. */
export interface ResilienceErrorOptions {
  /** The error that caused this one. */
  cause?: unknown
  /**
   * Whether trying the same operation again can succeed.
   * @default false
   */
  retryable?: boolean
}

/**
 * Base class of every error `@ballast/resilience` throws. Check `code`, a stable string,
 * rather than the message; use {@link isResilienceError} rather than `instanceof` so the
 * check holds when two copies of the package are installed.
 */
export class ResilienceError extends Error {
  /** A stable identifier of the failure, such as `E_RESILIENCE_INVALID_ARGUMENT`. */
  readonly code: string
  /** Whether trying the same operation again can succeed. */
  readonly retryable: boolean
  override name = 'ResilienceError'

  constructor(code: string, message: string, options: ResilienceErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
    this.retryable = options.retryable ?? false
    Object.defineProperty(this, BRAND, { value: '@ballast/resilience' })
  }
}

/**
 * An option or argument is invalid; the message names it, what was expected and what was
 * given. Thrown at construction, never after work has started.
 */
export class InvalidArgumentError extends ResilienceError {
  override name = 'InvalidArgumentError'

  constructor(message: string, options: ResilienceErrorOptions = {}) {
    super('E_RESILIENCE_INVALID_ARGUMENT', message, options)
  }
}

/** Every error class of `@ballast/resilience`, by name. */
export const errors = { ResilienceError, InvalidArgumentError } as const

/** Whether `error` was thrown by `@ballast/resilience` (any installed copy of it). */
export function isResilienceError(error: unknown): error is ResilienceError {
  return (
    typeof error === 'object' &&
    error !== null &&
    (error as Record<symbol, unknown>)[BRAND] === '@ballast/resilience'
  )
}
