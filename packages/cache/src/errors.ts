const BRAND = Symbol.for('ballast.error')

/** Options every {@link CacheError} accepts. */
export interface CacheErrorOptions {
  /** The error that caused this one. */
  cause?: unknown
  /**
   * Whether trying the same operation again can succeed.
   * @default false
   */
  retryable?: boolean
}

/**
 * Base class of every error `@ballast/cache` throws. Check `code`, a stable string,
 * rather than the message; use {@link isCacheError} rather than `instanceof` so the
 * check holds when two copies of the package are installed.
 */
export class CacheError extends Error {
  /** A stable identifier of the failure, such as `E_CACHE_INVALID_ARGUMENT`. */
  readonly code: string
  /** Whether trying the same operation again can succeed. */
  readonly retryable: boolean
  override name = 'CacheError'

  constructor(code: string, message: string, options: CacheErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
    this.retryable = options.retryable ?? false
    Object.defineProperty(this, BRAND, { value: '@ballast/cache' })
  }
}

/**
 * An option or argument is invalid; the message names it, what was expected and what was
 * given. Thrown at construction, never after work has started.
 */
export class InvalidArgumentError extends CacheError {
  override name = 'InvalidArgumentError'

  constructor(message: string, options: CacheErrorOptions = {}) {
    super('E_CACHE_INVALID_ARGUMENT', message, options)
  }
}

/** Every error class of `@ballast/cache`, by name. */
export const errors = { CacheError, InvalidArgumentError } as const

/** Whether `error` was thrown by `@ballast/cache` (any installed copy of it). */
export function isCacheError(error: unknown): error is CacheError {
  return (
    typeof error === 'object' &&
    error !== null &&
    (error as Record<symbol, unknown>)[BRAND] === '@ballast/cache'
  )
}
