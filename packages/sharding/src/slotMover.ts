import {
  type Duration,
  Emitter,
  inSpan,
  merge,
  type TelemetryOptions,
  type Unsubscribe,
} from '@ballast/shared'
import type { Tracer } from '@opentelemetry/api'
import { ShardingClosedError } from './errors.js'
import { checkedTelemetry, option, POSITIVE } from './internal/check.js'
import { abortStep } from './internal/mover/abort.js'
import { beginStep } from './internal/mover/begin.js'
import { catchUpStep } from './internal/mover/changeLog.js'
import { ShardConnections } from './internal/mover/connections.js'
import type { MoverContext } from './internal/mover/context.js'
import { copyStep } from './internal/mover/copy.js'
import { cutOverStep } from './internal/mover/cutOver.js'
import { exclusive, type MoveLock } from './internal/mover/lock.js'
import { moverMetrics } from './internal/mover/moverMetrics.js'
import { purgeStep } from './internal/mover/purge.js'
import { moveStatuses } from './internal/mover/status.js'
import { createMoverThrottle } from './internal/mover/throttle.js'
import { SHARD_ID } from './internal/slotRanges.js'
import type { ShardConfig } from './shardRouterOptions.js'
import type { MovePhase, SlotMap } from './slotMap.js'
import { type SlotMapStore, slotMapStoreInternals } from './slotMapStore.js'

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_$]{0,63}$/

/** A table whose rows move with their slots: its name and the column that holds the shard key. */
export interface MovedTable {
  /** The table, in each shard's database. It must have a primary key. */
  table: string
  /** The column holding the shard key the application routes the rows by (as it passes it: a string or an integer). */
  key: string
}

/** Slots `[start, end)`. */
export interface SlotSpan {
  /** The first slot. */
  start: number
  /** One past the last slot. */
  end: number
}

/**
 * The slots of one move: a span, or a list of disjoint spans owned by the same source, in any
 * order (the mover sorts them and joins adjacent ones). A ring gives a new shard hundreds of
 * scattered ranges of each old one: each old shard's share is one set, moved by one run of the
 * steps.
 */
export type SlotSet = SlotSpan | readonly SlotSpan[]

/** Options of {@link SlotMover.copy} and {@link SlotMover.catchUp}. */
export interface StepOptions {
  /**
   * Stops the step after the chunk (or catch-up chunk) in progress, its progress kept, and
   * rejects it with `signal.reason` (as `fetch` does); calling the step again resumes.
   * @default none: the step runs to its end
   */
  signal?: AbortSignal | undefined
}

/** The defaults of {@link StepOptions}, frozen: no signal. */
export const DEFAULT_STEP_OPTIONS: Readonly<StepOptions> = Object.freeze({})

/** A move in progress, as {@link SlotMover.moves} reports it from the map and the progress rows. */
export interface MoveStatus {
  /** The source. */
  from: string
  /** The target. */
  to: string
  /** The slots moving, as spans in slot order. */
  spans: SlotSpan[]
  /** How many slots move. */
  slots: number
  /** The move's phase in the map (the least advanced of its ranges'). */
  phase: MovePhase
  /** Rows copied by every run of the copy so far. */
  rowsCopied: number
  /** Whether the bulk copy is done (the catch-up and the cut-over apply the change log). */
  copyDone: boolean
}

/**
 * Options of {@link createSlotMover}. Its metrics (`ballast.sharding.slot_mover.*`: rows copied,
 * log lag, phase, stalls per move) and one span per step go to `meterProvider` and
 * `tracerProvider` (`TelemetryOptions`; the global providers by default).
 */
