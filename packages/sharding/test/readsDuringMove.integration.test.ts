import {
  createFaultProxy,
  mysqlUrl,
  type PrivateMariadbPair,
  startPrivateMariadbPair,
  type TempDatabase,
  tempDatabase,
} from '@ballast/testkit'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  type CausalToken,
  createShardRouter,
  createSlotMapStore,
  createSlotMover,
  InvalidArgumentError,
  ScatterGatherError,
  type ShardConfig,
  type ShardRouter,
  ShardUnavailableError,
  type SlotMap,
  type SlotMapStore,
  type SlotMover,
  type SlotSpan,
  UnknownShardError,
} from '../src/index.js'
import {
  inSpan,
  keysWhere,
  ORDERS_DDL,
  ownerIn,
  replicaCaughtUp,
  spanPicker,
  sql,
  stopSqlThread,
} from './fixtures.js'

// Reads while slots move from s1 to s2, both on a PRIVATE primary/replica pair (two databases of
// one primary, each replicated; testkit's startPrivateMariadbPair, since the test stops the
// replica's SQL thread and the shared 3307/3308 pair serves other test files at the same time):
// `fresh` polls the map every 30 ms, `stale` never polls (its lease is an hour) and reads the map
// only when told to. Health checks are off, so a read-your-writes read goes to a replica and
// waits for its token there (no sample tells the router the replica lags).

let pair: PrivateMariadbPair
/** Per shard, the URLs of its database on the pair's primary and replica. */
const topo: { pair: Array<{ primary: string; replica: string }> } = { pair: [] }
let meta: TempDatabase
let shards: ShardConfig[]
let moverStore: SlotMapStore
let freshStore: SlotMapStore
let staleStore: SlotMapStore
let fresh: ShardRouter
let stale: ShardRouter
let mover: SlotMover

const LEASE = 300

beforeAll(async () => {
  pair = await startPrivateMariadbPair({ semiSync: false })
  for (const name of ['reads_s1', 'reads_s2', 'reads_s3']) {
    await sql(pair.primary.url, `CREATE DATABASE ${name}`)
    topo.pair.push({
      primary: inDatabase(pair.primary.url, name),
      replica: inDatabase(pair.replica.url, name),
    })
    await sql(topo.pair.at(-1)!.primary, ORDERS_DDL)
  }
  await replicaCaughtUp(pair.primary.url, pair.replica.url)
  meta = await tempDatabase(await mysqlUrl(), 'reads_move_meta')
  shards = [
    { id: 's1', primary: topo.pair[0]!.primary, replicas: [topo.pair[0]!.replica] },
    { id: 's2', primary: topo.pair[1]!.primary, replicas: [topo.pair[1]!.replica] },
  ]
  moverStore = createSlotMapStore({ server: meta.url, interval: 30, lease: LEASE })
  await moverStore.initialize({ shards: [{ id: 's1' }, { id: 's2' }] })
  freshStore = createSlotMapStore({ server: meta.url, interval: 30, lease: LEASE })
  await freshStore.load()
  staleStore = createSlotMapStore({ server: meta.url, interval: 0, lease: '1h' })
  await staleStore.load()
  const routing = { shards, healthCheckInterval: 0, gtidWaitTimeout: 100 }
  fresh = createShardRouter({ ...routing, slotMap: freshStore })
  stale = createShardRouter({ ...routing, slotMap: staleStore })
  // s3: a shard the routers are not given (added to the deployment, the routers not yet restarted).
  mover = createSlotMover({
    store: moverStore,
    shards: [...shards, { id: 's3', primary: topo.pair[2]!.primary }],
    tables: [{ table: 'orders', key: 'user_id' }],
    fenceDelay: LEASE,
    chunkRows: 5,
  })
})

afterAll(async () => {
  await mover?.close()
  await Promise.all([fresh?.close(), stale?.close()])
  await Promise.all([moverStore?.close(), freshStore?.close(), staleStore?.close()])
  await meta?.cleanup()
  await pair?.close()
})

