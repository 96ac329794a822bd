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
  /** The class name, `'CacheError'`. */
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
  /** The class name, `'InvalidArgumentError'`. */
  override name = 'InvalidArgumentError'

  constructor(message: string, options: CacheErrorOptions = {}) {
    super('E_CACHE_INVALID_ARGUMENT', message, options)
  }
}

/**
 * A value could not be serialized (a function, a symbol, a class instance the serializer
 * does not know): nothing was written to L1 or L2.
 */
export class SerializationError extends CacheError {
  /** The class name, `'SerializationError'`. */
  override name = 'SerializationError'

  constructor(message: string, options: CacheErrorOptions = {}) {
    super('E_CACHE_SERIALIZATION', message, options)
  }
}

/**
 * A loader did not finish within the hard timeout and no stale value was available to
 * serve instead. The loader is not cancelled: when it finishes, its value is still cached.
 */
export class LoaderTimeoutError extends CacheError {
  /** The class name, `'LoaderTimeoutError'`. */
  override name = 'LoaderTimeoutError'

  constructor(message: string, options: CacheErrorOptions = {}) {
    super('E_CACHE_LOADER_TIMEOUT', message, { retryable: true, ...options })
  }
}

/**
 * Redis (L2) did not answer in time, refused, or its circuit breaker is open. The cache
 * turns this into a miss, a stale value or a deferred invalidation wherever it can; it
 * reaches the caller only through events and from {@link CacheError} `cause` chains.
 */
export class L2UnavailableError extends CacheError {
  /** The class name, `'L2UnavailableError'`. */
  override name = 'L2UnavailableError'

  constructor(message: string, options: CacheErrorOptions = {}) {
    super('E_CACHE_L2_UNAVAILABLE', message, { retryable: true, ...options })
  }
}

/**
 * An L2 value could not be decoded: not an envelope of this cache, written with another
 * serializer, or a payload the serializer rejects. Never thrown to callers: the read is a
 * miss and the error comes with the `decode-failed` event.
 */
export class DecodeError extends CacheError {
  /** The class name, `'DecodeError'`. */
  override name = 'DecodeError'

  constructor(message: string, options: CacheErrorOptions = {}) {
    super('E_CACHE_DECODE', message, options)
  }
}

/**
 * The cache was closed, or is closing, and was asked to do more work. Never retryable: the same
 * call on the same cache fails the same way, so `retry()` of `@ballast/resilience` gives up at
 * once.
 */
export class CacheClosedError extends CacheError {
  /** The class name, `'CacheClosedError'`. */
  override name = 'CacheClosedError'
  /** The closed object, `'cache'`. */
  readonly object: string
  /** The operation that was refused, such as `'get'`. */
  readonly operation: string

  constructor(object: string, operation: string, options: CacheErrorOptions = {}) {
    super('E_CACHE_CLOSED', `${object} is closed: ${operation}() after close()`, {
      ...options,
      retryable: false,
    })
    this.object = object
    this.operation = operation
  }
}

/** Every error class of `@ballast/cache`, by name. */
export const errors = {
  /** {@link CacheError} */
  CacheError,
  /** {@link InvalidArgumentError} */
  InvalidArgumentError,
  /** {@link SerializationError} */
  SerializationError,
  /** {@link LoaderTimeoutError} */
  LoaderTimeoutError,
  /** {@link L2UnavailableError} */
  L2UnavailableError,
  /** {@link CacheClosedError} */
  CacheClosedError,
  /** {@link DecodeError} */
  DecodeError,
} as const

/** Whether `error` was thrown by `@ballast/cache` (any installed copy of it). */
export function isCacheError(error: unknown): error is CacheError {
  return (
    typeof error === 'object' &&
    error !== null &&
    (error as Record<symbol, unknown>)[BRAND] === '@ballast/cache'
  )
}
