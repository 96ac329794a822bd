import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { createIdempotency } from '@ballast/resilience'
import {
  amqpNames,
  amqpUrl,
  createFaultProxy,
  type FaultProxy,
  redisKeyspace,
  redisUrl,
} from '@ballast/testkit'
import amqp from 'amqplib'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  type Broker,
  BufferFullError,
  createBroker,
  idempotencyDeduplicator,
  PublishUnconfirmedError,
} from '../src/index.js'
import { closeSafely } from '../src/internal/closeSafely.js'
import { closeAll, until, within } from './support/bounded.js'

const names = amqpNames('mqfault')
let url: string
let proxy: FaultProxy
let redis: Redis
let keyspace: Awaited<ReturnType<typeof redisKeyspace>>
const brokers: Broker[] = []

beforeAll(async () => {
  url = await amqpUrl()
  const u = new URL(url)
  proxy = await createFaultProxy({ host: u.hostname, port: Number(u.port || 5672) })
  redis = new Redis(await redisUrl())
  keyspace = await redisKeyspace(redis, 'mqfault')
})
afterAll(async () => {
  // every step bounded and attempted, so a failed test still leaves no queue, key or socket
  await closeAll(brokers.map((b) => () => b.close()))
  await closeAll([() => proxy.close(), () => keyspace.cleanup(), () => names.cleanup()], 10_000)
  redis.disconnect()
}, 30_000)

/** A broker closed after the file (close() is bounded by a short shutdownTimeout). */
function broker(options: Parameters<typeof createBroker>[0]): Broker {
  const b = createBroker({ shutdownTimeout: 2000, ...options })
  brokers.push(b)
  return b
}

