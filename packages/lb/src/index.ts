export type { Duration, Listener, TelemetryOptions, Unsubscribe } from '@ballast/shared'
export type {
  BalancedClient,
  BalancedClientOptions,
  BalancedClientStats,
  BalancedRequestOptions,
  BalancedResponse,
} from './balancedClient.js'
export {
  createBalancedClient,
  DEFAULT_BALANCED_CLIENT_OPTIONS,
  DEFAULT_BALANCED_REQUEST_OPTIONS,
} from './balancedClient.js'
export type {
  Balancer,
  BalancerEvents,
  BalancerOptions,
  BalancerStats,
  EjectedEvent,
  EjectionReason,
  EndpointAddedEvent,
  EndpointRemovedEvent,
  HealthChangedEvent,
  OutlierDetectionOptions,
  PanicChangedEvent,
  PickedEvent,
  RestoredEvent,
  RestoreReason,
  SlowStartOptions,
  StrategyName,
  WeightChangedEvent,
} from './balancer.js'
export {
  createBalancer,
  DEFAULT_BALANCER_OPTIONS,
  DEFAULT_OUTLIER_DETECTION_OPTIONS,
  DEFAULT_SLOW_START_OPTIONS,
  STRATEGIES,
} from './balancer.js'
export type { Endpoint, EndpointInput, EndpointStats } from './endpoint.js'
export type { LbErrorOptions } from './errors.js'
export {
  ClosedError,
  DuplicateEndpointError,
  EmptyEndpointsError,
  EmptyRingError,
  errors,
  InvalidArgumentError,
  InvalidRequestError,
  InvalidWeightError,
  isLbError,
  LbClosedError,
  LbError,
  NoEndpointAvailableError,
  UnknownEndpointError,
  UpstreamError,
  UpstreamTimeoutError,
} from './errors.js'
export type { HashKey } from './hash.js'
export { murmur3 } from './hash.js'
export type { HashRingNode, HashRingOptions } from './hashRing.js'
export { DEFAULT_HASH_RING_OPTIONS, HashRing } from './hashRing.js'
export type {
  CheckedEvent,
  HealthChecker,
  HealthCheckerEvents,
  HealthCheckerOptions,
  HealthCheckerStats,
  HealthCheckFunction,
  HttpHealthCheck,
  TcpHealthCheck,
} from './healthChecker.js'
export { createHealthChecker, DEFAULT_HEALTH_CHECKER_OPTIONS } from './healthChecker.js'
export type {
  CacheFailedEvent,
  CompressionOptions,
  ProxyCacheOptions,
  ProxyEvents,
  ProxyOptions,
  ProxyRoute,
  ProxyStats,
  RequestFailedEvent,
  RetriedEvent,
  ReverseProxy,
  UpstreamFailedEvent,
} from './proxy.js'
export {
  createProxy,
  DEFAULT_COMPRESSION_OPTIONS,
  DEFAULT_PROXY_CACHE_OPTIONS,
  DEFAULT_PROXY_OPTIONS,
} from './proxy.js'
export type { CachedResponse, ResponseCache } from './responseCache.js'
export type { RetryBudget, RetryBudgetOptions, RetryBudgetStats } from './retryBudget.js'
export { createRetryBudget, DEFAULT_RETRY_BUDGET_OPTIONS } from './retryBudget.js'
export type { SimulationOptions, SimulationResult } from './simulator.js'
export { createSeededRandom, DEFAULT_SIMULATION_OPTIONS, simulate } from './simulator.js'
