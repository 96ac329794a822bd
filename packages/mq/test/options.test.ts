import { afterAll, describe, expect, it } from 'vitest'
import {
  createBroker,
  createInbox,
  createOutbox,
  createOutboxRelay,
  DEFAULT_BROKER_OPTIONS,
  DEFAULT_CONSUME_OPTIONS,
  DEFAULT_ENQUEUE_OPTIONS,
  DEFAULT_INBOX_OPTIONS,
  DEFAULT_MESSAGE_DEFINITION_OPTIONS,
  DEFAULT_OUTBOX_OPTIONS,
  DEFAULT_OUTBOX_RELAY_OPTIONS,
  DEFAULT_PUBLISH_OPTIONS,
  DEFAULT_RECONNECT_OPTIONS,
  DEFAULT_RETRY_OPTIONS,
  defineMessage,
  InvalidArgumentError,
  MqClosedError,
  retryDelays,
  type SqlPool,
} from '../src/index.js'

// nothing listens on port 1: these brokers never connect, so only their options are exercised
const URL = 'amqp://127.0.0.1:1'
const brokers: Array<{ close(): Promise<void> }> = []
function broker(options: Record<string, unknown> = {}) {
  const b = createBroker({ urls: URL, connectTimeout: 200, shutdownTimeout: 0, ...options })
  brokers.push(b)
  return b
}
afterAll(() => Promise.all(brokers.map((b) => b.close())))

/** A pool whose connections never come (the relay's loop only reports it). */
const downPool: SqlPool = { getConnection: () => Promise.reject(new Error('database down')) }

function thrown(run: () => unknown): unknown {
  try {
    run()
  } catch (error) {
    return error
  }
  return undefined
}

describe('defaults', () => {
  it('are frozen, nested ones included', () => {
    for (const defaults of [
      DEFAULT_BROKER_OPTIONS,
      DEFAULT_RECONNECT_OPTIONS,
      DEFAULT_CONSUME_OPTIONS,
      DEFAULT_RETRY_OPTIONS,
      DEFAULT_OUTBOX_OPTIONS,
      DEFAULT_OUTBOX_RELAY_OPTIONS,
      DEFAULT_INBOX_OPTIONS,
      DEFAULT_PUBLISH_OPTIONS,
      DEFAULT_ENQUEUE_OPTIONS,
      DEFAULT_MESSAGE_DEFINITION_OPTIONS,
    ]) {
      expect(Object.isFrozen(defaults)).toBe(true)
    }
    expect(DEFAULT_BROKER_OPTIONS.reconnect).toBe(DEFAULT_RECONNECT_OPTIONS)
  })

  it('of consume() are the documented ones', () => {
    expect(DEFAULT_CONSUME_OPTIONS).toEqual({
      prefetch: 32,
      idempotencyPrefix: 'mq:',
      inProgressDelay: 1000,
    })
  })
})

describe('an option given as undefined keeps its default', () => {
  it('in createBroker, nested reconnect options included', () => {
    const options = Object.fromEntries(
      Object.keys(DEFAULT_BROKER_OPTIONS).map((key) => [key, undefined]),
    )
    expect(() =>
      broker({
        ...options,
        urls: URL,
        reconnect: { initialDelay: undefined, maxDelay: undefined, factor: undefined },
      }),
    ).not.toThrow()
  })

  it('in defineMessage', () => {
    const schema = {
      '~standard': { version: 1 as const, vendor: 'x', validate: (value: unknown) => ({ value }) },
    }
    expect(defineMessage({ type: 'order.placed', schema, version: undefined }).version).toBe(1)
  })

  it('in createOutbox and createInbox', () => {
    expect(createOutbox({ table: undefined, maxMessageBytes: undefined }).table).toBe('mq_outbox')
    expect(createInbox({ pool: downPool, consumer: 'billing', table: undefined }).table).toBe(
      'mq_inbox',
    )
  })

  it('in createOutboxRelay', async () => {
    const relay = createOutboxRelay({
      pool: downPool,
      broker: broker(),
      outbox: createOutbox(),
      batchSize: undefined,
      pollInterval: undefined,
      maxAttempts: undefined,
      publishTimeout: undefined,
      autoStart: false,
    })
    await expect(relay.runOnce()).rejects.toThrow('database down')
    await relay.close()
  })

  it('in consume(): the options pass the checks, and the call waits for the connection', async () => {
    const b = createBroker({ urls: URL, connectTimeout: 200, shutdownTimeout: 0 })
    const consuming = b
      .consume('q', () => {}, {
        prefetch: undefined,
        inProgressDelay: undefined,
        idempotencyPrefix: undefined,
        tag: undefined,
      })
      .catch((error: unknown) => error)
    await b.close()
    expect(await consuming).toBeInstanceOf(MqClosedError)
  })

  it("in a queue's retry options", () => {
    expect(retryDelays({ maxAttempts: undefined, initialDelay: undefined })).toEqual(
      retryDelays(undefined),
    )
    expect(retryDelays(undefined)).toEqual([1000, 4000, 16_000])
  })
})

