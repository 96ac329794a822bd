export type { ServerSource, ServerUnavailableDetails } from './errors.js'
export { isServerUnavailableError, ServerUnavailableError } from './errors.js'
export type { FaultMode, FaultProxy, FaultProxyOptions, FaultProxyStats } from './faultProxy.js'
export { createFaultProxy } from './faultProxy.js'
export type { HostPort, ResolvedServer, ResolveServerOptions, ServerName } from './servers.js'
export {
  amqpUrl,
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
