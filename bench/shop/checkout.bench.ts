/**
 * Checkout throughput and latency with two order instances against one, in one run on one
 * shop: the same users put one product in their cart, open the checkout page and pay, through
 * the gateway; for the one-instance case order-2 is stopped and the balancer's health check
 * takes it out.
 *
 *   pnpm exec tsx --conditions=@ballast/source bench/shop/checkout.bench.ts
 */
import { Client } from '../../examples/shop/test/fixture.js'
import { fmt, fmtInt, isSmoke, report, sampleLatency } from '../harness.js'
import { benchShop } from './shopBench.js'

const SMOKE = isSmoke()
const USERS = SMOKE ? 2 : 16
const ORDERS = SMOKE ? 4 : Number(process.env.SHOP_BENCH_ORDERS ?? 400)

const shop = await benchShop('checkout')
try {
  const clients: Client[] = []
  for (let i = 1; i <= USERS; i++) {
    const c = new Client(shop.url)
    await c.login(`user${i}@shop.example`, shop.secrets.seedPassword)
    await c.get('/product/7')
    clients.push(c)
  }
  let next = 0
  const order = async () => {
    // Each call takes a user that is not busy: concurrency equals the number of users.
    const c = clients[next++ % clients.length] as Client
    const add = await c.post('/cart/add', { productId: String(1 + (next % 400)), qty: '1' })
    if (add.status !== 303) throw new Error(`add to cart answered ${add.status}`)
    // Pay from the checkout page, as a browser does: its form carries the key and the digest
    // of the cart it shows, and a Pay whose cart changed since is refused.
    await c.get('/checkout')
    const res = await c.pay()
    if (res.status !== 303) throw new Error(`checkout answered ${res.status}`)
  }
  const measure = () => sampleLatency(order, { iterations: ORDERS, concurrency: USERS })
  await sampleLatency(order, { iterations: USERS * 2, concurrency: USERS })
  const two = await measure()
  await shop.hold('order-2', true)
  await new Promise((r) => setTimeout(r, 2500))
  const one = await measure()
  await shop.hold('order-2', false)
  report({
    package: 'shop',
    name: 'checkout',
    title: `Checkout (add to cart + checkout page + pay) through the gateway, ${USERS} concurrent users, ${ORDERS} orders each`,
    columns: ['order instances', 'orders/s', 'p50 ms', 'p99 ms', 'vs one instance'],
    rows: [
      [
        '2',
        fmt(two.opsPerSec),
        fmt(two.p50 / 1000),
        fmt(two.p99 / 1000),
        `${(two.opsPerSec / one.opsPerSec).toFixed(2)}x`,
      ],
      ['1', fmt(one.opsPerSec), fmt(one.p50 / 1000), fmt(one.p99 / 1000), '1.00x'],
    ],
    notes: [
      'Every service, MariaDB, Redis and RabbitMQ share the same 2 cores, so a second instance adds little when the machine, not the order service, is the bottleneck.',
      `${fmtInt(ORDERS * 2)} orders placed in all; the workers ship them in the background.`,
    ],
  })
} finally {
  await shop.close()
}
