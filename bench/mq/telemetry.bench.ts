/**
 * What telemetry costs a confirmed publish (issue #17): `broker.publish()` of a 256 B Buffer to a
 * queue, each settled by the broker's confirm, under the four setups of bench/telemetry.ts in one
 * run: no SDK, an SDK with metrics only, and traces sampled at 100% and at 1%. With an SDK a
 * publish records one `messaging.client.operation.duration` point (a timestamp and one callback
 * on the confirm) and, when sampled, one PRODUCER span whose context goes into the message's
 * headers (`traceparent`: 55 bytes more per message); the counters are read at collection time
 * and cost the publish nothing. Two loads: one publish at a time (latency: the confirm round trip
 * dominates) and a window of 1000 unconfirmed publishes (throughput, where the client's CPU is the
 * limit); the client CPU per publish is where the overhead shows. Rounds interleave the setups and
 * the table gives medians, with each setup's ratio to "off" taken within a round.
 *
 *   node --expose-gc --conditions=@ballast/source --import tsx bench/mq/telemetry.bench.ts
 *
 * Knobs: MQ_TELEMETRY_ROUNDS (5), MQ_TELEMETRY_N (messages per windowed run, 20000).
 * MQ_BEFORE=<path of a pre-telemetry copy of packages/mq/src/index.ts> adds a "before" row: the
 * same code without telemetry (e.g. `git show 45c7c6f~1:packages/mq/src/...` copied into
 * packages/mq/.before/src, so its imports resolve from the package's node_modules).
 */
import { createBroker } from '@ballast/mq'
import { amqpUrl } from '@ballast/testkit'
import amqp from 'amqplib'
import { fmt, fmtInt, isSmoke, report, sampleLatency } from '../harness.js'
import { TELEMETRY_MODES, type TelemetryMode, telemetryMode } from '../telemetry.js'

const SMOKE = isSmoke()
const ROUNDS = SMOKE ? 1 : Number(process.env.MQ_TELEMETRY_ROUNDS ?? 5)
const N = SMOKE ? 200 : Number(process.env.MQ_TELEMETRY_N ?? 20_000)
const SEQUENTIAL = SMOKE ? 20 : Math.max(200, Math.floor(N / 10))
const WINDOW = 1000
const BODY = Buffer.alloc(256, 'x')

type Setup = TelemetryMode['name'] | 'before'
type Create = typeof createBroker

interface Sample {
  /** One publish at a time: p50 and p99 latency, µs. */
  p50: number
  p99: number
  /** Window of 1000: publishes confirmed per second. */
  rate: number
  /** Window of 1000: client CPU per publish, µs (user + system of this process). */
  cpu: number
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN
}

/** Runs `fn(i)` for i < n with at most `window` unsettled at once. */
async function windowed(n: number, window: number, fn: () => Promise<unknown>): Promise<void> {
  let next = 0
  const worker = async () => {
    while (next < n) {
      next++
      await fn()
    }
  }
  await Promise.all(Array.from({ length: window }, worker))
}

const url = await amqpUrl()
const queue = `bench_mq_telemetry_${process.pid}`
const admin = await amqp.connect(url)
const adminChannel = await admin.createChannel()
await adminChannel.assertQueue(queue, { durable: true })

const before: Create | undefined =
  process.env.MQ_BEFORE === undefined
    ? undefined
    : ((await import(process.env.MQ_BEFORE)) as { createBroker: Create }).createBroker
const SETUPS: Setup[] = before === undefined ? [...TELEMETRY_MODES] : ['before', ...TELEMETRY_MODES]

async function measure(setup: Setup): Promise<Sample> {
  const mode = telemetryMode(setup === 'before' ? 'off' : setup)
  const create = setup === 'before' ? (before as Create) : createBroker
  const broker = create({
    urls: url,
    confirmWindow: WINDOW,
    maxBuffered: N,
    name: `bench-telemetry-${setup.replace(/\W/g, '')}`,
    ...mode.options,
  })
  try {
    await broker.ready()
    const publish = () => broker.publish('', queue, BODY)
    await windowed(SMOKE ? 10 : 2000, WINDOW, publish) // JIT, channel
    await adminChannel.purgeQueue(queue)
    ;(globalThis as { gc?: () => void }).gc?.()
    const latency = await sampleLatency(publish, { iterations: SEQUENTIAL, warmup: 0 })
    ;(globalThis as { gc?: () => void }).gc?.()
    const cpuBefore = process.cpuUsage()
    const started = performance.now()
    await windowed(N, WINDOW, publish)
    const seconds = (performance.now() - started) / 1000
    const cpu = process.cpuUsage(cpuBefore)
    await adminChannel.purgeQueue(queue)
    return {
      p50: latency.p50,
      p99: latency.p99,
      rate: N / seconds,
      cpu: (cpu.user + cpu.system) / N,
    }
  } finally {
    await broker.close()
    await mode.shutdown()
  }
}

try {
  const samples = new Map<Setup, Sample[]>()
  for (let round = 0; round < ROUNDS; round++) {
    // rotate the order each round: no setup always runs first (cold) or last
    const order = SETUPS.map((_, i) => SETUPS[(i + round) % SETUPS.length] as Setup)
    for (const setup of order) {
      const list = samples.get(setup) ?? []
      list.push(await measure(setup))
      samples.set(setup, list)
    }
  }
  const off = samples.get('off') as Sample[]
  /** Median over rounds of a setup's figure divided by "off"'s of the same round. */
  const ratio = (list: Sample[], key: keyof Sample) =>
    median(list.map((s, i) => s[key] / ((off[i] as Sample)[key] ?? Number.NaN)))
  const pct = (r: number) => `${r >= 1 ? '+' : ''}${((r - 1) * 100).toFixed(1)}%`
  const rows: (string | number)[][] = []
  const data: Record<string, Sample & { cpuVsOff: number; rateVsOff: number }> = {}
  for (const setup of SETUPS) {
    const list = samples.get(setup) as Sample[]
    const row = {
      p50: median(list.map((s) => s.p50)),
      p99: median(list.map((s) => s.p99)),
      rate: median(list.map((s) => s.rate)),
      cpu: median(list.map((s) => s.cpu)),
      cpuVsOff: ratio(list, 'cpu'),
      rateVsOff: ratio(list, 'rate'),
    }
    data[setup] = row
    rows.push([
      setup,
      fmt(row.p50),
      fmt(row.p99),
      fmtInt(row.rate),
      setup === 'off' ? '' : pct(row.rateVsOff),
      fmt(row.cpu),
      setup === 'off' ? '' : pct(row.cpuVsOff),
    ])
  }
  report({
    package: 'mq',
    name: 'telemetry',
    title: 'Confirmed publish (256 B, persistent, mandatory) under each telemetry setup',
    columns: [
      'setup',
      'one at a time p50 µs',
      'p99 µs',
      'window 1000: msg/s',
      'msg/s vs off',
      'client CPU µs/msg',
      'CPU vs off',
    ],
    rows,
    notes: [
      `${ROUNDS} rounds, setups interleaved (order rotated each round); per setup and round ${SEQUENTIAL} sequential publishes, then ${N} with 1000 unconfirmed at once. Medians; "vs off" is the median of the per-round ratios. Local RabbitMQ on loopback.`,
    ],
    data,
  })
} finally {
  await adminChannel.deleteQueue(queue).catch(() => {})
  await admin.close()
}
