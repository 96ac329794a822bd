import {
  amqpNames,
  amqpUrl,
  createFaultProxy,
  type FaultProxy,
  mysqlUrl,
  uniqueName,
} from '@ballast/testkit'
import { createTestTelemetry, type ReadableSpan } from '@ballast/testkit/otel'
import {
  type BatchObservableCallback,
  type Meter,
  type MeterProvider,
  type Observable,
  SpanKind,
  SpanStatusCode,
  type TracerProvider,
} from '@opentelemetry/api'
import mysql from 'mysql2/promise'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import {
  type Broker,
  type BrokerOptions,
  createBroker,
  createOutbox,
  createOutboxRelay,
  type Delivery,
  InvalidArgumentError,
  type OutboxRelay,
} from '../src/index.js'
import { closeAll, until, within } from './support/bounded.js'

const otel = createTestTelemetry()
const providers = { meterProvider: otel.meterProvider, tracerProvider: otel.tracerProvider }
const names = amqpNames('mqotel')
const tables: string[] = []
const brokers: Broker[] = []
const relays: OutboxRelay[] = []
let url: string
let proxy: FaultProxy
let pool: mysql.Pool

/** The tracer of "the application": the request spans the messages should continue. */
const app = otel.tracerProvider.getTracer('test-app')

beforeAll(async () => {
  url = await amqpUrl()
  const u = new URL(url)
  proxy = await createFaultProxy({ host: u.hostname, port: Number(u.port || 5672) })
  pool = mysql.createPool({ uri: await mysqlUrl(), connectionLimit: 5 })
})
afterAll(async () => {
  await closeAll(relays.map((r) => () => r.close()))
  await closeAll(brokers.map((b) => () => b.close()))
  await closeAll(
    [
      ...tables.map((t) => () => pool.query(`DROP TABLE IF EXISTS \`${t}\``)),
      () => names.cleanup(),
      () => proxy.close(),
    ],
    10_000,
  )
  await closeAll([() => pool.end(), () => otel.shutdown()])
}, 30_000)
beforeEach(() => {
  otel.resetSpans()
  // a fault test that failed midway must not leave the next one behind a black hole
  proxy.restore()
})

/** A broker reporting to the test SDK (under a name of its own), closed after the file. */
function broker(options: BrokerOptions): Broker {
  const b = createBroker({
    shutdownTimeout: 2000,
    name: uniqueName('otel'),
    ...providers,
    ...options,
  })
  brokers.push(b)
  return b
}

/** Runs `fn` under an application span (a request), as the code that publishes would. */
function inRequest<T>(fn: () => Promise<T>): Promise<{ result: T; request: ReadableSpanId }> {
  return app.startActiveSpan('request', async (span) => {
    try {
      const result = await fn()
      return { result, request: idOf(span.spanContext()) }
    } finally {
      span.end()
    }
  })
}

/**
 * The test SDK's meter provider, keeping count of the observable callbacks registered and not yet
 * removed (the SDK keeps reporting a cumulative counter's last value after its callback is gone,
 * so values alone cannot show that close() unregistered it).
 */
function countingCallbacks(): { meterProvider: MeterProvider; live: Set<BatchObservableCallback> } {
  const live = new Set<BatchObservableCallback>()
  const meterProvider: MeterProvider = {
    getMeter(name, version, options) {
      const meter = otel.meterProvider.getMeter(name, version, options)
      return new Proxy(meter, {
        get(target, property, receiver) {
          if (property === 'addBatchObservableCallback')
            return (callback: BatchObservableCallback, observables: Observable[]) => {
              live.add(callback)
              target.addBatchObservableCallback(callback, observables)
            }
          if (property === 'removeBatchObservableCallback')
            return (callback: BatchObservableCallback, observables: Observable[]) => {
              live.delete(callback)
              target.removeBatchObservableCallback(callback, observables)
            }
          const value = Reflect.get(target, property, receiver)
          return typeof value === 'function' ? value.bind(target) : value
        },
      }) as Meter
    },
  }
  return { meterProvider, live }
}

interface ReadableSpanId {
  traceId: string
  spanId: string
}

function idOf(context: { traceId: string; spanId: string }): ReadableSpanId {
  return { traceId: context.traceId, spanId: context.spanId }
}

