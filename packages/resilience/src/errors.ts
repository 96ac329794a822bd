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
  /** The class name, `'ResilienceError'`. */
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
  /** The class name, `'InvalidArgumentError'`. */
  override name = 'InvalidArgumentError'

  constructor(message: string, options: ResilienceErrorOptions = {}) {
    super('E_RESILIENCE_INVALID_ARGUMENT', message, options)
  }
}

/** A circuit breaker is open (or half-open with its probes taken) and refused the call without running it. */
export class BreakerOpenError extends ResilienceError {
  /** The class name, `'BreakerOpenError'`. */
  override name = 'BreakerOpenError'
  /** The name of the breaker that refused the call. */
  readonly breaker: string

  constructor(breaker: string, options: ResilienceErrorOptions = {}) {
    // Retryable: the call was refused without being tried, and a later attempt (after the
    // breaker's resetTimeout) can succeed. A delayed retry queue or an idempotency store
    // must not treat it as a permanent failure.
    super('E_RESILIENCE_BREAKER_OPEN', `circuit breaker "${breaker}" is open`, {
      retryable: true,
      ...options,
    })
    this.breaker = breaker
  }
}

/** The work took longer than the configured time; its `AbortSignal` was aborted. */
export class TimeoutError extends ResilienceError {
  /** The class name, `'TimeoutError'`. */
  override name = 'TimeoutError'
  /** The time limit that was exceeded, in milliseconds. */
  readonly timeoutMs: number

  constructor(timeoutMs: number, options: ResilienceErrorOptions = {}) {
    super('E_RESILIENCE_TIMEOUT', `operation timed out after ${timeoutMs} ms`, {
      retryable: true,
      ...options,
    })
    this.timeoutMs = timeoutMs
  }
}

/** A bulkhead is at its concurrency limit and its queue is full; the work was not started. */
export class BulkheadRejectedError extends ResilienceError {
  /** The class name, `'BulkheadRejectedError'`. */
  override name = 'BulkheadRejectedError'
  /** Calls running when the call was refused. */
  readonly active: number
  /** Calls queued when the call was refused. */
  readonly queued: number

  constructor(active: number, queued: number, options: ResilienceErrorOptions = {}) {
    super(
      'E_RESILIENCE_BULKHEAD_REJECTED',
      `bulkhead is full (${active} running, ${queued} queued)`,
      options,
    )
    this.active = active
    this.queued = queued
  }
}

/** The caller's `AbortSignal` was aborted; the work was stopped or never started. */
export class AbortedError extends ResilienceError {
  /** The class name, `'AbortedError'`. */
  override name = 'AbortedError'

  constructor(options: ResilienceErrorOptions = {}) {
    super('E_RESILIENCE_ABORTED', 'operation was aborted', options)
  }
}

/** A rate limiter refused the call; retry after `retryAfterMs`. */
export class RateLimitedError extends ResilienceError {
  /** The class name, `'RateLimitedError'`. */
  override name = 'RateLimitedError'
  /** How long until a call of the same cost would be allowed, in milliseconds. */
  readonly retryAfterMs: number
  /** The key that was limited. */
  readonly key: string

  constructor(key: string, retryAfterMs: number, options: ResilienceErrorOptions = {}) {
    super(
      'E_RESILIENCE_RATE_LIMITED',
      `rate limit exceeded for "${key}", retry in ${retryAfterMs} ms`,
      {
        retryable: true,
        ...options,
      },
    )
    this.key = key
    this.retryAfterMs = retryAfterMs
  }
}

/** An idempotency key is required but missing, or is malformed (HTTP 400). */
export class IdempotencyKeyInvalidError extends ResilienceError {
  /** The class name, `'IdempotencyKeyInvalidError'`. */
  override name = 'IdempotencyKeyInvalidError'

  constructor(message: string, options: ResilienceErrorOptions = {}) {
    super('E_RESILIENCE_IDEMPOTENCY_KEY_INVALID', message, options)
  }
}

