import fc from 'fast-check'
import { afterAll, describe, expect, it } from 'vitest'
import { BrokerClosedError, createBroker, InvalidArgumentError, isMqError } from '../src/index.js'

// never connects (nothing listens on port 1): publish's argument checks run before any I/O
const broker = createBroker({ urls: 'amqp://127.0.0.1:1', connectTimeout: 200, shutdownTimeout: 0 })
afterAll(() => broker.close())

/** The error `publish` rejects with synchronously-checked arguments (never a pending publish). */
async function refusal(exchange: unknown, routingKey: unknown): Promise<unknown> {
  let outcome: unknown = 'pending'
  broker.publish(exchange as string, routingKey as string, 'x').then(
    () => {
      outcome = 'resolved'
    },
    (error: unknown) => {
      outcome = error
    },
  )
  // publish rejects bad arguments before it returns: settled after a tick, no I/O needed
  await Promise.resolve()
  await Promise.resolve()
  return outcome
}

describe('Broker.publish arguments', () => {
  it('does not echo a huge routing key into its error message', async () => {
    const error = await refusal('', `k${'\ud800'.repeat(10)}${'r'.repeat(100_000)}`)
    expect(error).toBeInstanceOf(InvalidArgumentError)
    expect((error as Error).message).toContain('"routingKey"')
    expect((error as Error).message.length).toBeLessThan(300)
  })

  it('refuses a bigint or cyclic exchange or routing key with InvalidArgumentError, not a TypeError from JSON', async () => {
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    for (const [exchange, routingKey] of [
      [10n, 'k'],
      ['', 10n],
      [cyclic, 'k'],
      ['', cyclic],
    ]) {
      const error = await refusal(exchange, routingKey)
      expect(error, String(error)).toBeInstanceOf(InvalidArgumentError)
    }
  })

  it('fuzz: any exchange or routing key that is not a short string rejects at once with a short InvalidArgumentError', async () => {
    const notShortString = fc.oneof(
      fc
        .anything({ withBigInt: true, withMap: true, withSet: true })
        .filter((v) => typeof v !== 'string'),
      fc
        .string({ minLength: 256, maxLength: 600, unit: 'binary' })
        .filter((s) => Buffer.byteLength(s) > 255),
    )
    await fc.assert(
      fc.asyncProperty(notShortString, fc.boolean(), async (bad, asExchange) => {
        const error = await (asExchange ? refusal(bad, 'k') : refusal('', bad))
        expect(isMqError(error), String(error)).toBe(true)
        expect(error).toBeInstanceOf(InvalidArgumentError)
        expect((error as Error).message.length).toBeLessThan(300)
      }),
      { numRuns: 100, seed: 1415 },
    )
  })
})

describe('Broker closed while waiting for a connection', () => {
  it('rejects ready() and a pending consume() with BrokerClosedError, not a plain Error', async () => {
    const b = createBroker({ urls: 'amqp://127.0.0.1:1', connectTimeout: 200, shutdownTimeout: 0 })
    const ready = b.ready().then(
      () => 'resolved',
      (error: unknown) => error,
    )
    const consuming = b
      .consume('q', () => {})
      .then(
        () => 'resolved',
        (error: unknown) => error,
      )
    await b.close()
    expect(await ready).toBeInstanceOf(BrokerClosedError)
    expect(await consuming).toBeInstanceOf(BrokerClosedError)
    await expect(b.ready()).rejects.toBeInstanceOf(BrokerClosedError)
  })
})
