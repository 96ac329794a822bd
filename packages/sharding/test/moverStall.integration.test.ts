import {
  createFaultProxy,
  type FaultProxy,
  mysqlUrl,
  type TempDatabase,
  tempDatabase,
} from '@ballast/testkit'
import { createTestTelemetry, type TestTelemetry } from '@ballast/testkit/otel'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  createShardRouter,
  createSlotMapStore,
  createSlotMover,
  planResharding,
  type ResumedEvent,
  type ShardRouter,
  type SlotMapStore,
  type SlotMover,
  type SlotMoverOptions,
  SlotMoveStalledError,
  type SlotSpan,
  type StalledEvent,
  slotFor,
} from '../src/index.js'
import { ORDERS_DDL, sql } from './fixtures.js'

// A move off s1 to s3 whose mover reaches s3 through a fault proxy: the test cuts the target
// during the copy and restores it, aborts a step's signal, and lets a stall run out of time.
// The routers reach both shards directly: writers never notice the outage.

const LEASE = 300
let db: TempDatabase[]
let meta: TempDatabase
let proxy: FaultProxy
/** Between the mover and the SOURCE, for the test that cuts the source. */
let sourceProxy: FaultProxy
let store: SlotMapStore
let routerStore: SlotMapStore
let router: ShardRouter
const url: Record<string, string> = {}
const movers: SlotMover[] = []
let otel: TestTelemetry

beforeAll(async () => {
  const server = await mysqlUrl()
  db = []
  for (const id of ['s1', 's3']) {
    const d = await tempDatabase(server, `mover_stall_${id}`)
    await sql(d.url, ORDERS_DDL)
    db.push(d)
    url[id] = d.url
  }
  meta = await tempDatabase(server, 'mover_stall_meta')
  const s3 = new URL(url.s3!)
  proxy = await createFaultProxy({ host: s3.hostname, port: Number(s3.port) })
  const s1 = new URL(url.s1!)
  sourceProxy = await createFaultProxy({ host: s1.hostname, port: Number(s1.port) })
  store = createSlotMapStore({ server: meta.url, interval: 30, lease: LEASE })
  await store.initialize({ shards: [{ id: 's1' }] })
  routerStore = createSlotMapStore({ server: meta.url, interval: 30, lease: LEASE })
  await routerStore.load()
  router = createShardRouter({
    shards: [
      { id: 's1', primary: url.s1! },
      { id: 's3', primary: url.s3! },
    ],
    slotMap: routerStore,
    healthCheckInterval: 0,
  })
})

afterAll(async () => {
  await Promise.all(movers.map((m) => m.close()))
  await router?.close()
  await Promise.all([store?.close(), routerStore?.close()])
  await proxy?.close()
  await sourceProxy?.close()
  await otel?.shutdown()
  await meta?.cleanup()
  await Promise.all((db ?? []).map((d) => d.cleanup()))
})

/** A mover that reaches s3 through the proxy (and s1 too, with `source`). */
function moverVia(options: Partial<SlotMoverOptions> = {}, source = false): SlotMover {
  const mover = createSlotMover({
    store,
    shards: [
      { id: 's1', primary: source ? sourceProxy.url(url.s1!) : url.s1! },
      { id: 's3', primary: proxy.url(url.s3!) },
    ],
    tables: [{ table: 'orders', key: 'user_id' }],
    fenceDelay: LEASE,
    chunkRows: 10,
    // The fixed pause only: the adaptive throttle's backing off would only slow the test.
    latencyRatio: 0,
    ...options,
  })
  movers.push(mover)
  return mover
}

// Five disjoint sets of s1's slots, one per test: fifths of what a new shard would take.
const ranges = planResharding([{ id: 's1' }], [{ id: 's1' }, { id: 's3' }]).moves[0]!.ranges
const sets: SlotSpan[][] = [0, 1, 2, 3, 4].map((k) =>
  ranges.filter((_, i) => i % 5 === k).map(([start, end]) => ({ start, end })),
)
const inSet = (set: SlotSpan[], user: string) => {
  const slot = slotFor(user, 4096)
  return set.some((s) => slot >= s.start && slot < s.end)
}

