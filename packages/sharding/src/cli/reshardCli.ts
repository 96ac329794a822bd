import { parseArgs } from 'node:util'
import { type Duration, parseDuration } from '@ballast/shared'
import { InvalidArgumentError, isShardingError } from '../errors.js'
import {
  createResharder,
  type Resharder,
  type ReshardRun,
  type ReshardStatus,
  type ReshardSummary,
} from '../resharder.js'
import type { ReshardingPlan } from '../reshardingPlan.js'
import { createSlotMapStore, type SlotMapStore } from '../slotMapStore.js'
import { loadConfig, parseNext } from './config.js'

/** The exit codes of `ballast-reshard`, stable for scripts. */
export const RESHARD_EXIT_CODES = Object.freeze({
  /** The command did what it says (a run ended `done`, a pause or abort was carried out). */
  ok: 0,
  /** The run failed (it stays `failed` in the store: `resume` or `abort` it), or an unexpected error. */
  failed: 1,
  /** A bad command line or config file (`E_SHARD_INVALID_ARGUMENT`). */
  usage: 2,
  /** The command does not fit the run's state: no run to resume, pause or abort (`E_SHARD_RESHARD_STATE`). */
  state: 3,
  /** Another run is in progress, or a live process runs it (`E_SHARD_RESHARD_BUSY`): retry later. */
  busy: 4,
  /** The store or a shard could not be reached (a retryable error): retry. */
  unavailable: 5,
  /** `start` or `resume` ended with the run aborted (from another process). */
  aborted: 6,
  /** `start` or `resume` stopped on SIGINT/SIGTERM: the run is paused (`resume` continues it). */
  paused: 7,
})

const COMMANDS = ['plan', 'start', 'status', 'pause', 'resume', 'abort'] as const
type Command = (typeof COMMANDS)[number]

const USAGE = `usage: ballast-reshard <command> --config <file> [options]

commands:
  plan      what a run to the next shard list would move now (from the current slot map)
  start     start a run and follow it here until it ends (SIGINT/SIGTERM pauses it)
  status    the run in progress, or the last one (any process)
  pause     pause the run in progress, wherever it runs
  resume    continue the run: here if its process died, paused and left, or it failed
  abort     give every move not yet cut over back to its source

options:
  --config <file>   JSON, or an ES module whose default export is (or returns) the config
  --next <ids>      the shard list to move to, e.g. s1,s2,s3 or s1,s2,s3:2 (overrides "next")
  --grace <dur>     how long old copies stay after each cut-over (start; e.g. 5m)
  --wait <dur>      how long pause/abort wait for the running process (default 60s)
  --json            machine-readable output (status: the run as JSON; start/resume: JSON lines)
  -h, --help        this text
`

/** Where the CLI writes: the process's streams, or a test's buffers. */
export interface CliIo {
  stdout: (text: string) => void
  stderr: (text: string) => void
  /** Called with a function that pauses the run in progress (the CLI's SIGINT/SIGTERM handler). */
  onInterrupt?: (pause: () => void) => void
}

/**
 * Runs `ballast-reshard` with `argv` (without node and the script); resolves with the exit
 * code ({@link RESHARD_EXIT_CODES}).
 */
