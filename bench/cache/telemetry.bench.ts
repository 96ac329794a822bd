/**
 * What telemetry costs the cache (issue #17), under the four setups of bench/telemetry.ts in
 * one run: no SDK ("off"), an SDK with metrics only, traces sampled at 100% and at 1%.
 *
 * - L1 hit (`get` of a key L1 holds): touches no instrument and no span in any setup (its
 *   counter is read at collection time), so every setup should match "off", under 100 ns.
 * - L2 hit (`get` with L1 off, one Redis GET): with an SDK, one `db.client.operation.duration`
 *   point, and when sampled one CLIENT span. Latency is dominated by the round trip, so the
 *   table also gives this process's CPU per call, where the overhead shows.
 *
 * With `CACHE_BEFORE=<path to packages/cache/src/index.ts of a checkout of 45c7c6f~1>` (the
 * code before telemetry, e.g. a `git worktree`), a "before" row runs that code in the same
 * process, so "off" can be compared with it.
 *
 * A second table isolates the telemetry work of one L2 call, the round trip left out (the
 * cache's own wrapper around a guard that answers at once, CPU ns per call): the end-to-end
 * CPU per get moves by more than the few percent at stake on a shared machine, this does not.
 *
 * Every setup's caches (and SDK) live for the whole run; rounds (CACHE_BENCH_ROUNDS, 10) run
 * each case for each setup in a rotating order, and "vs off" is the median of the per-round
 * ratios, so load from other jobs on a shared machine hits every setup alike.
 *
 *   node --expose-gc --conditions=@ballast/source --import tsx bench/cache/telemetry.bench.ts
 */
import { type CacheOptions, createCache, type TwoLevelCache } from '@ballast/cache'
import { measure } from 'mitata'
import { CacheTelemetry, L2_CALLS } from '../../packages/cache/src/internal/telemetry.js'
import { fmt, isSmoke, report, sampleLatency } from '../harness.js'
import { TELEMETRY_MODES, type TelemetryMode, telemetryMode } from '../telemetry.js'
import { cleanup, RUN, redis } from './setup.js'

const SMOKE = isSmoke()
const ROUNDS = SMOKE ? 1 : Number(process.env.CACHE_BENCH_ROUNDS ?? 10)
const L2_ITERATIONS = SMOKE ? 20 : Number(process.env.CACHE_BENCH_ITERATIONS ?? 2000)
const KEYS = SMOKE ? 10 : 1000
const keys = Array.from({ length: KEYS }, (_, i) => `product:${i}`)
const value = { id: 1, name: 'Widget', price: 1999, tags: ['a', 'b'] }
const CONCURRENCIES = [1, 16]

type Setup = TelemetryMode['name'] | 'before'
type Factory = (options: CacheOptions) => TwoLevelCache
const before = process.env.CACHE_BEFORE
const setups: Setup[] = [...(before === undefined ? [] : ['before' as const]), ...TELEMETRY_MODES]
let oldFactory: Factory | undefined
if (before !== undefined) {
  const old = (await import(before)) as { createCache: Factory }
  oldFactory = (options) => old.createCache(options)
}

const median = (values: readonly number[]) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN
}

const client = redis()
let n = 0

/** One setup: its SDK (none for off and before), a cache with L1 and one without, primed. */
interface Contestant {
  mode: TelemetryMode
  l1: TwoLevelCache
  l2: TwoLevelCache
}

async function contestant(setup: Setup): Promise<Contestant> {
  const mode = telemetryMode(setup === 'before' ? 'off' : setup)
  const make = (l1: boolean): TwoLevelCache => {
    const options: CacheOptions = {
      redis: client,
      namespace: `${RUN}-${n++}`,
      ttl: '1h',
      // a late heartbeat echo (a loaded machine) would stop L1 being trusted and send the L1
      // case to Redis: the echo may take an hour here
      heartbeatTimeout: '1h',
      ...(l1 ? {} : { l1: false }),
      ...mode.options,
    }
    return setup === 'before' ? (oldFactory as Factory)(options) : createCache(options)
  }
  const made = { mode, l1: make(true), l2: make(false) }
  for (const cache of [made.l1, made.l2]) {
    await cache.ready()
    for (const key of keys) await cache.set(key, value)
    for (const key of keys) await cache.get(key)
  }
  return made
}

