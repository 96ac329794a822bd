/**
 * Moving slot ranges while orders are written, several rounds in one run. Three shards as
 * databases of the standard server, the map in a fourth; all slots start on s1; each round moves
 * the next 512 slots (1/8 of the keys) to s3 while `WRITERS` loops write orders (20,000 of them,
 * inserted then updated) through a router in a process of their own (as a shop's routers are). Per round: the writers' throughput before
 * the move, once it began (the change log's triggers) and before the copy, during the copy,
 * during the catch-up (the range's writers check the fence from its first pass until the
 * cut-over, which comes fenceDelay later), during the cut-over's verification before the fence,
 * and after; the copy rate with the throttle setting; the catch-up's lag; and the write pause of
 * the range at the cut-over: the latency of every write of the moving range in flight while the
 * fence was held (from the `fenced` to the `moved` event). The table gives each round and the
 * medians; the p99 of the pause is over the writes of every round's cut-over, with and without
 * verification (alternate rounds, by default: the same run's baseline).
 * Run: pnpm exec tsx --conditions=@ballast/source bench/sharding/reshard.bench.ts
 * Env: RESHARD_ROUNDS (6, at most 8), RESHARD_ROWS (orders first, 20000), RESHARD_WRITERS (8),
 * RESHARD_CHUNK_DELAY (ms after each chunk, 0), RESHARD_LATENCY_RATIO (the adaptive throttle's
 * bound, 1.5; 0: off), RESHARD_MAX_DELAY (its longest pause, ms, 250), RESHARD_NICE_RATIO (the
 * least pause after a chunk in multiples of its time, 1), RESHARD_VERIFY (both:
 * alternate rounds; 1: every round verifies; 0: none).
 */
import { fork } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createSlotMapStore, createSlotMover } from '@ballast/sharding'
import { fmt, fmtInt, isSmoke, report } from '../harness.js'
import { benchDatabase, MYSQL_URL, run } from './servers.js'

const ROUNDS = isSmoke() ? 2 : Number(process.env.RESHARD_ROUNDS ?? 6)
const ROWS = isSmoke() ? 200 : Number(process.env.RESHARD_ROWS ?? 20_000)
const WRITERS = Number(process.env.RESHARD_WRITERS ?? 8)
const CHUNK_DELAY = Number(process.env.RESHARD_CHUNK_DELAY ?? 0)
const LATENCY_RATIO = Number(process.env.RESHARD_LATENCY_RATIO ?? 1.5)
const MAX_DELAY = Number(process.env.RESHARD_MAX_DELAY ?? 250)
const NICE_RATIO = Number(process.env.RESHARD_NICE_RATIO ?? 1)
// 'both': odd rounds verify, even rounds do not (the same run's baseline of the pause).
const VERIFY_MODE = process.env.RESHARD_VERIFY ?? 'both'
const verifies = (round: number) => (VERIFY_MODE === 'both' ? round % 2 === 0 : VERIFY_MODE !== '0')
const PHASE_MS = isSmoke() ? 200 : 3000
const SPAN_SLOTS = 512
const THROTTLE = `chunkRows 1000, chunkDelay ${CHUNK_DELAY} ms, niceRatio ${NICE_RATIO}, latencyRatio ${LATENCY_RATIO}${LATENCY_RATIO > 0 ? `, maxThrottleDelay ${MAX_DELAY} ms` : ''}`

const DDL =
  'CREATE TABLE orders (id BIGINT PRIMARY KEY, user_id VARCHAR(64) NOT NULL, total DECIMAL(10,2) NOT NULL, created_at BIGINT NOT NULL, KEY (user_id))'

const now = () => performance.timeOrigin + performance.now()
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted.length === 0 ? 0 : sorted[Math.floor((sorted.length - 1) / 2)]!
}
const percentile = (values: number[], q: number) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0
}

