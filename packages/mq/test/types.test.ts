import { describe, expectTypeOf, it } from 'vitest'
import { z } from 'zod'
import {
  type Broker,
  createInbox,
  type Delivery,
  defineMessage,
  type MessageDefinition,
  type SqlPool,
  type TypedMessage,
  type Unsubscribe,
} from '../src/index.js'

// Type-level tests: checked by `pnpm typecheck` (tsc over test/); the bodies never run a broker.
const OrderPlaced = defineMessage({
  type: 'order.placed',
  schema: z.object({ orderId: z.string(), total: z.number() }),
})
type Order = { orderId: string; total: number }

/** A schema of another library, written by hand: any Standard Schema object is accepted. */
const handWritten = {
  '~standard': {
    version: 1 as const,
    vendor: 'hand',
    validate: (value: unknown) => ({ value: value as { sku: string } }),
  },
}

declare const broker: Broker

describe('types follow the caller', () => {
  it('defineMessage takes the schema output type, from zod or any Standard Schema', () => {
    expectTypeOf(OrderPlaced).toEqualTypeOf<MessageDefinition<Order>>()
    expectTypeOf(defineMessage({ type: 'stock.moved', schema: handWritten })).toEqualTypeOf<
      MessageDefinition<{ sku: string }>
    >()
  })

  it('consume() gives the handler the body type of the definition', () => {
    const run = () =>
      broker.consume(
        'billing',
        async (m) => {
          expectTypeOf(m).toEqualTypeOf<Delivery<Order>>()
          expectTypeOf(m.body.total).toBeNumber()
        },
        { message: OrderPlaced },
      )
    expectTypeOf(run).toBeFunction()
  })

  it('consume() without a definition gives an unknown body', () => {
    const run = () =>
      broker.consume('billing', async (m) => {
        expectTypeOf(m.body).toBeUnknown()
      })
    expectTypeOf(run).toBeFunction()
  })

  it('consume() refuses a handler typed for another message than its definition', () => {
    const run = () =>
      broker.consume(
        'billing',
        // @ts-expect-error the handler expects { sku }, the definition gives an Order
        async (_m: Delivery<{ sku: string }>) => {},
        { message: OrderPlaced },
      )
    expectTypeOf(run).toBeFunction()
  })

  it('publish() of definition.of(payload) checks the payload type', () => {
    expectTypeOf(OrderPlaced.of({ orderId: 'o-1', total: 42 })).toEqualTypeOf<TypedMessage<Order>>()
    // @ts-expect-error total must be a number
    OrderPlaced.of({ orderId: 'o-1', total: '42' })
    // @ts-expect-error orderId is missing
    OrderPlaced.of({ total: 42 })
    const run = () =>
      broker.publish('orders', 'order.placed', OrderPlaced.of({ orderId: 'o-1', total: 1 }))
    expectTypeOf(run).returns.resolves.toBeVoid()
  })

  it('an inbox handler gets the body type its consume() call gives', () => {
    const run = (pool: SqlPool) =>
      broker.consume(
        'billing',
        createInbox({ pool, consumer: 'billing' }).handler<Order>(async (m) => {
          expectTypeOf(m.body).toEqualTypeOf<Order>()
        }),
        { message: OrderPlaced },
      )
    expectTypeOf(run).toBeFunction()
  })

  it('on() and once() return an unsubscribe function, with typed payloads', () => {
    const run = () => {
      expectTypeOf(
        broker.on('retried', ({ delayMs }) => expectTypeOf(delayMs).toBeNumber()),
      ).toEqualTypeOf<Unsubscribe>()
      expectTypeOf(broker.once('dead-lettered', () => {})).toEqualTypeOf<Unsubscribe>()
      // @ts-expect-error no such event: renamed 'reconnect-scheduled'
      broker.on('reconnecting', () => {})
    }
    expectTypeOf(run).toBeFunction()
  })
})
