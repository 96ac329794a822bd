const BRAND = Symbol.for('ballast.error')

/** Options every {@link LbError} accepts. */
export interface LbErrorOptions {
  /** The error that caused this one. */
  cause?: unknown
  /**
   * Whether trying the same operation again can succeed.
   * @default false
   */
  retryable?: boolean
}

/**
 * Base class of every error `@ballast/lb` throws. Check `code`, a stable string,
 * rather than the message; use {@link isLbError} rather than `instanceof` so the
 * check holds when two copies of the package are installed.
 */
export class LbError extends Error {
  /** A stable identifier of the failure, such as `E_LB_INVALID_ARGUMENT`. */
  readonly code: string
  /** Whether trying the same operation again can succeed. */
  readonly retryable: boolean
  override name = 'LbError'

  constructor(code: string, message: string, options: LbErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
    this.retryable = options.retryable ?? false
    Object.defineProperty(this, BRAND, { value: '@ballast/lb' })
  }
}

/**
 * An option or argument is invalid; the message names it, what was expected and what was
 * given. Thrown at construction, never after work has started.
 */
export class InvalidArgumentError extends LbError {
  override name = 'InvalidArgumentError'

  constructor(message: string, options: LbErrorOptions = {}) {
    super('E_LB_INVALID_ARGUMENT', message, options)
  }
}

/** Every error class of `@ballast/lb`, by name. */
export const errors = { LbError, InvalidArgumentError } as const

/** Whether `error` was thrown by `@ballast/lb` (any installed copy of it). */
export function isLbError(error: unknown): error is LbError {
  return (
    typeof error === 'object' &&
    error !== null &&
    (error as Record<symbol, unknown>)[BRAND] === '@ballast/lb'
  )
}