function inDatabase(url: string, name: string): string {
  const u = new URL(url)
  u.pathname = `/${name}`
  return u.toString()
}

/** A span of up to `size` slots (at least `least`) owned by s1 and not used by another test. */
const spanOnS1 = spanPicker('s1')

/** `count` user keys whose slots are in `span`, or (with `outside`) not in it. */
const keysOf = (span: SlotSpan, count: number, salt: string, outside = false) =>
  keysWhere(count, salt, (slot) => inSpan(span, slot) !== outside)

/** `count` user keys of slots shard `shard` owns in `map`. */
const keysOn = (map: SlotMap, shard: string, count: number, salt: string) =>
  keysWhere(count, salt, (slot) => ownerIn(map, slot) === shard)

let nextId = 1

interface Order {
  id: number
  user: string
  total: number
}

/** Writes orders through `router` (ids in the order given) and returns them. */
async function place(router: ShardRouter, users: string[], total: (i: number) => number) {
  const orders: Order[] = []
  for (const [i, user] of users.entries()) {
    const order = { id: nextId++, user, total: total(i) }
    await router.query(
      user,
      'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, ?, ?)',
      [order.id, user, order.total, Date.now()],
    )
    orders.push(order)
  }
  return orders
}

/** How many rows of `ids` each shard's primary holds (the copies included). */
async function copiesOf(ids: number[]): Promise<number> {
  let n = 0
  for (const shard of topo.pair) {
    const [row] = await sql(shard.primary, 'SELECT COUNT(*) AS n FROM orders WHERE id IN (?)', [
      ids,
    ])
    n += Number(row.n)
  }
  return n
}