// every setup lives for the whole run, so each sees the same machine: the SDKs' periodic
// collections and the traced setups' context manager run alongside every case alike
const contestants = new Map<Setup, Contestant>()
for (const setup of setups) contestants.set(setup, await contestant(setup))

/** ns per L1 hit (mitata's mean and p50). */
async function l1Hit(setup: Setup): Promise<{ avg: number; p50: number }> {
  const cache = (contestants.get(setup) as Contestant).l1
  const misses = cache.stats().l1.misses
  let i = 0
  const stats = await measure(
    () => cache.get(keys[i++ % KEYS] as string),
    SMOKE ? { min_samples: 1, max_samples: 3, min_cpu_time: 1e6, warmup_samples: 1 } : {},
  )
  if (cache.stats().l1.misses !== misses) throw new Error(`${setup}: an L1 case missed L1`)
  return { avg: stats.avg, p50: stats.p50 }
}

/** p50 µs and CPU µs per L2 hit. */
async function l2Hit(setup: Setup, concurrency: number): Promise<{ p50: number; cpu: number }> {
  const cache = (contestants.get(setup) as Contestant).l2
  const get = (i: number) => cache.get(keys[Math.abs(i) % KEYS] as string)
  ;(globalThis as { gc?: () => void }).gc?.()
  const c0 = process.cpuUsage()
  const s = await sampleLatency(get, {
    iterations: L2_ITERATIONS,
    concurrency,
    warmup: SMOKE ? 1 : 200,
  })
  const c = process.cpuUsage(c0)
  return { p50: s.p50, cpu: (c.user + c.system) / (s.iterations + (SMOKE ? 1 : 200)) }
}

/** Per setup: the figure of each round, and its ratio to "off" in that round. */
type Series = { values: number[]; ratios: number[] }
const series = new Map<string, Series>()
const push = (key: string, value: number, off: number) => {
  const entry = series.get(key) ?? { values: [], ratios: [] }
  entry.values.push(value)
  entry.ratios.push(value / off)
  series.set(key, entry)
}
const p50s = new Map<Setup, number[]>()
for (let round = 0; round < ROUNDS; round++) {
  // setups in a rotating order, so a burst from other jobs on the machine hits each alike
  const order = setups.map((_, j) => setups[(j + round) % setups.length] as Setup)
  const l1 = new Map<Setup, { avg: number; p50: number }>()
  for (const setup of order) l1.set(setup, await l1Hit(setup))
  const offL1 = (l1.get('off') as { avg: number }).avg
  for (const [setup, r] of l1) {
    push(`l1|${setup}`, r.avg, offL1)
    p50s.set(setup, [...(p50s.get(setup) ?? []), r.p50])
  }
  for (const concurrency of CONCURRENCIES) {
    const l2 = new Map<Setup, { p50: number; cpu: number }>()
    for (const setup of order) l2.set(setup, await l2Hit(setup, concurrency))
    const off = l2.get('off') as { p50: number; cpu: number }
    for (const [setup, r] of l2) {
      push(`l2|${setup}|${concurrency}|p50`, r.p50, off.p50)
      push(`l2|${setup}|${concurrency}|cpu`, r.cpu, off.cpu)
    }
  }
}

const ratio = (key: string) => {
  const r = median((series.get(key) as Series).ratios)
  return `${r >= 1 ? '+' : ''}${((r - 1) * 100).toFixed(1)}%`
}
const value$ = (key: string) => median((series.get(key) as Series).values)
const rows: (string | number)[][] = []
for (const setup of setups) {
  rows.push([
    'L1 hit',
    setup,
    '',
    `${fmt(value$(`l1|${setup}`))} ns (mean), ${fmt(median(p50s.get(setup) as number[]))} ns (p50)`,
    '',
    setup === 'off' ? '' : ratio(`l1|${setup}`),
  ])
}
for (const concurrency of CONCURRENCIES) {
  for (const setup of setups) {
    const key = `l2|${setup}|${concurrency}`
    rows.push([
      'L2 hit (L1 off)',
      setup,
      concurrency,
      `${fmt(value$(`${key}|p50`))} µs (p50)`,
      `${fmt(value$(`${key}|cpu`))} µs`,
      setup === 'off' ? '' : `p50 ${ratio(`${key}|p50`)}, CPU ${ratio(`${key}|cpu`)}`,
    ])
  }
}

