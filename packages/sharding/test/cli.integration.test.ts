import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { RESHARD_EXIT_CODES, runReshardCli } from '../src/cli/reshardCli.js'
import {
  createResharder,
  createSlotMapStore,
  planResharding,
  type Resharder,
  type ReshardStatus,
  type SlotMapStore,
} from '../src/index.js'
import { sql } from './fixtures.js'
import { type Deployment, deployment, MOVER_OPTIONS, TABLES } from './resharderFixture.js'

// `ballast-reshard` run as a child process (tsx on the source) against real MariaDB databases.
// The tests of runs share one deployment and run in order: 2 -> 3, back to 2, then two runs
// to 3 that are rolled back.

const BIN = fileURLToPath(new URL('../src/cli/bin.ts', import.meta.url))
const two = [{ id: 's1' }, { id: 's2' }]
const three = [...two, { id: 's3' }]

let deploy: Deployment
let dir: string
let config: string
let readerStore: SlotMapStore
let reader: Resharder
const children = new Set<ChildProcess>()

beforeAll(async () => {
  deploy = await deployment('reshard_cli')
  dir = await mkdtemp(join(tmpdir(), 'reshard-cli-'))
  config = join(dir, 'reshard.json')
  await writeFile(
    config,
    JSON.stringify({
      store: deploy.store,
      shards: deploy.shards,
      tables: TABLES,
      next: three,
      // Slow copies (a pause between chunks of 50 rows), so a test can act during them.
      mover: { ...MOVER_OPTIONS, chunkRows: 50, chunkDelay: 30 },
      grace: '500ms',
      interval: 100,
      heartbeatTimeout: 1000,
    }),
  )
  readerStore = createSlotMapStore(deploy.store)
  reader = createResharder({
    store: readerStore,
    shards: deploy.shards,
    tables: TABLES,
    grace: 500,
    interval: 100,
    heartbeatTimeout: 1000,
  })
})

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL')
  await reader?.close()
  await readerStore?.close()
  await deploy?.cleanup()
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

interface Finished {
  code: number | null
  stdout: string
  stderr: string
}

/** Starts the CLI; `finished` resolves when it exits. */
function launch(args: string[]): { child: ChildProcess; finished: Promise<Finished> } {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', '--conditions=@ballast/source', BIN, ...args],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  children.add(child)
  let stdout = ''
  let stderr = ''
  child.stdout!.on('data', (chunk) => {
    stdout += chunk
  })
  child.stderr!.on('data', (chunk) => {
    stderr += chunk
    if (process.env.DEBUG_RESHARD) process.stderr.write(`[${args[0]}] ${chunk}`)
  })
  if (process.env.DEBUG_RESHARD)
    child.stdout!.on('data', (chunk) => process.stderr.write(`[${args[0]} out] ${chunk}`))
  const finished = new Promise<Finished>((resolve) =>
    child.once('exit', (code) => {
      children.delete(child)
      resolve({ code, stdout, stderr })
    }),
  )
  return { child, finished }
}

const cli = (...args: string[]) => launch(args).finished

/** The same CLI in this process (the bin only wires it to the process): for the many bad-input cases. */
async function inProcess(...args: string[]): Promise<Finished> {
  let stdout = ''
  let stderr = ''
  const code = await runReshardCli(args, {
    stdout: (text) => {
      stdout += text
    },
    stderr: (text) => {
      stderr += text
    },
  })
  return { code, stdout, stderr }
}

/** The run as the store has it, read in this process (polled often: a child per poll is slow). */
async function status(): Promise<ReshardStatus | null> {
  return (await reader.status()) ?? null
}

/** The status command's JSON, from a child process. */
async function statusCommand(): Promise<ReshardStatus | null> {
  const done = await cli('status', '--config', config, '--json')
  expect(done.code).toBe(0)
  return JSON.parse(done.stdout) as ReshardStatus | null
}

