/**
 * L1 under a 1M-key churn: the configured byte bound against what L1 accounts and what the
 * heap actually grows by. Run: node --expose-gc, e.g.
 * node --expose-gc --import tsx --conditions=@ballast/source bench/cache/memory.bench.ts
 */
import { createCache } from '@ballast/cache'
import { fmt, fmtInt, isSmoke, report } from '../harness.js'

const N = isSmoke() ? 10_000 : 1_000_000
const BOUND = 32 * 1024 * 1024
const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined) throw new Error('run with node --expose-gc (see the header)')

gc()
const before = process.memoryUsage().heapUsed
const cache = createCache({ l1: { maxEntries: 200_000, maxBytes: BOUND }, ttl: '1h' })
let peakAccounted = 0
for (let i = 0; i < N; i++) {
  await cache.set(`user:${i}`, {
    id: i,
    name: `user ${i}`,
    email: `user${i}@example.com`,
    roles: ['buyer'],
  })
  if (i % 10_000 === 0) peakAccounted = Math.max(peakAccounted, cache.stats().l1.bytes)
}
peakAccounted = Math.max(peakAccounted, cache.stats().l1.bytes)
gc()
const heapGrowth = process.memoryUsage().heapUsed - before
const { entries, bytes } = cache.stats().l1
report({
  package: 'cache',
  name: 'memory',
  title: `L1 under a ${fmtInt(N)}-key churn, bound ${fmtInt(BOUND)} bytes`,
  columns: [
    'entries kept',
    'accounted bytes',
    'peak accounted / bound',
    'heap growth bytes',
    'heap growth / bound',
  ],
  rows: [
    [
      fmtInt(entries),
      fmtInt(bytes),
      fmt(peakAccounted / BOUND),
      fmtInt(heapGrowth),
      fmt(heapGrowth / BOUND),
    ],
  ],
  notes: [
    "Accounted bytes: lru-cache's arrays preallocated for maxEntries (24 bytes a slot), plus per entry 300 + key + the value (2 × serialized length; a string's own length), the figure the bound applies to. Heap growth is measured after a forced GC: it includes everything the cache holds, also its bookkeeping of recent invalidations outside L1 (at most 10,000 keys, about 1 MB).",
  ],
})
await cache.close()
