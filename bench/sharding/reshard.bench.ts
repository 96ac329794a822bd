/**
 * Moving one slot range while orders are written: the writers' throughput and p99 before, during
 * the copy and after; the copy rate with its throttle; the catch-up's lag; the write pause of the
 * range at the cut-over (the longest and the p99 latency of writes of the moving range while
 * cutOver ran). Three shards as databases of the standard server, the map in a fourth; all
 * slots start on s1 and slots 0-511 (1/8 of the keys) move to s3.
 * Run: pnpm exec tsx --conditions=@ballast/source bench/sharding/reshard.bench.ts
 * Env: RESHARD_ROWS (orders first, 20000), RESHARD_CHUNK_DELAY (ms after each copy chunk, 0),
 * RESHARD_WRITERS (concurrent writers, 8), RESHARD_VERIFY (0: cut over without comparing the copies; 1).
 */
import {
  createShardRouter,
  createSlotMapStore,
  createSlotMover,
  type ShardRouter,
  slotFor,
} from '@ballast/sharding'
import { fmt, fmtInt, isSmoke, report } from '../harness.js'
import { benchDatabase, MYSQL_URL, run } from './servers.js'

const ROWS = isSmoke() ? 200 : Number(process.env.RESHARD_ROWS ?? 20_000)
const CHUNK_DELAY = Number(process.env.RESHARD_CHUNK_DELAY ?? 0)
const WRITERS = Number(process.env.RESHARD_WRITERS ?? 8)
const VERIFY = process.env.RESHARD_VERIFY !== '0'
const PHASE_MS = isSmoke() ? 200 : 3000
const SPAN = { start: 0, end: 512 }
const USERS = 2000

const DDL =
  'CREATE TABLE orders (id BIGINT PRIMARY KEY, user_id VARCHAR(64) NOT NULL, total DECIMAL(10,2) NOT NULL, created_at BIGINT NOT NULL, KEY (user_id))'

