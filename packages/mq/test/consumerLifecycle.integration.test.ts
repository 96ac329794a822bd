import { setTimeout as sleep } from 'node:timers/promises'
import { amqpNames, amqpUrl, createFaultProxy, type FaultProxy } from '@ballast/testkit'
import amqp, { type Channel, type ChannelModel } from 'amqplib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Broker, BrokerClosedError, createBroker } from '../src/index.js'
import { closeAll, until, within } from './support/bounded.js'

const names = amqpNames('mqlife')
let url: string
let proxy: FaultProxy
let admin: ChannelModel
let channel: Channel
const brokers: Broker[] = []

beforeAll(async () => {
  url = await amqpUrl()
  const u = new URL(url)
  proxy = await createFaultProxy({ host: u.hostname, port: Number(u.port || 5672) })
  admin = await amqp.connect(url)
  admin.on('error', () => {})
  channel = await admin.createChannel()
  channel.on('error', () => {})
})
afterAll(async () => {
  await closeAll(brokers.map((b) => () => b.close()))
  await closeAll([() => admin.close()])
  await closeAll([() => proxy.close(), () => names.cleanup()], 10_000)
}, 30_000)

/** On a channel of its own: a missing queue closes the channel that asked. */
async function queueExists(queue: string): Promise<boolean> {
  const probe = await admin.createChannel()
  probe.on('error', () => {})
  try {
    await probe.checkQueue(queue)
    await probe.close()
    return true
  } catch {
    return false
  }
}

function broker(options: Parameters<typeof createBroker>[0]): Broker {
  const b = createBroker({ shutdownTimeout: 2000, ...options })
  brokers.push(b)
  return b
}