export interface SlotMoverOptions extends TelemetryOptions {
  /** The slot map store the routers follow (the same `table`, `fenceTable` and `lease`). */
  store: SlotMapStore
  /** The shards (the router's `shards`): the mover uses their primaries. */
  shards: readonly ShardConfig[]
  /** The tables whose rows move with their slots. */
  tables: readonly MovedTable[]
  /**
   * How long the cut-over waits, after the move's first catch-up published the phase in which
   * routers check the fence, before it takes the fence: at least the store's `lease` plus the
   * routers' `queryTimeout`, so every router checks by then. Writers pay for the check only from
   * that catch-up on: while the rows are copied they write as usual (the change log keeps up).
   * @default 40000
   */
  fenceDelay?: Duration
  /**
   * Rows read or written per statement when copying or deleting a range's rows.
   * @default 1000
   */
  chunkRows?: number
  /**
   * The fixed part of the throttle of {@link SlotMover.copy}, {@link SlotMover.catchUp} and the
   * cut-over's verification before the fence: a pause after each chunk; 0: none (the adaptive
   * part, `latencyRatio`, still paces them).
   * @default 0
   */
  chunkDelay?: Duration
  /**
   * The adaptive part of the throttle: before each step the mover times a probe (`SELECT 1`) on
   * the source five times (the median is the baseline, the source under the application's load);
   * after each chunk it times it again, and while it answers more than `latencyRatio` times
   * slower (and 1 ms slower) it doubles its pause after each chunk (from 5 ms, up to
   * `maxThrottleDelay`, and at most 4 times the chunk's own time), else it shortens it by 5 ms.
   * 0 turns it off (`chunkDelay` alone).
   * @default 1.5
   */
  latencyRatio?: number
  /**
   * The longest pause the adaptive throttle makes after a chunk.
   * @default 250
   */
  maxThrottleDelay?: Duration
  /**
   * The copy's and the verification's share of the source, as gh-ost's `--nice-ratio`: after
   * each chunk the step pauses at least this many times the chunk's own time (1: it works half
   * the time, 3: a quarter), whatever the source's latency says. The adaptive pause applies
   * when longer; catch-up passes, which must keep up with the writers, are not slowed by it. 0:
   * off; at most 100.
   * @default 1
   */
  niceRatio?: number
  /**
   * The change log table, created in the source shard's database by {@link SlotMover.begin}
   * with triggers on each moved table that record the primary key and shard key of every
   * changed row while the move lasts.
   * @default 'ballast_change_log'
   */
  changeLogTable?: string
  /**
   * Whether the cut-over compares the span's rows on both sides (count and checksum per table)
   * before it commits: a difference rolls it back with {@link SlotCopyMismatchError}. It reads
   * the span's tables on both shards while holding the fence.
   * @default true
   */
  verify?: boolean
  /**
   * Bound on each statement the mover runs.
   * @default 30000
   */
  timeout?: Duration
  /**
   * How long {@link SlotMover.copy} and {@link SlotMover.catchUp} wait for a shard that stops
   * answering (retrying with backoff, 100 ms doubling to 5 s, with `stalled` and `resumed`
   * events) before they give up with {@link SlotMoveStalledError}.
   * @default 600000 (10 minutes)
   */
  stallTimeout?: Duration
}

/** The defaults of {@link SlotMoverOptions}, frozen. */
export const DEFAULT_SLOT_MOVER_OPTIONS: Readonly<{
  fenceDelay: Duration
  chunkRows: number
  chunkDelay: Duration
  latencyRatio: number
  maxThrottleDelay: Duration
  niceRatio: number
  changeLogTable: string
  verify: boolean
  timeout: Duration
  stallTimeout: Duration
}> = Object.freeze({
  fenceDelay: 40_000,
  chunkRows: 1000,
  chunkDelay: 0,
  latencyRatio: 1.5,
  maxThrottleDelay: 250,
  niceRatio: 1,
  changeLogTable: 'ballast_change_log',
  verify: true,
  timeout: 30_000,
  stallTimeout: 600_000,
})

/** What {@link SlotMover.copy} did. */
export interface CopyResult {
  /** Rows of the span copied to the target by this call (a resumed copy counts only its own). */
  rowsCopied: number
  /** Rows of the span copied by every run of the copy so far. */
  totalRowsCopied: number
}