describe('all() while slots move', () => {
  it('counts every order once (rows, ORDER BY with LIMIT, COUNT and SUM) during the copy, after the cut-over and after purge; a stale router too', async () => {
    const span = spanOnS1(moverStore.current(), 16, 4)
    const inside = keysOf(span, 12, 'scatter')
    const map = moverStore.current()
    const outside = [...keysOn(map, 's2', 6, 'scatter-s2'), ...keysOn(map, 's1', 6, 'scatter-s1')]
    // The moving orders get the lowest ids, then the target's own: the target's copies fill the
    // head of its ORDER BY id.
    let orders = [
      ...(await place(fresh, inside, (i) => 10 + i)),
      ...(await place(fresh, outside, (i) => 100 + i)),
    ]
    const ids = orders.map((o) => o.id)
    const users = orders.map((o) => o.user)

    const check = async (router: ShardRouter, expected: Order[], stage: string) => {
      const rows = await router.all<{ id: number; user_id: string }>(
        'SELECT id, user_id FROM orders WHERE user_id IN (?)',
        [users],
        undefined,
        { slotKey: 'user_id' },
      )
      const want = expected.map((o) => o.id).sort((a, b) => a - b)
      expect(
        rows.rows.map((r) => Number(r.id)).sort((a, b) => a - b),
        stage,
      ).toEqual(want)
      const page = await router.all<{ id: number }>(
        'SELECT id, user_id FROM orders WHERE user_id IN (?) ORDER BY id',
        [users],
        { orderBy: 'id', limit: 6, offset: 3 },
        { slotKey: 'user_id' },
      )
      expect(
        page.rows.map((r) => Number(r.id)),
        stage,
      ).toEqual(want.slice(3, 9))
      const totals = await router.all<{ n: number; s: string }>(
        'SELECT user_id, COUNT(*) AS n, SUM(total) AS s FROM orders WHERE user_id IN (?) GROUP BY user_id',
        [users],
        { aggregate: { n: 'count', s: 'sum' } },
        { slotKey: 'user_id' },
      )
      expect(totals.rows, stage).toHaveLength(1)
      expect(Number(totals.rows[0]!.n), stage).toBe(expected.length)
      expect(Number(totals.rows[0]!.s), stage).toBe(expected.reduce((sum, o) => sum + o.total, 0))
    }

    await check(fresh, orders, 'before the move')
    await mover.begin(span, 's2')
    await staleStore.refresh()
    await mover.copy(span)
    // The target holds a copy of every moving order: counted as rows of a table, they are twice.
    expect(await copiesOf(ids)).toBe(orders.length + inside.length)
    const naive = await fresh.all(
      'SELECT id FROM orders WHERE user_id IN (?)',
      [users],
      undefined,
      {
        slotKey: false,
      },
    )
    expect(naive.rows).toHaveLength(orders.length + inside.length)
    await check(fresh, orders, 'after the copy')
    await check(stale, orders, 'after the copy, stale map')
    // Orders deleted on the source since the copy: their copies stay on the target until the
    // catch-up, and fill its first rows by id, so the page needs rows the target did not send at
    // first (its own, after them).
    const deleted = orders.slice(0, 8)
    for (const order of deleted)
      await fresh.query(order.user, 'DELETE FROM orders WHERE id = ?', [order.id])
    orders = orders.slice(8)
    await check(fresh, orders, 'after deletes on the source')

    await mover.cutOver(span)
    // Written on the new owner after the cut-over: the stale router's map still says s1, whose
    // frozen copy lacks it.
    const late = await place(fresh, [inside[0]!], () => 7)
    const after = [...orders, ...late]
    expect(await copiesOf(after.map((o) => o.id))).toBe(after.length + inside.length - 8)
    await check(fresh, after, 'after the cut-over, before purge')
    const version = staleStore.version
    await check(stale, after, 'after the cut-over, stale map')
    expect(staleStore.version).toBeGreaterThan(version)

    await mover.purge(span, 's1')
    expect(await copiesOf(after.map((o) => o.id))).toBe(after.length)
    await check(fresh, after, 'after purge')
  })

  it('refuses a call without slotKey on a router with a slot map, and a slotKey the rows do not have', async () => {
    await place(fresh, ['user-refused-1', 'user-refused-2'], () => 1)
    await expect(fresh.all('SELECT id FROM orders')).rejects.toThrow(InvalidArgumentError)
    await expect(fresh.all('SELECT id FROM orders')).rejects.toThrow(/"slotKey"/)
    await expect(
      fresh.all('SELECT id FROM orders', [], undefined, { slotKey: 'user_id' }),
    ).rejects.toThrow(/expected a column of the result, got "user_id"/)
    await expect(
      fresh.all('SELECT id FROM orders', [], undefined, { slotKey: 5 as unknown as string }),
    ).rejects.toThrow(InvalidArgumentError)
    await expect(
      fresh.all('UPDATE orders SET note = NULL WHERE id = 0', [], undefined, {
        slotKey: 'user_id',
      }),
    ).rejects.toThrow(/slotKey: false for a write/)
    const written = await fresh.all('UPDATE orders SET note = NULL WHERE id = 0', [], undefined, {
      slotKey: false,
    })
    expect(written.shards).toEqual(['s1', 's2'])
  })

  it('with static shards takes slotKey as an option: rows on a shard the ring does not give their slot are dropped', async () => {
    const ring = createShardRouter({ shards, healthCheckInterval: 0 })
    try {
      // A key of s1 by the ring, its row written straight into s2 (as a move leaves it).
      const [user] = keysOn(moverStore.current(), 's1', 1, 'static')
      expect(ring.shardFor(user!)).toBe('s1')
      await sql(
        topo.pair[1]!.primary,
        'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, 1, 0)',
        [nextId++, user],
      )
      const query = 'SELECT id, user_id FROM orders WHERE user_id = ?'
      expect((await ring.all(query, [user])).rows).toHaveLength(1)
      expect((await ring.all(query, [user], undefined, { slotKey: 'user_id' })).rows).toEqual([])
    } finally {
      await ring.close()
    }
  })
})