let nextId = 1
/** Orders of `count` users of the set (and as many outside it), inserted through the router; their ids by user. */
async function seed(set: SlotSpan[], count: number, salt: string): Promise<Map<number, string>> {
  const rows = new Map<number, string>()
  let inside = 0
  for (let i = 0; inside < count; i++) {
    const user = `${salt}-${i}`
    if (inSet(set, user)) inside++
    const id = nextId++
    await router.query(
      user,
      'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, 1, 0)',
      [id, user],
    )
    rows.set(id, user)
  }
  return rows
}

/** After the move and purge: each row once, on its key's owner in the map (the set's rows on s3), none left on s1. */
async function expectMoved(set: SlotSpan[], rows: Map<number, string>): Promise<void> {
  const on = async (shard: string) =>
    (
      (await sql(url[shard]!, 'SELECT id FROM orders WHERE id IN (?) ORDER BY id', [
        [...rows.keys()],
      ])) as Array<{ id: number }>
    ).map((r) => Number(r.id))
  expect([...rows.values()].filter((user) => inSet(set, user)).length).toBeGreaterThan(0)
  for (const user of rows.values())
    if (inSet(set, user)) expect(store.ownerOf(slotFor(user, 4096))).toBe('s3')
  const owned = (shard: string) =>
    [...rows].filter(([, user]) => store.ownerOf(slotFor(user, 4096)) === shard).map(([id]) => id)
  expect(await on('s3')).toEqual(owned('s3'))
  expect(await on('s1')).toEqual(owned('s1'))
}

describe('a move whose target stops answering', () => {
  it('stalls the copy while the target is cut, resumes when it is back, and finishes with every row once on the target', async () => {
    const set = sets[0]!
    const rows = await seed(set, 50, 'cut')
    otel = createTestTelemetry()
    const mover = moverVia({
      chunkDelay: 10,
      meterProvider: otel.meterProvider,
      tracerProvider: otel.tracerProvider,
    })
    const stalled: StalledEvent[] = []
    const resumed: ResumedEvent[] = []
    let chunks = 0
    mover.on('chunk-copied', () => {
      chunks++
      if (chunks === 3) {
        // The target goes away mid-copy: open connections die, new ones are refused.
        proxy.refuse()
        proxy.cut()
      }
    })
    mover.on('stalled', (e) => {
      stalled.push(e)
      if (e.attempt === 3) proxy.restore()
    })
    mover.on('resumed', (e) => resumed.push(e))
    await mover.begin(set, 's3')
    const copied = await mover.copy(set)
    expect(stalled.length).toBeGreaterThanOrEqual(3)
    expect(stalled.map((e) => [e.shard, e.from, e.to])).toContainEqual(['s3', 's1', 's3'])
    expect(stalled.map((e) => e.attempt).slice(0, 3)).toEqual([1, 2, 3])
    expect(resumed).toHaveLength(1)
    expect(resumed[0]).toMatchObject({ shard: 's3', from: 's1', to: 's3' })
    expect(resumed[0]!.stalledMs).toBeGreaterThanOrEqual(100 + 200)
    expect(copied.totalRowsCopied).toBeGreaterThanOrEqual(50)
    // Its metrics: the rows it copied and its retries, per move; one span per step.
    const move = {
      'ballast.sharding.slot_mover.from': 's1',
      'ballast.sharding.slot_mover.to': 's3',
    }
    expect(await otel.value('ballast.sharding.slot_mover.rows_copied', move)).toBe(
      copied.totalRowsCopied,
    )
    expect(await otel.value('ballast.sharding.slot_mover.stalls', move)).toBe(stalled.length)
    expect(
      await otel.value('ballast.sharding.slot_mover.phase', {
        ...move,
        'ballast.sharding.slot_mover.phase': 'copying',
      }),
    ).toBe(1)
    expect(otel.spansNamed('ballast.sharding.slot_mover.copy')).toHaveLength(1)
    // A write during the outage and after: through the change log.
    const [id] = [...rows].find(([, user]) => inSet(set, user))!
    await router.query(rows.get(id)!, 'UPDATE orders SET total = 5 WHERE id = ?', [id])
    const caught = await mover.catchUp(set)
    expect(await otel.value('ballast.sharding.slot_mover.log_lag', move)).toBe(caught.lagEntries)
    const cut = await mover.cutOver(set)
    expect(cut.rowsVerified).toBeGreaterThanOrEqual(50)
    expect(
      await otel.value('ballast.sharding.slot_mover.phase', {
        ...move,
        'ballast.sharding.slot_mover.phase': 'moved',
      }),
    ).toBe(1)
    await mover.purge(set, 's1')
    await expectMoved(set, rows)
    expect(await sql(url.s3!, 'SELECT total FROM orders WHERE id = ?', [id])).toEqual([
      { total: '5.00' },
    ])
  })

  it('gives up after stallTimeout with a retryable SlotMoveStalledError, stops at once when its signal aborts, and the next copy resumes', async () => {
    const set = sets[1]!
    const rows = await seed(set, 20, 'timeout')
    const mover = moverVia({ stallTimeout: 600 })
    await mover.begin(set, 's3')
    proxy.refuse()
    proxy.cut()
    try {
      const started = Date.now()
      const error = await mover.copy(set).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(SlotMoveStalledError)
      expect(error).toMatchObject({
        code: 'E_SHARD_SLOT_MOVE_STALLED',
        retryable: true,
        shard: 's3',
        operation: 'copy',
      })
      expect((error as SlotMoveStalledError).stalledMs).toBeGreaterThanOrEqual(600)
      expect(Date.now() - started).toBeLessThan(10_000)
      // While it waits, an abort of its signal ends the step with the signal's reason.
      const pause = new AbortController()
      const reason = new Error('paused by the operator')
      const waiting = mover.catchUp(set, { signal: pause.signal }).catch((e: unknown) => e)
      await new Promise((r) => setTimeout(r, 150))
      pause.abort(reason)
      expect(await waiting).toBe(reason)
    } finally {
      proxy.restore()
    }
    await mover.copy(set)
    await mover.cutOver(set)
    await mover.purge(set, 's1')
    await expectMoved(set, rows)
  })
})

