import { mysqlUrl, type TempDatabase, tempDatabase } from '@ballast/testkit'
import { captureListenerErrors } from '@ballast/testkit/vitest'
import mysql from 'mysql2/promise'
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from 'vitest'
import {
  createShardRouter,
  createSlotMapStore,
  createSlotMover,
  InvalidArgumentError,
  type LogAppliedEvent,
  type ShardConfig,
  type ShardRouter,
  type SlotMap,
  type SlotMapStore,
  SlotMoveBusyError,
  SlotMovedError,
  type SlotMover,
  type SlotSpan,
  slotFor,
} from '../src/index.js'
import { inSpan, keysWhere, ownerIn, spanPicker, sql, type Topology, topology } from './fixtures.js'

// Each test moves its own span of slots from s1 to s3 (s3 owns nothing at first: a shard added
// to the deployment), with two routers: `fresh` polls the map every 30 ms, `stale` never polls
// (its lease is an hour) and learns of a change only when a fence refuses its write.

let topo: Topology
let meta: TempDatabase
let shards: ShardConfig[]
let moverStore: SlotMapStore
let freshStore: SlotMapStore
let staleStore: SlotMapStore
let fresh: ShardRouter
let stale: ShardRouter
let mover: SlotMover
const url: Record<string, string> = {}

const LEASE = 300

beforeAll(async () => {
  topo = await topology('slot_move', 1, 2)
  meta = await tempDatabase(await mysqlUrl(), 'slot_move_meta')
  url.s1 = topo.standard[0]!
  url.s2 = topo.standard[1]!
  url.s3 = topo.pair[0]!.primary
  shards = [
    { id: 's1', primary: url.s1 },
    { id: 's2', primary: url.s2 },
    { id: 's3', primary: url.s3, replicas: [topo.pair[0]!.replica] },
  ]
  moverStore = createSlotMapStore({ server: meta.url, interval: 30, lease: LEASE })
  await moverStore.initialize({ shards: [{ id: 's1' }, { id: 's2' }] })
  freshStore = createSlotMapStore({ server: meta.url, interval: 30, lease: LEASE })
  await freshStore.load()
  staleStore = createSlotMapStore({ server: meta.url, interval: 0, lease: '1h' })
  await staleStore.load()
  fresh = createShardRouter({ shards, slotMap: freshStore, healthCheckInterval: 100 })
  stale = createShardRouter({ shards, slotMap: staleStore, healthCheckInterval: 100 })
  mover = createSlotMover({
    store: moverStore,
    shards,
    tables: [{ table: 'orders', key: 'user_id' }],
    fenceDelay: LEASE,
    chunkRows: 7,
  })
})

afterAll(async () => {
  await mover?.close()
  await Promise.all([fresh?.close(), stale?.close()])
  await Promise.all([moverStore?.close(), freshStore?.close(), staleStore?.close()])
  await meta?.cleanup()
  await topo?.cleanup()
})

/** A span of up to `size` slots (at least `least`) owned by s1 and not used by another test. */
const spanOnS1 = spanPicker('s1')

/** `count` user keys whose slots are in `span` (or, with `map`, owned by s1 outside it). */
function keysIn(span: SlotSpan, count: number, salt: string, map?: SlotMap): string[] {
  return keysWhere(count, salt, (slot) =>
    map === undefined ? inSpan(span, slot) : ownerIn(map, slot) === 's1' && !inSpan(span, slot),
  )
}

let nextId = 1
const insert = (router: ShardRouter, user: string) => {
  const id = nextId++
  return router
    .query(user, 'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, ?, ?)', [
      id,
      user,
      10,
      Date.now(),
    ])
    .then(() => id)
}

/** The ids of the orders of `users` on each shard's primary. */
async function idsOn(users: string[]): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {}
  for (const shard of ['s1', 's2', 's3']) {
    const rows = (await sql(url[shard]!, 'SELECT id FROM orders WHERE user_id IN (?) ORDER BY id', [
      users,
    ])) as Array<{ id: number }>
    out[shard] = rows.map((r) => Number(r.id))
  }
  return out
}

