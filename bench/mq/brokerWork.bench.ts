/**
 * What each message property costs RabbitMQ itself: the broker's reductions (Erlang's unit of
 * work, independent of the machine's load) per confirmed persistent message, per broker process,
 * on a classic queue, for raw amqplib with each property set and for @ballast/mq.
 *
 * Throughput on this machine swings by ±20% between runs; reductions do not, so they show which
 * property the broker pays for. Read through `rabbitmqctl eval` and RabbitMQ's bundled `recon`:
 * the queue's depth before and after a `recon:proc_window` over the busiest processes gives the
 * messages of exactly that window. Needs `rabbitmqctl` for the broker under test (the local one).
 *
 * Run: cd /work/main && source scripts/env.sh && pnpm exec tsx --conditions=@ballast/source bench/mq/brokerWork.bench.ts
 * Knobs: BENCH_MQ_WORK_ROUNDS (3), BENCH_MQ_WORK_WINDOW_MS (2000).
 */
import { execFile } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { promisify } from 'node:util'
import { createBroker } from '@ballast/mq'
import { amqpUrl } from '@ballast/testkit'
import amqp from 'amqplib'
import { isSmoke, report } from '../harness.js'

const ROUNDS = isSmoke() ? 1 : Number(process.env.BENCH_MQ_WORK_ROUNDS ?? 3)
const WINDOW_MS = isSmoke() ? 500 : Number(process.env.BENCH_MQ_WORK_WINDOW_MS ?? 2000)
const IN_FLIGHT = 1000
const BODY = Buffer.alloc(256, 'x')
const url = await amqpUrl()
const queue = `bench_mq_work_${process.pid}`

const connection = await amqp.connect(url)
const admin = await connection.createChannel()
const channel = await connection.createConfirmChannel()
await admin.assertQueue(queue, { durable: true })
const broker = createBroker({ urls: url, name: 'bench-work' })
const loose = createBroker({ urls: url, name: 'bench-work-loose', mandatory: false })
const stamped = createBroker({ urls: url, name: 'bench-work-stamped', stamp: true })
await Promise.all([broker.ready(), loose.ready(), stamped.ready()])

const raw = (props: () => amqp.Options.Publish) => (): Promise<void> =>
  new Promise((resolve, reject) =>
    channel.publish('', queue, BODY, props(), (error) => (error ? reject(error) : resolve())),
  )
const variants: [string, () => Promise<void>][] = [
  ['amqplib: persistent (bare)', raw(() => ({ persistent: true }))],
  ['amqplib: + message id', raw(() => ({ persistent: true, messageId: randomUUID() }))],
  ['amqplib: + mandatory', raw(() => ({ persistent: true, mandatory: true }))],
  [
    'amqplib: + message id + mandatory',
    raw(() => ({ persistent: true, mandatory: true, messageId: randomUUID() })),
  ],
  ['@ballast/mq (defaults)', () => broker.publish('', queue, BODY)],
  ['@ballast/mq (mandatory: false)', () => loose.publish('', queue, BODY)],
  ['@ballast/mq (stamp: true)', () => stamped.publish('', queue, BODY)],
]

/** Erlang run by `rabbitmqctl eval`: messages enqueued in the window, and reductions per message of the busiest processes. */
const probe = `
  Depth = fun() ->
    {ok, Q} = rabbit_amqqueue:lookup(rabbit_misc:r(<<"/">>, queue, <<"${queue}">>)),
    [{messages, M}] = rabbit_amqqueue:info(Q, [messages]), M end,
  M0 = Depth(), W = recon:proc_window(reductions, 3, ${WINDOW_MS}), N = Depth() - M0,
  io:format("~p~n", [N]),
  [io:format("~p ~p~n", [element(1, proc_lib:translate_initial_call(P)), R div max(N, 1)]) || {P, R, _} <- W],
  ok.`

async function measure(publish: () => Promise<void>): Promise<Map<string, number>> {
  await admin.purgeQueue(queue)
  let stop = false
  const workers = Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (!stop) await publish()
    }),
  )
  await new Promise((r) => setTimeout(r, 300)) // past the ramp-up
  let out: string
  try {
    out = (await promisify(execFile)('rabbitmqctl', ['eval', probe], { timeout: 60_000 })).stdout
  } catch (error) {
    throw new Error(
      `brokerWork needs rabbitmqctl for the broker at ${new URL(url).host}: ${(error as Error).message}`,
    )
  } finally {
    stop = true
    await workers
  }
  const lines = out.trim().split('\n')
  const messages = Number(lines[0])
  if (!(messages > 0)) throw new Error(`brokerWork: no message enqueued in the window:\n${out}`)
  const perProcess = new Map<string, number>()
  for (const line of lines.slice(1)) {
    const [module, reductions] = line.split(' ')
    const role =
      module === 'rabbit_prequeue' || module === 'rabbit_amqqueue_process'
        ? 'queue'
        : module === 'rabbit_channel'
          ? 'channel'
          : module === 'rabbit_reader'
            ? 'reader'
            : undefined
    if (role !== undefined) perProcess.set(role, Number(reductions))
  }
  return perProcess
}

const samples = new Map<string, Map<string, number>[]>()
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, publish] of variants) {
    samples.set(name, [...(samples.get(name) ?? []), await measure(publish)])
  }
  variants.push(variants.shift() as [string, () => Promise<void>])
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0
const roles = ['queue', 'channel', 'reader'] as const
const bare = samples.get('amqplib: persistent (bare)') ?? []
const total = (s: Map<string, number>) => roles.reduce((sum, r) => sum + (s.get(r) ?? 0), 0)
const bareTotal = median(bare.map(total))
const rows = [...samples].map(([name, runs]) => {
  const totals = median(runs.map(total))
  return [
    name,
    ...roles.map((r) => String(median(runs.map((s) => s.get(r) ?? 0)))),
    String(totals),
    `${(((totals - bareTotal) / bareTotal) * 100).toFixed(1)}%`,
  ]
})
report({
  package: 'mq',
  name: 'broker-work',
  title: `RabbitMQ reductions per confirmed persistent 256 B message, classic queue, ${IN_FLIGHT} in flight, median of ${ROUNDS} windows of ${WINDOW_MS} ms`,
  columns: ['publisher', 'queue process', 'channel process', 'reader process', 'total', 'vs bare'],
  rows,
  notes: [
    'Reductions count the work of each Erlang process; the three busiest during publishing are these.',
  ],
  data: Object.fromEntries([...samples].map(([k, v]) => [k, v.map((m) => Object.fromEntries(m))])),
})

await broker.close()
await loose.close()
await stamped.close()
await admin.deleteQueue(queue)
await connection.close()