describe("maxAttempts of a queue's retries", () => {
  it('counts the first delivery: maxAttempts 1 never retries, N gives N - 1 retries', () => {
    expect(retryDelays({ maxAttempts: 1 })).toEqual([])
    expect(retryDelays({ maxAttempts: 4, initialDelay: '1s', factor: 2 })).toEqual([
      1000, 2000, 4000,
    ])
  })

  it('refuses 0 with InvalidArgumentError naming it', () => {
    expect(() => retryDelays({ maxAttempts: 0 })).toThrow(
      /^invalid option "retry.maxAttempts": expected an integer >= 1, got 0$/,
    )
  })
})

describe('validation', () => {
  it.each([
    ['heartbeatInterval', '10'],
    ['connectTimeout', '0s'],
    ['shutdownTimeout', '-1s'],
    ['reconnect', 5],
    ['maxSendAttempts', 0],
    ['channels', 1.5],
    ['unconfirmedPolicy', 'drop'],
    ['mandatory', 'yes'],
    ['name', ''],
  ])('createBroker refuses %s: %j with InvalidArgumentError naming it', (name, value) => {
    const error = thrown(() => broker({ [name]: value }))
    expect(error).toBeInstanceOf(InvalidArgumentError)
    expect((error as Error).message).toMatch(new RegExp(`^invalid option "${name}": expected `))
  })

  it('createBroker refuses a bad nested reconnect option, naming its path', () => {
    const error = thrown(() => broker({ reconnect: { jitter: 2 } }))
    expect((error as Error).message).toBe(
      'invalid option "reconnect.jitter": expected a number from 0 to 1, got 2',
    )
  })

  it('takes durations as strings with a unit', () => {
    expect(() =>
      broker({ heartbeatInterval: '5s', connectTimeout: '2s', reconnect: { maxDelay: '1m' } }),
    ).not.toThrow()
  })

  it('consume() refuses a duration string without a unit, naming inProgressDelay', async () => {
    const b = broker()
    await expect(b.consume('q', () => {}, { inProgressDelay: '30' as '30s' })).rejects.toThrow(
      /^invalid option "inProgressDelay": expected a non-negative duration/,
    )
    await expect(b.consume('q', () => {}, { prefetch: 0 })).rejects.toBeInstanceOf(
      InvalidArgumentError,
    )
  })

  it('createOutboxRelay refuses a publishTimeout of 0 and a pollInterval without a unit', () => {
    const base = { pool: downPool, broker: broker(), outbox: createOutbox(), autoStart: false }
    expect(() => createOutboxRelay({ ...base, publishTimeout: 0 })).toThrow(
      /^invalid option "publishTimeout": expected a positive duration/,
    )
    expect(() => createOutboxRelay({ ...base, pollInterval: '200' as '200ms' })).toThrow(
      /^invalid option "pollInterval"/,
    )
    expect(() => createOutboxRelay({ ...base, broker: {} as never })).toThrow(
      /^invalid option "broker": expected a Broker/,
    )
  })
})
