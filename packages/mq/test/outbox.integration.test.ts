import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { createIdempotency } from '@ballast/resilience'
import {
  amqpNames,
  amqpUrl,
  createFaultProxy,
  mysqlUrl,
  redisKeyspace,
  redisUrl,
  uniqueName,
} from '@ballast/testkit'
import { Redis } from 'ioredis'
import mysql from 'mysql2/promise'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  type Broker,
  createBroker,
  createInbox,
  createOutbox,
  createOutboxRelay,
  InvalidArgumentError,
  InvalidMessageError,
  idempotencyDeduplicator,
  type Outbox,
  OutboxPublishTimeoutError,
} from '../src/index.js'
import { closeAll, within } from './support/bounded.js'

const names = amqpNames('mqoutbox')
let url: string
let dbUrl: string
let pool: mysql.Pool
let redis: Redis
let keyspace: ReturnType<typeof redisKeyspace>
const tables: string[] = []
const brokers: Broker[] = []

beforeAll(async () => {
  url = await amqpUrl()
  dbUrl = await mysqlUrl()
  pool = mysql.createPool({ uri: dbUrl, connectionLimit: 10 })
  redis = new Redis(await redisUrl())
  keyspace = redisKeyspace(redis, 'mqoutbox')
})
afterAll(async () => {
  // bounded, and tables, keys and queues are removed even when a close fails
  await closeAll(brokers.map((b) => () => b.close()))
  await closeAll(
    [
      ...tables.map((t) => () => pool.query(`DROP TABLE IF EXISTS \`${t}\``)),
      () => keyspace.cleanup(),
      () => names.cleanup(),
    ],
    10_000,
  )
  await closeAll([() => pool.end()])
  redis.disconnect()
}, 30_000)

function until(check: () => boolean, timeoutMs: number): Promise<void> {
  const started = Date.now()
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (check()) resolve()
      else if (Date.now() - started > timeoutMs) reject(new Error('condition not met in time'))
      else setTimeout(tick, 25)
    }
    tick()
  })
}

async function setup(label: string) {
  const table = uniqueName(label)
  tables.push(table)
  const outbox = createOutbox({ table })
  await outbox.createTable(pool)
  const queue = names.queue(label)
  const broker = createBroker({
    urls: url,
    shutdownTimeout: 2000,
    topology: { queues: [{ name: queue, retry: false, deadLetter: false }] },
  })
  brokers.push(broker)
  return { table, outbox, queue, broker }
}

/** Enqueues `{ n }` for n < count in one committed transaction. */
async function enqueueCommitted(outbox: Outbox, queue: string, count: number): Promise<void> {
  const conn = await pool.getConnection()
  await conn.beginTransaction()
  for (let n = 0; n < count; n++) await outbox.enqueue(conn, '', queue, { n })
  await conn.commit()
  conn.release()
}

/** Consumes `queue` through the Redis idempotency store; counts how often each `n` was handled. */
async function countIdempotently(
  broker: Broker,
  queue: string,
  prefix: string,
): Promise<Map<number, number>> {
  const handled = new Map<number, number>()
  await broker.consume(
    queue,
    (m) => {
      const n = (m.body as { n: number }).n
      handled.set(n, (handled.get(n) ?? 0) + 1)
    },
    { idempotency: idempotencyDeduplicator(createIdempotency({ redis, prefix, lease: 5000 })) },
  )
  return handled
}

