/**
 * Routing overhead of @ballast/sharding against raw mysql2 pool queries on loopback, the cost
 * of routing alone (slot + ring table + classifier), and key movement from 4 to 5 shards.
 * Run: pnpm exec tsx --conditions=@ballast/source bench/sharding/routing.bench.ts
 */
import { HashRing } from '@ballast/lb'
import {
  CausalToken,
  classifyStatement,
  createShardRouter,
  planResharding,
} from '@ballast/sharding'
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

  // Both sides use the same mysql2 callback pool with the same options, sized so that no call
  // waits for a connection at the highest concurrency measured.
  const POOL = { connectionLimit: 16, connectTimeout: 3000 }
  const raw = mysql.createPool({ uri: db.url, ...POOL })
  const rawQuery = (sql: string, values: unknown[]) =>
    new Promise<unknown>((resolve, reject) =>
      raw.query(sql, values, (e, r) => (e ? reject(e) : resolve(r))),
    )
  // What the router does on a connection: take one, run the statement, release it.
  const rawConnection = (sql: string, values: unknown[]) =>
    new Promise<unknown>((resolve, reject) =>
      raw.getConnection((e, c) => {
        if (e) return reject(e)
        c.query({ sql, values }, (err, r) => {
          c.release()
          if (err) reject(err)
          else resolve(r)
        })
      }),
    )
  // One shard, so both sides run on one pool of the same size: every statement still pays the
  // full routing cost (key hash, slot table, classifier, async context, breaker check, timeout,
  // stats), which does not depend on the number of shards. (With four shards over the same
  // database each shard would bring its own pool: four times the connections, which measures
  // the deployment, not the routing.)
  const router = createShardRouter({
    shards: [{ id: 'a', primary: db.url }],
    connectionLimit: POOL.connectionLimit,
    connectTimeout: POOL.connectTimeout,
    healthCheckInterval: 0,
  })
  const SQL = 'SELECT id, total FROM orders WHERE user_id = ?'
  const N = isSmoke() ? 20 : 2000
  const ROUNDS = isSmoke() ? 1 : 15
  const cases = [
    ['mysql2 pool.query (callback)', (i: number) => rawQuery(SQL, [`u${i % 100}`])],
    [
      'mysql2 pool.getConnection + query + release',
      (i: number) => rawConnection(SQL, [`u${i % 100}`]),
    ],
    [
      '**@ballast/sharding router.query**',
      (i: number) => router.query(`u${i % 100}`, SQL, [`u${i % 100}`]),
    ],
  ] as const
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
  const rows: (string | number)[][] = []
  const data: Record<string, unknown> = {}
  for (const concurrency of [1, 16]) {
    const p50: number[][] = cases.map(() => [])
    const mean: number[][] = cases.map(() => [])
    const cpu: number[][] = cases.map(() => [])
    // Many short rounds, interleaved and in alternating order, so drift on the shared machine
    // hits every case alike; each figure is the median over rounds.
    for (let round = 0; round < ROUNDS; round++) {
      const order = cases.map((_, i) => i)
      if (round % 2 === 1) order.reverse()
      for (const i of order) {
        const before = process.cpuUsage()
        const s = await sampleLatency(cases[i]![1], { iterations: N, concurrency })
        const used = process.cpuUsage(before)
        p50[i]!.push(s.p50)
        mean[i]!.push(s.mean)
        // Client CPU per call (warmup calls included in both numerator and denominator).
        cpu[i]!.push((used.user + used.system) / (s.iterations + Math.floor(s.iterations / 10)))
      }
    }
    cases.forEach(([name], i) => {
      rows.push([
        name,
        concurrency,
        fmt(median(p50[i]!)),
        fmtPct(median(p50[i]!) / median(p50[0]!) - 1),
        fmt(median(mean[i]!)),
        fmtPct(median(mean[i]!) / median(mean[0]!) - 1),
        median(cpu[i]!).toFixed(1),
        fmtPct(median(cpu[i]!) / median(cpu[0]!) - 1),
      ])
    })
    data[`c${concurrency}`] = { cases: cases.map(([n]) => n), p50, mean, cpu }
  }
  report({
    package: 'sharding',
    name: 'routing-overhead',
    title: `Routing overhead against raw mysql2 (SELECT by indexed key, loopback MariaDB, median of ${ROUNDS} interleaved rounds)`,
    columns: [
      'case',
      'concurrency',
      'p50 µs',
      'vs pool.query',
      'mean µs',
      'vs pool.query',
      'client CPU µs/call',
      'vs pool.query',
    ],
    rows,
    notes: [
      `${N} queries per round and case; same mysql2 callback pool type and options on every side (connectionLimit ${POOL.connectionLimit}, connectTimeout ${POOL.connectTimeout}). Goal: router within 5% of the raw pool.`,
      'Client CPU is process.cpuUsage() over the round: the work this process did per call, which scheduling delays on a loaded machine do not inflate.',
    ],
    data,
  })
  await router.close()
  await new Promise<void>((r) => raw.end(() => r()))

  // Routing alone, no I/O.
  const routerOnly = createShardRouter({
    shards: ['a', 'b', 'c', 'd'].map((id) => ({ id, primary: db.url })),
    healthCheckInterval: 0,
    secrets: ['bench-secret-0123456789abcdef0123456789', 'bench-old-secret-0123456789abcdef01234'],
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

  // What a request pays to read its causal token cookie: HMAC-SHA256 verification (against the
  // rotated-out secret too, for a forged one) next to the unsigned parse it replaced.
  const token = CausalToken.of('a', '0-1-123456').merge(CausalToken.of('c', '0-3-98765,1-3-42'))
  const signed = routerOnly.signCausalToken(token)
  const forged = `${token.toString()}~${'A'.repeat(43)}`
  await compare({
    package: 'sharding',
    name: 'causal-token',
    title: 'Reading the causal token cookie (no I/O)',
    cases: [
      {
        name: 'router.verifyCausalToken (signed, 2 secrets)',
        ours: true,
        fn: () => do_not_optimize(routerOnly.verifyCausalToken(signed)),
      },
      {
        name: 'router.verifyCausalToken (forged: both secrets tried)',
        fn: () => do_not_optimize(routerOnly.verifyCausalToken(forged)),
      },
      {
        name: 'CausalToken.parse (unsigned, before #14)',
        fn: () => do_not_optimize(CausalToken.parse(token.toString())),
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
    healthCheckInterval: 0,
  })
  const r5 = createShardRouter({
    shards: five.map((s) => ({ ...s, primary: db.url })),
    healthCheckInterval: 0,
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
