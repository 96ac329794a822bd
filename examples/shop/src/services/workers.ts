/**
 * The RabbitMQ workers: inventory (confirms the reservation against stock), payment (charges
 * the provider behind a circuit breaker with an idempotency key; degrades to "payment pending"
 * and retries until the provider recovers) and delivery (schedules and marks shipped).
 * Every handler is idempotent: redelivery, retries and relay duplicates change nothing twice.
 */

import type mysql from 'mysql2/promise'
import type { ShopConfig } from '../config.js'
import { catalogPool } from '../data/catalog.js'
import { createShopBroker, shopQueues, TOPICS } from '../platform/mq.js'
import { createRedis } from '../platform/redis.js'
import {
  BreakerOpenError,
  createPaymentBreaker,
  PAYMENT_BREAKER_KEY,
  paymentIdempotency,
  publishBreakerState,
} from '../platform/resilience.js'
import {
  createOrderIds,
  followShardPrimary,
  openShopRouter,
  orderKey,
  type Row,
  routerHealth,
  type ShardTransaction,
} from '../platform/sharding.js'
import { onShardPrimary } from '../platform/shardPrimary.js'
import { tracedFetch } from '../platform/tracing.js'
import { Router, send, sendJson } from '../web/http.js'

interface OrderPlaced {
  orderId: string
  userId: string
  totalCents: number
  items: { productId: number; qty: number }[]
}

/** Moves an order forward only from the states given: a replayed message finds nothing to do. */
async function advance(
  tx: ShardTransaction,
  orderId: string,
  from: string[],
  to: string,
  note: string,
): Promise<boolean> {
  const res = await tx.query<mysql.ResultSetHeader>(
    'UPDATE orders SET status = ? WHERE id = ? AND status IN (?)',
    [to, orderId, from],
  )
  if (res.affectedRows === 1) {
    // The event carries the order's user id (the slot mover finds a row's slot from it).
    await tx.query(
      'INSERT INTO order_events (order_id, user_id, status, note) SELECT id, user_id, ?, ? FROM orders WHERE id = ?',
      [to, note, orderId],
    )
    return true
  }
  return false
}

function statsServer(port: number, stats: () => Promise<unknown> | unknown) {
  const r = new Router()
  r.get('/_internal/health', (ctx) =>
    send(ctx, 200, 'ok', { contentType: 'text/plain', cacheControl: 'no-store' }),
  )
  r.get('/_internal/stats', async (ctx) => sendJson(ctx, 200, await stats()))
  return r.listen(port)
}