const dbs = await Promise.all(
  ['meta', 's1', 's2', 's3'].map((label) => benchDatabase(MYSQL_URL, `reshard_${label}`)),
)
const [meta, ...shardDbs] = dbs as [(typeof dbs)[0], ...typeof dbs]
try {
  for (const db of shardDbs) await run(db.url, DDL)
  const shards = shardDbs.map((db, i) => ({ id: `s${i + 1}`, primary: db.url }))
  const users = Array.from({ length: USERS }, (_, i) => `user-${i}`)
  const moving = (user: string) => {
    const slot = slotFor(user, 4096)
    return slot >= SPAN.start && slot < SPAN.end
  }
  let nextId = 1
  for (let i = 0; i < ROWS; i += 1000) {
    const rows = Array.from({ length: Math.min(1000, ROWS - i) }, () => {
      const id = nextId++
      return [id, users[id % USERS], 10, Date.now()]
    })
    await run(shards[0]!.primary, 'INSERT INTO orders (id, user_id, total, created_at) VALUES ?', [
      rows,
    ])
  }

  const store = createSlotMapStore({ server: meta.url, interval: 200, lease: '2s' })
  await store.initialize({ shards: [{ id: 's1' }] })
  const router = createShardRouter({ shards, slotMap: store, healthCheckInterval: 0 })
  const mover = createSlotMover({
    store,
    shards,
    tables: [{ table: 'orders', key: 'user_id' }],
    fenceDelay: '2s',
    chunkDelay: CHUNK_DELAY,
    verify: VERIFY,
  })

  interface Sample {
    at: number
    us: number
    moving: boolean
  }
  /** Writers that insert orders until `stop()`; every write's latency, with when it started. */
  const writers = (target: ShardRouter) => {
    const samples: Sample[] = []
    let stop = false
    const loop = async (w: number) => {
      for (let i = w; !stop; i += WRITERS) {
        const user = users[(i * 7919) % USERS]!
        const id = nextId++
        const t0 = performance.now()
        await target.query(
          user,
          'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, ?, ?)',
          [id, user, 10, Date.now()],
        )
        samples.push({ at: t0, us: (performance.now() - t0) * 1000, moving: moving(user) })
      }
    }
    const running = Promise.all(Array.from({ length: WRITERS }, (_, w) => loop(w)))
    return {
      samples,
      stop: async () => {
        stop = true
        await running
      },
    }
  }
  const percentile = (values: number[], q: number) => {
    const sorted = [...values].sort((a, b) => a - b)
    return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0
  }
  const window = (samples: Sample[], from: number, to: number, onlyMoving = false) =>
    samples.filter((s) => s.at >= from && s.at < to && (!onlyMoving || s.moving))
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

  const load = writers(router)
  const t0 = performance.now()
  await sleep(PHASE_MS)
  const t1 = performance.now()
  await mover.begin(SPAN, 's3')
  const t2 = performance.now()
  const copied = await mover.copy(SPAN)
  const t3 = performance.now()
  // Catch up until what is left is under one chunk (at most 20 passes): the cut-over applies the rest.
  let caught = await mover.catchUp(SPAN)
  let passes = 1
  let entries = caught.entriesRead
  while (caught.lagEntries > 1000 && passes < 20) {
    caught = await mover.catchUp(SPAN)
    entries += caught.entriesRead
    passes++
  }
  const t4 = performance.now()
  const cut = await mover.cutOver(SPAN)
  const t5 = performance.now()
  await sleep(PHASE_MS)
  const t6 = performance.now()
  await load.stop()
  await mover.purge(SPAN, 's1')

  const phase = (name: string, from: number, to: number) => {
    const s = window(load.samples, from, to)
    return [
      name,
      fmt((to - from) / 1000),
      fmtInt(s.length / ((to - from) / 1000)),
      fmt(
        percentile(
          s.map((x) => x.us),
          0.99,
        ) / 1000,
      ),
    ]
  }
  const during = window(load.samples, t4, t5, true).map((s) => s.us / 1000)
  report({
    package: 'sharding',
    name: 'reshard',
    title: `Moving slots 0-511 of ${fmtInt(ROWS)} orders (1/8 of the keys) from s1 to s3 under ${WRITERS} writers`,
    columns: ['phase', 'seconds', 'writes/s', 'p99 write (ms)'],
    rows: [
      phase('before', t0, t1),
      phase('begin (routers start checking the fence)', t1, t2),
      phase(`copy (${fmtInt(copied.rowsCopied)} rows, chunkDelay ${CHUNK_DELAY} ms)`, t2, t3),
      phase(
        `catch-up (${passes} passes, ${fmtInt(entries)} log entries, ${fmtInt(caught.lagEntries)} left)`,
        t3,
        t4,
      ),
      phase(
        `cut-over (${fmtInt(cut.rowsApplied)} rows from the log, ${fmtInt(cut.rowsVerified)} verified)`,
        t4,
        t5,
      ),
      phase('after', t5, t6),
    ],
    notes: [
      `Copy rate: ${fmtInt(copied.rowsCopied / ((t3 - t2) / 1000))} rows/s (chunkRows 1000, chunkDelay ${CHUNK_DELAY} ms).`,
      `Write pause of the moving range at the cut-over: ${during.length} writes of it started while cutOver ran; the longest took ${fmt(Math.max(0, ...during))} ms, p99 ${fmt(percentile(during, 0.99))} ms (cutOver took ${fmt(t5 - t4)} ms, ${VERIFY ? 'verification of the range on both sides included' : 'without verification'}).`,
    ],
    data: {
      copied,
      caught,
      cut: { ...cut, map: undefined },
      phasesMs: [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5],
    },
  })
  await mover.close()
  await router.close()
  await store.close()
} finally {
  await Promise.all(dbs.map((db) => db.drop()))
}
