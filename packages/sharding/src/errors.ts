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
  /**
   * A stable identifier of the failure, `E_SHARD_` and the class name without `Error` (and
   * without a leading `Shard`) in SCREAMING_SNAKE: `E_SHARD_INVALID_ARGUMENT`.
   */
  readonly code: string
  /** Whether trying the same operation again can succeed. */
  readonly retryable: boolean
  /** The class name, `ShardingError`. */
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
  /** The class name, `InvalidArgumentError`. */
  override name = 'InvalidArgumentError'

  constructor(message: string, options: ShardingErrorOptions = {}) {
    super('E_SHARD_INVALID_ARGUMENT', message, options)
  }
}

/**
 * A statement that must be routed by a shard key was given none (`undefined`, `null`, an
 * empty string or a non-finite number). The router never guesses a shard.
 */
export class ShardKeyMissingError extends ShardingError {
  /** The class name, `ShardKeyMissingError`. */
  override name = 'ShardKeyMissingError'

  constructor(
    message = 'a shard key is required: got none',
    options: Pick<ShardingErrorOptions, 'cause'> = {},
  ) {
    super('E_SHARD_KEY_MISSING', message, { cause: options.cause })
  }
}

/** A shard id, slot or shard key names no shard of this router. */
export class UnknownShardError extends ShardingError {
  /** The class name, `UnknownShardError`. */
  override name = 'UnknownShardError'
  /** The shard id or slot that was asked for. */
  readonly shard: string

  constructor(shard: string, options: Pick<ShardingErrorOptions, 'cause'> = {}) {
    super('E_SHARD_UNKNOWN_SHARD', `unknown shard "${shard}"`, { cause: options.cause })
    this.shard = shard
  }
}

/**
 * A statement was refused before it was sent: more than one statement in one string, or an
 * identifier that is not a plain SQL name. Values belong in placeholders.
 */
export class UnsafeStatementError extends ShardingError {
  /** The class name, `UnsafeStatementError`. */
  override name = 'UnsafeStatementError'

  constructor(message: string, options: Pick<ShardingErrorOptions, 'cause'> = {}) {
    super('E_SHARD_UNSAFE_STATEMENT', message, { cause: options.cause })
  }
}

/** A causal token (from a cookie or header) could not be parsed. */
export class InvalidCausalTokenError extends ShardingError {
  /** The class name, `InvalidCausalTokenError`. */
  override name = 'InvalidCausalTokenError'

  constructor(message: string, options: Pick<ShardingErrorOptions, 'cause'> = {}) {
    super('E_SHARD_INVALID_CAUSAL_TOKEN', message, { cause: options.cause })
  }
}

/**
 * A shard's server could not be reached or dropped the connection, or its breaker is open.
 * Retryable: the same call can succeed once the server is back. For a write, the statement
 * may or may not have been applied if the connection dropped after it was sent.
 */
export class ShardUnavailableError extends ShardingError {
  /** The class name, `ShardUnavailableError`. */
  override name = 'ShardUnavailableError'
  /** The shard that failed. */
  readonly shard: string
  /** Which server of the shard failed. */
  readonly role: 'primary' | 'replica'

  constructor(
    shard: string,
    role: 'primary' | 'replica',
    message: string,
    options: ShardingErrorOptions = {},
  ) {
    super('E_SHARD_UNAVAILABLE', message, { retryable: true, ...options })
    this.shard = shard
    this.role = role
  }
}

/**
 * A statement did not complete within its timeout. Retryable; for a write the statement may
 * or may not have been applied.
 */
export class ShardTimeoutError extends ShardingError {
  /** The class name, `ShardTimeoutError`. */
  override name = 'ShardTimeoutError'
  /** The shard that did not answer in time. */
  readonly shard: string
  /** The timeout that fired, in milliseconds. */
  readonly timeoutMs: number

  constructor(shard: string, timeoutMs: number, options: ShardingErrorOptions = {}) {
    super('E_SHARD_TIMEOUT', `shard "${shard}" did not answer within ${timeoutMs} ms`, {
      retryable: true,
      ...options,
    })
    this.shard = shard
    this.timeoutMs = timeoutMs
  }
}

