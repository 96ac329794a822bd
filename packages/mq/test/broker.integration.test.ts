import { Socket } from 'node:net'
import { amqpNames, amqpUrl } from '@ballast/testkit'
import amqp from 'amqplib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { z } from 'zod'
import {
  type Broker,
  createBroker,
  type Delivery,
  defineMessage,
  InvalidMessageError,
  MessageTooLargeError,
  TopologyConflictError,
  UnknownExchangeError,
  UnroutableError,
} from '../src/index.js'
import { closeAll, until } from './support/bounded.js'
import { trackDerivedQueues } from './support/derivedQueues.js'

const names = amqpNames('mqbroker')
/** The version-1 typed message the tests publish and consume. */
const Order = defineMessage({
  type: 'order.placed',
  schema: z.object({ orderId: z.string() }),
})
let url: string
const brokers: Broker[] = []
function broker(options: Parameters<typeof createBroker>[0]): Broker {
  const b = createBroker({ shutdownTimeout: 2000, ...options })
  brokers.push(b)
  trackDerivedQueues(b, options.topology, names)
  return b
}

beforeAll(async () => {
  url = await amqpUrl()
})
afterAll(async () => {
  // bounded, and the queues are deleted even when a close fails
  await closeAll(brokers.map((b) => () => b.close()))
  await closeAll([() => names.cleanup()], 10_000)
}, 30_000)

