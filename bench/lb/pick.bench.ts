/**
 * pick() cost of every strategy with 16 endpoints (goal: under 100 ns each). Hashing
 * strategies get a fresh string key per call from a pre-built array; peak-EWMA reads the clock
 * (performance.now) on every pick, as it does in production.
 *
 *   pnpm exec tsx --conditions=@ballast/source bench/lb/pick.bench.ts
 */
import { createBalancer, STRATEGIES } from '@ballast/lb'
import { compare, do_not_optimize, fmt, report } from '../harness.js'
import { cpuNsPerOp } from './cpuTime.js'

const endpoints = Array.from({ length: 16 }, (_, i) => ({
  id: `http://10.0.0.${i}:8080`,
  weight: 1 + (i % 3),
}))
const keys = Array.from({ length: 4096 }, (_, i) => `user:${i * 7919}`)

const balancers = STRATEGIES.map((strategy) => {
  const balancer = createBalancer({ strategy, endpoints })
  // Some load, so least-request and bounded-load compare real numbers.
  for (const e of balancer.endpoints().slice(0, 5)) balancer.begin(e)
  return { strategy, balancer }
})

const cases = balancers.map(({ strategy, balancer }, n) => {
  let i = 0
  return {
    name: `pick() ${strategy}`,
    ours: n === 0,
    fn: () => do_not_optimize(balancer.pick(keys[i++ & 4095])),
  }
})

await compare({
  package: 'lb',
  name: 'pick',
  title: 'Balancer.pick() with 16 endpoints (weights 1-3), per strategy',
  cases,
  notes: [
    'The last column is each strategy’s time relative to round-robin. Goal: every strategy under 100 ns.',
  ],
})

const cpu = balancers.map(({ strategy, balancer }) => ({
  strategy,
  ns: cpuNsPerOp((i) => balancer.pick(keys[i & 4095])),
}))
report({
  package: 'lb',
  name: 'pick-cpu',
  title:
    'Balancer.pick() CPU time per call, 16 endpoints (process CPU time over 2M calls, median of 7)',
  columns: ['strategy', 'CPU ns / pick', 'goal'],
  rows: cpu.map((c) => [c.strategy, fmt(c.ns), c.ns < 100 ? 'under 100 ns' : 'OVER 100 ns']),
  notes: [
    'Process CPU time, not wall time: on this shared 2-core machine, wall-clock means include time preempted by other processes (see the mitata table above, where mean ≫ p50).',
  ],
  data: cpu,
})