describe('Outbox and relay', () => {
  it('publishes what committed, never what rolled back', async () => {
    const { outbox, queue, broker } = await setup('commit')
    for (const commit of [true, false, true]) {
      const conn = await pool.getConnection()
      await conn.beginTransaction()
      await outbox.enqueue(conn, '', queue, { commit })
      if (commit) await conn.commit()
      else await conn.rollback()
      conn.release()
    }
    const relay = createOutboxRelay({ pool, broker, outbox, pollInterval: 50 })
    const got: unknown[] = []
    await broker.consume(queue, (m) => {
      got.push(m.body)
    })
    await until(() => got.length === 2, 10_000)
    await new Promise((r) => setTimeout(r, 300))
    await relay.close()
    expect(got).toEqual([{ commit: true }, { commit: true }])
    expect(relay.stats().sent).toBe(2)
  })

  it('runs three relays at once without publishing a row twice, in order per aggregate', async () => {
    const { outbox, queue, broker } = await setup('relays')
    const N = 1500
    const conn = await pool.getConnection()
    for (let i = 0; i < N; i += 100) {
      await conn.beginTransaction()
      for (let j = i; j < i + 100; j++) {
        await outbox.enqueue(
          conn,
          '',
          queue,
          { n: j, aggregate: `a${j % 7}` },
          { aggregateId: `a${j % 7}` },
        )
      }
      await conn.commit()
    }
    conn.release()
    const seen = new Map<number, number>()
    const perAggregate = new Map<string, number[]>()
    await broker.consume(
      queue,
      (m) => {
        const { n, aggregate } = m.body as { n: number; aggregate: string }
        seen.set(n, (seen.get(n) ?? 0) + 1)
        perAggregate.set(aggregate, [...(perAggregate.get(aggregate) ?? []), n])
      },
      { prefetch: 1 },
    )
    const relays = [0, 1, 2].map(() =>
      createOutboxRelay({ pool, broker, outbox, batchSize: 50, pollInterval: 20 }),
    )
    await until(() => seen.size === N, 30_000)
    await new Promise((r) => setTimeout(r, 300))
    await Promise.all(relays.map((r) => r.close()))
    expect([...seen.values()].filter((c) => c > 1)).toEqual([])
    for (const ns of perAggregate.values()) expect(ns).toEqual([...ns].sort((a, b) => a - b))
    expect(relays.reduce((s, r) => s + r.stats().sent, 0)).toBe(N)
    expect(relays.filter((r) => r.stats().sent > 0).length).toBeGreaterThan(1)
  })

  it('publishes again after a relay is killed between publish and mark-sent; the idempotent consumer drops the duplicate', async () => {
    const { table, outbox, queue, broker } = await setup('killed')
    await enqueueCommitted(outbox, queue, 20)
    const handled = await countIdempotently(broker, queue, keyspace.prefix)
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        '--conditions=@ballast/source',
        fileURLToPath(new URL('./support/relayChild.ts', import.meta.url)),
        url,
        dbUrl,
        table,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    )
    const exited = new Promise((r) => child.once('exit', r))
    try {
      await within(
        new Promise<void>((resolve, reject) => {
          child.stdout.on('data', (d: Buffer) => d.toString().includes('published') && resolve())
          child.once('exit', (code) => reject(new Error(`relay child exited early (${code})`)))
        }),
        20_000,
        'the relay child to publish',
      )
      await until(() => handled.size === 20, 10_000)
    } finally {
      child.kill('SIGKILL')
      await within(exited, 5000, 'the killed relay child to exit')
    }
    const [before] = (await pool.query(
      `SELECT COUNT(*) AS c FROM \`${table}\` WHERE sent_at IS NULL`,
    )) as [Array<{ c: number }>, unknown]
    expect(Number(before[0]?.c)).toBe(20)
    const relay = createOutboxRelay({ pool, broker, outbox, pollInterval: 20 })
    await until(() => relay.stats().sent === 20, 10_000)
    await until(() => broker.stats().duplicates === 20, 10_000)
    await relay.close()
    expect([...handled.values()].filter((c) => c !== 1)).toEqual([])
    expect(handled.size).toBe(20)
  })
})

