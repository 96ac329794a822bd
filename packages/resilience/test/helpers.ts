import { randomUUID } from 'node:crypto'
import { redisClusterNodes, redisUrl } from '@ballast/testkit'
import { Cluster, Redis } from 'ioredis'

/** A unique key prefix for one test file, safe on the shared Redis. */
export function uniquePrefix(label: string): string {
  return `test:resilience:${label}:${randomUUID().slice(0, 8)}:`
}

/** A client on the shared Redis; `cleanup()` deletes every key under `prefix` and quits. */
export async function redisFixture(prefix: string) {
  const redis = new Redis(await redisUrl(), { maxRetriesPerRequest: 1 })
  return {
    redis,
    async cleanup() {
      let cursor = '0'
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500)
        cursor = next
        if (keys.length > 0) await redis.del(...keys)
      } while (cursor !== '0')
      await redis.quit()
    },
  }
}

/** A client on the Redis Cluster; `cleanup()` deletes keys under `prefix` on every master. */
export async function clusterFixture(prefix: string) {
  const nodes = await redisClusterNodes()
  const cluster = new Cluster(nodes, { redisOptions: { maxRetriesPerRequest: 1 } })
  return {
    cluster,
    async cleanup() {
      for (const node of cluster.nodes('master')) {
        let cursor = '0'
        do {
          const [next, keys] = await node.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500)
          cursor = next
          for (const key of keys) await cluster.del(key)
        } while (cursor !== '0')
      }
      await cluster.quit()
    },
  }
}

/**
 * Redis command timeout for tests that are not about timeouts: CI runs every test file in
 * parallel on two cores, and a stall past the 2 s default would fail the store closed (503),
 * which those tests do not mean to exercise. Timeout tests set their own small values.
 */
export const NOT_ABOUT_TIMEOUTS = 15_000
