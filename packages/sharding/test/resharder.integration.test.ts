import { type ChildProcess, fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  createResharder,
  createSlotMapStore,
  planResharding,
  ReshardBusyError,
  type Resharder,
  type ReshardMoveProgressedEvent,
  type SlotMapStore,
} from '../src/index.js'
import { sql } from './fixtures.js'
import { type Deployment, deployment, TABLES } from './resharderFixture.js'

// The first failure test: 2 -> 3 shards while several router processes place orders
// on the same slot map, and an abort after the copy. Short lease, fence delay and grace keep
// each run to seconds.

const ROUTER = fileURLToPath(new URL('./resharderRouterProcess.ts', import.meta.url))
const two = [{ id: 's1' }, { id: 's2' }]
const three = [...two, { id: 's3' }]
/**
 * The routers' statement timeout; the mover waits the lease (400 ms) plus this before it may
 * fence. It must cover a write that waits out a cut-over's write pause and the map's flip: with
 * 1.5 s, two writes of 4,000 failed (refused, retried until their time ran out) while the whole
 * package's tests loaded this 2-core machine.
 */
const QUERY_TIMEOUT = 5000
const MOVER = { fenceDelay: 400 + QUERY_TIMEOUT, chunkRows: 200 }

interface RouterReport {
  acked: Array<[number, [string, number, number]]>
  uncertain: number[]
  errors: string[]
  errorCount: number
  stale: number
  reads: number
}

let deploy: Deployment
let store: SlotMapStore
let resharder: Resharder
const children = new Set<ChildProcess>()

beforeEach(async () => {
  deploy = await deployment('resharder')
  store = createSlotMapStore(deploy.store)
  await store.load()
  resharder = createResharder({
    store,
    shards: deploy.shards,
    tables: TABLES,
    mover: MOVER,
    grace: 1000,
    interval: 100,
    heartbeatTimeout: 1000,
  })
})

afterEach(async () => {
  for (const child of children) child.kill('SIGKILL')
  await resharder?.close()
  await store?.close()
  await deploy?.cleanup()
})

afterAll(() => {
  for (const child of children) child.kill('SIGKILL')
})

/** Starts `count` router processes writing orders; resolves once they all write. */
async function routers(count: number): Promise<{ stop(): Promise<RouterReport[]> }> {
  const started: Array<{
    child: ChildProcess
    report: Promise<RouterReport>
    ready: Promise<void>
  }> = []
  for (let worker = 0; worker < count; worker++) {
    const child = fork(
      ROUTER,
      [
        JSON.stringify(deploy.store),
        JSON.stringify(deploy.shards),
        String(worker),
        String(QUERY_TIMEOUT),
      ],
      {
        execArgv: ['--import', 'tsx', '--conditions=@ballast/source'],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      },
    )
    children.add(child)
    child.once('exit', () => children.delete(child))
    const ready = new Promise<void>((resolve, reject) => {
      child.once('message', () => resolve())
      child.once('exit', (code) => reject(new Error(`router ${worker} exited with ${code}`)))
    })
    const report = new Promise<RouterReport>((resolve, reject) => {
      child.on('message', (message) => {
        if (typeof message === 'object' && message !== null && 'acked' in message)
          resolve(message as RouterReport)
      })
      // A router that ends without its report fails the test instead of hanging it.
      child.once('close', (code, signal) =>
        reject(new Error(`router ${worker} exited (${code ?? signal}) without its report`)),
      )
    })
    started.push({ child, report, ready })
  }
  // Started together: each takes seconds to load tsx on a busy machine.
  await Promise.all(started.map((s) => s.ready))
  return {
    async stop() {
      for (const { child } of started) child.send('stop')
      return Promise.all(started.map((s) => s.report))
    },
  }
}

/** What the routers acknowledged: every order with its last total, and those of unknown outcome. */
function merge(reports: RouterReport[], seeded: Map<number, string>) {
  const expected = new Map<number, string>(seeded)
  const totals = new Map<number, number>()
  const uncertain = new Set<number>()
  for (const report of reports) {
    for (const [id, [user, total]] of report.acked) {
      expected.set(id, user)
      totals.set(id, total)
    }
    for (const id of report.uncertain) uncertain.add(id)
  }
  for (const id of uncertain) totals.delete(id)
  return { expected, totals, uncertain }
}

async function totalsOf(ids: number[]): Promise<Map<number, number>> {
  const found = new Map<number, number>()
  for (const shard of deploy.shards) {
    const rows = (await sql(
      shard.primary as string,
      'SELECT id, total FROM orders WHERE id IN (?)',
      [ids],
    )) as Array<{ id: number; total: string }>
    for (const row of rows) found.set(Number(row.id), Number(row.total))
  }
  return found
}

