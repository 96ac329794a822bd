/**
 * What telemetry costs @ballast/resilience (issue #17), under the four setups of
 * bench/telemetry.ts in one run: no SDK, an SDK with metrics only, traces sampled at 100% and
 * at 1%.
 *
 * 1. The policies' success paths, CPU ns per awaited call: `breaker.execute(fn)`,
 *    `timeout.execute(fn)`, `retry.execute(fn)`. Their counters are read at collection time,
 *    so a call pays nothing for metrics; a breaker or a retry that does not fail adds no span
 *    and no event. The timeout policy keeps the caller's context per call when a tracer can
 *    record (for the event it puts on the caller's span when it fires).
 * 2. An idempotent run on Redis (`store.run(key, input, fn)`: EVALSHA claim + EVALSHA
 *    complete), where each round trip records a `db.client.operation.duration` point and,
 *    when sampled, a CLIENT span. Latency is dominated by the round trips: the table also
 *    gives the client CPU per run. A private redis-server keeps other traffic out.
 *
 * With `RESILIENCE_BEFORE=<checkout of 45c7c6f~1>` (default /tmp/resilience-before when it
 * exists) the same cases also run the code from before telemetry, in the same process, as
 * the "before" row:
 *
 *   git worktree add /tmp/resilience-before 45c7c6f~1   (node_modules: see the README)
 *   node --expose-gc --conditions=@ballast/source --import tsx bench/resilience/telemetry.bench.ts
 */
import { existsSync } from 'node:fs'
import * as current from '@ballast/resilience'
import { Redis } from 'ioredis'
import { fmt, fmtInt, isSmoke, report, sampleLatency } from '../harness.js'
import { startPrivateRedis } from '../session/redisServer.js'
import { TELEMETRY_MODES, type TelemetryMode, telemetryMode } from '../telemetry.js'

const SMOKE = isSmoke()
const ROUNDS = SMOKE ? 1 : Number(process.env.RESILIENCE_BENCH_ROUNDS ?? 5)
const CALLS = SMOKE ? 20 : Number(process.env.RESILIENCE_BENCH_CALLS ?? 200_000)
const RUNS = SMOKE ? 20 : Number(process.env.RESILIENCE_BENCH_RUNS ?? 4_000)
const CONCURRENCIES = [1, 32] as const

type Module = typeof current
type Setup = TelemetryMode['name'] | 'before'

const beforeDir =
  process.env.RESILIENCE_BEFORE ??
  (existsSync('/tmp/resilience-before/packages/resilience/src/index.ts')
    ? '/tmp/resilience-before'
    : undefined)
const before: Module | undefined =
  beforeDir === undefined
    ? undefined
    : ((await import(`${beforeDir}/packages/resilience/src/index.ts`)) as Module)
const SETUPS: Setup[] = before === undefined ? [...TELEMETRY_MODES] : ['before', ...TELEMETRY_MODES]

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN
}
const pct = (value: number, base: number) =>
  `${value >= base ? '+' : ''}${(((value - base) / base) * 100).toFixed(1)}%`

/** The module and telemetry options of one setup ("before" is the old code, no options). */
function setup(name: Setup): { lib: Module; mode: TelemetryMode } {
  if (name === 'before') return { lib: before as Module, mode: telemetryMode('off') }
  return { lib: current, mode: telemetryMode(name) }
}

// ------------------------------------------------------------ policies, CPU ns per call
const ok = () => Promise.resolve(1)
interface Subject {
  call(): Promise<unknown>
  close(): Promise<void>
}
const POLICIES: Record<string, (lib: Module, options: TelemetryMode['options']) => Subject> = {
  'breaker.execute(fn)': (lib, options) => {
    const b = lib.circuitBreaker({ name: 'bench', ...options })
    return { call: () => b.execute(ok), close: () => b.close() }
  },
  'timeout.execute(fn)': (lib, options) => {
    const t = lib.timeout({ duration: 10_000, ...options })
    return {
      call: () => t.execute(ok),
      close: async () => (t as { close?: () => Promise<void> }).close?.(),
    }
  },
  'retry.execute(fn)': (lib, options) => {
    const r = lib.retry({ ...options })
    return {
      call: () => r.execute(ok),
      close: async () => (r as { close?: () => Promise<void> }).close?.(),
    }
  },
}

async function cpuNsPerCall(subject: Subject, n: number): Promise<number> {
  for (let i = 0; i < Math.min(n, 10_000); i++) await subject.call()
  ;(globalThis as { gc?: () => void }).gc?.()
  const start = process.cpuUsage()
  for (let i = 0; i < n; i++) await subject.call()
  const used = process.cpuUsage(start)
  return ((used.user + used.system) * 1000) / n
}

