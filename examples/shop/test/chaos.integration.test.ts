/**
 * The chaos run: a bounded loop of checkouts while each fault of the chaos switch is applied
 * in turn (a catalog instance stopped, Redis cut, the replica cut, RabbitMQ cut, a RabbitMQ
 * cluster node SIGKILLed and restarted, a Redis Cluster master SIGKILLed and replaced by its
 * replica, shard b's primary switched over to its replica and back, the payment provider
 * failing). Afterwards every order reaches a final state, none is
 * lost, none is charged twice, and stock adds up.
 *
 * LONGEST of the shop's tests (~100 s): eight faults of 4 s, the RabbitMQ node's restart
 * (~10-15 s, longer while the mq cluster test holds the cluster's lock), the catch-up.
 */
import { describe, expect, inject, it } from 'vitest'
import type { ChaosFault } from '../src/services/gateway.js'
import { Client, catalogRows, eventually, shardRows, shopHandle, sleep } from './fixture.js'

const FAULTS: ChaosFault[] = [
  'catalog-instance',
  'redis',
  'rabbitmq',
  'replica',
  'rabbitmq-node',
  'redis-failover',
  'shard-primary',
  // last: its payments retry for a while after it is restored
  'payment-provider',
]
const FAULT_MS = 4000
const USERS = 4
// Users and products of their own: the browser test shares this shop.
const FIRST_USER = 11
const PRODUCTS = [201, 202, 203, 204, 205]

const shop = shopHandle(inject('shop'))

interface Placed {
  orderId: string
  productId: number
  qty: number
}

/** One checkout as a browser would do it, retrying a failed step; Pay keeps its key across retries. */
async function checkout(
  c: Client,
  productId: number,
  qty: number,
  onRetry: () => void = () => {},
): Promise<Placed> {
  const retry = async <T>(fn: () => Promise<T>, ok: (v: T) => boolean): Promise<T> => {
    let last: unknown
    for (let i = 0; i < 20; i++) {
      try {
        const v = await fn()
        if (ok(v)) return v
        last = v
        onRetry()
      } catch (err) {
        last = err
        onRetry()
      }
      await sleep(250)
    }
    throw new Error(`step kept failing: ${String((last as { status?: number })?.status ?? last)}`)
  }
  await retry(
    () => c.get(`/product/${productId}`),
    (r) => r.status === 200 && c.csrf() !== '',
  )
  await retry(
    () => c.post('/cart/add', { productId: String(productId), qty: String(qty) }),
    (r) => r.status === 303,
  )
  const shown = await retry(
    () => c.get('/checkout'),
    (r) => r.status === 200 && r.text_.includes('data-pay'),
  )
  // Retries press Pay on the same page: same key, same cart digest.
  const hidden = (name: string) =>
    new RegExp(`name="${name}" value="([^"]*)"`).exec(shown.text_)?.[1] ?? ''
  const form = { idem: hidden('idem'), cart: hidden('cart') }
  const res = await retry(
    () => c.post('/checkout', form),
    (r) => r.status === 303 && String(r.headers.get('location')).startsWith('/orders/'),
  )
  return {
    orderId: decodeURIComponent(String(res.headers.get('location')).slice('/orders/'.length)),
    productId,
    qty,
  }
}

