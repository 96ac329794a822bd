/**
 * The order writers of reshard.bench.ts, in a process of their own (as a shop's router processes
 * are): `WRITERS` loops write orders through a router that follows the slot map, and record
 * each write's start (epoch ms), latency (ms) and slot. Each write places order `first + n %
 * 20,000` (an insert the first time, an update of the same row after), so the table stops growing
 * and every round of the bench copies about as much. The parent sends `'flush'` to get the
 * samples so far and `'stop'` to end.
 * argv: <meta url> <shards JSON> <writers> <first order id>
 */
import { createShardRouter, createSlotMapStore, slotFor } from '@ballast/sharding'

const [metaUrl, shardsJson, writersArg, firstId] = process.argv.slice(2) as [
  string,
  string,
  string,
  string,
]
const WRITERS = Number(writersArg)
const USERS = 2000
const ORDERS = 20_000
const users = Array.from({ length: USERS }, (_, i) => `user-${i}`)
const now = () => performance.timeOrigin + performance.now()

const store = createSlotMapStore({ server: metaUrl, interval: 200, lease: '2s' })
await store.load()
const router = createShardRouter({
  shards: JSON.parse(shardsJson),
  slotMap: store,
  healthCheckInterval: 0,
})

let at: number[] = []
let ms: number[] = []
let slots: number[] = []
let stop = false
let written = 0
let failed: unknown
const loop = async () => {
  while (!stop) {
    const id = Number(firstId) + (written++ % ORDERS)
    // An order's user never changes: its row stays on its key's shard.
    const user = users[(id * 7919) % USERS]!
    const t0 = now()
    await router.query(
      user,
      'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE total = VALUES(total), created_at = VALUES(created_at)',
      [id, user, 10 + (written % 90), Date.now()],
    )
    at.push(t0)
    ms.push(now() - t0)
    slots.push(slotFor(user, 4096))
  }
}
const running = Promise.all(Array.from({ length: WRITERS }, () => loop())).catch(
  (error: unknown) => {
    failed = error
  },
)

process.on('message', async (message: string) => {
  if (message === 'flush') {
    process.send!({ at, ms, slots, failed: failed === undefined ? undefined : String(failed) })
    at = []
    ms = []
    slots = []
  } else if (message === 'stop') {
    stop = true
    await running
    await router.close()
    await store.close()
    process.send!({ stopped: true }, () => process.exit(0))
  }
})
// The bench died: so do its writers.
process.on('disconnect', () => process.exit(1))
process.send!({ ready: true })
