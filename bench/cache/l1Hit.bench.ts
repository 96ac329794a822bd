/**
 * An L1 hit through each cache's async `get`, every cache configured with Redis as L2, plus
 * raw engines for scale. Run: pnpm exec tsx --conditions=@ballast/source bench/cache/l1Hit.bench.ts
 */
import { createCache } from '@ballast/cache'
import { LRUCache } from 'lru-cache'
import NodeCache from 'node-cache'
import { compare, do_not_optimize, isSmoke } from '../harness.js'
import { bento, cacheManager, cleanup, RUN, redis } from './setup.js'

const KEYS = isSmoke() ? 10 : 1000
const keys = Array.from({ length: KEYS }, (_, i) => `product:${i}`)
const value = { id: 1, name: 'Widget', price: 1999, tags: ['a', 'b'] }

const client = redis()
const ours = createCache({ redis: client, namespace: `${RUN}-ours`, ttl: '1h' })
await ours.ready()
const bc = bento(redis())
const cm = cacheManager()
const lru = new LRUCache<string, object>({ max: 10_000 })
const nc = new NodeCache({ useClones: false })
const map = new Map<string, unknown>()
for (const key of keys) {
  await ours.set(key, value)
  await bc.set({ key, value, ttl: '1h' })
  await cm.cache.set(key, value, 3_600_000)
  lru.set(key, value)
  nc.set(key, value)
  map.set(key, value)
}
// prime every L1
for (const key of keys) {
  await ours.get(key)
  await bc.get({ key })
  await cm.cache.get(key)
}

let i = 0
const next = () => keys[i++ % KEYS] as string
const asyncMapGet = async (key: string) => map.get(key)

await compare({
  package: 'cache',
  name: 'l1-hit',
  title: 'L1 hit through async get (L2 Redis configured in every cache)',
  cases: [
    { name: '@ballast/cache get', ours: true, fn: () => ours.get(next()) },
    { name: 'bentocache get', fn: () => bc.get({ key: next() }) },
    { name: 'cache-manager get', fn: () => cm.cache.get(next()) },
    { name: 'async fn around Map.get', fn: () => asyncMapGet(next()) },
  ],
})

await compare({
  package: 'cache',
  name: 'l1-peek',
  title: 'Synchronous L1 read: peek vs the raw engines',
  cases: [
    { name: '@ballast/cache peek', ours: true, fn: () => do_not_optimize(ours.peek(next())) },
    { name: 'lru-cache get', fn: () => do_not_optimize(lru.get(next())) },
    { name: 'node-cache get (useClones: false)', fn: () => do_not_optimize(nc.get(next())) },
    { name: 'Map.get', fn: () => do_not_optimize(map.get(next())) },
  ],
  notes: [
    'lru-cache is the default L1 engine: bounded by entries and bytes, and faster than node-cache, which is unbounded by default.',
  ],
})

await cleanup(client)
await ours.close()
await bc.disconnectAll()
await cm.cache.disconnect()
nc.close()
client.disconnect()