const dbs = await Promise.all(
  ['meta', 's1', 's2', 's3'].map((label) => benchDatabase(MYSQL_URL, `reshard_${label}`)),
)
const [meta, ...shardDbs] = dbs as [(typeof dbs)[0], ...typeof dbs]
try {
  for (const db of shardDbs) await run(db.url, DDL)
  const shards = shardDbs.map((db, i) => ({ id: `s${i + 1}`, primary: db.url }))
  for (let i = 0; i < ROWS; i += 1000) {
    const rows = Array.from({ length: Math.min(1000, ROWS - i) }, (_, j) => {
      const id = i + j + 1
      return [id, `user-${id % 2000}`, 10, Date.now()]
    })
    await run(shards[0]!.primary, 'INSERT INTO orders (id, user_id, total, created_at) VALUES ?', [
      rows,
    ])
  }

  const store = createSlotMapStore({ server: meta.url, interval: 200, lease: '2s' })
  await store.initialize({ shards: [{ id: 's1' }] })
  const movers = [true, false].map((verify) =>
    createSlotMover({
      store,
      shards,
      tables: [{ table: 'orders', key: 'user_id' }],
      fenceDelay: '2s',
      chunkDelay: CHUNK_DELAY,
      latencyRatio: LATENCY_RATIO,
      maxThrottleDelay: MAX_DELAY,
      niceRatio: NICE_RATIO,
      verify,
    }),
  )
  const fenced = new Map<number, { fencedAt?: number; movedAt?: number }>()
  for (const mover of movers)
    mover.on('phase-changed', (e) => {
      const entry = fenced.get(e.start) ?? {}
      if (e.phase === 'fenced') entry.fencedAt = now()
      if (e.phase === 'moved') entry.movedAt = now()
      fenced.set(e.start, entry)
    })

  // The writers, in a process of their own.
  const here = dirname(fileURLToPath(import.meta.url))
  const child = fork(
    join(here, 'reshardWriters.ts'),
    [meta.url, JSON.stringify(shards), String(WRITERS), '10000000'],
    { execArgv: process.execArgv },
  )
  type Samples = { at: number[]; ms: number[]; slots: number[]; failed?: string }
  const next = <T>() => new Promise<T>((resolve) => child.once('message', (m) => resolve(m as T)))
  await next<{ ready: boolean }>()
  const flush = async (): Promise<Samples> => {
    const answer = next<Samples>()
    child.send('flush')
    const samples = await answer
    if (samples.failed !== undefined) throw new Error(`a writer failed: ${samples.failed}`)
    return samples
  }

  interface Round {
    checked: boolean
    before: number
    moving: number
    copy: number
    catchUp: number
    verify: number
    after: number
    copyRowsPerSec: number
    rowsCopied: number
    passes: number
    lagEntries: number
    verifySeconds: number
    fenceMs: number
    longestPauseMs: number
    pauses: number[]
    rowsApplied: number
    rowsVerified: number
  }
  const rounds: Round[] = []
  for (let r = 0; r < ROUNDS; r++) {
    const span = { start: r * SPAN_SLOTS, end: (r + 1) * SPAN_SLOTS }
    const mover = movers[verifies(r) ? 0 : 1]!
    await flush()
    const t0 = now()
    await sleep(PHASE_MS)
    const t1 = now()
    await mover.begin(span, 's3')
    const t2 = now()
    await sleep(PHASE_MS)
    const t3 = now()
    const copied = await mover.copy(span)
    const t4 = now()
    process.stderr.write(`round ${r + 1}/${ROUNDS}: copied ${copied.rowsCopied} rows\n`)
    // Catch up (the routers check the fence from the first pass) until what is left is under one
    // chunk (at most 20 passes) and fenceDelay has passed, as the resharder does: the cut-over
    // does the rest.
    let caught = await mover.catchUp(span)
    let passes = 1
    while ((caught.lagEntries > 1000 && passes < 20) || caught.fenceInMs > 0) {
      if (caught.lagEntries <= 1000) await sleep(Math.min(caught.fenceInMs, 200))
      caught = await mover.catchUp(span)
      passes++
    }
    const t5 = now()
    const cut = await mover.cutOver(span)
    const t6 = now()
    await sleep(PHASE_MS)
    const t7 = now()
    const samples = await flush()
    await mover.purge(span, 's1')
    const { fencedAt = t5, movedAt = t6 } = fenced.get(span.start) ?? {}
    const rate = (from: number, to: number) => {
      let n = 0
      for (const at of samples.at) if (at >= from && at < to) n++
      return n / ((to - from) / 1000)
    }
    // Writes of the range in flight at any time while the fence was held.
    const pauses: number[] = []
    samples.at.forEach((at, i) => {
      const slot = samples.slots[i]!
      if (slot < span.start || slot >= span.end) return
      if (at < movedAt && at + samples.ms[i]! > fencedAt) pauses.push(samples.ms[i]!)
    })
    rounds.push({
      checked: verifies(r),
      before: rate(t0, t1),
      moving: rate(t2, t3),
      copy: rate(t3, t4),
      catchUp: rate(t4, t5),
      verify: rate(t5, fencedAt),
      after: rate(t6, t7),
      copyRowsPerSec: copied.rowsCopied / ((t4 - t3) / 1000),
      rowsCopied: copied.rowsCopied,
      passes,
      lagEntries: caught.lagEntries,
      verifySeconds: (fencedAt - t5) / 1000,
      fenceMs: movedAt - fencedAt,
      longestPauseMs: Math.max(0, ...pauses),
      pauses,
      rowsApplied: cut.rowsApplied,
      rowsVerified: cut.rowsVerified,
    })
  }
  const stopped = next<{ stopped: boolean }>()
  child.send('stop')
  await stopped

  const pct = (part: number, whole: number) => `${fmtInt((100 * part) / whole)} %`
  const row = (name: string, x: Round) => [
    name,
    x.checked ? 'yes' : 'no',
    fmtInt(x.before),
    `${fmtInt(x.moving)} (${pct(x.moving, x.before)})`,
    `${fmtInt(x.copy)} (${pct(x.copy, x.before)}; ${pct(x.copy, x.moving)})`,
    `${fmtInt(x.catchUp)} (${pct(x.catchUp, x.before)})`,
    `${fmtInt(x.verify)} (${pct(x.verify, x.before)})`,
    fmtInt(x.copyRowsPerSec),
    `${fmtInt(x.lagEntries)} (${x.passes})`,
    fmt(x.verifySeconds),
    fmt(x.fenceMs),
    fmt(x.longestPauseMs),
  ]
  const medianOf = (some: Round[]) =>
    Object.fromEntries(
      (Object.keys(some[0]!) as Array<keyof Round>).map((k) => [
        k,
        k === 'pauses'
          ? []
          : k === 'checked'
            ? some[0]!.checked
            : median(some.map((x) => x[k] as number)),
      ]),
    ) as unknown as Round
  const mid = medianOf(rounds)
  const verified = rounds.filter((x) => x.checked)
  const unverified = rounds.filter((x) => !x.checked)
  const pauseNote = (some: Round[], what: string) => {
    const pauses = some.flatMap((x) => x.pauses)
    return `${what}: p99 ${fmt(percentile(pauses, 0.99))} ms, longest ${fmt(Math.max(0, ...pauses))} ms, over the ${pauses.length} writes of the range in flight while the fence was held in ${some.length} cut-overs.`
  }
  // Ratios: the median of each round's own ratio (a round's phases share its load).
  const ratio = (part: keyof Round, whole: keyof Round) =>
    median(rounds.map((x) => (x[part] as number) / (x[whole] as number)))
  report({
    package: 'sharding',
    name: 'reshard',
    title: `Moving 512 slots (1/8 of the keys) from s1 to s3 under ${WRITERS} writers, ${ROUNDS} rounds (${fmtInt(ROWS)} orders first; ${THROTTLE})`,
    columns: [
      'round',
      'verify',
      'writes/s before',
      'moving, before the copy (triggers)',
      'during the copy (of before; of moving)',
      'during the catch-up (fence checks)',
      'during the verification before the fence',
      'copy rows/s',
      'lag left (passes)',
      'verification before the fence (s)',
      'fence held (ms)',
      'longest write of the range in the fence (ms)',
    ],
    rows: [
      ...rounds.map((x, i) => row(String(i + 1), x)),
      ...(verified.length > 0 ? [row('**median, verify**', medianOf(verified))] : []),
      ...(unverified.length > 0 ? [row('**median, no verify**', medianOf(unverified))] : []),
    ],
    notes: [
      ...(verified.length > 0
        ? [
            pauseNote(
              verified,
              'Write pause of the moving range at the cut-over with verification (the copy compared before the fence; under it the rows the log touched since)',
            ),
          ]
        : []),
      ...(unverified.length > 0
        ? [pauseNote(unverified, 'Without verification (the same run)')]
        : []),
      `Writers' throughput, median of each round's ratio: ${pct(ratio('moving', 'before'), 1)} of before once the move began (before the copy), ${pct(ratio('copy', 'before'), 1)} of before during the copy (${pct(ratio('copy', 'moving'), 1)} of the moving phase before it), ${pct(ratio('catchUp', 'before'), 1)} during the catch-up (the range's writers check the fence), ${pct(ratio('after', 'before'), 1)} after the cut-over.`,
      `Copy: median ${fmtInt(mid.copyRowsPerSec)} rows/s of the range (${fmtInt(mid.rowsCopied)} rows; the scan reads every row of the table) with ${THROTTLE}; catch-up: median ${fmtInt(mid.lagEntries)} log entries left for the cut-over.`,
    ],
    data: { rounds },
  })
  for (const mover of movers) await mover.close()
  await store.close()
} finally {
  await Promise.all(dbs.map((db) => db.drop()))
}