describe('a catch-up pass cut half way', () => {
  it('counts every entry it applied, in the attempt the cut ended as in the one after it', async () => {
    const set = sets[4]!
    const rows = await seed(set, 30, 'catchup')
    const mover = moverVia()
    await mover.begin(set, 's3')
    await mover.copy(set)
    // Every row of the set changed after the copy: 30 log entries of the set, 3 chunks of 10.
    const moving = [...rows].filter(([, user]) => inSet(set, user))
    for (const [id, user] of moving)
      await router.query(user, 'UPDATE orders SET total = 9 WHERE id = ?', [id])
    const applied = async () =>
      Number(
        (
          (await sql(url.s3!, 'SELECT COUNT(*) AS n FROM orders WHERE total = 9')) as Array<{
            n: unknown
          }>
        )[0]!.n,
      )
    const logged = async () =>
      Number(
        (
          (await sql(url.s1!, 'SELECT COUNT(*) AS n FROM ballast_change_log')) as Array<{
            n: unknown
          }>
        )[0]!.n,
      )
    const entries = await logged()
    // Slow enough to cut the target while the pass is on its second chunk.
    proxy.setLatency(40)
    let cutAt = -1
    const stalls: number[] = []
    mover.on('stalled', (e) => {
      stalls.push(e.attempt)
      if (e.attempt === 2) proxy.restore()
    })
    try {
      const passing = mover.catchUp(set)
      // The first chunk applied and its entries deleted: the pass is on to the next one.
      while ((await logged()) === entries) await new Promise((r) => setTimeout(r, 2))
      proxy.refuse()
      proxy.cut()
      cutAt = await applied()
      const caught = await passing
      expect(stalls.slice(0, 2)).toEqual([1, 2])
      expect(cutAt).toBeGreaterThan(0)
      expect(cutAt).toBeLessThan(moving.length)
      expect(caught.rowsApplied).toBe(moving.length)
      expect(caught.entriesRead).toBeGreaterThanOrEqual(moving.length)
    } finally {
      proxy.setLatency(0)
      proxy.restore()
    }
    expect(await applied()).toBe(moving.length)
    await mover.cutOver(set)
    await mover.purge(set, 's1')
    await expectMoved(set, rows)
  })
})

