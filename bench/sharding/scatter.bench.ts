/**
 * all() with ORDER BY … LIMIT over 4 shards (streaming k-way merge) against the slowest shard
 * alone, on three servers: s0 on the 3307 primary, s1 read from the 3308 replica, s2 and s3
 * on the 3306 server, each shard its own database. The ORDER BY is served by an index, as a
 * real shop's would be; a small unindexed run (every shard sorts 20k rows) is reported beside it,
 * and the indexed case again with network latency added in front of every server (shards on
 * separate hosts; BENCH_SCATTER_LATENCY_MS per direction, default 1).
 * Run: pnpm exec tsx --conditions=@ballast/source bench/sharding/scatter.bench.ts
 */
import { createShardRouter } from '@ballast/sharding'
import mysql from 'mysql2'
import { fmt, isSmoke, report, sampleLatency } from '../harness.js'
import { startLatencyProxies } from './latencyProxies.js'
import { benchDatabase, MYSQL_URL, PRIMARY_URL, REPLICA_URL, run, withDatabase } from './servers.js'

const ROWS = isSmoke() ? 200 : 20_000
const LIMIT = 50
/** Added per direction by the proxies of the separate-hosts case. */
const LATENCY_MS = Number(process.env.BENCH_SCATTER_LATENCY_MS ?? 1)
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

