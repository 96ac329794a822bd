/**
 * What telemetry costs a routed query (issue #17): `router.query(key, SELECT … WHERE user_id = ?)`
 * on one shard's primary, one round trip to a loopback MariaDB, under the four setups of
 * bench/telemetry.ts in one run: no SDK, an SDK with metrics only, and traces sampled at 100%
 * and at 1%. With an SDK a query records one `db.client.operation.duration` point and, when
 * sampled, one CLIENT span (`SELECT <db>`); the counters are read at collection time and cost
 * the query nothing. Latency is dominated by the round trip, so the table also gives the client
 * CPU per query, where the overhead shows. Rounds interleave the setups (in alternating order)
 * and the table gives medians.
 *
 * A second table isolates the client work telemetry adds to one statement, without the round
 * trip whose noise hides it in the first: the span and duration of a statement (what the router
 * does around each mysql2 call), in ns, under each setup.
 *
 * With SHARDING_BENCH_BEFORE set to a checkout of the code before telemetry (a worktree of
 * 45c7c6f~1 with its dependencies installed), its router runs in the same rounds as a fifth
 * setup, "before telemetry", which "off" must match.
 *
 *   node --expose-gc --conditions=@ballast/source --import tsx bench/sharding/telemetry.bench.ts
 */
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { createShardRouter } from '@ballast/sharding'
import { metrics, trace } from '@opentelemetry/api'
import {
  queryInstruments,
  ServerTelemetry,
} from '../../packages/sharding/src/internal/queryTelemetry.js'
import { fmt, fmtInt, isSmoke, report, sampleLatency } from '../harness.js'
import { TELEMETRY_MODES, type TelemetryMode, telemetryMode } from '../telemetry.js'
import { benchDatabase, MYSQL_URL, run } from './servers.js'

const SMOKE = isSmoke()
const ROUNDS = SMOKE ? 1 : Number(process.env.SHARDING_BENCH_ROUNDS ?? 7)
const ITERATIONS = SMOKE ? 20 : Number(process.env.SHARDING_BENCH_ITERATIONS ?? 4_000)
const CONCURRENCIES = [1, 8] as const
const BEFORE = process.env.SHARDING_BENCH_BEFORE
const SQL = 'SELECT id, total FROM orders WHERE user_id = ?'

interface Sample {
  p50: number
  p99: number
  opsPerSec: number
  /** Client CPU per query, µs (user + system of this process). */
  cpu: number
}

interface Setup {
  name: string
  query: (i: number) => Promise<unknown>
  close(): Promise<void>
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN
}

type CreateRouter = typeof createShardRouter

function setup(name: string, create: CreateRouter, url: string, mode?: TelemetryMode): Setup {
  const router = create({
    shards: [{ id: 'a', primary: url }],
    // Every setup keeps its pool open through the run: 8 connections each leave the shared
    // server room for others.
    connectionLimit: 8,
    healthCheckInterval: 0,
    ...mode?.options,
  })
  return {
    name,
    query: (i) => router.query(`u${i & 127}`, SQL, [`u${i & 127}`]),
    async close() {
      await router.close()
      await mode?.shutdown()
    },
  }
}

async function measure(s: Setup, concurrency: number): Promise<Sample> {
  ;(globalThis as { gc?: () => void }).gc?.()
  const cpuBefore = process.cpuUsage()
  const stats = await sampleLatency(s.query, { iterations: ITERATIONS, concurrency, warmup: 0 })
  const cpu = process.cpuUsage(cpuBefore)
  return {
    p50: stats.p50,
    p99: stats.p99,
    opsPerSec: stats.opsPerSec,
    cpu: (cpu.user + cpu.system) / stats.iterations,
  }
}

/**
 * ns of telemetry work per statement (span and duration, begun and ended as the router does
 * around each mysql2 call) under each setup, rounds interleaved, medians; `none` is the empty
 * loop, the cost of the code before telemetry.
 */
