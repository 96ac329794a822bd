export type { AmqpNames, AmqpNamesOptions } from './amqpNames.js'
export { amqpNames } from './amqpNames.js'
export { rejection, thrown } from './caught.js'
export type { Disposables, Releasable } from './disposables.js'
export { disposables } from './disposables.js'
export type { ServerSource, ServerUnavailableDetails } from './errors.js'
export { isServerUnavailableError, ServerUnavailableError } from './errors.js'
export { exportServerUrls } from './exportServerUrls.js'
export type { FaultMode, FaultProxy, FaultProxyOptions, FaultProxyStats } from './faultProxy.js'
export { createFaultProxy } from './faultProxy.js'
export type { CallSummary, LoadRecorder, RecordedCall } from './loadRecorder.js'
export { servedAgainAfter, startLoad, summarizeCalls } from './loadRecorder.js'
export type {
  PrivateMariadbPair,
  PrivateMariadbPairOptions,
  PrivateMariadbServer,
  SwitchoverOptions,
  SwitchoverResult,
} from './mariadbPair.js'
export { startPrivateMariadbPair, switchover } from './mariadbPair.js'
export type {
  PrivateRedisCluster,
  PrivateRedisClusterOptions,
  PrivateRedisNode,
  PrivateRedisNodeRole,
} from './privateRedisCluster.js'
export {
  DEFAULT_PRIVATE_REDIS_CLUSTER_OPTIONS,
  RIDE_OUT_CLUSTER_OPTIONS,
  RIDE_OUT_TIMEOUT,
  redisKeySlot,
  startPrivateRedisCluster,
} from './privateRedisCluster.js'
export type { RedisKeyspace, RedisKeyspaceClient } from './redisKeyspace.js'
export { redisKeyspace } from './redisKeyspace.js'
export type { HostPort, ResolvedServer, ResolveServerOptions, ServerName } from './servers.js'
export {
  amqpClusterUrls,
  amqpUrl,
  containerRuntimeAnswers,
  DEFAULT_RESOLVE_SERVER_OPTIONS,
  mysqlPrimaryUrl,
  mysqlReplicaUrl,
  mysqlUrl,
  parseNodeList,
  redisClusterNodes,
  redisUrl,
  resolveServer,
  SERVER_NAMES,
  serverEnvVar,
  serverStartCommand,
} from './servers.js'
export type { TempDatabase } from './tempDatabase.js'
export { tempDatabase } from './tempDatabase.js'
export { uniqueName } from './uniqueName.js'
