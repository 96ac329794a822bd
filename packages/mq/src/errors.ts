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
  /** The class name, `MqError`. */
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
  /** The class name, `InvalidArgumentError`. */
  override name = 'InvalidArgumentError'

  constructor(message: string, options: MqErrorOptions = {}) {
    super('E_MQ_INVALID_ARGUMENT', message, options)
  }
}

/** The broker rejected a declaration because an entity exists with other settings (406 PRECONDITION_FAILED). */
export class TopologyConflictError extends MqError {
  /** The class name, `TopologyConflictError`. */
  override name = 'TopologyConflictError'
  /** The queue or exchange whose declaration was refused. */
  readonly entity: string

  constructor(entity: string, message: string, options: MqErrorOptions = {}) {
    super('E_MQ_TOPOLOGY_CONFLICT', message, options)
    this.entity = entity
  }
}

/** The offline/backpressure buffer is full; the message was not accepted. Retry later. */
export class BufferFullError extends MqError {
  /** The class name, `BufferFullError`. */
  override name = 'BufferFullError'

  constructor(message: string, options: MqErrorOptions = {}) {
    super('E_MQ_BUFFER_FULL', message, { retryable: true, ...options })
  }
}

/** The message body is larger than `maxMessageBytes`; nothing was sent. */
export class MessageTooLargeError extends MqError {
  /** The class name, `MessageTooLargeError`. */
  override name = 'MessageTooLargeError'
  /** The encoded size of the refused message, in bytes. */
  readonly size: number
  /** The configured limit, in bytes. */
  readonly limit: number

  constructor(size: number, limit: number, options: MqErrorOptions = {}) {
    super(
      'E_MQ_MESSAGE_TOO_LARGE',
      `message of ${size} bytes is over the limit of ${limit} bytes ("maxMessageBytes")`,
      options,
    )
    this.size = size
    this.limit = limit
  }
}

/**
 * A message failed its schema, on publish (nothing sent) or on consume (dead-lettered), or cannot be
 * put on the wire: a property over its AMQP limit (a `messageId`, `type` or `correlationId` over 255
 * UTF-8 bytes) or a header table amqplib cannot encode (over 64 KiB, a NaN...). Only that message
 * fails; `issues` names each problem.
 */
export class InvalidMessageError extends MqError {
  /** The class name, `InvalidMessageError`. */
  override name = 'InvalidMessageError'
  /** What the schema reported, one line per issue. */
  readonly issues: readonly string[]

  constructor(message: string, issues: readonly string[] = [], options: MqErrorOptions = {}) {
    super('E_MQ_INVALID_MESSAGE', message, options)
    this.issues = issues
  }
}

/**
 * A consumed message's id cannot be used to deduplicate it: missing or empty, longer than the
 * store takes, not well-formed UTF-8 (so two distinct ids could read the same), or refused by the
 * deduplicator (e.g. by the idempotency key pattern). The consumer dead-letters the message
 * with this error's code and reason; a retry cannot help.
 */
export class InvalidMessageIdError extends MqError {
  /** The class name, `InvalidMessageIdError`. */
  override name = 'InvalidMessageIdError'

  constructor(message: string, options: MqErrorOptions = {}) {
    super('E_MQ_INVALID_MESSAGE_ID', message, { ...options, retryable: false })
  }
}

/** The exchange does not exist on the broker (and is not in the topology); nothing was sent. */
export class UnknownExchangeError extends MqError {
  /** The class name, `UnknownExchangeError`. */
  override name = 'UnknownExchangeError'
  /** The exchange that was named. */
  readonly exchange: string

  constructor(exchange: string, options: MqErrorOptions = {}) {
    super('E_MQ_UNKNOWN_EXCHANGE', `exchange "${exchange}" does not exist`, options)
    this.exchange = exchange
  }
}

/** A `mandatory` message matched no queue: the broker returned it instead of storing it. */
export class UnroutableError extends MqError {
  /** The class name, `UnroutableError`. */
  override name = 'UnroutableError'
  /** Where the message was sent. */
  readonly exchange: string
  /** With which routing key. */
  readonly routingKey: string

  constructor(
    exchange: string,
    routingKey: string,
    replyText: string,
    options: MqErrorOptions = {},
  ) {
    super(
      'E_MQ_UNROUTABLE',
      `message to exchange "${exchange}" with routing key "${routingKey}" was returned: ${replyText}`,
      options,
    )
    this.exchange = exchange
    this.routingKey = routingKey
  }
}

/** The broker refused a message (basic.nack); it may or may not be stored. */
export class PublishNackedError extends MqError {
  /** The class name, `PublishNackedError`. */
  override name = 'PublishNackedError'

  constructor(message: string, options: MqErrorOptions = {}) {
    super('E_MQ_PUBLISH_NACKED', message, { retryable: true, ...options })
  }
}

/**
 * The connection or channel closed before the broker confirmed the message, and the
 * `unconfirmedPolicy` is `'fail'` (or the resend limit was reached). The message may have been stored.
 */
