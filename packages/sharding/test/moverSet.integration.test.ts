import { mysqlUrl, type TempDatabase, tempDatabase } from '@ballast/testkit'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  createShardRouter,
  createSlotMapStore,
  createSlotMover,
  InvalidArgumentError,
  planResharding,
  type ShardConfig,
  type ShardRouter,
  type SlotMap,
  type SlotMapStore,
  type SlotMover,
  type SlotSpan,
  slotFor,
} from '../src/index.js'
import { ORDERS_DDL, ownerIn, sql } from './fixtures.js'

// A third shard joins two: the ring gives s3 hundreds of scattered ranges of s1 and of s2. Each
// old shard's share is one set, moved by one run of the steps, both moves at once, under writers
// that insert, update and delete through a router that follows the map and one that never polls.

const LEASE = 300
let dbs: TempDatabase[]
let meta: TempDatabase
let shards: ShardConfig[]
let store: SlotMapStore
let freshStore: SlotMapStore
let staleStore: SlotMapStore
let fresh: ShardRouter
let stale: ShardRouter
let mover: SlotMover
const url: Record<string, string> = {}

beforeAll(async () => {
  const server = await mysqlUrl()
  dbs = []
  for (const id of ['s1', 's2', 's3']) {
    const db = await tempDatabase(server, `mover_set_${id}`)
    await sql(db.url, ORDERS_DDL)
    dbs.push(db)
    url[id] = db.url
  }
  meta = await tempDatabase(server, 'mover_set_meta')
  shards = ['s1', 's2', 's3'].map((id) => ({ id, primary: url[id]! }))
  store = createSlotMapStore({ server: meta.url, interval: 30, lease: LEASE })
  await store.initialize({ shards: [{ id: 's1' }, { id: 's2' }] })
  freshStore = createSlotMapStore({ server: meta.url, interval: 30, lease: LEASE })
  await freshStore.load()
  staleStore = createSlotMapStore({ server: meta.url, interval: 0, lease: '1h' })
  await staleStore.load()
  fresh = createShardRouter({ shards, slotMap: freshStore, healthCheckInterval: 0 })
  stale = createShardRouter({ shards, slotMap: staleStore, healthCheckInterval: 0 })
  mover = createSlotMover({
    store,
    shards,
    tables: [{ table: 'orders', key: 'user_id' }],
    fenceDelay: LEASE,
    chunkRows: 50,
  })
})

afterAll(async () => {
  await mover?.close()
  await Promise.all([fresh?.close(), stale?.close()])
  await Promise.all([store?.close(), freshStore?.close(), staleStore?.close()])
  await meta?.cleanup()
  await Promise.all((dbs ?? []).map((db) => db.cleanup()))
})

const plan = planResharding(
  [{ id: 's1' }, { id: 's2' }],
  [{ id: 's1' }, { id: 's2' }, { id: 's3' }],
)
const setOf = (from: string): SlotSpan[] =>
  plan.moves
    .find((m) => m.from === from && m.to === 's3')!
    .ranges.map(([start, end]) => ({
      start,
      end,
    }))

let nextId = 1