describe('moving a slot range with the fence', () => {
  it('refuses at the old shard a write from a router with a stale map after the cut-over, and lands it once on the new shard', async () => {
    const span = spanOnS1(moverStore.current(), 4)
    const inside = keysIn(span, 5, 'stale')
    const outside = keysIn(span, 3, 'stale-out', moverStore.current())
    const before = await Promise.all([...inside, ...outside].map((user) => insert(fresh, user)))

    await mover.begin(span, 's3')
    // The first catch-up marks the range catching-up: from then on its writers check the fence.
    await mover.catchUp(span)
    // Both routers know the range is moving (the stale one read the map once, at this point).
    await staleStore.refresh()
    const staleVersion = staleStore.version
    expect(stale.shardFor(inside[0]!)).toBe('s1')

    const cut = await mover.cutOver(span)
    expect(cut.rowsCopied).toBe(inside.length)
    expect(cut.rowsDiscarded).toBe(0)
    expect(staleStore.version).toBe(staleVersion)
    expect(stale.shardFor(inside[0]!)).toBe('s1')

    // The stale router sends the write to s1; s1's fence refuses it; the router refreshes its map
    // and writes to s3.
    const refusedBefore = stale.stats().fenceChecksRefused
    const late = await insert(stale, inside[0]!)
    expect(stale.stats().fenceChecksRefused).toBe(refusedBefore + 1)
    expect(staleStore.version).toBeGreaterThan(staleVersion)
    expect(stale.shardFor(inside[0]!)).toBe('s3')

    const ids = await idsOn(inside)
    const moved = before.slice(0, inside.length)
    expect(ids.s3).toEqual([...moved, late].sort((a, b) => a - b))
    // s1 keeps its old copies (until purge), never the late write.
    expect(ids.s1).toEqual(moved)
    expect(ids.s2).toEqual([])
    // Keys outside the span stayed where they were, and were not copied.
    expect((await idsOn(outside)).s3).toEqual([])
    expect((await idsOn(outside)).s1).toEqual(before.slice(inside.length))

    // The new owner serves reads (from its replica, read-your-writes).
    const rows = await stale.query<Array<{ id: number }>>(
      inside[0]!,
      'SELECT id FROM orders WHERE user_id = ? ORDER BY id',
      [inside[0]!],
    )
    expect(rows.map((r) => Number(r.id))).toEqual([before[0], late])

    const purged = await mover.purge(span, 's1')
    expect(purged.rowsDeleted).toBe(inside.length)
    expect((await idsOn(inside)).s1).toEqual([])
    expect((await idsOn(outside)).s1).toEqual(before.slice(inside.length))
  })

  it("runs a stale router's transaction on the new owner, its callback once", async () => {
    const span = spanOnS1(moverStore.current(), 2)
    const [user] = keysIn(span, 1, 'tx')
    await mover.begin(span, 's3')
    await mover.catchUp(span)
    await staleStore.refresh()
    await mover.cutOver(span)
    let calls = 0
    const shard = await stale.transaction(user!, async (tx) => {
      calls++
      await tx.query('INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, ?, ?)', [
        nextId++,
        user,
        3,
        Date.now(),
      ])
      return tx.shard
    })
    expect(calls).toBe(1)
    expect(shard).toBe('s3')
    const ids = await idsOn([user!])
    expect(ids.s1).toEqual([])
    expect(ids.s3).toHaveLength(1)
  })

  it('lands every write made while the range is cut over exactly once, on the owner of its key', async () => {
    const span = spanOnS1(moverStore.current(), 8)
    const inside = keysIn(span, 6, 'load')
    const outside = keysIn(span, 4, 'load-out', moverStore.current())
    const users = [...inside, ...outside]
    const seeded = await Promise.all(inside.map((user) => insert(fresh, user)))
    await mover.begin(span, 's3')
    await mover.catchUp(span)
    await staleStore.refresh()

    let stop = false
    const written: number[] = [...seeded]
    const writer = async (router: ShardRouter, salt: number) => {
      for (let i = 0; !stop && i < 400; i++)
        written.push(await insert(router, users[(i + salt) % users.length]!))
    }
    const writers = [writer(fresh, 0), writer(stale, 3), writer(fresh, 5)]
    // Let the writers get going, cut over under their writes, then let them write a while more.
    while (written.length < seeded.length + 30) await new Promise((r) => setTimeout(r, 5))
    await mover.cutOver(span)
    const atCut = written.length
    while (written.length < atCut + 30) await new Promise((r) => setTimeout(r, 5))
    stop = true
    await Promise.all(writers)
    await mover.purge(span, 's1')

    const ids = await idsOn(users)
    const all = [...ids.s1!, ...ids.s2!, ...ids.s3!].sort((a, b) => a - b)
    // 0 lost, 0 duplicated.
    expect(all).toEqual([...written].sort((a, b) => a - b))
    // Each order sits on the shard its key now belongs to.
    const owners = (await sql(url.s3!, 'SELECT DISTINCT user_id FROM orders WHERE user_id IN (?)', [
      users,
    ])) as Array<{ user_id: string }>
    expect(owners.map((r) => r.user_id).sort()).toEqual([...inside].sort())
  })

  it('rolls the fence back when the cut-over fails, keeps writing to the source, and succeeds when run again', async () => {
    const span = spanOnS1(moverStore.current(), 4)
    const inside = keysIn(span, 3, 'crash')
    const seeded = await Promise.all(inside.map((user) => insert(fresh, user)))
    await mover.begin(span, 's3')
    // A row on the target with the id of a row being moved (a key outside the span): the copy
    // hits a duplicate key and the cut-over fails half way.
    const [squatter] = keysIn(span, 1, 'squatter', moverStore.current())
    await sql(url.s3!, 'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, ?, ?)', [
      seeded[1],
      squatter,
      1,
      0,
    ])
    await expect(mover.cutOver(span)).rejects.toThrow(/Duplicate entry/)
    // The source still owns the span and takes its writes (the fence was rolled back).
    expect(
      moverStore.current().ranges.find((r) => span.start >= r.start && span.start < r.end)!.shard,
    ).toBe('s1')
    const during = await insert(fresh, inside[0]!)
    expect((await idsOn(inside)).s1).toContain(during)
    await sql(url.s3!, 'DELETE FROM orders WHERE user_id = ?', [squatter])
    const cut = await mover.cutOver(span)
    // What the failed run had copied to the target was deleted first, then everything copied.
    expect(cut.rowsCopied).toBe(inside.length + 1)
    expect((await idsOn(inside)).s3).toEqual([...seeded, during].sort((a, b) => a - b))
    // Running it again once done changes nothing.
    const again = await mover.cutOver(span)
    expect(again.rowsCopied).toBe(0)
    expect(again.map.version).toBe(cut.map.version)
  })

  it('only publishes the map when run again after dying between the fence commit and the map change', async () => {
    const span = spanOnS1(moverStore.current(), 3)
    const inside = keysIn(span, 3, 'resume')
    const seeded = await Promise.all(inside.map((user) => insert(fresh, user)))
    await mover.begin(span, 's3')
    await mover.catchUp(span)
    await freshStore.refresh()
    // What a run that died right after its commit leaves: the rows on the target, the source's
    // fence rows 'moved', the map still naming s1 (catching-up: its routers check the fence).
    const rows = (await sql(url.s1!, 'SELECT * FROM orders WHERE user_id IN (?)', [
      inside,
    ])) as Array<Record<string, unknown>>
    for (const row of rows)
      await sql(
        url.s3!,
        'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, ?, ?)',
        [row.id, row.user_id, row.total, row.created_at],
      )
    await sql(
      url.s1!,
      "UPDATE ballast_slot_fence SET state = 'moved' WHERE slot >= ? AND slot < ?",
      [span.start, span.end],
    )
    // Meanwhile a write of the span is refused at s1 and, the map still naming s1, fails with a
    // retryable SlotMovedError when its time is up; nothing lands anywhere.
    const error = await fresh
      .query(
        inside[0]!,
        'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, ?, ?)',
        [nextId++, inside[0], 1, 0],
        { timeout: 300 },
      )
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(SlotMovedError)
    expect((error as SlotMovedError).retryable).toBe(true)
    const cut = await mover.cutOver(span)
    expect(cut.rowsCopied).toBe(0)
    expect(fresh.shardFor(inside[0]!) === 's3' || (await freshStore.refresh()) !== undefined).toBe(
      true,
    )
    const late = await insert(fresh, inside[0]!)
    const ids = await idsOn(inside)
    expect(ids.s3).toEqual([...seeded, late].sort((a, b) => a - b))
    expect(ids.s1).toEqual([...seeded].sort((a, b) => a - b))
  })

  it('checks its arguments', async () => {
    const map = moverStore.current()
    const s2 = map.ranges.find((r) => r.shard === 's2')!
    await expect(mover.begin({ start: s2.start, end: s2.start + 1 }, 's9')).rejects.toThrow(
      InvalidArgumentError,
    )
    await expect(mover.begin({ start: s2.start, end: s2.start + 1 }, 's2')).rejects.toThrow(
      /a shard other than the span's owner/,
    )
    await expect(mover.begin({ start: 0, end: 4096 }, 's3')).rejects.toThrow(
      /slots owned by one shard/,
    )
    // A span partly moving: begin it first. (A span not moving at all is done: cutOver is a no-op.)
    const partly = spanOnS1(map, 2, 2)
    await mover.begin({ start: partly.start, end: partly.start + 1 }, 's3')
    await expect(mover.cutOver(partly)).rejects.toThrow(/call begin first/)
    // One move off a shard at a time (its change log is the shard's).
    const other = spanOnS1(map, 1)
    await expect(mover.begin(other, 's3')).rejects.toThrow(/one move per source at a time/)
    await mover.cutOver({ start: partly.start, end: partly.start + 1 })
    const idle = await mover.cutOver({ start: s2.start, end: s2.start + 1 })
    expect(idle.rowsCopied).toBe(0)
    expect(idle.map.version).toBe(moverStore.version)
    await expect(mover.purge({ start: s2.start, end: s2.start + 1 }, 's2')).rejects.toThrow(
      /no longer owns/,
    )
    expect(() =>
      createSlotMover({
        store: moverStore,
        shards,
        tables: [{ table: 'orders', key: 'user_id' }],
        fenceDelay: 10,
      }),
    ).toThrow(/invalid option "fenceDelay"/)
  })
})

