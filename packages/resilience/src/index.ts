export type { Duration, Listener, TelemetryOptions, Unsubscribe } from '@ballast/shared'
export type {
  BulkheadEvents,
  BulkheadOptions,
  BulkheadRejectedEvent,
  BulkheadStats,
} from './bulkhead.js'
export { BulkheadPolicy, bulkhead, DEFAULT_BULKHEAD_OPTIONS } from './bulkhead.js'
export type {
  BreakerFailedEvent,
  BreakerFellBackEvent,
  BreakerOpenedEvent,
  BreakerRejectedEvent,
  BreakerState,
  BreakerStateEvent,
  BreakerSucceededEvent,
  BreakerTimedOutEvent,
  BreakerWindowCounts,
  CircuitBreakerEvents,
  CircuitBreakerOptions,
  CircuitBreakerStats,
  CountWindow,
  LatencyPercentiles,
  TimeWindow,
} from './circuitBreaker.js'
export {
  CircuitBreaker,
  circuitBreaker,
  DEFAULT_CIRCUIT_BREAKER_OPTIONS,
} from './circuitBreaker.js'
export type {
  ChangeReason,
  DegraderEvents,
  DegraderOptions,
  DegraderStats,
  FeatureLevel,
  FeatureOptions,
  FeatureStats,
  LevelChangedEvent,
  OverloadOptions,
  PressureSampledEvent,
} from './degrader.js'
export {
  createDegrader,
  DEFAULT_DEGRADER_OPTIONS,
  DEFAULT_FEATURE_OPTIONS,
  DEFAULT_OVERLOAD_OPTIONS,
  Degrader,
} from './degrader.js'
export type { ResilienceErrorOptions } from './errors.js'
export {
  AbortedError,
  BreakerOpenError,
  BulkheadRejectedError,
  errors,
  IdempotencyFencedError,
  IdempotencyInFlightError,
  IdempotencyKeyInvalidError,
  IdempotencyMismatchError,
  IdempotencyNotReplicatedError,
  IdempotencyScopeMissingError,
  IdempotencyUnavailableError,
  IdempotentFailureError,
  InvalidArgumentError,
  isResilienceError,
  RateLimitedError,
  RateLimiterUnavailableError,
  ResilienceClosedError,
  ResilienceError,
  TimeoutError,
} from './errors.js'
export type { FallbackEvents, FallbackOptions, FallbackStats, FellBackEvent } from './fallback.js'
export { DEFAULT_FALLBACK_OPTIONS, FallbackPolicy, fallback } from './fallback.js'
export type {
  HttpIdempotencyDefaults,
  HttpIdempotencyOptions,
} from './httpIdempotencyOptions.js'
export type {
  AcquiredEvent,
  ClaimAcquired,
  ClaimCompleted,
  ClaimInFlight,
  ClaimMismatch,
  ClaimOptions,
  ClaimOutcome,
  FencedEvent,
  IdempotencyContext,
  IdempotencyEvents,
  IdempotencyKeyEvent,
  IdempotencyOptions,
  IdempotencyRecord,
  IdempotencyReplicationOptions,
  IdempotencyStats,
  IdempotentResult,
  InFlightRefusedEvent,
  LeaseLostEvent,
  NotReplicatedEvent,
  RedisCallFailedEvent,
  ResultNotStoredEvent,
  RunOptions,
  StoredFailure,
  StoredFailureRecord,
  StoredValue,
} from './idempotency.js'
export {
  createIdempotency,
  DEFAULT_IDEMPOTENCY_OPTIONS,
  DEFAULT_IDEMPOTENCY_REPLICATION_OPTIONS,
  Idempotency,
  IdempotencyClaim,
} from './idempotency.js'
export type { RedisLike } from './internal/lua.js'
export type { ExtraOf, ExtraOfOne } from './pipeline.js'
export { Pipeline, pipeline } from './pipeline.js'
export type { ExecutionContext, Operation, Policy } from './policy.js'
export type {
  LimitedEvent,
  RateLimiter,
  RateLimiterEvents,
  RateLimiterOptions,
  RateLimiterStats,
  RateLimitResult,
} from './rateLimiter.js'
export {
  createRateLimiter,
  DEFAULT_RATE_LIMITER_OPTIONS,
  LocalRateLimiter,
  RedisRateLimiter,
} from './rateLimiter.js'
export type { GaveUpEvent, RetriedEvent, RetryEvents, RetryOptions, RetryStats } from './retry.js'
export { DEFAULT_RETRY_OPTIONS, isRetryableError, RetryPolicy, retry } from './retry.js'
export type { TimedOutEvent, TimeoutEvents, TimeoutOptions, TimeoutStats } from './timeout.js'
export { DEFAULT_TIMEOUT_OPTIONS, TimeoutPolicy, timeout } from './timeout.js'