/**
 * An idempotency key was to be scoped (to a user, tenant or API key) but the scope value is
 * missing or empty (HTTP 400); nothing ran. Keys are never shared between callers by
 * accident: without a scope one caller could replay or block another's request.
 */
export class IdempotencyScopeMissingError extends ResilienceError {
  /** The class name, `'IdempotencyScopeMissingError'`. */
  override name = 'IdempotencyScopeMissingError'

  constructor(message: string, options: ResilienceErrorOptions = {}) {
    super('E_RESILIENCE_IDEMPOTENCY_SCOPE_MISSING', message, options)
  }
}

/** The idempotency key was used before with a different request fingerprint (HTTP 422); nothing ran. */
export class IdempotencyMismatchError extends ResilienceError {
  /** The class name, `'IdempotencyMismatchError'`. */
  override name = 'IdempotencyMismatchError'
  /** The idempotency key. */
  readonly key: string

  constructor(key: string, options: ResilienceErrorOptions = {}) {
    super(
      'E_RESILIENCE_IDEMPOTENCY_MISMATCH',
      `idempotency key "${key}" was used with a different request`,
      options,
    )
    this.key = key
  }
}

/** Another holder is working on the same idempotency key (HTTP 409); nothing ran. */
export class IdempotencyInFlightError extends ResilienceError {
  /** The class name, `'IdempotencyInFlightError'`. */
  override name = 'IdempotencyInFlightError'
  /** The idempotency key. */
  readonly key: string
  /** How long until the holder's lease runs out, in milliseconds, if it is not renewed. */
  readonly retryAfterMs: number

  constructor(key: string, retryAfterMs: number, options: ResilienceErrorOptions = {}) {
    super(
      'E_RESILIENCE_IDEMPOTENCY_IN_FLIGHT',
      `a request with idempotency key "${key}" is already in flight`,
      { retryable: true, ...options },
    )
    this.key = key
    this.retryAfterMs = retryAfterMs
  }
}

/**
 * A holder tried to store or release a result with a fencing token that is no longer current:
 * its lease ran out and another holder claimed the key. The write was refused.
 */
export class IdempotencyFencedError extends ResilienceError {
  /** The class name, `'IdempotencyFencedError'`. */
  override name = 'IdempotencyFencedError'
  /** The idempotency key. */
  readonly key: string
  /** The stale fencing token that was refused. */
  readonly token: number

  constructor(key: string, token: number, options: ResilienceErrorOptions = {}) {
    super(
      'E_RESILIENCE_IDEMPOTENCY_FENCED',
      `write for idempotency key "${key}" with fencing token ${token} was refused: a newer holder owns it`,
      options,
    )
    this.key = key
    this.token = token
  }
}

/** The idempotency store (Redis) did not answer; the work was not run (fail closed). */
export class IdempotencyUnavailableError extends ResilienceError {
  /** The class name, `'IdempotencyUnavailableError'`. */
  override name = 'IdempotencyUnavailableError'

  constructor(message: string, options: ResilienceErrorOptions = {}) {
    super('E_RESILIENCE_IDEMPOTENCY_UNAVAILABLE', message, { retryable: true, ...options })
  }
}

/**
 * The idempotency store's `replication` option asked for `WAIT` to see a number of replicas
 * acknowledge a claim or a stored result, and fewer did within its timeout: the write reached
 * the master only, and a failover now could lose it. Retryable. After a claim the work was
 * not run and the claim was given back (fail closed); after `complete` or `fail` the work is
 * done and its record is on the master, not known to be on a replica.
 */
export class IdempotencyNotReplicatedError extends ResilienceError {
  /** The class name, `'IdempotencyNotReplicatedError'`. */
  override name = 'IdempotencyNotReplicatedError'
  /** Replicas that acknowledged the write within the timeout. */
  readonly acknowledged: number
  /** Replicas asked for (the `replication.replicas` option). */
  readonly required: number

  constructor(
    message: string,
    acknowledged: number,
    required: number,
    options: ResilienceErrorOptions = {},
  ) {
    super('E_RESILIENCE_IDEMPOTENCY_NOT_REPLICATED', message, { retryable: true, ...options })
    this.acknowledged = acknowledged
    this.required = required
  }
}

