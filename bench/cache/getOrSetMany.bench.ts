/**
 * `getOrSetMany` of a large batch of misses, the batch loader answering with an array (read by
 * position) or a Map: issue #14 measured 2.7 s against 0.3 s for 40,000 keys when an array
 * result cost an `indexOf` per key. No Redis and no L1, so every call loads every key and
 * what is measured is the cache's own bookkeeping.
 * Run: pnpm exec tsx --conditions=@ballast/source bench/cache/getOrSetMany.bench.ts
 */
import { createCache } from '@ballast/cache'
import { compare, isSmoke } from '../harness.js'

const KEYS = isSmoke() ? 100 : 40_000
const keys = Array.from({ length: KEYS }, (_, i) => `price:${i}`)
const cache = createCache<number>({ l1: false })

await compare({
  package: 'cache',
  name: 'get-or-set-many',
  title: `getOrSetMany of ${KEYS} misses: array result vs Map result`,
  cases: [
    {
      name: '@ballast/cache getOrSetMany, array result',
      ours: true,
      fn: () => cache.getOrSetMany(keys, async (missing) => missing.map((_, i) => i)),
    },
    {
      name: '@ballast/cache getOrSetMany, Map result',
      fn: () =>
        cache.getOrSetMany(keys, async (missing) => new Map(missing.map((key, i) => [key, i]))),
    },
  ],
  notes: ['Both should cost about the same: the array is indexed once per call, not per key.'],
})

await cache.close()
