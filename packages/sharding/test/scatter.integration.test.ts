import { createFaultProxy, type FaultProxy } from '@ballast/testkit'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  createShardRouter,
  InvalidArgumentError,
  ScatterGatherError,
  type ShardConfig,
  type ShardRouter,
} from '../src/index.js'
import { sql, type Topology, topology } from './fixtures.js'

interface Order {
  id: number
  user_id: string
  total: string
  created_at: number
}

let topo: Topology
let shards: ShardConfig[]
let router: ShardRouter
let proxy: FaultProxy
const all: Order[] = []

beforeAll(async () => {
  topo = await topology('shard_scatter', 2, 2)
  shards = [
    { id: 'p0', primary: topo.pair[0]!.primary, replicas: [topo.pair[0]!.replica] },
    { id: 'p1', primary: topo.pair[1]!.primary, replicas: [topo.pair[1]!.replica] },
    { id: 's0', primary: topo.standard[0]! },
    { id: 's1', primary: topo.standard[1]! },
  ]
  router = createShardRouter({ shards, healthCheckInterval: 0 })
  let seed = 7
  const rand = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648
    return seed / 2147483648
  }
  for (let id = 1; id <= 240; id++) {
    const order = {
      id,
      user_id: `user-${Math.floor(rand() * 60)}`,
      total: (Math.floor(rand() * 100_00) / 100).toFixed(2),
      created_at: Math.floor(rand() * 50), // many ties: the merge must break them by id
    }
    all.push(order)
    await router.query(
      order.user_id,
      'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, ?, ?)',
      [order.id, order.user_id, order.total, order.created_at],
    )
  }
  const u = new URL(topo.standard[1]!)
  proxy = await createFaultProxy({ host: u.hostname, port: Number(u.port) })
})

afterAll(async () => {
  await router?.close()
  await proxy?.close()
  await topo?.cleanup()
})

const byNewest = (a: Order, b: Order) => b.created_at - a.created_at || b.id - a.id