report({
  package: 'cache',
  name: 'telemetry',
  title: 'Cache hits under each telemetry setup (medians of rounds)',
  columns: ['path', 'setup', 'concurrency', 'time per get', 'CPU per get', 'vs off'],
  rows,
  notes: [
    `${ROUNDS} rounds, setups interleaved in a rotating order; figures are medians over the rounds, "vs off" the median of the per-round ratios to "off". L1 hit: mitata, ns per get. L2 hit: ${L2_ITERATIONS} gets per setup, concurrency and round against the shared Redis on loopback; p50 latency and this process's user+system CPU per get.`,
    before === undefined
      ? 'No "before" row: set CACHE_BEFORE to the cache source of 45c7c6f~1 to add one.'
      : '"before": the cache of 45c7c6f~1 (no telemetry), in the same process.',
  ],
  data: Object.fromEntries([...series, ...[...p50s].map(([k, v]) => [`l1p50|${k}`, v])]),
})

// The telemetry work of one L2 call alone: the cache's wrapper (CacheTelemetry.l2) around a
// guard that runs the call at once, and a call that resolves at once, CPU ns per call.
const WORK_CALLS = SMOKE ? 100 : 200_000
const instantGuard = {
  state: 'closed',
  run: (_operation: string, fn: (target: unknown, arg: unknown) => Promise<unknown>) =>
    fn(undefined, undefined),
}
const instantCall = async () => 1
const work = new Map<Setup, number[]>()
const wrappers = TELEMETRY_MODES.map((name) => {
  const { mode } = contestants.get(name) as Contestant
  return { name, telemetry: new CacheTelemetry(mode.options, `${RUN}-work`, client) }
})
for (let round = 0; round < (SMOKE ? 1 : 5); round++) {
  for (const { name, telemetry } of wrappers) {
    const c0 = process.cpuUsage()
    for (let i = 0; i < WORK_CALLS; i++)
      await telemetry.l2(L2_CALLS.get, instantGuard as never, instantCall as never, undefined, 0)
    const c = process.cpuUsage(c0)
    work.set(name, [...(work.get(name) ?? []), ((c.user + c.system) * 1000) / WORK_CALLS])
  }
}
const offWork = median(work.get('off') as number[])
const l2Cpu = (concurrency: number) => value$(`l2|off|${concurrency}|cpu`) * 1000
report({
  package: 'cache',
  name: 'telemetry-work',
  title: 'Telemetry work of one L2 call, without its round trip (CPU ns per call, medians)',
  columns: [
    'setup',
    'CPU ns per call',
    'added to off',
    ...CONCURRENCIES.map((c) => `of an L2 hit's CPU at concurrency ${c}`),
  ],
  rows: TELEMETRY_MODES.map((name) => {
    const ns = median(work.get(name) as number[])
    return [
      name,
      fmt(ns),
      name === 'off' ? '' : fmt(ns - offWork),
      ...CONCURRENCIES.map((c) =>
        name === 'off' ? '' : `${(((ns - offWork) / l2Cpu(c)) * 100).toFixed(1)}%`,
      ),
    ]
  }),
  notes: [
    `${SMOKE ? 1 : 5} rounds of ${WORK_CALLS} calls per setup; the last columns divide the added work by the CPU per L2 hit of "off" in the first table.`,
  ],
  data: Object.fromEntries(work),
})

for (const { mode, l1, l2 } of contestants.values()) {
  await l1.close()
  await l2.close()
  await mode.shutdown()
}
await cleanup(client)
client.disconnect()
