/**
 * The seeded discrete-event simulator shipped in @ballast/lb: 10 backends × 4 slots, lognormal
 * service (median 20 ms, σ 0.5), open-loop Poisson arrivals at 70 % utilisation for 60 s, and one
 * backend 10x slower from 15 s to 45 s. For each strategy: p50/p99/p99.9 with all healthy and
 * with the slow backend (medians over 5 seeds), and the ratio of the two p99s.
 *
 *   pnpm exec tsx --conditions=@ballast/source bench/lb/simulator.bench.ts
 */
import { type SimulationResult, STRATEGIES, simulate } from '@ballast/lb'
import { isSmoke, report } from '../harness.js'

const SEEDS = isSmoke() ? [1] : [1, 2, 3, 4, 5]
const durationMs = isSmoke() ? 3000 : 60_000

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]!
}

function run(strategy: (typeof STRATEGIES)[number], slowFactor: number) {
  const results: SimulationResult[] = SEEDS.map((seed) =>
    simulate({ strategy, seed, duration: durationMs, slowFactor }),
  )
  return {
    p50: median(results.map((r) => r.p50)),
    p99: median(results.map((r) => r.p99)),
    p999: median(results.map((r) => r.p999)),
    slowShare: median(results.map((r) => r.slowShare)),
  }
}

const ms = (n: number) => (n >= 1000 ? `${(n / 1000).toFixed(1)} s` : `${n.toFixed(1)}`)
const data: Record<string, unknown> = {}
const rows = STRATEGIES.map((strategy) => {
  const healthy = run(strategy, 1)
  const degraded = run(strategy, 10)
  data[strategy] = { healthy, degraded }
  return [
    strategy,
    ms(healthy.p50),
    ms(healthy.p99),
    ms(healthy.p999),
    ms(degraded.p50),
    ms(degraded.p99),
    ms(degraded.p999),
    `${(degraded.p99 / healthy.p99).toFixed(2)}x`,
    `${(degraded.slowShare * 100).toFixed(2)} %`,
  ]
})

report({
  package: 'lb',
  name: 'simulator',
  title:
    'Simulated latency (ms) per strategy: all healthy vs one of 10 backends 10x slow for the middle half',
  columns: [
    'strategy',
    'healthy p50',
    'healthy p99',
    'healthy p99.9',
    'one slow p50',
    'one slow p99',
    'one slow p99.9',
    'p99 slow / healthy',
    'sent to slow one',
  ],
  rows,
  notes: [
    `Medians over seeds ${SEEDS.join(', ')}; ${durationMs / 1000} s simulated per run. Goal: peak-ewma p99 with one slow backend ≤ 1.2x its all-healthy p99.`,
    'Open loop: a backend slower than 1/0.7 ≈ 1.43x its share builds an unbounded queue, so strategies blind to load (round-robin, random, consistent-hash) grow without bound.',
  ],
  data,
})