async function until(check: () => Promise<boolean>, what: string, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

/** Waits until a run newer than `after` is copying (rows copied, a move still copying). */
async function copying(after: ReshardStatus | null): Promise<ReshardStatus> {
  let seen: ReshardStatus | null = null
  await until(async () => {
    seen = await status()
    return (
      seen !== null &&
      seen.id !== after?.id &&
      seen.state === 'running' &&
      seen.moves.some((m) => m.rowsCopied > 0 && m.phase === 'copying')
    )
  }, 'a copy under way')
  return seen!
}

/** Orders on s3 (the shard the runs add and take away). */
async function onS3(): Promise<number> {
  const [{ n }] = await sql(deploy.shards[2]!.primary as string, 'SELECT COUNT(*) AS n FROM orders')
  return Number(n)
}

describe('ballast-reshard', { timeout: 120_000 }, () => {
  describe('bad input', () => {
    it('exits 2 with a typed message (the bin in a child process)', async () => {
      const done = await cli('rebalance', '--config', 'x.json')
      expect(done.code).toBe(RESHARD_EXIT_CODES.usage)
      expect(done.stderr).toMatch(
        /^ballast-reshard: E_SHARD_INVALID_ARGUMENT: invalid argument "command": expected one of plan, start, status, pause, resume, abort, got "rebalance"/,
      )
    })

    it('exits 2 for no command, an unknown flag or a stray argument', async () => {
      for (const args of [[], ['status', '--verbose'], ['status', 'now', '--config', config]]) {
        const done = await inProcess(...args)
        expect(done.code).toBe(RESHARD_EXIT_CODES.usage)
        expect(done.stderr).toMatch(/^ballast-reshard: E_SHARD_INVALID_ARGUMENT: invalid argument/)
      }
    })

    it('exits 2 for a missing, unreadable or malformed config file, naming it', async () => {
      const broken = join(dir, 'broken.json')
      await writeFile(broken, '{ "store": ')
      const shapeless = join(dir, 'shapeless.json')
      await writeFile(shapeless, JSON.stringify({ store: deploy.store, shards: 's1' }))
      const cases: Array<[string[], RegExp]> = [
        [['status'], /"--config": expected a file, got none/],
        [['status', '--config', join(dir, 'missing.json')], /missing\.json": cannot be read/],
        [['status', '--config', broken], /broken\.json": is not JSON/],
        [['status', '--config', shapeless], /"shards" must be an array/],
      ]
      for (const [args, message] of cases) {
        const done = await inProcess(...args, '--json')
        expect(done.code).toBe(RESHARD_EXIT_CODES.usage)
        expect(JSON.parse(done.stdout)).toMatchObject({
          error: { code: 'E_SHARD_INVALID_ARGUMENT', message: expect.stringMatching(message) },
          exitCode: 2,
        })
      }
    })

    it('exits 2 when --next names a shard the config does not have', async () => {
      const done = await inProcess('plan', '--config', config, '--next', 's1,s2,s7')
      expect(done.code).toBe(RESHARD_EXIT_CODES.usage)
      expect(done.stderr).toContain(
        `"next[2].id": expected one of the resharder's shards, got "s7"`,
      )
    })

    it('exits 5 (retryable) when the store cannot be reached', async () => {
      const unreachable = join(dir, 'unreachable.mjs')
      await writeFile(
        unreachable,
        `export default async () => (${JSON.stringify({
          store: {
            server: 'mysql://root@127.0.0.1:1/none',
            timeout: '500ms',
            interval: 50,
            lease: 400,
          },
          shards: deploy.shards,
          tables: TABLES,
        })})\n`,
      )
      const done = await inProcess('status', '--config', unreachable)
      expect(done.code).toBe(RESHARD_EXIT_CODES.unavailable)
      expect(done.stderr).toMatch(/E_SHARD_SLOT_MAP_UNAVAILABLE/)
    })

    it('exits 3 for pause, resume or abort with no run in progress', async () => {
      for (const command of ['pause', 'resume', 'abort']) {
        const done = await inProcess(command, '--config', config)
        expect(done.code).toBe(RESHARD_EXIT_CODES.state)
        expect(done.stderr).toMatch(/E_SHARD_RESHARD_STATE: no resharding run is in progress/)
      }
    })
  })

  it('plan: what moves from the current map, as text and as JSON', async () => {
    const text = await cli('plan', '--config', config)
    expect(text.code).toBe(0)
    const expected = planResharding(two, three)
    expect(text.stdout).toContain(`${expected.movedSlots} of 4096 slots move`)
    expect(text.stdout).toMatch(/s1 -> s3: \d+ slots/)
    const json = await cli('plan', '--config', config, '--json')
    expect(JSON.parse(json.stdout)).toEqual({ mapVersion: 1, ...expected })
    expect(await statusCommand()).toBeNull()
  })

  it('start, then pause and resume from other processes: the run goes on and every order ends on its owner once', async () => {
    const orders = await deploy.seed(1500)
    const started = launch(['start', '--config', config, '--json'])
    await copying(null)
    const paused = await cli('pause', '--config', config)
    expect(paused.code, paused.stdout + paused.stderr).toBe(0)
    expect(paused.stdout).toMatch(/: paused/)
    const held = (await status())!
    expect(held).toMatchObject({ state: 'paused', orphaned: false })
    // Paused means paused: nothing is copied meanwhile.
    await new Promise((r) => setTimeout(r, 400))
    expect((await status())!.rowsCopied).toBe(held.rowsCopied)
    const resumed = await cli('resume', '--config', config)
    expect(resumed.code).toBe(0)
    expect(resumed.stdout).toContain('the process that runs it goes on')
    const done = await started.finished
    expect(done.code, done.stderr).toBe(0)
    const lines = done.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
    expect(lines.at(-1)).toMatchObject({ event: 'ended', state: 'done' })
    expect(lines.some((l) => l.event === 'state-changed' && l.state === 'paused')).toBe(true)
    expect(await status()).toMatchObject({
      state: 'done',
      movedSlots: planResharding(two, three).movedSlots,
    })
    const counts = await deploy.checkPlacement(orders)
    expect(counts.s3).toBeGreaterThan(0)
  })

  it('a start killed with SIGKILL mid-copy: status says orphaned, resume finishes it (removing s3)', async () => {
    const orders = new Map<number, string>()
    for (const shard of deploy.shards) {
      const rows = await sql(shard.primary as string, 'SELECT id, user_id FROM orders')
      for (const row of rows) orders.set(Number(row.id), row.user_id)
    }
    const before = await status()
    const started = launch(['start', '--config', config, '--next', 's1,s2'])
    await copying(before)
    started.child.kill('SIGKILL')
    await started.finished
    await until(async () => (await status())?.orphaned === true, 'the run orphaned')
    const text = await cli('status', '--config', config)
    expect(text.stdout).toMatch(/running \(orphaned: heartbeat [\d.]+ s ago; resume continues it/)
    const resumed = await cli('resume', '--config', config)
    expect(resumed.code, resumed.stderr).toBe(0)
    expect(resumed.stdout).toMatch(/done: \d+ slots moved/)
    await deploy.checkPlacement(orders)
    expect(await onS3()).toBe(0)
  })

  it('abort from another process of a run paused in its process: every move goes back, s3 keeps nothing', async () => {
    const before = await status()
    const started = launch(['start', '--config', config])
    await copying(before)
    // Held still (through the run's row, as the pause command does), so no move is cut over
    // while the abort's process starts.
    await reader.pause()
    await until(async () => (await status())?.state === 'paused', 'the run paused')
    const aborted = await cli('abort', '--config', config, '--wait', '30s')
    expect(aborted.code, aborted.stderr).toBe(0)
    expect(aborted.stdout).toMatch(/: aborted/)
    const done = await started.finished
    expect(done.code).toBe(RESHARD_EXIT_CODES.aborted)
    const after = (await status())!
    expect(after.state).toBe('aborted')
    expect(after.moves.map((m) => m.phase)).toEqual(['aborted', 'aborted'])
    expect(await onS3()).toBe(0)
    // The map is the two shards' again: a new plan moves what the first did.
    const plan = await cli('plan', '--config', config, '--json')
    expect(JSON.parse(plan.stdout).movedSlots).toBe(planResharding(two, three).movedSlots)
  })

  it('SIGINT pauses the run and exits 7; a second start is refused (exit 4) until abort rolls it back', async () => {
    const before = await status()
    const started = launch(['start', '--config', config])
    await copying(before)
    started.child.kill('SIGINT')
    const done = await started.finished
    expect(done.code).toBe(RESHARD_EXIT_CODES.paused)
    expect(done.stdout).toContain('ballast-reshard resume continues it')
    expect(await status()).toMatchObject({ state: 'paused', orphaned: true, heartbeatAgeMs: null })
    const second = await cli('start', '--config', config)
    expect(second.code).toBe(RESHARD_EXIT_CODES.busy)
    expect(second.stderr).toMatch(/E_SHARD_RESHARD_BUSY: resharding run \d+ is paused/)
    const aborted = await cli('abort', '--config', config)
    expect(aborted.code, aborted.stderr).toBe(0)
    const after = (await status())!
    expect(after.state).toBe('aborted')
    // A move the signal found cut over already stays on s3; every other one went back.
    for (const move of after.moves) expect(['aborted', 'purged']).toContain(move.phase)
    const orders = new Map<number, string>()
    for (const shard of deploy.shards)
      for (const row of await sql(shard.primary as string, 'SELECT id, user_id FROM orders'))
        orders.set(Number(row.id), row.user_id)
    await deploy.checkPlacement(orders)
  })
})