describe('Broker under connection faults', () => {
  it('consumes every one of 10,000 confirmed publishes while all connections are cut 10 times: lost 0, processed twice 0', async () => {
    const queue = names.queue('cuts')
    const N = 10_000
    const b = broker({
      urls: proxy.url(url),
      heartbeatInterval: 1000,
      reconnect: { initialDelay: 50, maxDelay: 500 },
      maxBuffered: N,
      topology: { queues: [{ name: queue, retry: false, deadLetter: false }] },
    })
    const processed = new Map<number, number>()
    await b.consume(
      queue,
      async (m) => {
        const n = (m.body as { n: number }).n
        processed.set(n, (processed.get(n) ?? 0) + 1)
      },
      {
        prefetch: 100,
        idempotency: idempotencyDeduplicator(
          createIdempotency({ redis, prefix: `${keyspace.prefix}:`, lease: 5000 }),
        ),
      },
    )
    const debug = process.env.DEBUG_MQ
      ? setInterval(() => console.info(JSON.stringify(b.stats()), processed.size), 1000)
      : undefined
    let cuts = 0
    // cut only while both connections are up, so each of the 10 cuts drops both of them (on a
    // loaded machine a cut during a reconnect would otherwise just delay that reconnect)
    const cutter = setInterval(() => {
      const up = b.stats().connected
      if (cuts >= 10 || !up.publisher || !up.consumer) return
      cuts++
      proxy.cut()
    }, 250)
    const progress = () => ({ ...b.stats(), processed: processed.size, cuts })
    try {
      const results = await within(
        Promise.allSettled(
          Array.from({ length: N }, (_, n) =>
            b.publish('', queue, { n }, { messageId: `msg-${n}` }),
          ),
        ),
        40_000,
        'the 10,000 confirmed publishes',
        progress,
      )
      await until(() => cuts >= 10, 30_000, '10 cuts', progress)
      const failed = results.flatMap((r) =>
        r.status === 'rejected' ? [String((r.reason as Error)?.message ?? r.reason)] : [],
      )
      expect({ failed: failed.slice(0, 5), count: failed.length }).toEqual({ failed: [], count: 0 })
      await until(() => processed.size === N, 40_000, 'every message consumed', progress)
    } finally {
      clearInterval(cutter)
      clearInterval(debug)
    }
    await until(() => b.stats().connected.publisher, 10_000, 'the publisher to reconnect', progress)
    await new Promise((r) => setTimeout(r, 500))
    const lost = N - processed.size
    const twice = [...processed.values()].filter((c) => c > 1).length
    const stats = b.stats()
    // one assertion over everything, so a rare failure shows the whole picture
    expect({
      lost,
      twice,
      confirmed: stats.confirmed,
      publisherReconnectedAfterEachCut: stats.reconnects.publisher >= 10,
      consumerReconnectedAfterEachCut: stats.reconnects.consumer >= 10,
      stats,
    }).toEqual({
      lost: 0,
      twice: 0,
      confirmed: N,
      publisherReconnectedAfterEachCut: true,
      consumerReconnectedAfterEachCut: true,
      stats,
    })
    console.info('cut 10x:', {
      lost,
      twice,
      resent: stats.resent,
      duplicatesDropped: stats.duplicates,
      staleAcks: stats.staleAcks,
      reconnects: stats.reconnects,
    })
    await within(b.close(), 10_000, 'broker.close()')
  }, 100_000)

  it('settles close() of a connection whose socket dies while closing (amqplib alone waits forever)', async () => {
    const connection = await amqp.connect(proxy.url(url))
    connection.on('error', () => {})
    proxy.blackhole() // our Close frame is swallowed: no Close-Ok will come
    const closing = closeSafely(connection, 10_000)
    setTimeout(() => proxy.cut(), 50)
    const started = Date.now()
    await within(closing, 5000, 'closeSafely(connection)')
    expect(Date.now() - started).toBeLessThan(5000)
    proxy.restore()
  })

  it("fails unconfirmed publishes with PublishUnconfirmedError under unconfirmedPolicy 'fail', and every confirmed one arrives", async () => {
    const queue = names.queue('fail-policy')
    const b = broker({
      urls: proxy.url(url),
      unconfirmedPolicy: 'fail',
      reconnect: { initialDelay: 50, maxDelay: 200 },
      topology: { queues: [{ name: queue, retry: false, deadLetter: false }] },
    })
    await b.ready()
    const N = 3000
    let cut = false
    const results = await within(
      Promise.allSettled(
        Array.from({ length: N }, (_, n) =>
          b.publish('', queue, { n }).then(() => {
            if (!cut && n > 200) {
              cut = true
              proxy.cut()
            }
            return n
          }),
        ),
      ),
      20_000,
      'the publishes',
      () => b.stats(),
    )
    const rejected = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[]
    const confirmed = new Set(results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : [])))
    expect(rejected.length).toBeGreaterThan(0)
    for (const r of rejected) expect(r.reason).toBeInstanceOf(PublishUnconfirmedError)
    const seen = new Set<number>()
    await b.consume(queue, (m) => {
      seen.add((m.body as { n: number }).n)
    })
    await until(() => [...confirmed].every((n) => seen.has(n)), 20_000, 'confirmed consumed')
    expect([...confirmed].filter((n) => !seen.has(n))).toEqual([])
    await within(b.close(), 10_000, 'broker.close()')
  }, 60_000)

  it('buffers while the broker is unreachable, rejects past maxBuffered with BufferFullError, and sends the buffer on reconnect', async () => {
    const queue = names.queue('offline')
    const b = broker({
      urls: proxy.url(url),
      maxBuffered: 10,
      reconnect: { initialDelay: 50, maxDelay: 200 },
      topology: { queues: [{ name: queue, retry: false, deadLetter: false }] },
    })
    await b.ready()
    proxy.refuse()
    proxy.cut()
    await until(() => !b.stats().connected.publisher, 5000)
    const buffered = Array.from({ length: 10 }, (_, n) => b.publish('', queue, { n }))
    await expect(b.publish('', queue, { n: 10 })).rejects.toBeInstanceOf(BufferFullError)
    expect(b.stats().buffered).toBe(10)
    let writable = false
    void b.writable().then(() => {
      writable = true
    })
    proxy.restore()
    await within(Promise.all(buffered), 15_000, 'the buffered publishes', () => b.stats())
    await until(() => writable, 5000, 'writable()')
    expect(b.stats()).toMatchObject({ confirmed: 10, buffered: 0 })
    await within(b.close(), 10_000, 'broker.close()')
  }, 30_000)

  it('restores a consumer the broker cancelled because its queue was deleted', async () => {
    const queue = names.queue('cancelled')
    const b = broker({
      urls: url,
      topology: { queues: [{ name: queue, retry: false, deadLetter: false }] },
    })
    const seen: number[] = []
    let started = 0
    b.on('consumer-started', () => started++)
    await b.consume(queue, (m) => {
      seen.push((m.body as { n: number }).n)
    })
    await b.publish('', queue, { n: 1 })
    await until(() => seen.length === 1, 5000)
    const admin = await amqp.connect(url)
    const channel = await admin.createChannel()
    await channel.deleteQueue(queue)
    await admin.close()
    await until(() => b.stats().cancellations === 1, 5000)
    // the queue is declared again and the consumer takes new messages
    await until(() => started === 2, 5000)
    await b.publish('', queue, { n: 2 })
    await until(() => seen.length === 2, 5000)
    expect(seen).toEqual([1, 2])
    await within(b.close(), 10_000, 'broker.close()')
  }, 30_000)

  it('redelivers the unacked messages of a consumer killed with SIGKILL mid-batch; each is processed once in total', async () => {
    const queue = names.queue('killed-consumer')
    const N = 300
    const b = broker({
      urls: url,
      topology: { queues: [{ name: queue, retry: false, deadLetter: false }] },
    })
    await b.ready()
    await Promise.all(
      Array.from({ length: N }, (_, n) => b.publish('', queue, { n }, { messageId: `k-${n}` })),
    )
    const prefix = `${keyspace.prefix}killed:`
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        '--conditions=@ballast/source',
        fileURLToPath(new URL('./support/consumerChild.ts', import.meta.url)),
        url,
        await redisUrl(),
        queue,
        prefix,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    )
    const exited = new Promise((r) => child.once('exit', r))
    let progress = 0
    child.stdout.on('data', (d: Buffer) => {
      progress += d.length
    })
    try {
      await until(() => progress >= 60, 20_000, 'the child consumer to handle 60 messages')
      // let the 60 finished handlers complete their claims and ack; the next 20 hang, claimed
      await new Promise((r) => setTimeout(r, 1000))
    } finally {
      child.kill('SIGKILL')
      await within(exited, 5000, 'the killed child to exit')
    }
    const killedAt = progress
    // a second consumer (this process) takes over the rest, with the same idempotency store
    await b.consume(
      queue,
      async (m) => {
        await redis.hincrby(`${prefix}processed`, String((m.body as { n: number }).n), 1)
      },
      {
        prefetch: 20,
        idempotency: idempotencyDeduplicator(createIdempotency({ redis, prefix, lease: 2000 })),
      },
    )
    const counts = async () => Object.values(await redis.hgetall(`${prefix}processed`)).map(Number)
    const started = Date.now()
    while ((await counts()).length < N && Date.now() - started < 30_000)
      await new Promise((r) => setTimeout(r, 100))
    await new Promise((r) => setTimeout(r, 500))
    const all = await counts()
    const lost = N - all.length
    const twice = all.filter((c) => c > 1).length
    expect(killedAt).toBe(60)
    expect({ lost, twice }).toEqual({ lost: 0, twice: 0 })
    await within(b.close(), 10_000, 'broker.close()')
  }, 60_000)
})
