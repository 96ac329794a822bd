/**
 * Idempotency on loopback Redis: round trips and latency of a first call (claim + store), a
 * replay, and a 409 for a key in flight.
 * Run: pnpm bench resilience
 */
import { randomUUID } from 'node:crypto'
import { createIdempotency } from '@ballast/resilience'
import { Redis } from 'ioredis'
import { fmt, fmtInt, isSmoke, report, sampleLatency } from '../harness.js'

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const redis = new Redis(url)
const prefix = `bench:idem:${randomUUID().slice(0, 8)}:`
const store = createIdempotency({ redis, prefix })
const N = isSmoke() ? 20 : 20_000

// count round trips: every script goes through evalsha (or eval after NOSCRIPT)
let trips = 0
const evalsha = redis.evalsha.bind(redis)
redis.evalsha = ((...args: Parameters<typeof redis.evalsha>) => {
  trips++
  return evalsha(...args)
}) as typeof redis.evalsha
await store.run('warm', {}, () => 1)

const body = { amount: 1999, currency: 'EUR', items: [{ sku: 'A-1', qty: 2 }] }
const rows: (string | number)[][] = []
async function measure(name: string, fn: (i: number) => Promise<unknown>, iterations: number) {
  trips = 0
  const stats = await sampleLatency(fn, { iterations, concurrency: 1, warmup: 0 })
  rows.push([
    name,
    fmt(trips / iterations),
    fmt(stats.p50),
    fmt(stats.p99),
    fmtInt(stats.opsPerSec),
  ])
}

await measure(
  'first call: claim + run + store',
  (i) => store.run(`k${i}`, body, () => ({ receipt: i })),
  N,
)
await measure(
  'replay of a completed key',
  (i) => store.run(`k${i}`, body, () => ({ receipt: -1 })),
  N,
)
const held = await store.claim('held', body)
await measure(
  'duplicate while in flight (409)',
  () => store.run('held', body, () => 0).catch(() => {}),
  N,
)
if (held.status === 'acquired') await held.claim.release()

report({
  package: 'resilience',
  name: 'idempotency',
  title: 'Idempotency keys on loopback Redis (one caller, sequential)',
  columns: ['operation', 'round trips', 'p50 µs', 'p99 µs', 'ops/s'],
  rows,
  notes: [
    `Redis ${url}, ${fmtInt(N)} calls per row, payload fingerprinted (SHA-256 of canonical JSON).`,
  ],
})

let cursor = '0'
do {
  const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
  cursor = next
  if (keys.length) await redis.del(...keys)
} while (cursor !== '0')
await store.close()
await redis.quit()