describe('Resharder', () => {
  it('2 -> 3 under order load from three router processes: every order on exactly one shard, none lost, old copies purged', async () => {
    const seeded = await deploy.seed(2000)
    const load = await routers(3)
    await new Promise((r) => setTimeout(r, 500))
    const plan = await resharder.plan(three)
    expect(plan).toEqual(planResharding(two, three))
    const run = await resharder.start(three)
    const phases = new Map<string, string[]>()
    const t0 = Date.now()
    run.on('move-progressed', (e: ReshardMoveProgressedEvent) => {
      if (process.env.DEBUG_RESHARD)
        console.info(Date.now() - t0, e.from, e.phase, e.rowsCopied, e.lagEntries)
      const seen = phases.get(e.from) ?? []
      if (seen.at(-1) !== e.phase) seen.push(e.phase)
      phases.set(e.from, seen)
    })
    // Another process's view: status() of a second resharder on its own store.
    const otherStore = createSlotMapStore(deploy.store)
    const other = createResharder({
      store: otherStore,
      shards: deploy.shards,
      tables: TABLES,
      mover: MOVER,
      grace: 1000,
    })
    await expect(other.start(three)).rejects.toBeInstanceOf(ReshardBusyError)
    expect(await other.status()).toMatchObject({ id: run.id, state: 'running', orphaned: false })
    const startedAt = Date.now()
    const summary = await run.done
    const doneAt = Date.now()
    await new Promise((r) => setTimeout(r, 500)) // writes after the run too
    const reports = await load.stop()
    expect(summary).toMatchObject({ state: 'done', movedSlots: plan.movedSlots })
    expect(await other.status()).toMatchObject({
      state: 'done',
      movedSlots: plan.movedSlots,
      orphaned: false,
    })
    await other.close()
    await otherStore.close()
    for (const move of plan.moves)
      expect(phases.get(move.from)).toEqual([
        'copying',
        'catching-up',
        'cutting-over',
        'moved',
        'purged',
      ])
    const { expected, totals, uncertain } = merge(reports, seeded)
    const during = reports
      .flatMap((r) => r.acked)
      .filter(([, [, , at]]) => at >= startedAt && at <= doneAt).length
    // Every order on the shard the map names, once; none of the old copies left (they would be misplaced).
    const counts = await deploy.checkPlacement(expected)
    expect(counts.s3).toBeGreaterThan(0)
    const rows = Object.values(counts).reduce((a, b) => a + b, 0)
    expect(rows - expected.size).toBeLessThanOrEqual(uncertain.size)
    const found = await totalsOf([...totals.keys()])
    const wrong = [...totals].filter(([id, total]) => found.get(id) !== total)
    expect(wrong).toEqual([])
    expect(reports.map((r) => r.stale)).toEqual([0, 0, 0])
    expect(reports.flatMap((r) => r.errors)).toEqual([])
    expect(during).toBeGreaterThan(100)
    console.info(
      `resharder 2 -> 3 under load: ${expected.size} orders (${during} acknowledged during the run of ${((doneAt - startedAt) / 1000).toFixed(1)} s), ${reports.reduce((n, r) => n + r.reads, 0)} read-your-writes reads, counts ${JSON.stringify(counts)}`,
    )
  }, 90_000)

  it('abort after a copy under load (paused first): every slot back on its source, the target keeps nothing, no order lost', async () => {
    const seeded = await deploy.seed(2000)
    const load = await routers(2)
    const run = await resharder.start(three)
    // Held still once a move has copied (no move can reach its cut-over after the pause), so
    // the abort finds every move before its cut-over: one after its copy, the other copying or
    // catching up.
    const paused = new Promise<void>((resolve) => {
      run.on('move-progressed', (e) => {
        if (e.phase === 'catching-up') run.pause()
      })
      run.on('state-changed', (e) => {
        if (e.state === 'paused') resolve()
      })
    })
    await paused
    const rowsOnTarget = Number(
      (await sql(deploy.shards[2]!.primary as string, 'SELECT COUNT(*) AS n FROM orders'))[0].n,
    )
    expect(rowsOnTarget).toBeGreaterThan(0) // the copy was there to remove
    await run.abort()
    const summary = await run.done
    const reports = await load.stop()
    expect(summary.state).toBe('aborted')
    expect(summary.moves.map((m) => m.phase)).toEqual(['aborted', 'aborted'])
    expect((await resharder.status())!.state).toBe('aborted')
    // The map is the two shards' again, and s3 holds no order.
    expect(await resharder.plan(three)).toEqual(planResharding(two, three))
    const [{ n }] = await sql(
      deploy.shards[2]!.primary as string,
      'SELECT COUNT(*) AS n FROM orders',
    )
    expect(Number(n)).toBe(0)
    const { expected } = merge(reports, seeded)
    const counts = await deploy.checkPlacement(expected)
    expect(counts.s3).toBe(0)
    expect(reports.map((r) => r.stale)).toEqual([0, 0])
    expect(reports.flatMap((r) => r.errors)).toEqual([])
  }, 90_000)

  it('abort in the middle of a copy: the copy stops at its chunk, the move goes back, nothing is lost', async () => {
    const seeded = await deploy.seed(3000)
    const run = await resharder.start(three)
    const copying = new Promise<void>((resolve) =>
      run.on('move-progressed', (e) => {
        if (e.phase === 'copying' && e.rowsCopied > 0) resolve()
      }),
    )
    await copying
    await run.abort()
    const summary = await run.done
    expect(summary.state).toBe('aborted')
    // A move the abort found cut over already (the other source's, on a slow machine) stays.
    expect(summary.moves.some((m) => m.phase === 'aborted')).toBe(true)
    for (const move of summary.moves) expect(['aborted', 'purged']).toContain(move.phase)
    const status = (await resharder.status())!
    expect(status).toMatchObject({ state: 'aborted', orphaned: false })
    await deploy.checkPlacement(seeded)
    // The change logs and their triggers are gone from the sources.
    for (const shard of deploy.shards.slice(0, 2)) {
      const triggers = await sql(
        shard.primary as string,
        'SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()',
      )
      expect(triggers).toEqual([])
    }
  }, 60_000)
})
