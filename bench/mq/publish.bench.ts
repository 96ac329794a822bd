/**
 * Confirmed persistent publishing and end-to-end (publish + consume + ack) throughput of
 * @ballast/mq against raw amqplib (same confirm window), amqp-connection-manager and rascal,
 * all in this one process against the local RabbitMQ, in interleaved rounds.
 *
 * Fairness: every client publishes the same 256 B Buffer with the same window (1000 unsettled
 * publishes, one confirm channel). Ours sets persistent, mandatory and a random UUID message id
 * by default (no timestamp or appId unless `stamp: true`, no contentType for a Buffer), and runs
 * a second time with `mandatory: false`; the peers run twice: bare (persistent only, their usual
 * call) and with exactly ours' default properties ("same properties"). rascal runs with its
 * defaults (persistent, mandatory, a UUID message id) on N/10 messages (it is an order of
 * magnitude slower; rates are per message). brokerWork.bench.ts shows what each property costs
 * the broker.
 *
 * Run: cd /work/main && source scripts/env.sh && pnpm exec tsx --conditions=@ballast/source bench/mq/publish.bench.ts
 * Knobs: BENCH_MQ_N (messages per run, 20000), BENCH_MQ_ROUNDS (5), BENCH_MQ_E2E=0 skips end to end.
 */
import { randomUUID } from 'node:crypto'
import { createBroker } from '@ballast/mq'
import { amqpUrl } from '@ballast/testkit'
import amqpcm from 'amqp-connection-manager'
import amqp from 'amqplib'
import rascal from 'rascal'
import { fmtInt, isSmoke, report } from '../harness.js'

const N = isSmoke() ? 200 : Number(process.env.BENCH_MQ_N ?? 20_000)
const ROUNDS = isSmoke() ? 1 : Number(process.env.BENCH_MQ_ROUNDS ?? 5)
const E2E = process.env.BENCH_MQ_E2E !== '0'
const WINDOW = 1000
const BODY = Buffer.alloc(256, 'x')
const url = await amqpUrl()
const prefix = `bench_mq_${process.pid}`

/** Runs `fn(i)` for i < n with at most `window` unsettled at once. */
async function windowed(
  n: number,
  window: number,
  fn: (i: number) => Promise<unknown>,
): Promise<void> {
  let next = 0
  const worker = async () => {
    while (next < n) await fn(next++)
  }
  await Promise.all(Array.from({ length: window }, worker))
}

const admin = await amqp.connect(url)
const adminChannel = await admin.createChannel()
async function freshQueue(kind: 'classic' | 'quorum'): Promise<string> {
  const name = `${prefix}.${kind}`
  await adminChannel.assertQueue(name, {
    durable: true,
    arguments: kind === 'quorum' ? { 'x-queue-type': 'quorum' } : {},
  })
  await adminChannel.purgeQueue(name)
  return name
}

type Contestant = {
  name: string
  publish: (queue: string, n: number) => Promise<void>
  close: () => Promise<void>
  ours?: boolean
  /** Messages per run (rascal: fewer). */
  n?: number
}

/** The properties our broker sets by default. */
const same = () => ({
  persistent: true,
  mandatory: true,
  messageId: randomUUID(),
})
const bare = () => ({ persistent: true })

// ours, with its defaults, and without `mandatory` (the one default that costs the broker work:
// its channel process spends about 12% more reductions per message on a mandatory one)
const broker = createBroker({ urls: url, confirmWindow: WINDOW, maxBuffered: N, name: 'bench' })
const looseBroker = createBroker({
  urls: url,
  confirmWindow: WINDOW,
  maxBuffered: N,
  name: 'bench-loose',
  mandatory: false,
})
await Promise.all([broker.ready(), looseBroker.ready()])
const ours: Contestant = {
  name: '@ballast/mq',
  ours: true,
  publish: (queue, n) => windowed(n, WINDOW, () => broker.publish('', queue, BODY)),
  close: () => broker.close(),
}
const oursLoose: Contestant = {
  name: '@ballast/mq (mandatory: false)',
  ours: true,
  publish: (queue, n) => windowed(n, WINDOW, () => looseBroker.publish('', queue, BODY)),
  close: () => looseBroker.close(),
}

