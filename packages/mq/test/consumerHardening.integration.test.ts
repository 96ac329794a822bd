import { setTimeout as sleep } from 'node:timers/promises'
import { createIdempotency } from '@ballast/resilience'
import {
  amqpNames,
  amqpUrl,
  createFaultProxy,
  type FaultProxy,
  redisKeyspace,
  redisUrl,
} from '@ballast/testkit'
import amqp, { type Channel, type ChannelModel, type GetMessage } from 'amqplib'
import fc from 'fast-check'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { z } from 'zod'
import {
  type Broker,
  createBroker,
  type Deduplicator,
  type Delivery,
  defineMessage,
  idempotencyDeduplicator,
} from '../src/index.js'
import { closeAll, until, within } from './support/bounded.js'
import { trackDerivedQueues } from './support/derivedQueues.js'

/** Any double amqplib can put in a header (it encodes an integral one as int64: not past 2^63, not infinite). */
const headerDouble = fc
  .double({ noNaN: true, noDefaultInfinity: true })
  .filter((d) => !Number.isInteger(d) || Math.abs(d) < 2 ** 62)

const names = amqpNames('mqhard')
let url: string
let proxy: FaultProxy
let redis: Redis
let deadRedis: Redis
let keyspace: Awaited<ReturnType<typeof redisKeyspace>>
let admin: ChannelModel
let channel: Channel
const brokers: Broker[] = []

beforeAll(async () => {
  url = await amqpUrl()
  const u = new URL(url)
  proxy = await createFaultProxy({ host: u.hostname, port: Number(u.port || 5672) })
  redis = new Redis(await redisUrl())
  keyspace = await redisKeyspace(redis, 'mqhard')
  // a Redis that is down: nothing listens on port 1, and commands fail at once instead of queueing
  deadRedis = new Redis({
    host: '127.0.0.1',
    port: 1,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  })
  deadRedis.on('error', () => {})
  admin = await amqp.connect(url)
  admin.on('error', () => {})
  channel = await admin.createChannel()
  channel.on('error', () => {})
})
afterAll(async () => {
  await closeAll(brokers.map((b) => () => b.close()))
  await closeAll([() => admin.close()])
  await closeAll([() => proxy.close(), () => keyspace.cleanup(), () => names.cleanup()], 10_000)
  redis.disconnect()
  deadRedis.disconnect()
}, 30_000)

function broker(options: Parameters<typeof createBroker>[0]): Broker {
  const b = createBroker({ shutdownTimeout: 2000, ...options })
  brokers.push(b)
  trackDerivedQueues(b, options.topology, names)
  return b
}

