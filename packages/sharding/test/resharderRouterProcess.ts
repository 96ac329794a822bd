// A router process of its own for the resharder's load test: it routes by the shared slot map and
// places orders (and updates some) as fast as a few loops can, reading each order back with
// read-your-writes, until the parent says stop; then it reports every acknowledged write.
// argv: <store options JSON> <shards JSON> <worker number> <query timeout ms>
import { createShardRouter, createSlotMapStore } from '../src/index.js'

const [storeJson, shardsJson, worker, queryTimeout] = process.argv.slice(2) as [
  string,
  string,
  string,
  string,
]
const store = createSlotMapStore(JSON.parse(storeJson))
await store.load()
const router = createShardRouter({
  shards: JSON.parse(shardsJson),
  slotMap: store,
  healthCheckInterval: 0,
  queryTimeout: Number(queryTimeout),
})

/** id → [user, total, acknowledged at (ms since epoch)] of acknowledged writes. */
const acked = new Map<number, [string, number, number]>()
/** Writes whose outcome is unknown (they failed): their order may or may not exist, with either total. */
const uncertain = new Set<number>()
const errors: string[] = []
let stale = 0
let reads = 0
let stopping = false
let nextId = (Number(worker) + 1) * 1_000_000

async function loop(lane: number): Promise<void> {
  for (let i = 0; !stopping; i++) {
    const id = nextId++
    const user = `w${worker}-${lane}-${i % 150}`
    try {
      await router.query(
        user,
        'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, ?, ?)',
        [id, user, 1, Date.now()],
      )
      acked.set(id, [user, 1, Date.now()])
      const rows = (await router.query(user, 'SELECT id FROM orders WHERE id = ? AND user_id = ?', [
        id,
        user,
      ])) as unknown[]
      reads++
      if (rows.length !== 1) stale++
      if (i % 4 === 3) {
        // Update an earlier order of this lane: changes during the copy go through the change log.
        const earlier = id - 3
        const row = acked.get(earlier)
        if (row !== undefined && !uncertain.has(earlier)) {
          const total = row[1] + 1
          try {
            await router.query(row[0], 'UPDATE orders SET total = ? WHERE id = ? AND user_id = ?', [
              total,
              earlier,
              row[0],
            ])
            acked.set(earlier, [row[0], total, Date.now()])
          } catch (error) {
            uncertain.add(earlier)
            errors.push(`update ${earlier}: ${(error as Error).message}`)
          }
        }
      }
    } catch (error) {
      uncertain.add(id)
      errors.push(`insert ${id}: ${(error as Error).message}`)
    }
    await new Promise((r) => setTimeout(r, 2))
  }
}

process.on('message', (message) => {
  if (message === 'stop') stopping = true
})
process.send?.({ ready: true })
await Promise.all([0, 1, 2].map((lane) => loop(lane)))
// Sent with a callback, and awaited: a large report still in the channel's buffer when the
// process disconnects is lost (seen: every router exited 0 and the parent never got a report).
await new Promise<void>((resolve, reject) =>
  process.send?.(
    {
      acked: [...acked],
      uncertain: [...uncertain],
      errors: errors.slice(0, 10),
      errorCount: errors.length,
      stale,
      reads,
      stats: router.stats(),
    },
    undefined,
    undefined,
    (error: Error | null) => (error ? reject(error) : resolve()),
  ),
)
await router.close()
await store.close()
process.disconnect?.()