export async function runReshardCli(argv: readonly string[], io: CliIo): Promise<number> {
  let json = false
  let resharder: Resharder | undefined
  let store: SlotMapStore | undefined
  try {
    const { values, positionals } = parse(argv)
    json = values.json === true
    if (values.help === true) {
      io.stdout(USAGE)
      return RESHARD_EXIT_CODES.ok
    }
    const command = positionals[0] as Command | undefined
    if (command === undefined || !COMMANDS.includes(command))
      throw new InvalidArgumentError(
        `invalid argument "command": expected one of ${COMMANDS.join(', ')}, got ${command === undefined ? 'none' : `"${command}"`}\n\n${USAGE}`,
      )
    if (positionals.length > 1)
      throw new InvalidArgumentError(
        `invalid argument "${positionals[1]}": ${command} takes no other argument`,
      )
    if (typeof values.config !== 'string')
      throw new InvalidArgumentError('invalid argument "--config": expected a file, got none')
    const config = await loadConfig(values.config)
    const next = typeof values.next === 'string' ? parseNext(values.next) : config.next
    const { store: storeOptions, next: _next, ...options } = config
    store = createSlotMapStore(storeOptions)
    resharder = createResharder({ ...options, store })
    const out = new Output(io, json)
    switch (command) {
      case 'plan': {
        const plan = await resharder.plan(required(next))
        out.plan(plan, store.version)
        return RESHARD_EXIT_CODES.ok
      }
      case 'start': {
        const run = await resharder.start(
          required(next),
          typeof values.grace === 'string' ? { grace: values.grace as Duration } : {},
        )
        return await follow(run, resharder, out, io)
      }
      case 'status': {
        out.status(await resharder.status())
        return RESHARD_EXIT_CODES.ok
      }
      case 'pause': {
        await resharder.pause()
        const status = await waitFor(resharder, (s) => s.state !== 'running', values.wait)
        out.status(status)
        return status?.state === 'paused' ? RESHARD_EXIT_CODES.ok : RESHARD_EXIT_CODES.busy
      }
      case 'resume': {
        const run = await resharder.resume()
        if (run === undefined) {
          out.line(`resumed: the process that runs it goes on`, {
            event: 'resumed',
            here: false,
          })
          return RESHARD_EXIT_CODES.ok
        }
        return await follow(run, resharder, out, io)
      }
      case 'abort': {
        const status = await resharder.abort(
          typeof values.wait === 'string' ? { wait: parseWait(values.wait) } : {},
        )
        out.status(status)
        return status?.state === 'aborted' ? RESHARD_EXIT_CODES.ok : RESHARD_EXIT_CODES.busy
      }
    }
    return RESHARD_EXIT_CODES.usage
  } catch (error) {
    const code = exitCodeOf(error)
    const shown = isShardingError(error)
      ? { code: error.code, name: error.name, message: error.message, retryable: error.retryable }
      : {
          code: 'E_UNEXPECTED',
          name: 'Error',
          message: String((error as Error)?.message ?? error),
          retryable: false,
        }
    if (json) io.stdout(`${JSON.stringify({ error: shown, exitCode: code })}\n`)
    io.stderr(`ballast-reshard: ${shown.code}: ${shown.message}\n`)
    return code
  } finally {
    await resharder?.close().catch(() => {})
    await store?.close().catch(() => {})
  }
}

function parse(argv: readonly string[]) {
  try {
    return parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: {
        config: { type: 'string', short: 'c' },
        next: { type: 'string' },
        grace: { type: 'string' },
        wait: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    })
  } catch (cause) {
    throw new InvalidArgumentError(`invalid arguments: ${(cause as Error).message}\n\n${USAGE}`, {
      cause,
    })
  }
}

function required<T>(next: T | undefined): T {
  if (next === undefined)
    throw new InvalidArgumentError(
      'invalid argument "--next": expected the shard list to move to (or "next" in the config), got none',
    )
  return next
}

function exitCodeOf(error: unknown): number {
  if (!isShardingError(error)) return RESHARD_EXIT_CODES.failed
  if (error.code === 'E_SHARD_INVALID_ARGUMENT') return RESHARD_EXIT_CODES.usage
  if (error.code === 'E_SHARD_RESHARD_STATE') return RESHARD_EXIT_CODES.state
  if (error.code === 'E_SHARD_RESHARD_BUSY') return RESHARD_EXIT_CODES.busy
  if (error.retryable) return RESHARD_EXIT_CODES.unavailable
  return RESHARD_EXIT_CODES.failed
}

/** Polls the status until `done` says so or `wait` (default 60 s) passes. */
async function waitFor(
  resharder: Resharder,
  done: (status: ReshardStatus) => boolean,
  wait: string | undefined,
): Promise<ReshardStatus | undefined> {
  const waitMs = wait === undefined ? 60_000 : parseWait(wait)
  const deadline = performance.now() + waitMs
  for (;;) {
    const status = await resharder.status()
    if (status === undefined || done(status) || performance.now() > deadline) return status
    await new Promise((r) => setTimeout(r, 100))
  }
}

function parseWait(text: string): number {
  const ms = parseDuration(text)
  if (ms === undefined || ms < 0)
    throw new InvalidArgumentError(
      `invalid argument "--wait": expected a duration such as 500ms, 30s or 2m, got "${text}"`,
    )
  return ms
}

