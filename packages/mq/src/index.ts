export { Broker, createBroker } from './broker.js'
export type {
  BlockedEvent,
  BrokerEvents,
  ConnectedEvent,
  ConnectionRole,
  ConsumerCancelledEvent,
  ConsumerErrorEvent,
  ConsumerStartedEvent,
  DeadLetteredEvent,
  DisconnectedEvent,
  DuplicateEvent,
  HandlerErrorEvent,
  ReconnectingEvent,
  RetriedEvent,
  TopologyFailedEvent,
  UnblockedEvent,
} from './brokerEvents.js'
export type {
  BrokerOptions,
  BrokerStats,
  PerConnection,
  PublishOptions,
  ReconnectOptions,
} from './brokerOptions.js'
export { DEFAULT_BROKER_OPTIONS } from './brokerOptions.js'
export type {
  ConsumeOptions,
  Consumer,
  ConsumerStats,
  Delivery,
  MessageHandler,
} from './consumer.js'
export type { Deduplicator } from './deduplicator.js'
export type { MqErrorOptions } from './errors.js'
export {
  BrokerClosedError,
  BufferFullError,
  errors,
  InvalidArgumentError,
  InvalidMessageError,
  InvalidMessageIdError,
  isMqError,
  MessageTooLargeError,
  MqClosedError,
  MqError,
  OutboxPublishTimeoutError,
  PublishNackedError,
  PublishUnconfirmedError,
  TopologyConflictError,
  UnknownExchangeError,
  UnroutableError,
} from './errors.js'
export { idempotencyDeduplicator } from './idempotencyDeduplicator.js'
export type { Inbox, InboxHandler, InboxOptions, InboxStats } from './inbox.js'
export { createInbox, DEFAULT_INBOX_OPTIONS } from './inbox.js'
export type { Duration } from './internal/duration.js'
export type {
  MessageDefinition,
  MessageDefinitionOptions,
  StandardSchemaV1,
  StandardSchemaV1FailureResult,
  StandardSchemaV1Issue,
  StandardSchemaV1PathSegment,
  StandardSchemaV1Props,
  StandardSchemaV1Result,
  StandardSchemaV1SuccessResult,
  StandardSchemaV1Types,
  TypedMessage,
} from './message.js'
export { defineMessage } from './message.js'
export type {
  EnqueueOptions,
  Outbox,
  OutboxOptions,
  SqlConnection,
  SqlPool,
  SqlPoolConnection,
} from './outbox.js'
export { createOutbox, DEFAULT_OUTBOX_OPTIONS } from './outbox.js'
export type {
  OutboxBatchEvent,
  OutboxRelay,
  OutboxRelayErrorEvent,
  OutboxRelayEvents,
  OutboxRelayOptions,
  OutboxRelayStats,
  OutboxRowFailedEvent,
} from './outboxRelay.js'
export { createOutboxRelay, DEFAULT_OUTBOX_RELAY_OPTIONS } from './outboxRelay.js'
export type {
  ExchangeDefinition,
  QueueBinding,
  QueueDefinition,
  ResolvedQueue,
  RetryDefinition,
  RetryStep,
  Topology,
} from './topology.js'
export { DEFAULT_RETRY, retryDelays } from './topology.js'