/**
 * The shared rate limiter's Redis did not answer within `commandTimeout` or failed the call
 * (a cut connection, a Cluster slot with no master during a failover): no decision was made.
 * Retryable. Whether the call then goes ahead (fail open) or not (fail closed) is the caller's
 * choice: catch it, or put the limiter behind a breaker with a fallback.
 */
export class RateLimiterUnavailableError extends ResilienceError {
  /** The class name, `'RateLimiterUnavailableError'`. */
  override name = 'RateLimiterUnavailableError'

  constructor(message: string, options: ResilienceErrorOptions = {}) {
    super('E_RESILIENCE_RATE_LIMITER_UNAVAILABLE', message, { retryable: true, ...options })
  }
}

/**
 * A completed idempotent operation had failed permanently; its stored failure is replayed as
 * this error without running the work again.
 */
export class IdempotentFailureError extends ResilienceError {
  /** The class name, `'IdempotentFailureError'`. */
  override name = 'IdempotentFailureError'
  /** The stored error's `name`. */
  readonly originalName: string
  /** The stored error's `code`, when it had one. */
  readonly originalCode: string | undefined

  constructor(
    message: string,
    originalName: string,
    originalCode: string | undefined,
    options: ResilienceErrorOptions = {},
  ) {
    super('E_RESILIENCE_IDEMPOTENT_FAILURE', message, options)
    this.originalName = originalName
    this.originalCode = originalCode
  }
}

/**
 * An object of the package (circuit breaker, rate limiter, idempotency store, degrader) was
 * closed, or is closing, and was asked to do more work. Never retryable, so `retry()`
 * gives up at once: the same call on the same object fails the same way.
 */
export class ResilienceClosedError extends ResilienceError {
  /** The class name, `'ResilienceClosedError'`. */
  override name = 'ResilienceClosedError'
  /** The closed object, such as `'idempotency store'`. */
  readonly object: string
  /** The operation that was refused, such as `'claim'`. */
  readonly operation: string

  constructor(object: string, operation: string, options: ResilienceErrorOptions = {}) {
    super('E_RESILIENCE_CLOSED', `${object} is closed: ${operation}() after close()`, {
      ...options,
      retryable: false,
    })
    this.object = object
    this.operation = operation
  }
}

/** Every error class of `@ballast/resilience`, by name. */
export const errors = {
  /** {@link ResilienceError} */
  ResilienceError,
  /** {@link InvalidArgumentError} */
  InvalidArgumentError,
  /** {@link BreakerOpenError} */
  BreakerOpenError,
  /** {@link TimeoutError} */
  TimeoutError,
  /** {@link BulkheadRejectedError} */
  BulkheadRejectedError,
  /** {@link AbortedError} */
  AbortedError,
  /** {@link RateLimitedError} */
  RateLimitedError,
  /** {@link RateLimiterUnavailableError} */
  RateLimiterUnavailableError,
  /** {@link IdempotencyKeyInvalidError} */
  IdempotencyKeyInvalidError,
  /** {@link IdempotencyScopeMissingError} */
  IdempotencyScopeMissingError,
  /** {@link IdempotencyMismatchError} */
  IdempotencyMismatchError,
  /** {@link IdempotencyInFlightError} */
  IdempotencyInFlightError,
  /** {@link IdempotencyFencedError} */
  IdempotencyFencedError,
  /** {@link IdempotencyUnavailableError} */
  IdempotencyUnavailableError,
  /** {@link IdempotencyNotReplicatedError} */
  IdempotencyNotReplicatedError,
  /** {@link IdempotentFailureError} */
  IdempotentFailureError,
  /** {@link ResilienceClosedError} */
  ResilienceClosedError,
} as const

/** Whether `error` was thrown by `@ballast/resilience` (any installed copy of it). */
export function isResilienceError(error: unknown): error is ResilienceError {
  return (
    typeof error === 'object' &&
    error !== null &&
    (error as Record<symbol, unknown>)[BRAND] === '@ballast/resilience'
  )
}