describe('Broker', () => {
  describe('publish and consume', () => {
    it('delivers a confirmed JSON message with a message id, persistent, to the bound queue', async () => {
      const exchange = names.exchange('orders')
      const queue = names.queue('billing')
      const b = broker({
        urls: url,
        topology: {
          exchanges: [{ name: exchange }],
          queues: [{ name: queue, bindings: [{ exchange, routingKey: 'order.*' }] }],
        },
      })
      await b.ready()
      const got: Delivery[] = []
      await b.consume(queue, (m) => {
        got.push(m)
      })
      await b.publish(exchange, 'order.placed', { orderId: 'o-1' })
      await until(() => got.length === 1)
      expect(got[0]?.body).toEqual({ orderId: 'o-1' })
      expect(got[0]?.messageId).toMatch(/^[0-9a-f-]{36}$/)
      expect(got[0]?.raw.properties.deliveryMode).toBe(2)
      expect(b.stats()).toMatchObject({ published: 1, confirmed: 1, consumed: 1, acked: 1 })
    })

    it('leaves timestamp and appId off unless `stamp` is set, then stamps every message', async () => {
      const queue = names.queue('stamp')
      const topology = {
        queues: [{ name: queue, retry: false as const, deadLetter: false as const }],
      }
      const plain = broker({ urls: url, topology })
      const stamped = broker({ urls: url, name: 'billing-api', stamp: true, topology })
      await Promise.all([plain.ready(), stamped.ready()])
      const before = Math.floor(Date.now() / 1000)
      await plain.publish('', queue, { n: 1 })
      await stamped.publish('', queue, { n: 2 })
      const got: Delivery[] = []
      await plain.consume(queue, (m) => {
        got.push(m)
      })
      await until(() => got.length === 2)
      const byN = new Map(got.map((m) => [(m.body as { n: number }).n, m.raw.properties]))
      expect(byN.get(1)?.timestamp).toBeUndefined()
      expect(byN.get(1)?.appId).toBeUndefined()
      expect(byN.get(2)?.appId).toBe('billing-api')
      expect(byN.get(2)?.timestamp).toBeGreaterThanOrEqual(before)
      expect(byN.get(2)?.timestamp).toBeLessThanOrEqual(Math.floor(Date.now() / 1000))
      expect(() => createBroker({ urls: url, stamp: 'yes' as unknown as boolean })).toThrow(
        /invalid option "stamp": expected a boolean/,
      )
    })

    it('publishes over a pool of three confirm channels within the confirm window, and delivers every one', async () => {
      const queue = names.queue('channels')
      const b = broker({
        urls: url,
        channels: 3,
        confirmWindow: 50,
        topology: { queues: [{ name: queue, retry: false, deadLetter: false }] },
      })
      await b.ready()
      const N = 2000
      let maxInFlight = 0
      const sampler = setInterval(() => {
        maxInFlight = Math.max(maxInFlight, b.stats().inFlight)
      }, 1)
      const sends = Array.from({ length: N }, (_, n) =>
        b.publish('', queue, Buffer.from(String(n))),
      )
      expect(b.stats().buffered + b.stats().inFlight).toBe(N)
      await Promise.all(sends).finally(() => clearInterval(sampler))
      expect(maxInFlight).toBeGreaterThan(0)
      expect(maxInFlight).toBeLessThanOrEqual(50)
      const seen = new Set<string>()
      await b.consume(
        queue,
        (m) => {
          expect(Buffer.isBuffer(m.body)).toBe(true)
          expect(m.raw.properties.contentType).toBeUndefined()
          seen.add((m.body as Buffer).toString())
        },
        { prefetch: 200 },
      )
      await until(() => seen.size === N)
      expect(b.stats()).toMatchObject({ published: N, confirmed: N, inFlight: 0, buffered: 0 })
    })

    it('writes the messages of one turn to the socket in one write, in order, not one write each', async () => {
      const queue = names.queue('batched')
      const b = broker({
        urls: url,
        topology: { queues: [{ name: queue, retry: false, deadLetter: false }] },
      })
      await b.ready()
      const marker = `batched-${process.pid}-`
      const N = 100
      // count the socket writes that carry our messages (a writev counts once)
      let writes = 0
      const carries = (data: unknown) => (Buffer.isBuffer(data) && data.includes(marker) ? 1 : 0)
      const proto = Socket.prototype as unknown as Record<string, (...args: unknown[]) => unknown>
      const write = proto._write as (...args: unknown[]) => unknown
      const writev = proto._writev as (...args: unknown[]) => unknown
      proto._write = function (this: unknown, ...args: unknown[]) {
        writes += carries(args[0])
        return write.apply(this, args)
      }
      proto._writev = function (this: unknown, ...args: unknown[]) {
        const chunks = args[0] as { chunk: unknown }[]
        if (chunks.some((c) => carries(c.chunk) === 1)) writes++
        return writev.apply(this, args)
      }
      try {
        await Promise.all(
          Array.from({ length: N }, (_, n) => b.publish('', queue, Buffer.from(`${marker}${n}`))),
        )
      } finally {
        proto._write = write
        proto._writev = writev
      }
      expect(writes).toBeGreaterThanOrEqual(1)
      expect(writes).toBeLessThanOrEqual(2)
      const got: string[] = []
      await b.consume(queue, (m) => {
        got.push((m.body as Buffer).toString())
      })
      await until(() => got.length === N)
      expect(got).toEqual(Array.from({ length: N }, (_, n) => `${marker}${n}`))
    })

    it('sends the version of a typed message, and upgrades an older version on consume before validating it', async () => {
      const queue = names.queue('versions')
      const b = broker({
        urls: url,
        topology: { queues: [{ name: queue, retry: false }] },
      })
      const V2 = defineMessage({
        type: 'order.placed',
        version: 2,
        schema: z.object({ orderId: z.string(), total: z.number() }),
        upgrade: (body, from) => (from === 1 ? { ...(body as object), total: 0 } : body),
      })
      await b.publish('', queue, Order.of({ orderId: 'o-old' }))
      await b.publish('', queue, V2.of({ orderId: 'o-new', total: 42 }))
      const got: Delivery[] = []
      await b.consume(
        queue,
        (m) => {
          got.push(m)
        },
        { message: V2 },
      )
      await until(() => got.length === 2)
      expect(got.map((m) => [m.headers['x-message-version'], m.body])).toEqual([
        [1, { orderId: 'o-old', total: 0 }],
        [2, { orderId: 'o-new', total: 42 }],
      ])
      expect(b.stats().deadLettered).toBe(0)
    })

    it('rejects an unroutable mandatory message with UnroutableError', async () => {
      const exchange = names.exchange('nowhere')
      const b = broker({ urls: url, topology: { exchanges: [{ name: exchange }] } })
      await expect(b.publish(exchange, 'no.queue', { a: 1 })).rejects.toBeInstanceOf(
        UnroutableError,
      )
      expect(b.stats().returned).toBe(1)
      // the channel still works afterwards
      const queue = names.queue('after-return')
      const b2 = broker({ urls: url, topology: { queues: [{ name: queue }] } })
      await b2.publish('', queue, 'ok')
    })
  })

  describe('bad input', () => {
    it('rejects a message over maxMessageBytes, an invalid typed message and an unknown exchange, sending nothing', async () => {
      const queue = names.queue('bad-input')
      const b = broker({
        urls: url,
        maxMessageBytes: 1024,
        topology: { queues: [{ name: queue }] },
      })
      await expect(b.publish('', queue, Buffer.alloc(2048))).rejects.toBeInstanceOf(
        MessageTooLargeError,
      )
      await expect(b.publish('', queue, Order.of({ orderId: 42 } as never))).rejects.toBeInstanceOf(
        InvalidMessageError,
      )
      await expect(b.publish(names.exchange('missing'), 'x', { a: 1 })).rejects.toBeInstanceOf(
        UnknownExchangeError,
      )
      await b.publish('', queue, Order.of({ orderId: 'o-9' }))
      expect(b.stats()).toMatchObject({ published: 1, confirmed: 1, failed: 0 })
      const got: unknown[] = []
      await b.consume(
        queue,
        (m) => {
          got.push(m.body)
        },
        { message: Order },
      )
      await until(() => got.length === 1)
      expect(got).toEqual([{ orderId: 'o-9' }])
    })
  })

  describe('topology', () => {
    it('fails with TopologyConflictError, once, when a queue exists with other settings', async () => {
      const queue = names.queue('conflict')
      const plain = { retry: false, deadLetter: false } as const
      const first = broker({
        urls: url,
        topology: { queues: [{ name: queue, type: 'classic', ...plain }] },
      })
      await first.ready()
      const second = broker({
        urls: url,
        topology: { queues: [{ name: queue, type: 'quorum', ...plain }] },
      })
      let reconnects = 0
      second.on('reconnect-scheduled', () => reconnects++)
      const error = await second.ready().catch((e: unknown) => e)
      expect(error).toBeInstanceOf(TopologyConflictError)
      expect((error as TopologyConflictError).entity).toBe(queue)
      await expect(second.publish('', queue, 'x')).rejects.toBeInstanceOf(TopologyConflictError)
      await new Promise((r) => setTimeout(r, 500))
      expect(reconnects).toBe(0)
    })
  })

  describe('retries and dead letters', () => {
    it('retries a poison message with the configured delays, then dead-letters it with the error, while others flow', async () => {
      const queue = names.queue('poison')
      const b = broker({
        urls: url,
        topology: {
          queues: [{ name: queue, retry: { maxAttempts: 4, initialDelay: 200, factor: 2 } }],
        },
      })
      const seen: number[] = []
      const good: string[] = []
      await b.consume(queue, (m) => {
        if ((m.body as { poison?: boolean }).poison) {
          seen.push(Date.now())
          throw new Error('cannot bill this order')
        }
        good.push((m.body as { id: string }).id)
      })
      await b.publish('', queue, { poison: true })
      for (let i = 0; i < 20; i++) await b.publish('', queue, { id: `g${i}` })
      await until(() => good.length === 20, 5000)
      await until(() => b.stats().deadLettered === 1, 10_000)
      expect(seen).toHaveLength(4)
      const gaps = seen.slice(1).map((t, i) => t - (seen[i] as number))
      expect(gaps[0]).toBeGreaterThanOrEqual(180)
      expect(gaps[1]).toBeGreaterThanOrEqual(380)
      expect(gaps[2]).toBeGreaterThanOrEqual(780)
      expect(b.stats().retried).toBe(3)
      const dead: Delivery[] = []
      await b.consume(`${queue}.dlq`, (m) => {
        dead.push(m)
      })
      await until(() => dead.length === 1)
      expect(dead[0]?.headers['x-error']).toBe('cannot bill this order')
      expect(dead[0]?.headers['x-retry-attempt']).toBe(3)
      expect(dead[0]?.headers['x-original-queue']).toBe(queue)
      expect(dead[0]?.body).toEqual({ poison: true })
    })

    it('dead-letters a message its schema rejects at once, with the reason, without the handler or a retry', async () => {
      const queue = names.queue('invalid')
      const b = broker({
        urls: url,
        topology: { queues: [{ name: queue, retry: { maxAttempts: 4, initialDelay: 100 } }] },
      })
      const handled: unknown[] = []
      await b.consume(
        queue,
        (m) => {
          handled.push(m.body)
        },
        { message: Order },
      )
      // plain objects skip the schema at publish, as from a producer without the definition
      await b.publish('', queue, { orderId: 42 }, { type: 'order.placed' })
      await b.publish('', queue, { orderId: 'o-1' }, { type: 'order.shipped' })
      await b.publish('', queue, Order.of({ orderId: 'o-2' }))
      await until(() => handled.length === 1 && b.stats().deadLettered === 2)
      expect(handled).toEqual([{ orderId: 'o-2' }])
      const dead: Delivery[] = []
      await b.consume(`${queue}.dlq`, (m) => {
        dead.push(m)
      })
      await until(() => dead.length === 2)
      const reasons = new Map(dead.map((m) => [m.type, m.headers]))
      expect(reasons.get('order.placed')?.['x-error-code']).toBe('E_MQ_INVALID_MESSAGE')
      expect(reasons.get('order.placed')?.['x-error']).toMatch(
        /invalid "order.placed" message.*orderId/,
      )
      expect(reasons.get('order.shipped')?.['x-error']).toBe(
        'expected a "order.placed" message, got "order.shipped"',
      )
      for (const m of dead) expect(m.headers['x-retry-attempt']).toBe(0)
      expect(b.stats()).toMatchObject({ retried: 0, deadLettered: 2 })
    })

    it('on a quorum queue with deliveryLimit and no retry queues, requeues a failing message until the limit, then dead-letters it with the error', async () => {
      const queue = names.queue('limited')
      const b = broker({
        urls: url,
        topology: { queues: [{ name: queue, type: 'quorum', retry: false, deliveryLimit: 3 }] },
      })
      let poisonRuns = 0
      const good: number[] = []
      await b.consume(queue, (m) => {
        const body = m.body as { n?: number; poison?: boolean }
        if (body.poison) {
          poisonRuns++
          throw new Error('the warehouse refused it')
        }
        good.push(body.n as number)
      })
      await b.publish('', queue, { poison: true })
      for (let n = 0; n < 10; n++) await b.publish('', queue, { n })
      await until(() => good.length === 10 && b.stats().deadLettered === 1)
      expect(poisonRuns).toBe(3)
      expect(b.stats().retried).toBe(0)
      const dead: Delivery[] = []
      await b.consume(`${queue}.dlq`, (m) => {
        dead.push(m)
      })
      await until(() => dead.length === 1)
      expect(dead[0]?.body).toEqual({ poison: true })
      expect(dead[0]?.headers['x-error']).toBe('the warehouse refused it')
      expect(dead[0]?.headers['x-original-queue']).toBe(queue)
    })

    it("has the broker dead-letter a quorum queue's message after deliveryLimit deliveries that no consumer of ours settles", async () => {
      const queue = names.queue('crashing')
      const b = broker({
        urls: url,
        topology: { queues: [{ name: queue, type: 'quorum', retry: false, deliveryLimit: 2 }] },
      })
      await b.ready()
      await b.publish('', queue, { order: 'o-7' })
      // a foreign consumer that hands every delivery back, as a crash loop would
      const connection = await amqp.connect(url)
      const channel = await connection.createChannel()
      let deliveries = 0
      await channel.consume(queue, (m) => {
        if (m === null) return
        deliveries++
        channel.nack(m, false, true)
      })
      const dead: Delivery[] = []
      await b.consume(`${queue}.dlq`, (m) => {
        dead.push(m)
      })
      try {
        await until(() => dead.length === 1)
      } finally {
        await connection.close()
      }
      // 3.x dead-letters when the count exceeds the limit: the first delivery plus `deliveryLimit` redeliveries
      expect(deliveries).toBe(3)
      expect(dead[0]?.body).toEqual({ order: 'o-7' })
      const death = (dead[0]?.headers['x-death'] as { reason?: string }[] | undefined)?.[0]
      expect(death?.reason).toBe('delivery_limit')
    })
  })

  describe('graceful shutdown', () => {
    it('close() stops taking messages, finishes and acks those in hand, and leaves the rest in the queue', async () => {
      const queue = names.queue('shutdown')
      const topology = { queues: [{ name: queue, retry: false as const, deadLetter: false }] }
      const b = broker({ urls: url, topology })
      const N = 20
      for (let n = 0; n < N; n++) await b.publish('', queue, { n })
      const started: number[] = []
      const finished: number[] = []
      await b.consume(
        queue,
        async (m) => {
          const n = (m.body as { n: number }).n
          started.push(n)
          await new Promise((r) => setTimeout(r, 300))
          finished.push(n)
        },
        { prefetch: 5 },
      )
      await until(() => started.length === 5)
      await b.close()
      expect(finished.sort((x, y) => x - y)).toEqual([...started].sort((x, y) => x - y))
      expect(b.stats()).toMatchObject({ consumed: 5, acked: 5, staleAcks: 0 })
      // what was acked is gone; the rest is still there, once
      const after = broker({ urls: url, topology })
      const rest: number[] = []
      await after.consume(queue, (m) => {
        rest.push((m.body as { n: number }).n)
      })
      await until(() => rest.length === N - 5)
      await new Promise((r) => setTimeout(r, 300))
      expect([...started, ...rest].sort((x, y) => x - y)).toEqual(
        Array.from({ length: N }, (_, n) => n),
      )
    })
  })
})
