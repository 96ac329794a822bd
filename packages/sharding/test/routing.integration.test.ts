import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  CausalToken,
  createIdGenerator,
  createShardRouter,
  type ShardRouter,
  sqlIdentifier,
  UnsafeStatementError,
} from '../src/index.js'
import { sleep, sql, type Topology, topology } from './fixtures.js'

let topo: Topology
let router: ShardRouter
const SECRET = 'routing-test-secret-0123456789abcdef'

beforeAll(async () => {
  topo = await topology('shard_routing', 1, 1)
  router = createShardRouter({
    shards: [
      { id: 'pair', primary: topo.pair[0]!.primary, replicas: [topo.pair[0]!.replica] },
      { id: 'std', primary: topo.standard[0]! },
    ],
    healthCheckInterval: 200,
    secrets: SECRET,
  })
  await router.checkReplicas()
})

afterAll(async () => {
  await router?.close()
  await topo?.cleanup()
})

/** A key that lives on the given shard. */
function keyOn(shard: string, salt = ''): string {
  for (let i = 0; ; i++)
    if (router.shardFor(`user-${salt}${i}`) === shard) return `user-${salt}${i}`
}

let nextId = 1
const insert = (user: string, total = 10, note: string | null = null) =>
  router.query(
    user,
    'INSERT INTO orders (id, user_id, total, note, created_at) VALUES (?, ?, ?, ?, ?)',
    [nextId++, user, total, note, Date.now()],
  )

