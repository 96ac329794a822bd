import amqp from 'amqplib'
import { Cluster, Redis } from 'ioredis'
import mysql from 'mysql2/promise'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  amqpNames,
  amqpUrl,
  disposables,
  mysqlUrl,
  redisClusterNodes,
  redisKeyspace,
  redisUrl,
  tempDatabase,
} from '../src/index.js'

const bin = disposables()
afterAll(() => bin.cleanup())

describe('redisKeyspace', () => {
  let redis: Redis
  beforeAll(async () => {
    redis = bin.use(new Redis(await redisUrl()))
  })

  it('deletes every key under its prefix and nothing else', async () => {
    const mine = redisKeyspace(redis, 'mine')
    const theirs = redisKeyspace(redis, 'theirs')
    bin.defer(() => theirs.cleanup())
    expect(mine.prefix).toMatch(/^mine_[a-z0-9_]+:$/)
    expect(mine.key('a')).toBe(`${mine.prefix}a`)
    const pipeline = redis.pipeline()
    for (let i = 0; i < 2500; i++) pipeline.set(mine.key(`k${i}`), 'v')
    pipeline.hset(mine.key('hash'), 'f', 'v')
    pipeline.set(theirs.key('k'), 'keep')
    await pipeline.exec()

    expect(await mine.cleanup()).toBe(2501)
    expect(await redis.exists(mine.key('k0'), mine.key('k2499'), mine.key('hash'))).toBe(0)
    expect(await redis.get(theirs.key('k'))).toBe('keep')
    expect(await theirs.cleanup()).toBe(1)
  })

  it('works through a client with a keyPrefix, and leaves the rest of that prefix alone', async () => {
    const app = redisKeyspace(redis, 'app')
    bin.defer(() => app.cleanup())
    const prefixed = bin.use(new Redis(await redisUrl(), { keyPrefix: app.prefix }))
    const space = redisKeyspace(prefixed, 'inner')
    await prefixed.set(space.key('a'), '1')
    await prefixed.set(space.key('b'), '2')
    await prefixed.set('outside', '3')
    expect(await redis.exists(`${app.prefix}${space.key('a')}`)).toBe(1)

    expect(await space.cleanup()).toBe(2)
    expect(
      await redis.exists(`${app.prefix}${space.key('a')}`, `${app.prefix}${space.key('b')}`),
    ).toBe(0)
    expect(await prefixed.get('outside')).toBe('3')
    expect(await app.cleanup()).toBe(1)
  })

  it('deletes keys on every master of a Redis Cluster', async () => {
    const cluster = bin.use(new Cluster(await redisClusterNodes()))
    const space = redisKeyspace(cluster, 'cluster')
    const keys = Array.from({ length: 60 }, (_, i) => space.key(`k${i}`))
    await Promise.all(keys.map((key) => cluster.set(key, 'v')))
    const holders = await Promise.all(
      cluster.nodes('master').map(async (node) => (await node.dbsize()) > 0),
    )
    expect(holders.filter(Boolean).length).toBeGreaterThan(1)

    expect(await space.cleanup()).toBe(60)
    const left = await Promise.all(keys.map((key) => cluster.exists(key)))
    expect(left.reduce((a, b) => a + b, 0)).toBe(0)
  })
})

describe('tempDatabase', () => {
  it('creates a database of its own and drops it on cleanup', async () => {
    const db = await tempDatabase(await mysqlUrl(), 'orders')
    expect(db.name).toMatch(/^orders_[a-z0-9_]+$/)
    expect(new URL(db.url).pathname).toBe(`/${db.name}`)

    const connection = await mysql.createConnection({ uri: db.url })
    bin.defer(() => connection.end())
    await connection.query('CREATE TABLE t (id INT PRIMARY KEY)')
    await connection.query('INSERT INTO t VALUES (1)')
    const [rows] = await connection.query('SELECT DATABASE() AS db, COUNT(*) AS n FROM t')
    expect(rows).toEqual([{ db: db.name, n: 1 }])

    await db.cleanup()
    const [left] = await connection.query('SHOW DATABASES LIKE ?', [db.name])
    expect(left).toEqual([])
    await db.cleanup()
  })
})

describe('amqpNames', () => {
  it('hands out prefixed names and deletes the queues and exchanges on cleanup', async () => {
    const names = amqpNames('orders')
    const queue = names.queue('work')
    const exchange = names.exchange('events')
    const neverDeclared = names.queue('never')
    expect(queue).toBe(`${names.prefix}.work`)
    expect(exchange).toBe(`${names.prefix}.events`)
    expect(names.queues).toEqual([queue, neverDeclared])
    expect(names.exchanges).toEqual([exchange])

    const connection = await amqp.connect(await amqpUrl())
    bin.defer(() => connection.close())
    const channel = await connection.createChannel()
    await channel.assertQueue(queue)
    await channel.assertExchange(exchange, 'fanout')
    await channel.close()

    await names.cleanup()

    const gone = async (check: (c: amqp.Channel) => Promise<unknown>) => {
      const probe = await connection.createChannel()
      probe.on('error', () => {})
      const error = await check(probe).catch((e: unknown) => e)
      return (error as { code?: number } | undefined)?.code
    }
    expect(await gone((c) => c.checkQueue(queue))).toBe(404)
    expect(await gone((c) => c.checkExchange(exchange))).toBe(404)
    expect(names.queues).toEqual([])
  })
})