describe('Consumer lifecycle', () => {
  describe('a consume() that rejected', () => {
    it('leaves nothing behind: no retries, no consumer.error, and it never consumes the queue once it exists', async () => {
      const queue = names.queue('missing')
      const b = broker({ urls: url })
      const errors: unknown[] = []
      b.on('consumer-failed', ({ error }) => errors.push(error))
      const handled: unknown[] = []
      await expect(b.consume(queue, (m) => void handled.push(m.body))).rejects.toMatchObject({
        code: 'E_MQ_UNKNOWN_QUEUE',
      })
      // the channel the broker closed with 404 had a re-open timer of 100 ms
      await sleep(700)
      expect(errors.map((e) => String((e as Error)?.message ?? e))).toEqual([])
      await channel.assertQueue(queue, { durable: true })
      await channel.sendToQueue(queue, Buffer.from('"late"'), { contentType: 'application/json' })
      await sleep(6000) // longer than the longest retry backoff of a zombie consumer (5 s)
      expect(handled).toEqual([])
      expect(await channel.checkQueue(queue)).toMatchObject({ messageCount: 1, consumerCount: 0 })
      await within(b.close(), 10_000, 'broker.close()')
    }, 30_000)
  })

  describe('cancel()', () => {
    it('during the restore after a broker-side cancel leaves no consumer behind on the queue', async () => {
      const queue = names.queue('restore')
      const b = broker({
        urls: url,
        topology: { queues: [{ name: queue, retry: false, deadLetter: false }] },
      })
      const handled: unknown[] = []
      const consumer = await b.consume(queue, (m) => void handled.push(m.body))
      let cancelling: Promise<void> | undefined
      b.on('consumer-cancelled', () => {
        // the restore (re-declare, then consume again) starts right after this event: cancel
        // once it is under way
        queueMicrotask(() => {
          cancelling ??= consumer.cancel()
        })
      })
      await channel.deleteQueue(queue)
      await until(() => cancelling !== undefined, 10_000, 'the broker-side cancel')
      await within(cancelling as Promise<void>, 10_000, 'consumer.cancel()')
      // let a restore still in flight finish, if one is (re-declare and consume take a few round trips)
      await sleep(1000)
      await channel.assertQueue(queue, { durable: true }) // the same declaration as the topology's
      await channel.sendToQueue(queue, Buffer.from('"after cancel"'), {
        contentType: 'application/json',
      })
      await sleep(300)
      expect(handled).toEqual([])
      // nobody holds the message unacked: it is ready for the next consumer
      expect(await channel.checkQueue(queue)).toMatchObject({ messageCount: 1, consumerCount: 0 })
      await within(b.close(), 10_000, 'broker.close()')
    }, 30_000)
  })

  describe('close()', () => {
    it('honours one shutdownTimeout for handlers in hand and buffered messages together, not one after the other', async () => {
      const queue = names.queue('deadline')
      const shutdownTimeout = 2000
      const b = broker({
        urls: proxy.url(url),
        shutdownTimeout,
        reconnect: { initialDelay: 50, maxDelay: 200 },
        topology: { queues: [{ name: queue, retry: false, deadLetter: false }] },
      })
      let release: () => void = () => {}
      const stuck = new Promise<void>((resolve) => {
        release = resolve
      })
      let started = false
      await b.consume(queue, async () => {
        started = true
        await stuck
      })
      await b.publish('', queue, 'in hand')
      await until(() => started, 10_000, 'the handler in hand')
      proxy.refuse()
      proxy.cut()
      await until(() => !b.stats().connected.publisher, 10_000, 'the publisher disconnected')
      const late = b.publish('', queue, 'buffered').then(
        () => 'confirmed',
        (error: unknown) => error,
      )
      // The broker comes back halfway through a second shutdownTimeout. With one deadline the
      // handler in hand spent all of it, so the buffered message is rejected before then; waiting
      // for the handler and then for the buffer (each for a whole shutdownTimeout, the bug) would
      // see the broker back and confirm it. Which path ran shows in how `late` settles.
      const back = setTimeout(() => proxy.restore(), 1.5 * shutdownTimeout)
      try {
        await within(b.close(), 4 * shutdownTimeout, 'broker.close()')
        expect(await late).toBeInstanceOf(BrokerClosedError)
      } finally {
        clearTimeout(back)
        release()
        proxy.restore()
      }
    }, 30_000)

    it('is not held past shutdownTimeout by a consumer whose connection went silent (its cancel is never answered)', async () => {
      const silent = await createFaultProxy({
        host: new URL(url).hostname,
        port: Number(new URL(url).port || 5672),
      })
      const queue = names.queue('silent')
      const b = broker({
        urls: silent.url(url),
        shutdownTimeout: 1000,
        topology: { queues: [{ name: queue, retry: false, deadLetter: false }] },
      })
      try {
        await b.consume(queue, () => {})
        silent.blackhole()
        // the default heartbeat (10 s) would notice the silence only after about 20 s
        // then each close of a channel, the pool and the connections bounded at 2 s: well under the
        // heartbeats' 20 s, and it used to wait on them (or forever, for a channel being created)
        await within(b.close(), 12_000, 'broker.close()')
      } finally {
        await silent.close()
      }
    }, 30_000)

    it('is not held by a connection that went silent while it declared the topology', async () => {
      // the window between the AMQP handshake and the topology being declared: amqp.connect has
      // settled, a channel is open, and nothing answers any more. close() used to wait there for
      // the heartbeats (about 20 s), which CI hit when the publisher connection was slow to start
      const slow = await createFaultProxy({
        host: new URL(url).hostname,
        port: Number(new URL(url).port || 5672),
      })
      const queues = Array.from({ length: 40 }, (_, i) => names.queue(`declaring-${i}`))
      slow.setLatency(60)
      const b = broker({
        urls: slow.url(url),
        shutdownTimeout: 1000,
        topology: { queues: queues.map((name) => ({ name, retry: false, deadLetter: false })) },
      })
      try {
        // the first queue exists: the connection is declaring, with 39 queues (seconds) to go
        const deadline = performance.now() + 10_000
        while (!(await queueExists(queues[0] as string))) {
          if (performance.now() > deadline) throw new Error('the topology was never declared')
          await sleep(20)
        }
        expect(b.stats().connected.publisher).toBe(false)
        slow.blackhole()
        const started = performance.now()
        await within(b.close(), 8_000, 'broker.close()')
        expect(performance.now() - started).toBeLessThan(5_000)
      } finally {
        await slow.close()
      }
    }, 30_000)
  })
})
