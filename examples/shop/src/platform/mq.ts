/**
 * RabbitMQ through `@ballast/mq`, on the three-node cluster: one topic exchange, one quorum
 * queue per worker (replicated on the three nodes, so it survives the loss of one) with delayed
 * retries and a dead-letter queue (quorum queues too). Publishing waits for the broker's
 * confirm; while the broker is away, the broker's bounded buffer holds messages and the outbox
 * holds the rest. Each process lists every node and moves to a live one when its own dies.
 */
import { type Broker, createBroker, type Topology } from '@ballast/mq'

export const TOPICS = {
  orderPlaced: 'order.placed',
  stockConfirmed: 'stock.confirmed',
  paymentCaptured: 'payment.captured',
} as const

export interface ShopQueues {
  exchange: string
  inventory: string
  payment: string
  delivery: string
}

export function shopQueues(ns: string): ShopQueues {
  return {
    exchange: `${ns}.events`,
    inventory: `${ns}.inventory`,
    payment: `${ns}.payment`,
    delivery: `${ns}.delivery`,
  }
}

export function shopTopology(ns: string): Topology {
  const q = shopQueues(ns)
  // Payment keeps retrying for about two minutes: a provider outage leaves orders
  // "payment pending" and they complete when it recovers.
  const paymentDelays = [250, 500, 1000, ...Array.from({ length: 60 }, () => 2000)]
  return {
    exchanges: [{ name: q.exchange, type: 'topic' }],
    queues: [
      {
        name: q.inventory,
        type: 'quorum',
        bindings: [{ exchange: q.exchange, routingKey: TOPICS.orderPlaced }],
        retry: { delays: [250, 500, 1000, 2000, 2000, 2000, 4000, 4000, 8000, 8000] },
      },
      {
        name: q.payment,
        type: 'quorum',
        bindings: [{ exchange: q.exchange, routingKey: TOPICS.stockConfirmed }],
        retry: { delays: paymentDelays },
      },
      {
        name: q.delivery,
        type: 'quorum',
        bindings: [{ exchange: q.exchange, routingKey: TOPICS.paymentCaptured }],
        retry: { delays: [250, 500, 1000, 2000, 2000, 2000, 4000, 4000, 8000, 8000] },
      },
    ],
  }
}

export function createShopBroker(urls: readonly string[], ns: string, name: string): Broker {
  return createBroker({
    urls: [...urls],
    topology: shopTopology(ns),
    name,
    heartbeatInterval: 5000,
    connectTimeout: 2000,
    reconnect: { initialDelay: 200, maxDelay: 2000, factor: 2, jitter: 0.2 },
    shutdownTimeout: 3000,
  })
}