describe('chaos run', () => {
  it('keeps taking orders through every fault and catches up after', async () => {
    const stockBefore = new Map(
      (
        await catalogRows<{ id: number; stock: number }>(
          shop,
          'SELECT id, stock FROM products WHERE id IN (?)',
          [PRODUCTS],
        )
      ).map((r) => [r.id, r.stock]),
    )
    const clients: Client[] = []
    const userIds: string[] = []
    for (let i = FIRST_USER; i < FIRST_USER + USERS; i++) {
      const c = new Client(shop.url)
      await c.login(`user${i}@shop.example`, shop.secrets.seedPassword)
      userIds.push(JSON.parse((await c.get('/cart/whoami.json')).text_).userId)
      clients.push(c)
    }
    const placed: Placed[] = []
    const perFault: Record<string, number> = {}
    let n = 0
    const details: Record<string, string> = {}
    // Steps a shopper had to repeat (an error page or a failed request), per fault: a figure
    // for the README, not an assertion (the invariants below are the test).
    const retries: Record<string, number> = {}
    for (const fault of FAULTS) {
      await shop.chaos(fault, true)
      if (fault === 'rabbitmq-node' || fault === 'redis-failover' || fault === 'shard-primary') {
        // the switch did something real: a node killed, a replica promoted
        details[fault] = (await shop.status()).chaosDetails[fault] ?? ''
        expect(details[fault], fault).toMatch(/SIGKILLed|took over|promoted/)
      }
      const until = Date.now() + FAULT_MS
      perFault[fault] = 0
      // Every user keeps shopping while the fault is on.
      await Promise.all(
        clients.map(async (c, i) => {
          while (Date.now() < until) {
            const productId = PRODUCTS[(n++ + i) % PRODUCTS.length] as number
            placed.push(
              await checkout(c, productId, 1 + (n % 3), () => {
                retries[fault] = (retries[fault] ?? 0) + 1
              }),
            )
            perFault[fault] = (perFault[fault] ?? 0) + 1
          }
        }),
      )
      if (fault === 'payment-provider') {
        // The payment worker's breaker opened, and the catalog (which mirrors it) switched
        // recommendations and reviews off through its degrader.
        await eventually(
          async () => {
            const ports = shop.config.instances.filter((x) => x.service === 'catalog')
            for (const p of ports) {
              const s = (await (
                await fetch(`http://127.0.0.1:${p.port}/_internal/stats`)
              ).json()) as { degraderChanges?: { feature: string; to: string; reason: string }[] }
              if (
                s.degraderChanges?.some(
                  (c) =>
                    c.feature === 'recommendations' && c.to === 'off' && c.reason === 'breaker',
                )
              )
                return true
            }
            return false
          },
          10_000,
          'the payment breaker to switch recommendations off on a catalog instance',
        )
      }
      if (fault in details) details[fault] = (await shop.status()).chaosDetails[fault] ?? ''
      await shop.chaos(fault, false)
    }
    // Orders were taken under every fault.
    for (const fault of FAULTS) expect(perFault[fault], fault).toBeGreaterThan(0)
    console.info(
      'chaos run: orders per fault',
      JSON.stringify(perFault),
      'steps retried per fault',
      JSON.stringify(retries),
      JSON.stringify(details),
    )

    const ids = [...new Set(placed.map((p) => p.orderId))]
    expect(ids.length).toBe(placed.length)

    // Every order reaches a final state once the faults are gone.
    let waiting = ''
    const statuses = await eventually(
      async () => {
        const perShard = await Promise.all(
          shop.config.shards.map(async (s) =>
            (
              await shardRows<{ id: string; status: string }>(
                s,
                'SELECT id, status FROM orders WHERE id IN (?)',
                [ids],
              )
            ).map((r) => ({ ...r, shard: s.id })),
          ),
        )
        const rows = perShard.flat()
        // What is still on its way, for the failure message: orders by shard and status.
        const open = new Map<string, number>()
        for (const r of rows)
          if (r.status !== 'shipped' && r.status !== 'cancelled')
            open.set(`${r.shard}:${r.status}`, (open.get(`${r.shard}:${r.status}`) ?? 0) + 1)
        waiting = `${ids.length - rows.length} not found, ${JSON.stringify(Object.fromEntries(open))} not final`
        return rows.length === ids.length && open.size === 0 ? rows : undefined
      },
      // bounded, with room for a loaded CI machine: the backlog of eight faults drains here
      150_000,
      'every order to reach a final state',
    ).catch(async (error: Error) => {
      const status = await shop.status().catch(() => undefined)
      throw new Error(
        `${error.message}; ${waiting}; queues ${JSON.stringify(status?.queues)}; chaos ${JSON.stringify(status?.chaosDetails)}`,
      )
    })
    // None lost: every order the shop confirmed exists, and the users have no others.
    expect(statuses.length).toBe(ids.length)
    const all = (
      await Promise.all(
        shop.config.shards.map((s) =>
          shardRows<{ n: number }>(s, 'SELECT COUNT(*) AS n FROM orders WHERE user_id IN (?)', [
            userIds,
          ]),
        ),
      )
    ).reduce((a, [r]) => a + Number(r?.n ?? 0), 0)
    expect(all).toBe(ids.length)
    expect(statuses.filter((s) => s.status === 'shipped').length).toBe(ids.length)

    // While the provider failed, checkout degraded to "payment pending" and completed later.
    const pending = (
      await Promise.all(
        shop.config.shards.map((s) =>
          shardRows(
            s,
            "SELECT DISTINCT order_id FROM order_events WHERE status = 'payment_pending' AND order_id IN (?)",
            [ids],
          ),
        ),
      )
    ).flat()
    expect(pending.length).toBeGreaterThan(0)

    // No payment taken twice: the provider saw exactly one charge per order.
    const charges = (await fetch(`${shop.config.providerUrl}/charges`).then((r) => r.json())) as {
      perOrder: Record<string, number>
    }
    for (const id of ids) expect(charges.perOrder[id], id).toBe(1)

    // Stock adds up: what left the shelves is what the shipped orders hold.
    const stockAfter = new Map(
      (
        await catalogRows<{ id: number; stock: number }>(
          shop,
          'SELECT id, stock FROM products WHERE id IN (?)',
          [PRODUCTS],
        )
      ).map((r) => [r.id, r.stock]),
    )
    for (const id of PRODUCTS) {
      const sold = placed.filter((p) => p.productId === id).reduce((a, p) => a + p.qty, 0)
      expect((stockBefore.get(id) ?? 0) - (stockAfter.get(id) ?? 0), `product ${id}`).toBe(sold)
    }
  }, 360_000)
})
