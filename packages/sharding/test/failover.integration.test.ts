import { createFaultProxy, type FaultProxy } from '@ballast/testkit'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import {
  createShardRouter,
  isShardingError,
  type ShardRouter,
  ShardTimeoutError,
  ShardUnavailableError,
} from '../src/index.js'
import { eventually, sleep, sql, type Topology, topology } from './fixtures.js'

let topo: Topology
const cleanups: Array<() => Promise<void>> = []
let nextId = 1

beforeAll(async () => {
  topo = await topology('shard_failover', 1, 0)
})

afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!()
})

afterAll(async () => {
  await topo?.cleanup()
})

async function proxyFor(url: string): Promise<{ proxy: FaultProxy; url: string }> {
  const u = new URL(url)
  const proxy = await createFaultProxy({ host: u.hostname, port: Number(u.port) })
  cleanups.push(() => proxy.close())
  return { proxy, url: proxy.url(url) }
}

function track(router: ShardRouter): ShardRouter {
  cleanups.unshift(() => router.close())
  return router
}

async function readLoad(router: ShardRouter, durationMs: number, workers: number) {
  let ok = 0
  const failures: unknown[] = []
  const deadline = Date.now() + durationMs
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      while (Date.now() < deadline) {
        try {
          await router.query(
            `w${w}`,
            'SELECT COUNT(*) AS n FROM orders WHERE user_id = ?',
            [`w${w}`],
            {
              consistency: 'eventual',
            },
          )
          ok++
        } catch (error) {
          failures.push(error)
        }
      }
    }),
  )
  return { ok, failures }
}

describe('a replica that fails under read load', () => {
  it('loses no read when the replica connections are cut and new ones refused, and takes it back when it returns', async () => {
    const { proxy, url } = await proxyFor(topo.pair[0]!.replica)
    const router = track(
      createShardRouter({
        shards: [{ id: 'pair', primary: topo.pair[0]!.primary, replicas: [url] }],
        healthCheckInterval: 100,
        connectTimeout: 500,
        outlierDetection: { consecutiveFailures: 2, baseEjectionTime: 300 },
      }),
    )
    await router.checkReplicas()
    const load = readLoad(router, 2000, 8)
    await sleep(400)
    proxy.refuse()
    proxy.cut()
    await sleep(700)
    proxy.restore()
    const { ok, failures } = await load
    expect(failures).toEqual([])
    expect(ok).toBeGreaterThan(100)
    expect(router.stats().fellBackToPrimary).toBeGreaterThan(0)
    await eventually(() => router.stats().replicas[0]!.available, 10_000)
    const before = router.stats().shards.pair!.replicaQueries
    await readLoad(router, 200, 2)
    expect(router.stats().shards.pair!.replicaQueries).toBeGreaterThan(before)
  })

  it('loses no read when the replica stops answering (black hole): reads time out there and go to the primary', async () => {
    const { proxy, url } = await proxyFor(topo.pair[0]!.replica)
    const router = track(
      createShardRouter({
        shards: [{ id: 'pair', primary: topo.pair[0]!.primary, replicas: [url] }],
        healthCheckInterval: 100,
        queryTimeout: 300,
        connectTimeout: 300,
        outlierDetection: { consecutiveFailures: 2, baseEjectionTime: 1000 },
      }),
    )
    await router.checkReplicas()
    const load = readLoad(router, 1500, 4)
    await sleep(300)
    proxy.blackhole()
    await sleep(700)
    proxy.restore()
    const { ok, failures } = await load
    expect(failures).toEqual([])
    expect(ok).toBeGreaterThan(20)
    expect(router.stats().fellBackToPrimary).toBeGreaterThan(0)
  })
})

describe('connections that fail while they connect', () => {
  it('never lets a mysql2 error event escape: black hole, cut and restore during the handshake, then serves again', async () => {
    const { proxy, url } = await proxyFor(topo.pair[0]!.primary)
    const router = track(
      createShardRouter({
        shards: [{ id: 'pair', primary: url }],
        connectTimeout: 150,
        queryTimeout: 400,
        connectionLimit: 4,
        primaryBreaker: false,
      }),
    )
    const escaped: unknown[] = []
    const onUncaught = (error: unknown) => escaped.push(error)
    process.on('uncaughtException', onUncaught)
    try {
      const outcomes: Array<Promise<unknown>> = []
      const burst = (n: number) => {
        for (let i = 0; i < n; i++) {
          outcomes.push(
            router.query(`k${i}`, 'SELECT 1 AS one', [], { use: 'primary' }).catch((e) => e),
          )
        }
      }
      for (let cycle = 0; cycle < 4; cycle++) {
        // New connections hang before the server greeting: mysql2's connect timer fires.
        proxy.blackhole()
        burst(12)
        await sleep(60 + cycle * 40)
        // Connections in the middle of their handshake are destroyed.
        proxy.cut()
        burst(12)
        await sleep(30)
        // Held connections are connected to the server late, after their client gave up.
        proxy.restore()
        burst(12)
        await sleep(200)
      }
      const settled = await Promise.all(outcomes)
      for (const outcome of settled) {
        if (Array.isArray(outcome)) continue
        // Every failure is typed and retryable: nothing raw from mysql2.
        expect(isShardingError(outcome) && outcome.retryable).toBe(true)
      }
      expect(settled.some((o) => !Array.isArray(o))).toBe(true)
      expect(proxy.stats().cut).toBeGreaterThan(0)
      await eventually(async () => {
        try {
          await router.query('after', 'SELECT 1 AS one', [], { use: 'primary' })
          return true
        } catch {
          return false
        }
      }, 5000)
      // Give late timers (connect timeouts, closes) time to fire before looking.
      await sleep(300)
      expect(escaped).toEqual([])
    } finally {
      process.off('uncaughtException', onUncaught)
    }
  })
})