// raw amqplib, confirm channel, same window
const rawConn = await amqp.connect(url)
const rawChannel = await rawConn.createConfirmChannel()
const rawWith = (name: string, props: () => amqp.Options.Publish): Contestant => ({
  name,
  publish: (queue, n) =>
    windowed(
      n,
      WINDOW,
      () =>
        new Promise<void>((resolve, reject) => {
          rawChannel.publish('', queue, BODY, props(), (err) => (err ? reject(err) : resolve()))
        }),
    ),
  close: async () => {},
})
const raw = rawWith('amqplib (raw, bare)', bare)
const rawSame = rawWith('amqplib (raw, same properties)', same)

// amqp-connection-manager
const acmConn = amqpcm.connect([url])
const acmChannel = acmConn.createChannel({ json: false })
await acmChannel.waitForConnect()
const acmWith = (name: string, props: () => amqp.Options.Publish): Contestant => ({
  name,
  publish: (queue, n) => windowed(n, WINDOW, () => acmChannel.publish('', queue, BODY, props())),
  close: async () => {},
})
const acm = acmWith('amqp-connection-manager (bare)', bare)
const acmSame = acmWith('amqp-connection-manager (same properties)', same)

// rascal, defaults (confirm channel, persistent, mandatory)
const rascalQueues = { classic: `${prefix}.classic`, quorum: `${prefix}.quorum` }
const rascalBroker = await rascal.BrokerAsPromised.create(
  rascal.withDefaultConfig({
    vhosts: {
      '/': {
        connection: { url },
        queues: {
          [rascalQueues.classic]: { assert: false, check: false },
          [rascalQueues.quorum]: { assert: false, check: false },
        },
        publications: {
          classic: { queue: rascalQueues.classic },
          quorum: { queue: rascalQueues.quorum },
        },
      },
    },
  }),
)
rascalBroker.on('error', () => {})
const rascalContestant: Contestant = {
  name: 'rascal (defaults)',
  n: Math.max(1, Math.floor(N / 10)),
  publish: (queue, n) =>
    windowed(
      n,
      WINDOW,
      async () =>
        new Promise<void>((resolve, reject) => {
          rascalBroker
            .publish(queue.endsWith('quorum') ? 'quorum' : 'classic', BODY)
            .then((publication) => {
              publication.on('success', () => resolve())
              publication.on('error', reject)
            })
            .catch(reject)
        }),
    ),
  close: () => rascalBroker.shutdown(),
}