describe('Outbox relay against a broker that stops answering', () => {
  it('rolls a batch back after publishTimeout (rows unsent, unlocked, no attempt counted), claims no more rows while it is unconfirmed, then publishes every row once the broker answers', async () => {
    const u = new URL(url)
    const proxy = await createFaultProxy({ host: u.hostname, port: Number(u.port || 5672) })
    try {
      const { table, outbox, queue, broker: direct } = await setup('stalled')
      const broker = createBroker({
        urls: proxy.url(url),
        shutdownTimeout: 2000,
        reconnect: { initialDelay: 50, maxDelay: 200 },
        topology: { queues: [{ name: queue, retry: false, deadLetter: false }] },
      })
      brokers.push(broker)
      await broker.ready()
      await enqueueCommitted(outbox, queue, 10)
      const handled = await countIdempotently(direct, queue, `${keyspace.prefix}stalled:`)

      expect(() =>
        createOutboxRelay({ pool, broker, outbox, publishTimeout: 0, autoStart: false }),
      ).toThrow(/invalid option "publishTimeout": expected a positive duration/)
      proxy.blackhole() // the publishes leave, no confirm comes back
      const stalled = createOutboxRelay({
        pool,
        broker,
        outbox,
        publishTimeout: 300,
        pollInterval: 20,
      })
      const errors: unknown[] = []
      stalled.on('relay-failed', ({ error }) => errors.push(error))
      await until(() => errors.length >= 3, 10_000)
      await within(stalled.close(), 5000, 'the stalled relay to close')
      expect(errors.every((e) => e instanceof OutboxPublishTimeoutError)).toBe(true)
      expect((errors[0] as OutboxPublishTimeoutError).code).toBe('E_MQ_OUTBOX_PUBLISH_TIMEOUT')
      // later polls wait for the stalled batch instead of publishing its rows again
      expect(broker.stats().published).toBe(10)
      expect(stalled.stats().sent).toBe(0)
      const [rows] = (await pool.query(
        `SELECT COUNT(*) AS unsent, SUM(attempts) AS attempts FROM \`${table}\` WHERE sent_at IS NULL`,
      )) as [Array<{ unsent: number; attempts: number }>, unknown]
      expect(Number(rows[0]?.unsent)).toBe(10)
      expect(Number(rows[0]?.attempts)).toBe(0)
      // the rolled-back batch holds no row lock
      const other = await pool.getConnection()
      try {
        await other.beginTransaction()
        const [locked] = (await other.query(`SELECT id FROM \`${table}\` FOR UPDATE NOWAIT`)) as [
          unknown[],
          unknown,
        ]
        expect(locked).toHaveLength(10)
      } finally {
        await other.rollback()
        other.release()
      }

      proxy.restore() // the connection that lost bytes closes; the broker reconnects
      const relay = createOutboxRelay({ pool, broker, outbox, pollInterval: 20 })
      await until(() => relay.stats().sent === 10, 15_000)
      await until(() => handled.size === 10, 10_000)
      await relay.close()
      expect([...handled.values()].filter((c) => c !== 1)).toEqual([]) // processed twice: 0
      expect([...handled.keys()].sort((a, b) => a - b)).toEqual([...Array(10).keys()]) // lost: 0
    } finally {
      await proxy.close()
    }
  })
})

describe('Inbox', () => {
  it('handles a message once in the handler transaction, however often it is delivered, and rolls back a failure', async () => {
    const table = uniqueName('inbox')
    const effects = uniqueName('effects')
    tables.push(table, effects)
    await pool.query(`CREATE TABLE \`${effects}\` (message_id VARCHAR(128) NOT NULL)`)
    const queue = names.queue('inbox')
    const broker = createBroker({
      urls: url,
      shutdownTimeout: 2000,
      topology: { queues: [{ name: queue, retry: { delays: [100] }, deadLetter: false }] },
    })
    names.queue('inbox.retry.100ms')
    brokers.push(broker)
    const inbox = createInbox({ pool, table, consumer: 'billing' })
    await inbox.createTable(pool)
    let failOnce = true
    await broker.consume(
      queue,
      inbox.handler(async (m, conn) => {
        await conn.query(`INSERT INTO \`${effects}\` (message_id) VALUES (?)`, [m.messageId])
        if ((m.body as { fail?: boolean }).fail && failOnce) {
          failOnce = false
          throw new Error('transient')
        }
      }),
    )
    await broker.publish('', queue, { n: 1 }, { messageId: 'same-id' })
    await broker.publish('', queue, { n: 1 }, { messageId: 'same-id' })
    await broker.publish('', queue, { fail: true }, { messageId: 'fails-once' })
    await until(() => inbox.stats().handled === 2 && inbox.stats().duplicates === 1, 10_000)
    const [rows] = (await pool.query(
      `SELECT message_id FROM \`${effects}\` ORDER BY message_id`,
    )) as [Array<{ message_id: string }>, unknown]
    expect(rows.map((r) => r.message_id)).toEqual(['fails-once', 'same-id'])
  })
})

