/**
 * Outbox relay throughput: rows enqueued in MariaDB, claimed with SKIP LOCKED, published with
 * confirms and marked sent, in rows/s, for one and for three relays.
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

for (const relays of [1, 3]) {
  for (const batchSize of [100, 500]) {
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
          { aggregateId: `a${n % 50}` },
        )
      }
      await conn.commit()
    }
    conn.release()
    const t0 = process.hrtime.bigint()
    const running = Array.from({ length: relays }, () =>
      createOutboxRelay({ pool, broker, outbox, batchSize, pollInterval: 5 }),
    )
    while (running.reduce((s, r) => s + r.stats().sent, 0) < ROWS)
      await new Promise((r) => setTimeout(r, 5))
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9
    await Promise.all(running.map((r) => r.close()))
    rows.push([relays, batchSize, fmtInt(ROWS / seconds)])
    await pool.query(`DROP TABLE \`${table}\``)
    await adminChannel.purgeQueue(queue)
  }
}
report({
  package: 'mq',
  name: 'outbox',
  title: `Outbox relay: ${ROWS} rows (50 aggregates) enqueued, then relayed (claim, publish with confirms, mark sent)`,
  columns: ['relays', 'batch size', 'rows/s'],
  rows,
})
await broker.close()
await adminChannel.deleteQueue(queue)
await admin.close()
await pool.end()