/** What {@link SlotMover.catchUp} did. */
export interface CatchUpResult {
  /** Rows of the span written or deleted on the target from the change log. */
  rowsApplied: number
  /** Change log entries read (of every slot: the log cannot tell slots apart). */
  entriesRead: number
  /** Entries logged on the source and not yet read when it returned: the catch-up's lag. */
  lagEntries: number
  /**
   * How long {@link SlotMover.cutOver} would still wait before it takes the fence (0: it would
   * not wait): `fenceDelay` after the first catch-up published the phase in which routers check
   * the fence. Catching up until then keeps the log's tail, and so the write pause, short.
   */
  fenceInMs: number
}

/** What {@link SlotMover.cutOver} did. */
export interface CutOverResult {
  /** The map after the cut-over: the span owned by the target. */
  map: SlotMap
  /** Rows copied to the target under the fence (0 when a previous run had already copied them). */
  rowsCopied: number
  /** Rows of the span found on the target before the copy (a partial copy of a failed run) and deleted. */
  rowsDiscarded: number
  /** Rows written or deleted on the target from the change log under the fence (after {@link SlotMover.copy}). */
  rowsApplied: number
  /** Rows of the span compared on each side (0 without `verify`). */
  rowsVerified: number
}

/** Where a move is, in {@link PhaseChangedEvent}: a map phase, or its end. */
export type MoveStep = 'copying' | 'catching-up' | 'fenced' | 'moved' | 'aborted'

/**
 * What every event of a move carries: which move. For one span, `start` and `end` are the span;
 * for a set, the first slot and one past the last (the set's bounds: slots between its spans
 * do not move).
 */
export interface MoveEventFields {
  /** The set's first slot. */
  start: number
  /** One past the set's last slot. */
  end: number
  /** The set's spans, sorted, adjacent ones joined (one array per step: do not change it). */
  spans: readonly SlotSpan[]
  /** How many slots the set holds. */
  slots: number
  /** The source. */
  from: string
  /** The target. */
  to: string
}

/** Payload of the `phase-changed` event. */
export interface PhaseChangedEvent extends MoveEventFields {
  /** The phase the move entered: the map's (`copying`, `catching-up`, `fenced`), or `moved` (cut over) or `aborted`. */
  phase: MoveStep
}

/** Payload of the `chunk-copied` event: one primary-key chunk of {@link SlotMover.copy}. */
export interface ChunkCopiedEvent extends MoveEventFields {
  /** The table. */
  table: string
  /** Rows of the span in this chunk, written to the target. */
  rows: number
  /** Rows of the span copied by every run of the copy so far. */
  totalRows: number
}

/** Payload of the `log-applied` event: one pass of {@link SlotMover.catchUp}. */
export interface LogAppliedEvent extends MoveEventFields {
  /** Change log entries read. */
  entries: number
  /** Rows of the span written or deleted on the target. */
  rows: number
  /** Entries left in the log: the catch-up's lag. */
  lagEntries: number
}

/** Payload of the `stalled` event: a step waits for a shard that stopped answering. */
export interface StalledEvent extends MoveEventFields {
  /** The shard that does not answer (the source or the target). */
  shard: string
  /** What failed. */
  error: Error
  /** The attempt that failed since the stall began: 1, 2, … */
  attempt: number
}

/** Payload of the `resumed` event: the shard a step waited for answers again. */
export interface ResumedEvent extends MoveEventFields {
  /** The shard. */
  shard: string
  /** How long the step waited for it, in milliseconds. */
  stalledMs: number
}

/** The events of a {@link SlotMover}, with their payloads: its progress. */
export interface SlotMoverEvents {
  /** A copy or catch-up waits for a shard that stopped answering (once per retry). */
  stalled: StalledEvent
  /** The shard answers again; the step goes on from its kept progress. */
  resumed: ResumedEvent
  /** A move entered a phase. */
  'phase-changed': PhaseChangedEvent
  /** A chunk of the copy was written to the target. */
  'chunk-copied': ChunkCopiedEvent
  /** A catch-up pass ended. */
  'log-applied': LogAppliedEvent
}

let construct: (options: SlotMoverOptions) => SlotMover

