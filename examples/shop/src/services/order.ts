/**
 * order: checkout (one shard transaction: the order, its items, the reservation record and an
 * outbox row), order history and the order page with live status. Each instance also runs the
 * outbox relay that publishes `order.placed`.
 */
import { randomBytes } from 'node:crypto'
import type { ShopConfig } from '../config.js'
import { Catalog, catalogPool } from '../data/catalog.js'
import { createProductCache } from '../platform/cache.js'
import { createShopBroker, shopQueues, TOPICS } from '../platform/mq.js'
import { outbox, outboxConnection, startOutboxRelays } from '../platform/outbox.js'
import { checkoutIdempotency, isIdempotencyUnavailable } from '../platform/resilience.js'
import {
  createOrderIds,
  createShopRouter,
  orderKey,
  type Row,
  routerHealth,
} from '../platform/sharding.js'
import { html, money } from '../web/html.js'
import { type Ctx, HttpError } from '../web/http.js'
import {
  consistent,
  createServiceEnv,
  csrfInput,
  field,
  go,
  json,
  page,
  requireUser,
  webRouter,
} from './common.js'

export const FINAL_STATUSES = ['shipped', 'cancelled'] as const

export async function startOrder(config: ShopConfig, instance: string, port: number) {
  const env = createServiceEnv(config, instance)
  const router = createShopRouter(config.shards)
  // Each order instance makes ids with its own worker id (order-1 → 1, order-2 → 2).
  const ids = createOrderIds(Number(/-(\d+)$/.exec(instance)?.[1] ?? 0) % 16)
  const db = catalogPool(config.catalogDb, 4)
  const cache = createProductCache({
    redis: env.redis,
    prefix: `${config.ns}:cache`,
    ttlMs: 10 * 60_000,
  })
  const catalog = new Catalog(db, cache)
  const idempotency = checkoutIdempotency(env.redis, `${config.ns}:idem:`)
  const broker = createShopBroker(config.amqpUrl, config.ns, instance)
  const relays = startOutboxRelays(config.shards, broker)
  env.closers.push(
    () => relays.close(),
    () => broker.close(),
    () => router.close(),
    () => db.end(),
    () => cache.close(),
  )
  const checkoutStats = { placed: 0, duplicates: 0, replayed: 0, idempotencyFallbacks: 0 }
  const exchange = shopQueues(config.ns).exchange
  const app = webRouter(env, {
    stats: async () => ({
      router: routerHealth(router.stats()),
      outbox: await relays.stats(),
      broker: broker.stats(),
      checkout: checkoutStats,
    }),
  })

  const cartOf = (ctx: Ctx, userId: string) =>
    consistent(ctx, router, () =>
      router.query<Row[]>(
        userId,
        'SELECT product_id, qty FROM cart_items WHERE user_id = ? ORDER BY product_id',
        [userId],
      ),
    )

  app.get('/checkout', async (ctx) => {
    const user = requireUser(ctx)
    const items = await cartOf(ctx, user.id)
    if (items.length === 0) return go(ctx, '/cart', 'Your cart is empty.')
    const products = await catalog.products(items.map((i) => Number(i.product_id)))
    let total = 0
    for (const i of items)
      total += (products.get(Number(i.product_id))?.priceCents ?? 0) * Number(i.qty)
    // One key per rendered form: a double-clicked Pay sends the same key twice.
    const key = randomBytes(16).toString('base64url')
    await page(
      ctx,
      env,
      'Checkout',
      html`<h1>Checkout</h1>
<table><tbody>${items.map((i) => {
        const p = products.get(Number(i.product_id))
        return html`<tr><td>${p?.name ?? ''}</td><td>× ${Number(i.qty)}</td><td>${money((p?.priceCents ?? 0) * Number(i.qty))}</td></tr>`
      })}</tbody><tfoot><tr><th colspan="2">total</th><th>${money(total)}</th></tr></tfoot></table>
<form method="post" action="/checkout" class="card">${csrfInput(ctx)}<input type="hidden" name="idem" value="${key}">
<p>Pay with the test card ending 4242.</p><button data-pay>Place order and pay</button></form>`,
    )
  })

  /** Creates the order once per (user, key); a duplicate gets the first order's id. */
  async function placeOrder(userId: string, key: string): Promise<string | null> {
    try {
      const value = await router.transaction(userId, async (tx) => {
        const existing = await tx.query<Row[]>(
          'SELECT id FROM orders WHERE user_id = ? AND idem_key = ?',
          [userId, key],
        )
        if (existing[0]) return { orderId: String(existing[0].id), created: false }
        const items = await tx.query<Row[]>(
          'SELECT product_id, qty FROM cart_items WHERE user_id = ? ORDER BY product_id FOR UPDATE',
          [userId],
        )
        if (items.length === 0) return null
        // Prices come fresh from the catalog database: an order never uses a stale cached price.
        const products = await catalog.products(
          items.map((i) => Number(i.product_id)),
          true,
        )
        const lines = items.flatMap((i) => {
          const p = products.get(Number(i.product_id))
          return p
            ? [{ productId: p.id, name: p.name, priceCents: p.priceCents, qty: Number(i.qty) }]
            : []
        })
        const total = lines.reduce((a, l) => a + l.priceCents * l.qty, 0)
        // The id carries the user's slot: the order page and the workers find the shard from it.
        const orderId = ids.next(userId).toString()
        await tx.query(
          'INSERT INTO orders (id, user_id, idem_key, status, total_cents) VALUES (?, ?, ?, ?, ?)',
          [orderId, userId, key, 'placed', total],
        )
        await tx.query(
          'INSERT INTO order_items (order_id, product_id, name, price_cents, qty) VALUES ?',
          [lines.map((l) => [orderId, l.productId, l.name, l.priceCents, l.qty])],
        )
        await tx.query('INSERT INTO order_events (order_id, status, note) VALUES (?, ?, ?)', [
          orderId,
          'placed',
          'stock reserved, waiting for inventory',
        ])
        await tx.query('DELETE FROM cart_items WHERE user_id = ?', [userId])
        await outbox.enqueue(
          outboxConnection(tx),
          exchange,
          TOPICS.orderPlaced,
          {
            orderId,
            userId,
            totalCents: total,
            items: lines.map((l) => ({ productId: l.productId, qty: l.qty })),
          },
          { messageId: `order.placed:${orderId}`, aggregateId: orderId },
        )
        return { orderId, created: true }
      })
      if (!value) return null
      if (value.created) checkoutStats.placed++
      else checkoutStats.duplicates++
      return value.orderId
    } catch (err) {
      // Two requests with one key raced past the first check: the unique key let one through.
      if ((err as { code?: string }).code === 'ER_DUP_ENTRY') {
        checkoutStats.duplicates++
        const rows = await router.query<Row[]>(
          userId,
          'SELECT id FROM orders WHERE user_id = ? AND idem_key = ?',
          [userId, key],
          { use: 'primary' },
        )
        if (rows[0]) return String(rows[0].id)
      }
      throw err
    }
  }

  app.post('/checkout', async (ctx) => {
    const user = requireUser(ctx)
    const key = (await field(ctx, 'idem')).slice(0, 64)
    if (!/^[A-Za-z0-9_-]{8,64}$/.test(key))
      throw new HttpError(400, 'Missing checkout key: reload the checkout page')
    const orderId = await consistent(ctx, router, async () => {
      try {
        // Concurrent duplicates wait for the first and share its result (resilience's idempotency key)...
        const { value, replayed } = await idempotency.run(
          `checkout:${user.id}:${key}`,
          { key },
          () => placeOrder(user.id, key),
        )
        if (replayed) checkoutStats.replayed++
        return value
      } catch (err) {
        if (!isIdempotencyUnavailable(err)) throw err
        // ...and without Redis, the unique (user, key) index still lets only one order through.
        checkoutStats.idempotencyFallbacks++
        return placeOrder(user.id, key)
      }
    })
    if (!orderId) return go(ctx, '/cart', 'Your cart is empty.')
    if (ctx.req.headers.accept?.includes('application/json')) return json(ctx, 200, { orderId })
    await go(ctx, `/orders/${encodeURIComponent(orderId)}`, 'Thank you! Your order is placed.')
  })

  const loadOrder = async (ctx: Ctx, orderId: string, userId: string) => {
    const shardKey = orderKey(ids, orderId)
    if (!shardKey) throw new HttpError(404, 'No such order')
    // Right after checkout the session's causal token makes the replica wait for the order
    // (or the primary answer): the new order is always there.
    return consistent(ctx, router, async () => {
      const find = (consistency?: 'strong') =>
        router.query<Row[]>(
          shardKey,
          'SELECT id, status, total_cents, created_at FROM orders WHERE id = ? AND user_id = ?',
          [orderId, userId],
          consistency ? { consistency } : {},
        )
      // A concurrent duplicate of the checkout may have saved the session without the first
      // request's token: before answering 404, ask the primary.
      let [order] = await find()
      if (!order) [order] = await find('strong')
      if (!order) return undefined
      const items = await router.query<Row[]>(
        shardKey,
        'SELECT product_id, name, price_cents, qty FROM order_items WHERE order_id = ?',
        [orderId],
      )
      const events = await router.query<Row[]>(
        shardKey,
        'SELECT status, note, at FROM order_events WHERE order_id = ? ORDER BY id',
        [orderId],
      )
      return { order, items, events, shard: router.shardFor(shardKey) }
    })
  }

  app.get('/orders', async (ctx) => {
    const user = requireUser(ctx)
    const orders = await consistent(ctx, router, () =>
      router.query<Row[]>(
        user.id,
        'SELECT id, status, total_cents, created_at FROM orders WHERE user_id = ? ORDER BY created_at DESC LIMIT 50',
        [user.id],
      ),
    )
    await page(
      ctx,
      env,
      'Orders',
      html`<h1>Your orders</h1>${
        orders.length === 0
          ? html`<p>No orders yet.</p>`
          : html`<table><thead><tr><th>order</th><th>placed</th><th>total</th><th>status</th></tr></thead><tbody>${orders.map(
              (o) =>
                html`<tr data-order="${String(o.id)}"><td><a href="/orders/${String(o.id)}">${String(o.id)}</a></td><td>${new Date(o.created_at as string).toISOString()}</td><td>${money(Number(o.total_cents))}</td><td><span class="status ${String(o.status)}">${String(o.status)}</span></td></tr>`,
            )}</tbody></table>`
      }`,
    )
  })

  app.get('/orders/:id', async (ctx) => {
    const user = requireUser(ctx)
    const found = await loadOrder(ctx, ctx.params.id ?? '', user.id)
    if (!found) throw new HttpError(404, 'No such order')
    const { order, items, events, shard } = found
    const id = String(order.id)
    await page(
      ctx,
      env,
      `Order ${id}`,
      html`<h1>Order <code data-order-id>${id}</code></h1>
<p>Status: <span class="status ${String(order.status)}" data-field="status" data-order-status="/orders/${id}/status.json">${String(order.status)}</span></p>
<table><tbody>${items.map((i) => html`<tr><td>${String(i.name)}</td><td>× ${Number(i.qty)}</td><td>${money(Number(i.price_cents) * Number(i.qty))}</td></tr>`)}</tbody>
<tfoot><tr><th colspan="2">total</th><th>${money(Number(order.total_cents))}</th></tr></tfoot></table>
<h2>History</h2><ol>${events.map((e) => html`<li><span class="status ${String(e.status)}">${String(e.status)}</span> ${String(e.note)} <span class="muted">${new Date(e.at as string).toISOString()}</span></li>`)}</ol>
<p class="muted">Stored on shard <span data-shard>${shard}</span>.</p>`,
    )
  })

  app.get('/orders/:id/status.json', async (ctx) => {
    const user = requireUser(ctx)
    const found = await loadOrder(ctx, ctx.params.id ?? '', user.id)
    if (!found) throw new HttpError(404, 'No such order')
    await json(ctx, 200, { status: String(found.order.status) })
  })

  const server = await app.listen(port)
  return {
    server,
    close: async () => {
      for (const c of env.closers.reverse()) await c()
    },
  }
}
