import { amqpUrl, mysqlUrl, rejection, uniqueName } from '@ballast/testkit'
import mysql from 'mysql2/promise'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  BrokerClosedError,
  createBroker,
  createOutbox,
  createOutboxRelay,
  errors,
  isMqError,
  MqClosedError,
} from '../src/index.js'
import { closeAll } from './support/bounded.js'

function expectClosed(error: unknown, object: string, operation: string): void {
  expect(error).toBeInstanceOf(MqClosedError)
  expect(isMqError(error)).toBe(true)
  const closed = error as MqClosedError
  expect(closed.code).toBe('E_MQ_CLOSED')
  expect(closed.retryable).toBe(false)
  expect(closed.object).toBe(object)
  expect(closed.operation).toBe(operation)
  expect(closed.message).toBe(`${object} is closed: ${operation}() after close()`)
}

let url: string
let pool: mysql.Pool

beforeAll(async () => {
  url = await amqpUrl()
  pool = mysql.createPool({ uri: await mysqlUrl(), connectionLimit: 2 })
})
afterAll(async () => {
  await closeAll([() => pool.end()])
})

describe('after close()', () => {
  it('a broker refuses publish(), consume(), ready() and writable() with a non-retryable MqClosedError', async () => {
    const broker = createBroker({ urls: url, shutdownTimeout: 0 })
    await broker.ready()
    await broker.close()
    expectClosed(await rejection(() => broker.publish('', 'q', { a: 1 })), 'broker', 'publish')
    expectClosed(await rejection(() => broker.consume('q', () => {})), 'broker', 'consume')
    expectClosed(await rejection(() => broker.ready()), 'broker', 'ready')
    expectClosed(await rejection(() => broker.writable()), 'broker', 'writable')
    // a second close() is a no-op, not an error
    await expect(broker.close()).resolves.toBeUndefined()
  })

  it('an outbox relay refuses start() and runOnce() with a non-retryable MqClosedError', async () => {
    const broker = createBroker({ urls: url, shutdownTimeout: 0 })
    const relay = createOutboxRelay({
      pool,
      broker,
      outbox: createOutbox({ table: uniqueName('closed') }),
      autoStart: false,
    })
    await relay.close()
    let started: unknown
    try {
      relay.start()
    } catch (error) {
      started = error
    }
    expectClosed(started, 'outbox relay', 'start')
    expectClosed(await rejection(() => relay.runOnce()), 'outbox relay', 'runOnce')
    await broker.close()
  })
})

describe('MqClosedError', () => {
  it('is in the errors map, never retryable, and the old BrokerClosedError name still catches it', () => {
    expect(errors.MqClosedError).toBe(MqClosedError)
    const error = new MqClosedError('broker', 'publish', { retryable: true })
    expect(error.retryable).toBe(false)
    expect(error).toBeInstanceOf(BrokerClosedError)
  })
})
