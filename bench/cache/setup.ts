/** Shared set-up of the cache benchmarks: Redis from REDIS_URL, unique prefixes, and the peers. */
import { randomBytes } from 'node:crypto'
import KeyvRedis from '@keyv/redis'
import { BentoCache, bentostore } from 'bentocache'
import { memoryDriver } from 'bentocache/drivers/memory'
import { redisBusDriver, redisDriver } from 'bentocache/drivers/redis'
import { createCache as createCacheManager } from 'cache-manager'
import { Redis } from 'ioredis'
import { Keyv } from 'keyv'

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
export const RUN = `bench${randomBytes(4).toString('hex')}`

export function redis(): Redis {
  return new Redis(REDIS_URL, { enableOfflineQueue: true })
}

/** bentocache with L1 (memory), L2 (Redis) and its Redis bus, as its docs set it up. */
export function bento(client: Redis, l1 = true) {
  const store = bentostore()
  if (l1) store.useL1Layer(memoryDriver({ maxItems: 10_000 }))
  store.useL2Layer(redisDriver({ connection: client, prefix: `${RUN}:bento` }))
  store.useBus(redisBusDriver({ connection: client.options }))
  return new BentoCache({ default: 'cache', stores: { cache: store } })
}

/** cache-manager 7 with an in-memory Keyv in front of its Redis store (@keyv/redis). */
export function cacheManager(l1 = true) {
  const l2 = new Keyv({ store: new KeyvRedis(REDIS_URL), namespace: `${RUN}:cm` })
  return { cache: createCacheManager({ stores: l1 ? [new Keyv(), l2] : [l2] }), l2 }
}

/** Deletes every key this run wrote (never a flush: the Redis is shared). */
export async function cleanup(client: Redis): Promise<void> {
  let cursor = '0'
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `*${RUN}*`, 'COUNT', 1000)
    cursor = next
    if (keys.length > 0) await client.unlink(...keys)
  } while (cursor !== '0')
}