describe('all() scatter-gather over four shards', () => {
  it('spreads the rows over every shard', async () => {
    const counts = await Promise.all(
      topo.pair
        .map((p) => p.primary)
        .concat(topo.standard)
        .map((url) => sql(url, 'SELECT COUNT(*) AS n FROM orders')),
    )
    const ns = counts.map((rows) => Number(rows[0].n))
    expect(ns.reduce((a, b) => a + b, 0)).toBe(240)
    for (const n of ns) expect(n).toBeGreaterThan(20)
  })

  it('merges ORDER BY … LIMIT with an offset exactly like one big table', async () => {
    for (const [limit, offset] of [
      [10, 0],
      [10, 5],
      [25, 100],
      [5, 238],
    ] as const) {
      const result = await router.all<Order>(
        'SELECT id, user_id, total, created_at FROM orders ORDER BY created_at DESC, id DESC',
        [],
        {
          orderBy: [
            { column: 'created_at', direction: 'desc' },
            { column: 'id', direction: 'desc' },
          ],
          limit,
          offset,
        },
      )
      expect(result.partial).toBe(false)
      expect(result.shards).toEqual(['p0', 'p1', 's0', 's1'])
      expect(result.rows.map((r) => r.id)).toEqual(
        [...all]
          .sort(byNewest)
          .slice(offset, offset + limit)
          .map((o) => o.id),
      )
    }
  })

  it('keeps the per-shard LIMIT in force when the SQL ends with a -- or # comment', async () => {
    // Every row but each shard's first makes the subquery return two rows (error 1242), so a
    // shard that runs the statement without its LIMIT 1 fails the whole call.
    const failsPastFirstRow =
      'SELECT o.id, (SELECT 1 UNION SELECT 2 FROM DUAL WHERE o.id > (SELECT MIN(i.id) FROM orders i)) AS x FROM orders o ORDER BY o.id'
    for (const comment of [' -- first row only', ' # first row only', '-- ', ' #', ';  -- end']) {
      const { rows } = await router.all<{ id: number }>(`${failsPastFirstRow}${comment}`, [], {
        orderBy: 'id',
        limit: 1,
      })
      expect(
        rows.map((r) => Number(r.id)),
        comment,
      ).toEqual([Math.min(...all.map((o) => o.id))])
    }
  })

  it('refuses an ORDER BY merge whose SQL has its own LIMIT', async () => {
    await expect(
      router.all('SELECT id FROM orders ORDER BY id LIMIT 5', [], { orderBy: 'id', limit: 5 }),
    ).rejects.toThrow(InvalidArgumentError)
  })

  it('merges COUNT, SUM, MIN, MAX and AVG (from SUM and COUNT), overall and by group', async () => {
    const { rows } = await router.all(
      'SELECT COUNT(*) AS n, SUM(total) AS s, MIN(total) AS lo, MAX(created_at) AS hi FROM orders WHERE created_at >= ?',
      [10],
      {
        aggregate: {
          n: 'count',
          s: 'sum',
          lo: 'min',
          hi: 'max',
          avg: { avg: { sum: 's', count: 'n' } },
        },
      },
    )
    const kept = all.filter((o) => o.created_at >= 10)
    const cents = kept.reduce((a, o) => a + Math.round(Number(o.total) * 100), 0)
    expect(rows).toHaveLength(1)
    expect(Number(rows[0]!.n)).toBe(kept.length)
    expect(rows[0]!.s).toBe((cents / 100).toFixed(2))
    expect(Number(rows[0]!.lo)).toBe(Math.min(...kept.map((o) => Number(o.total))))
    expect(rows[0]!.hi).toBe(Math.max(...kept.map((o) => o.created_at)))
    expect(rows[0]!.avg).toBeCloseTo(cents / 100 / kept.length, 6)

    const grouped = await router.all<{ bucket: number; n: number }>(
      'SELECT created_at % 3 AS bucket, COUNT(*) AS n FROM orders GROUP BY bucket',
      [],
      { aggregate: { n: 'count' }, groupBy: ['bucket'], orderBy: 'bucket' },
    )
    expect(grouped.rows.map((r) => [Number(r.bucket), Number(r.n)])).toEqual(
      [0, 1, 2].map((b) => [b, all.filter((o) => o.created_at % 3 === b).length]),
    )
  })

  it('fails with every failed shard named, or returns the rest flagged partial, when a shard is down', async () => {
    const broken = createShardRouter({
      shards: shards.map((s) =>
        s.id === 's1' ? { ...s, primary: proxy.url(topo.standard[1]!) } : s,
      ),
      healthCheckInterval: 0,
      connectTimeout: 300,
      scatterTimeout: 400,
    })
    try {
      proxy.refuse()
      const error = await broken.all('SELECT id FROM orders').catch((e: unknown) => e)
      expect(error).toBeInstanceOf(ScatterGatherError)
      expect((error as ScatterGatherError).failures.map((f) => f.shard)).toEqual(['s1'])
      expect((error as ScatterGatherError).retryable).toBe(true)

      const partial = await broken.all<Order>(
        'SELECT id FROM orders ORDER BY id',
        [],
        { orderBy: 'id', limit: 500 },
        { onShardError: 'partial' },
      )
      expect(partial.partial).toBe(true)
      expect(partial.shards).toEqual(['p0', 'p1', 's0'])
      const s1Ids = new Set(
        (await sql(topo.standard[1]!, 'SELECT id FROM orders')).map((r: Order) => r.id),
      )
      expect(partial.rows.map((r) => r.id)).toEqual(
        all.map((o) => o.id).filter((id) => !s1Ids.has(id)),
      )

      // A shard that hangs is cut off by the per-shard timeout.
      proxy.restore()
      proxy.blackhole()
      const started = Date.now()
      const slow = await broken.all('SELECT id FROM orders', [], undefined, {
        onShardError: 'partial',
      })
      expect(Date.now() - started).toBeLessThan(1500)
      expect(slow.partial).toBe(true)
      expect(slow.failures.map((f) => f.shard)).toEqual(['s1'])
      expect(broken.stats().scatter).toEqual({ calls: 3, partial: 2, failed: 1 })
    } finally {
      proxy.restore()
      await broken.close()
    }
  })
})
