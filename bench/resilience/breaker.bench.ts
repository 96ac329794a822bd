/**
 * Circuit breaker cost per call: success path against raw opossum (defaults and tuned) and
 * cockatiel; failure path with 100k calls in the window.
 * Run: pnpm bench resilience  (or: pnpm exec tsx --conditions=@ballast/source bench/resilience/breaker.bench.ts)
 */
import { circuitBreaker } from '@ballast/resilience'
import { ConsecutiveBreaker, circuitBreaker as cockatielBreaker, handleAll } from 'cockatiel'
import Opossum from 'opossum'
import { compare, fmt, isSmoke, report } from '../harness.js'
import { cpuPerCall, cpuRows } from './cpu.js'

const smoke = isSmoke()
const noop = () => {}
const ok = () => Promise.resolve(1)
const fail = () => Promise.reject(new Error('down'))

// Opossum tuned for speed: no per-call timeout timer, no latency percentiles, no snapshot
// timer. (Its buckets still rotate on its own interval.)
const tunedOptions = {
  timeout: false as const,
  rollingPercentilesEnabled: false,
  enableSnapshots: false,
}

// ---------------------------------------------------------------- success path
{
  const ours = circuitBreaker(ok)
  const oursPolicy = circuitBreaker()
  const opDefault = new Opossum(ok)
  const opTuned = new Opossum(ok, tunedOptions)
  const cockatiel = cockatielBreaker(handleAll, {
    halfOpenAfter: 10_000,
    breaker: new ConsecutiveBreaker(5),
  })

  await compare({
    package: 'resilience',
    name: 'breaker-success',
    title: 'Circuit breaker, success path (ns per call, async function resolving at once)',
    cases: [
      { name: '@ballast/resilience circuitBreaker(fn).fire()', fn: () => ours.fire(), ours: true },
      { name: '@ballast/resilience breaker.execute(fn)', fn: () => oursPolicy.execute(ok) },
      {
        name: 'opossum 10, tuned (no timeout, no percentiles, no snapshots)',
        fn: () => opTuned.fire(),
      },
      { name: 'opossum 10, defaults', fn: () => opDefault.fire() },
      { name: 'cockatiel 4 circuitBreaker.execute', fn: () => cockatiel.execute(ok) },
      { name: 'bare call (baseline)', fn: () => ok() },
    ],
  })
  const cpu = await cpuPerCall([
    { name: '@ballast/resilience circuitBreaker(fn).fire()', fn: () => ours.fire() },
    { name: '@ballast/resilience breaker.execute(fn)', fn: () => oursPolicy.execute(ok) },
    { name: 'opossum 10, tuned', fn: () => opTuned.fire() },
    { name: 'opossum 10, defaults', fn: () => opDefault.fire() },
    { name: 'cockatiel 4', fn: () => cockatiel.execute(ok) },
  ])
  report({
    package: 'resilience',
    name: 'breaker-success-cpu',
    title:
      'Circuit breaker, success path: CPU ns per awaited call (median of 5 interleaved rounds of 200k)',
    columns: ['case', 'CPU ns/call', 'this / ours'],
    rows: cpuRows(cpu, '@ballast/resilience circuitBreaker(fn).fire()'),
    notes: [
      'Sequential awaited calls, so each figure includes one await; CPU time of this process, steadier than wall time on shared cores.',
    ],
  })
  await ours.close()
  await oursPolicy.close()
  opDefault.shutdown()
  opTuned.shutdown()
}

// ---------------------------------------------------------------- failure path
// The window holds `size` successful calls (a 10-minute window, so nothing rotates out), the
// breaker never opens (huge volume threshold), and we time failed calls.
const never = Number.MAX_SAFE_INTEGER
function oursWith() {
  const b = circuitBreaker((f: boolean) => (f ? fail() : ok()), {
    volumeThreshold: never,
    errorThresholdPercentage: 99.9,
    window: { type: 'time', duration: 600_000, buckets: 10 },
  })
  return {
    fill: () => b.fire(false),
    failOnce: () => b.fire(true).catch(noop),
    close: () => b.close(),
  }
}
function opossumWith(tuned: boolean) {
  const b = new Opossum((f: boolean) => (f ? fail() : ok()), {
    ...(tuned ? tunedOptions : {}),
    timeout: false,
    volumeThreshold: never,
    errorThresholdPercentage: 100,
    rollingCountTimeout: 600_000,
    rollingCountBuckets: 10,
  })
  return {
    fill: () => b.fire(false),
    failOnce: () => b.fire(true).catch(noop),
    close: () => b.shutdown(),
  }
}
/** Returns [wall µs, CPU µs] per failed call: the machine is shared, CPU time is the steadier figure. */
async function perFailure(
  subject: { fill(): Promise<unknown>; failOnce(): Promise<unknown>; close(): unknown },
  size: number,
  n: number,
): Promise<[number, number]> {
  for (let i = 0; i < size; i += 1000) {
    await Promise.all(Array.from({ length: Math.min(1000, size - i) }, () => subject.fill()))
  }
  for (let i = 0; i < Math.min(n, 20); i++) await subject.failOnce() // warm up
  const t0 = process.hrtime.bigint()
  const cpu0 = process.cpuUsage()
  for (let i = 0; i < n; i++) await subject.failOnce()
  const cpu = process.cpuUsage(cpu0)
  const wall = Number(process.hrtime.bigint() - t0) / 1e3 / n
  await subject.close()
  return [wall, (cpu.user + cpu.system) / n]
}

const sizes = smoke ? [1000] : [1_000, 10_000, 100_000]
const rows: (string | number)[][] = []
const data: Record<string, [number, number][]> = { ours: [], opossumTuned: [], opossumDefault: [] }
for (const size of sizes) {
  const ours = await perFailure(oursWith(), size, smoke ? 5 : 20_000)
  const tuned = await perFailure(opossumWith(true), size, smoke ? 5 : 5_000)
  const dflt = await perFailure(opossumWith(false), size, smoke ? 2 : size >= 100_000 ? 30 : 300)
  data.ours!.push(ours)
  data.opossumTuned!.push(tuned)
  data.opossumDefault!.push(dflt)
  rows.push([
    size.toLocaleString('en-US'),
    `${fmt(ours[1])} (${fmt(ours[0])})`,
    `${fmt(tuned[1])} (${fmt(tuned[0])})`,
    `${fmt(dflt[1])} (${fmt(dflt[0])})`,
    `${(dflt[1] / ours[1]).toFixed(0)}x`,
  ])
}
report({
  package: 'resilience',
  name: 'breaker-failure',
  title: 'Circuit breaker, failure path: µs per failed call by calls in the window, CPU (wall)',
  columns: [
    'calls in window',
    '@ballast/resilience',
    'opossum tuned',
    'opossum defaults',
    'defaults / ours (CPU)',
  ],
  rows,
  notes: [
    'Each failed call creates its Error and rejected promise; the breaker never opens (huge volume threshold); calls are sequential.',
  ],
  data: { sizes, ...data },
})
