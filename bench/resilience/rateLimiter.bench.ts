/**
 * Shared rate limiter decisions per second on loopback Redis at 100 concurrent callers,
 * against rate-limiter-flexible's RateLimiterRedis; and the local limiters in process.
 * Run: pnpm bench resilience
 */
import { randomUUID } from 'node:crypto'
import { createRateLimiter, LocalRateLimiter } from '@ballast/resilience'
import { Redis } from 'ioredis'
import { RateLimiterMemory, RateLimiterRedis } from 'rate-limiter-flexible'
import { compare, fmt, fmtInt, isSmoke, report, sampleLatency } from '../harness.js'

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const prefix = `bench:rl:${randomUUID().slice(0, 8)}:`
const N = isSmoke() ? 200 : 200_000
const CONCURRENCY = 100
const KEYS = 1000
// a budget no caller exhausts: every decision is a full one (read, compute, write)
const LIMIT = 1_000_000_000

const oursRedis = new Redis(url)
const unbatchedRedis = new Redis(url)
const peerRedis = new Redis(url)
const ours = createRateLimiter({
  redis: oursRedis,
  prefix: `${prefix}ours:`,
  limit: LIMIT,
  interval: 1000,
})
const unbatched = createRateLimiter({
  redis: unbatchedRedis,
  prefix: `${prefix}one:`,
  limit: LIMIT,
  interval: 1000,
  batch: false,
})
const peer = new RateLimiterRedis({
  storeClient: peerRedis,
  keyPrefix: `${prefix}rlf`,
  points: LIMIT,
  duration: 1,
})

const runs: Record<string, number[]> = { ours: [], unbatched: [], peer: [] }
const latency: Record<string, { p50: number; p99: number }> = {}
const rounds = isSmoke() ? 1 : 3
for (let round = 0; round < rounds; round++) {
  // alternate who goes first, so neither always gets the warmer server
  const order =
    round % 2 === 0
      ? (['ours', 'unbatched', 'peer'] as const)
      : (['peer', 'unbatched', 'ours'] as const)
  for (const who of order) {
    const fn =
      who === 'ours'
        ? (i: number) => ours.take(`u${i % KEYS}`)
        : who === 'unbatched'
          ? (i: number) => unbatched.take(`u${i % KEYS}`)
          : (i: number) => peer.consume(`u${i % KEYS}`)
    const stats = await sampleLatency(fn, { iterations: N, concurrency: CONCURRENCY })
    runs[who]!.push(stats.opsPerSec)
    latency[who] = { p50: stats.p50, p99: stats.p99 }
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0
const oursMedian = median(runs.ours!)
const unbatchedMedian = median(runs.unbatched!)
const peerMedian = median(runs.peer!)
report({
  package: 'resilience',
  name: 'rate-limiter-redis',
  title: `Shared rate limiter on loopback Redis: decisions/s at ${CONCURRENCY} concurrent callers`,
  columns: ['limiter', 'decisions/s (median)', 'runs', 'p50 µs', 'p99 µs', 'ours / this'],
  rows: [
    [
      '**@ballast/resilience createRateLimiter({ redis }) (GCRA; one EVALSHA per tick for all pending decisions)**',
      fmtInt(oursMedian),
      runs.ours!.map(fmtInt).join(' / '),
      fmt(latency.ours!.p50),
      fmt(latency.ours!.p99),
      '',
    ],
    [
      '@ballast/resilience, batch: false (one EVALSHA per decision)',
      fmtInt(unbatchedMedian),
      runs.unbatched!.map(fmtInt).join(' / '),
      fmt(latency.unbatched!.p50),
      fmt(latency.unbatched!.p99),
      `${(oursMedian / unbatchedMedian).toFixed(2)}x`,
    ],
    [
      'rate-limiter-flexible 11 RateLimiterRedis (one EVALSHA per decision)',
      fmtInt(peerMedian),
      runs.peer!.map(fmtInt).join(' / '),
      fmt(latency.peer!.p50),
      fmt(latency.peer!.p99),
      `${(oursMedian / peerMedian).toFixed(2)}x`,
    ],
  ],
  notes: [
    `${fmtInt(N)} decisions per run over ${KEYS} keys, each limiter on its own ioredis client; median of ${rounds} alternating runs.`,
  ],
  data: runs,
})

const local = new LocalRateLimiter({ limit: LIMIT })
const memory = new RateLimiterMemory({ points: LIMIT, duration: 1 })
let i = 0
await compare({
  package: 'resilience',
  name: 'rate-limiter-local',
  title: 'Local rate limiter, one decision (ns)',
  cases: [
    {
      name: '@ballast/resilience LocalRateLimiter.takeSync',
      fn: () => local.takeSync(`u${i++ % KEYS}`),
      ours: true,
    },
    {
      name: '@ballast/resilience LocalRateLimiter.take (promise)',
      fn: () => local.take(`u${i++ % KEYS}`),
    },
    {
      name: 'rate-limiter-flexible RateLimiterMemory.consume',
      fn: () => memory.consume(`u${i++ % KEYS}`),
    },
  ],
})

for (const client of [oursRedis, unbatchedRedis, peerRedis]) {
  let cursor = '0'
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
    cursor = next
    if (keys.length) await client.del(...keys)
  } while (cursor !== '0')
  await client.quit()
}
