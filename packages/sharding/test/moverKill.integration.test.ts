import { type ChildProcess, fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { mysqlUrl, type TempDatabase, tempDatabase } from '@ballast/testkit'
import mysql from 'mysql2/promise'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  createShardRouter,
  createSlotMapStore,
  createSlotMover,
  type ShardConfig,
  type ShardRouter,
  type SlotMapStore,
  type SlotMover,
  type SlotSpan,
  slotFor,
} from '../src/index.js'
import { ORDERS_DDL, sql } from './fixtures.js'

// The process that runs a move is SIGKILLed in the copy, in the catch-up and while it holds the
// fence; the next run resumes, and every acknowledged write is on the new owner once.
// Each test takes a few seconds (a child process starts with tsx).

const WORKER = fileURLToPath(new URL('./moverProcess.ts', import.meta.url))

/** Two shard databases with an orders table on the standard server (this file needs no replica). */
let topo: { standard: string[]; cleanup(): Promise<void> }
let meta: TempDatabase
let shards: ShardConfig[]
let store: SlotMapStore
let routerStore: SlotMapStore
let router: ShardRouter
let mover: SlotMover
const children: ChildProcess[] = []

beforeAll(async () => {
  const server = await mysqlUrl()
  const dbs = [
    await tempDatabase(server, 'mover_kill_s0'),
    await tempDatabase(server, 'mover_kill_s1'),
  ]
  for (const db of dbs) await sql(db.url, ORDERS_DDL)
  topo = {
    standard: dbs.map((db) => db.url),
    cleanup: async () => {
      await Promise.all(dbs.map((db) => db.cleanup()))
    },
  }
  meta = await tempDatabase(await mysqlUrl(), 'mover_kill_meta')
  shards = [
    { id: 's1', primary: topo.standard[0]! },
    { id: 's3', primary: topo.standard[1]! },
  ]
  store = createSlotMapStore({ server: meta.url, interval: 30, lease: 300 })
  await store.initialize({ shards: [{ id: 's1' }] })
  routerStore = createSlotMapStore({ server: meta.url, interval: 30, lease: 300 })
  await routerStore.load()
  router = createShardRouter({ shards, slotMap: routerStore, healthCheckInterval: 0 })
  mover = createSlotMover({
    store,
    shards,
    tables: [{ table: 'orders', key: 'user_id' }],
    fenceDelay: 300,
  })
})

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL')
  await mover?.close()
  await router?.close()
  await Promise.all([store?.close(), routerStore?.close()])
  await meta?.cleanup()
  await topo?.cleanup()
})

/** Starts the mover process on a step; resolves once it has started the step. */
async function run(
  span: SlotSpan,
  step: 'copy' | 'catchUp' | 'cutOver',
  env: Record<string, string>,
): Promise<ChildProcess> {
  const child = fork(
    WORKER,
    [meta.url, JSON.stringify(shards), String(span.start), String(span.end), step],
    {
      execArgv: ['--import', 'tsx', '--conditions=@ballast/source'],
      env: { ...process.env, ...env },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    },
  )
  children.push(child)
  await new Promise<void>((resolve, reject) => {
    child.once('message', () => resolve())
    child.once('exit', (code) =>
      reject(new Error(`mover process exited with ${code} before it started`)),
    )
  })
  return child
}

async function kill(child: ChildProcess): Promise<void> {
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGKILL')
  await exited
}

