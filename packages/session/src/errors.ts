const BRAND = Symbol.for('ballast.error')

/** Options every {@link SessionError} accepts. */
export interface SessionErrorOptions {
  /** The error that caused this one. */
  cause?: unknown
  /**
   * Whether trying the same operation again can succeed.
   * @default false
   */
  retryable?: boolean
}

/**
 * Base class of every error `@ballast/session` throws. Check `code`, a stable string,
 * rather than the message; use {@link isSessionError} rather than `instanceof` so the
 * check holds when two copies of the package are installed.
 */
export class SessionError extends Error {
  /** A stable identifier of the failure, such as `E_SESSION_INVALID_ARGUMENT`. */
  readonly code: string
  /** Whether trying the same operation again can succeed. */
  readonly retryable: boolean
  /** The class name, `SessionError`. */
  override name = 'SessionError'

  constructor(code: string, message: string, options: SessionErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
    this.retryable = options.retryable ?? false
    Object.defineProperty(this, BRAND, { value: '@ballast/session' })
  }
}

/**
 * An option or argument is invalid; the message names it, what was expected and what was
 * given. Thrown at construction, never after work has started.
 */
export class InvalidArgumentError extends SessionError {
  /** The class name, `InvalidArgumentError`. */
  override name = 'InvalidArgumentError'

  constructor(message: string, options: SessionErrorOptions = {}) {
    super('E_SESSION_INVALID_ARGUMENT', message, options)
  }
}

/**
 * Redis did not answer in time or refused the command: the session could not be read or
 * written. Retryable; the middleware turns it into a `503` (or your `onUnavailable` handler).
 */
export class SessionUnavailableError extends SessionError {
  /** The class name, `SessionUnavailableError`. */
  override name = 'SessionUnavailableError'

  constructor(message: string, options: SessionErrorOptions = {}) {
    super('E_SESSION_UNAVAILABLE', message, { retryable: true, ...options })
  }
}

/**
 * The operation needs a live session and the id names none (it expired, was destroyed or
 * never existed).
 */
export class SessionNotFoundError extends SessionError {
  /** The class name, `SessionNotFoundError`. */
  override name = 'SessionNotFoundError'

  constructor(
    message = 'the session does not exist (expired, destroyed or never created)',
    options: SessionErrorOptions = {},
  ) {
    super('E_SESSION_NOT_FOUND', message, options)
  }
}

/** The operation needs a logged-in session (one with a `userId`), e.g. issuing an SSO ticket. */
export class SessionNotLoggedInError extends SessionError {
  /** The class name, `SessionNotLoggedInError`. */
  override name = 'SessionNotLoggedInError'

  constructor(
    message = 'the session has no user: log in (regenerate with a userId) first',
    options: SessionErrorOptions = {},
  ) {
    super('E_SESSION_NOT_LOGGED_IN', message, options)
  }
}

/**
 * The session store was closed, or is closing, and was asked to do more work (through the
 * store or a request's session). Never retryable: the same call on the same store fails the
 * same way, so `retry()` of `@ballast/resilience` gives up at once.
 */
export class SessionClosedError extends SessionError {
  /** The class name, `SessionClosedError`. */
  override name = 'SessionClosedError'
  /** The closed object, `'session store'`. */
  readonly object: string
  /** The operation that was refused, such as `'load'`. */
  readonly operation: string

  constructor(object: string, operation: string, options: SessionErrorOptions = {}) {
    super('E_SESSION_CLOSED', `${object} is closed: ${operation}() after close()`, {
      ...options,
      retryable: false,
    })
    this.object = object
    this.operation = operation
  }
}

/** Every error class of `@ballast/session`, by name. */
export const errors = {
  /** {@link SessionError} */
  SessionError,
  /** {@link InvalidArgumentError} */
  InvalidArgumentError,
  /** {@link SessionUnavailableError} */
  SessionUnavailableError,
  /** {@link SessionNotFoundError} */
  SessionNotFoundError,
  /** {@link SessionNotLoggedInError} */
  SessionNotLoggedInError,
  /** {@link SessionClosedError} */
  SessionClosedError,
} as const

/** Whether `error` was thrown by `@ballast/session` (any installed copy of it). */
export function isSessionError(error: unknown): error is SessionError {
  return (
    typeof error === 'object' &&
    error !== null &&
    (error as Record<symbol, unknown>)[BRAND] === '@ballast/session'
  )
}
