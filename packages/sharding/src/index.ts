/** What {@link ShardRouter.on} and {@link ShardRouter.once} return: removes the listener. */
/** A duration: milliseconds, or a string with its unit (`'250ms'`, `'30s'`, `'15m'`). */
export type { Duration, TelemetryOptions, Unsubscribe } from '@ballast/shared'
export { CausalToken } from './causalToken.js'
export type { StatementClass, StatementKind } from './classifyStatement.js'
export { classifyStatement } from './classifyStatement.js'
export type { ShardFailure, ShardingErrorOptions } from './errors.js'
export {
  ClockMovedBackwardsError,
  errors,
  InvalidArgumentError,
  InvalidCausalTokenError,
  InvalidSlotMapError,
  isShardingError,
  ReshardBusyError,
  ReshardStateError,
  RouterClosedError,
  ScatterGatherError,
  ShardingClosedError,
  ShardingError,
  ShardKeyMissingError,
  ShardTimeoutError,
  ShardUnavailableError,
  SlotCopyMismatchError,
  SlotMapConflictError,
  SlotMapUnavailableError,
  SlotMoveBusyError,
  SlotMovedError,
  SlotMoveStalledError,
  UnknownShardError,
  UnsafeStatementError,
} from './errors.js'
export type { DecodedId, IdGenerator, IdGeneratorOptions, IdLayout } from './idGenerator.js'
export { createIdGenerator, DEFAULT_ID_GENERATOR_OPTIONS } from './idGenerator.js'
export type {
  Aggregate,
  AggregateMerge,
  AverageAggregate,
  AverageColumns,
  MergeSpec,
  OrderByMerge,
  OrderKey,
  QueryResult,
  Row,
} from './mergeSpec.js'
export { compareValues } from './mergeSpec.js'
export type {
  ReshardCommand,
  ResharderOptions,
  ReshardMovePhase,
  ReshardMoveProgressedEvent,
  ReshardMoveStatus,
  ReshardRunEvents,
  ReshardStartOptions,
  ReshardState,
  ReshardStateChangedEvent,
  ReshardStatus,
  ReshardSummary,
} from './resharder.js'
export {
  createResharder,
  DEFAULT_RESHARD_START_OPTIONS,
  DEFAULT_RESHARDER_OPTIONS,
  Resharder,
  ReshardRun,
} from './resharder.js'
export type {
  ReshardingPlan,
  ReshardingPlanOptions,
  ShardPlacement,
  ShardShare,
  SlotMove,
} from './reshardingPlan.js'
export {
  DEFAULT_RESHARDING_PLAN_OPTIONS,
  planResharding,
  planReshardingFrom,
} from './reshardingPlan.js'
export type { ScatterResult } from './scatterGather.js'
export type { ShardKey, SlotKey } from './shardKey.js'
export { slotFor } from './shardKey.js'
export { createShardRouter, ShardRouter } from './shardRouter.js'
export type {
  CausalTokenRefusedEvent,
  FallbackReason,
  FellBackToPrimaryEvent,
  HealthCheckFailedEvent,
  PrimarySwitchedEvent,
  ReplicaEjectedEvent,
  ReplicaRestoredEvent,
  ShardRouterEvents,
} from './shardRouterEvents.js'
export type {
  Consistency,
  QueryOptions,
  RingOptions,
  RoutingScope,
  ScatterOptions,
  ServerConfig,
  ServerRole,
  SetPrimaryOptions,
  ShardConfig,
  ShardRouterOptions,
  TransactionOptions,
} from './shardRouterOptions.js'
export {
  DEFAULT_QUERY_OPTIONS,
  DEFAULT_RING_OPTIONS,
  DEFAULT_SCATTER_OPTIONS,
  DEFAULT_SET_PRIMARY_OPTIONS,
  DEFAULT_SHARD_ROUTER_OPTIONS,
  DEFAULT_TRANSACTION_OPTIONS,
} from './shardRouterOptions.js'
export type {
  ReplicaStats,
  ScatterStats,
  ShardRouterStats,
  ShardStats,
  TransactionStats,
} from './shardRouterStats.js'
export type { MovePhase, SlotMap, SlotRange, SlotRangeMove } from './slotMap.js'
export type {
  SlotMapChangedEvent,
  SlotMapInitOptions,
  SlotMapRefreshFailedEvent,
  SlotMapStoreEvents,
  SlotMapStoreOptions,
  SlotMapStoreStats,
} from './slotMapStore.js'
export {
  createSlotMapStore,
  DEFAULT_SLOT_MAP_INIT_OPTIONS,
  DEFAULT_SLOT_MAP_STORE_OPTIONS,
  SlotMapStore,
} from './slotMapStore.js'
export type {
  CatchUpResult,
  ChunkCopiedEvent,
  CopyResult,
  CutOverResult,
  LogAppliedEvent,
  MovedTable,
  MoveEventFields,
  MoveStatus,
  MoveStep,
  PhaseChangedEvent,
  ResumedEvent,
  SlotMoverEvents,
  SlotMoverOptions,
  SlotSet,
  SlotSpan,
  StalledEvent,
  StepOptions,
} from './slotMover.js'
export {
  createSlotMover,
  DEFAULT_SLOT_MOVER_OPTIONS,
  DEFAULT_STEP_OPTIONS,
  SlotMover,
} from './slotMover.js'
export { sqlIdentifier } from './sqlIdentifier.js'
export type { ShardTransaction } from './transaction.js'