export class PublishUnconfirmedError extends MqError {
  /** The class name, `PublishUnconfirmedError`. */
  override name = 'PublishUnconfirmedError'

  constructor(message: string, options: MqErrorOptions = {}) {
    super('E_MQ_PUBLISH_UNCONFIRMED', message, { retryable: true, ...options })
  }
}

/**
 * An outbox relay's batch was not confirmed within `publishTimeout` (the broker is blocked by an
 * alarm, or unreachable): its transaction was rolled back, so the rows stay unsent, unlocked and
 * without an attempt counted, and a later batch publishes them again. Some may have been stored
 * already: idempotent consumers drop those duplicates.
 */
export class OutboxPublishTimeoutError extends MqError {
  /** The class name, `OutboxPublishTimeoutError`. */
  override name = 'OutboxPublishTimeoutError'

  /** Rows in the batch that timed out. */
  readonly rows: number
  /** The `publishTimeout` that ran out, in milliseconds. */
  readonly timeoutMs: number

  constructor(rows: number, timeoutMs: number, options: MqErrorOptions = {}) {
    super(
      'E_MQ_OUTBOX_PUBLISH_TIMEOUT',
      `the broker did not confirm a batch of ${rows} outbox rows within ${timeoutMs} ms ("publishTimeout"); the batch was rolled back and will be published again`,
      { retryable: true, ...options },
    )
    this.rows = rows
    this.timeoutMs = timeoutMs
  }
}

/** `consume()` named a queue that does not exist on the broker (and so was not consumed). */
export class UnknownQueueError extends MqError {
  /** The class name, `UnknownQueueError`. */
  override name = 'UnknownQueueError'
  /** The queue that was named. */
  readonly queue: string

  constructor(queue: string, options: MqErrorOptions = {}) {
    super('E_MQ_UNKNOWN_QUEUE', `queue "${queue}" does not exist`, options)
    this.queue = queue
  }
}

/**
 * `consume()` could not start its consumer after several tries (the channel or the connection kept
 * failing); retryable: a later `consume()` may succeed. The last failure is its `cause`.
 */
export class ConsumeFailedError extends MqError {
  /** The class name, `ConsumeFailedError`. */
  override name = 'ConsumeFailedError'
  /** The queue that was not consumed. */
  readonly queue: string

  constructor(queue: string, message: string, options: MqErrorOptions = {}) {
    super('E_MQ_CONSUME_FAILED', message, { retryable: true, ...options })
    this.queue = queue
  }
}

/**
 * An object of the package (the broker, an outbox relay) is closed or closing and was asked to
 * do more work; publishes still pending when the broker's `shutdownTimeout` ran out reject with
 * it too. Never retryable: the same call on the same object fails the same way.
 */
export class MqClosedError extends MqError {
  /** The class name, `MqClosedError`. */
  override name = 'MqClosedError'
  /** The closed object, such as `'broker'`. */
  readonly object: string
  /** The operation that was refused, such as `'publish'`. */
  readonly operation: string

  constructor(object: string, operation: string, options: MqErrorOptions = {}) {
    super('E_MQ_CLOSED', `${object} is closed: ${operation}() after close()`, {
      ...options,
      retryable: false,
    })
    this.object = object
    this.operation = operation
  }
}

/** @deprecated Renamed {@link MqClosedError}; this alias goes in 1.0. */
export const BrokerClosedError = MqClosedError
/** @deprecated Renamed {@link MqClosedError}. */
export type BrokerClosedError = MqClosedError

/** Every error class of `@ballast/mq`, by name. */
export const errors = {
  /** {@link MqError} */
  MqError,
  /** {@link InvalidArgumentError} */
  InvalidArgumentError,
  /** {@link TopologyConflictError} */
  TopologyConflictError,
  /** {@link BufferFullError} */
  BufferFullError,
  /** {@link MessageTooLargeError} */
  MessageTooLargeError,
  /** {@link InvalidMessageError} */
  InvalidMessageError,
  /** {@link InvalidMessageIdError} */
  InvalidMessageIdError,
  /** {@link UnknownExchangeError} */
  UnknownExchangeError,
  /** {@link UnroutableError} */
  UnroutableError,
  /** {@link PublishNackedError} */
  PublishNackedError,
  /** {@link PublishUnconfirmedError} */
  PublishUnconfirmedError,
  /** {@link OutboxPublishTimeoutError} */
  OutboxPublishTimeoutError,
  /** {@link UnknownQueueError} */
  UnknownQueueError,
  /** {@link ConsumeFailedError} */
  ConsumeFailedError,
  /** {@link MqClosedError} */
  MqClosedError,
} as const

/** Whether `error` was thrown by `@ballast/mq` (any installed copy of it). */
export function isMqError(error: unknown): error is MqError {
  return (
    typeof error === 'object' &&
    error !== null &&
    (error as Record<symbol, unknown>)[BRAND] === '@ballast/mq'
  )
}