describe('read-your-writes across a cut-over', () => {
  /** An order of a key in `span`, with a read of its note under a token and a write of it that returns the write's token. */
  async function notedOrder(span: SlotSpan, salt: string) {
    const [user] = keysOf(span, 1, salt)
    const [order] = await place(fresh, [user!], () => 1)
    return {
      user: user!,
      read: (router: ShardRouter, token: CausalToken) =>
        router.run({ causalToken: token }, () =>
          router.query<Array<{ note: string | null }>>(
            user!,
            'SELECT note FROM orders WHERE id = ?',
            [order!.id],
            { consistency: 'read-your-writes' },
          ),
        ),
      write: (router: ShardRouter, note: string) =>
        router.run({}, async () => {
          await router.query(user!, 'UPDATE orders SET note = ? WHERE id = ?', [note, order!.id])
          return router.causalToken()
        }),
    }
  }

  it('never reads a value older than the write: a token of the source on the new map, a token of the target on a stale map', async () => {
    const span = spanOnS1(moverStore.current(), 4)
    const { user, read, write } = await notedOrder(span, 'ryw')

    // The write on the source, and its token: s1's position.
    const onSource = await write(fresh, 'v1')
    expect(onSource.has('s1')).toBe(true)
    await replicaCaughtUp(pair.primary.url, pair.replica.url)
    await mover.begin(span, 's2')

    // The replica applies nothing from here: the target's replica never gets the copied row.
    const restart = await stopSqlThread(pair.replica.url)
    try {
      await mover.copy(span)
      await mover.catchUp(span)
      // The stale router last read the map while the range was catching up (within the lease of
      // a real router: the cut-over waits fenceDelay after that phase).
      await staleStore.refresh()
      expect(stale.shardFor(user)).toBe('s1')
      await mover.cutOver(span)
      await freshStore.refresh()
      expect(fresh.shardFor(user)).toBe('s2')
      expect(stale.shardFor(user)).toBe('s1')

      // New map, token of the source: the target's replica lacks the row; the router makes it
      // wait for the target primary's position after the cut-over, then reads the primary.
      const fellBack = fresh.stats().fellBackToPrimary
      expect(await read(fresh, onSource)).toEqual([{ note: 'v1' }])
      expect(fresh.stats().fellBackToPrimary).toBeGreaterThan(fellBack)
      // Stale map, token of the source: the source's replica has the write (its frozen copy).
      expect(await read(stale, onSource)).toEqual([{ note: 'v1' }])

      // A write on the target after the cut-over; a stale router given its token reads the map
      // first, and reads the target (not the source's frozen copy, which holds v1).
      const onTarget = await write(fresh, 'v2')
      expect(onTarget.has('s2')).toBe(true)
      const version = staleStore.version
      expect(await read(stale, onTarget)).toEqual([{ note: 'v2' }])
      expect(staleStore.version).toBeGreaterThan(version)
      expect(stale.shardFor(user)).toBe('s2')
      expect(await read(fresh, onTarget)).toEqual([{ note: 'v2' }])
    } finally {
      await restart()
    }

    // Once the target's replica has applied the copy, it serves the source's token itself.
    await replicaCaughtUp(pair.primary.url, pair.replica.url)
    const replicaReads = fresh.stats().shards.s2!.replicaQueries
    expect(await read(fresh, onSource)).toEqual([{ note: 'v2' }])
    expect(fresh.stats().shards.s2!.replicaQueries).toBe(replicaReads + 1)
    await mover.purge(span, 's1')
  })

  it('reads the primary when the target position cannot be read: never the replica that lacks the copy', async () => {
    // A router whose s2 primary is reached through a fault proxy; s2's replica is direct.
    const target = new URL(topo.pair[1]!.primary)
    const proxy = await createFaultProxy({ host: target.hostname, port: Number(target.port) })
    const store = createSlotMapStore({ server: meta.url, interval: 0, lease: '1h' })
    await store.load()
    const cutOff = createShardRouter({
      shards: [shards[0]!, { ...shards[1]!, primary: proxy.url(topo.pair[1]!.primary) }],
      slotMap: store,
      healthCheckInterval: 0,
      gtidWaitTimeout: 100,
    })
    const span = spanOnS1(moverStore.current(), 4)
    const order = await notedOrder(span, 'unread-position')
    const user = order.user
    const onSource = await order.write(fresh, 'v1')
    const read = () => order.read(cutOff, onSource)
    await replicaCaughtUp(pair.primary.url, pair.replica.url)
    await mover.begin(span, 's2')
    // From here the replicas apply nothing: s2's replica never gets the copied row.
    const restart = await stopSqlThread(pair.replica.url)
    try {
      await mover.copy(span)
      await mover.catchUp(span)
      await mover.cutOver(span)
      await store.refresh()
      expect(cutOff.shardFor(user)).toBe('s2')

      // s2's primary unreachable: its position after the cut-over cannot be read, so the read
      // of the moved row goes to the primary (and fails there), not to the replica, which would
      // answer that the order has no row.
      proxy.refuse()
      proxy.cut()
      const slotMoved = cutOff.stats().fellBackToPrimaryByReason['slot-moved']
      const failure = await read().catch((error: unknown) => error)
      expect(failure).toBeInstanceOf(ShardUnavailableError)
      expect(failure).toMatchObject({ shard: 's2', role: 'primary' })
      expect(cutOff.stats().fellBackToPrimaryByReason['slot-moved']).toBe(slotMoved + 1)
      expect(cutOff.stats().shards.s2!.replicaQueries).toBe(0)

      // Back: the position is read, the replica cannot reach it (its SQL thread is stopped), the
      // primary answers with the write.
      proxy.restore()
      let answer: Array<{ note: string | null }> | undefined
      for (let attempt = 0; answer === undefined; attempt++) {
        answer = await read().catch((error: unknown) => {
          // The primary's breaker may hold for a moment after the refused connection.
          if (!(error instanceof ShardUnavailableError) || attempt === 50) throw error
          return new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 100))
        })
      }
      expect(answer).toEqual([{ note: 'v1' }])
    } finally {
      await restart()
      await cutOff.close()
      await store.close()
      await proxy.close()
    }
    await replicaCaughtUp(pair.primary.url, pair.replica.url)
    await mover.purge(span, 's1')
  })
})