/**
 * Moves one slot range from its shard to another while the routers keep writing (see
 * `docs/resharding.md`): {@link SlotMover.begin} writes the source's fence rows, starts its
 * change log and marks the range moving in the slot map; {@link SlotMover.copy} copies the
 * range's rows in primary-key chunks; {@link SlotMover.catchUp} marks it `catching-up` (from
 * then on its writers check the source's fence rows) and applies the change log;
 * {@link SlotMover.cutOver} waits until `fenceDelay` after that (catching up meanwhile), locks
 * the fence, applies the log's tail, verifies, marks the fence `moved` and gives the range to
 * the target in the map; {@link SlotMover.purge} deletes the source's old copies after a grace period, and
 * {@link SlotMover.abort} gives up a move before its cut-over. Every step is idempotent and
 * resumes after a crash: run it again. One step of one move off a source runs at a time
 * ({@link SlotMoveBusyError} otherwise).
 */
export class SlotMover {
  readonly #events = new Emitter<SlotMoverEvents>()
  readonly #context: MoverContext
  readonly #connections: ShardConnections
  readonly #closing = new AbortController()
  readonly #tracer: Tracer
  readonly #stopMetrics: () => void
  #closed = false

  static {
    construct = (options) => new SlotMover(options)
  }

  /** Private: create a mover with {@link createSlotMover}. */
  private constructor(options: SlotMoverOptions) {
    if (typeof options !== 'object' || options === null)
      option.invalid('options', 'an object', options)
    const merged = merge(DEFAULT_SLOT_MOVER_OPTIONS, options)
    if (typeof merged.store !== 'object' || merged.store === null)
      option.invalid('store', 'a SlotMapStore (createSlotMapStore)', merged.store)
    const internals = slotMapStoreInternals(merged.store)
    const logTable = option.string('changeLogTable', merged.changeLogTable, { pattern: IDENTIFIER })
    const chunkDelayMs = option.duration('chunkDelay', merged.chunkDelay)
    const latencyRatio = option.number('latencyRatio', merged.latencyRatio, { min: 0 })
    if (latencyRatio > 0 && latencyRatio < 1)
      option.invalid('latencyRatio', '0 (off) or at least 1', merged.latencyRatio)
    const maxDelayMs = option.duration('maxThrottleDelay', merged.maxThrottleDelay)
    const niceRatio = option.number('niceRatio', merged.niceRatio, { min: 0, max: 100 })
    const verify = option.boolean('verify', merged.verify)
    if (!Array.isArray(merged.shards) || merged.shards.length === 0)
      option.invalid('shards', 'a non-empty array of shards', merged.shards)
    const shards = new Map<string, ShardConfig>()
    merged.shards.forEach((shard, i) => {
      const id = option.string(`shards[${i}].id`, shard?.id, { pattern: SHARD_ID })
      if (
        typeof shard.primary !== 'string' &&
        (typeof shard.primary !== 'object' || shard.primary === null)
      )
        option.invalid(
          `shards[${i}].primary`,
          'a mysql:// URL or mysql2 pool options',
          typeof shard.primary,
        )
      shards.set(id, shard)
    })
    if (!Array.isArray(merged.tables) || merged.tables.length === 0)
      option.invalid('tables', 'a non-empty array of { table, key }', merged.tables)
    const tables = merged.tables.map((t, i) => ({
      table: option.string(`tables[${i}].table`, t?.table, { pattern: IDENTIFIER }),
      key: option.string(`tables[${i}].key`, t?.key, { pattern: IDENTIFIER }),
    }))
    const fenceDelayMs = option.duration('fenceDelay', merged.fenceDelay)
    if (fenceDelayMs < internals.leaseMs)
      option.invalid(
        'fenceDelay',
        `at least the store's lease (${internals.leaseMs} ms)`,
        merged.fenceDelay,
      )
    const chunkRows = option.positiveInteger('chunkRows', merged.chunkRows)
    const stallTimeoutMs = option.duration('stallTimeout', merged.stallTimeout)
    const timeoutMs = option.duration('timeout', merged.timeout, POSITIVE)
    const { meter, tracer } = checkedTelemetry(options)
    this.#tracer = tracer
    this.#stopMetrics = moverMetrics(meter, this.#events)
    this.#connections = new ShardConnections(shards, timeoutMs)
    this.#context = {
      store: merged.store,
      internals,
      fenceTable: internals.fenceTable,
      logTable,
      tables,
      chunkRows,
      fenceDelayMs,
      stallTimeoutMs,
      closing: this.#closing.signal,
      verify,
      connections: this.#connections,
      throttle: createMoverThrottle(
        { chunkDelayMs, latencyRatio, maxDelayMs, niceRatio },
        this.#connections,
      ),
      events: this.#events,
      checkedSince: new Map(),
    }
  }

  /**
   * Starts moving the slots of `span` to shard `to`: writes a fence row `copying` per slot on
   * the source (creating the fence table), starts the source's change log and marks the span
   * `moving` (`copying`) in the map. Routers keep writing the span as before: they check the
   * fence only once {@link SlotMover.catchUp} marks it `catching-up`. The span must be owned by
   * one shard. Run again after a crash: it picks up where it stopped.
   * @throws InvalidArgumentError if the span is not in the map, spans several owners, or moves elsewhere already.
   * @throws SlotMapConflictError (retryable) if the map kept changing under it.
   */
  async begin(set: SlotSet, to: string): Promise<SlotMap> {
    return this.#step('begin', set, () => beginStep(this.#context, set, to))
  }

  /**
   * Copies the span's rows to the target in primary-key chunks while writes continue (pausing
   * `chunkDelay` after each chunk), keeping its place in the store after each chunk: run again
   * after a crash, it goes on from there. Rows changed meanwhile are in the change log for
   * {@link SlotMover.catchUp} and the cut-over. Call after {@link SlotMover.begin}.
   * @throws InvalidArgumentError if the span is not moving.
   */
  async copy(set: SlotSet, options: StepOptions = {}): Promise<CopyResult> {
    return this.#step(
      'copy',
      set,
      (lock) => copyStep(this.#context, set, options, lock),
      options.signal,
    )
  }

  /**
   * Applies the change log to the target: each logged row of the span is read again on the
   * source and written (or deleted) on the target; applied entries leave the log. Applies what
   * was logged when it began, `chunkRows` entries at a time; returns what was logged since (the
   * lag) and how long the cut-over would still wait (`fenceInMs`). The first one marks the span
   * `catching-up` in the map: from then on, routers that write the span check the source's fence
   * row in their transaction. Call after {@link SlotMover.copy}, as often as needed to bring the
   * lag down, until `fenceInMs` is 0, before the cut-over.
   */
  async catchUp(set: SlotSet, options: StepOptions = {}): Promise<CatchUpResult> {
    return this.#step(
      'catchUp',
      set,
      (lock) => catchUpStep(this.#context, set, options, lock),
      options.signal,
    )
  }

  /**
   * Cuts the span over to its target: first, unless a catch-up did it `fenceDelay` ago, marks
   * it `catching-up` and waits out `fenceDelay` since (applying the change log meanwhile), so
   * that every router checks the fence; then, on the source, locks the span's fence rows `FOR UPDATE`
   * (checked writes in flight finish first, new ones wait); after {@link SlotMover.copy}, applies
   * the change log's tail, else deletes what a failed run left of the span on the target and
   * copies the whole span; with `verify`, compares the span's rows on both sides; marks the fence
   * rows `moved` and commits (waiting writes are refused and retried by their routers), then gives
   * the span to the target in the map and drops the change log. A crash before the commit rolls
   * the fence back (the source keeps the span); after it, running `cutOver` again only publishes
   * the map. A span that is not moving and owned by one shard is done: nothing happens.
   * @throws SlotCopyMismatchError if the verification finds the copies different (rolled back).
   * @throws InvalidArgumentError if the span is not moving (call `begin` first).
   */
  async cutOver(set: SlotSet): Promise<CutOverResult> {
    return this.#step('cutOver', set, () => cutOverStep(this.#context, set))
  }

  /**
   * Gives up a move that has not been cut over: under the source's fence lock (so no cut-over
   * can commit meanwhile), the map gives the span back to its source, no longer moving, and the
   * fence rows go; then the target's copy of the span, the change log and the move's progress
   * are deleted. Writes never left the source, and nothing is lost. Run again after a crash: it
   * finishes the clean-up.
   * @throws InvalidArgumentError if the span was already cut over (the fence says `moved`: run `cutOver` to finish), or is not moving and has no move to clean up.
   */
  async abort(set: SlotSet): Promise<{ map: SlotMap; rowsDiscarded: number }> {
    return this.#step('abort', set, () => abortStep(this.#context, set))
  }

  /**
   * Deletes the rows of `span` left on shard `from` after it was cut over to another shard
   * (after a grace period: routers that had not yet seen the new map read those old copies
   * until they did). Keeps the fence rows, so a late writer is still refused.
   * @throws InvalidArgumentError if the map still gives any slot of the span to `from`.
   */
  async purge(set: SlotSet, from: string): Promise<{ rowsDeleted: number }> {
    this.#open('purge')
    return purgeStep(this.#context, set, from)
  }

  /**
   * Every move in progress, from the map (the moving ranges, grouped by source: one move per
   * source) and the progress rows (rows copied, whether the copy is done). Any process can ask:
   * the map and the rows are in the store.
   * @example
   * ```ts
   * for (const m of await mover.moves()) console.log(`${m.from}->${m.to} ${m.phase} ${m.slots} slots, ${m.rowsCopied} rows`)
   * ```
   */
  async moves(): Promise<MoveStatus[]> {
    this.#open('moves')
    return moveStatuses(this.#context)
  }

  /**
   * Adds a listener of the mover's progress; returns a function that removes it. A listener that
   * throws never breaks the move: its error is rethrown in a microtask.
   * @example
   * ```ts
   * mover.on('chunk-copied', ({ table, totalRows }) => log.info({ table, totalRows }))
   * ```
   */
  on<K extends keyof SlotMoverEvents>(
    event: K,
    listener: (event: SlotMoverEvents[K]) => void,
  ): Unsubscribe {
    return this.#events.on(event, listener)
  }

  /** Adds a listener called at most once; returns a function that removes it. */
  once<K extends keyof SlotMoverEvents>(
    event: K,
    listener: (event: SlotMoverEvents[K]) => void,
  ): Unsubscribe {
    return this.#events.once(event, listener)
  }

  /** Removes a listener added with {@link SlotMover.on} or {@link SlotMover.once}. */
  off<K extends keyof SlotMoverEvents>(
    event: K,
    listener: (event: SlotMoverEvents[K]) => void,
  ): void {
    this.#events.off(event, listener)
  }

  /** Closes the mover's pools. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    // A step waiting for a shard stops waiting.
    this.#closing.abort()
    this.#stopMetrics()
    await this.#connections.close()
  }

  /**
   * Every step's shape: refused once closed (or with its signal aborted), then run holding the
   * move lock of the set's source.
   */
  async #step<R>(
    operation: string,
    set: SlotSet,
    run: (lock: MoveLock) => Promise<R>,
    signal?: AbortSignal,
  ): Promise<R> {
    this.#open(operation)
    signal?.throwIfAborted()
    return inSpan(this.#tracer, `ballast.sharding.slot_mover.${operation}`, {}, () =>
      exclusive(this.#context, set, operation, run),
    )
  }

  #open(operation: string): void {
    if (this.#closed) throw new ShardingClosedError('slot mover', operation)
  }
}

/**
 * Creates a {@link SlotMover} for the shards and tables of one deployment.
 * @example
 * ```ts
 * const mover = createSlotMover({ store, shards, tables: [{ table: 'orders', key: 'user_id' }] })
 * await mover.begin({ start: 0, end: 64 }, 's3')   // routers start checking the fence
 * await mover.cutOver({ start: 0, end: 64 })       // rows copied under the fence, map flipped
 * // after a grace period:
 * await mover.purge({ start: 0, end: 64 }, 's1')
 * await mover.close()
 * ```
 */
export function createSlotMover(options: SlotMoverOptions): SlotMover {
  return construct(options)
}
