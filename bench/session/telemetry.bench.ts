/**
 * What telemetry costs a session load (issue #17): `loadRequest` with a valid cookie, one
 * Redis round trip (EVALSHA of the load script), under the four setups of bench/telemetry.ts
 * in one run: no SDK, an SDK with metrics only, and traces sampled at 100% and at 1%. With
 * an SDK, a load records one `db.client.operation.duration` point and, when sampled, two spans
 * (`ballast.session.load` and its `EVALSHA load` child); the counters are read at collection
 * time and cost the load nothing. Latency is dominated by the round trip, so the table also
 * gives the client CPU per load, where the overhead shows. A private redis-server keeps other
 * traffic out; rounds interleave the setups and the table gives medians.
 *
 *   node --expose-gc --conditions=@ballast/source --import tsx bench/session/telemetry.bench.ts
 */
import { createSessionStore } from '@ballast/session'
import { Redis } from 'ioredis'
import { fmt, fmtInt, isSmoke, report, sampleLatency } from '../harness.js'
import { TELEMETRY_MODES, type TelemetryMode, telemetryMode } from '../telemetry.js'
import { startPrivateRedis } from './redisServer.js'

const SMOKE = isSmoke()
const ROUNDS = SMOKE ? 1 : Number(process.env.SESSION_BENCH_ROUNDS ?? 5)
const ITERATIONS = SMOKE ? 20 : Number(process.env.SESSION_BENCH_ITERATIONS ?? 20_000)
const CONCURRENCIES = [1, 32] as const
const SECRET = 'bench-secret-0123456789-abcdefghijklmn'

interface Sample {
  p50: number
  p99: number
  opsPerSec: number
  /** Client CPU per load, µs (user + system of this process). */
  cpu: number
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN
}

async function measureMode(
  name: TelemetryMode['name'],
  redis: Redis,
  concurrency: number,
): Promise<Sample> {
  const mode = telemetryMode(name)
  const store = createSessionStore({
    redis,
    secrets: SECRET,
    prefix: `bench-telemetry:${name.replace(/\W/g, '')}:`,
    ...mode.options,
  })
  try {
    const { token, id } = await store.create({ data: { cart: ['sku-1', 'sku-2'], views: 3 } })
    const cookie = `${store.cookieName}=${token}`
    const load = () => store.loadRequest({ cookie })
    for (let i = 0; i < (SMOKE ? 1 : 2_000); i++)
      await load() // JIT and script cache
    ;(globalThis as { gc?: () => void }).gc?.()
    const cpuBefore = process.cpuUsage()
    const stats = await sampleLatency(load, { iterations: ITERATIONS, concurrency, warmup: 0 })
    const cpu = process.cpuUsage(cpuBefore)
    await store.destroy(id)
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
      for (const name of TELEMETRY_MODES) {
        const key = `${name}|${concurrency}`
        const list = samples.get(key) ?? []
        list.push(await measureMode(name, redis, concurrency))
        samples.set(key, list)
      }
    }
  }
  const rows: (string | number)[][] = []
  const data: Record<string, Sample> = {}
  for (const concurrency of CONCURRENCIES) {
    const off = samples.get(`off|${concurrency}`)!
    const offCpu = median(off.map((s) => s.cpu))
    for (const name of TELEMETRY_MODES) {
      const list = samples.get(`${name}|${concurrency}`)!
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
        name === 'off' ? '' : `${(((row.cpu - offCpu) / offCpu) * 100).toFixed(1)}%`,
      ])
    }
  }
  report({
    package: 'session',
    name: 'telemetry',
    title: 'Session load (loadRequest, one Redis round trip) under each telemetry setup',
    columns: [
      'setup',
      'concurrency',
      'p50 µs',
      'p99 µs',
      'loads/s',
      'client CPU µs/load',
      'CPU vs off',
    ],
    rows,
    notes: [
      `${ROUNDS} rounds of ${ITERATIONS} loads per setup and concurrency, setups interleaved; medians. Private redis-server on loopback.`,
    ],
    data,
  })
} finally {
  redis.disconnect()
  await server.close()
}
