const BRAND = Symbol.for('ballast.error')

/** Options every {@link MqError} accepts. */
export interface MqErrorOptions {
  /** The error that caused this one. */
  cause?: unknown
  /**
   * Whether trying the same operation again can succeed.
   * @default false
   */
  retryable?: boolean
}

/**
 * Base class of every error `@ballast/mq` throws. Check `code`, a stable string,
 * rather than the message; use {@link isMqError} rather than `instanceof` so the
 * check holds when two copies of the package are installed.
 */
export class MqError extends Error {
  /** A stable identifier of the failure, such as `E_MQ_INVALID_ARGUMENT`. */
  readonly code: string
  /** Whether trying the same operation again can succeed. */
  readonly retryable: boolean
  override name = 'MqError'

  constructor(code: string, message: string, options: MqErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
    this.retryable = options.retryable ?? false
    Object.defineProperty(this, BRAND, { value: '@ballast/mq' })
  }
}

/**
 * An option or argument is invalid; the message names it, what was expected and what was
 * given. Thrown at construction, never after work has started.
 */
export class InvalidArgumentError extends MqError {
  override name = 'InvalidArgumentError'

  constructor(message: string, options: MqErrorOptions = {}) {
    super('E_MQ_INVALID_ARGUMENT', message, options)
  }
}

/** Every error class of `@ballast/mq`, by name. */
export const errors = { MqError, InvalidArgumentError } as const

/** Whether `error` was thrown by `@ballast/mq` (any installed copy of it). */
export function isMqError(error: unknown): error is MqError {
  return (
    typeof error === 'object' &&
    error !== null &&
    (error as Record<symbol, unknown>)[BRAND] === '@ballast/mq'
  )
}
