/**
 * order: checkout (one shard transaction: the order, its items, the reservation record and an
 * outbox row), order history and the order page with live status. Each instance also runs the
 * outbox relay that publishes `order.placed`.
 */
import { createHash, randomBytes } from 'node:crypto'
import { IdempotencyMismatchError, isResilienceError } from '@ballast/resilience'
import { orderWorkerId, type ShopConfig } from '../config.js'
import { Catalog, catalogPool } from '../data/catalog.js'
import { createProductCache } from '../platform/cache.js'
import { createShopBroker, shopQueues, TOPICS } from '../platform/mq.js'
import { outbox, outboxConnection, startOutboxRelays } from '../platform/outbox.js'
import { checkoutIdempotency, isIdempotencyUnavailable } from '../platform/resilience.js'
import {
  createOrderIds,
  followShardPrimary,
  openShopRouter,
  orderKey,
  type Row,
  routerHealth,
} from '../platform/sharding.js'
import { onShardPrimary } from '../platform/shardPrimary.js'
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

/** An order as the order pages read it (mysql2 gives DATETIME as a Date). */
interface OrderRow {
  id: string | number
  status: string
  total_cents: number | string
  created_at: Date | string
}

/** One step of an order's history. */
interface OrderEventRow {
  status: string
  note: string | null
  at: Date | string
}

interface Line {
  productId: number
  name: string
  priceCents: number
  qty: number
}

/** The lines of a cart at current prices; a product gone from the catalog drops out. */
function linesOf(
  items: Row[],
  products: Map<number, { id: number; name: string; priceCents: number }>,
): Line[] {
  return items.flatMap((i) => {
    const p = products.get(Number(i.product_id))
    return p
      ? [{ productId: p.id, name: p.name, priceCents: p.priceCents, qty: Number(i.qty) }]
      : []
  })
}

/**
 * What the checkout page showed, as a digest of its lines (product, quantity, price) and total.
 * The Pay form carries it and the order is placed only if the cart still has this digest: a
 * form shown for $39.96 never places a $1,034.56 order after another tab changed the cart.
 */
export function cartDigest(lines: readonly Line[], totalCents: number): string {
  const shown = [lines.map((l) => [l.productId, l.qty, l.priceCents]), totalCents]
  return createHash('sha256').update(JSON.stringify(shown)).digest('base64url')
}

const DIGEST_SHAPE = /^[A-Za-z0-9_-]{43}$/

