export type { Duration, TelemetryOptions, Unsubscribe } from '@ballast/shared'
export { Broker, createBroker } from './broker.js'
export type {
  BlockedEvent,
  BrokerEvents,
  ConnectedEvent,
  ConnectionRole,
  ConsumerCancelledEvent,
  ConsumerFailedEvent,
  ConsumerStartedEvent,
  DeadLetteredEvent,
  DisconnectedEvent,
  DuplicateSkippedEvent,
  HandlerFailedEvent,
  ReconnectScheduledEvent,
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
export {
  DEFAULT_BROKER_OPTIONS,
  DEFAULT_PUBLISH_OPTIONS,
  DEFAULT_RECONNECT_OPTIONS,
} from './brokerOptions.js'
export type {
  ConsumeOptions,
  Consumer,
  ConsumerStats,
  Delivery,
  MessageHandler,
} from './consumer.js'
export { DEFAULT_CONSUME_OPTIONS } from './consumer.js'
export type { Deduplicator } from './deduplicator.js'
export type { MqErrorOptions } from './errors.js'
export {
  BrokerClosedError,
  BufferFullError,
  ConsumeFailedError,
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
  UnknownQueueError,
  UnroutableError,
} from './errors.js'
export { idempotencyDeduplicator } from './idempotencyDeduplicator.js'
export type { Inbox, InboxHandler, InboxOptions, InboxStats } from './inbox.js'
export { createInbox, DEFAULT_INBOX_OPTIONS } from './inbox.js'
export type { MessageDefinition, MessageDefinitionOptions, TypedMessage } from './message.js'
export { DEFAULT_MESSAGE_DEFINITION_OPTIONS, defineMessage } from './message.js'
export type {
  EnqueueOptions,
  Outbox,
  OutboxOptions,
  SqlConnection,
  SqlPool,
  SqlPoolConnection,
} from './outbox.js'
export { createOutbox, DEFAULT_ENQUEUE_OPTIONS, DEFAULT_OUTBOX_OPTIONS } from './outbox.js'
export type {
  BatchRelayedEvent,
  OutboxRelay,
  OutboxRelayEvents,
  OutboxRelayOptions,
  OutboxRelayStats,
  RelayFailedEvent,
  RowFailedEvent,
} from './outboxRelay.js'
export { createOutboxRelay, DEFAULT_OUTBOX_RELAY_OPTIONS } from './outboxRelay.js'
export type {
  ExchangeDefinition,
  QueueBinding,
  QueueDefinition,
  ResolvedQueue,
  RetryOptions,
  RetryStep,
  Topology,
} from './topology.js'
export { DEFAULT_RETRY_OPTIONS, retryDelays } from './topology.js'