const dbs = [
  await benchDatabase(PRIMARY_URL, 'sg0'),
  await benchDatabase(PRIMARY_URL, 'sg1'),
  await benchDatabase(MYSQL_URL, 'sg2'),
  await benchDatabase(MYSQL_URL, 'sg3'),
]
try {
  for (const [i, db] of dbs.entries()) {
    await run(
      db.url,
      'CREATE TABLE orders (id BIGINT PRIMARY KEY, user_id VARCHAR(64), total DECIMAL(10,2), created_at BIGINT, KEY by_created (created_at, id))',
    )
    await run(
      db.url,
      `INSERT INTO orders SELECT seq * 4 + ${i}, CONCAT('u', seq % 500), (seq * 7919 % 10000) / 100, seq * 2654435761 % 1000003 FROM seq_1_to_${ROWS}`,
    )
  }
  // s1 is read from the replica: wait until it has the rows.
  const [{ p }] = await run(PRIMARY_URL, 'SELECT @@GLOBAL.gtid_binlog_pos AS p')
  await run(REPLICA_URL, 'SELECT MASTER_GTID_WAIT(?, 60)', [p])
  const urls = [dbs[0]!.url, withDatabase(REPLICA_URL, dbs[1]!.name), dbs[2]!.url, dbs[3]!.url]
  const POOL = { connectionLimit: 2, connectTimeout: 3000 }
  const INDEXED =
    'SELECT id, user_id, total, created_at FROM orders ORDER BY created_at DESC, id DESC'
  const UNINDEXED = 'SELECT id, user_id, total, created_at FROM orders ORDER BY total DESC, id DESC'
  const rows: (string | number)[][] = []
  const data: Record<string, unknown> = {}

  /** Interleaved rounds of router.all(), the no-router fan-out and each shard alone, on `shardUrls`. */
  async function measure(
    label: string,
    shardUrls: string[],
    SQL: string,
    ITER: number,
    ROUNDS: number,
  ) {
    const router = createShardRouter({
      shards: shardUrls.map((url, i) => ({ id: `s${i}`, primary: url })),
      healthCheckInterval: 0,
      connectionLimit: POOL.connectionLimit,
      connectTimeout: POOL.connectTimeout,
    })
    // Each shard alone: the same mysql2 callback pool type and options as the router's.
    const pools = shardUrls.map((url) => mysql.createPool({ uri: url, ...POOL }))
    const alone = (i: number, sql: string) =>
      new Promise<unknown>((resolve, reject) =>
        pools[i]!.query(sql, (e, r) => (e ? reject(e) : resolve(r))),
      )
    const column = SQL === INDEXED ? 'created_at' : 'total'
    const merge = {
      orderBy: [
        // DECIMAL comes back as a string: compare it as a number.
        column === 'total'
          ? {
              column,
              direction: 'desc' as const,
              compare: (a: unknown, b: unknown) => Number(a) - Number(b),
            }
          : { column, direction: 'desc' as const },
        { column: 'id', direction: 'desc' as const },
      ],
      limit: LIMIT,
    }
    // The fan-out floor: the same four queries in parallel on the same pools, no router, the
    // results concatenated and sorted.
    const key = (r: Record<string, unknown>) => Number(r[column])
    const fanOut = async () => {
      const lists = (await Promise.all(
        shardUrls.map((_, i) => alone(i, `${SQL} LIMIT ${LIMIT}`)),
      )) as Array<Array<Record<string, unknown>>>
      return lists
        .flat()
        .sort((x, y) => key(y) - key(x) || Number(y.id) - Number(x.id))
        .slice(0, LIMIT)
    }
    const ours: number[] = []
    const floor: number[] = []
    const singles: number[][] = shardUrls.map(() => [])
    const ratios: number[] = []
    for (let round = 0; round < ROUNDS; round++) {
      const a = (await sampleLatency(() => router.all(SQL, [], merge), { iterations: ITER })).p50
      floor.push((await sampleLatency(fanOut, { iterations: ITER })).p50)
      const s = []
      for (let i = 0; i < shardUrls.length; i++) {
        s.push(
          (await sampleLatency(() => alone(i, `${SQL} LIMIT ${LIMIT}`), { iterations: ITER })).p50,
        )
      }
      ours.push(a)
      for (const [i, x] of s.entries()) singles[i]!.push(x)
      ratios.push(a / Math.max(...s))
    }
    const single = singles.map(median)
    const slowest = Math.max(...single)
    rows.push([
      `**router.all(…, { orderBy, limit: ${LIMIT} }) over 4 shards**, ${label}`,
      fmt(median(ours)),
      `**${(median(ours) / slowest).toFixed(2)}x** (per round: median ${median(ratios).toFixed(2)}x); ${(median(ours) / median(floor)).toFixed(2)}x the no-router fan-out`,
    ])
    rows.push([
      `the same 4 queries in parallel on the same pools, no router (Promise.all + sort), ${label}`,
      fmt(median(floor)),
      `${(median(floor) / slowest).toFixed(2)}x`,
    ])
    for (const [i, x] of single.entries()) {
      rows.push([
        `shard s${i} alone (mysql2 pool, LIMIT ${LIMIT}), ${label}`,
        fmt(x),
        `${(x / slowest).toFixed(2)}x`,
      ])
    }
    data[label] = { ours, floor, singles, ratios }
    await router.close()
    await Promise.all(pools.map((pool) => new Promise<void>((r) => pool.end(() => r()))))
  }

  const smoke = isSmoke()
  await measure('loopback, indexed ORDER BY', urls, INDEXED, smoke ? 5 : 300, smoke ? 1 : 7)
  await measure(
    'loopback, unindexed ORDER BY (each shard sorts every row)',
    urls,
    UNINDEXED,
    smoke ? 2 : 30,
    smoke ? 1 : 3,
  )
  // Shards on separate hosts: the servers still share this machine's 2 cores, but each
  // query also waits for a network round trip, as it would across hosts.
  const proxies = await startLatencyProxies(urls, LATENCY_MS)
  try {
    await measure(
      `${LATENCY_MS} ms added each way (a network between hosts), indexed ORDER BY`,
      proxies.urls,
      INDEXED,
      smoke ? 5 : 200,
      smoke ? 1 : 7,
    )
  } finally {
    await proxies.stop()
  }
  report({
    package: 'sharding',
    name: 'scatter-gather',
    title: `all() ORDER BY … LIMIT ${LIMIT} over 4 shards (${ROWS} rows each) vs each shard alone`,
    columns: ['case', 'p50 µs', 'ratio to slowest shard'],
    rows,
    notes: [
      'p50 medians over interleaved rounds (7 indexed, 3 unindexed). s0: database on the 3307 primary; s1: database read from the 3308 replica; s2, s3: databases on the 3306 server. The three servers and the client share the same 2 cores. Goal: at most 1.3x the slowest shard.',
      `On loopback the four shards' queries compete for the same 2 cores, so no client can reach the goal there: the no-router fan-out row is the floor. The latency rows put a testkit fault proxy (in a child process) in front of each server, adding ${LATENCY_MS} ms per direction, as between hosts; the shard-alone rows go through the same proxies.`,
    ],
    data,
  })
} finally {
  await Promise.all(dbs.map((d) => d.drop()))
}
