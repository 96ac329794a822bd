const BRAND = Symbol.for('ballast.error')

/** Options every {@link ShardingError} accepts. */
export interface ShardingErrorOptions {
  /** The error that caused this one. */
  cause?: unknown
  /**
   * Whether trying the same operation again can succeed.
   * @default false
   */
  retryable?: boolean
}

/**
 * Base class of every error `@ballast/sharding` throws. Check `code`, a stable string,
 * rather than the message; use {@link isShardingError} rather than `instanceof` so the
 * check holds when two copies of the package are installed.
 */
export class ShardingError extends Error {
  /** A stable identifier of the failure, such as `E_SHARD_INVALID_ARGUMENT`. */
  readonly code: string
  /** Whether trying the same operation again can succeed. */
  readonly retryable: boolean
  override name = 'ShardingError'

  constructor(code: string, message: string, options: ShardingErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
    this.retryable = options.retryable ?? false
    Object.defineProperty(this, BRAND, { value: '@ballast/sharding' })
  }
}

/**
 * An option or argument is invalid; the message names it, what was expected and what was
 * given. Thrown at construction, never after work has started.
 */
export class InvalidArgumentError extends ShardingError {
  override name = 'InvalidArgumentError'

  constructor(message: string, options: ShardingErrorOptions = {}) {
    super('E_SHARD_INVALID_ARGUMENT', message, options)
  }
}

/** Every error class of `@ballast/sharding`, by name. */
export const errors = { ShardingError, InvalidArgumentError } as const

/** Whether `error` was thrown by `@ballast/sharding` (any installed copy of it). */
export function isShardingError(error: unknown): error is ShardingError {
  return (
    typeof error === 'object' &&
    error !== null &&
    (error as Record<symbol, unknown>)[BRAND] === '@ballast/sharding'
  )
}