describe('Outbox poison rows', () => {
  it('fails a row the relay cannot publish (headers that are not JSON) alone, with InvalidMessageError, marked for an operator at once; the rows around it are sent', async () => {
    const { table, outbox, queue, broker } = await setup('poison')
    await enqueueCommitted(outbox, queue, 1)
    await pool.query(
      `INSERT INTO \`${table}\` (message_id, exchange, routing_key, content, content_type, headers) VALUES ('poison-1', '', ?, '{}', 'application/json', '{not json')`,
      [queue],
    )
    const conn = await pool.getConnection()
    await outbox.enqueue(conn, '', queue, { n: 1 })
    conn.release()
    const relay = createOutboxRelay({ pool, broker, outbox, autoStart: false, maxAttempts: 5 })
    const failed: Array<{ messageId: string; error: unknown }> = []
    relay.on('row-failed', (e) => failed.push(e))
    expect(await within(relay.runOnce(), 10_000, 'relay.runOnce()')).toBe(2)
    expect(failed).toHaveLength(1)
    expect(failed[0]?.messageId).toBe('poison-1')
    expect(failed[0]?.error).toBeInstanceOf(InvalidMessageError)
    const [rows] = (await pool.query(
      `SELECT message_id, attempts, last_error, sent_at IS NOT NULL AS sent FROM \`${table}\` ORDER BY id`,
    )) as [
      Array<{ message_id: string; attempts: number; last_error: string | null; sent: number }>,
      unknown,
    ]
    expect(rows.map((r) => Number(r.sent))).toEqual([1, 0, 1])
    // no retry can help: left for an operator now, not re-published maxAttempts times
    expect(rows[1]).toMatchObject({ message_id: 'poison-1', attempts: 5 })
    expect(rows[1]?.last_error).toContain('headers')
    expect(await within(relay.runOnce(), 10_000, 'relay.runOnce()')).toBe(0)
    expect(failed).toHaveLength(1)
    await relay.close()
  })

  it('enqueue refuses with a typed error, writing nothing, what the relay could never publish: an id over the column, a type over 255 bytes, an exchange over 255 bytes', async () => {
    const { table, outbox, queue } = await setup('refuse')
    const conn = await pool.getConnection()
    try {
      await expect(
        outbox.enqueue(conn, '', queue, { n: 0 }, { messageId: 'm'.repeat(129) }),
      ).rejects.toBeInstanceOf(InvalidMessageError)
      await expect(
        outbox.enqueue(conn, '', queue, { n: 0 }, { type: 'é'.repeat(128) }),
      ).rejects.toBeInstanceOf(InvalidMessageError)
      await expect(outbox.enqueue(conn, 'e'.repeat(256), queue, { n: 0 })).rejects.toBeInstanceOf(
        InvalidArgumentError,
      )
      await expect(
        outbox.enqueue(conn, '', queue, { n: 0 }, { messageId: 7 as unknown as string }),
      ).rejects.toBeInstanceOf(InvalidMessageError)
    } finally {
      conn.release()
    }
    const [rows] = (await pool.query(`SELECT COUNT(*) AS n FROM \`${table}\``)) as [
      Array<{ n: number }>,
      unknown,
    ]
    expect(Number(rows[0]?.n)).toBe(0)
  })
})