/** Writers that insert, update and delete orders of `users` until stopped; the model is what they were told succeeded. */
function churn(routers: ShardRouter[], users: string[]) {
  const model = new Map<number, { user: string; total: number }>()
  let stop = false
  let ops = 0
  let failed: unknown
  const run = async (router: ShardRouter, w: number) => {
    const mine: number[] = []
    for (let i = 0; !stop; i++) {
      const pick = (i * 7 + w) % 10
      if (pick < 5 || mine.length < 3) {
        const id = nextId++
        const user = users[(i * 13 + w * 31) % users.length]!
        await router.query(
          user,
          'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, ?, ?)',
          [id, user, 1, Date.now()],
        )
        model.set(id, { user, total: 1 })
        mine.push(id)
      } else if (pick < 8) {
        const id = mine[i % mine.length]!
        const row = model.get(id)!
        const total = row.total + 1
        await router.query(row.user, 'UPDATE orders SET total = ? WHERE id = ? AND user_id = ?', [
          total,
          id,
          row.user,
        ])
        model.set(id, { user: row.user, total })
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
  const running = Promise.all(
    routers.map((router, w) =>
      run(router, w).catch((error: unknown) => {
        failed ??= error
        throw error
      }),
    ),
  )
  running.catch(() => {})
  const waitOps = async (n: number) => {
    const target = ops + n
    while (ops < target) {
      if (failed !== undefined) throw failed
      await new Promise((r) => setTimeout(r, 5))
    }
  }
  return {
    model,
    waitOps,
    stop: async () => {
      stop = true
      await running
    },
  }
}

describe('moving sets of scattered slot ranges', () => {
  it('moves s1 and s2 shares of a third shard (hundreds of ranges each) at once under writers: every row once, where its key now belongs, with its last total', async () => {
    const s1Set = setOf('s1')
    const s2Set = setOf('s2')
    expect(s1Set.length).toBeGreaterThan(400)
    expect(s2Set.length).toBeGreaterThan(400)
    const before = store.current()
    const users = Array.from({ length: 400 }, (_, i) => `set-user-${i}`)
    const owner = (user: string, map: SlotMap) => ownerIn(map, slotFor(user, map.slots))
    const movedUsers = users.filter((u) => {
      const slot = slotFor(u, 4096)
      return [...s1Set, ...s2Set].some((s) => slot >= s.start && slot < s.end)
    })
    expect(movedUsers.length).toBeGreaterThan(50)
    expect(movedUsers.length).toBeLessThan(users.length - 50)

    // Seeded rows, then writers running through every step.
    const load = churn([fresh, stale, fresh], users)
    for (const [i, user] of users.entries()) {
      const id = nextId++
      await fresh.query(
        user,
        'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, ?, ?)',
        [id, user, 10 + i, Date.now()],
      )
      load.model.set(id, { user, total: 10 + i })
    }
    await load.waitOps(30)

    // Scattered spans in any order: the mover sorts them.
    const checksBefore = fresh.stats().fenceChecks + stale.stats().fenceChecks
    await Promise.all([mover.begin([...s1Set].reverse(), 's3'), mover.begin(s2Set, 's3')])
    await staleStore.refresh()
    const moves = await mover.moves()
    expect(moves.map((m) => [m.from, m.to, m.phase, m.slots, m.copyDone])).toEqual([
      ['s1', 's3', 'copying', plan.moves.find((m) => m.from === 's1')!.slots, false],
      ['s2', 's3', 'copying', plan.moves.find((m) => m.from === 's2')!.slots, false],
    ])
    expect(moves[0]!.spans).toEqual(s1Set)
    await load.waitOps(30)

    const copied = await Promise.all([mover.copy(s1Set), mover.copy(s2Set)])
    expect(copied[0]!.rowsCopied + copied[1]!.rowsCopied).toBeGreaterThanOrEqual(movedUsers.length)
    expect((await mover.moves()).map((m) => m.copyDone)).toEqual([true, true])
    await load.waitOps(30)
    // While the rows are copied the writers write as before: no fence check yet.
    expect(fresh.stats().fenceChecks + stale.stats().fenceChecks).toBe(checksBefore)
    const caught = await Promise.all([mover.catchUp(s1Set), mover.catchUp(s2Set)])
    expect(caught[0]!.entriesRead + caught[1]!.entriesRead).toBeGreaterThan(0)
    expect((await mover.moves()).map((m) => m.phase)).toEqual(['catching-up', 'catching-up'])
    // The stale router reads the map once more, now that the routers check the fence, and keeps
    // that map through the cut-over.
    await staleStore.refresh()
    await load.waitOps(30)
    expect(fresh.stats().fenceChecks + stale.stats().fenceChecks).toBeGreaterThan(checksBefore)
    const cut = await Promise.all([mover.cutOver(s1Set), mover.cutOver(s2Set)])
    expect(cut.every((c) => c.rowsCopied === 0 && c.rowsVerified > 0)).toBe(true)
    expect(await mover.moves()).toEqual([])
    await load.waitOps(30)
    await load.stop()
    const purged = await Promise.all([mover.purge(s1Set, 's1'), mover.purge(s2Set, 's2')])
    expect(purged[0]!.rowsDeleted + purged[1]!.rowsDeleted).toBeGreaterThan(0)

    // The map is the ring of three shards: every slot where planResharding said.
    const after = store.current()
    for (let slot = 0; slot < after.slots; slot++) {
      const moved = [...s1Set, ...s2Set].some((s) => slot >= s.start && slot < s.end)
      expect(ownerIn(after, slot)).toBe(moved ? 's3' : ownerIn(before, slot))
    }
    // 0 lost, 0 duplicated: each order once, on its key's owner, with the total last written.
    const found = new Map<number, { shard: string; user: string; total: number }>()
    for (const shard of ['s1', 's2', 's3']) {
      const rows = (await sql(url[shard]!, 'SELECT id, user_id, total FROM orders')) as Array<{
        id: number
        user_id: string
        total: string
      }>
      for (const row of rows) {
        expect(found.has(Number(row.id))).toBe(false)
        found.set(Number(row.id), { shard, user: row.user_id, total: Number(row.total) })
      }
    }
    expect(found.size).toBe(load.model.size)
    for (const [id, row] of load.model) {
      const at = found.get(id)
      expect(at).toEqual({ shard: owner(row.user, after), user: row.user, total: row.total })
    }
    // The change logs and their triggers are gone from both sources.
    for (const shard of ['s1', 's2'])
      expect(await sql(url[shard]!, "SHOW TABLES LIKE 'ballast_change_log'")).toEqual([])
  }, 120_000)

  it('checks a set: disjoint spans, one owner, the whole move for copy and catch-up', async () => {
    const map = store.current()
    const s1 = map.ranges.filter((r) => r.shard === 's1').slice(0, 4)
    await expect(
      mover.begin(
        [
          { start: s1[0]!.start, end: s1[0]!.end },
          { start: s1[0]!.start, end: s1[0]!.start + 1 },
        ],
        's3',
      ),
    ).rejects.toThrow(/disjoint spans/)
    await expect(mover.begin([], 's3')).rejects.toThrow(InvalidArgumentError)
    const s2 = map.ranges.find((r) => r.shard === 's2')!
    await expect(
      mover.begin(
        [
          { start: s1[0]!.start, end: s1[0]!.end },
          { start: s2.start, end: s2.end },
        ],
        's3',
      ),
    ).rejects.toThrow(/slots owned by one shard/)
    const set = s1.map((r) => ({ start: r.start, end: r.end }))
    await mover.begin(set, 's2')
    // A part of the move would consume the rest's change log entries and copy position.
    await expect(mover.copy(set.slice(1))).rejects.toThrow(/the whole move/)
    await expect(mover.catchUp(set.slice(0, 2))).rejects.toThrow(/the whole move/)
    const aborted = await mover.abort(set)
    expect(aborted.map.ranges.filter((r) => r.moving !== undefined)).toEqual([])
    expect(await mover.moves()).toEqual([])
  })
})