async function perStatement(): Promise<void> {
  const N = SMOKE ? 1_000 : 200_000
  const RUNS = SMOKE ? 1 : 15
  const result = [{ id: 1, total: '1.00' }]
  const modes = TELEMETRY_MODES.map((name) => telemetryMode(name))
  const cases: Array<{ name: string; run: () => void }> = [
    {
      name: 'none (before telemetry)',
      run: () => {
        for (let i = 0; i < N; i++) if (result.length === 0) throw new Error('never')
      },
    },
    ...modes.map((mode) => {
      const meter = (mode.options.meterProvider ?? metrics.getMeterProvider()).getMeter('bench')
      const tracer = (mode.options.tracerProvider ?? trace.getTracerProvider()).getTracer('bench')
      const server = new ServerTelemetry(queryInstruments(meter, tracer), 'a', 'primary', MYSQL_URL)
      server.noteServerVersion('10.11.6-MariaDB-0+deb12u1')
      return {
        name: mode.name,
        run: () => {
          for (let i = 0; i < N; i++) server.begin(SQL).end(result)
        },
      }
    }),
  ]
  const ns = new Map<string, number[]>()
  for (let round = 0; round < RUNS; round++) {
    const order = round % 2 === 0 ? cases : [...cases].reverse()
    for (const c of order) {
      const t0 = process.hrtime.bigint()
      c.run()
      const list = ns.get(c.name) ?? []
      list.push(Number(process.hrtime.bigint() - t0) / N)
      ns.set(c.name, list)
    }
  }
  for (const mode of modes) await mode.shutdown()
  report({
    package: 'sharding',
    name: 'telemetry-statement',
    title:
      'Telemetry work per statement, without the round trip (span + db.client.operation.duration)',
    columns: ['setup', 'ns/statement'],
    rows: cases.map((c) => [c.name, fmt(median(ns.get(c.name)!))]),
    notes: [
      `${RUNS} rounds of ${N} statements per setup, interleaved in alternating order; medians. No parent span: the traces 1% setup samples 1% of them.`,
    ],
    data: Object.fromEntries(ns),
  })
}

const db = await benchDatabase(MYSQL_URL, 'telemetry')
const setups: Setup[] = []
try {
  await run(
    db.url,
    'CREATE TABLE orders (id BIGINT PRIMARY KEY, user_id VARCHAR(64), total DECIMAL(10,2), KEY (user_id))',
  )
  await run(
    db.url,
    'INSERT INTO orders SELECT seq, CONCAT("u", seq % 128), seq / 7 FROM seq_1_to_1000',
  )
  if (BEFORE !== undefined) {
    const entry = pathToFileURL(join(BEFORE, 'packages/sharding/src/index.ts')).href
    const before = (await import(entry)) as { createShardRouter: CreateRouter }
    setups.push(setup('before telemetry', before.createShardRouter, db.url))
  }
  for (const name of TELEMETRY_MODES)
    setups.push(setup(name, createShardRouter, db.url, telemetryMode(name)))
  for (const s of setups) for (let i = 0; i < (SMOKE ? 1 : 2_000); i++) await s.query(i) // JIT, pool

  const samples = new Map<string, Sample[]>()
  for (let round = 0; round < ROUNDS; round++) {
    for (const concurrency of CONCURRENCIES) {
      const order = round % 2 === 0 ? setups : [...setups].reverse()
      for (const s of order) {
        const key = `${s.name}|${concurrency}`
        const list = samples.get(key) ?? []
        list.push(await measure(s, concurrency))
        samples.set(key, list)
      }
    }
  }

  const rows: (string | number)[][] = []
  const data: Record<string, Sample> = {}
  const pct = (x: number, off: number) => `${(((x - off) / off) * 100).toFixed(1)}%`
  for (const concurrency of CONCURRENCIES) {
    const of = (name: string): Sample => {
      const list = samples.get(`${name}|${concurrency}`)!
      return {
        p50: median(list.map((s) => s.p50)),
        p99: median(list.map((s) => s.p99)),
        opsPerSec: median(list.map((s) => s.opsPerSec)),
        cpu: median(list.map((s) => s.cpu)),
      }
    }
    const off = of('off')
    for (const s of setups) {
      const row = of(s.name)
      data[`${s.name}|${concurrency}`] = row
      rows.push([
        s.name,
        concurrency,
        fmt(row.p50),
        s.name === 'off' ? '' : pct(row.p50, off.p50),
        fmt(row.p99),
        fmtInt(row.opsPerSec),
        fmt(row.cpu),
        s.name === 'off' ? '' : pct(row.cpu, off.cpu),
      ])
    }
  }
  report({
    package: 'sharding',
    name: 'telemetry',
    title:
      'Routed query (router.query, SELECT by indexed key on the primary, loopback MariaDB) under each telemetry setup',
    columns: [
      'setup',
      'concurrency',
      'p50 µs',
      'p50 vs off',
      'p99 µs',
      'queries/s',
      'client CPU µs/query',
      'CPU vs off',
    ],
    rows,
    notes: [
      `${ROUNDS} rounds of ${ITERATIONS} queries per setup and concurrency, setups interleaved in alternating order; medians.${BEFORE === undefined ? '' : ' "before telemetry" is the router of the checkout in SHARDING_BENCH_BEFORE.'}`,
    ],
    data,
  })
} finally {
  for (const s of setups) await s.close()
  await db.drop()
}
await perStatement()
