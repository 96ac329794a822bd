import { amqpNames, amqpUrl, createFaultProxy, type FaultProxy } from '@ballast/testkit'
import amqp, { type ChannelModel } from 'amqplib'
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  type Broker,
  BrokerClosedError,
  createBroker,
  InvalidArgumentError,
  InvalidMessageError,
  isMqError,
  type PublishOptions,
} from '../src/index.js'
import { closeAll, until, within } from './support/bounded.js'

const names = amqpNames('mqpubhard')
let url: string
let proxy: FaultProxy
let admin: ChannelModel
/** Confirm channels opened by any broker of this file (amqplib's ChannelModel, counted, not replaced). */
let confirmChannelsOpened = 0
let restoreCount: (() => void) | undefined
const brokers: Broker[] = []

/** A broker closed after the file (close() is bounded by a short shutdownTimeout). */
function broker(options: Parameters<typeof createBroker>[0]): Broker {
  const b = createBroker({ shutdownTimeout: 2000, ...options })
  brokers.push(b)
  return b
}

beforeAll(async () => {
  url = await amqpUrl()
  const u = new URL(url)
  proxy = await createFaultProxy({ host: u.hostname, port: Number(u.port || 5672) })
  admin = await amqp.connect(url)
  // every amqplib connection shares this prototype: count the confirm channels the publisher opens
  const prototype = Object.getPrototypeOf(admin) as {
    createConfirmChannel: (...args: unknown[]) => Promise<unknown>
  }
  const original = prototype.createConfirmChannel
  prototype.createConfirmChannel = function counted(this: unknown, ...args: unknown[]) {
    confirmChannelsOpened++
    return original.apply(this, args)
  }
  restoreCount = () => {
    prototype.createConfirmChannel = original
  }
})
afterAll(async () => {
  await closeAll(brokers.map((b) => () => b.close()))
  restoreCount?.()
  await closeAll(
    [async () => admin?.close(), async () => proxy?.close(), () => names.cleanup()],
    10_000,
  )
}, 30_000)

/** A broker on a fresh queue, connected, with its one confirm channel open. */
async function publisherOn(label: string): Promise<{ b: Broker; queue: string }> {
  const queue = names.queue(label)
  const b = broker({
    urls: url,
    topology: { queues: [{ name: queue, retry: false, deadLetter: false }] },
  })
  await b.ready()
  await within(b.publish('', queue, 'warm-up'), 10_000, 'the warm-up publish')
  return { b, queue }
}

const PROPERTY_ERRORS = new Set(['E_MQ_INVALID_MESSAGE', 'E_MQ_INVALID_ARGUMENT'])

