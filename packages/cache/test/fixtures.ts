import { redisClusterNodes, redisUrl, uniqueName } from '@ballast/testkit'
import { Cluster, Redis } from 'ioredis'
import { type CacheOptions, createCache, type TwoLevelCache } from '../src/index.js'

export type Topology = 'standalone' | 'cluster'

/** A client of the topology, failing fast while disconnected (what the README recommends). */
export async function connect(topology: Topology, url?: string): Promise<Redis | Cluster> {
  if (topology === 'cluster') {
    const nodes = await redisClusterNodes()
    const cluster = new Cluster(nodes, { enableOfflineQueue: false })
    await new Promise<void>((resolve, reject) => {
      cluster.once('ready', resolve)
      cluster.once('error', reject)
    })
    return cluster
  }
  const redis = new Redis(url ?? (await redisUrl()), {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
  })
  await new Promise<void>((resolve, reject) => {
    if (redis.status === 'ready') resolve()
    redis.once('ready', resolve)
    redis.once('error', reject)
  })
  return redis
}

/**
 * A disposable group of caches on one namespace, each with its own clients (as separate
 * instances would have); `close()` closes them and deletes the namespace's keys.
 */
export class CacheGroup {
  readonly namespace = uniqueName('ns')
  /** testkit's unique prefix (without its trailing colon), so cleanup deletes exactly our keys. */
  readonly prefix = uniqueName('cache')
  readonly topology: Topology
  readonly caches: TwoLevelCache<unknown>[] = []
  readonly clients: (Redis | Cluster)[] = []

  constructor(topology: Topology) {
    this.topology = topology
  }

  async add(options: CacheOptions = {}, client?: Redis | Cluster): Promise<TwoLevelCache<unknown>> {
    const redis = client ?? (await connect(this.topology))
    if (client === undefined) this.clients.push(redis)
    const cache = createCache({ redis, namespace: this.namespace, prefix: this.prefix, ...options })
    this.caches.push(cache)
    await cache.ready()
    return cache
  }

  /** A plain client for poking at Redis directly. */
  async raw(): Promise<Redis | Cluster> {
    const redis = await connect(this.topology)
    this.clients.push(redis)
    return redis
  }

  async close(): Promise<void> {
    await Promise.all(this.caches.map((cache) => cache.close()))
    const redis = await connect(this.topology)
    try {
      await deleteUnder(redis, `${this.prefix}:`)
    } finally {
      redis.disconnect()
    }
    for (const client of this.clients) client.disconnect()
  }
}

/** Deletes every key under `prefix`, on every master of a cluster (never a flush). */
async function deleteUnder(redis: Redis | Cluster, prefix: string): Promise<void> {
  const nodes = redis instanceof Cluster ? redis.nodes('master') : [redis]
  for (const node of nodes) {
    let cursor = '0'
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500)
      cursor = next
      for (const key of keys) await node.unlink(key)
    } while (cursor !== '0')
  }
}

/** Waits until `check` holds, polling every 2 ms, or throws after `ms`. */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  ms = 10_000,
): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    if (await check()) return
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms`)
    await new Promise((resolve) => setTimeout(resolve, 2))
  }
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** A promise with its resolve and reject (Promise.withResolvers is ES2024; the repo targets ES2023). */
export function deferred<T>(): {
  promise: Promise<T>
  resolve(value: T): void
  reject(error: unknown): void
} {
  let resolve: (value: T) => void = () => undefined
  let reject: (error: unknown) => void = () => undefined
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}