{
  const samples = new Map<string, number[]>()
  for (let round = 0; round < ROUNDS; round++) {
    for (const policy of Object.keys(POLICIES)) {
      const order = round % 2 === 0 ? SETUPS : [...SETUPS].reverse()
      for (const name of order) {
        const { lib, mode } = setup(name)
        const subject = (POLICIES[policy] as (typeof POLICIES)[string])(lib, mode.options)
        try {
          const key = `${policy}|${name}`
          const list = samples.get(key) ?? []
          list.push(await cpuNsPerCall(subject, CALLS))
          samples.set(key, list)
        } finally {
          await subject.close()
          await mode.shutdown()
        }
      }
    }
  }
  const rows: (string | number)[][] = []
  const data: Record<string, number> = {}
  for (const policy of Object.keys(POLICIES)) {
    const off = median(samples.get(`${policy}|off`) ?? [])
    for (const name of SETUPS) {
      const ns = median(samples.get(`${policy}|${name}`) ?? [])
      data[`${policy}|${name}`] = ns
      rows.push([policy, name, fmt(ns), name === 'off' ? '' : pct(ns, off)])
    }
  }
  report({
    package: 'resilience',
    name: 'telemetry-policies',
    title: 'Policy success paths under each telemetry setup (CPU ns per awaited call)',
    columns: ['call', 'setup', 'CPU ns/call', 'vs off'],
    rows,
    notes: [
      `${ROUNDS} rounds of ${CALLS} sequential awaited calls per case, setups interleaved (order reversed every other round); medians. "before" is the code of 45c7c6f~1 (no telemetry) in the same process.`,
    ],
    data,
  })
}

// ------------------------------------------------------------ idempotent run on Redis
interface Sample {
  p50: number
  p99: number
  opsPerSec: number
  /** Client CPU per run, µs (user + system of this process). */
  cpu: number
}

async function measureRun(name: Setup, redis: Redis, concurrency: number): Promise<Sample> {
  const { lib, mode } = setup(name)
  const store = lib.createIdempotency({
    redis,
    prefix: `bench-telemetry:${name.replace(/\W/g, '')}:${concurrency}:`,
    retention: 60_000,
    ...mode.options,
  })
  let n = 0
  const prefix = `${Date.now()}-${Math.random()}`
  const run = () => store.run(`${prefix}-${n++}`, { amount: 5 }, () => 'paid')
  try {
    for (let i = 0; i < (SMOKE ? 1 : 1_000); i++)
      await run() // JIT and script cache
    ;(globalThis as { gc?: () => void }).gc?.()
    const cpuBefore = process.cpuUsage()
    const stats = await sampleLatency(run, { iterations: RUNS, concurrency, warmup: 0 })
    const cpu = process.cpuUsage(cpuBefore)
    return {
      p50: stats.p50,
      p99: stats.p99,
      opsPerSec: stats.opsPerSec,
      cpu: (cpu.user + cpu.system) / stats.iterations,
    }
  } finally {
    await store.close()
    await mode.shutdown()
  }
}

const server = await startPrivateRedis()
const redis = new Redis({ port: server.port, host: '127.0.0.1', lazyConnect: true })
try {
  await redis.connect()
  const samples = new Map<string, Sample[]>()
  for (let round = 0; round < ROUNDS; round++) {
    for (const concurrency of CONCURRENCIES) {
      const order = round % 2 === 0 ? SETUPS : [...SETUPS].reverse()
      for (const name of order) {
        const key = `${name}|${concurrency}`
        const list = samples.get(key) ?? []
        list.push(await measureRun(name, redis, concurrency))
        samples.set(key, list)
      }
    }
  }
  const rows: (string | number)[][] = []
  const data: Record<string, Sample> = {}
  for (const concurrency of CONCURRENCIES) {
    const offCpu = median((samples.get(`off|${concurrency}`) ?? []).map((s) => s.cpu))
    for (const name of SETUPS) {
      const list = samples.get(`${name}|${concurrency}`) ?? []
      const row: Sample = {
        p50: median(list.map((s) => s.p50)),
        p99: median(list.map((s) => s.p99)),
        opsPerSec: median(list.map((s) => s.opsPerSec)),
        cpu: median(list.map((s) => s.cpu)),
      }
      data[`${name}|${concurrency}`] = row
      rows.push([
        name,
        concurrency,
        fmt(row.p50),
        fmt(row.p99),
        fmtInt(row.opsPerSec),
        fmt(row.cpu),
        name === 'off' ? '' : pct(row.cpu, offCpu),
      ])
    }
  }
  report({
    package: 'resilience',
    name: 'telemetry-idempotency',
    title: 'Idempotent run on Redis (claim + complete: two round trips) under each telemetry setup',
    columns: [
      'setup',
      'concurrency',
      'p50 µs',
      'p99 µs',
      'runs/s',
      'client CPU µs/run',
      'CPU vs off',
    ],
    rows,
    notes: [
      `${ROUNDS} rounds of ${RUNS} runs per setup and concurrency, setups interleaved; medians. Private redis-server on loopback.`,
    ],
    data,
  })
} finally {
  redis.disconnect()
  await server.close()
}
