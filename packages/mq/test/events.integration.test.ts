import { amqpNames, amqpUrl } from '@ballast/testkit'
import { captureListenerErrors } from '@ballast/testkit/vitest'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { type Broker, type BrokerEvents, createBroker } from '../src/index.js'
import { closeAll, until } from './support/bounded.js'
import { trackDerivedQueues } from './support/derivedQueues.js'

const names = amqpNames('mqevents')
let url: string
const brokers: Broker[] = []

beforeAll(async () => {
  url = await amqpUrl()
})
afterAll(async () => {
  vi.restoreAllMocks()
  await closeAll(brokers.map((b) => () => b.close()))
  await closeAll([() => names.cleanup()], 10_000)
}, 30_000)

describe('Broker events against RabbitMQ', () => {
  it('listeners that throw break neither publish nor consume, retry nor dead-lettering; each error is rethrown in a microtask', async () => {
    const rethrown = captureListenerErrors()
    const queue = names.queue('throwing-listeners')
    const topology = { queues: [{ name: queue, retry: { maxAttempts: 2, initialDelay: 50 } }] }
    const broker = createBroker({ urls: url, topology, shutdownTimeout: 2000 })
    brokers.push(broker)
    trackDerivedQueues(broker, topology, names)
    const events: Array<keyof BrokerEvents & string> = [
      'connected',
      'consumer-started',
      'handler-failed',
      'retried',
      'dead-lettered',
    ]
    for (const event of events) {
      broker.on(event, () => {
        throw new Error(`listener of ${event}`)
      })
    }
    const deadLettered: unknown[] = []
    broker.on('dead-lettered', ({ messageId }) => deadLettered.push(messageId))
    const failedAttempts: number[] = []
    broker.on('handler-failed', ({ attempt }) => failedAttempts.push(attempt))
    const retriedAttempts: number[] = []
    broker.on('retried', ({ attempt }) => retriedAttempts.push(attempt))
    const handled: string[] = []
    await broker.consume(queue, (m) => {
      if (m.body === 'poison') throw new Error('always fails')
      handled.push(m.body as string)
    })
    await broker.publish('', queue, 'first')
    await broker.publish('', queue, 'poison', { messageId: 'poison-1' })
    await broker.publish('', queue, 'last')
    await until(
      () => handled.length === 2 && deadLettered.length === 1,
      10_000,
      'two handled, one dead-lettered',
    )
    expect(handled).toEqual(['first', 'last'])
    expect(deadLettered).toEqual(['poison-1'])
    // maxAttempts 2: the first delivery and one retry, each attempt numbered from 1
    expect(failedAttempts).toEqual([1, 2])
    expect(retriedAttempts).toEqual([1])
    // published counts the republishes to the retry and dead-letter queues too
    expect(broker.stats()).toMatchObject({
      published: 5,
      confirmed: 5,
      acked: 2,
      retried: 1,
      deadLettered: 1,
    })
    await until(() => rethrown.length >= 6, 5000, 'the listeners errors rethrown')
    const messages = rethrown.map((error) => (error as Error).message)
    for (const event of events) expect(messages).toContain(`listener of ${event}`)
    // the poison message failed twice (first delivery and its one retry)
    expect(messages.filter((m) => m === 'listener of handler-failed')).toHaveLength(2)
  })
})
