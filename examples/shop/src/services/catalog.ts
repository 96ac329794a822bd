/**
 * catalog: product list, search, product pages (through the two-level cache, with
 * recommendations and reviews that the degrader switches off first under load) and the admin
 * page that changes a price (invalidating every instance's cache and the gateway's).
 */
import type { ShopConfig } from '../config.js'
import { Catalog, catalogPool, type Product } from '../data/catalog.js'
import { createProductCache } from '../platform/cache.js'
import {
  createShopDegrader,
  FEATURES,
  type Feature,
  mirrorBreaker,
  PAYMENT_BREAKER_KEY,
} from '../platform/resilience.js'
import { html, money } from '../web/html.js'
import { type Ctx, HttpError, readForm } from '../web/http.js'
import {
  createServiceEnv,
  csrfInput,
  currentUser,
  field,
  go,
  page,
  requireUser,
  webRouter,
} from './common.js'

export const GATEWAY_PURGE_CHANNEL = (ns: string) => `${ns}:gw:purge`

export async function startCatalog(config: ShopConfig, instance: string, port: number) {
  const env = createServiceEnv(config, instance)
  const db = catalogPool(config.catalogDb)
  const cache = createProductCache({
    redis: env.redis,
    prefix: `${config.ns}:cache`,
    ttlMs: 10 * 60_000,
  })
  const catalog = new Catalog(db, cache)
  // Recommendations go first, then reviews: under overload, and while the payment provider's
  // breaker (in the payment worker, mirrored here through Redis) is open.
  const paymentBreaker = mirrorBreaker(
    env.redis,
    PAYMENT_BREAKER_KEY(config.ns),
    // Its own name: its metrics are the mirror's, the alert is the payment worker's breaker.
    'payment-provider-mirror',
  )
  const shop = createShopDegrader([paymentBreaker.breaker], config.degrader)
  const degrader = shop.degrader
  env.closers.push(
    () => cache.close(),
    () => db.end(),
    () => shop.close(),
    () => paymentBreaker.close(),
  )

  const app = webRouter(env, {
    stats: () => ({
      cache: cache.stats(),
      degrader: { ...degrader.stats(), paymentBreaker: paymentBreaker.breaker.state },
      degraderChanges: shop.changes(),
    }),
  })
  app.use((ctx) => {
    const end = degrader.begin()
    ctx.res.once('close', end)
  })

  /** Anonymous pages are public and cacheable by the gateway; a logged-in page is private. */
  const publicCache = (ctx: Ctx, fresh: boolean) =>
    fresh ? 'no-store' : currentUser(ctx) ? 'private, no-cache' : 'public, max-age=0, s-maxage=30'
  const cacheOff = (ctx: Ctx) => config.bench && ctx.url.searchParams.get('cache') === 'off'

  const grid = (products: Product[]) =>
    html`<div class="grid">${products.map(
      (p) =>
        html`<div class="card" data-product="${p.id}"><a href="/product/${p.id}">${p.name}</a><div class="price" data-price>${money(p.priceCents)}</div><div class="muted">${p.category}</div></div>`,
    )}</div>`

  app.get('/', async (ctx) => {
    const n = Math.max(
      1,
      Math.min(1000, Number.parseInt(ctx.url.searchParams.get('page') ?? '1', 10) || 1),
    )
    const fresh = cacheOff(ctx)
    const products = await catalog.page(n, 24, fresh)
    await page(
      ctx,
      env,
      'Catalog',
      html`<h1>Catalog</h1>${grid(products)}
<p>${n > 1 ? html`<a href="/?page=${n - 1}">← previous</a> · ` : ''}<a href="/?page=${n + 1}">next →</a></p>`,
      { cacheControl: publicCache(ctx, fresh) },
    )
  })

  app.get('/search', async (ctx) => {
    const q = (ctx.url.searchParams.get('q') ?? '').trim().slice(0, 100)
    const results = q ? await catalog.search(q) : []
    await page(
      ctx,
      env,
      `Search: ${q}`,
      html`<h1>Search</h1><form action="/search" method="get"><input name="q" value="${q}" aria-label="Search"> <button>Search</button></form>
<p class="muted">${results.length} result${results.length === 1 ? '' : 's'} for “${q}”</p>${grid(results)}`,
      { cacheControl: publicCache(ctx, false) },
    )
  })

  app.get('/product/:id', async (ctx) => {
    const id = Number.parseInt(ctx.params.id ?? '', 10)
    if (!Number.isSafeInteger(id) || id <= 0) throw new HttpError(404, 'No such product')
    const fresh = cacheOff(ctx)
    const p = await catalog.product(id, fresh)
    if (!p) throw new HttpError(404, 'No such product')
    const user = currentUser(ctx)
    const recs = degrader.isEnabled('recommendations')
      ? await catalog.recommendations(p, fresh)
      : undefined
    const reviews = degrader.isEnabled('reviews') ? await catalog.reviews(p.id, fresh) : undefined
    await page(
      ctx,
      env,
      p.name,
      html`<article class="card" data-product="${p.id}"><h1>${p.name}</h1>
<p class="price" data-price>${money(p.priceCents)}</p><p>${p.description}</p>
<p class="muted">SKU ${p.sku} · ${p.category} · ${p.stock > 0 ? html`${p.stock} in stock` : 'out of stock'}</p>
${
  user
    ? html`<form method="post" action="/cart/add">${csrfInput(ctx)}<input type="hidden" name="productId" value="${p.id}">
<label>Qty <input name="qty" type="number" min="1" max="10" value="1"></label> <button data-add-to-cart>Add to cart</button></form>`
    : html`<p><a href="/login?next=/product/${p.id}">Log in to buy</a></p>`
}</article>
${recs ? html`<h2>You may also like</h2>${grid(recs)}` : html`<p class="muted" data-degraded="recommendations">Recommendations are switched off under load.</p>`}
${
  reviews
    ? html`<h2>Reviews</h2>${reviews.map((r) => html`<p class="card">${'★'.repeat(r.rating)} ${r.body} <span class="muted">— ${r.author}</span></p>`)}`
    : html`<p class="muted" data-degraded="reviews">Reviews are switched off under load.</p>`
}`,
      { cacheControl: publicCache(ctx, fresh) },
    )
  })

  const requireAdmin = (ctx: Ctx) => {
    const u = requireUser(ctx)
    if (!u.isAdmin) throw new HttpError(403, 'Admins only')
    return u
  }

  app.get('/admin', async (ctx) => {
    requireAdmin(ctx)
    await page(
      ctx,
      env,
      'Admin',
      html`<h1>Admin: change a price</h1>
<form method="post" action="/admin/price" class="card">${csrfInput(ctx)}
<label>Product id <input name="productId" type="number" min="1" required></label>
<label>New price (cents) <input name="priceCents" type="number" min="1" max="10000000" required></label>
<button>Change price</button></form>
<h2>Degradation switchboard (this instance)</h2>
<form method="post" action="/admin/degrade" class="card">${csrfInput(ctx)}
${Object.entries(degrader.stats().features).map(
  ([name, f]) =>
    html`<label><input type="checkbox" name="off" value="${name}" ${f.override === 'off' ? 'checked' : ''}> force ${name} off</label> <span class="muted">now ${f.level}</span> `,
)}<button>Apply</button></form>`,
    )
  })

  app.post('/admin/price', async (ctx) => {
    requireAdmin(ctx)
    const id = Number.parseInt(await field(ctx, 'productId'), 10)
    const cents = Number.parseInt(await field(ctx, 'priceCents'), 10)
    if (
      !Number.isSafeInteger(id) ||
      id <= 0 ||
      !Number.isSafeInteger(cents) ||
      cents <= 0 ||
      cents > 10_000_000
    ) {
      throw new HttpError(400, 'Give a product id and a price in cents')
    }
    if (!(await catalog.setPrice(id, cents))) throw new HttpError(404, 'No such product')
    await env.redis.publish(GATEWAY_PURGE_CHANNEL(config.ns), `/product/${id}`).catch(() => {})
    await go(
      ctx,
      `/product/${id}`,
      `Price of product ${id} is now ${money(cents)} on every instance.`,
    )
  })

  app.post('/admin/degrade', async (ctx) => {
    requireAdmin(ctx)
    const off = new Set((await readForm(ctx)).getAll('off'))
    for (const name of FEATURES as readonly Feature[]) {
      if (off.has(name)) degrader.override(name, 'off')
      else degrader.clearOverride(name)
    }
    await go(ctx, '/admin', 'Switchboard updated on this instance.')
  })

  const server = await app.listen(port)
  return {
    server,
    close: async () => {
      for (const c of env.closers.reverse()) await c()
    },
  }
}