describe('copying a slot range before the fence', () => {
  /** Writers that insert, update and delete their own orders of `users` until stopped; the model is what they were told succeeded. */
  function churn(routers: ShardRouter[], users: string[]) {
    const model = new Map<number, { user: string; total: number }>()
    let stop = false
    let ops = 0
    const run = async (router: ShardRouter, w: number) => {
      const mine: number[] = []
      for (let i = 0; !stop && i < 2000; i++) {
        const user = users[(i * 7 + w) % users.length]!
        const pick = mine.length === 0 ? 0 : i % 3
        if (pick === 0) {
          mine.push(await insert(router, user))
          model.set(mine[mine.length - 1]!, { user, total: 10 })
        } else if (pick === 1) {
          const id = mine[i % mine.length]!
          const row = model.get(id)!
          await router.query(row.user, 'UPDATE orders SET total = ? WHERE id = ? AND user_id = ?', [
            i,
            id,
            row.user,
          ])
          model.set(id, { user: row.user, total: i })
        } else {
          const id = mine.splice(i % mine.length, 1)[0]!
          const row = model.get(id)!
          await router.query(row.user, 'DELETE FROM orders WHERE id = ? AND user_id = ?', [
            id,
            row.user,
          ])
          model.delete(id)
        }
        ops++
      }
    }
    let failed: unknown
    const running = Promise.all(
      routers.map((router, w) =>
        run(router, w).catch((error: unknown) => {
          failed ??= error
          throw error
        }),
      ),
    )
    running.catch(() => {})
    return {
      model,
      ops: () => {
        if (failed !== undefined) throw failed
        return ops
      },
      stop: async () => {
        stop = true
        await running
      },
    }
  }

  it('copies in chunks while orders are inserted, updated and deleted, catches up from the change log, and cuts over with every row as the writers left it', async () => {
    const span = spanOnS1(moverStore.current(), 8)
    const inside = keysIn(span, 6, 'bulk')
    const outside = keysIn(span, 4, 'bulk-out', moverStore.current())
    const seeded = await Promise.all(
      [...inside, ...inside, ...inside].map((user) => insert(fresh, user)),
    )
    await mover.begin(span, 's3')
    await staleStore.refresh()
    const load = churn([fresh, stale, fresh], [...inside, ...outside])
    const waitOps = async (n: number) => {
      const target = load.ops() + n
      while (load.ops() < target) await new Promise((r) => setTimeout(r, 5))
    }
    await waitOps(20)
    const copied = await mover.copy(span)
    expect(copied.rowsCopied).toBeGreaterThanOrEqual(1)
    await waitOps(20)
    const caught = await mover.catchUp(span)
    expect(caught.entriesRead).toBeGreaterThan(0)
    // The stale router reads the map again before the cut-over, as a router's lease makes it
    // (fenceDelay is at least the lease): from the catch-up on it checks the fence, so its
    // writes after the cut-over are refused at s1 and land on s3. One that never read this map
    // would write to s1 unchecked and its rows would go with the purge.
    await staleStore.refresh()
    expect(
      moverStore.current().ranges.find((r) => r.start <= span.start && span.start < r.end)!.moving
        ?.phase,
    ).toBe('catching-up')
    await waitOps(20)
    const cut = await mover.cutOver(span)
    // Under the fence only the change log's tail was applied: nothing was copied again.
    expect(cut.rowsCopied).toBe(0)
    expect(cut.rowsVerified).toBeGreaterThan(0)
    await waitOps(20)
    await load.stop()
    await mover.purge(span, 's1')

    // Every order is where its key belongs, once, with the total the writers last set.
    const expected = new Map<number, number>()
    for (const id of seeded) expected.set(id, 10)
    for (const [id, row] of load.model) expected.set(id, row.total)
    const found = new Map<number, number>()
    for (const shard of ['s1', 's2', 's3']) {
      const rows = (await sql(
        url[shard]!,
        'SELECT id, user_id, total FROM orders WHERE user_id IN (?)',
        [[...inside, ...outside]],
      )) as Array<{ id: number; user_id: string; total: string }>
      for (const row of rows) {
        expect(found.has(Number(row.id))).toBe(false)
        found.set(Number(row.id), Number(row.total))
        expect(shard).toBe(inside.includes(row.user_id) ? 's3' : 's1')
      }
    }
    expect(found).toEqual(expected)
    // The change log and its triggers are gone from the source.
    expect(await sql(url.s1!, "SHOW TRIGGERS LIKE 'orders'")).toEqual([])
    expect(await sql(url.s1!, "SHOW TABLES LIKE 'ballast_change_log'")).toEqual([])
  })

  it("follows updates that change a copied row's primary key or shard key (a change of case too): no stale copy on the target", async () => {
    const span = spanOnS1(moverStore.current(), 8)
    const [keyed, renumbered, recased] = keysIn(span, 3, 'rekey')
    // Keys the rows move to: on s1 and outside the span (an upper-cased key hashes elsewhere;
    // the column's collation takes it for the same value).
    const map = moverStore.current()
    const outsideKey = keysIn(span, 1, 'rekey-out', map)[0]!
    const onS1Outside = (key: string) => {
      const slot = slotFor(key, 4096)
      return ownerIn(map, slot) === 's1' && !inSpan(span, slot)
    }
    let upper = recased!.toUpperCase()
    let cased = recased!
    for (let i = 0; !onS1Outside(upper); i++) {
      cased = keysIn(span, i + 2, 'rekey-case').at(-1)!
      upper = cased.toUpperCase()
    }
    const [a, b, c] = [
      await insert(fresh, keyed!),
      await insert(fresh, renumbered!),
      await insert(fresh, cased),
    ]
    // Without the verification, which would find a stale copy and copy its chunk again: the
    // change log alone must carry the changes.
    const unverified = createSlotMover({
      store: moverStore,
      shards,
      tables: [{ table: 'orders', key: 'user_id' }],
      fenceDelay: LEASE,
      verify: false,
    })
    onTestFinished(() => unverified.close())
    await unverified.begin(span, 's3')
    await unverified.copy(span)
    expect((await idsOn([keyed!, renumbered!, cased])).s3).toEqual([a, b, c])
    // Written on the source after the copy: the log has them for the catch-up.
    const moved = nextId++
    await sql(url.s1!, 'UPDATE orders SET user_id = ? WHERE id = ?', [outsideKey, a])
    await sql(url.s1!, 'UPDATE orders SET id = ? WHERE id = ?', [moved, b])
    await sql(url.s1!, 'UPDATE orders SET user_id = ? WHERE id = ?', [upper, c])
    await unverified.catchUp(span)
    await unverified.cutOver(span)
    await unverified.purge(span, 's1')

    const placed = async (shard: string) =>
      (
        (await sql(url[shard]!, 'SELECT id, user_id FROM orders WHERE id IN (?) ORDER BY id', [
          [a, b, c, moved],
        ])) as Array<{ id: number; user_id: string }>
      ).map((row) => `${row.id}:${row.user_id}`)
    // The rows whose keys left the span stay on s1 only; the renumbered one is on s3 only.
    expect(await placed('s1')).toEqual([`${a}:${outsideKey}`, `${c}:${upper}`])
    expect(await placed('s3')).toEqual([`${moved}:${renumbered}`])
    expect(await placed('s2')).toEqual([])
  })

  it('never makes a deadlock victim of a transaction that read a moved table and then writes it while the triggers are created or dropped', async () => {
    const span = spanOnS1(moverStore.current(), 4)
    const [user] = keysIn(span, 1, 'ddl-victim', moverStore.current())
    /** A transaction on s1 that has read orders (a shared metadata lock until it ends). */
    const reader = async () => {
      const connection = await mysql.createConnection(url.s1!)
      await connection.query('START TRANSACTION')
      await connection.query('SELECT COUNT(*) FROM orders WHERE user_id = ?', [user])
      return {
        write: () =>
          connection.query(
            'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, ?, ?)',
            [nextId++, user, 10, Date.now()],
          ),
        end: async () => {
          await connection.query('COMMIT')
          await connection.end()
        },
      }
    }
    const triggers = async () => (await sql(url.s1!, "SHOW TRIGGERS LIKE 'orders'")).length

    // begin creates the triggers while the transaction holds the table: its write goes through
    // (DDL that waited for the table's lock would make it the deadlock's victim).
    const first = await reader()
    const beginning = mover.begin(span, 's3')
    await new Promise((r) => setTimeout(r, 300))
    expect(await triggers()).toBe(0)
    await first.write()
    await first.end()
    await beginning
    expect(await triggers()).toBe(3)

    await mover.copy(span)
    await mover.catchUp(span)
    // The cut-over drops them once the map names s3: the same for a transaction then.
    const second = await reader()
    const cutting = mover.cutOver(span)
    while (moverStore.current().ranges.some((r) => r.moving !== undefined && inSpan(span, r.start)))
      await new Promise((r) => setTimeout(r, 20))
    await new Promise((r) => setTimeout(r, 200))
    await second.write()
    await second.end()
    await cutting
    expect(await triggers()).toBe(0)
    await mover.purge(span, 's1')
  })

  it('resumes a copy from the place kept in the store after the mover stopped half way', async () => {
    const span = spanOnS1(moverStore.current(), 8)
    const inside = keysIn(span, 40, 'resume-copy')
    await Promise.all(inside.map((user) => insert(fresh, user)))
    const slow = createSlotMover({
      store: moverStore,
      shards,
      tables: [{ table: 'orders', key: 'user_id' }],
      fenceDelay: LEASE,
      chunkRows: 5,
      chunkDelay: 50,
    })
    await slow.begin(span, 's3')
    const copying = slow.copy(span).catch((e: unknown) => e)
    // Once a few chunks are kept in the store, the mover goes away (its pools close under it).
    const progress = async () => {
      const rows = (await sql(
        meta.url,
        'SELECT progress FROM ballast_slot_map_moves WHERE source = ?',
        ['s1'],
      )) as Array<{ progress: string }>
      return rows[0] === undefined
        ? 0
        : (JSON.parse(rows[0].progress) as { rowsCopied: number }).rowsCopied
    }
    while ((await progress()) < 10) await new Promise((r) => setTimeout(r, 20))
    // One step of a move off a source at a time, whichever mover asks.
    const busy = await mover.copy(span).catch((e: unknown) => e)
    expect(busy).toBeInstanceOf(SlotMoveBusyError)
    expect(busy).toMatchObject({
      code: 'E_SHARD_SLOT_MOVE_BUSY',
      retryable: true,
      shard: 's1',
      operation: 'copy',
    })
    await slow.close()
    expect(await copying).toBeInstanceOf(Error)
    const before = await progress()
    expect(before).toBeLessThan(inside.length)
    const resumed = await mover.copy(span)
    expect(resumed.rowsCopied).toBeLessThan(inside.length)
    expect(resumed.totalRowsCopied).toBeGreaterThanOrEqual(inside.length)
    const cut = await mover.cutOver(span)
    expect(cut.rowsVerified).toBe(inside.length)
    expect((await idsOn(inside)).s3).toHaveLength(inside.length)
    await mover.purge(span, 's1')
  })

  it("aborts after the copy: traffic stays on the source, the target's partial copy and the change log go, nothing is lost", async () => {
    const span = spanOnS1(moverStore.current(), 6)
    const inside = keysIn(span, 4, 'abort')
    const seeded = await Promise.all(inside.map((user) => insert(fresh, user)))
    await mover.begin(span, 's3')
    await staleStore.refresh()
    await mover.copy(span)
    expect((await idsOn(inside)).s3).toHaveLength(seeded.length)
    const during = await insert(stale, inside[0]!)
    const aborted = await mover.abort(span)
    expect(aborted.rowsDiscarded).toBeGreaterThanOrEqual(seeded.length)
    const range = aborted.map.ranges.find((r) => r.start <= span.start && span.start < r.end)!
    expect(range.shard).toBe('s1')
    expect(range.moving).toBeUndefined()
    // The stale router still thinks the span moves: its checked write finds no fence row and lands on s1.
    const after = [await insert(stale, inside[1]!), await insert(fresh, inside[2]!)]
    const ids = await idsOn(inside)
    expect(ids.s1).toEqual([...seeded, during, ...after].sort((a, b) => a - b))
    expect(ids.s3).toEqual([])
    expect(
      await sql(url.s1!, 'SELECT slot FROM ballast_slot_fence WHERE slot >= ? AND slot < ?', [
        span.start,
        span.end,
      ]),
    ).toEqual([])
    expect(await sql(url.s1!, "SHOW TRIGGERS LIKE 'orders'")).toEqual([])
    // Nothing left to abort; a cut-over span cannot be aborted.
    await expect(mover.abort(span)).rejects.toThrow(/slots that are moving/)
  })

  it('refuses to abort a range already cut over', async () => {
    const span = spanOnS1(moverStore.current(), 2)
    await mover.begin(span, 's3')
    // As a cut-over that died after its commit leaves it.
    await sql(
      url.s1!,
      "UPDATE ballast_slot_fence SET state = 'moved' WHERE slot >= ? AND slot < ?",
      [span.start, span.end],
    )
    await expect(mover.abort(span)).rejects.toThrow(/run cutOver\(\) to finish it/)
    const cut = await mover.cutOver(span)
    expect(cut.map.ranges.find((r) => r.start <= span.start && span.start < r.end)!.shard).toBe(
      's3',
    )
  })

  it('finishes an abort that died after giving the map back', async () => {
    const span = spanOnS1(moverStore.current(), 2)
    const inside = keysIn(span, 2, 'abort-crash')
    const seeded = await Promise.all(inside.map((user) => insert(fresh, user)))
    await mover.begin(span, 's3')
    await mover.copy(span)
    // What an abort that died right after its map change leaves: the map gives the span back,
    // the target still has the copy, the source the fence rows and the change log.
    const map = moverStore.current()
    await moverStore.update(
      map.version,
      map.ranges.map((r) =>
        r.moving !== undefined ? { start: r.start, end: r.end, shard: r.shard } : r,
      ),
    )
    const done = await mover.abort(span)
    expect(done.rowsDiscarded).toBe(seeded.length)
    const ids = await idsOn(inside)
    expect(ids.s1).toEqual(seeded.sort((a, b) => a - b))
    expect(ids.s3).toEqual([])
    expect(
      await sql(url.s1!, 'SELECT slot FROM ballast_slot_fence WHERE slot >= ? AND slot < ?', [
        span.start,
        span.end,
      ]),
    ).toEqual([])
    expect(await sql(url.s1!, "SHOW TRIGGERS LIKE 'orders'")).toEqual([])
  })

  it('reports its progress: phases in order, each chunk copied, each catch-up pass; a throwing listener breaks nothing', async () => {
    const span = spanOnS1(moverStore.current(), 4)
    const inside = keysIn(span, 6, 'events')
    await Promise.all(inside.map((user) => insert(fresh, user)))
    const phases: string[] = []
    let chunkRows = 0
    const passes: LogAppliedEvent[] = []
    const boom = new Error('listener bug')
    const rethrown = captureListenerErrors()
    const offs = [
      mover.on('phase-changed', (e) => {
        expect(e).toMatchObject({ start: span.start, end: span.end, from: 's1', to: 's3' })
        phases.push(e.phase)
      }),
      mover.on('chunk-copied', (e) => {
        chunkRows += e.rows
      }),
      mover.on('chunk-copied', () => {
        throw boom
      }),
      mover.on('log-applied', (e) => passes.push(e)),
    ]
    try {
      await mover.begin(span, 's3')
      const copied = await mover.copy(span)
      await insert(fresh, inside[0]!)
      const caught = await mover.catchUp(span)
      await mover.cutOver(span)
      expect(phases).toEqual(['copying', 'catching-up', 'fenced', 'moved'])
      expect(chunkRows).toBe(copied.rowsCopied)
      // The catch-up's pass, then the cut-over's while it waits fenceDelay (nothing new to apply).
      expect(passes.length).toBeGreaterThan(1)
      expect(passes.slice(1).every((p) => p.entries === 0 && p.rows === 0)).toBe(true)
      expect(passes.slice(0, 1)).toEqual([
        {
          start: span.start,
          end: span.end,
          spans: [span],
          slots: span.end - span.start,
          from: 's1',
          to: 's3',
          entries: caught.entriesRead,
          rows: caught.rowsApplied,
          lagEntries: caught.lagEntries,
        },
      ])
      expect(caught.rowsApplied).toBe(1)
      await vi.waitFor(() => expect(rethrown.length).toBeGreaterThan(0))
      expect(rethrown.every((e) => e === boom)).toBe(true)
    } finally {
      for (const off of offs) off()
    }
    await mover.purge(span, 's1')
  })
})