/** One shard's failure inside a scatter-gather call. */
export interface ShardFailure {
  /** The shard that failed. */
  shard: string
  /** Why it failed. */
  error: unknown
}

/**
 * A scatter-gather call ({@link ShardRouter.all}) failed on at least one shard and the policy
 * was `'error'`. `failures` lists every shard that failed.
 */
export class ScatterGatherError extends ShardingError {
  /** The class name, `ScatterGatherError`. */
  override name = 'ScatterGatherError'
  /** Every shard that failed, with its error. */
  readonly failures: readonly ShardFailure[]

  /**
   * @param failures every shard that failed, with its error.
   * @param options `cause` defaults to the first shard's error; retryable when every shard's error is.
   */
  constructor(
    failures: readonly ShardFailure[],
    options: Pick<ShardingErrorOptions, 'cause'> = {},
  ) {
    super(
      'E_SHARD_SCATTER_GATHER',
      `scatter-gather failed on ${failures.length} shard(s): ${failures.map((f) => f.shard).join(', ')}`,
      {
        retryable: failures.every((f) => isShardingError(f.error) && f.error.retryable),
        cause: options.cause ?? failures[0]?.error,
      },
    )
    this.failures = failures
  }
}

/**
 * An object of the package (the shard router) was closed, or is closing, and was asked to do
 * more work. Never retryable: the same call on the same object fails the same way; create a new
 * one instead.
 */
export class ShardingClosedError extends ShardingError {
  /** The class name, `ShardingClosedError`. */
  override name = 'ShardingClosedError'
  /** The closed object, such as `'shard router'`. */
  readonly object: string
  /** The operation that was refused, such as `'query'`. */
  readonly operation: string

  constructor(object: string, operation: string, options: ShardingErrorOptions = {}) {
    super('E_SHARD_CLOSED', `${object} is closed: ${operation}() after close()`, {
      ...options,
      retryable: false,
    })
    this.object = object
    this.operation = operation
  }
}

/** @deprecated Renamed {@link ShardingClosedError} (code `E_SHARD_CLOSED`); this alias goes in 1.0. */
export const RouterClosedError = ShardingClosedError
/** @deprecated Renamed {@link ShardingClosedError}. */
export type RouterClosedError = ShardingClosedError

/** The id generator's clock went backwards further than it will wait, or its sequence ran out of time bits. */
export class ClockMovedBackwardsError extends ShardingError {
  /** The class name, `ClockMovedBackwardsError`. */
  override name = 'ClockMovedBackwardsError'

  /** How far the clock is behind the last millisecond ids were made in, in ms. */
  readonly byMs: number

  constructor(byMs: number, message?: string, options: Pick<ShardingErrorOptions, 'cause'> = {}) {
    super(
      'E_SHARD_CLOCK_MOVED_BACKWARDS',
      message ?? `the clock moved backwards by ${byMs} ms; refusing to generate ids`,
      { retryable: true, cause: options.cause },
    )
    this.byMs = byMs
  }
}

/**
 * A write reached a shard that no longer owns its slot: the slot's fence row on that shard says
 * the slot has moved (or is being cut over) to another shard. Retryable: the router refreshes its
 * slot map and sends the statement to the new owner; the refused statement was rolled back, so
 * it never applied here.
 */
export class SlotMovedError extends ShardingError {
  /** The class name, `SlotMovedError`. */
  override name = 'SlotMovedError'
  /** The slot of the write. */
  readonly slot: number
  /** The shard that refused it (the slot's old owner). */
  readonly shard: string

  constructor(slot: number, shard: string, options: ShardingErrorOptions = {}) {
    super(
      'E_SHARD_SLOT_MOVED',
      `slot ${slot} has moved off shard "${shard}": the write was refused there`,
      { retryable: true, ...options },
    )
    this.slot = slot
    this.shard = shard
  }
}

/**
 * The slot map store could not be read when the router needed it: the router's map is older
 * than the store's `lease` and the refresh failed (the metadata server is unreachable or slow).
 * Retryable: nothing was sent to any shard.
 */
export class SlotMapUnavailableError extends ShardingError {
  /** The class name, `SlotMapUnavailableError`. */
  override name = 'SlotMapUnavailableError'

