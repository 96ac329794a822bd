/**
 * Redis clients. The standalone Redis (through the supervisor's fault proxy, so chaos can cut
 * it) carries the cache's L2 and invalidation bus, idempotency keys and rate limits; the Redis
 * Cluster carries sessions, so a login survives the loss of the standalone Redis.
 */
import { Cluster, Redis } from 'ioredis'

export function createRedis(url: string): Redis {
  return new Redis(url, {
    // Fail fast while Redis is away: callers degrade instead of queueing behind an outage.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 1000,
    commandTimeout: 1000,
    retryStrategy: (times) => Math.min(100 * times, 1000),
    lazyConnect: false,
  })
}

export function createRedisSubscriber(url: string): Redis {
  return new Redis(url, {
    maxRetriesPerRequest: null,
    connectTimeout: 1000,
    retryStrategy: (times) => Math.min(100 * times, 1000),
  })
}

/**
 * How long a session call may wait: above the ~6.4 s the Cluster client below keeps retrying
 * through a failover, so a promotion shows as a slow request, not as an error (see
 * `@ballast/session`'s README, "When the cluster fails over").
 */
export const CLUSTER_CALL_TIMEOUT = '8s'

export function createRedisCluster(nodes: { host: string; port: number }[]): Cluster {
  return new Cluster(nodes, {
    redisOptions: { connectTimeout: 1000, maxRetriesPerRequest: 2 },
    clusterRetryStrategy: (times) => Math.min(100 * times, 1000),
    // Ride out a master's failover (cluster-node-timeout 2 s + detection + election, ~4 s
    // measured): a call to the dead master costs two redirections per retryDelayOnFailover
    // (the refused connection, then the MOVED back to it), so 32 x 400 ms keep retrying
    // ~6.4 s. ioredis's defaults (16 x 100 ms) give up after ~1.2 s with "Too many Cluster
    // redirections". With a larger cluster-node-timeout, raise maxRedirections to match.
    retryDelayOnFailover: 400,
    retryDelayOnClusterDown: 400,
    maxRedirections: 32,
  })
}
