/** Which of the broker's two connections an event is about. */
export type ConnectionRole = 'publisher' | 'consumer'

/** Payload of the `connected` event. */
export interface ConnectedEvent {
  /** The connection that opened. */
  role: ConnectionRole
  /** The URL it connected to, without its credentials. */
  url: string
}

/** Payload of the `disconnected` event. */
export interface DisconnectedEvent {
  /** The connection that closed. */
  role: ConnectionRole
  /** Why, if it did not close on request. */
  error: Error | undefined
}

/** Payload of the `reconnect-scheduled` event. */
export interface ReconnectScheduledEvent {
  /** The connection being reopened. */
  role: ConnectionRole
  /** The attempt number, from 1. */
  attempt: number
  /** Milliseconds until this attempt. */
  delayMs: number
  /** Why the previous attempt or the connection failed. */
  error: Error | undefined
}

/** Payload of the `blocked` event. */
export interface BlockedEvent {
  /** The blocked connection. */
  role: ConnectionRole
  /** The broker's reason, e.g. `'low on memory'`. */
  reason: string
}

/** Payload of the `unblocked` event. */
export interface UnblockedEvent {
  /** The unblocked connection. */
  role: ConnectionRole
}

/** Payload of the `topology-failed` event. */
export interface TopologyFailedEvent {
  /** The {@link TopologyConflictError} (or other declaration error) that stopped the broker. */
  error: Error
}

/** Payload of the `consumer-started` event. */
export interface ConsumerStartedEvent {
  /** The consumed queue. */
  queue: string
  /** The consumer tag the broker knows the consumer by. */
  consumerTag: string
}

/** Payload of the `consumer-cancelled` event. */
export interface ConsumerCancelledEvent {
  /** The queue whose consumer the broker cancelled. */
  queue: string
}

/** Payload of the `consumer-failed` event. */
export interface ConsumerFailedEvent {
  /** The consumed queue. */
  queue: string
  /** What failed. */
  error: unknown
}

/** Payload of the `handler-failed` event. */
export interface HandlerFailedEvent {
  /** The consumed queue. */
  queue: string
  /** The message's id, if it has one. */
  messageId: string | undefined
  /** Which delivery attempt failed, from 1. */
  attempt: number
  /** What the handler threw. */
  error: unknown
}

/** Payload of the `retried` event. */
export interface RetriedEvent {
  /** The consumed queue. */
  queue: string
  /** The message's id, if it has one. */
  messageId: string | undefined
  /** The attempt that failed, from 1. */
  attempt: number
  /** Milliseconds before the message comes back. */
  delayMs: number
}

/** Payload of the `dead-lettered` event. */
export interface DeadLetteredEvent {
  /** The consumed queue. */
  queue: string
  /** The message's id, if it has one. */
  messageId: string | undefined
  /** The last error (handler, schema or decoding). */
  error: unknown
}

/** Payload of the `duplicate-skipped` event. */
export interface DuplicateSkippedEvent {
  /** The consumed queue. */
  queue: string
  /** The id that was handled before. */
  messageId: string | undefined
}

/** Events of a {@link Broker}, by name. */
export interface BrokerEvents {
  /** A connection opened and the topology is declared. */
  connected: ConnectedEvent
  /** A connection closed. */
  disconnected: DisconnectedEvent
  /** A reconnect attempt is scheduled. */
  'reconnect-scheduled': ReconnectScheduledEvent
  /** The broker blocked a connection (memory or disk alarm): publishing waits. */
  blocked: BlockedEvent
  /** The broker unblocked a connection. */
  unblocked: UnblockedEvent
  /** The topology conflicts with what exists: the broker stopped; publishes fail with this error. */
  'topology-failed': TopologyFailedEvent
  /** A consumer started (again) on a channel. */
  'consumer-started': ConsumerStartedEvent
  /** The broker cancelled a consumer; it is being restored. */
  'consumer-cancelled': ConsumerCancelledEvent
  /** A consumer could not (re)start or settle a message; it keeps trying. */
  'consumer-failed': ConsumerFailedEvent
  /** A handler threw. */
  'handler-failed': HandlerFailedEvent
  /** A failed message went to a retry queue. */
  retried: RetriedEvent
  /** A message was dead-lettered (retries spent, invalid, or a permanent error). */
  'dead-lettered': DeadLetteredEvent
  /** A delivery was dropped because its message id was handled before. */
  'duplicate-skipped': DuplicateSkippedEvent
}