describe('a move whose source stops answering', () => {
  it('stalls the copy while the source is cut (its move lock gone with the connection), takes the lock again when it is back, and finishes with every row once', async () => {
    const set = sets[3]!
    const rows = await seed(set, 40, 'source')
    const mover = moverVia({ chunkDelay: 10 }, true)
    const stalled: StalledEvent[] = []
    const resumed: ResumedEvent[] = []
    let chunks = 0
    mover.on('chunk-copied', () => {
      if (++chunks === 2) {
        // The source goes away for the mover only: the routers keep writing to it directly.
        sourceProxy.refuse()
        sourceProxy.cut()
      }
    })
    mover.on('stalled', (e) => {
      stalled.push(e)
      if (e.attempt === 3) sourceProxy.restore()
    })
    mover.on('resumed', (e) => resumed.push(e))
    await mover.begin(set, 's3')
    // A write of the set while the mover cannot see the source: the change log keeps it.
    const [id, user] = [...rows].find(([, u]) => inSet(set, u))!
    const writing = (async () => {
      while (stalled.length === 0) await new Promise((r) => setTimeout(r, 5))
      await router.query(user, 'UPDATE orders SET total = 7 WHERE id = ?', [id])
    })()
    const copied = await mover.copy(set)
    await writing
    expect(stalled.length).toBeGreaterThanOrEqual(3)
    expect(stalled.map((e) => e.shard)).toEqual(stalled.map(() => 's1'))
    expect(resumed).toHaveLength(1)
    expect(resumed[0]).toMatchObject({ shard: 's1', from: 's1', to: 's3' })
    expect(copied.totalRowsCopied).toBeGreaterThanOrEqual(40)
    await mover.catchUp(set)
    await mover.cutOver(set)
    await mover.purge(set, 's1')
    await expectMoved(set, rows)
    expect(await sql(url.s3!, 'SELECT total FROM orders WHERE id = ?', [id])).toEqual([
      { total: '7.00' },
    ])
  })
})

describe('pausing a move with a signal', () => {
  it('stops the copy after the chunk in progress with its place kept, rejects with the reason, and the next call goes on from there', async () => {
    const set = sets[2]!
    const rows = await seed(set, 30, 'pause')
    const mover = moverVia()
    await mover.begin(set, 's3')
    const pause = new AbortController()
    const reason = new Error('pause')
    let chunks = 0
    const off = mover.on('chunk-copied', () => {
      if (++chunks === 2) pause.abort(reason)
    })
    expect(await mover.copy(set, { signal: pause.signal }).catch((e: unknown) => e)).toBe(reason)
    off()
    expect(chunks).toBe(2)
    const [status] = await mover.moves()
    expect(status).toMatchObject({ from: 's1', to: 's3', phase: 'copying', copyDone: false })
    expect(status!.rowsCopied).toBeGreaterThan(0)
    // An aborted signal stops a step before it starts.
    await expect(mover.catchUp(set, { signal: AbortSignal.abort(reason) })).rejects.toBe(reason)
    const resumed = await mover.copy(set)
    expect(resumed.totalRowsCopied).toBe(status!.rowsCopied + resumed.rowsCopied)
    expect(resumed.totalRowsCopied).toBeGreaterThanOrEqual(30)
    expect((await mover.moves())[0]!.copyDone).toBe(true)
    await mover.catchUp(set)
    await mover.cutOver(set)
    await mover.purge(set, 's1')
    await expectMoved(set, rows)
  })
})