export async function startOrder(config: ShopConfig, instance: string, port: number) {
  const env = createServiceEnv(config, instance)
  const routing = await openShopRouter(config)
  const router = routing.router
  // Each order instance makes ids with its own worker id (order-1 → 0 ... order-16 → 15).
  const ids = createOrderIds(orderWorkerId(instance))
  const db = catalogPool(config.catalogDb, 4)
  const cache = createProductCache({
    redis: env.redis,
    prefix: `${config.ns}:cache`,
    ttlMs: 10 * 60_000,
  })
  const catalog = new Catalog(db, cache)
  const idempotency = checkoutIdempotency(env.redis, `${config.ns}:idem:`)
  const broker = createShopBroker(config.amqpUrls, config.ns, instance)
  const relays = startOutboxRelays(config.shards, broker)
  env.closers.push(
    () => relays.close(),
    // the supervisor's shard-primary switch: the router and the shard's outbox relay follow
    onShardPrimary(async (shard, primary) => {
      await followShardPrimary(router, shard, primary)
      await relays.setPrimary(shard, primary)
    }),
    () => broker.close(),
    () => routing.close(),
    () => db.end(),
    () => cache.close(),
  )
  const checkoutStats = {
    placed: 0,
    duplicates: 0,
    replayed: 0,
    idempotencyFallbacks: 0,
    refusedChanged: 0,
  }
  const exchange = shopQueues(config.ns).exchange
  const app = webRouter(env, {
    stats: async () => ({
      router: routerHealth(routing),
      outbox: await relays.stats(),
      broker: broker.stats(),
      checkout: checkoutStats,
    }),
  })

  /** The cart's lines at fresh prices (the catalog database, not the cache) and their total. */
  const priced = async (items: Row[]) => {
    const fresh = await catalog.products(
      items.map((i) => Number(i.product_id)),
      true,
    )
    const lines = linesOf(items, fresh)
    return { lines, total: lines.reduce((a, l) => a + l.priceCents * l.qty, 0) }
  }

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
    // Fresh prices, as the order will use: the page shows exactly what Pay charges.
    const { lines, total } = await priced(items)
    // One key per rendered form: a double-clicked Pay sends the same key twice. The key is bound
    // to the digest of what this page shows (see cartDigest).
    const key = randomBytes(16).toString('base64url')
    await page(
      ctx,
      env,
      'Checkout',
      html`<h1>Checkout</h1>
<table><tbody>${lines.map(
        (l) =>
          html`<tr><td>${l.name}</td><td>× ${l.qty}</td><td>${money(l.priceCents * l.qty)}</td></tr>`,
      )}</tbody><tfoot><tr><th colspan="2">total</th><th>${money(total)}</th></tr></tfoot></table>
<form method="post" action="/checkout" class="card">${csrfInput(ctx)}<input type="hidden" name="idem" value="${key}"><input type="hidden" name="cart" value="${cartDigest(lines, total)}">
<p>Pay with the test card ending 4242.</p><button data-pay>Place order and pay</button></form>`,
    )
  })

  /**
   * Creates the order once per (user, key); a duplicate gets the first order's id. Refuses when
   * the cart is empty, or no longer what the page with `digest` showed.
   */
  async function placeOrder(
    userId: string,
    key: string,
    digest: string,
  ): Promise<{ orderId: string } | { refused: 'empty' | 'changed' }> {
    try {
      const value = await router.transaction(userId, async (tx) => {
        const existing = await tx.query<Row[]>(
          'SELECT id FROM orders WHERE user_id = ? AND idem_key = ?',
          [userId, key],
        )
        if (existing[0]) return { orderId: String(existing[0].id), created: false as boolean }
        const items = await tx.query<Row[]>(
          'SELECT product_id, qty FROM cart_items WHERE user_id = ? ORDER BY product_id FOR UPDATE',
          [userId],
        )
        if (items.length === 0) return { refused: 'empty' as const }
        // Prices come fresh from the catalog database: an order never uses a stale cached price.
        const { lines, total } = await priced(items)
        // The cart rows are locked (FOR UPDATE): what is compared here is what gets ordered.
        if (cartDigest(lines, total) !== digest) return { refused: 'changed' as const }
        // The id carries the user's slot: the order page and the workers find the shard from it.
        const orderId = ids.next(userId).toString()
        await tx.query(
          'INSERT INTO orders (id, user_id, idem_key, status, total_cents) VALUES (?, ?, ?, ?, ?)',
          [orderId, userId, key, 'placed', total],
        )
        // Every row carries the user id: the slot mover finds a row's slot from it.
        await tx.query(
          'INSERT INTO order_items (order_id, user_id, product_id, name, price_cents, qty) VALUES ?',
          [lines.map((l) => [orderId, userId, l.productId, l.name, l.priceCents, l.qty])],
        )
        await tx.query(
          'INSERT INTO order_events (order_id, user_id, status, note) VALUES (?, ?, ?, ?)',
          [orderId, userId, 'placed', 'stock reserved, waiting for inventory'],
        )
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
      if ('refused' in value) return value
      if (value.created) checkoutStats.placed++
      else checkoutStats.duplicates++
      return { orderId: value.orderId }
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
        if (rows[0]) return { orderId: String(rows[0].id) }
      }
      throw err
    }
  }

  app.post('/checkout', async (ctx) => {
    const user = requireUser(ctx)
    const key = (await field(ctx, 'idem')).slice(0, 64)
    if (!/^[A-Za-z0-9_-]{8,64}$/.test(key))
      throw new HttpError(400, 'Missing checkout key: reload the checkout page')
    const digest = await field(ctx, 'cart')
    if (!DIGEST_SHAPE.test(digest))
      throw new HttpError(400, 'Missing cart digest: reload the checkout page')
    const placed = await consistent(ctx, router, async () => {
      try {
        // Concurrent duplicates wait for the first and share its result (resilience's idempotency key)...
        const { value, replayed } = await idempotency.run(
          `checkout:${user.id}:${key}`,
          // The key is bound to the page's digest: the same key with another cart is refused.
          { key, cart: digest },
          () => placeOrder(user.id, key, digest),
        )
        if (replayed) checkoutStats.replayed++
        return value
      } catch (err) {
        if (isIdempotencyMismatch(err)) return { refused: 'changed' as const }
        if (!isIdempotencyUnavailable(err)) throw err
        // ...and without Redis, the unique (user, key) index still lets only one order through.
        checkoutStats.idempotencyFallbacks++
        return placeOrder(user.id, key, digest)
      }
    })
    if ('refused' in placed) {
      if (placed.refused === 'empty') return go(ctx, '/cart', 'Your cart is empty.')
      checkoutStats.refusedChanged++
      if (ctx.req.headers.accept?.includes('application/json'))
        return json(ctx, 409, { error: 'the cart changed since the checkout page was shown' })
      return go(
        ctx,
        '/checkout',
        'Your cart changed since this page was shown (another tab?). Nothing was charged: check the new total and pay again.',
      )
    }
    const { orderId } = placed
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
        router.query<OrderRow[]>(
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
      const events = await router.query<OrderEventRow[]>(
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
      router.query<OrderRow[]>(
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
                html`<tr data-order="${String(o.id)}"><td><a href="/orders/${String(o.id)}">${String(o.id)}</a></td><td>${new Date(o.created_at).toISOString()}</td><td>${money(Number(o.total_cents))}</td><td><span class="status ${String(o.status)}">${String(o.status)}</span></td></tr>`,
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
<h2>History</h2><ol>${events.map((e) => html`<li><span class="status ${String(e.status)}">${String(e.status)}</span> ${String(e.note)} <span class="muted">${new Date(e.at).toISOString()}</span></li>`)}</ol>
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

function isIdempotencyMismatch(err: unknown): boolean {
  return (
    err instanceof IdempotencyMismatchError ||
    (isResilienceError(err) && err.code === 'E_RESILIENCE_IDEMPOTENCY_MISMATCH')
  )
}
