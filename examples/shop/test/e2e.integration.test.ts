/**
 * The shop in a real browser (Debian's headless Chromium driven by playwright-core): sign up,
 * log in, search, add to cart, check out, watch the order reach "shipped", one session across
 * subsystems, log out everywhere; plus the security and caching behaviour a user would notice.
 */
import { existsSync } from 'node:fs'
import { type Browser, chromium } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { CHAOS_FAULTS } from '../src/services/gateway.js'
import { Client, eventually, shopHandle } from './fixture.js'

const CHROMIUM = '/usr/bin/chromium'
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

const shop = shopHandle(inject('shop'))
let browser: Browser

beforeAll(async () => {
  if (!existsSync(CHROMIUM))
    throw new Error(
      `${CHROMIUM} is missing: install Debian's chromium (bash scripts/system-deps.sh)`,
    )
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS })
}, 60_000)

afterAll(async () => {
  await browser?.close()
})

describe('shop in a browser', () => {
  it('signs up, searches, adds to cart, checks out and sees the order shipped', async () => {
    const ctx = await browser.newContext({ baseURL: shop.url })
    const page = await ctx.newPage()
    const email = `e2e-${Date.now()}@shop.example`
    // A name with markup must show as text, never run.
    const name = '<img src=x onerror=alert(1)>Eve'
    let dialogs = 0
    page.on('dialog', async (d) => {
      dialogs++
      await d.dismiss()
    })

    await page.goto('/signup')
    await page.fill('input[name=name]', name)
    await page.fill('input[name=email]', email)
    await page.fill('input[name=password]', 'correct horse battery')
    await page.click('button:has-text("Sign up")')
    await expect.poll(() => page.locator(`[data-user="${email}"]`).textContent()).toBe(name)
    expect(dialogs).toBe(0)

    await page.fill('header input[name=q]', 'Kettle')
    await page.press('header input[name=q]', 'Enter')
    await page.waitForURL(/\/search\?q=Kettle/)
    const first = page.locator('[data-product] a').first()
    expect(await first.textContent()).toContain('Kettle')
    await first.click()
    await page.waitForURL(/\/product\/\d+/)
    const productName = await page.locator('h1').textContent()

    await page.fill('input[name=qty]', '2')
    await page.click('[data-add-to-cart]')
    await page.waitForURL(/\/cart$/)
    expect(await page.locator('[data-cart-item] a').first().textContent()).toBe(productName)

    await page.click('[data-checkout]')
    await page.waitForURL(/\/checkout$/)
    await page.click('[data-pay]')
    // Read-your-writes: the page right after checkout already shows the new order.
    await page.waitForURL(/\/orders\/\d+$/)
    const orderId = await page.locator('[data-order-id]').textContent()
    // A 64-bit id from sharding's id generator: it carries the user's slot, hence the shard.
    expect(orderId).toMatch(/^\d{10,19}$/)
    const orderShard = await page.locator('[data-shard]').textContent()
    // The page polls its status until the workers have shipped it.
    await expect
      .poll(() => page.locator('[data-field=status]').textContent(), {
        timeout: 30_000,
        interval: 500,
      })
      .toBe('shipped')
    await page.goto('/orders')
    expect(await page.locator(`[data-order="${orderId}"] .status`).textContent()).toBe('shipped')
    // The order lives on its user's shard.
    await page.goto('/account')
    expect(await page.locator('[data-user-shard]').textContent()).toBe(orderShard)
    await ctx.close()
  })

  it('shares one login across subsystems and instances, and logs out everywhere', async () => {
    const email = 'user1@shop.example'
    const a = await browser.newContext({ baseURL: shop.url })
    const b = await browser.newContext({ baseURL: shop.url })
    for (const c of [a, b]) {
      const p = await c.newPage()
      await p.goto('/login')
      await p.fill('input[name=email]', email)
      await p.fill('input[name=password]', shop.secrets.seedPassword)
      await p.click('button:has-text("Log in")')
      await p.waitForURL((u) => u.pathname === '/')
    }
    const seen = new Set<string>()
    const instances = new Set<string>()
    // The gateway balances by least request: with requests one at a time and an instance still
    // in slow start (its weight ramping after the shop started), the other one wins every
    // choice for a while. So ask until both cart instances have answered, bounded in time.
    const deadline = Date.now() + 15_000
    while (
      Date.now() < deadline &&
      !['account-1', 'cart-1', 'cart-2'].every((name) => instances.has(name))
    ) {
      for (const path of ['/account/whoami.json', '/cart/whoami.json']) {
        const r = await a.request.get(path)
        expect(r.status()).toBe(200)
        const body = (await r.json()) as { service: string; instance: string; session: string }
        seen.add(body.session)
        instances.add(body.instance)
      }
    }
    // One session, read by the account service and by both cart instances.
    expect(seen.size).toBe(1)
    expect(instances).toContain('account-1')
    expect(instances).toContain('cart-1')
    expect(instances).toContain('cart-2')

    const pa = await a.newPage()
    await pa.goto('/account')
    expect(await pa.locator('[data-session-row]').count()).toBeGreaterThanOrEqual(2)
    await pa.click('button:has-text("Log out everywhere")')
    await pa.waitForURL(/\/login/)
    const pb = await b.newPage()
    await pb.goto('/cart')
    expect(new URL(pb.url()).pathname).toBe('/login')
    await a.close()
    await b.close()
  })

  // 45 s: the ops page at its end also reads Prometheus and the trace receiver (room for a loaded machine).
  it('shows a changed price on every catalog instance and through the gateway cache', async () => {
    const anon = new Client(shop.url)
    const before = await anon.get('/product/3')
    expect(before.status).toBe(200)
    const cached = await anon.get('/product/3')
    expect(cached.headers.get('x-cache')).toBe('HIT')
    // A revalidation is answered by the gateway's cache too: 304 from the stored entry. The
    // request says `max-age=0` as browsers do; without it fetch() adds `no-cache`, which rightly
    // sends the request past any cache to the origin.
    const revalidated = await anon.get('/product/3', {
      'if-none-match': cached.headers.get('etag') as string,
      'cache-control': 'max-age=0',
    })
    expect(revalidated.status).toBe(304)
    expect(revalidated.headers.get('x-cache')).toBe('HIT')

    const ctx = await browser.newContext({ baseURL: shop.url })
    const page = await ctx.newPage()
    await page.goto('/login')
    await page.fill('input[name=email]', 'admin@shop.example')
    await page.fill('input[name=password]', shop.secrets.adminPassword)
    await page.click('button:has-text("Log in")')
    await page.goto('/admin')
    await page.fill('input[name=productId]', '3')
    await page.fill('input[name=priceCents]', '12345')
    await page.click('button:has-text("Change price")')
    await page.waitForURL(/\/product\/3/)
    expect(await page.locator('p[data-price]').textContent()).toBe('$123.45')

    for (const inst of shop.config.instances.filter((i) => i.service === 'catalog')) {
      await eventually(
        async () =>
          (await fetch(`http://127.0.0.1:${inst.port}/product/3`).then((r) => r.text())).includes(
            '$123.45',
          ),
        5000,
        `${inst.name} to show the new price`,
      )
    }
    await eventually(
      async () => (await anon.get('/product/3')).text_.includes('$123.45'),
      5000,
      'the gateway to show the new price',
    )

    await page.goto('/ops')
    expect(await page.locator('h1').textContent()).toBe('Operations')
    // The chaos switch offers every fault, the cluster ones included, each with its button.
    for (const fault of CHAOS_FAULTS)
      expect(await page.locator(`tr[data-fault="${fault}"] button`).count(), fault).toBe(1)
    expect(await page.locator('[data-instance-row="catalog-1"]').textContent()).toMatch(/L1 \d/)
    // Shard and replica health and lag from the sharding router's stats() (the chaos run may
    // have cut the replica just before: it shows up again within seconds).
    const routerCell = await eventually(
      async () => {
        await page.goto('/ops')
        const cell =
          (await page.locator('[data-instance-row="order-1"] [data-router]').textContent()) ?? ''
        return /a\/replica-\d+ up, lag \d+ ms/.test(cell) ? cell : undefined
      },
      10_000,
      "the ops page to show shard a's replica up, with its lag",
    )
    expect(routerCell).toMatch(/a: primary \d+ q, \d+ failed/)
    expect(routerCell).toMatch(/b: primary \d+ q/)
    await ctx.close()
  }, 45_000)

  it('refuses forms without a CSRF token, limits login attempts and serves hashed assets for a year', async () => {
    const c = new Client(shop.url)
    await c.login('user2@shop.example', shop.secrets.seedPassword)
    await c.get('/product/5')
    const forged = await fetch(`${shop.url}cart/add`, {
      method: 'POST',
      headers: {
        cookie: [...c.cookies].map(([k, v]) => `${k}=${v}`).join('; '),
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: 'productId=5&qty=1',
      redirect: 'manual',
    })
    expect(forged.status).toBe(403)

    const attacker = new Client(shop.url)
    await attacker.get('/login')
    const statuses: number[] = []
    for (let i = 0; i < 7; i++)
      statuses.push(
        (await attacker.post('/login', { email: 'user3@shop.example', password: `wrong-${i}` }))
          .status,
      )
    expect(statuses.slice(0, 5)).toEqual([401, 401, 401, 401, 401])
    expect(statuses.at(-1)).toBe(429)
    // a successful login gives the account its attempts back: a typo after it is a 401, not a 429
    const attempts = async (owner: Client, password: string) =>
      (await owner.post('/login', { email: 'user7@shop.example', password })).status
    const before = new Client(shop.url)
    await before.get('/login')
    for (let i = 0; i < 4; i++) expect(await attempts(before, `typo-${i}`)).toBe(401)
    expect(await attempts(before, shop.secrets.seedPassword)).toBe(303)
    const after = new Client(shop.url) // a new browser: the account's budget is what counts
    await after.get('/login')
    for (let i = 0; i < 3; i++) expect(await attempts(after, `typo-again-${i}`)).toBe(401)

    const home = await c.get('/')
    const css = /href="(\/static\/app\.[0-9a-f]{10}\.css)"/.exec(home.text_)?.[1]
    expect(css).toBeDefined()
    const asset = await fetch(shop.url + (css as string).slice(1))
    expect(asset.headers.get('cache-control')).toBe('public, max-age=31536000, immutable')
    // Pages carry ETags: a revalidation of an unchanged page is answered 304 Not Modified.
    const catalog1 = shop.config.instances.find((i) => i.name === 'catalog-1')
    const direct = `http://127.0.0.1:${catalog1?.port}/?page=2`
    const etag = (await fetch(direct)).headers.get('etag') as string
    expect(etag).toMatch(/^"/)
    expect((await fetch(direct, { headers: { 'if-none-match': etag } })).status).toBe(304)
  })

  it('charges a double-clicked Pay once', async () => {
    const c = new Client(shop.url)
    await c.login('user4@shop.example', shop.secrets.seedPassword)
    await c.get('/product/9')
    await c.post('/cart/add', { productId: '9', qty: '1' })
    await c.get('/checkout')
    const [r1, r2] = await Promise.all([c.pay(), c.pay()])
    expect(r1.headers.get('location')).toBe(r2.headers.get('location'))
    const orderId = decodeURIComponent(String(r1.headers.get('location')).split('/').pop() ?? '')
    await eventually(
      async () => (await c.get(`/orders/${orderId}/status.json`)).text_.includes('shipped'),
      30_000,
      'the order to ship',
    )
    const charges = (await fetch(`${shop.config.providerUrl}/charges`).then((r) => r.json())) as {
      perOrder: Record<string, number>
    }
    expect(charges.perOrder[orderId]).toBe(1)
  })
})
