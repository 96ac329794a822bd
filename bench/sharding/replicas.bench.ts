/**
 * A read-your-writes replica read costs one round trip (the GTID wait rides with the read),
 * counted on the wire and with the replica's own counters, against the usual two-step wait.
 * (all() against the slowest shard alone: scatter.bench.ts.)
 * Run: pnpm exec tsx --conditions=@ballast/source bench/sharding/replicas.bench.ts
 */
import { connect, createServer, type Socket } from 'node:net'
import { createShardRouter } from '@ballast/sharding'
import mysql from 'mysql2/promise'
import { fmt, isSmoke, report, sampleLatency } from '../harness.js'
import { benchDatabase, PRIMARY_URL, REPLICA_URL, run, withDatabase } from './servers.js'

/** A TCP proxy that counts the requests clients send (each is one round trip). */
async function countingProxy(target: URL) {
  let requests = 0
  const sockets = new Set<Socket>()
  const server = createServer((client) => {
    const upstream = connect({ host: target.hostname, port: Number(target.port) })
    sockets.add(client).add(upstream)
    client.on('data', (chunk) => {
      requests++
      upstream.write(chunk)
    })
    upstream.on('data', (chunk) => client.write(chunk))
    const close = () => {
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    client.on('close', close).on('error', close)
    upstream.on('close', close).on('error', close)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as { port: number }).port
  return {
    url: (u: string) => {
      const x = new URL(u)
      x.host = `127.0.0.1:${port}`
      return x.toString()
    },
    reset: () => {
      requests = 0
    },
    requests: () => requests,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy()
        server.close(() => r())
      }),
  }
}

async function waitStatus(url: string): Promise<{ count: number; timeouts: number }> {
  const rows: Array<{ Variable_name: string; Value: string }> = await run(
    url,
    "SHOW GLOBAL STATUS LIKE 'Master_gtid_wait%'",
  )
  const get = (n: string) => Number(rows.find((r) => r.Variable_name === n)?.Value ?? 0)
  return { count: get('Master_gtid_wait_count'), timeouts: get('Master_gtid_wait_timeouts') }
}

const N = isSmoke() ? 20 : 2000

// ---------- read-your-writes: one round trip ----------
const pairDb = await benchDatabase(PRIMARY_URL, 'ryw')
const proxy = await countingProxy(new URL(REPLICA_URL))
try {
  await run(
    pairDb.url,
    'CREATE TABLE orders (id BIGINT PRIMARY KEY, user_id VARCHAR(64), total DECIMAL(10,2), KEY (user_id))',
  )
  const replicaDbUrl = withDatabase(REPLICA_URL, pairDb.name)
  const [{ p }] = await run(pairDb.url, 'SELECT @@GLOBAL.gtid_binlog_pos AS p')
  await run(replicaDbUrl, 'SELECT MASTER_GTID_WAIT(?, 10)', [p])
  const router = createShardRouter({
    shards: [{ id: 'p', primary: pairDb.url, replicas: [proxy.url(replicaDbUrl)] }],
    healthCheckInterval: 0,
    gtidWaitTimeout: 2000,
  })
  const primary = mysql.createPool({ uri: pairDb.url, connectionLimit: 2 })
  const replica = mysql.createPool({ uri: proxy.url(replicaDbUrl), connectionLimit: 2 })
  await primary.query(
    "SET SESSION session_track_system_variables = CONCAT(@@session.session_track_system_variables, ',last_gtid')",
  )
  let id = 1
  const rows: (string | number)[][] = []
  const data: Record<string, unknown> = {}
  for (const [name, fn] of [
    [
      '**router: write, then read-your-writes read (wait + read in one round trip)**',
      () =>
        router.run({}, async () => {
          const n = id++
          await router.query('u', 'INSERT INTO orders VALUES (?, ?, 1)', [n, 'u'])
          const got = (await router.query('u', 'SELECT id FROM orders WHERE id = ?', [
            n,
          ])) as unknown[]
          if (got.length !== 1) throw new Error('stale read')
        }),
    ],
    [
      'two-step: write, SELECT MASTER_GTID_WAIT, then SELECT (mysql2 pools)',
      async () => {
        const n = id++
        const [header] = (await primary.query('INSERT INTO orders VALUES (?, ?, 1)', [
          n,
          'u',
        ])) as any
        const gtid = header.stateChanges?.systemVariables?.last_gtid
        await replica.query('SELECT MASTER_GTID_WAIT(?, 2) AS w', [gtid])
        const [got] = (await replica.query('SELECT id FROM orders WHERE id = ?', [n])) as any
        if (got.length !== 1) throw new Error('stale read')
      },
    ],
  ] as const) {
    await sampleLatency(fn, { iterations: Math.min(N, 100), warmup: 0 }) // warm pools
    const before = await waitStatus(REPLICA_URL)
    const statsBefore = router.stats()
    proxy.reset()
    const s = await sampleLatency(fn, { iterations: N, warmup: 0 })
    const trips = proxy.requests()
    const after = await waitStatus(REPLICA_URL)
    const st = router.stats()
    const waits = name.startsWith('**') ? st.gtidWaits - statsBefore.gtidWaits : N
    rows.push([
      name,
      fmt(s.p50),
      fmt(s.p99),
      (trips / s.iterations).toFixed(2),
      ((after.count - before.count) / s.iterations).toFixed(2),
      name.startsWith('**')
        ? `${waits} waits, ${st.gtidWaitsSkipped - statsBefore.gtidWaitsSkipped} skipped, ${st.gtidWaitsTimedOut - statsBefore.gtidWaitsTimedOut} timeouts`
        : '',
    ])
    data[name] = { ...s, trips, gtidWaitCount: after.count - before.count }
  }
  report({
    package: 'sharding',
    name: 'ryw-round-trips',
    title: 'Read-your-writes replica read: round trips to the replica per read',
    columns: [
      'case',
      'p50 µs (write+read)',
      'p99 µs',
      'replica round trips / read (wire)',
      'Master_gtid_wait_count / read (server)',
      'router counters',
    ],
    rows,
    notes: [
      `${N} write+read pairs each. Round trips are requests counted by a TCP proxy in front of the replica; Master_gtid_wait_count is the replica's global counter (other users of the shared replica can add to it).`,
    ],
    data,
  })
  await router.close()
  await primary.end()
  await replica.end()
} finally {
  await proxy.close()
  await pairDb.drop()
}
