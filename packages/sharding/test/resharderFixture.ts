import { mysqlUrl, type TempDatabase, tempDatabase } from '@ballast/testkit'
import { expect } from 'vitest'
import {
  createSlotMapStore,
  type ShardConfig,
  type SlotMapStoreOptions,
  slotFor,
} from '../src/index.js'
import { ORDERS_DDL, sql } from './fixtures.js'

/** Short timings, so a whole run takes seconds: every process of a test uses these. */
export const STORE_TIMINGS = { interval: 50, lease: 400 } as const
export const MOVER_OPTIONS = { fenceDelay: 500, chunkRows: 200 } as const
export const TABLES = [{ table: 'orders', key: 'user_id' }]

/** Three shard databases and a metadata database on the standard server; the map places s1 and s2. */
export interface Deployment {
  meta: TempDatabase
  shards: ShardConfig[]
  store: SlotMapStoreOptions
  /** Inserts orders straight into the shard the map gives each user: ids from `firstId`. */
  seed(count: number, firstId?: number): Promise<Map<number, string>>
  /** Every order on the shard the map gives its user, once; `expected` all present; returns the count per shard. */
  checkPlacement(expected: ReadonlyMap<number, string>): Promise<Record<string, number>>
  cleanup(): Promise<void>
}

export async function deployment(label: string): Promise<Deployment> {
  const server = await mysqlUrl()
  const meta = await tempDatabase(server, `${label}_meta`)
  const dbs: TempDatabase[] = []
  for (const n of [1, 2, 3]) {
    const db = await tempDatabase(server, `${label}_s${n}`)
    await sql(db.url, ORDERS_DDL)
    dbs.push(db)
  }
  const shards: ShardConfig[] = dbs.map((db, i) => ({ id: `s${i + 1}`, primary: db.url }))
  const store: SlotMapStoreOptions = { server: meta.url, ...STORE_TIMINGS }
  const init = createSlotMapStore(store)
  await init.initialize({ shards: [{ id: 's1' }, { id: 's2' }] })
  await init.close()
  const urlOf = (id: string) => shards.find((s) => s.id === id)!.primary as string

  const ownerOf = async () => {
    const reader = createSlotMapStore(store)
    try {
      const map = await reader.refresh()
      return (key: string) => reader.ownerOf(slotFor(key, map.slots))
    } finally {
      await reader.close()
    }
  }

  return {
    meta,
    shards,
    store,
    async seed(count, firstId = 1) {
      const owner = await ownerOf()
      const orders = new Map<number, string>()
      const rows = new Map<string, unknown[][]>()
      for (let i = 0; i < count; i++) {
        const id = firstId + i
        const user = `user-${id % 97}-${id}`
        orders.set(id, user)
        const shard = owner(user)
        if (!rows.has(shard)) rows.set(shard, [])
        rows.get(shard)!.push([id, user, (id % 50) + 1, Date.now()])
      }
      for (const [shard, values] of rows)
        await sql(urlOf(shard), 'INSERT INTO orders (id, user_id, total, created_at) VALUES ?', [
          values,
        ])
      return orders
    },
    async checkPlacement(expected) {
      const owner = await ownerOf()
      const counts: Record<string, number> = {}
      const seen = new Map<number, string>()
      const misplaced: string[] = []
      const duplicated: number[] = []
      for (const shard of shards) {
        const rows = (await sql(urlOf(shard.id), 'SELECT id, user_id FROM orders')) as Array<{
          id: number
          user_id: string
        }>
        counts[shard.id] = rows.length
        for (const row of rows) {
          const id = Number(row.id)
          if (seen.has(id)) duplicated.push(id)
          seen.set(id, shard.id)
          if (owner(row.user_id) !== shard.id)
            misplaced.push(`${id} on ${shard.id}, owner ${owner(row.user_id)}`)
        }
      }
      const lost = [...expected.keys()].filter((id) => !seen.has(id))
      expect({ lost: lost.length, duplicated, misplaced: misplaced.slice(0, 5) }).toEqual({
        lost: 0,
        duplicated: [],
        misplaced: [],
      })
      return counts
    },
    async cleanup() {
      await Promise.all([meta, ...dbs].map((db) => db.cleanup()))
    },
  }
}
