import { show } from '@ballast/shared'

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
  /** The class name, `LbError`. */
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
  /** The class name, `InvalidArgumentError`. */
  override name = 'InvalidArgumentError'

  constructor(message: string, options: LbErrorOptions = {}) {
    super('E_LB_INVALID_ARGUMENT', message, options)
  }
}

/** An endpoint or ring node was given a weight that is not a positive finite number. */
export class InvalidWeightError extends LbError {
  /** The class name, `InvalidWeightError`. */
  override name = 'InvalidWeightError'
  /** The id of the endpoint or node the weight was given for. */
  readonly id: string
  /** The weight that was rejected. */
  readonly weight: unknown

  constructor(id: string, weight: unknown, options: LbErrorOptions = {}) {
    super(
      'E_LB_INVALID_WEIGHT',
      `invalid weight for "${id}": expected a positive finite number, got ${show(weight)}`,
      options,
    )
    this.id = id
    this.weight = weight
  }
}

/** Two endpoints (or ring nodes) share the same id. */
export class DuplicateEndpointError extends LbError {
  /** The class name, `DuplicateEndpointError`. */
  override name = 'DuplicateEndpointError'
  /** The id that appears more than once. */
  readonly id: string

  constructor(id: string, options: LbErrorOptions = {}) {
    super(
      'E_LB_DUPLICATE_ENDPOINT',
      `duplicate endpoint "${id}": endpoint ids must be unique`,
      options,
    )
    this.id = id
  }
}

/** A balancer was created with no endpoints at all. */
export class EmptyEndpointsError extends LbError {
  /** The class name, `EmptyEndpointsError`. */
  override name = 'EmptyEndpointsError'

  constructor(what = 'endpoints', options: LbErrorOptions = {}) {
    super(
      'E_LB_EMPTY_ENDPOINTS',
      `invalid option "${what}": expected at least one endpoint, got none`,
      options,
    )
  }
}

/** An operation named an endpoint (or ring node) id the balancer does not know. */
export class UnknownEndpointError extends LbError {
  /** The class name, `UnknownEndpointError`. */
  override name = 'UnknownEndpointError'
  /** The id that was not found. */
  readonly id: string

  constructor(id: string, options: LbErrorOptions = {}) {
    super('E_LB_UNKNOWN_ENDPOINT', `unknown endpoint "${id}"`, options)
    this.id = id
  }
}

/** A lookup was made on a {@link HashRing} that has no nodes. */
export class EmptyRingError extends LbError {
  /** The class name, `EmptyRingError`. */
  override name = 'EmptyRingError'

  constructor(options: LbErrorOptions = {}) {
    super('E_LB_EMPTY_RING', 'the hash ring has no nodes', options)
  }
}

/**
 * No endpoint can take the request: every endpoint is unhealthy, ejected or excluded.
 * Thrown at once, without waiting; a later call may succeed once an endpoint recovers.
 */
export class NoEndpointAvailableError extends LbError {
  /** The class name, `NoEndpointAvailableError`. */
  override name = 'NoEndpointAvailableError'
  /** How many endpoints the balancer holds. */
  readonly total: number

  constructor(total: number, detail?: string, options: LbErrorOptions = {}) {
    super(
      'E_LB_NO_ENDPOINT_AVAILABLE',
      `no endpoint available: ${detail ?? (total === 0 ? 'the balancer has no endpoints' : `all ${total} endpoints are unhealthy, ejected or already tried`)}`,
      { retryable: true, ...options },
    )
    this.total = total
  }
}

/**
 * An upstream endpoint could not answer: the connection failed or broke, or it answered with
 * a status the caller treats as a failure, on every attempt the retry policy allowed.
 */
export class UpstreamError extends LbError {
  /** The class name, `UpstreamError`. */
  override name = 'UpstreamError'
  /** The id of the endpoint of the last attempt. */
  readonly endpoint: string
  /** How many attempts were made. */
  readonly attempts: number