describe('routing against the primary/replica pair and the standard server', () => {
  it('writes to the key shard primary and reads plain SELECTs from its replica', async () => {
    const user = keyOn('pair')
    const before = router.stats().shards.pair!
    await insert(user)
    const rows = await router.query<Array<{ user_id: string }>>(
      user,
      'SELECT user_id FROM orders WHERE user_id = ?',
      [user],
    )
    expect(rows.map((r) => r.user_id)).toEqual([user])
    const after = router.stats().shards.pair!
    expect(after.primaryQueries - before.primaryQueries).toBe(1)
    expect(after.replicaQueries - before.replicaQueries).toBe(1)
    // The row is on the pair's database only, not on the other shard.
    expect(await sql(topo.standard[0]!, 'SELECT * FROM orders WHERE user_id = ?', [user])).toEqual(
      [],
    )
  })

  it('sends locking reads and use: primary to the primary', async () => {
    const user = keyOn('pair', 'lock')
    await insert(user)
    const before = router.stats().shards.pair!
    await router.query(user, 'SELECT * FROM orders WHERE user_id = ? FOR UPDATE', [user])
    await router.query(user, 'SELECT * FROM orders WHERE user_id = ? LOCK IN SHARE MODE', [user])
    await router.query(user, 'SELECT * FROM orders WHERE user_id = ?', [user], { use: 'primary' })
    await router.query(user, 'SELECT * FROM orders WHERE user_id = ?', [user], {
      consistency: 'strong',
    })
    const after = router.stats().shards.pair!
    expect(after.primaryQueries - before.primaryQueries).toBe(4)
    expect(after.replicaQueries - before.replicaQueries).toBe(0)
  })

  it('scopes hints to their async context: concurrent requests do not see each other hints', async () => {
    const user = keyOn('pair', 'ctx')
    await insert(user)
    const before = router.stats().shards.pair!
    await Promise.all([
      router.run({ use: 'primary' }, async () => {
        await sleep(20)
        await router.query(user, 'SELECT * FROM orders WHERE user_id = ?', [user])
      }),
      router.run({}, async () => {
        await sleep(10)
        await router.query(user, 'SELECT * FROM orders WHERE user_id = ?', [user])
      }),
    ])
    // After the context ends, nothing of it remains.
    await router.query(user, 'SELECT * FROM orders WHERE user_id = ?', [user])
    const after = router.stats().shards.pair!
    expect(after.primaryQueries - before.primaryQueries).toBe(1)
    expect(after.replicaQueries - before.replicaQueries).toBe(2)
  })

  it('takes each write GTID from its OK packet into the context causal token and the cookie string', async () => {
    const user = keyOn('pair', 'gtid')
    const cookie = await router.run({}, async () => {
      expect(router.causalToken().isEmpty).toBe(true)
      await insert(user)
      return router.signCausalToken()
    })
    expect(cookie).toMatch(/^pair:\d+-\d+-\d+~[\w-]{43}$/)
    const [{ p }] = await sql(topo.primaryServer, 'SELECT @@GLOBAL.gtid_binlog_pos AS p')
    expect(CausalToken.verify(cookie, SECRET)!.isCoveredBy('pair', p)).toBe(true)
    // The next request starts from the cookie and reads its own write from the replica.
    const rows = await router.run({ causalToken: cookie }, () =>
      router.query<unknown[]>(user, 'SELECT * FROM orders WHERE user_id = ?', [user]),
    )
    expect(rows).toHaveLength(1)
    // Anything else from the client is ignored (and counted), never an error.
    const refused = router.stats().causalTokensRefused
    expect(
      router.run(
        { causalToken: "pair:0-1-1'; DROP TABLE orders; --" },
        () => router.causalToken().isEmpty,
      ),
    ).toBe(true)
    expect(router.stats().causalTokensRefused).toBe(refused + 1)
  })

  it('pins a transaction to the primary, commits it whole and rolls it back on error', async () => {
    const user = keyOn('pair', 'tx')
    await router.transaction(user, async (tx) => {
      await tx.query('INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, 1, 0)', [
        nextId++,
        user,
      ])
      // A router.query to the same shard inside the callback joins the transaction.
      const seen = await router.query<unknown[]>(user, 'SELECT * FROM orders WHERE user_id = ?', [
        user,
      ])
      expect(seen).toHaveLength(1)
      await tx.query('INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, 2, 0)', [
        nextId++,
        user,
      ])
    })
    expect(
      await router.query<unknown[]>(user, 'SELECT * FROM orders WHERE user_id = ?', [user]),
    ).toHaveLength(2)
    const failed = router.transaction(user, async (tx) => {
      await tx.query('INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, 3, 0)', [
        nextId++,
        user,
      ])
      throw new Error('payment declined')
    })
    await expect(failed).rejects.toThrow('payment declined')
    expect(
      await sql(topo.pair[0]!.primary, 'SELECT * FROM orders WHERE user_id = ?', [user]),
    ).toHaveLength(2)
    const stats = router.stats().transactions
    expect(stats.committed).toBeGreaterThanOrEqual(1)
    expect(stats.rolledBack).toBeGreaterThanOrEqual(1)
  })

  it('routes an order id to its user shard with no lookup, through the embedded slot', async () => {
    const ids = createIdGenerator({ workerId: 1, slotBits: 12, workerBits: 4, sequenceBits: 6 })
    for (let i = 0; i < 20; i++) {
      const user = `buyer-${i}`
      const orderId = ids.next(user)
      await router.query(
        user,
        'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, 5, 0)',
        [orderId, user],
      )
      const rows = await router.query<Array<{ user_id: string }>>(
        ids.slotOf(orderId),
        'SELECT user_id FROM orders WHERE id = ?',
        [orderId],
        { consistency: 'strong' },
      )
      expect(rows.map((r) => r.user_id)).toEqual([user])
    }
  })

  it('keeps SQL injection through values, keys, ids and identifiers inert', async () => {
    const evil = "x'); DROP TABLE orders; -- "
    const user = keyOn('pair', 'evil')
    await insert(user, 1, evil)
    const rows = await router.query<Array<{ note: string }>>(
      user,
      'SELECT note FROM orders WHERE note = ?',
      [evil],
      {
        use: 'primary',
      },
    )
    expect(rows.map((r) => r.note)).toEqual([evil])
    // A key made of SQL is only a key.
    await insert('1 OR 1=1; DROP TABLE orders', 1, 'k')
    expect(
      await router.query<unknown[]>(
        '1 OR 1=1; DROP TABLE orders',
        'SELECT * FROM orders WHERE user_id = ?',
        ['1 OR 1=1; DROP TABLE orders'],
        {
          use: 'primary',
        },
      ),
    ).toHaveLength(1)
    // A value with SQL in it is one escaped string: it matches nothing.
    for (const value of ["' OR '1'='1", '0 OR 1=1', "\\' OR 1=1 -- "]) {
      expect(
        await router.query<unknown[]>(
          user,
          'SELECT * FROM orders WHERE user_id = ? OR id = ?',
          [value, value],
          { use: 'primary' },
        ),
        value,
      ).toHaveLength(0)
    }
    await expect(router.query(user, `SELECT 1; DROP TABLE orders`)).rejects.toThrow(
      UnsafeStatementError,
    )
    expect(() => sqlIdentifier('orders; DROP TABLE orders')).toThrow(UnsafeStatementError)
    // Both tables are still there.
    expect(
      (await sql(topo.pair[0]!.primary, 'SELECT COUNT(*) AS n FROM orders'))[0].n,
    ).toBeGreaterThan(0)
    expect(
      (await sql(topo.standard[0]!, 'SELECT COUNT(*) AS n FROM orders'))[0].n,
    ).toBeGreaterThanOrEqual(0)
  })

  it('reports the replica as healthy with its measured lag', async () => {
    await router.checkReplicas()
    const [replica] = router.stats().replicas
    expect(replica).toMatchObject({
      id: 'pair/replica-0',
      shard: 'pair',
      healthy: true,
      ejected: false,
      available: true,
    })
    expect(replica!.lagMs).toBeGreaterThanOrEqual(0)
    expect(replica!.lagMs).toBeLessThan(10_000)
  })
})