function only(name: string): ReadableSpan {
  const spans = otel.spansNamed(name)
  expect(spans, `spans named "${name}"`).toHaveLength(1)
  return spans[0] as ReadableSpan
}

function parentOf(span: ReadableSpan): ReadableSpanId | undefined {
  const parent = span.parentSpanContext
  return parent === undefined ? undefined : idOf(parent)
}

/** The W3C traceparent of a span: `00-<trace>-<span>-<flags>`. */
function traceparentOf(span: ReadableSpan): string {
  const c = span.spanContext()
  return `00-${c.traceId}-${c.spanId}-0${c.traceFlags}`
}

describe('mq telemetry', () => {
  describe('publish and process', () => {
    it('publishes under a PRODUCER span whose context travels in the headers; the CONSUMER span continues it and links to it', async () => {
      const exchange = names.exchange('orders')
      const queue = names.queue('billing')
      const b = broker({
        urls: url,
        topology: {
          exchanges: [{ name: exchange, type: 'topic' }],
          queues: [{ name: queue, bindings: [{ exchange, routingKey: 'order.*' }] }],
        },
      })
      const received: Delivery[] = []
      await b.consume(queue, (m) => {
        received.push(m)
      })
      const { request } = await inRequest(() =>
        b.publish(exchange, 'order.placed', { orderId: 'o-1' }, { messageId: 'm-1' }),
      )
      await until(() => received.length === 1, 10_000, 'delivery')
      await until(() => otel.spansNamed(`process ${queue}`).length === 1, 5000, 'process span')

      const publish = only(`publish ${exchange}`)
      expect(publish.kind).toBe(SpanKind.PRODUCER)
      expect(parentOf(publish)).toEqual(request)
      expect(publish.status.code).not.toBe(SpanStatusCode.ERROR)
      expect(publish.attributes).toMatchObject({
        'messaging.system': 'rabbitmq',
        'messaging.operation.name': 'publish',
        'messaging.operation.type': 'send',
        'messaging.destination.name': exchange,
        'messaging.rabbitmq.destination.routing_key': 'order.placed',
        'messaging.message.id': 'm-1',
        'messaging.message.body.size': Buffer.byteLength('{"orderId":"o-1"}'),
      })
      // the context crossed in the message: the publish span's own traceparent
      expect(received[0]?.headers.traceparent).toBe(traceparentOf(publish))

      const process = only(`process ${queue}`)
      expect(process.kind).toBe(SpanKind.CONSUMER)
      expect(parentOf(process)).toEqual(idOf(publish.spanContext()))
      expect(process.links.map((l) => idOf(l.context))).toEqual([idOf(publish.spanContext())])
      expect(process.status.code).not.toBe(SpanStatusCode.ERROR)
      expect(process.attributes).toMatchObject({
        'messaging.system': 'rabbitmq',
        'messaging.operation.name': 'process',
        'messaging.operation.type': 'process',
        'messaging.destination.name': queue,
        'messaging.rabbitmq.destination.routing_key': 'order.placed',
        'messaging.message.id': 'm-1',
        'ballast.mq.attempt': 0,
        'ballast.mq.outcome': 'ack',
      })
    })

    it('runs the handler under the process span: a publish inside the handler is its child, in the same trace', async () => {
      const first = names.queue('step1')
      const second = names.queue('step2')
      const b = broker({
        urls: url,
        topology: { queues: [{ name: first }, { name: second }] },
      })
      let done = false
      await b.consume(first, async () => {
        await b.publish('', second, { step: 2 })
      })
      await b.consume(second, () => {
        done = true
      })
      const { request } = await inRequest(() => b.publish('', first, { step: 1 }))
      await until(() => done, 10_000, 'second delivery')
      // the first delivery's span ends after its handler's publish is confirmed: maybe after the second's
      await until(
        () =>
          otel.spansNamed(`process ${first}`).length === 1 &&
          otel.spansNamed(`process ${second}`).length === 1,
        5000,
        'both process spans',
      )

      const processFirst = only(`process ${first}`)
      const publishSecond = only(`publish ${second}`)
      const processSecond = only(`process ${second}`)
      expect(parentOf(publishSecond)).toEqual(idOf(processFirst.spanContext()))
      expect(parentOf(processSecond)).toEqual(idOf(publishSecond.spanContext()))
      for (const span of [processFirst, publishSecond, processSecond])
        expect(span.spanContext().traceId).toBe(request.traceId)
    })

    it('counts publishes and deliveries per queue, with the process duration in seconds', async () => {
      const queue = names.queue('counted')
      const b = broker({ urls: url, topology: { queues: [{ name: queue }] } })
      let handled = 0
      await b.consume(queue, () => {
        handled++
      })
      for (let i = 0; i < 5; i++) await b.publish('', queue, { i })
      await until(() => handled === 5 && b.stats().acked === 5, 10_000, 'five acks')
      // each delivery's duration is recorded as its span ends, just after the ack
      await until(() => otel.spansNamed(`process ${queue}`).length === 5, 5000, 'five spans')

      // this broker's own publishes: the instruments of one broker report its stats()
      const stats = b.stats()
      expect(stats.published).toBe(5)
      const sent = (await otel.points('messaging.client.sent.messages')).map((p) => p.value)
      expect(sent).toContain(5)
      const confirmed = (await otel.points('ballast.mq.confirmed')).map((p) => p.value)
      expect(confirmed).toContain(5)
      const where = { 'messaging.destination.name': queue }
      expect(await otel.value('messaging.client.consumed.messages', where)).toBe(5)
      expect(
        await otel.value('ballast.mq.processed', { ...where, 'ballast.mq.outcome': 'ack' }),
      ).toBe(5)
      expect(
        await otel.value('ballast.mq.processed', { ...where, 'ballast.mq.outcome': 'dead_letter' }),
      ).toBe(0)
      expect(await otel.value('ballast.mq.processed', where)).toBe(5)
      expect(await otel.value('ballast.mq.redelivered', where)).toBe(0)
      expect(await otel.value('ballast.mq.in_hand', where)).toBe(0)
      expect(await otel.value('messaging.process.duration', where)).toBe(5)

      const metrics = await otel.collect()
      const descriptor = (name: string) =>
        metrics.find((m) => m.descriptor.name === name)?.descriptor
      expect(descriptor('messaging.process.duration')?.unit).toBe('s')
      expect(descriptor('messaging.client.sent.messages')?.unit).toBe('{message}')
      expect(descriptor('ballast.mq.buffered')?.unit).toBe('{message}')
      // each publish's round trip to its confirm, per destination
      expect(descriptor('messaging.client.operation.duration')?.unit).toBe('s')
      const publishes = (await otel.points('messaging.client.operation.duration')).filter(
        (p) => p.attributes['messaging.destination.name'] === queue,
      )
      expect(publishes).toHaveLength(1)
      expect(publishes[0]?.attributes).toEqual({
        'messaging.system': 'rabbitmq',
        'messaging.operation.name': 'publish',
        'messaging.operation.type': 'send',
        'messaging.destination.name': queue,
      })
      expect(publishes[0]?.value).toBe(5)
      expect(publishes[0]?.sum).toBeGreaterThan(0)
      expect(publishes[0]?.sum).toBeLessThan(10)
      const [point] = (await otel.points('messaging.process.duration')).filter(
        (p) => p.attributes['messaging.destination.name'] === queue,
      )
      expect(point?.attributes).toEqual({
        'messaging.system': 'rabbitmq',
        'messaging.destination.name': queue,
        'messaging.operation.name': 'process',
      })
    })
  })

  describe('a poisoned message', () => {
    it('marks its process span ERROR with error.type, and the dead-letter counter of its queue rises', async () => {
      const queue = names.queue('poison')
      const b = broker({ urls: url, topology: { queues: [{ name: queue, retry: false }] } })
      await b.consume(queue, () => {
        throw Object.assign(new Error('cannot bill'), { code: 'E_BILLING_REFUSED' })
      })
      await inRequest(() => b.publish('', queue, { orderId: 'o-poison' }))
      await until(() => b.stats().deadLettered === 1, 10_000, 'dead letter')
      await until(() => otel.spansNamed(`process ${queue}`).length === 1, 5000, 'process span')

      const process = only(`process ${queue}`)
      expect(process.status.code).toBe(SpanStatusCode.ERROR)
      expect(process.status.message).toBe('cannot bill')
      expect(process.attributes['error.type']).toBe('E_BILLING_REFUSED')
      expect(process.attributes['ballast.mq.outcome']).toBe('dead_letter')
      // the dead letter's republish is a child of the failed delivery: the DLQ keeps the trace
      const toDlq = only(`publish ${queue}.dlq`)
      expect(parentOf(toDlq)).toEqual(idOf(process.spanContext()))

      const where = { 'messaging.destination.name': queue }
      expect(
        await otel.value('ballast.mq.processed', { ...where, 'ballast.mq.outcome': 'dead_letter' }),
      ).toBe(1)
      expect(
        await otel.value('ballast.mq.processed', { ...where, 'ballast.mq.outcome': 'ack' }),
      ).toBe(0)
      expect(
        await otel.value('ballast.mq.processed', { ...where, 'ballast.mq.outcome': 'retry' }),
      ).toBe(0)
      expect(
        await otel.value('messaging.process.duration', {
          ...where,
          'error.type': 'E_BILLING_REFUSED',
        }),
      ).toBe(1)
    })

    it('continues the trace through the retry queue: the retried delivery is a child of the retry publish', async () => {
      const queue = names.queue('retried')
      const b = broker({
        urls: url,
        topology: { queues: [{ name: queue, retry: { delays: [50] } }] },
      })
      let calls = 0
      await b.consume(queue, () => {
        calls++
        if (calls === 1) throw new TypeError('flaky')
      })
      const { request } = await inRequest(() => b.publish('', queue, { n: 1 }))
      await until(() => b.stats().acked === 1, 10_000, 'ack after one retry')
      await until(() => otel.spansNamed(`process ${queue}`).length === 2, 5000, 'two spans')

      const [failed, succeeded] = otel
        .spansNamed(`process ${queue}`)
        .sort(
          (x, y) =>
            Number(x.attributes['ballast.mq.attempt']) - Number(y.attributes['ballast.mq.attempt']),
        )
      expect(failed?.attributes).toMatchObject({
        'ballast.mq.outcome': 'retry',
        'error.type': 'TypeError',
        'ballast.mq.attempt': 0,
      })
      expect(succeeded?.attributes).toMatchObject({
        'ballast.mq.outcome': 'ack',
        'ballast.mq.attempt': 1,
      })
      const retryPublish = otel
        .spans()
        .find(
          (s) =>
            s.kind === SpanKind.PRODUCER && parentOf(s)?.spanId === failed?.spanContext().spanId,
        )
      expect(retryPublish).toBeDefined()
      expect(parentOf(succeeded as ReadableSpan)).toEqual(
        idOf((retryPublish as ReadableSpan).spanContext()),
      )
      expect(succeeded?.spanContext().traceId).toBe(request.traceId)
      const where = { 'messaging.destination.name': queue }
      expect(
        await otel.value('ballast.mq.processed', { ...where, 'ballast.mq.outcome': 'retry' }),
      ).toBe(1)
      expect(
        await otel.value('ballast.mq.processed', { ...where, 'ballast.mq.outcome': 'ack' }),
      ).toBe(1)
    })
  })

  describe('a cut connection', () => {
    it('resends the unconfirmed publishes on the next connection, still carrying their trace context', async () => {
      const queue = names.queue('resent')
      const b = broker({
        urls: proxy.url(url),
        heartbeatInterval: 1000,
        reconnect: { initialDelay: 50, maxDelay: 200 },
        topology: { queues: [{ name: queue, retry: false, deadLetter: false }] },
      })
      await b.ready()
      const traceparents = new Map<string, string>()
      const consumer = broker({ urls: url })
      await consumer.consume(queue, (m) => {
        traceparents.set(m.messageId as string, String(m.headers.traceparent))
      })
      // written but never confirmed: the black hole swallows the confirms, the cut fails them
      proxy.blackhole()
      const published = inRequest(() =>
        Promise.all(
          [0, 1, 2, 3, 4].map((i) => b.publish('', queue, { i }, { messageId: `r-${i}` })),
        ),
      )
      await until(() => b.stats().inFlight === 5, 5000, 'five in flight')
      proxy.restore()
      proxy.cut()
      const { request } = await within(published, 15_000, 'confirmed after the reconnect', () =>
        b.stats(),
      )
      await until(() => traceparents.size === 5, 10_000, 'five deliveries')

      expect(b.stats().resent).toBeGreaterThanOrEqual(5)
      expect(await otel.value('ballast.mq.resent')).toBeGreaterThanOrEqual(5)
      expect(
        await otel.value('ballast.mq.reconnects', { 'ballast.mq.connection': 'publisher' }),
      ).toBeGreaterThanOrEqual(1)
      const publishes = otel.spansNamed(`publish ${queue}`)
      expect(publishes).toHaveLength(5)
      for (const span of publishes) {
        const id = span.attributes['messaging.message.id'] as string
        // one span per publish, its context in the copy that was finally delivered
        expect(traceparents.get(id)).toBe(traceparentOf(span))
        expect(parentOf(span)).toEqual(request)
        expect(span.status.code).not.toBe(SpanStatusCode.ERROR)
      }
    })
    it("fails the unconfirmed publishes (unconfirmedPolicy 'fail'): ERROR publish spans and durations with error.type, the failed counter rises", async () => {
      const queue = names.queue('unconfirmed')
      const name = uniqueName('otelcut')
      const b = broker({
        name,
        urls: proxy.url(url),
        heartbeatInterval: 1000,
        unconfirmedPolicy: 'fail',
        reconnect: { initialDelay: 50, maxDelay: 200 },
        topology: { queues: [{ name: queue, retry: false, deadLetter: false }] },
      })
      // one confirmed publish first: the channel is open before the black hole
      await b.publish('', queue, { warm: true }, { messageId: 'warm' })
      proxy.blackhole()
      const results = Promise.allSettled(
        [0, 1, 2].map((i) => b.publish('', queue, { i }, { messageId: `f-${i}` })),
      )
      await until(() => b.stats().inFlight === 3, 5000, 'three in flight')
      proxy.restore()
      proxy.cut()
      const settled = await within(results, 15_000, 'failed by the cut', () => b.stats())
      expect(settled.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected'])

      const publishes = otel.spansNamed(`publish ${queue}`)
      expect(publishes).toHaveLength(4)
      const warm = publishes.find((s) => s.attributes['messaging.message.id'] === 'warm')
      expect(warm?.status.code).not.toBe(SpanStatusCode.ERROR)
      expect(warm?.attributes['error.type']).toBeUndefined()
      const cut = publishes.filter((s) => s !== warm)
      expect(cut).toHaveLength(3)
      for (const span of cut) {
        expect(span.status.code).toBe(SpanStatusCode.ERROR)
        expect(span.attributes['error.type']).toBe('E_MQ_PUBLISH_UNCONFIRMED')
      }
      const client = { 'messaging.client.id': name }
      expect(await otel.value('ballast.mq.failed', client)).toBe(3)
      expect(await otel.value('ballast.mq.confirmed', client)).toBe(1)
      expect(await otel.value('messaging.client.sent.messages', client)).toBe(4)
      await until(() => b.stats().connected.publisher, 10_000, 'reconnected')
      expect(
        await otel.value('ballast.mq.reconnects', {
          ...client,
          'ballast.mq.connection': 'publisher',
        }),
      ).toBeGreaterThanOrEqual(1)
      expect(
        await otel.value('messaging.client.operation.duration', {
          'messaging.destination.name': queue,
          'error.type': 'E_MQ_PUBLISH_UNCONFIRMED',
        }),
      ).toBe(3)
      expect(
        await otel.value('messaging.client.operation.duration', {
          'messaging.destination.name': queue,
        }),
      ).toBe(4)
    })

    it('marks a delivery whose channel was cut under its handler ERROR (stale_ack), and counts the stale ack and the redelivery', async () => {
      const queue = names.queue('cutconsumer')
      const name = uniqueName('otelcutc')
      const publisher = broker({ urls: url, topology: { queues: [{ name: queue }] } })
      const b = broker({
        name,
        urls: proxy.url(url),
        heartbeatInterval: 1000,
        reconnect: { initialDelay: 50, maxDelay: 200 },
        topology: { queues: [{ name: queue }] },
      })
      let release: () => void = () => {}
      const gate = new Promise<void>((resolve) => {
        release = resolve
      })
      let calls = 0
      await b.consume(queue, async () => {
        calls++
        if (calls === 1) await gate
      })
      await inRequest(() => publisher.publish('', queue, { n: 1 }, { messageId: 'c-1' }))
      await until(() => calls === 1, 10_000, 'first delivery')
      proxy.cut()
      await until(
        () => calls === 2,
        15_000,
        'redelivery on the new channel',
        () => b.stats(),
      )
      release()
      await until(
        () => b.stats().staleAcks === 1 && b.stats().acked === 2,
        10_000,
        'the stale ack',
        () => b.stats(),
      )
      await until(() => otel.spansNamed(`process ${queue}`).length === 2, 5000, 'two spans')

      const spans = otel.spansNamed(`process ${queue}`)
      const lost = spans.find((s) => s.attributes['ballast.mq.redelivered'] === false)
      const again = spans.find((s) => s.attributes['ballast.mq.redelivered'] === true)
      expect(lost?.status.code).toBe(SpanStatusCode.ERROR)
      expect(lost?.attributes['error.type']).toBe('stale_ack')
      expect(again?.status.code).not.toBe(SpanStatusCode.ERROR)
      expect(again?.attributes['ballast.mq.outcome']).toBe('ack')
      // both continue the publisher's trace
      const publish = only(`publish ${queue}`)
      for (const span of [lost, again])
        expect(parentOf(span as ReadableSpan)).toEqual(idOf(publish.spanContext()))

      const where = { 'messaging.destination.name': queue, 'messaging.client.id': name }
      expect(await otel.value('ballast.mq.stale_acks', where)).toBe(1)
      expect(await otel.value('ballast.mq.redelivered', where)).toBe(1)
      expect(await otel.value('messaging.client.consumed.messages', where)).toBe(2)
      expect(
        await otel.value('messaging.process.duration', {
          'messaging.destination.name': queue,
          'error.type': 'stale_ack',
        }),
      ).toBe(1)
      expect(
        await otel.value('ballast.mq.reconnects', {
          'messaging.client.id': name,
          'ballast.mq.connection': 'consumer',
        }),
      ).toBeGreaterThanOrEqual(1)
    })
  })

  describe('the outbox', () => {
    async function outboxTable(): Promise<string> {
      const table = uniqueName('mqotel_outbox')
        .replace(/[^A-Za-z0-9_]/g, '_')
        .slice(0, 60)
      tables.push(table)
      await createOutbox({ table }).createTable(pool)
      return table
    }

    it('stores the context of the enqueue with the row; the relay publishes under it and the consumer continues the same trace', async () => {
      const table = await outboxTable()
      const queue = names.queue('outboxed')
      const b = broker({ urls: url, topology: { queues: [{ name: queue }] } })
      const outbox = createOutbox({ table, ...providers })
      const received: Delivery[] = []
      await b.consume(queue, (m) => {
        received.push(m)
      })
      const { request } = await inRequest(async () => {
        const connection = await pool.getConnection()
        try {
          await connection.beginTransaction()
          await outbox.enqueue(
            connection,
            '',
            queue,
            { orderId: 'o-outbox' },
            { messageId: 'ob-1' },
          )
          await connection.commit()
        } finally {
          connection.release()
        }
      })
      // the request is over when the relay runs: only the row links them
      const [rows] = (await pool.query(`SELECT headers FROM \`${table}\``)) as [
        Array<{ headers: string }>,
        unknown,
      ]
      const create = only(`create ${queue}`)
      expect(create.kind).toBe(SpanKind.PRODUCER)
      expect(parentOf(create)).toEqual(request)
      expect(create.attributes).toMatchObject({
        'messaging.operation.type': 'create',
        'messaging.destination.name': queue,
        'messaging.message.id': 'ob-1',
        'ballast.mq.outbox': table,
      })
      expect(JSON.parse(rows[0]?.headers ?? '{}').traceparent).toBe(traceparentOf(create))

      const relay = createOutboxRelay({ pool, broker: b, outbox, autoStart: false, ...providers })
      relays.push(relay)
      await app.startActiveSpan('unrelated', async (span) => {
        // even run inside some other context, the relay publishes under the row's
        await relay.runOnce()
        span.end()
      })
      await until(() => received.length === 1, 10_000, 'delivery')
      await until(() => otel.spansNamed(`process ${queue}`).length === 1, 5000, 'process span')

      const publish = only(`publish ${queue}`)
      const process = only(`process ${queue}`)
      expect(parentOf(publish)).toEqual(idOf(create.spanContext()))
      expect(parentOf(process)).toEqual(idOf(publish.spanContext()))
      expect(received[0]?.headers.traceparent).toBe(traceparentOf(publish))
      for (const span of [create, publish, process])
        expect(span.spanContext().traceId).toBe(request.traceId)
    })

    it('still relays rows written without a context (before this version): their publish starts a trace', async () => {
      const table = await outboxTable()
      const queue = names.queue('oldrows')
      const b = broker({ urls: url, topology: { queues: [{ name: queue }] } })
      await pool.query(
        `INSERT INTO \`${table}\` (message_id, exchange, routing_key, content, content_type, headers) VALUES ('old-1', '', ?, '{"n":1}', 'application/json', '{"x-tenant":"t1"}'), ('old-2', '', ?, '{"n":2}', 'application/json', NULL)`,
        [queue, queue],
      )
      const received: Delivery[] = []
      await b.consume(queue, (m) => {
        received.push(m)
      })
      const relay = createOutboxRelay({
        pool,
        broker: b,
        outbox: createOutbox({ table }),
        autoStart: false,
        ...providers,
      })
      relays.push(relay)
      expect(await relay.runOnce()).toBe(2)
      await until(() => received.length === 2, 10_000, 'deliveries')
      const publishes = otel.spansNamed(`publish ${queue}`)
      expect(publishes).toHaveLength(2)
      for (const span of publishes) expect(span.parentSpanContext).toBeUndefined()
      expect(received.find((m) => m.messageId === 'old-1')?.headers['x-tenant']).toBe('t1')
    })

    it('reports the backlog and the age of the oldest unsent row per outbox, and the relay counters', async () => {
      const table = await outboxTable()
      const queue = names.queue('backlog')
      const b = broker({ urls: url, topology: { queues: [{ name: queue }] } })
      const outbox = createOutbox({ table })
      for (let i = 0; i < 3; i++) await outbox.enqueue(pool, '', queue, { i })
      await pool.query(
        `UPDATE \`${table}\` SET created_at = CURRENT_TIMESTAMP(3) - INTERVAL 90 SECOND WHERE id = (SELECT MIN(id) FROM (SELECT id FROM \`${table}\`) AS t)`,
      )
      const counting = countingCallbacks()
      const relay = createOutboxRelay({
        pool,
        broker: b,
        outbox,
        autoStart: false,
        meterProvider: counting.meterProvider,
      })
      relays.push(relay)
      const where = { 'ballast.mq.outbox': table }
      expect(await otel.value('ballast.mq.outbox.backlog', where)).toBe(3)
      const age = await otel.value('ballast.mq.outbox.oldest_age', where)
      expect(age).toBeGreaterThanOrEqual(89)
      expect(age).toBeLessThan(200)

      expect(await relay.runOnce()).toBe(3)
      expect(await otel.value('ballast.mq.outbox.backlog', where)).toBe(0)
      expect(await otel.value('ballast.mq.outbox.oldest_age', where)).toBe(0)
      expect(await otel.value('ballast.mq.outbox.sent', where)).toBe(3)
      expect(await otel.value('ballast.mq.outbox.batches', where)).toBe(1)
      expect(await otel.value('ballast.mq.outbox.failed', where)).toBe(0)

      // close() unregisters them: no backlog query after it
      expect(counting.live.size).toBe(2) // the counters' callback and the backlog's
      await relay.close()
      expect(counting.live.size).toBe(0)
    })

    it('tells apart two relays of tables with one name (one per shard) by their name option', async () => {
      const table = await outboxTable()
      const queue = names.queue('named')
      const b = broker({ urls: url, topology: { queues: [{ name: queue }] } })
      const outbox = createOutbox({ table })
      for (let i = 0; i < 2; i++) await outbox.enqueue(pool, '', queue, { i })
      // one table read by two relays stands for two shards' tables of the same name
      const make = (name: string) => {
        const relay = createOutboxRelay({
          pool,
          broker: b,
          outbox,
          autoStart: false,
          name,
          ...providers,
        })
        relays.push(relay)
        return relay
      }
      const first = make(`${table}@shard-0`)
      make(`${table}@shard-1`)
      expect(await first.runOnce()).toBe(2)
      const sent = (name: string) =>
        otel.value('ballast.mq.outbox.sent', { 'ballast.mq.outbox': name })
      expect(await sent(`${table}@shard-0`)).toBe(2)
      expect(await sent(`${table}@shard-1`)).toBe(0)
      expect(() =>
        createOutboxRelay({ pool, broker: b, outbox, autoStart: false, name: '' }),
      ).toThrow(/invalid option "name"/)
    })
  })

  it('records no message body and no header value in any span attribute', async () => {
    const queue = names.queue('secrets')
    const table = uniqueName('mqotel_secret')
      .replace(/[^A-Za-z0-9_]/g, '_')
      .slice(0, 60)
    tables.push(table)
    const b = broker({ urls: url, topology: { queues: [{ name: queue, retry: false }] } })
    const secretBody = 'card-4111111111111111'
    const secretHeader = 'Bearer tok-9f8e7d6c5b4a'
    let n = 0
    await b.consume(queue, () => {
      n++
      if (n === 1) throw new Error('refused')
    })
    const outbox = createOutbox({ table, ...providers })
    await outbox.createTable(pool)
    const relay = createOutboxRelay({ pool, broker: b, outbox, autoStart: false, ...providers })
    relays.push(relay)
    await inRequest(async () => {
      await b.publish('', queue, { card: secretBody }, { headers: { authorization: secretHeader } })
      await outbox.enqueue(
        pool,
        '',
        queue,
        { card: secretBody },
        { headers: { authorization: secretHeader } },
      )
    })
    await relay.runOnce()
    await until(() => n === 2, 10_000, 'two deliveries')
    await until(() => otel.spansNamed(`process ${queue}`).length === 2, 5000, 'process spans')

    const values = otel.spans().flatMap((s) => [s.name, ...Object.values(s.attributes).map(String)])
    expect(values.length).toBeGreaterThan(20)
    for (const value of values) {
      expect(value).not.toContain('4111111111111111')
      expect(value).not.toContain('tok-9f8e7d6c5b4a')
    }
  })

  it('without a tracer provider (no SDK) adds no header, yet passes on the context of a trace around the publish', async () => {
    const queue = names.queue('nosdk')
    const b = createBroker({
      urls: url,
      shutdownTimeout: 2000,
      name: uniqueName('nosdk'),
      topology: { queues: [{ name: queue }] },
    })
    brokers.push(b)
    const received: Delivery[] = []
    await b.consume(queue, (m) => {
      received.push(m)
    })
    await b.publish('', queue, { n: 1 }, { messageId: 'plain' })
    const { request } = await inRequest(() =>
      b.publish('', queue, { n: 2 }, { messageId: 'in-request' }),
    )
    await until(() => received.length === 2, 10_000, 'two deliveries')
    const plain = received.find((m) => m.messageId === 'plain')
    const inTrace = received.find((m) => m.messageId === 'in-request')
    expect(plain?.headers.traceparent).toBeUndefined()
    // the application's span (from another provider) goes on in the message, unchanged
    expect(inTrace?.headers.traceparent).toBe(`00-${request.traceId}-${request.spanId}-01`)
    expect(otel.spans().filter((s) => s.name.endsWith(queue))).toEqual([])
  })

  it('checks meterProvider and tracerProvider like the other options, before connecting', () => {
    expect(() => createBroker({ urls: url, meterProvider: {} as MeterProvider })).toThrow(
      /invalid option "meterProvider": expected an OpenTelemetry MeterProvider/,
    )
    expect(() =>
      createBroker({ urls: url, tracerProvider: 'otel' as unknown as TracerProvider }),
    ).toThrow(/invalid option "tracerProvider": expected an OpenTelemetry TracerProvider/)
    expect(() => createOutbox({ tracerProvider: null as unknown as TracerProvider })).toThrow(
      InvalidArgumentError,
    )
    const b = broker({ urls: url })
    expect(() =>
      createOutboxRelay({
        pool,
        broker: b,
        outbox: createOutbox(),
        autoStart: false,
        meterProvider: 42 as unknown as MeterProvider,
      }),
    ).toThrow(/invalid option "meterProvider"/)
  })

  it('unregisters the broker instruments on close()', async () => {
    const queue = names.queue('closed')
    const counting = countingCallbacks()
    const b = createBroker({
      urls: url,
      shutdownTimeout: 2000,
      meterProvider: counting.meterProvider,
      topology: { queues: [{ name: queue }] },
    })
    await b.consume(queue, () => {})
    await b.publish('', queue, 'x')
    const where = { 'messaging.destination.name': queue }
    await until(() => b.stats().acked === 1, 10_000, 'ack')
    expect(
      await otel.value('ballast.mq.processed', { ...where, 'ballast.mq.outcome': 'ack' }),
    ).toBe(1)
    expect(counting.live.size).toBe(1)
    await b.close()
    expect(counting.live.size).toBe(0)
  })
})
