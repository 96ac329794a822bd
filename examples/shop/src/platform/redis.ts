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

export function createRedisCluster(nodes: { host: string; port: number }[]): Cluster {
  return new Cluster(nodes, {
    redisOptions: { connectTimeout: 1000, maxRetriesPerRequest: 2 },
    clusterRetryStrategy: (times) => Math.min(100 * times, 1000),
  })
}
