/**
 * The product page through the gateway, with the caches (the gateway's response cache in front
 * of the catalog's two-level cache) against the same page with the caches off (`?cache=off`:
 * the gateway does not store it and the catalog reads MariaDB), in one run on one shop.
 * Goal: at least 10x the throughput with the cache.
 *
 *   pnpm exec tsx --conditions=@ballast/source bench/shop/product.bench.ts
 */
import autocannon from 'autocannon'
import { fmt, fmtInt, isSmoke, report } from '../harness.js'
import { benchShop } from './shopBench.js'

const SMOKE = isSmoke()
const SECONDS = SMOKE ? 1 : Number(process.env.SHOP_BENCH_SECONDS ?? 8)
const CONNECTIONS = SMOKE ? 2 : 32

const shop = await benchShop('product')
try {
  const run = async (path: string) => {
    // Warm-up fills the caches (and the JIT) before the measured run.
    await autocannon({ url: shop.url + path, connections: CONNECTIONS, duration: 1 })
    return autocannon({ url: shop.url + path, connections: CONNECTIONS, duration: SECONDS })
  }
  const cached = await run('product/42')
  const uncached = await run('product/42?cache=off')
  const rows = [
    { name: 'cache on (gateway response cache + two-level cache)', r: cached },
    { name: 'cache off (MariaDB on every request)', r: uncached },
  ]
  report({
    package: 'shop',
    name: 'product',
    title: `Product page through the gateway, ${CONNECTIONS} connections, ${SECONDS} s each`,
    columns: ['case', 'req/s', 'p50 ms', 'p99 ms', 'non-2xx', 'throughput vs cache off'],
    rows: rows.map(({ name, r }) => [
      name,
      fmtInt(r.requests.average),
      fmt(r.latency.p50),
      fmt(r.latency.p99),
      r.non2xx,
      `${(r.requests.average / uncached.requests.average).toFixed(1)}x`,
    ]),
    notes: [
      'The shop and autocannon share the machine; the ratio, from one run, is what we quote.',
    ],
    data: { cached: cached.requests, uncached: uncached.requests },
  })
} finally {
  await shop.close()
}