/** Follows a run in this process until it ends; SIGINT/SIGTERM pauses it and leaves. */
async function follow(
  run: ReshardRun,
  resharder: Resharder,
  out: Output,
  io: CliIo,
): Promise<number> {
  out.line(`run ${run.id}: ${run.state}, ${run.moves().length} moves`, {
    event: 'started',
    id: run.id,
    state: run.state,
    moves: run.moves().map(({ spans: _spans, ...move }) => move),
  })
  let interrupted = false
  io.onInterrupt?.(() => {
    interrupted = true
    void resharder.close()
  })
  const phases = new Map<string, string>()
  run.on('move-progressed', (e) => {
    const key = `${e.from}->${e.to}`
    if (phases.get(key) === e.phase) return
    phases.set(key, e.phase)
    out.line(
      `${e.from} -> ${e.to}: ${e.phase} (${e.slots} slots, ${e.rowsCopied} rows copied, lag ${e.lagEntries})`,
      { event: 'move-progressed', ...e },
    )
  })
  run.on('state-changed', ({ state }) =>
    out.line(`run ${run.id}: ${state}`, { event: 'state-changed', state }),
  )
  let summary: ReshardSummary
  try {
    summary = await run.done
  } catch (error) {
    out.line(`run ${run.id}: failed: ${(error as Error).message}`, { event: 'failed' })
    throw error
  }
  out.line(
    `run ${run.id}: ${summary.state}: ${summary.movedSlots} slots moved, ${summary.rowsCopied} rows copied in ${(summary.durationMs / 1000).toFixed(1)} s${summary.state === 'paused' ? ' (ballast-reshard resume continues it)' : ''}`,
    { event: 'ended', ...summary, moves: summary.moves.map(({ spans: _spans, ...m }) => m) },
  )
  if (summary.state === 'aborted') return RESHARD_EXIT_CODES.aborted
  if (summary.state === 'paused' || interrupted) return RESHARD_EXIT_CODES.paused
  return RESHARD_EXIT_CODES.ok
}

/** Human lines, or one JSON document per line with `--json`. */
class Output {
  readonly #io: CliIo
  readonly #json: boolean

  constructor(io: CliIo, json: boolean) {
    this.#io = io
    this.#json = json
  }

  line(text: string, data: Record<string, unknown>): void {
    this.#io.stdout(this.#json ? `${JSON.stringify(data)}\n` : `${text}\n`)
  }

  plan(plan: ReshardingPlan, version: number): void {
    if (this.#json) {
      this.#io.stdout(`${JSON.stringify({ mapVersion: version, ...plan })}\n`)
      return
    }
    const lines = [
      `from the slot map (version ${version}): ${plan.movedSlots} of ${plan.slots} slots move (${(plan.movedFraction * 100).toFixed(1)} %)`,
      ...plan.moves.map(
        (m) =>
          `  ${m.from} -> ${m.to}: ${m.slots} slots (${(m.fraction * 100).toFixed(1)} %) in ${m.ranges.length} ranges`,
      ),
      'shares (before -> after):',
      ...Object.entries(plan.shares).map(
        ([id, share]) =>
          `  ${id}: ${(share.before * 100).toFixed(1)} % -> ${(share.after * 100).toFixed(1)} %`,
      ),
    ]
    this.#io.stdout(`${lines.join('\n')}\n`)
  }

  status(status: ReshardStatus | undefined): void {
    if (this.#json) {
      this.#io.stdout(`${JSON.stringify(status ?? null)}\n`)
      return
    }
    if (status === undefined) {
      this.#io.stdout('no resharding run in this store\n')
      return
    }
    const alive =
      status.heartbeatAgeMs === null
        ? 'no process runs it'
        : `heartbeat ${(status.heartbeatAgeMs / 1000).toFixed(1)} s ago`
    const lines = [
      `run ${status.id}: ${status.state}${status.orphaned ? ` (orphaned: ${alive}; resume continues it, abort rolls it back)` : ` (${alive})`}`,
      `to ${status.next.map((s) => s.id).join(', ')}: ${status.movedSlots} of ${status.totalSlots} slots moved, ${status.rowsCopied} rows copied; grace ${status.graceMs} ms`,
      ...status.moves.map(
        (m) =>
          `  ${m.from} -> ${m.to}: ${m.phase}, ${m.slots} slots in ${m.spans.length} ranges, ${m.rowsCopied} rows copied, lag ${m.lagEntries}`,
      ),
      ...(status.command === null
        ? []
        : [`  waiting for the running process to ${status.command}`]),
      ...(status.error === null ? [] : [`  error: ${status.error}`]),
    ]
    this.#io.stdout(`${lines.join('\n')}\n`)
  }
}