  constructor(endpoint: string, attempts: number, message: string, options: LbErrorOptions = {}) {
    super('E_LB_UPSTREAM', message, { retryable: true, ...options })
    this.endpoint = endpoint
    this.attempts = attempts
  }
}

/** An upstream endpoint did not answer within the configured time. */
export class UpstreamTimeoutError extends LbError {
  /** The class name, `UpstreamTimeoutError`. */
  override name = 'UpstreamTimeoutError'
  /** The id of the endpoint of the last attempt. */
  readonly endpoint: string
  /** The limit that was exceeded, in milliseconds. */
  readonly timeoutMs: number

  constructor(endpoint: string, timeoutMs: number, options: LbErrorOptions = {}) {
    super('E_LB_UPSTREAM_TIMEOUT', `endpoint "${endpoint}" did not answer within ${timeoutMs} ms`, {
      retryable: true,
      ...options,
    })
    this.endpoint = endpoint
    this.timeoutMs = timeoutMs
  }
}

/**
 * Bytes from a client that the proxy will not act on: a `Host` header that is not
 * `host[:port]`, a request target that is malformed, leaves the root, hides a separator
 * behind percent-encoding, or names another host in absolute form. The proxy answers 400.
 */
export class InvalidRequestError extends LbError {
  /** The class name, `InvalidRequestError`. */
  override name = 'InvalidRequestError'
  /** Which part of the request was refused. */
  readonly part: 'host' | 'target'

  constructor(part: 'host' | 'target', message: string, options: LbErrorOptions = {}) {
    super('E_LB_INVALID_REQUEST', message, options)
    this.part = part
  }
}

/**
 * An object of the package (balancer, balanced client, health checker, reverse proxy) was
 * closed, or is closing, and was asked to do more work. Never retryable: the same call on the
 * same object fails the same way; create a new one instead.
 */
export class LbClosedError extends LbError {
  /** The class name, `LbClosedError`. */
  override name = 'LbClosedError'
  /** The closed object, such as `'balanced client'`. */
  readonly object: string
  /** The operation that was refused, such as `'request'`. */
  readonly operation: string

  constructor(object: string, operation: string, options: LbErrorOptions = {}) {
    super('E_LB_CLOSED', `${object} is closed: ${operation}() after close()`, {
      ...options,
      retryable: false,
    })
    this.object = object
    this.operation = operation
  }
}

/** @deprecated Renamed {@link LbClosedError}; this alias goes in 1.0. */
export const ClosedError = LbClosedError
/** @deprecated Renamed {@link LbClosedError}. */
export type ClosedError = LbClosedError

/** Every error class of `@ballast/lb`, by name. */
export const errors = {
  /** {@link LbError} */
  LbError,
  /** {@link InvalidArgumentError} */
  InvalidArgumentError,
  /** {@link InvalidWeightError} */
  InvalidWeightError,
  /** {@link DuplicateEndpointError} */
  DuplicateEndpointError,
  /** {@link EmptyEndpointsError} */
  EmptyEndpointsError,
  /** {@link UnknownEndpointError} */
  UnknownEndpointError,
  /** {@link EmptyRingError} */
  EmptyRingError,
  /** {@link NoEndpointAvailableError} */
  NoEndpointAvailableError,
  /** {@link UpstreamError} */
  UpstreamError,
  /** {@link UpstreamTimeoutError} */
  UpstreamTimeoutError,
  /** {@link InvalidRequestError} */
  InvalidRequestError,
  /** {@link LbClosedError} */
  LbClosedError,
} as const

/** Whether `error` was thrown by `@ballast/lb` (any installed copy of it). */
export function isLbError(error: unknown): error is LbError {
  return (
    typeof error === 'object' &&
    error !== null &&
    (error as Record<symbol, unknown>)[BRAND] === '@ballast/lb'
  )
}
