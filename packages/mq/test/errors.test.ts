import { describe, expect, it } from 'vitest'
import {
  BrokerClosedError,
  errors,
  InvalidArgumentError,
  isMqError,
  MqClosedError,
  MqError,
} from '../src/index.js'

describe('MqError', () => {
  it('carries a stable code, the cause and whether a retry can help', () => {
    const cause = new Error('socket closed')
    const error = new MqError('E_MQ_TEST', 'it failed', { cause, retryable: true })
    expect(error.code).toBe('E_MQ_TEST')
    expect(error.cause).toBe(cause)
    expect(error.retryable).toBe(true)
    expect(error).toBeInstanceOf(Error)
  })

  it('is recognised by the guard across copies of the package, and nothing else is', () => {
    const error = new InvalidArgumentError('invalid option "x": expected a number, got "a"')
    expect(isMqError(error)).toBe(true)
    expect(error.code).toBe('E_MQ_INVALID_ARGUMENT')
    expect(errors.InvalidArgumentError).toBe(InvalidArgumentError)
    // A structurally identical error from another copy carries the same global brand.
    const foreign = Object.defineProperty(new Error('x'), Symbol.for('ballast.error'), {
      value: '@ballast/mq',
    })
    expect(isMqError(foreign)).toBe(true)
    expect(isMqError(new Error('plain'))).toBe(false)
    expect(isMqError(null)).toBe(false)
  })
})

/** `E_MQ_` and the class name without `Error` and a leading `Mq`, in SCREAMING_SNAKE. */
function expectedCode(name: string): string {
  const what = name.replace(/Error$/, '').replace(/^Mq(?=[A-Z])/, '')
  return `E_MQ_${what.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()}`
}

/** One instance of each class, made with its own arguments and a last `{ cause }`. */
function instances(cause: Error): Array<[string, MqError]> {
  return [
    ['InvalidArgumentError', new errors.InvalidArgumentError('bad', { cause })],
    ['TopologyConflictError', new errors.TopologyConflictError('q', 'conflict', { cause })],
    ['BufferFullError', new errors.BufferFullError('full', { cause })],
    ['MessageTooLargeError', new errors.MessageTooLargeError(2048, 1024, { cause })],
    ['InvalidMessageError', new errors.InvalidMessageError('bad body', ['a: required'], { cause })],
    ['InvalidMessageIdError', new errors.InvalidMessageIdError('bad id', { cause })],
    ['UnknownExchangeError', new errors.UnknownExchangeError('orders', { cause })],
    [
      'UnroutableError',
      new errors.UnroutableError('orders', 'order.placed', 'NO_ROUTE', { cause }),
    ],
    ['PublishNackedError', new errors.PublishNackedError('nacked', { cause })],
    ['PublishUnconfirmedError', new errors.PublishUnconfirmedError('unconfirmed', { cause })],
    ['OutboxPublishTimeoutError', new errors.OutboxPublishTimeoutError(3, 500, { cause })],
    ['UnknownQueueError', new errors.UnknownQueueError('billing', { cause })],
    ['ConsumeFailedError', new errors.ConsumeFailedError('billing', 'cannot consume', { cause })],
    ['MqClosedError', new errors.MqClosedError('broker', 'publish', { cause })],
  ]
}

describe('errors', () => {
  const cause = new Error('the driver failed')
  const made = instances(cause)

  it('has one instance here for every class of the map but the base', () => {
    expect(made.map(([name]) => name).sort()).toEqual(
      Object.keys(errors)
        .filter((name) => name !== 'MqError')
        .sort(),
    )
  })

  it.each(made)('%s: code derived from the class name, the cause kept, branded', (name, error) => {
    expect(error).toBeInstanceOf(errors[name as keyof typeof errors])
    expect(error).toBeInstanceOf(MqError)
    expect(error.name).toBe(name)
    expect(error.code).toBe(expectedCode(name))
    expect(error.cause).toBe(cause)
    expect(typeof error.retryable).toBe('boolean')
    expect(isMqError(error)).toBe(true)
  })

  it('says which failures a retry can help', () => {
    const retryable = Object.fromEntries(made.map(([name, error]) => [name, error.retryable]))
    expect(retryable).toMatchObject({
      BufferFullError: true,
      PublishNackedError: true,
      PublishUnconfirmedError: true,
      OutboxPublishTimeoutError: true,
      ConsumeFailedError: true,
      InvalidArgumentError: false,
      MessageTooLargeError: false,
      UnroutableError: false,
      UnknownQueueError: false,
      MqClosedError: false,
    })
  })

  it('keeps what each error is about', () => {
    const [, tooLarge] = made.find(([name]) => name === 'MessageTooLargeError') ?? []
    expect(tooLarge).toMatchObject({ size: 2048, limit: 1024 })
    const [, timeout] = made.find(([name]) => name === 'OutboxPublishTimeoutError') ?? []
    expect(timeout).toMatchObject({ rows: 3, timeoutMs: 500 })
    const [, unroutable] = made.find(([name]) => name === 'UnroutableError') ?? []
    expect(unroutable).toMatchObject({ exchange: 'orders', routingKey: 'order.placed' })
    const [, unknownQueue] = made.find(([name]) => name === 'UnknownQueueError') ?? []
    expect(unknownQueue).toMatchObject({
      queue: 'billing',
      message: 'queue "billing" does not exist',
    })
  })

  it('keeps BrokerClosedError as the deprecated alias of MqClosedError', () => {
    expect(BrokerClosedError).toBe(MqClosedError)
  })
})