describe('a primary that fails', () => {
  it('fails writes fast with a typed, retryable error within the configured timeout', async () => {
    const { proxy, url } = await proxyFor(topo.pair[0]!.primary)
    const router = track(
      createShardRouter({
        shards: [{ id: 'pair', primary: url }],
        queryTimeout: 500,
        connectTimeout: 300,
      }),
    )
    const write = () =>
      router.query('u', 'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, 1, 0)', [
        nextId++,
        'u',
      ])
    await write()

    proxy.refuse()
    proxy.cut()
    let started = Date.now()
    const refused = await write().catch((e: unknown) => e)
    expect(Date.now() - started).toBeLessThan(600)
    expect(refused).toBeInstanceOf(ShardUnavailableError)
    expect(refused).toMatchObject({
      code: 'E_SHARD_UNAVAILABLE',
      retryable: true,
      shard: 'pair',
      role: 'primary',
    })
    expect(router.stats().shards.pair!.failed).toBeGreaterThan(0)

    // An open connection that stops answering: the statement timeout fires.
    proxy.restore()
    await eventually(async () => {
      try {
        await write()
        return true
      } catch {
        return false
      }
    }, 5000)
    proxy.blackhole()
    started = Date.now()
    const hung = await write().catch((e: unknown) => e)
    const took = Date.now() - started
    expect(hung).toBeInstanceOf(ShardTimeoutError)
    expect(isShardingError(hung) && hung.retryable).toBe(true)
    expect(took).toBeGreaterThanOrEqual(450)
    expect(took).toBeLessThan(900)

    proxy.restore()
    await eventually(async () => {
      try {
        await write()
        return true
      } catch {
        return false
      }
    }, 5000)
  })

  it('opens the primary breaker after repeated connection failures, failing at once, and closes it when the primary is back', async () => {
    const { proxy, url } = await proxyFor(topo.pair[0]!.primary)
    const router = track(
      createShardRouter({
        shards: [{ id: 'pair', primary: url }],
        connectTimeout: 300,
        primaryBreaker: { volumeThreshold: 3, errorThresholdPercentage: 25, resetTimeout: 400 },
      }),
    )
    const write = () =>
      router.query('b', 'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, 1, 0)', [
        nextId++,
        'b',
      ])
    // A SQL error is the statement's fault, not the server's: it never opens the breaker.
    for (let i = 0; i < 5; i++)
      await expect(router.query('b', 'SELECT * FROM no_such_table')).rejects.toThrow()
    await write()
    proxy.refuse()
    proxy.cut()
    for (let i = 0; i < 4; i++) await expect(write()).rejects.toThrow(ShardUnavailableError)
    const started = Date.now()
    const open = await write().catch((e: unknown) => e)
    expect(Date.now() - started).toBeLessThan(50)
    expect(open).toBeInstanceOf(ShardUnavailableError)
    expect((open as Error).message).toMatch(/circuit breaker is open/)
    expect(open).toMatchObject({ retryable: true })
    proxy.restore()
    await eventually(async () => {
      try {
        await write()
        return true
      } catch {
        return false
      }
    }, 5000)
  })

  it('applies nothing of a transaction whose connection is cut half way', async () => {
    const { proxy, url } = await proxyFor(topo.pair[0]!.primary)
    const router = track(
      createShardRouter({
        shards: [{ id: 'pair', primary: url }],
        queryTimeout: 1000,
        connectTimeout: 300,
      }),
    )
    const user = 'tx-cut'
    const outcome = await router
      .transaction(user, async (tx) => {
        await tx.query('INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, 1, 0)', [
          nextId++,
          user,
        ])
        proxy.cut()
        await tx.query('INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, 2, 0)', [
          nextId++,
          user,
        ])
      })
      .catch((e: unknown) => e)
    expect(isShardingError(outcome)).toBe(true)
    expect(outcome).toMatchObject({ retryable: true })
    expect(router.stats().transactions.rolledBack).toBe(1)
    await sleep(200)
    expect(
      await sql(topo.pair[0]!.primary, 'SELECT * FROM orders WHERE user_id = ?', [user]),
    ).toEqual([])
    // The router keeps working once the connection is gone.
    await router.query(
      user,
      'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, 3, 0)',
      [nextId++, user],
    )
    expect(
      await sql(topo.pair[0]!.primary, 'SELECT total FROM orders WHERE user_id = ?', [user]),
    ).toHaveLength(1)
  })
})