export async function startWorker(
  config: ShopConfig,
  service: 'inventory' | 'payment' | 'delivery',
  instance: string,
  port: number,
) {
  const q = shopQueues(config.ns)
  const broker = createShopBroker(config.amqpUrls, config.ns, instance)
  const routing = await openShopRouter(config, { connectionLimit: 3 })
  const router = routing.router
  const ids = createOrderIds()
  /** An order's shard key: the user's slot its id carries. */
  const keyOf = (orderId: string) => {
    const key = orderKey(ids, orderId)
    if (!key) throw new Error(`malformed order id ${JSON.stringify(orderId)}`)
    return key
  }
  const closers: (() => Promise<void> | void)[] = [
    () => broker.close(),
    () => routing.close(),
    // the supervisor's shard-primary switch: this process's router follows the new primary
    onShardPrimary((shard, primary) => followShardPrimary(router, shard, primary)),
  ]
  const counters = { handled: 0, skipped: 0, failed: 0 }
  let extra: () => unknown = () => ({})

  if (service === 'inventory') {
    const db: mysql.Pool = catalogPool(config.catalogDb, 3)
    closers.push(() => db.end())
    await broker.consume<OrderPlaced>(
      q.inventory,
      async (m) => {
        const o = m.body
        const conn = await db.getConnection()
        let outcome: 'confirmed' | 'rejected'
        try {
          await conn.beginTransaction()
          const [done] = await conn.query<mysql.RowDataPacket[]>(
            'SELECT outcome FROM stock_moves WHERE message_id = ? FOR UPDATE',
            [`inv:${o.orderId}`],
          )
          if (done[0]) {
            outcome = String(done[0].outcome) as typeof outcome
            await conn.rollback()
            counters.skipped++
          } else {
            outcome = 'confirmed'
            for (const it of o.items) {
              const [res] = await conn.query<mysql.ResultSetHeader>(
                'UPDATE products SET stock = stock - ? WHERE id = ? AND stock >= ?',
                [it.qty, it.productId, it.qty],
              )
              if (res.affectedRows !== 1) outcome = 'rejected'
            }
            if (outcome === 'rejected') await conn.rollback()
            if (outcome === 'rejected') await conn.beginTransaction()
            await conn.query(
              'INSERT INTO stock_moves (message_id, order_id, outcome) VALUES (?, ?, ?)',
              [`inv:${o.orderId}`, o.orderId, outcome],
            )
            await conn.commit()
          }
        } catch (err) {
          await conn.rollback().catch(() => {})
          throw err
        } finally {
          conn.release()
        }
        const shard = keyOf(o.orderId)
        if (outcome === 'confirmed') {
          await router.transaction(shard, (tx) =>
            advance(
              tx,
              o.orderId,
              ['placed'],
              'stock_confirmed',
              'inventory confirmed the reservation',
            ),
          )
          await broker.publish(q.exchange, TOPICS.stockConfirmed, o, {
            messageId: `stock.confirmed:${o.orderId}`,
            persistent: true,
          })
        } else {
          await router.transaction(shard, (tx) =>
            advance(tx, o.orderId, ['placed'], 'cancelled', 'out of stock'),
          )
        }
        counters.handled++
      },
      { prefetch: 8 },
    )
  }

  if (service === 'payment') {
    const redis = createRedis(config.redisUrl)
    redis.on('error', () => {})
    closers.push(() => redis.disconnect())
    const idempotency = paymentIdempotency(redis, `${config.ns}:idem:`)
    const breaker = createPaymentBreaker({
      errorThresholdPercentage: 50,
      window: 6,
      volume: 3,
      openMs: 2000,
      timeoutMs: 1500,
    })
    // Catalog instances mirror this breaker into their degraders (recommendations and reviews go off).
    closers.push(publishBreakerState(redis, PAYMENT_BREAKER_KEY(config.ns), breaker))
    closers.push(() => breaker.close())
    const pay = { captured: 0, pending: 0, breakerRejections: 0 }
    extra = () => {
      const b = breaker.stats()
      return {
        breaker: {
          state: b.state,
          successes: b.succeeded,
          failures: b.failed,
          rejected: b.rejected,
          timeouts: b.timedOut,
          opens: b.opened,
        },
        payments: pay,
      }
    }
    await broker.consume<OrderPlaced>(
      q.payment,
      async (m) => {
        const o = m.body
        const shard = keyOf(o.orderId)
        const already = await router.query<Row[]>(
          shard,
          'SELECT provider_ref FROM payments WHERE order_id = ?',
          [o.orderId],
          { use: 'primary' },
        )
        if (!already[0]) {
          let ref: string
          try {
            // The key is the order's: a retry or a redelivery asks the provider for the same charge.
            const charged = await idempotency.run(
              `pay:${o.orderId}`,
              { amount: o.totalCents },
              () =>
                breaker.execute(async () => {
                  // The breaker's timeout rejects the call; the signal also stops the request itself.
                  const signal = AbortSignal.timeout(1500)
                  // A CLIENT span whose traceparent the provider continues.
                  const res = await tracedFetch(`${config.providerUrl}/charge`, {
                    method: 'POST',
                    headers: {
                      'content-type': 'application/json',
                      'idempotency-key': `pay:${o.orderId}`,
                    },
                    body: JSON.stringify({ orderId: o.orderId, amountCents: o.totalCents }),
                    signal,
                  })
                  if (!res.ok) throw new Error(`provider answered ${res.status}`)
                  return String(((await res.json()) as { ref: string }).ref)
                }),
            )
            ref = charged.value
          } catch (err) {
            if (err instanceof BreakerOpenError) pay.breakerRejections++
            pay.pending++
            await router.transaction(shard, (tx) =>
              advance(
                tx,
                o.orderId,
                ['stock_confirmed'],
                'payment_pending',
                'payment provider unavailable; will retry',
              ),
            )
            // A retry helps here: the provider may recover (an open breaker says "not now", not "never").
            throw new Error(`payment pending for ${o.orderId}: ${(err as Error).message}`, {
              cause: err,
            })
          }
          await router.transaction(shard, async (tx) => {
            await tx.query(
              'INSERT IGNORE INTO payments (order_id, user_id, idem_key, amount_cents, provider_ref) VALUES (?, ?, ?, ?, ?)',
              [o.orderId, o.userId, `pay:${o.orderId}`, o.totalCents, ref],
            )
          })
          pay.captured++
        } else counters.skipped++
        await router.transaction(shard, (tx) =>
          advance(
            tx,
            o.orderId,
            ['stock_confirmed', 'payment_pending'],
            'paid',
            'payment captured',
          ),
        )
        await broker.publish(
          q.exchange,
          TOPICS.paymentCaptured,
          { orderId: o.orderId, userId: o.userId },
          { messageId: `payment.captured:${o.orderId}`, persistent: true },
        )
        counters.handled++
      },
      { prefetch: 8 },
    )
  }

  if (service === 'delivery') {
    await broker.consume<{ orderId: string }>(
      q.delivery,
      async (m) => {
        const orderId = m.body.orderId
        const shard = keyOf(orderId)
        await router.transaction(shard, async (tx) => {
          if (
            await advance(
              tx,
              orderId,
              ['paid'],
              'shipping_scheduled',
              `pickup booked with carrier ${orderId.length % 2 ? 'Swift' : 'Steady'}`,
            )
          ) {
            await advance(
              tx,
              orderId,
              ['shipping_scheduled'],
              'shipped',
              `tracking number TRK${orderId.replace(/\W/g, '').slice(-10).toUpperCase()}`,
            )
          }
        })
        counters.handled++
      },
      { prefetch: 8 },
    )
  }

  const server = await statsServer(port, () => ({
    instance,
    pid: process.pid,
    service,
    counters,
    broker: broker.stats(),
    router: routerHealth(routing),
    ...(extra() as object),
  }))
  return {
    server,
    close: async () => {
      for (const c of closers.reverse()) await c()
    },
  }
}