describe('Broker publisher hardening', () => {
  describe('a message property or header table over its AMQP limit', () => {
    const cases: Array<[string, PublishOptions]> = [
      ['a messageId of 256 bytes in 128 characters', { messageId: 'é'.repeat(128) }],
      ['a type of 300 bytes', { type: 't'.repeat(300) }],
      ['a correlationId of 256 bytes', { correlationId: 'c'.repeat(256) }],
      [
        'headers under the 60 KB JSON check that encode past the 64 KiB table',
        { headers: { list: Array.from({ length: 15_000 }, () => '') } },
      ],
      ['a header name of 256 bytes', { headers: { ['k'.repeat(256)]: 1 } }],
      ['a header number amqplib cannot encode (NaN)', { headers: { n: Number.NaN } }],
      ['a priority over 255', { priority: 300 }],
    ]
    it.each(cases)(
      'rejects %s with InvalidMessageError, and the next message is confirmed on the same channel',
      async (label, options) => {
        const { b, queue } = await publisherOn(label.slice(0, 20).replace(/\W/g, '_'))
        const opened = confirmChannelsOpened
        const bad = b.publish('', queue, { bad: true }, options)
        await expect(within(bad, 10_000, 'the bad publish')).rejects.toBeInstanceOf(
          InvalidMessageError,
        )
        await within(b.publish('', queue, { good: true }), 10_000, 'the good publish', () =>
          b.stats(),
        )
        expect(confirmChannelsOpened - opened).toBe(0)
        expect(b.stats()).toMatchObject({ confirmed: 2, buffered: 0, inFlight: 0 })
        await within(b.close(), 10_000, 'broker.close()')
      },
      30_000,
    )

    it('rejects an exchange name over 255 bytes with InvalidArgumentError', async () => {
      const { b, queue } = await publisherOn('exchange')
      await expect(b.publish('e'.repeat(256), 'k', 'x')).rejects.toBeInstanceOf(
        InvalidArgumentError,
      )
      await within(b.publish('', queue, 'after'), 10_000, 'the good publish')
      await within(b.close(), 10_000, 'broker.close()')
    }, 30_000)
  })

  describe('a throw from channel.publish on an open channel', () => {
    it('fails only that message with InvalidMessageError; the channel stays and the next message is confirmed', async () => {
      const { b, queue } = await publisherOn('throws')
      const opened = confirmChannelsOpened
      // passes the checks (encodePlain's and checkPublish's: the first two reads), then amqplib
      // reads NaN and throws while encoding: a stand-in for any case the checks do not foresee
      // (`failed: 1` below shows it went through channel.publish)
      let reads = 0
      const headers = {
        get n() {
          return reads++ < 2 ? 1 : Number.NaN
        },
      }
      await expect(
        within(b.publish('', queue, 'bad', { headers }), 10_000, 'the bad publish'),
      ).rejects.toBeInstanceOf(InvalidMessageError)
      await within(b.publish('', queue, 'good'), 10_000, 'the good publish', () => b.stats())
      expect(confirmChannelsOpened - opened).toBe(0)
      expect(b.stats()).toMatchObject({ confirmed: 2, failed: 1, buffered: 0, inFlight: 0 })
      await within(b.close(), 10_000, 'broker.close()')
    }, 30_000)
  })

  describe('events', () => {
    it('show no password: connected carries the redacted URL, reconnecting an error without it', async () => {
      const password = 'Zq9-wrong-password'
      const u = new URL(url)
      u.password = password
      const refused = broker({
        urls: u.toString(),
        reconnect: { initialDelay: 50, maxDelay: 100 },
      })
      const payloads: unknown[] = []
      refused.on('reconnect-scheduled', (e) => payloads.push({ ...e, error: String(e.error) }))
      await until(() => payloads.length >= 2, 10_000, 'two reconnect attempts')
      await within(refused.close(), 10_000, 'broker.close()')
      const ok = broker({ urls: url })
      const connected: unknown[] = []
      ok.on('connected', (e) => connected.push(e))
      await ok.ready()
      await within(ok.close(), 10_000, 'broker.close()')
      const shown = JSON.stringify([...payloads, ...connected])
      expect(shown).not.toContain(password)
      expect(shown).not.toContain(new URL(url).password || 'guest:guest')
      expect(connected).toEqual([
        { role: 'publisher', url: expect.stringMatching(/^amqp:\/\/[^@]*$/) },
      ])
    }, 30_000)
  })

  describe('the retry republish path', () => {
    it('rejects a retry whose headers grow past 64 KiB with InvalidMessageError, and publishing goes on', async () => {
      const queue = names.queue('republish')
      const b = broker({
        urls: url,
        topology: { queues: [{ name: queue, retry: { delays: [60_000] }, deadLetter: false }] },
      })
      for (const step of b.queue(queue)?.retries ?? [])
        names.queue(step.queue.slice(names.prefix.length + 1))
      await b.ready()
      await within(b.publish('', queue, 'warm-up'), 10_000, 'the warm-up publish')
      const errors: unknown[] = []
      b.on('consumer-failed', ({ error }) => errors.push(error))
      const consumer = await b.consume(queue, (m) => {
        if (m.body !== 'warm-up') throw new Error('fails, so it goes to the retry queue')
      })
      // fits amqplib's 64 KiB table on the way in; the retry headers push it over on the way out
      const channel = await admin.createConfirmChannel()
      const opened = confirmChannelsOpened
      channel.publish('', queue, Buffer.from('"big"'), {
        contentType: 'application/json',
        headers: { pad: 'p'.repeat(65_400) },
      })
      await channel.waitForConfirms()
      await channel.close()
      await until(() => errors.length > 0, 10_000, 'a consumer.error event')
      expect(isMqError(errors[0])).toBe(true)
      expect((errors[0] as InvalidMessageError).code).toBe('E_MQ_INVALID_MESSAGE')
      await consumer.cancel()
      await within(b.publish('', queue, 'warm-up'), 10_000, 'a publish after the republish', () =>
        b.stats(),
      )
      expect(confirmChannelsOpened - opened).toBe(0)
      await within(b.close(), 10_000, 'broker.close()')
    }, 30_000)
  })

  describe('close() during an outage', () => {
    it('waits up to shutdownTimeout for buffered messages and sends them when the broker comes back', async () => {
      const queue = names.queue('outage')
      const b = broker({
        urls: proxy.url(url),
        shutdownTimeout: 20_000,
        reconnect: { initialDelay: 50, maxDelay: 200 },
        topology: { queues: [{ name: queue, retry: false, deadLetter: false }] },
      })
      await b.ready()
      proxy.refuse()
      proxy.cut()
      await until(() => !b.stats().connected.publisher, 5000)
      const buffered = Array.from({ length: 5 }, (_, n) => b.publish('', queue, { n }))
      const outcomes = buffered.map((p) =>
        p.then(
          () => 'confirmed',
          (e: unknown) => e,
        ),
      )
      const closing = b.close()
      // the broker comes back while close() waits
      await new Promise((resolve) => setTimeout(resolve, 300))
      proxy.restore()
      await within(closing, 20_000, 'broker.close()', () => b.stats())
      expect(await Promise.all(outcomes)).toEqual(Array(5).fill('confirmed'))
    }, 40_000)

    it('rejects what is still buffered with BrokerClosedError once shutdownTimeout has passed', async () => {
      const queue = names.queue('outage-timeout')
      const b = broker({
        urls: proxy.url(url),
        shutdownTimeout: 300,
        reconnect: { initialDelay: 50, maxDelay: 200 },
        topology: { queues: [{ name: queue, retry: false, deadLetter: false }] },
      })
      await b.ready()
      proxy.refuse()
      proxy.cut()
      await until(() => !b.stats().connected.publisher, 5000)
      const pending = b.publish('', queue, { n: 1 })
      await within(b.close(), 10_000, 'broker.close()')
      await expect(pending).rejects.toBeInstanceOf(BrokerClosedError)
      proxy.restore()
    }, 30_000)
  })

  describe('fuzz: message properties and headers', () => {
    it('either confirms or rejects that one message with a typed error; a good message after is confirmed on the same channel', async () => {
      const { b, queue } = await publisherOn('fuzz')
      const opened = confirmChannelsOpened
      // shortstr-sized and oversized strings, in characters that take 1 to 4 UTF-8 bytes
      const shortstr = fc.oneof(
        fc.string({ unit: 'binary', maxLength: 100 }),
        fc.string({ unit: 'grapheme', minLength: 60, maxLength: 300 }),
        fc.integer({ min: 200, max: 300 }).map((n) => 'x'.repeat(n)),
        fc.integer({ min: 60, max: 70 }).map((n) => '😀'.repeat(n)),
      )
      const headers = fc.oneof(
        fc.dictionary(
          fc.string({ unit: 'binary', maxLength: 300 }),
          fc.jsonValue({ maxDepth: 3 }),
          { maxKeys: 8 },
        ),
        // arrays of small values: small as JSON, larger as an AMQP table
        fc
          .tuple(
            fc.integer({ min: 10_000, max: 30_000 }),
            fc.constantFrom('', {}, [], null, 0, true),
          )
          .map(([n, v]) => ({ list: Array.from({ length: n }, () => v) })),
        fc.integer({ min: 60_000, max: 70_000 }).map((n) => ({ big: 'b'.repeat(n) })),
      )
      await fc.assert(
        fc.asyncProperty(
          fc.record(
            { messageId: shortstr, type: shortstr, correlationId: shortstr, headers },
            { requiredKeys: [] },
          ),
          async (options) => {
            try {
              await within(
                b.publish('', queue, { fuzz: true }, options),
                10_000,
                'a fuzzed publish',
              )
            } catch (error) {
              expect(isMqError(error), String(error)).toBe(true)
              expect(PROPERTY_ERRORS.has((error as { code: string }).code)).toBe(true)
            }
            await within(
              b.publish('', queue, { good: true }),
              10_000,
              'the good publish after',
              () => b.stats(),
            )
          },
        ),
        { numRuns: 40, seed: 1414 },
      )
      expect(confirmChannelsOpened - opened).toBe(0)
      expect(b.stats()).toMatchObject({ buffered: 0, inFlight: 0 })
      await within(b.close(), 10_000, 'broker.close()')
    }, 60_000)
  })
})
