/**
 * Routing overhead of @ballast/sharding against raw mysql2 pool queries on loopback, the cost
 * of routing alone (slot + ring table + classifier), and key movement from 4 to 5 shards.
 * Run: pnpm exec tsx --conditions=@ballast/source bench/sharding/routing.bench.ts
 */
import { HashRing } from '@ballast/lb'
import { classifyStatement, createShardRouter, planResharding } from '@ballast/sharding'
import mysql from 'mysql2'
import { compare, do_not_optimize, fmt, isSmoke, report, sampleLatency } from '../harness.js'
import { benchDatabase, MYSQL_URL, run } from './servers.js'

const db = await benchDatabase(MYSQL_URL, 'routing')
try {
  await run(
    db.url,
    'CREATE TABLE orders (id BIGINT PRIMARY KEY, user_id VARCHAR(64), total DECIMAL(10,2), KEY (user_id))',
  )
  await run(
    db.url,
    'INSERT INTO orders SELECT seq, CONCAT("u", seq % 100), seq / 7 FROM seq_1_to_1000',
  )

  const raw = mysql.createPool({ uri: db.url, connectionLimit: 4 })
  const rawQuery = (sql: string, values: unknown[]) =>
    new Promise<unknown>((resolve, reject) =>
      raw.query(sql, values, (e, r) => (e ? reject(e) : resolve(r))),
    )
  const rawPromise = raw.promise()
  // Four shards that all point at the same database: every statement pays the full routing
  // cost (slot, ring table, classifier, async context, balancer-free primary path, timeout).
  const router = createShardRouter({
    shards: ['a', 'b', 'c', 'd'].map((id) => ({ id, primary: db.url })),
    connectionLimit: 4,
    healthCheckIntervalMs: 0,
  })
  const SQL = 'SELECT id, total FROM orders WHERE user_id = ?'
  const N = isSmoke() ? 20 : 20_000
  const rows: (string | number)[][] = []
  const data: Record<string, unknown> = {}
  for (const concurrency of [1, 8]) {
    // Interleave rounds so drift on the shared machine hits both alike; keep the median.
    const rounds: Record<string, number[]> = { raw: [], rawPromise: [], router: [] }
    const p50s: Record<string, number[]> = { raw: [], rawPromise: [], router: [] }
    for (let round = 0; round < (isSmoke() ? 1 : 3); round++) {
      for (const [name, fn] of [
        ['raw', (i: number) => rawQuery(SQL, [`u${i % 100}`])],
        ['rawPromise', (i: number) => rawPromise.query(SQL, [`u${i % 100}`])],
        ['router', (i: number) => router.query(`u${i % 100}`, SQL, [`u${i % 100}`])],
      ] as const) {
        const s = await sampleLatency(fn, { iterations: N, concurrency })
        rounds[name]!.push(s.mean)
        p50s[name]!.push(s.p50)
      }
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
    const base = median(rounds.raw!)
    for (const name of ['raw', 'rawPromise', 'router']) {
      const mean = median(rounds[name]!)
      rows.push([
        name === 'router'
          ? '**@ballast/sharding router.query**'
          : name === 'raw'
            ? 'mysql2 pool.query (callback)'
            : 'mysql2 pool.query (promise)',
        concurrency,
        fmt(median(p50s[name]!)),
        fmt(mean),
        fmtPct(mean / base - 1),
      ])
    }
    data[`c${concurrency}`] = rounds
  }
  report({
    package: 'sharding',
    name: 'routing-overhead',
    title:
      'Routing overhead against raw mysql2 (SELECT by indexed key, loopback MariaDB, median of 3 rounds)',
    columns: ['case', 'concurrency', 'p50 µs', 'mean µs', 'vs callback pool'],
    rows,
    notes: [`${N} queries per round; goal: router within 5% of the raw pool.`],
    data,
  })
  await router.close()
  await new Promise<void>((r) => raw.end(() => r()))

  // Routing alone, no I/O.
  const routerOnly = createShardRouter({
    shards: ['a', 'b', 'c', 'd'].map((id) => ({ id, primary: db.url })),
    healthCheckIntervalMs: 0,
  })
  const ring = new HashRing(['a', 'b', 'c', 'd'])
  let k = 0
  await compare({
    package: 'sharding',
    name: 'route-only',
    title: 'Routing decision alone (no I/O)',
    cases: [
      {
        name: 'router.shardFor + classifyStatement',
        ours: true,
        fn: () =>
          do_not_optimize([routerOnly.shardFor(`user:${k++ & 1023}`), classifyStatement(SQL)]),
      },
      {
        name: 'lb HashRing.get (no slots)',
        fn: () => do_not_optimize(ring.get(`user:${k++ & 1023}`)),
      },
    ],
  })
  await routerOnly.close()

  // Key movement from 4 to 5 shards: slots from the plan, and real keys counted.
  const four = ['s1', 's2', 's3', 's4'].map((id) => ({ id }))
  const five = [...four, { id: 's5' }]
  const plan = planResharding(four, five)
  const r4 = createShardRouter({
    shards: four.map((s) => ({ ...s, primary: db.url })),
    healthCheckIntervalMs: 0,
  })
  const r5 = createShardRouter({
    shards: five.map((s) => ({ ...s, primary: db.url })),
    healthCheckIntervalMs: 0,
  })
  const KEYS = isSmoke() ? 1000 : 1_000_000
  let moved = 0
  let between = 0
  const load = new Map<string, number>()
  for (let i = 0; i < KEYS; i++) {
    const a = r4.shardFor(`user:${i}`)
    const b = r5.shardFor(`user:${i}`)
    load.set(b, (load.get(b) ?? 0) + 1)
    if (a !== b) {
      moved++
      if (b !== 's5') between++
    }
  }
  const shares = [...load.values()].map((n) => n / KEYS)
  const mean = 1 / 5
  const sd = Math.sqrt(shares.reduce((s, x) => s + (x - mean) ** 2, 0) / shares.length) / mean
  report({
    package: 'sharding',
    name: 'key-movement',
    title: 'Key movement from 4 to 5 equal shards (4096 slots on lb HashRing)',
    columns: ['measure', 'value'],
    rows: [
      ['slots moved (plan)', `${plan.movedSlots} / ${plan.slots} = ${fmtPct(plan.movedFraction)}`],
      ['keys moved (counted)', `${moved} / ${KEYS} = ${fmtPct(moved / KEYS)}`],
      ['ideal', fmtPct(1 / 5)],
      ['keys moved between old shards', between],
      ['load SD across 5 shards', fmtPct(sd)],
      ['max / mean', (Math.max(...shares) / mean).toFixed(3)],
    ],
    notes: ['Ring lookup and balance figures of the ring itself: bench/lb.'],
  })
  await r4.close()
  await r5.close()
} finally {
  await db.drop()
}

function fmtPct(x: number): string {
  return `${(x * 100).toFixed(2)}%`
}