async function until(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 20_000
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

let spans = 0
/** A span of 64 slots of its own, and `count` keys in it. */
function span(count: number): { span: SlotSpan; keys: string[] } {
  const start = 64 * spans++
  const range = { start, end: start + 64 }
  const keys: string[] = []
  for (let i = 0; keys.length < count; i++) {
    const slot = slotFor(`kill-${start}-${i}`, 4096)
    if (slot >= range.start && slot < range.end) keys.push(`kill-${start}-${i}`)
  }
  return { span: range, keys }
}

let nextId = 1
/** Acknowledged writes: id → total. */
const model = new Map<number, { user: string; total: number }>()
async function insert(user: string): Promise<number> {
  const id = nextId++
  await router.query(
    user,
    'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, ?, ?)',
    [id, user, 1, Date.now()],
  )
  model.set(id, { user, total: 1 })
  return id
}
async function update(id: number, total: number): Promise<void> {
  const row = model.get(id)!
  await router.query(row.user, 'UPDATE orders SET total = ? WHERE id = ? AND user_id = ?', [
    total,
    id,
    row.user,
  ])
  model.set(id, { user: row.user, total })
}

/** Every acknowledged order of `keys` is on s3 once, with its last total, and none on s1 after the purge. */
async function expectMoved(keys: string[]): Promise<void> {
  await mover.purge(spanOf(keys), 's1')
  const rows = (await sql(
    shards[1]!.primary as string,
    'SELECT id, total FROM orders WHERE user_id IN (?) ORDER BY id',
    [keys],
  )) as Array<{ id: number; total: string }>
  const expected = [...model]
    .filter(([, row]) => keys.includes(row.user))
    .map(([id, row]) => ({ id, total: row.total }))
  expect(rows.map((r) => ({ id: Number(r.id), total: Number(r.total) }))).toEqual(expected)
  expect(
    await sql(shards[0]!.primary as string, 'SELECT id FROM orders WHERE user_id IN (?)', [keys]),
  ).toEqual([])
}
const spanByKey = new Map<string, SlotSpan>()
const spanOf = (keys: string[]) => spanByKey.get(keys[0]!)!

describe('a mover process killed with SIGKILL', () => {
  it('in the copy: the next run goes on from the chunk kept in the store', async () => {
    const { span: s, keys } = span(40)
    spanByKey.set(keys[0]!, s)
    const ids: number[] = []
    for (const key of keys) ids.push(await insert(key))
    await mover.begin(s, 's3')
    const child = await run(s, 'copy', { CHUNK_ROWS: '4', CHUNK_DELAY: '200' })
    const copied = async () => {
      const rows = (await sql(
        meta.url,
        'SELECT progress FROM ballast_slot_map_moves WHERE source = ?',
        ['s1'],
      )) as Array<{ progress: string }>
      return rows[0] === undefined
        ? 0
        : (JSON.parse(rows[0].progress) as { rowsCopied: number }).rowsCopied
    }
    await until(async () => (await copied()) >= 8, 'a few chunks copied')
    await kill(child)
    const before = await copied()
    expect(before).toBeLessThan(keys.length)
    await update(ids[0]!, 7) // a write after the kill, through the change log
    const resumed = await mover.copy(s)
    expect(resumed.rowsCopied).toBeLessThan(keys.length)
    await mover.catchUp(s)
    const cut = await mover.cutOver(s)
    expect(cut.rowsVerified).toBe(keys.length)
    await expectMoved(keys)
  })

  it('in the catch-up: the entries it had not deleted are applied again', async () => {
    const { span: s, keys } = span(10)
    spanByKey.set(keys[0]!, s)
    const ids: number[] = []
    for (const key of keys) ids.push(await insert(key))
    await mover.begin(s, 's3')
    await mover.copy(s)
    for (let i = 0; i < 120; i++) await update(ids[i % ids.length]!, 100 + i)
    const logged = async () => {
      const [{ n }] = (await sql(
        shards[0]!.primary as string,
        'SELECT COUNT(*) AS n FROM ballast_change_log',
      )) as [{ n: number }]
      return Number(n)
    }
    const before = await logged()
    const child = await run(s, 'catchUp', { CHUNK_ROWS: '3', CHUNK_DELAY: '150' })
    await until(async () => (await logged()) <= before - 9, 'some entries applied')
    await kill(child)
    expect(await logged()).toBeGreaterThan(0)
    await mover.catchUp(s)
    await mover.cutOver(s)
    await expectMoved(keys)
  })

  it('holding the fence: the server rolls it back, the waiting write lands on the source, and the next run cuts over', async () => {
    const { span: s, keys } = span(60)
    spanByKey.set(keys[0]!, s)
    for (const key of keys) await insert(key)
    await mover.begin(s, 's3')
    // The mover, holding the fence, will stop at the target's fence row of the span's first slot,
    // which this test holds locked: it stays in the fence until it is killed.
    const target = await mysql.createConnection({ uri: shards[1]!.primary as string })
    await target.query(
      'CREATE TABLE IF NOT EXISTS ballast_slot_fence (slot INT UNSIGNED NOT NULL PRIMARY KEY, state VARCHAR(16) NOT NULL, moved_to VARCHAR(64) NOT NULL, updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))',
    )
    await target.query(
      "INSERT IGNORE INTO ballast_slot_fence (slot, state, moved_to) VALUES (?, 'copying', 's3')",
      [s.start],
    )
    await target.query('START TRANSACTION')
    await target.query('SELECT slot FROM ballast_slot_fence WHERE slot = ? FOR UPDATE', [s.start])
    // No bulk copy: the whole span would be copied under the fence.
    const child = await run(s, 'cutOver', {})
    // Whether the fence rows are locked: a shared lock of our own gives up after a second.
    const locked = async () => {
      const connection = await mysql.createConnection({ uri: shards[0]!.primary as string })
      try {
        await connection.query('SET SESSION innodb_lock_wait_timeout = 1')
        await connection.query('START TRANSACTION')
        await connection.query(
          'SELECT slot FROM ballast_slot_fence WHERE slot = ? LOCK IN SHARE MODE',
          [s.start],
        )
        return false
      } catch (error) {
        if ((error as { code?: string }).code === 'ER_LOCK_WAIT_TIMEOUT') return true
        throw error
      } finally {
        await connection.end()
      }
    }
    await until(locked, 'the mover holding the fence')
    // A write of the span, sent now, waits on the lock (still held a second later).
    let pending = true
    const waiting = insert(keys[0]!).finally(() => {
      pending = false
    })
    expect(await locked()).toBe(true)
    expect(pending).toBe(true)
    await kill(child)
    await target.query('ROLLBACK')
    await target.end()
    const id = await waiting
    // The fence was rolled back: the write went to s1, which still owns the span.
    expect(
      await sql(shards[0]!.primary as string, 'SELECT id FROM orders WHERE id = ?', [id]),
    ).toEqual([{ id }])
    expect(store.ownerOf(s.start)).toBe('s1')
    const cut = await mover.cutOver(s)
    expect(cut.rowsCopied).toBe(keys.length + 1)
    await expectMoved(keys)
  })
})