  constructor(message: string, options: ShardingErrorOptions = {}) {
    super('E_SHARD_SLOT_MAP_UNAVAILABLE', message, { retryable: true, ...options })
  }
}

/**
 * A change to the slot map lost a race: the map's version moved since it was read (another
 * mover, or an operator, changed it). Retryable after reloading the map.
 */
export class SlotMapConflictError extends ShardingError {
  /** The class name, `SlotMapConflictError`. */
  override name = 'SlotMapConflictError'
  /** The version the change was based on. */
  readonly expectedVersion: number

  constructor(expectedVersion: number, options: ShardingErrorOptions = {}) {
    super(
      'E_SHARD_SLOT_MAP_CONFLICT',
      `the slot map changed since version ${expectedVersion}: reload it and try again`,
      { retryable: true, ...options },
    )
    this.expectedVersion = expectedVersion
  }
}

/**
 * The slot map read from the store, or a map or range given to a call, is not a valid map:
 * ranges that do not cover every slot once, an unknown shard id, a malformed row. Not
 * retryable: someone must fix the map.
 */
export class InvalidSlotMapError extends ShardingError {
  /** The class name, `InvalidSlotMapError`. */
  override name = 'InvalidSlotMapError'

  constructor(message: string, options: Pick<ShardingErrorOptions, 'cause'> = {}) {
    super('E_SHARD_INVALID_SLOT_MAP', message, { cause: options.cause })
  }
}

/**
 * The rows of a moving range differ between the source and the target at the cut-over (row
 * count or checksum of a table): the cut-over was rolled back and the source still owns the
 * range. Not retryable as is: something other than the routers wrote the target, or a table's
 * values do not survive the copy; find out before running the cut-over again.
 */
export class SlotCopyMismatchError extends ShardingError {
  /** The class name, `SlotCopyMismatchError`. */
  override name = 'SlotCopyMismatchError'
  /** The table whose rows differ. */
  readonly table: string

  constructor(table: string, message: string, options: Pick<ShardingErrorOptions, 'cause'> = {}) {
    super('E_SHARD_SLOT_COPY_MISMATCH', message, { cause: options.cause })
    this.table = table
  }
}

/**
 * A slot mover step gave up on a shard that stopped answering: it retried with backoff for
 * `stallTimeout` (the mover's option). Retryable: run the step again once the shard is back, it
 * resumes from its kept progress.
 */
export class SlotMoveStalledError extends ShardingError {
  /** The class name, `SlotMoveStalledError`. */
  override name = 'SlotMoveStalledError'
  /** The shard that did not answer. */
  readonly shard: string
  /** The step that gave up, such as `'copy'`. */
  readonly operation: string
  /** How long the step retried, in milliseconds. */
  readonly stalledMs: number

  constructor(
    shard: string,
    operation: string,
    stalledMs: number,
    options: ShardingErrorOptions = {},
  ) {
    super(
      'E_SHARD_SLOT_MOVE_STALLED',
      `shard "${shard}" did not answer the slot mover's ${operation}() for ${stalledMs} ms (stallTimeout): run it again once the shard is back`,
      { retryable: true, ...options },
    )
    this.shard = shard
    this.operation = operation
    this.stalledMs = stalledMs
  }
}

/**
 * Another slot mover is running a step of a move off the same source shard (one move per
 * source, its steps one at a time): this step did not start. Retryable once the other step ends;
 * a mover process that died releases it at once (the lock is its connection's).
 */
export class SlotMoveBusyError extends ShardingError {
  /** The class name, `SlotMoveBusyError`. */
  override name = 'SlotMoveBusyError'
  /** The source shard whose move lock is held. */
  readonly shard: string
  /** The step that was refused, such as `'copy'`. */
  readonly operation: string

  constructor(shard: string, operation: string, options: ShardingErrorOptions = {}) {
    super(
      'E_SHARD_SLOT_MOVE_BUSY',
      `another slot mover is running a step of a move off shard "${shard}": ${operation}() did not start`,
      { retryable: true, ...options },
    )
    this.shard = shard
    this.operation = operation
  }
}

