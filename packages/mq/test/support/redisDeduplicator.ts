import type { Redis } from 'ioredis'
import type { Deduplicator } from '../../src/index.js'

/** A minimal Redis deduplicator for tests (claim with SET NX, mark done, release). */
export function redisDeduplicator(redis: Redis, prefix: string, lockMs = 5000): Deduplicator {
  return {
    async begin(key) {
      const k = prefix + key
      if ((await redis.set(k, 'in-progress', 'PX', lockMs, 'NX')) === 'OK') return 'acquired'
      return (await redis.get(k)) === 'done' ? 'completed' : 'in-progress'
    },
    async complete(key) {
      await redis.set(prefix + key, 'done', 'PX', 3_600_000)
    },
    async release(key) {
      await redis.del(prefix + key)
    },
  }
}
