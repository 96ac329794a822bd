export type {
  BrokerEvents,
  BrokerOptions,
  BrokerStats,
  PublishOptions,
  ReconnectOptions,
} from './broker.js'
export { Broker, createBroker, DEFAULT_BROKER_OPTIONS } from './broker.js'
export type { Consumer, ConsumeOptions, ConsumerStats, Delivery, MessageHandler } from './consumer.js'
export type { Deduplicator } from './deduplicator.js'
export type { MqErrorOptions } from './errors.js'
export {
  BrokerClosedError,
  BufferFullError,
  ConnectionError,
  errors,
  InvalidArgumentError,
  InvalidMessageError,
  isMqError,
  MessageTooLargeError,
  MqError,
  PublishNackedError,
  PublishUnconfirmedError,
  TopologyConflictError,
  UnknownExchangeError,
  UnroutableError,
} from './errors.js'
export type { Duration } from './internal/duration.js'
export type {
  MessageDefinition,
  MessageDefinitionOptions,
  StandardSchemaV1,
  StandardSchemaV1Issue,
  StandardSchemaV1Props,
  StandardSchemaV1Result,
  TypedMessage,
} from './message.js'
export { defineMessage } from './message.js'
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
