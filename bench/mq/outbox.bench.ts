/**
 * Outbox relay throughput: rows enqueued in MariaDB, claimed with SKIP LOCKED, published with
 * confirms and marked sent, in rows/s, for one and for three relays, with rows spread over 50
 * aggregates (ordered per aggregate: a relay defers rows whose earlier rows another relay holds)
 * and without aggregates.
 *
 * Run: cd /work/main && source scripts/env.sh && pnpm exec tsx --conditions=@ballast/source bench/mq/outbox.bench.ts
 */
import { createBroker, createOutbox, createOutboxRelay } from '@ballast/mq'
import { amqpUrl, mysqlUrl, uniqueName } from '@ballast/testkit'
import amqp from 'amqplib'
import mysql from 'mysql2/promise'
import { fmtInt, isSmoke, report } from '../harness.js'

const ROWS = isSmoke() ? 200 : 10_000
const url = await amqpUrl()
const pool = mysql.createPool({ uri: await mysqlUrl(), connectionLimit: 8 })
const queue = uniqueName('bench_outbox')
const admin = await amqp.connect(url)
const adminChannel = await admin.createChannel()
await adminChannel.assertQueue(queue, { durable: true })
const broker = createBroker({ urls: url, name: 'bench-outbox' })
const rows: (string | number)[][] = []

const cases: Array<{ relays: number; batchSize: number; aggregates: number }> = [
  { relays: 1, batchSize: 100, aggregates: 50 },
  { relays: 1, batchSize: 500, aggregates: 50 },
  { relays: 3, batchSize: 500, aggregates: 50 },
  { relays: 1, batchSize: 500, aggregates: 0 },
  { relays: 3, batchSize: 500, aggregates: 0 },
]
for (const { relays, batchSize, aggregates } of cases) {
  const table = uniqueName('bench_outbox')
  const outbox = createOutbox({ table })
  await outbox.createTable(pool)
  const values = Array.from({ length: ROWS }, (_, i) => i)
  const conn = await pool.getConnection()
  for (let i = 0; i < ROWS; i += 500) {
    await conn.beginTransaction()
    for (const n of values.slice(i, i + 500)) {
      await outbox.enqueue(
        conn,
        '',
        queue,
        { n, pad: 'x'.repeat(200) },
        aggregates > 0 ? { aggregateId: `a${n % aggregates}` } : {},
      )
    }
    await conn.commit()
  }
  conn.release()
  const t0 = process.hrtime.bigint()
  const running = Array.from({ length: relays }, () =>
    createOutboxRelay({ pool, broker, outbox, batchSize, pollInterval: 5 }),
  )
  while (running.reduce((s, r) => s + r.stats().sent, 0) < ROWS) {
    if (process.hrtime.bigint() - t0 > 300_000_000_000n) throw new Error('relays stalled for 5 min')
    await new Promise((r) => setTimeout(r, 5))
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9
  await Promise.all(running.map((r) => r.close()))
  const deferred = running.reduce((s, r) => s + r.stats().deferred, 0)
  rows.push([relays, batchSize, aggregates || 'none', fmtInt(ROWS / seconds), fmtInt(deferred)])
  await pool.query(`DROP TABLE \`${table}\``)
  await adminChannel.purgeQueue(queue)
}
report({
  package: 'mq',
  name: 'outbox',
  title: `Outbox relay: ${ROWS} rows of ~220 B enqueued, then relayed (claim, publish with confirms, mark sent)`,
  columns: ['relays', 'batch size', 'aggregates', 'rows/s', 'rows deferred'],
  rows,
})
await broker.close()
await adminChannel.deleteQueue(queue)
await admin.close()
await pool.end()
