/** cart: the user's cart, stored on the user's shard (read from the replica with read-your-writes). */
import type { ShopConfig } from '../config.js'
import { Catalog, catalogPool } from '../data/catalog.js'
import { createProductCache } from '../platform/cache.js'
import { followShardPrimary, openShopRouter, type Row, routerHealth } from '../platform/sharding.js'
import { onShardPrimary } from '../platform/shardPrimary.js'
import { html, money } from '../web/html.js'
import { HttpError } from '../web/http.js'
import {
  consistent,
  createServiceEnv,
  csrfInput,
  field,
  go,
  json,
  page,
  requireUser,
  session,
  webRouter,
} from './common.js'

export async function startCart(config: ShopConfig, instance: string, port: number) {
  const env = createServiceEnv(config, instance)
  const routing = await openShopRouter(config)
  const router = routing.router
  const db = catalogPool(config.catalogDb, 4)
  const cache = createProductCache({
    redis: env.redis,
    prefix: `${config.ns}:cache`,
    ttlMs: 10 * 60_000,
  })
  const catalog = new Catalog(db, cache)
  env.closers.push(
    () => routing.close(),
    // the supervisor's shard-primary switch: this process's router follows the new primary
    onShardPrimary((shard, primary) => followShardPrimary(router, shard, primary)),
    () => db.end(),
    () => cache.close(),
  )
  const app = webRouter(env, {
    stats: async () => ({ cache: cache.stats(), router: routerHealth(routing) }),
  })

  app.get('/cart', async (ctx) => {
    const user = requireUser(ctx)
    const items = await consistent(ctx, router, () =>
      router.query<Row[]>(
        user.id,
        'SELECT product_id, qty FROM cart_items WHERE user_id = ? ORDER BY product_id',
        [user.id],
      ),
    )
    const products = await catalog.products(items.map((i) => Number(i.product_id)))
    let total = 0
    const rows = items.map((i) => {
      const p = products.get(Number(i.product_id))
      const qty = Number(i.qty)
      if (p) total += p.priceCents * qty
      return html`<tr data-cart-item="${Number(i.product_id)}"><td><a href="/product/${Number(i.product_id)}">${p?.name ?? `#${Number(i.product_id)}`}</a></td><td>${qty}</td><td>${p ? money(p.priceCents * qty) : '?'}</td>
<td><form method="post" action="/cart/remove" class="inline">${csrfInput(ctx)}<input type="hidden" name="productId" value="${Number(i.product_id)}"><button class="secondary">Remove</button></form></td></tr>`
    })
    await page(
      ctx,
      env,
      'Cart',
      html`<h1>Your cart</h1>
${
  items.length === 0
    ? html`<p>Your cart is empty. <a href="/">Browse the catalog</a>.</p>`
    : html`<table><thead><tr><th>product</th><th>qty</th><th>price</th><th></th></tr></thead><tbody>${rows}</tbody>
<tfoot><tr><th colspan="2">total</th><th data-cart-total>${money(total)}</th><th></th></tr></tfoot></table>
<p><a href="/checkout" data-checkout>Proceed to checkout →</a></p>`
}`,
    )
  })

  app.post('/cart/add', async (ctx) => {
    const user = requireUser(ctx)
    const productId = Number.parseInt(await field(ctx, 'productId'), 10)
    const qty = Math.max(1, Math.min(10, Number.parseInt(await field(ctx, 'qty'), 10) || 1))
    if (!Number.isSafeInteger(productId) || !(await catalog.product(productId)))
      throw new HttpError(404, 'No such product')
    await consistent(ctx, router, () =>
      router.query(
        user.id,
        'INSERT INTO cart_items (user_id, product_id, qty) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE qty = LEAST(qty + VALUES(qty), 99)',
        [user.id, productId, qty],
      ),
    )
    if (ctx.req.headers.accept?.includes('application/json')) return json(ctx, 200, { ok: true })
    await go(ctx, '/cart', 'Added to your cart.')
  })

  app.post('/cart/remove', async (ctx) => {
    const user = requireUser(ctx)
    const productId = Number.parseInt(await field(ctx, 'productId'), 10)
    await consistent(ctx, router, () =>
      router.query(user.id, 'DELETE FROM cart_items WHERE user_id = ? AND product_id = ?', [
        user.id,
        productId,
      ]),
    )
    await go(ctx, '/cart')
  })

  app.get('/cart/whoami.json', async (ctx) => {
    const user = requireUser(ctx)
    await json(ctx, 200, {
      service: 'cart',
      instance,
      userId: user.id,
      session: session(ctx).idHash,
    })
  })

  const server = await app.listen(port)
  return {
    server,
    close: async () => {
      for (const c of env.closers.reverse()) await c()
    },
  }
}
