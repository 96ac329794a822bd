/**
 * CPU time per operation, for micro-benchmarks on a shared, busy machine: the process's own
 * user+system time (process.cpuUsage) over a fixed loop, so time spent preempted by other
 * processes does not count. Median of several runs, in nanoseconds.
 */
import { do_not_optimize, isSmoke } from '../harness.js'

export function cpuNsPerOp(
  fn: (i: number) => unknown,
  iterations = isSmoke() ? 1000 : 2_000_000,
  runs = isSmoke() ? 1 : 7,
): number {
  for (let i = 0; i < Math.min(iterations, 200_000); i++) do_not_optimize(fn(i))
  const results: number[] = []
  for (let r = 0; r < runs; r++) {
    const before = process.cpuUsage()
    for (let i = 0; i < iterations; i++) do_not_optimize(fn(i))
    const used = process.cpuUsage(before)
    results.push(((used.user + used.system) * 1000) / iterations)
  }
  results.sort((a, b) => a - b)
  return results[Math.floor(results.length / 2)]!
}