/** Polls `queue` with basic.get until `n` messages came, acking each. */
async function drain(queue: string, n: number, timeoutMs = 10_000): Promise<GetMessage[]> {
  const got: GetMessage[] = []
  const started = Date.now()
  while (got.length < n) {
    const m = await channel.get(queue, { noAck: true })
    if (m !== false) got.push(m)
    else if (Date.now() - started > timeoutMs)
      throw new Error(`only ${got.length} of ${n} messages arrived in ${queue}`)
    else await sleep(25)
  }
  return got
}
describe('Consumer hardening', () => {
  describe('deduplicator failures', () => {
    it('with prefetch 1, dead-letters refused ids, retries a store outage with a delay, acks a failed complete, and then handles the good message: nothing is stuck', async () => {
      const queue = names.queue('dedupe')
      const b = broker({
        urls: url,
        topology: { queues: [{ name: queue, retry: { delays: [200] } }] },
      })
      const live = idempotencyDeduplicator(
        createIdempotency({ redis, prefix: keyspace.prefix, lease: 5000 }),
      )
      const down = idempotencyDeduplicator(
        createIdempotency({ redis: deadRedis, prefix: keyspace.prefix, commandTimeout: 200 }),
      )
      const dedupe: Deduplicator = {
        begin: (key) => (key.includes(':down-') ? down : live).begin(key),
        complete: async (key) => {
          if (key.includes(':complete-fails-')) throw new Error('the store went away')
          await live.complete(key)
        },
        release: (key) => live.release(key),
      }
      const handled: string[] = []
      await b.consume(
        queue,
        (m) => {
          handled.push(m.messageId ?? '')
        },
        { prefetch: 1, idempotency: dedupe },
      )
      const long = 'x'.repeat(250)
      for (const id of ['has space', long, 'down-1', 'complete-fails-1', 'good-1'])
        await b.publish('', queue, { id }, { messageId: id })
      const progress = () => ({ ...b.stats(), handled })
      await until(() => handled.includes('good-1'), 10_000, 'the good message handled', progress)
      // the refused ids went to the dead-letter queue with the reason, without the handler
      const dead = await drain(`${queue}.dlq`, 2)
      const reasons = new Map(dead.map((m) => [m.properties.messageId, m.properties.headers]))
      expect(reasons.get('has space')?.['x-error-code']).toBe('E_MQ_INVALID_MESSAGE_ID')
      expect(String(reasons.get('has space')?.['x-error'])).toMatch(/message id/)
      expect(reasons.get(long)?.['x-error-code']).toBe('E_MQ_INVALID_MESSAGE_ID')
      // the store outage went through the retry queue (with its delay), not to the dead letters
      await until(() => b.stats().retried >= 1, 10_000, 'the outage retried', progress)
      expect(handled).toEqual(['complete-fails-1', 'good-1'])
      expect(b.stats()).toMatchObject({ deadLettered: 2, acked: 2 })
      await until(() => b.stats().consumed >= 6, 10_000, 'the outage redelivered', progress)
    }, 30_000)

    it('dead-letters a message with no id, which no deduplicator can make once-only, without running the handler', async () => {
      const queue = names.queue('noid')
      const b = broker({ urls: url, topology: { queues: [{ name: queue }] } })
      const handled: (string | undefined)[] = []
      await b.consume(queue, (m) => void handled.push(m.messageId), {
        prefetch: 1,
        idempotency: idempotencyDeduplicator(createIdempotency({ redis, prefix: keyspace.prefix })),
      })
      // a foreign producer that sets no message id, then one of ours
      channel.sendToQueue(queue, Buffer.from('{}'), { contentType: 'application/json' })
      await b.publish('', queue, {}, { messageId: 'after-1' })
      await until(() => handled.includes('after-1'), 10_000, 'the message with an id handled')
      const [dead] = await drain(`${queue}.dlq`, 1)
      expect(dead?.properties.headers?.['x-error-code']).toBe('E_MQ_INVALID_MESSAGE_ID')
      expect(handled).toEqual(['after-1'])
    }, 30_000)
  })

  describe('failed republish', () => {
    it('backs off before requeueing a message whose retry republish fails, instead of a hot redelivery loop', async () => {
      const queue = names.queue('norepublish')
      const b = broker({
        urls: url,
        topology: { queues: [{ name: queue, retry: { delays: [100] }, deadLetter: false }] },
      })
      let deliveries = 0
      let errors = 0
      b.on('consumer-failed', () => errors++)
      await b.consume(
        queue,
        () => {
          deliveries++
          throw new Error('always')
        },
        { prefetch: 1 },
      )
      // the retry queue is gone (after both connections declared it: ready() waits for the
      // publisher's too, which would otherwise declare it again after the delete on a slow
      // machine): each republish to it is returned unroutable
      await b.ready()
      await channel.deleteQueue(`${queue}.retry.100ms`)
      await b.publish('', queue, { n: 1 })
      await until(() => errors >= 1, 10_000, 'the first failed republish')
      await sleep(1500)
      // requeued at once, this is hundreds of deliveries a second
      expect(deliveries).toBeLessThanOrEqual(10)
      expect(deliveries).toBeGreaterThanOrEqual(2)
    }, 30_000)
  })

  describe('unpublishable republish', () => {
    it("rejects a message that cannot be republished (its headers with ours are too large) to the queue's own dead-letter exchange, once, instead of requeueing it forever", async () => {
      const queue = names.queue('bigheaders')
      const b = broker({ urls: url, topology: { queues: [{ name: queue, retry: false }] } })
      let deliveries = 0
      await b.consume(queue, () => {
        deliveries++
        throw new Error('fails')
      })
      // fits amqplib's 64 KiB header buffer as sent; with x-error-stack and the rest added it does not
      channel.sendToQueue(queue, Buffer.from('{}'), {
        contentType: 'application/json',
        messageId: 'big-1',
        headers: { blob: 'a'.repeat(65_200) },
      })
      const [dead] = await drain(`${queue}.dlq`, 1)
      expect(dead?.properties.messageId).toBe('big-1')
      // dead-lettered by the broker (x-death), as it was sent
      expect(dead?.properties.headers?.['x-death']).toBeDefined()
      await sleep(500)
      expect(deliveries).toBe(1)
      expect(b.stats().deadLettered).toBe(1)
    }, 30_000)
  })

  describe('message versions', () => {
    const OrderV2 = (upgrades: number[]) =>
      defineMessage({
        type: 'order.placed',
        version: 2,
        schema: z.object({ orderId: z.string(), total: z.number() }),
        upgrade: (body, from) => {
          upgrades.push(from)
          return { ...(body as object), total: 0 }
        },
      })

    it('dead-letters a version newer than known, fractional, zero, negative or not a number, with the reason; never upgrades or handles it', async () => {
      const queue = names.queue('versions')
      const b = broker({
        urls: url,
        topology: { queues: [{ name: queue, retry: { delays: [100] } }] },
      })
      await b.ready()
      const upgrades: number[] = []
      const handled: Array<{ v: unknown; body: unknown }> = []
      await b.consume(
        queue,
        (m) => {
          handled.push({ v: m.headers['x-message-version'], body: m.body })
        },
        { message: OrderV2(upgrades) },
      )
      const bad: unknown[] = [3, 1.5, 0, -1, '2x', 'abc', true, 2 ** 53]
      const good: unknown[] = [1, 2, '1', undefined]
      for (const v of [...bad, ...good]) {
        const headers = v === undefined ? {} : { 'x-message-version': v }
        channel.sendToQueue(
          queue,
          Buffer.from(JSON.stringify({ orderId: `o-${String(v)}`, total: 5, extra: 1 })),
          { contentType: 'application/json', type: 'order.placed', headers },
        )
      }
      await until(
        () => handled.length === good.length && b.stats().deadLettered === bad.length,
        10_000,
        'every version settled',
        () => ({ ...b.stats(), handled }),
      )
      const dead = await drain(`${queue}.dlq`, bad.length)
      for (const m of dead) {
        expect(m.properties.headers?.['x-error-code']).toBe('E_MQ_INVALID_MESSAGE')
        expect(String(m.properties.headers?.['x-error'])).toMatch(/version/)
      }
      // only the v1 messages were upgraded (the string '1' is v1 too)
      expect(upgrades).toEqual([1, 1])
      expect(b.stats().retried).toBe(0)
    }, 30_000)

    it('fuzz: any value of the version header is handled only when it is an integer 1..known, else dead-lettered with the reason', async () => {
      const queue = names.queue('versionfuzz')
      const b = broker({
        urls: url,
        topology: { queues: [{ name: queue, retry: false }] },
      })
      await b.ready()
      const upgrades: number[] = []
      const handled: Delivery[] = []
      await b.consume(
        queue,
        (m) => {
          handled.push(m)
        },
        { message: OrderV2(upgrades), prefetch: 8 },
      )
      const headerValue = fc.oneof(
        fc.integer({ min: -3, max: 5 }),
        fc.integer(),
        headerDouble,
        fc.string({ maxLength: 6 }),
        fc.constantFrom('1', '2', '3', '02', ' 1', '1.0', '1e0'),
        fc.boolean(),
        fc.constant(null),
        fc.array(fc.integer({ min: 1, max: 2 }), { maxLength: 2 }),
      )
      let total = 0
      await fc.assert(
        fc.asyncProperty(
          fc.array(headerValue, { minLength: 10, maxLength: 10 }),
          async (values) => {
            const before = {
              handled: handled.length,
              dead: b.stats().deadLettered,
              consumed: b.stats().consumed,
            }
            upgrades.length = 0
            for (const [i, v] of values.entries()) {
              channel.sendToQueue(
                queue,
                Buffer.from(JSON.stringify({ orderId: `o-${total + i}`, total: 1 })),
                {
                  contentType: 'application/json',
                  type: 'order.placed',
                  messageId: String(i),
                  headers: { 'x-message-version': v },
                },
              )
            }
            total += values.length
            const accepted = values.filter((v) => v === 1 || v === 2 || v === '1' || v === '2')
            await until(
              () =>
                handled.length - before.handled === accepted.length &&
                b.stats().deadLettered - before.dead === values.length - accepted.length,
              10_000,
              'every fuzzed version settled',
              () => ({ values, handled: handled.length, stats: b.stats() }),
            )
            await drain(`${queue}.dlq`, values.length - accepted.length)
            expect(upgrades.length).toBe(accepted.filter((v) => v === 1 || v === '1').length)
            expect(b.stats().consumed - before.consumed).toBe(values.length)
          },
        ),
        { numRuns: 5, seed: 1414, endOnFailure: true },
      )
    }, 60_000)
  })

  describe('headers read on consume', () => {
    it('fuzz: any retry, exchange and routing-key header gives a delivery with an integer attempt and string exchange and routing key; nothing is stuck', async () => {
      const queue = names.queue('headerfuzz')
      const b = broker({
        urls: url,
        topology: { queues: [{ name: queue, retry: false, deadLetter: false }] },
      })
      await b.ready()
      const seen: Delivery[] = []
      const consumer = await b.consume(queue, (m) => {
        seen.push(m)
      })
      const anyHeader = fc.oneof(
        fc.string({ maxLength: 8 }),
        fc.integer(),
        headerDouble,
        fc.boolean(),
        fc.constant(null),
        fc.array(fc.string({ maxLength: 3 }), { maxLength: 2 }),
        fc.dictionary(fc.string({ minLength: 1, maxLength: 3 }), fc.string({ maxLength: 3 }), {
          maxKeys: 2,
        }),
      )
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.tuple(anyHeader, anyHeader, anyHeader, anyHeader), {
            minLength: 8,
            maxLength: 8,
          }),
          async (rows) => {
            const before = seen.length
            for (const [attempt, exchange, routingKey, deliveryCount] of rows) {
              channel.sendToQueue(queue, Buffer.from('{}'), {
                contentType: 'application/json',
                headers: {
                  'x-retry-attempt': attempt,
                  'x-original-exchange': exchange,
                  'x-original-routing-key': routingKey,
                  'x-delivery-count': deliveryCount,
                },
              })
            }
            await until(() => seen.length === before + rows.length, 10_000, 'every delivery')
            for (const m of seen.slice(before)) {
              expect(Number.isSafeInteger(m.attempt) && m.attempt >= 0).toBe(true)
              expect(typeof m.exchange).toBe('string')
              expect(typeof m.routingKey).toBe('string')
            }
          },
        ),
        { numRuns: 5, seed: 1818, endOnFailure: true },
      )
      await until(() => consumer.stats().inHand === 0, 10_000, 'no delivery in hand')
    }, 60_000)
  })

  describe('message ids', () => {
    it('fuzz: any message id is handled once per distinct id or dead-lettered with the reason; the consumer never stalls', async () => {
      const queue = names.queue('idfuzz')
      const b = broker({
        urls: url,
        topology: { queues: [{ name: queue, retry: false }] },
      })
      await b.ready()
      const dedupe = idempotencyDeduplicator(
        createIdempotency({ redis, prefix: `${keyspace.prefix}idfuzz:`, lease: 5000 }),
      )
      const handled: string[] = []
      const consumer = await b.consume(
        queue,
        (m) => {
          handled.push(m.messageId ?? '')
        },
        { prefetch: 1, idempotency: dedupe },
      )
      let run = 0
      const id = fc.oneof(
        fc.string({ maxLength: 20 }),
        fc.string({ unit: 'binary', maxLength: 20 }),
        fc.string({ unit: fc.constantFrom('a', 'A', ' ', '\u00e9', '\uFFFD'), maxLength: 8 }),
        fc.string({ minLength: 200, maxLength: 255 }),
      )
      await fc.assert(
        fc.asyncProperty(fc.array(id, { minLength: 6, maxLength: 6 }), async (ids) => {
          run++
          // an AMQP shortstr holds at most 255 bytes: longer ids cannot be sent at all
          const sendable = ids
            .map((raw) => `r${run}-${raw}`)
            .filter((s) => Buffer.byteLength(s) <= 255)
          const before = {
            handled: handled.length,
            dead: b.stats().deadLettered,
            duplicates: b.stats().duplicates,
          }
          for (const s of sendable)
            channel.sendToQueue(queue, Buffer.from('{}'), {
              contentType: 'application/json',
              messageId: s,
            })
          // every one settles: handled, dropped as a duplicate, or dead-lettered with the reason
          await until(
            () => consumer.stats().inHand === 0 && settled(before) === sendable.length,
            10_000,
            'every fuzzed id settled',
            () => ({ sendable, stats: b.stats() }),
          )
          const dead = await drain(`${queue}.dlq`, b.stats().deadLettered - before.dead)
          for (const m of dead)
            expect(m.properties.headers?.['x-error-code']).toBe('E_MQ_INVALID_MESSAGE_ID')
          // as received (amqplib decodes the bytes as UTF-8), distinct ids are each handled once
          const received = new Set(sendable.map((s) => Buffer.from(s, 'utf8').toString('utf8')))
          const mine = handled.slice(before.handled)
          expect(new Set(mine).size).toBe(mine.length)
          // every received id not dead-lettered was handled: none was taken for another's duplicate
          const refused = new Set(dead.map((m) => m.properties.messageId as string))
          expect(new Set(mine)).toEqual(new Set([...received].filter((r) => !refused.has(r))))
        }),
        { numRuns: 8, seed: 1111, endOnFailure: true },
      )
      function settled(before: { handled: number; dead: number; duplicates: number }): number {
        const s = b.stats()
        return (
          handled.length -
          before.handled +
          (s.deadLettered - before.dead) +
          (s.duplicates - before.duplicates)
        )
      }
    }, 60_000)
  })

  describe('reconnects', () => {
    it('re-attaches only to the live connection after a cut with a 1 ms reconnect delay: no consumer.error, and a deleted queue is still restored', async () => {
      const queue = names.queue('reattach')
      const b = broker({
        urls: proxy.url(url),
        reconnect: { initialDelay: 1, maxDelay: 1, jitter: 0 },
        topology: { queues: [{ name: queue, retry: false, deadLetter: false }] },
      })
      const errors: unknown[] = []
      b.on('consumer-failed', ({ error }) => errors.push(error))
      let started = 0
      b.on('consumer-started', () => started++)
      const seen: number[] = []
      await b.consume(queue, (m) => {
        seen.push((m.body as { n: number }).n)
      })
      for (let cut = 1; cut <= 3; cut++) {
        await until(() => b.stats().connected.consumer, 10_000, 'the consumer connection')
        proxy.cut()
        await until(() => started === cut + 1, 10_000, `the consumer restarted after cut ${cut}`)
        // the channel-close timer of the dead connection fires meanwhile
        await sleep(400)
      }
      expect(errors.map((e) => String((e as Error)?.message ?? e))).toEqual([])
      await b.publish('', queue, { n: 1 })
      await until(() => seen.length === 1, 10_000, 'a message after the cuts')
      await channel.deleteQueue(queue)
      await until(() => b.stats().cancellations === 1, 10_000, 'the broker-side cancel')
      await until(() => started === 5, 10_000, 'the consumer restored after the delete')
      await within(b.publish('', queue, { n: 2 }), 10_000, 'publish after the delete')
      await until(() => seen.length === 2, 10_000, 'a message after the delete')
      expect(seen).toEqual([1, 2])
    }, 60_000)
  })
})