/**
 * A resharding run is in the way: `start()` while another run is not over (finish it with
 * `resume()` or `abort()`), or `resume()`/`abort()` of a run that another live process is
 * running (its heartbeat is fresh). Retryable once that run ends or its process stops.
 */
export class ReshardBusyError extends ShardingError {
  /** The class name, `ReshardBusyError`. */
  override name = 'ReshardBusyError'
  /** The id of the run in the way. */
  readonly runId: number

  constructor(runId: number, message: string, options: ShardingErrorOptions = {}) {
    super('E_SHARD_RESHARD_BUSY', message, { retryable: true, ...options })
    this.runId = runId
  }
}

/**
 * A resharding operation does not fit the state of the run: `resume()` or `abort()` with no run
 * in progress, `pause()` of a run that is not running. Not retryable as is: read `status()`.
 */
export class ReshardStateError extends ShardingError {
  /** The class name, `ReshardStateError`. */
  override name = 'ReshardStateError'
  /** The state of the run (`'none'`: there is no run in progress). */
  readonly state: string

  constructor(state: string, message: string, options: Pick<ShardingErrorOptions, 'cause'> = {}) {
    super('E_SHARD_RESHARD_STATE', message, { cause: options.cause })
    this.state = state
  }
}

/** Every error class of `@ballast/sharding`, by name. */
export const errors = {
  /** Base class of every error of the package. See {@link ShardingError}. */
  ShardingError,
  /** An option or argument is invalid. See {@link InvalidArgumentError}. */
  InvalidArgumentError,
  /** A statement that needs a shard key was given none. See {@link ShardKeyMissingError}. */
  ShardKeyMissingError,
  /** A shard id, slot or key names no shard. See {@link UnknownShardError}. */
  UnknownShardError,
  /** A statement was refused before it was sent (several statements, unsafe identifier). See {@link UnsafeStatementError}. */
  UnsafeStatementError,
  /** A causal token could not be parsed. See {@link InvalidCausalTokenError}. */
  InvalidCausalTokenError,
  /** A server could not be reached, dropped the connection, or its breaker is open (retryable). See {@link ShardUnavailableError}. */
  ShardUnavailableError,
  /** A statement did not complete within its timeout (retryable). See {@link ShardTimeoutError}. */
  ShardTimeoutError,
  /** A scatter-gather call failed on at least one shard. See {@link ScatterGatherError}. */
  ScatterGatherError,
  /** The router was closed (never retryable). See {@link ShardingClosedError}. */
  ShardingClosedError,
  /** The id generator's clock went backwards. See {@link ClockMovedBackwardsError}. */
  ClockMovedBackwardsError,
  /** A write reached a shard its slot has moved off (retryable: the router retries on the new owner). See {@link SlotMovedError}. */
  SlotMovedError,
  /** The slot map store could not be read when needed (retryable). See {@link SlotMapUnavailableError}. */
  SlotMapUnavailableError,
  /** A slot map change lost a race with another change (retryable). See {@link SlotMapConflictError}. */
  SlotMapConflictError,
  /** A mover step gave up on a shard that stopped answering for `stallTimeout` (retryable). See {@link SlotMoveStalledError}. */
  SlotMoveStalledError,
  /** A slot map or range is invalid. See {@link InvalidSlotMapError}. */
  InvalidSlotMapError,
  /** A moving range's rows differ between source and target at the cut-over. See {@link SlotCopyMismatchError}. */
  SlotCopyMismatchError,
  /** Another mover runs a step of a move off the same source (retryable). See {@link SlotMoveBusyError}. */
  SlotMoveBusyError,
  /** A resharding run is in progress, or another process runs it (retryable). See {@link ReshardBusyError}. */
  ReshardBusyError,
  /** A resharding operation does not fit the run's state. See {@link ReshardStateError}. */
  ReshardStateError,
} as const

/** Whether `error` was thrown by `@ballast/sharding` (any installed copy of it). */
export function isShardingError(error: unknown): error is ShardingError {
  return (
    typeof error === 'object' &&
    error !== null &&
    (error as Record<symbol, unknown>)[BRAND] === '@ballast/sharding'
  )
}