describe('all() when the map gives slots to a shard the router does not have', () => {
  it('fails that shard (its rows are on no shard the router can ask), or returns the rest flagged partial', async () => {
    const span = spanOnS1(moverStore.current(), 4, 2)
    const inside = keysOf(span, 3, 'unknown')
    const outside = keysOn(moverStore.current(), 's2', 2, 'unknown-s2')
    const orders = await place(fresh, [...inside, ...outside], () => 1)
    await mover.begin(span, 's3')
    await mover.copy(span)
    await mover.cutOver(span)
    const users = orders.map((o) => o.user)
    const query = 'SELECT id, user_id FROM orders WHERE user_id IN (?)'
    const error = await fresh
      .all(query, [users], undefined, { slotKey: 'user_id' })
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ScatterGatherError)
    const failures = (error as ScatterGatherError).failures
    expect(failures.map((f) => f.shard)).toEqual(['s3'])
    expect(failures[0]!.error).toBeInstanceOf(UnknownShardError)
    const partial = await fresh.all<{ id: number }>(query, [users], undefined, {
      slotKey: 'user_id',
      onShardError: 'partial',
    })
    expect(partial.partial).toBe(true)
    expect(partial.rows.map((r) => Number(r.id)).sort((a, b) => a - b)).toEqual(
      orders.slice(inside.length).map((o) => o.id),
    )
  })
})
