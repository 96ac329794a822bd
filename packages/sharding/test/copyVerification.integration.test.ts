import { mysqlUrl, type TempDatabase, tempDatabase } from '@ballast/testkit'
import mysql from 'mysql2/promise'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  createSlotMapStore,
  createSlotMover,
  type MoveStep,
  type ShardConfig,
  SlotCopyMismatchError,
  type SlotMapStore,
  type SlotMover,
  type SlotSpan,
  slotFor,
} from '../src/index.js'
import { inSpan, keysWhere, sql, type Topology, topology } from './fixtures.js'

// The cut-over's verification: before the fence it compares the copy chunk by chunk and copies
// again what differs; under the fence it compares only the rows the change log touched since.
// Each test moves its own span from s1 to s3; "corrupted" rows are written by the test on the
// target behind the mover's back.

let topo: Topology
let meta: TempDatabase
let shards: ShardConfig[]
let store: SlotMapStore
let mover: SlotMover
const url: Record<string, string> = {}
const LEASE = 300

beforeAll(async () => {
  topo = await topology('copy_verify', 0, 2)
  meta = await tempDatabase(await mysqlUrl(), 'copy_verify_meta')
  url.s1 = topo.standard[0]!
  url.s3 = topo.standard[1]!
  shards = [
    { id: 's1', primary: url.s1 },
    { id: 's3', primary: url.s3 },
  ]
  store = createSlotMapStore({ server: meta.url, interval: 30, lease: LEASE })
  await store.initialize({ shards: [{ id: 's1' }] })
  mover = createSlotMover({
    store,
    shards,
    tables: [{ table: 'orders', key: 'user_id' }],
    fenceDelay: LEASE,
    chunkRows: 5,
  })
})

afterAll(async () => {
  await mover?.close()
  await store?.close()
  await meta?.cleanup()
  await topo?.cleanup()
})

let nextSpan = 0
/** A span of 64 slots no other test moves. */
const freshSpan = (): SlotSpan => {
  const start = nextSpan
  nextSpan += 64
  return { start, end: start + 64 }
}

/** `count` user keys whose slots are in `span`. */
const keysIn = (span: SlotSpan, count: number, salt: string) =>
  keysWhere(count, salt, (slot) => inSpan(span, slot))

let nextId = 1
/** Orders of `users` (two each) written on s1; their ids. */
async function seed(users: string[]): Promise<number[]> {
  const rows = users.flatMap((user) => [0, 1].map(() => [nextId++, user, 10, Date.now()]))
  await sql(url.s1!, 'INSERT INTO orders (id, user_id, total, created_at) VALUES ?', [rows])
  return rows.map((r) => r[0] as number)
}

/** The orders of `users` on a shard: id → total. */
async function totals(shard: string, users: string[]): Promise<Map<number, string>> {
  const rows = (await sql(url[shard]!, 'SELECT id, total FROM orders WHERE user_id IN (?)', [
    users,
  ])) as Array<{ id: number; total: string }>
  return new Map(rows.map((r) => [Number(r.id), String(r.total)]))
}

/** The phases the mover reports for `span` while `run` runs. */
async function phasesDuring<T>(
  span: SlotSpan,
  run: () => Promise<T>,
): Promise<{ phases: MoveStep[]; result: T | unknown }> {
  const phases: MoveStep[] = []
  const off = mover.on('phase-changed', (e) => {
    if (e.start === span.start) phases.push(e.phase)
  })
  try {
    const result = await run().catch((error: unknown) => error)
    return { phases, result }
  } finally {
    off()
  }
}

/** A trigger on s3 that writes `total = 999` into order `id` whenever a row with that id is inserted (REPLACE included). */
async function corruptOnWrite(id: number): Promise<() => Promise<void>> {
  const name = `corrupt_${id}`
  await sql(
    url.s3!,
    `CREATE TRIGGER ${name} BEFORE INSERT ON orders FOR EACH ROW BEGIN IF NEW.id = ${id} THEN SET NEW.total = 999; END IF; END`,
  )
  return () => sql(url.s3!, `DROP TRIGGER IF EXISTS ${name}`)
}

