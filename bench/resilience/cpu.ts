/**
 * CPU time per call, for a shared, noisy machine: wall-clock means move with whatever else
 * runs on the cores, CPU time spent by this process much less. Cases run interleaved, in
 * rounds, and the median round is reported.
 */
import { fmt, isSmoke } from '../harness.js'

export interface CpuCase {
  name: string
  fn: () => unknown
}

/** Returns the median CPU ns per call of each case over `rounds` interleaved rounds. */
export async function cpuPerCall(
  cases: CpuCase[],
  calls = 200_000,
  rounds = 5,
): Promise<Map<string, number>> {
  const n = isSmoke() ? 20 : calls
  const r = isSmoke() ? 1 : rounds
  const samples = new Map<string, number[]>(cases.map((c) => [c.name, []]))
  for (let round = 0; round < r; round++) {
    for (const c of round % 2 === 0 ? cases : [...cases].reverse()) {
      for (let i = 0; i < Math.min(n, 10_000); i++) await c.fn() // warm up
      const start = process.cpuUsage()
      for (let i = 0; i < n; i++) await c.fn()
      const used = process.cpuUsage(start)
      samples.get(c.name)?.push(((used.user + used.system) * 1000) / n)
    }
  }
  const out = new Map<string, number>()
  for (const [name, xs] of samples)
    out.set(name, [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0)
  return out
}

/** Table rows: name, CPU ns per call, and how many times ours is faster (time of this / ours). */
export function cpuRows(result: Map<string, number>, ours: string): (string | number)[][] {
  const base = result.get(ours) ?? 1
  return [...result].map(([name, ns]) => [
    name === ours ? `**${name}**` : name,
    fmt(ns),
    name === ours ? '' : `${(ns / base).toFixed(2)}x`,
  ])
}