const order = [ours, oursLoose, raw, rawSame, acm, acmSame, rascalContestant]
const contestants = [...order]
const closeAll = async () => {
  await broker.close()
  await looseBroker.close()
  await rawConn.close()
  await acmChannel.close()
  await acmConn.close()
  await rascalBroker.shutdown()
}
// warm up (JIT, channels) without recording
for (const c of order) await c.publish(await freshQueue('classic'), Math.min(c.n ?? N, 2000))
const results = new Map<string, number[]>()
/** Client CPU time (user + system, this process) per message, in µs: robust to a loaded machine. */
const cpuPerMessage = new Map<string, number[]>()
for (const kind of ['classic', 'quorum'] as const) {
  for (let round = 0; round < ROUNDS; round++) {
    for (const c of contestants) {
      const queue = await freshQueue(kind)
      const n = c.n ?? N
      const cpu0 = process.cpuUsage()
      const t0 = process.hrtime.bigint()
      await c.publish(queue, n)
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9
      const cpu = process.cpuUsage(cpu0)
      const key = `${kind}|${c.name}`
      results.set(key, [...(results.get(key) ?? []), n / seconds])
      cpuPerMessage.set(key, [...(cpuPerMessage.get(key) ?? []), (cpu.user + cpu.system) / n])
    }
    // rotate the order every round so no client always runs right after another
    contestants.push(contestants.shift() as Contestant)
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0
const rows: (string | number)[][] = []
for (const kind of ['classic', 'quorum'] as const) {
  // the ratio of each round (same load) of one of ours to `rates`, then their median and range
  const ratio = (who: Contestant, rates: number[]) => {
    const mine = results.get(`${kind}|${who.name}`) ?? []
    const ratios = rates.map((r, i) => (mine[i] ?? 0) / r).sort((a, b) => a - b)
    return `${median(ratios).toFixed(2)}x (${(ratios[0] ?? 0).toFixed(2)}-${(ratios.at(-1) ?? 0).toFixed(2)})`
  }
  for (const c of order) {
    const rates = results.get(`${kind}|${c.name}`) ?? []
    rows.push([
      kind,
      c.ours ? `**${c.name}**` : c.name,
      fmtInt(median(rates)),
      median(cpuPerMessage.get(`${kind}|${c.name}`) ?? []).toFixed(1),
      c === ours ? '' : ratio(ours, rates),
      c.ours ? '' : ratio(oursLoose, rates),
    ])
  }
}
report({
  package: 'mq',
  name: 'publish',
  title: `Confirmed persistent publish, ${N} x 256 B, window ${WINDOW}, median of ${ROUNDS} interleaved rounds`,
  columns: [
    'queue',
    'client',
    'msg/s (median)',
    'client CPU µs/msg (median)',
    'ours / this: median of per-round ratios (range)',
    'ours with mandatory: false / this',
  ],
  rows,
  notes: [
    'ours / this above 1 means ours is faster. Publish only (queue purged before each run); the order of clients rotates every round.',
    'Same properties = persistent, mandatory and a UUID message id, as ours sends by default; bare = persistent only.',
  ],
  data: {
    rates: Object.fromEntries(results),
    cpuMicrosPerMessage: Object.fromEntries(cpuPerMessage),
  },
})

// end to end: publish and consume together, latency from publish to handler
const e2eRows: (string | number)[][] = []
for (const kind of E2E ? (['classic', 'quorum'] as const) : []) {
  for (const who of ['ours', 'raw'] as const) {
    const rates: number[] = []
    let lat: number[] = []
    for (let round = 0; round < ROUNDS; round++) {
      const queue = await freshQueue(kind)
      lat = []
      let got = 0
      let done: () => void = () => {}
      const finished = new Promise<void>((r) => {
        done = r
      })
      const onBody = (content: Buffer) => {
        lat.push(Number(process.hrtime.bigint() - content.readBigUInt64BE(0)) / 1e3)
        if (++got === N) done()
      }
      let cancel: () => Promise<void>
      if (who === 'ours') {
        const consumer = await broker.consume(queue, (m) => onBody(m.content), { prefetch: 500 })
        cancel = () => consumer.cancel()
      } else {
        const ch = await rawConn.createChannel()
        await ch.prefetch(500)
        await ch.consume(queue, (m) => {
          if (m === null) return
          onBody(m.content)
          ch.ack(m)
        })
        cancel = () => ch.close()
      }
      const t0 = process.hrtime.bigint()
      const publish =
        who === 'ours'
          ? (i: number) => {
              const body = Buffer.alloc(256, 'x')
              body.writeBigUInt64BE(process.hrtime.bigint(), 0)
              return broker.publish('', queue, body, { messageId: String(i) })
            }
          : () =>
              new Promise<void>((resolve, reject) => {
                const body = Buffer.alloc(256, 'x')
                body.writeBigUInt64BE(process.hrtime.bigint(), 0)
                rawChannel.publish('', queue, body, { persistent: true }, (err) =>
                  err ? reject(err) : resolve(),
                )
              })
      await windowed(N, WINDOW, publish)
      await finished
      rates.push(N / (Number(process.hrtime.bigint() - t0) / 1e9))
      await cancel()
    }
    lat.sort((a, b) => a - b)
    const at = (q: number) => lat[Math.min(lat.length - 1, Math.floor(q * lat.length))] ?? 0
    e2eRows.push([
      kind,
      who === 'ours' ? '**@ballast/mq**' : 'amqplib (raw)',
      fmtInt(median(rates)),
      (at(0.5) / 1000).toFixed(1),
      (at(0.99) / 1000).toFixed(1),
    ])
  }
}
if (E2E)
  report({
    package: 'mq',
    name: 'end-to-end',
    title: `End to end (publish + consume + ack together), ${N} x 256 B, window ${WINDOW}, prefetch 500`,
    columns: ['queue', 'client', 'msg/s (median)', 'p50 ms', 'p99 ms'],
    rows: e2eRows,
    notes: ['Latency is publish call to handler, of the last round.'],
  })

await closeAll()
for (const kind of ['classic', 'quorum'])
  await adminChannel.deleteQueue(`${prefix}.${kind}`).catch(() => {})
await admin.close()