describe('verifying a copy before the fence', () => {
  it('copies again the rows that differ on the target (changed, missing, stray) and cuts over with the copy equal to the source', async () => {
    const span = freshSpan()
    const users = keysIn(span, 8, 'before')
    const ids = await seed(users)
    await mover.begin(span, 's3')
    await mover.copy(span)
    await mover.catchUp(span)
    // Behind the mover's back: one row changed, one deleted, one the source never had.
    await sql(url.s3!, 'UPDATE orders SET total = 999 WHERE id = ?', [ids[0]])
    await sql(url.s3!, 'DELETE FROM orders WHERE id = ?', [ids[5]])
    const stray = nextId++
    await sql(url.s3!, 'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, 1, 0)', [
      stray,
      users[2],
    ])
    const { phases, result } = await phasesDuring(span, () => mover.cutOver(span))
    expect(result).toMatchObject({ rowsApplied: 0 })
    expect((result as { rowsVerified: number }).rowsVerified).toBeGreaterThanOrEqual(ids.length)
    expect(phases).toEqual(['fenced', 'moved'])
    // Not one of them reached the new owner: the target holds exactly the source's rows.
    expect(await totals('s3', users)).toEqual(await totals('s1', users))
    expect((await totals('s3', users)).get(ids[0]!)).toBe('10.00')
    expect((await totals('s3', users)).has(stray)).toBe(false)
    await mover.purge(span, 's1')
  })

  it('fails before the fence when a row still differs after it was copied again, and never fences', async () => {
    const span = freshSpan()
    const users = keysIn(span, 4, 'stuck')
    const ids = await seed(users)
    await mover.begin(span, 's3')
    await mover.copy(span)
    const restore = await corruptOnWrite(ids[1]!)
    try {
      await sql(url.s3!, 'UPDATE orders SET total = 999 WHERE id = ?', [ids[1]])
      const { phases, result } = await phasesDuring(span, () => mover.cutOver(span))
      expect(result).toBeInstanceOf(SlotCopyMismatchError)
      expect(result).toMatchObject({ code: 'E_SHARD_SLOT_COPY_MISMATCH', table: 'orders' })
      expect((result as Error).message).toMatch(/did not fence/)
      // The cut-over made the routers check the fence first; it never took it.
      expect(phases).toEqual(['catching-up'])
      const range = store.current().ranges.find((r) => r.start <= span.start && span.start < r.end)
      expect(range).toMatchObject({ shard: 's1', moving: { to: 's3' } })
      expect(range!.moving!.phase).not.toBe('fenced')
    } finally {
      await restore()
    }
    await mover.cutOver(span)
    expect(await totals('s3', users)).toEqual(await totals('s1', users))
    await mover.purge(span, 's1')
  })
})

describe('verifying under the fence', () => {
  it("compares the rows the log's tail touched, and rolls the cut-over back when one differs", async () => {
    const span = freshSpan()
    const users = keysIn(span, 4, 'fenced')
    const ids = await seed(users)
    await mover.begin(span, 's3')
    await mover.copy(span)
    await mover.catchUp(span)
    // A writer of the span (it takes the fence check, as a router does) changes a row and has
    // not committed when the cut-over starts: the verification before the fence cannot see it,
    // and the cut-over's lock waits for it. It commits once the mover fences.
    const writer = await mysql.createConnection({ uri: url.s1! })
    const restore = await corruptOnWrite(ids[2]!)
    try {
      await writer.query('START TRANSACTION')
      await writer.query('SELECT state FROM ballast_slot_fence WHERE slot = ? LOCK IN SHARE MODE', [
        slotFor(users[1]!, 4096),
      ])
      await writer.query('UPDATE orders SET total = 42 WHERE id = ?', [ids[2]])
      const off = mover.on('phase-changed', (e) => {
        if (e.start === span.start && e.phase === 'fenced') void writer.query('COMMIT')
      })
      const { phases, result } = await phasesDuring(span, () => mover.cutOver(span))
      off()
      // The tail brought the row over and the target's trigger changed it: caught under the fence.
      expect(result).toBeInstanceOf(SlotCopyMismatchError)
      expect((result as Error).message).toMatch(/rolled back/)
      expect(phases).toEqual(['fenced'])
      const fence = (await sql(
        url.s1!,
        'SELECT DISTINCT state FROM ballast_slot_fence WHERE slot >= ? AND slot < ?',
        [span.start, span.end],
      )) as Array<{ state: string }>
      expect(fence.map((r) => r.state)).toEqual(['copying'])
      expect(
        store.current().ranges.find((r) => r.start <= span.start && span.start < r.end)!.shard,
      ).toBe('s1')
    } finally {
      await restore()
      await writer.end()
    }
    // The source kept the span and the write; run again, the cut-over copies it right.
    const cut = await mover.cutOver(span)
    expect(cut.map.ranges.find((r) => r.start <= span.start && span.start < r.end)!.shard).toBe(
      's3',
    )
    expect((await totals('s3', users)).get(ids[2]!)).toBe('42.00')
    expect(await totals('s3', users)).toEqual(await totals('s1', users))
    await mover.purge(span, 's1')
  })

  it('does not compare anything with verify: false', async () => {
    const span = freshSpan()
    const users = keysIn(span, 3, 'unverified')
    const ids = await seed(users)
    const trusting = createSlotMover({
      store,
      shards,
      tables: [{ table: 'orders', key: 'user_id' }],
      fenceDelay: LEASE,
      chunkRows: 5,
      verify: false,
    })
    try {
      await trusting.begin(span, 's3')
      await trusting.copy(span)
      await sql(url.s3!, 'UPDATE orders SET total = 999 WHERE id = ?', [ids[0]])
      const cut = await trusting.cutOver(span)
      expect(cut.rowsVerified).toBe(0)
      // Nothing looked: what was written behind the mover's back stayed.
      expect((await totals('s3', users)).get(ids[0]!)).toBe('999.00')
      await trusting.purge(span, 's1')
    } finally {
      await trusting.close()
    }
  })
})
