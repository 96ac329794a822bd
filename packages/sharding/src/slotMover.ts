import { createHash } from 'node:crypto'
import { type Duration, Emitter, merge, type Unsubscribe } from '@ballast/shared'
import { createPool, type Pool, type PoolConnection, type PoolOptions } from 'mysql2/promise'
import {
  InvalidArgumentError,
  ShardingClosedError,
  ShardUnavailableError,
  SlotCopyMismatchError,
  SlotMapConflictError,
  SlotMoveBusyError,
} from './errors.js'
import { argument, option, POSITIVE } from './internal/check.js'
import { fenceTableDdl } from './internal/fence.js'
import { isConnectionError } from './internal/server.js'
import { rangesIn, rewrite, SHARD_ID } from './internal/slotRanges.js'
import { slotFor } from './shardKey.js'
import type { ShardConfig } from './shardRouterOptions.js'
import type { SlotMap } from './slotMap.js'
import {
  type SlotMapStore,
  type SlotMapStoreInternals,
  slotMapStoreInternals,
} from './slotMapStore.js'

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

/** Options of {@link createSlotMover}. */
export interface SlotMoverOptions {
  /** The slot map store the routers follow (the same `table`, `fenceTable` and `lease`). */
  store: SlotMapStore
  /** The shards (the router's `shards`): the mover uses their primaries. */
  shards: readonly ShardConfig[]
  /** The tables whose rows move with their slots. */
  tables: readonly MovedTable[]
  /**
   * How long after a move begins the mover waits before {@link SlotMover.begin} returns (so
   * before it may fence): at least the store's `lease` plus the routers' `queryTimeout`, so
   * every router takes the fence check by then.
   * @default 40000
   */
  fenceDelay?: Duration
  /**
   * Rows read or written per statement when copying or deleting a range's rows.
   * @default 1000
   */
  chunkRows?: number
  /**
   * The throttle of {@link SlotMover.copy} and {@link SlotMover.catchUp}: a pause after each
   * chunk, so the source's own statements keep their latency; 0 copies as fast as it can.
   * @default 0
   */
  chunkDelay?: Duration
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
}

/** The defaults of {@link SlotMoverOptions}, frozen. */
export const DEFAULT_SLOT_MOVER_OPTIONS: Readonly<{
  fenceDelay: Duration
  chunkRows: number
  chunkDelay: Duration
  changeLogTable: string
  verify: boolean
  timeout: Duration
}> = Object.freeze({
  fenceDelay: 40_000,
  chunkRows: 1000,
  chunkDelay: 0,
  changeLogTable: 'ballast_change_log',
  verify: true,
  timeout: 30_000,
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
}

/**
 * A move's copy progress, kept in the store's `<table>_moves` (the change log itself is the
 * catch-up's progress: entries are deleted once applied).
 */
interface MoveProgress {
  /** The source and the target, for an abort that must finish after the map was given back. */
  from?: string
  to?: string
  /** Per table, the primary key the copy reached, or `true` once the table is copied. */
  copied: Record<string, unknown[] | true>
  rowsCopied: number
  copyDone: boolean
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

/** Payload of the `phase-changed` event. */
export interface PhaseChangedEvent {
  /** The span's first slot. */
  start: number
  /** One past the span's last slot. */
  end: number
  /** The source. */
  from: string
  /** The target. */
  to: string
  /** The phase the move entered: the map's (`copying`, `catching-up`, `fenced`), or `moved` (cut over) or `aborted`. */
  phase: MoveStep
}

/** Payload of the `chunk-copied` event: one primary-key chunk of {@link SlotMover.copy}. */
export interface ChunkCopiedEvent {
  /** The span's first slot. */
  start: number
  /** One past the span's last slot. */
  end: number
  /** The table. */
  table: string
  /** Rows of the span in this chunk, written to the target. */
  rows: number
  /** Rows of the span copied by every run of the copy so far. */
  totalRows: number
}

/** Payload of the `log-applied` event: one pass of {@link SlotMover.catchUp}. */
export interface LogAppliedEvent {
  /** The span's first slot. */
  start: number
  /** One past the span's last slot. */
  end: number
  /** Change log entries read. */
  entries: number
  /** Rows of the span written or deleted on the target. */
  rows: number
  /** Entries left in the log: the catch-up's lag. */
  lagEntries: number
}

/** The events of a {@link SlotMover}, with their payloads: its progress. */
export interface SlotMoverEvents {
  /** A move entered a phase. */
  'phase-changed': PhaseChangedEvent
  /** A chunk of the copy was written to the target. */
  'chunk-copied': ChunkCopiedEvent
  /** A catch-up pass ended. */
  'log-applied': LogAppliedEvent
}

/** A primary key scan of one table: its quoted columns. */
interface TableShape {
  name: string
  quoted: string
  key: string
  primaryKey: string[]
}

let construct: (options: SlotMoverOptions) => SlotMover

/**
 * Moves one slot range from its shard to another while the routers keep writing (see
 * `docs/resharding.md`): {@link SlotMover.begin} marks the range moving in the slot map (its
 * writers start checking the source's fence rows), starts the source's change log and waits
 * `fenceDelay`; {@link SlotMover.copy} copies the range's rows in primary-key chunks;
 * {@link SlotMover.catchUp} applies the change log; {@link SlotMover.cutOver} locks the fence,
 * applies the log's tail, verifies, marks the fence `moved` and gives the range to the target in
 * the map; {@link SlotMover.purge} deletes the source's old copies after a grace period, and
 * {@link SlotMover.abort} gives up a move before its cut-over. Every step is idempotent and
 * resumes after a crash: run it again. One step of one move off a source runs at a time
 * ({@link SlotMoveBusyError} otherwise).
 */
export class SlotMover {
  readonly #events = new Emitter<SlotMoverEvents>()
  readonly #store: SlotMapStore
  readonly #internals: SlotMapStoreInternals
  readonly #fenceTable: string
  readonly #logTable: string
  readonly #chunkDelayMs: number
  readonly #verify: boolean
  readonly #shards = new Map<string, ShardConfig>()
  readonly #pools = new Map<string, Pool>()
  readonly #tables: Array<{ table: string; key: string }>
  readonly #fenceDelayMs: number
  readonly #chunkRows: number
  readonly #timeoutMs: number
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
    this.#store = merged.store
    const internals = slotMapStoreInternals(merged.store)
    this.#internals = internals
    this.#fenceTable = internals.fenceTable
    this.#logTable = option.string('changeLogTable', merged.changeLogTable, { pattern: IDENTIFIER })
    this.#chunkDelayMs = option.duration('chunkDelay', merged.chunkDelay)
    this.#verify = option.boolean('verify', merged.verify)
    if (!Array.isArray(merged.shards) || merged.shards.length === 0)
      option.invalid('shards', 'a non-empty array of shards', merged.shards)
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
      this.#shards.set(id, shard)
    })
    if (!Array.isArray(merged.tables) || merged.tables.length === 0)
      option.invalid('tables', 'a non-empty array of { table, key }', merged.tables)
    this.#tables = merged.tables.map((t, i) => ({
      table: option.string(`tables[${i}].table`, t?.table, { pattern: IDENTIFIER }),
      key: option.string(`tables[${i}].key`, t?.key, { pattern: IDENTIFIER }),
    }))
    this.#fenceDelayMs = option.duration('fenceDelay', merged.fenceDelay)
    if (this.#fenceDelayMs < internals.leaseMs)
      option.invalid(
        'fenceDelay',
        `at least the store's lease (${internals.leaseMs} ms)`,
        merged.fenceDelay,
      )
    this.#chunkRows = option.positiveInteger('chunkRows', merged.chunkRows)
    this.#timeoutMs = option.duration('timeout', merged.timeout, POSITIVE)
  }

  /**
   * Starts moving the slots of `span` to shard `to`: writes a fence row `copying` per slot on
   * the source (creating the fence table), marks the span `moving` in the map, and waits
   * `fenceDelay`, after which every router checks the fence when it writes the span. The span
   * must be owned by one shard. Run again after a crash: it picks up where it stopped.
   * @throws InvalidArgumentError if the span is not in the map, spans several owners, or moves elsewhere already.
   * @throws SlotMapConflictError (retryable) if the map kept changing under it.
   */
  async begin(span: SlotSpan, to: string): Promise<SlotMap> {
    this.#open('begin')
    return this.#exclusive(span, 'begin', () => this.#beginStep(span, to))
  }

  async #beginStep(span: SlotSpan, to: string): Promise<SlotMap> {
    argument.string('to', to, { pattern: SHARD_ID })
    if (!this.#shards.has(to)) argument.invalid('to', "one of the mover's shards", to)
    for (let attempt = 0; ; attempt++) {
      const map = await this.#store.refresh()
      const { start, end } = this.#checkSpan(span, map)
      const parts = rangesIn(map, start, end)
      const from = parts[0]!.shard
      if (parts.some((p) => p.shard !== from))
        argument.invalid(
          'span',
          'slots owned by one shard',
          `slots of ${[...new Set(parts.map((p) => p.shard))].join(', ')}`,
        )
      if (from === to) argument.invalid('to', `a shard other than the span's owner "${from}"`, to)
      if (parts.some((p) => p.moving !== undefined && p.moving.to !== to))
        argument.invalid(
          'span',
          'slots not already moving elsewhere',
          `slots moving to ${parts.find((p) => p.moving)!.moving!.to}`,
        )
      if (parts.every((p) => p.moving?.to === to)) {
        await sleep(this.#fenceDelayMs)
        return map
      }
      // One change log per source: one move off a shard at a time.
      const busy = map.ranges.find(
        (r) => r.shard === from && r.moving !== undefined && (r.end <= start || r.start >= end),
      )
      if (busy !== undefined)
        argument.invalid(
          'span',
          `slots of a shard no other range is moving off (one move per source at a time)`,
          `${start}-${end} while ${busy.start}-${busy.end} moves off "${from}"`,
        )
      await this.#writeFence(from, start, end, 'copying', to)
      // Nothing of this move has been copied yet: what the target holds of the span is left from
      // an earlier attempt and goes; the change log starts now, before any row is copied.
      await this.#on(to, async (target) => {
        for (const table of this.#tables)
          await this.#deleteSpan(target, await this.#shape(target, table), map.slots, start, end)
      })
      await this.#startChangeLog(from)
      await this.#saveProgress(start, end, {
        from,
        to,
        copied: {},
        rowsCopied: 0,
        copyDone: false,
      })
      try {
        const next = await this.#store.update(
          map.version,
          rewrite(map, start, end, (part) => ({ ...part, moving: { to, phase: 'copying' } })),
        )
        this.#phase(start, end, from, to, 'copying')
        await sleep(this.#fenceDelayMs)
        return next
      } catch (error) {
        if (!(error instanceof SlotMapConflictError) || attempt >= 4) throw error
      }
    }
  }

  /**
   * Cuts the span over to its target: on the source, locks the span's fence rows `FOR UPDATE`
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
  async cutOver(span: SlotSpan): Promise<CutOverResult> {
    this.#open('cutOver')
    return this.#exclusive(span, 'cutOver', () => this.#cutOverStep(span))
  }

  async #cutOverStep(span: SlotSpan): Promise<CutOverResult> {
    let map = await this.#store.refresh()
    const { start, end } = this.#checkSpan(span, map)
    const parts = rangesIn(map, start, end)
    const target = parts[0]!.moving?.to ?? parts[0]!.shard
    if (parts.every((p) => p.moving === undefined && p.shard === target))
      return { map, rowsCopied: 0, rowsDiscarded: 0, rowsApplied: 0, rowsVerified: 0 }
    const from = parts[0]!.shard
    if (parts.some((p) => p.moving === undefined || p.moving.to !== target || p.shard !== from))
      argument.invalid(
        'span',
        `slots moving from one shard to one shard (call begin first)`,
        `${start}-${end}`,
      )
    let rowsCopied = 0
    let rowsDiscarded = 0
    let rowsApplied = 0
    let rowsVerified = 0
    const states = (await this.#on(from, (c) =>
      this.#query(c, `SELECT state FROM \`${this.#fenceTable}\` WHERE slot >= ? AND slot < ?`, [
        start,
        end,
      ]),
    )) as Array<{ state: string }>
    const alreadyMoved = states.length === end - start && states.every((r) => r.state === 'moved')
    if (!alreadyMoved) {
      if (parts.some((p) => p.moving!.phase !== 'fenced')) {
        map = await this.#store.update(
          map.version,
          rewrite(map, start, end, (part) => ({
            ...part,
            moving: { to: target, phase: 'fenced' },
          })),
        )
        this.#phase(start, end, from, target, 'fenced')
      }
      const done = await this.#fencedCopy(from, target, start, end)
      rowsCopied = done.copied
      rowsDiscarded = done.discarded
      rowsApplied = done.applied
      rowsVerified = done.verified
    }
    for (let attempt = 0; ; attempt++) {
      map = await this.#store.refresh()
      try {
        map = await this.#store.update(
          map.version,
          rewrite(map, start, end, (part) => ({ start: part.start, end: part.end, shard: target })),
        )
        // The move is over: its progress row and, with no other move off the source, the change
        // log and its triggers go.
        await this.#deleteProgress(start, end)
        if (!map.ranges.some((r) => r.shard === from && r.moving !== undefined))
          await this.#stopChangeLog(from)
        this.#phase(start, end, from, target, 'moved')
        return { map, rowsCopied, rowsDiscarded, rowsApplied, rowsVerified }
      } catch (error) {
        if (!(error instanceof SlotMapConflictError) || attempt >= 4) throw error
      }
    }
  }

  /**
   * Gives up a move that has not been cut over: under the source's fence lock (so no cut-over
   * can commit meanwhile), the map gives the span back to its source, no longer moving, and the
   * fence rows go; then the target's copy of the span, the change log and the move's progress
   * are deleted. Writes never left the source, and nothing is lost. Run again after a crash: it
   * finishes the clean-up.
   * @throws InvalidArgumentError if the span was already cut over (the fence says `moved`: run `cutOver` to finish), or is not moving and has no move to clean up.
   */
  async abort(span: SlotSpan): Promise<{ map: SlotMap; rowsDiscarded: number }> {
    this.#open('abort')
    return this.#exclusive(span, 'abort', () => this.#abortStep(span))
  }

  async #abortStep(span: SlotSpan): Promise<{ map: SlotMap; rowsDiscarded: number }> {
    let map = await this.#store.refresh()
    const { start, end } = this.#checkSpan(span, map)
    const parts = rangesIn(map, start, end)
    const progress = await this.#loadProgress(start, end)
    let from: string
    let to: string
    if (parts.every((p) => p.moving === undefined)) {
      // The map was given back by a run that did not finish its clean-up.
      const left = progress?.from !== undefined && progress.to !== undefined ? progress : undefined
      if (left === undefined || parts.some((p) => p.shard !== left.from))
        return argument.invalid('span', 'slots that are moving (begin() first)', `${start}-${end}`)
      from = left.from!
      to = left.to!
    } else {
      const moving = await this.#moving(span, 'abort')
      from = moving.from
      to = moving.to
      map = await this.#on(from, async (fence) => {
        await this.#query(fence, 'START TRANSACTION')
        let committed = false
        try {
          const states = (await this.#query(
            fence,
            `SELECT state FROM \`${this.#fenceTable}\` WHERE slot >= ? AND slot < ? FOR UPDATE`,
            [start, end],
          )) as Array<{ state: string }>
          if (states.some((r) => r.state === 'moved'))
            argument.invalid(
              'span',
              'a move not yet cut over (run cutOver() to finish it)',
              `${start}-${end}`,
            )
          const back = await this.#store.update(
            moving.map.version,
            rewrite(moving.map, start, end, (part) => ({
              start: part.start,
              end: part.end,
              shard: from,
            })),
          )
          await this.#query(
            fence,
            `DELETE FROM \`${this.#fenceTable}\` WHERE slot >= ? AND slot < ?`,
            [start, end],
          )
          await this.#query(fence, 'COMMIT')
          committed = true
          return back
        } finally {
          if (!committed) await this.#query(fence, 'ROLLBACK').catch(() => {})
        }
      })
    }
    // A run that died after giving the map back may have left the fence rows: they go.
    await this.#on(from, (source) =>
      this.#query(
        source,
        `DELETE FROM \`${this.#fenceTable}\` WHERE slot >= ? AND slot < ? AND state = 'copying'`,
        [start, end],
      ),
    )
    let rowsDiscarded = 0
    await this.#on(to, async (target) => {
      for (const table of this.#tables)
        rowsDiscarded += await this.#deleteSpan(
          target,
          await this.#shape(target, table),
          map.slots,
          start,
          end,
        )
    })
    if (!map.ranges.some((r) => r.shard === from && r.moving !== undefined))
      await this.#stopChangeLog(from)
    await this.#deleteProgress(start, end)
    this.#phase(start, end, from, to, 'aborted')
    return { map, rowsDiscarded }
  }

  /**
   * Deletes the rows of `span` left on shard `from` after it was cut over to another shard
   * (after a grace period: routers that had not yet seen the new map read those old copies
   * until they did). Keeps the fence rows, so a late writer is still refused.
   * @throws InvalidArgumentError if the map still gives any slot of the span to `from`.
   */
  async purge(span: SlotSpan, from: string): Promise<{ rowsDeleted: number }> {
    this.#open('purge')
    if (!this.#shards.has(from)) argument.invalid('from', "one of the mover's shards", from)
    const map = await this.#store.refresh()
    const { start, end } = this.#checkSpan(span, map)
    const parts = rangesIn(map, start, end)
    if (parts.some((p) => p.shard === from || p.moving !== undefined))
      argument.invalid(
        'span',
        `slots that shard "${from}" no longer owns and that are not moving`,
        `${start}-${end}`,
      )
    let rowsDeleted = 0
    await this.#on(from, async (connection) => {
      for (const table of this.#tables)
        rowsDeleted += await this.#deleteSpan(
          connection,
          await this.#shape(connection, table),
          map.slots,
          start,
          end,
        )
    })
    return { rowsDeleted }
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

  #phase(start: number, end: number, from: string, to: string, phase: MoveStep): void {
    if (this.#events.has('phase-changed'))
      this.#events.emit('phase-changed', { start, end, from, to, phase })
  }

  /** Closes the mover's pools. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await Promise.all([...this.#pools.values()].map((pool) => pool.end().catch(() => {})))
  }

  /**
   * Runs a step holding the move lock of the span's source (`GET_LOCK` on a connection of its
   * primary, named after its database): one step of one move off a source at a time, across
   * processes. A process that dies drops its connection, and the lock with it.
   */
  async #exclusive<R>(span: SlotSpan, operation: string, step: () => Promise<R>): Promise<R> {
    const map = await this.#store.refresh()
    const { start } = this.#checkSpan(span, map)
    const source = rangesIn(map, start, start + 1)[0]!.shard
    const lock = "CONCAT('ballast_slot_move:', DATABASE())"
    let connection: PoolConnection
    try {
      connection = await this.#pool(source).getConnection()
    } catch (cause) {
      throw new ShardUnavailableError(
        source,
        'primary',
        `primary of shard "${source}" is unavailable to the slot mover`,
        { cause },
      )
    }
    // The lock's connection is only held while the step runs: the step's own errors pass through
    // as they are (they name their own shard).
    let broken = false
    try {
      let got: unknown
      try {
        ;[{ got }] = (await this.#query(connection, `SELECT GET_LOCK(${lock}, 0) AS got`)) as [
          { got: unknown },
        ]
      } catch (error) {
        if (!isConnectionError(error)) throw error
        broken = true
        throw new ShardUnavailableError(
          source,
          'primary',
          `primary of shard "${source}" failed during a slot move`,
          { cause: error },
        )
      }
      if (Number(got) !== 1) throw new SlotMoveBusyError(source, operation)
      try {
        return await step()
      } finally {
        await this.#query(connection, `SELECT RELEASE_LOCK(${lock})`).catch(() => {
          broken = true
        })
      }
    } finally {
      if (broken) connection.destroy()
      else connection.release()
    }
  }

  #open(operation: string): void {
    if (this.#closed) throw new ShardingClosedError('slot mover', operation)
  }

  #checkSpan(span: SlotSpan, map: SlotMap): { start: number; end: number } {
    if (typeof span !== 'object' || span === null)
      argument.invalid('span', 'an object { start, end }', span)
    const start = argument.integer('span.start', span.start, { min: 0, max: map.slots - 1 })
    const end = argument.integer('span.end', span.end, { min: start + 1, max: map.slots })
    return { start, end }
  }

  #pool(shard: string): Pool {
    let pool = this.#pools.get(shard)
    if (pool === undefined) {
      const config = this.#shards.get(shard)
      if (config === undefined)
        throw new InvalidArgumentError(
          `the slot map names shard "${shard}", which the mover was not given`,
        )
      const base: PoolOptions =
        typeof config.primary === 'string' ? { uri: config.primary } : { ...config.primary }
      // Values travel as the server prints them: no Date or float rounding on the way through.
      pool = createPool({
        connectionLimit: 4,
        connectTimeout: Math.min(this.#timeoutMs, 10_000),
        ...base,
        supportBigNumbers: true,
        bigNumberStrings: true,
        dateStrings: true,
        decimalNumbers: false,
      })
      pool.pool.on('error', () => {})
      this.#pools.set(shard, pool)
    }
    return pool
  }

  /** Runs `use` on a connection of `shard`'s primary; connection failures become {@link ShardUnavailableError}. */
  async #on<R>(shard: string, use: (connection: PoolConnection) => Promise<R>): Promise<R> {
    let connection: PoolConnection
    try {
      connection = await this.#pool(shard).getConnection()
    } catch (cause) {
      throw new ShardUnavailableError(
        shard,
        'primary',
        `primary of shard "${shard}" is unavailable to the slot mover`,
        { cause },
      )
    }
    let broken = false
    try {
      return await use(connection)
    } catch (error) {
      if (isConnectionError(error)) {
        broken = true
        throw new ShardUnavailableError(
          shard,
          'primary',
          `primary of shard "${shard}" failed during a slot move`,
          { cause: error },
        )
      }
      throw error
    } finally {
      if (broken) connection.destroy()
      else connection.release()
    }
  }

  async #query(connection: PoolConnection, sql: string, values: unknown[] = []): Promise<unknown> {
    const [result] = await connection.query({ sql, values, timeout: this.#timeoutMs })
    return result
  }

  async #writeFence(
    shard: string,
    start: number,
    end: number,
    state: string,
    to: string,
  ): Promise<void> {
    await this.#on(shard, async (connection) => {
      await this.#query(connection, fenceTableDdl(this.#fenceTable))
      for (let from = start; from < end; from += this.#chunkRows) {
        const rows: unknown[][] = []
        for (let slot = from; slot < Math.min(end, from + this.#chunkRows); slot++)
          rows.push([slot, state, to])
        await this.#query(
          connection,
          `INSERT INTO \`${this.#fenceTable}\` (slot, state, moved_to) VALUES ? ON DUPLICATE KEY UPDATE state = VALUES(state), moved_to = VALUES(moved_to)`,
          [rows],
        )
      }
    })
  }

  /**
   * The fenced part of the cut-over: lock the fence rows, bring the target up to date (the
   * change log's entries after a bulk copy, else a whole copy of the span), verify, mark moved,
   * commit.
   */
  async #fencedCopy(
    from: string,
    to: string,
    start: number,
    end: number,
  ): Promise<{ copied: number; discarded: number; applied: number; verified: number }> {
    const slots = this.#store.current().slots
    const progress = await this.#loadProgress(start, end)
    return this.#on(from, async (fence) => {
      await this.#query(fence, 'START TRANSACTION')
      let committed = false
      try {
        const locked = (await this.#query(
          fence,
          `SELECT slot FROM \`${this.#fenceTable}\` WHERE slot >= ? AND slot < ? FOR UPDATE`,
          [start, end],
        )) as unknown[]
        if (locked.length !== end - start)
          throw new InvalidArgumentError(
            `the fence rows of slots ${start}-${end} on shard "${from}" are missing: run begin() again`,
          )
        let copied = 0
        let discarded = 0
        let applied = 0
        let verified = 0
        await this.#on(to, async (target) => {
          // The target's own fence rows of the span (from a move that took these slots off it
          // earlier) would refuse its new writers' checks.
          await this.#query(target, fenceTableDdl(this.#fenceTable))
          await this.#query(
            target,
            `DELETE FROM \`${this.#fenceTable}\` WHERE slot >= ? AND slot < ?`,
            [start, end],
          )
          // Reads on another connection of the source see every committed write: the checked
          // writers of the span committed before the lock was granted, and none can start now.
          await this.#on(from, async (source) => {
            const shapes = await this.#shapes(source)
            if (progress?.copyDone === true) {
              // Every change of the span is in the log up to its last entry now: writers of the
              // span took their log entry before they committed, and committed before the lock.
              const [{ last }] = (await this.#query(
                source,
                `SELECT COALESCE(MAX(seq), 0) AS last FROM \`${this.#logTable}\``,
              )) as [{ last: unknown }]
              const done = await this.#applyLog(source, target, shapes, slots, start, end, {
                upTo: Number(last),
                throttle: false,
              })
              applied = done.applied
            } else {
              // No bulk copy: what a failed run left on the target goes (rows deleted on the
              // source since must not come back), then the whole span is copied.
              for (const shape of shapes.values()) {
                discarded += await this.#deleteSpan(target, shape, slots, start, end)
                copied += await this.#copySpan(source, target, shape, slots, start, end)
              }
            }
            if (this.#verify)
              for (const shape of shapes.values())
                verified += await this.#compare(source, target, shape, slots, start, end)
          })
        })
        await this.#query(
          fence,
          `UPDATE \`${this.#fenceTable}\` SET state = 'moved', moved_to = ? WHERE slot >= ? AND slot < ?`,
          [to, start, end],
        )
        await this.#query(fence, 'COMMIT')
        committed = true
        return { copied, discarded, applied, verified }
      } finally {
        if (!committed) await this.#query(fence, 'ROLLBACK').catch(() => {})
      }
    })
  }

  /**
   * Copies the span's rows to the target in primary-key chunks while writes continue (pausing
   * `chunkDelay` after each chunk), keeping its place in the store after each chunk: run again
   * after a crash, it goes on from there. Rows changed meanwhile are in the change log for
   * {@link SlotMover.catchUp} and the cut-over. Call after {@link SlotMover.begin}.
   * @throws InvalidArgumentError if the span is not moving.
   */
  async copy(span: SlotSpan): Promise<CopyResult> {
    this.#open('copy')
    return this.#exclusive(span, 'copy', () => this.#copyStep(span))
  }

  async #copyStep(span: SlotSpan): Promise<CopyResult> {
    const { from, to, start, end, slots } = await this.#moving(span, 'copy')
    const progress = (await this.#loadProgress(start, end)) ?? {
      copied: {},
      rowsCopied: 0,
      copyDone: false,
    }
    let rowsCopied = 0
    await this.#on(from, (source) =>
      this.#on(to, async (target) => {
        for (const shape of (await this.#shapes(source)).values()) {
          const reached = progress.copied[shape.name]
          if (reached === true) continue
          await this.#scan(
            source,
            shape,
            '*',
            async (rows) => {
              const moving = rows.filter((row) => this.#inSpan(row[shape.key], slots, start, end))
              if (moving.length > 0) await this.#write(target, shape, moving)
              rowsCopied += moving.length
              progress.rowsCopied += moving.length
              const tail = rows[rows.length - 1]!
              progress.copied[shape.name] = shape.primaryKey.map((c) => tail[c])
              await this.#saveProgress(start, end, progress)
              if (this.#events.has('chunk-copied'))
                this.#events.emit('chunk-copied', {
                  start,
                  end,
                  table: shape.name,
                  rows: moving.length,
                  totalRows: progress.rowsCopied,
                })
              if (this.#chunkDelayMs > 0) await sleep(this.#chunkDelayMs)
            },
            reached,
          )
          progress.copied[shape.name] = true
          await this.#saveProgress(start, end, progress)
        }
      }),
    )
    progress.copyDone = true
    await this.#saveProgress(start, end, progress)
    return { rowsCopied, totalRowsCopied: progress.rowsCopied }
  }

  /**
   * Applies the change log to the target: each logged row of the span is read again on the
   * source and written (or deleted) on the target; applied entries leave the log. Applies what
   * was logged when it began, `chunkRows` entries at a time; returns what was logged since (the lag). Marks the span
   * `catching-up` in the map. Call after {@link SlotMover.copy}, as often as needed to bring the
   * lag down before the cut-over.
   */
  async catchUp(span: SlotSpan): Promise<CatchUpResult> {
    this.#open('catchUp')
    return this.#exclusive(span, 'catchUp', () => this.#catchUpStep(span))
  }

  async #catchUpStep(span: SlotSpan): Promise<CatchUpResult> {
    const { from, to, start, end, slots, map } = await this.#moving(span, 'catchUp')
    if (rangesIn(map, start, end).some((p) => p.moving?.phase === 'copying')) {
      await this.#store
        .update(
          map.version,
          rewrite(map, start, end, (part) => ({ ...part, moving: { to, phase: 'catching-up' } })),
        )
        .then(
          () => this.#phase(start, end, from, to, 'catching-up'),
          (error: unknown) => {
            if (!(error instanceof SlotMapConflictError)) throw error
          },
        )
    }
    return this.#on(from, (source) =>
      this.#on(to, async (target) => {
        // What was logged when the pass began: writers keep adding, and the pass must end.
        const [{ last }] = (await this.#query(
          source,
          `SELECT COALESCE(MAX(seq), 0) AS last FROM \`${this.#logTable}\``,
        )) as [{ last: unknown }]
        const done = await this.#applyLog(
          source,
          target,
          await this.#shapes(source),
          slots,
          start,
          end,
          { upTo: Number(last), throttle: true },
        )
        const [{ n: left }] = (await this.#query(
          source,
          `SELECT COUNT(*) AS n FROM \`${this.#logTable}\``,
        )) as [{ n: unknown }]
        const lagEntries = Number(left)
        if (this.#events.has('log-applied'))
          this.#events.emit('log-applied', {
            start,
            end,
            entries: done.read,
            rows: done.applied,
            lagEntries,
          })
        return { rowsApplied: done.applied, entriesRead: done.read, lagEntries }
      }),
    )
  }

  /** The span's move as the map has it; throws if it is not moving. */
  async #moving(
    span: SlotSpan,
    operation: string,
  ): Promise<{
    from: string
    to: string
    start: number
    end: number
    slots: number
    map: SlotMap
  }> {
    const map = await this.#store.refresh()
    const { start, end } = this.#checkSpan(span, map)
    const parts = rangesIn(map, start, end)
    const from = parts[0]!.shard
    const to = parts[0]!.moving?.to ?? ''
    if (to === '' || parts.some((p) => p.shard !== from || p.moving?.to !== to))
      argument.invalid(
        'span',
        `slots moving from one shard to one shard (begin() before ${operation}())`,
        `${start}-${end}`,
      )
    return { from, to, start, end, slots: map.slots, map }
  }

  /**
   * Reads change log entries in `seq` order (up to `upTo`), writes or deletes on the target each
   * logged row of the span as the source has it now, and deletes the entries it read. Entries
   * of a transaction that commits late (a lower `seq` than entries already read) stay in the log
   * and are read by the next pass: the log is a queue, not a position.
   */
  async #applyLog(
    source: PoolConnection,
    target: PoolConnection,
    shapes: Map<string, TableShape>,
    slots: number,
    start: number,
    end: number,
    { upTo, throttle }: { upTo: number; throttle: boolean },
  ): Promise<{ applied: number; read: number }> {
    let applied = 0
    let read = 0
    for (;;) {
      const entries = (await this.#query(
        source,
        `SELECT seq, tbl, pk, shard_key FROM \`${this.#logTable}\` WHERE seq <= ? ORDER BY seq LIMIT ${this.#chunkRows}`,
        [upTo],
      )) as Array<{ seq: unknown; tbl: string; pk: string; shard_key: unknown }>
      if (entries.length === 0) break
      read += entries.length
      const rows = new Map<string, { shape: TableShape; pk: unknown[] }>()
      for (const entry of entries) {
        const shape = shapes.get(entry.tbl)
        if (shape === undefined || !this.#inSpan(entry.shard_key, slots, start, end)) continue
        rows.set(`${entry.tbl}\u0000${entry.pk}`, { shape, pk: JSON.parse(entry.pk) as unknown[] })
      }
      const byTable = new Map<TableShape, unknown[][]>()
      for (const { shape, pk } of rows.values()) {
        const pks = byTable.get(shape)
        if (pks === undefined) byTable.set(shape, [pk])
        else pks.push(pk)
      }
      for (const [shape, pks] of byTable) {
        await this.#syncRows(source, target, shape, pks, slots, start, end)
        applied += pks.length
      }
      await this.#query(source, `DELETE FROM \`${this.#logTable}\` WHERE seq IN (?)`, [
        entries.map((e) => e.seq),
      ])
      if (throttle && this.#chunkDelayMs > 0) await sleep(this.#chunkDelayMs)
    }
    return { applied, read }
  }

  /**
   * Makes the target's copies of logged rows what the source has now: one read of them on the
   * source, then one delete (rows gone, or whose key left the span) and one replace (the rest)
   * on the target. The delete goes first, so a row found under another spelling of its key
   * than the log's is deleted and written back, never lost.
   */
  async #syncRows(
    source: PoolConnection,
    target: PoolConnection,
    shape: TableShape,
    pks: unknown[][],
    slots: number,
    start: number,
    end: number,
  ): Promise<void> {
    const columns = `(${shape.primaryKey.map(quote).join(', ')})`
    const found = (await this.#query(
      source,
      `SELECT * FROM ${shape.quoted} WHERE ${columns} IN (?)`,
      [pks],
    )) as Array<Record<string, unknown>>
    const keyOf = (values: unknown[]) => JSON.stringify(values.map(String))
    const seen = new Set<string>()
    const keep: Array<Record<string, unknown>> = []
    const gone: unknown[][] = []
    for (const row of found) {
      const pk = shape.primaryKey.map((c) => row[c])
      seen.add(keyOf(pk))
      if (this.#inSpan(row[shape.key], slots, start, end)) keep.push(row)
      else gone.push(pk)
    }
    for (const pk of pks) if (!seen.has(keyOf(pk))) gone.push(pk)
    if (gone.length > 0)
      await this.#query(target, `DELETE FROM ${shape.quoted} WHERE ${columns} IN (?)`, [gone])
    if (keep.length > 0) await this.#write(target, shape, keep)
  }

  /** Writes rows to the target, replacing a row with the same primary key. */
  async #write(
    target: PoolConnection,
    shape: TableShape,
    rows: Array<Record<string, unknown>>,
  ): Promise<void> {
    const columns = Object.keys(rows[0]!)
    await this.#query(
      target,
      `REPLACE INTO ${shape.quoted} (${columns.map(quote).join(', ')}) VALUES ?`,
      [rows.map((row) => columns.map((c) => row[c]))],
    )
  }

  /**
   * Counts and checksums the span's rows of a table on both sides (the XOR of each row's MD5,
   * so the order does not matter); throws {@link SlotCopyMismatchError} if they differ.
   */
  async #compare(
    source: PoolConnection,
    target: PoolConnection,
    shape: TableShape,
    slots: number,
    start: number,
    end: number,
  ): Promise<number> {
    const sum = async (connection: PoolConnection) => {
      let count = 0
      const acc = Buffer.alloc(16)
      await this.#scan(connection, shape, '*', async (rows) => {
        for (const row of rows) {
          if (!this.#inSpan(row[shape.key], slots, start, end)) continue
          count++
          const digest = createHash('md5')
            .update(
              JSON.stringify(
                Object.keys(row)
                  .sort()
                  .map((c) => [c, row[c]]),
              ),
            )
            .digest()
          for (let i = 0; i < 16; i++) acc[i]! ^= digest[i]!
        }
      })
      return { count, checksum: acc.toString('hex') }
    }
    const [a, b] = [await sum(source), await sum(target)]
    if (a.count !== b.count || a.checksum !== b.checksum)
      throw new SlotCopyMismatchError(
        shape.name,
        `the span's rows of table "${shape.name}" differ: ${a.count} rows (checksum ${a.checksum}) on the source, ${b.count} (${b.checksum}) on the target; the cut-over was rolled back`,
      )
    return a.count
  }

  /** Creates the change log and its triggers on the source (idempotent) and empties the log. */
  async #startChangeLog(from: string): Promise<void> {
    await this.#on(from, async (connection) => {
      await this.#query(
        connection,
        `CREATE TABLE IF NOT EXISTS \`${this.#logTable}\` (seq BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, tbl VARCHAR(64) NOT NULL, pk TEXT NOT NULL, shard_key VARCHAR(255) NULL)`,
      )
      for (const shape of (await this.#shapes(connection)).values()) {
        const entry = (row: 'NEW' | 'OLD') =>
          `INSERT INTO \`${this.#logTable}\` (tbl, pk, shard_key) VALUES ('${shape.name}', JSON_ARRAY(${shape.primaryKey.map((c) => `CAST(${row}.${quote(c)} AS CHAR)`).join(', ')}), CAST(${row}.${quote(shape.key)} AS CHAR));`
        for (const [event, body] of [
          ['INSERT', entry('NEW')],
          ['UPDATE', `${entry('NEW')} ${entry('OLD')}`],
          ['DELETE', entry('OLD')],
        ] as const) {
          await this.#query(
            connection,
            `CREATE TRIGGER IF NOT EXISTS ${quote(triggerName(shape.name, event))} AFTER ${event} ON ${shape.quoted} FOR EACH ROW BEGIN ${body} END`,
          )
        }
      }
      // Changes before this point are in the rows the copy reads; older entries are of no use.
      await this.#query(connection, `DELETE FROM \`${this.#logTable}\``)
    })
  }

  /** Drops the triggers and the change log of the source. */
  async #stopChangeLog(from: string): Promise<void> {
    await this.#on(from, async (connection) => {
      for (const table of this.#tables)
        for (const event of ['INSERT', 'UPDATE', 'DELETE'])
          await this.#query(
            connection,
            `DROP TRIGGER IF EXISTS ${quote(triggerName(table.table, event))}`,
          )
      await this.#query(connection, `DROP TABLE IF EXISTS \`${this.#logTable}\``)
    })
  }

  async #ensureMovesTable(): Promise<void> {
    await this.#internals.query(
      `CREATE TABLE IF NOT EXISTS \`${this.#internals.movesTable}\` (span_start INT UNSIGNED NOT NULL, span_end INT UNSIGNED NOT NULL, progress TEXT NOT NULL, updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), PRIMARY KEY (span_start, span_end))`,
      [],
    )
  }

  async #saveProgress(start: number, end: number, progress: MoveProgress): Promise<void> {
    await this.#ensureMovesTable()
    await this.#internals.query(
      `INSERT INTO \`${this.#internals.movesTable}\` (span_start, span_end, progress) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE progress = VALUES(progress)`,
      [start, end, JSON.stringify(progress)],
    )
  }

  async #loadProgress(start: number, end: number): Promise<MoveProgress | undefined> {
    await this.#ensureMovesTable()
    const rows = (await this.#internals.query(
      `SELECT progress FROM \`${this.#internals.movesTable}\` WHERE span_start = ? AND span_end = ?`,
      [start, end],
    )) as Array<{ progress: string }>
    return rows[0] === undefined ? undefined : (JSON.parse(rows[0].progress) as MoveProgress)
  }

  async #deleteProgress(start: number, end: number): Promise<void> {
    await this.#ensureMovesTable()
    await this.#internals.query(
      `DELETE FROM \`${this.#internals.movesTable}\` WHERE span_start = ? AND span_end = ?`,
      [start, end],
    )
  }

  async #shapes(connection: PoolConnection): Promise<Map<string, TableShape>> {
    const shapes = new Map<string, TableShape>()
    for (const table of this.#tables) shapes.set(table.table, await this.#shape(connection, table))
    return shapes
  }

  async #shape(connection: PoolConnection, table: MovedTable): Promise<TableShape> {
    const rows = (await this.#query(
      connection,
      "SELECT COLUMN_NAME AS c FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
      [table.table],
    )) as Array<{ c: string }>
    if (rows.length === 0)
      throw new InvalidArgumentError(
        `invalid option "tables": table "${table.table}" has no primary key (or does not exist)`,
      )
    return {
      name: table.table,
      quoted: `\`${table.table}\``,
      key: table.key,
      primaryKey: rows.map((r) => r.c),
    }
  }

  /** Scans a table in primary-key order, `chunkRows` at a time, handing each chunk to `each`. */
  async #scan(
    connection: PoolConnection,
    shape: TableShape,
    columns: string,
    each: (rows: Array<Record<string, unknown>>) => Promise<void>,
    after?: unknown[],
  ): Promise<void> {
    const pk = shape.primaryKey.map(quote)
    const order = pk.join(', ')
    let last: unknown[] | undefined = after
    for (;;) {
      const where =
        last === undefined
          ? ''
          : pk.length === 1
            ? `WHERE ${pk[0]} > ?`
            : `WHERE (${order}) > (${pk.map(() => '?').join(', ')})`
      const rows = (await this.#query(
        connection,
        `SELECT ${columns} FROM ${shape.quoted} ${where} ORDER BY ${order} LIMIT ${this.#chunkRows}`,
        last ?? [],
      )) as Array<Record<string, unknown>>
      if (rows.length === 0) return
      await each(rows)
      const tail = rows[rows.length - 1]!
      last = shape.primaryKey.map((c) => tail[c])
      if (rows.length < this.#chunkRows) return
    }
  }

  #inSpan(value: unknown, slots: number, start: number, end: number): boolean {
    if (value === null || value === undefined || value === '') return false
    const key =
      typeof value === 'string' || typeof value === 'number' || typeof value === 'bigint'
        ? value
        : String(value)
    const slot = slotFor(key, slots)
    return slot >= start && slot < end
  }

  async #copySpan(
    source: PoolConnection,
    target: PoolConnection,
    shape: TableShape,
    slots: number,
    start: number,
    end: number,
  ): Promise<number> {
    let copied = 0
    await this.#scan(source, shape, '*', async (rows) => {
      const moving = rows.filter((row) => this.#inSpan(row[shape.key], slots, start, end))
      if (moving.length === 0) return
      const columns = Object.keys(moving[0]!)
      await this.#query(
        target,
        `INSERT INTO ${shape.quoted} (${columns.map((c) => `\`${c.replaceAll('`', '``')}\``).join(', ')}) VALUES ?`,
        [moving.map((row) => columns.map((c) => row[c]))],
      )
      copied += moving.length
    })
    return copied
  }

  async #deleteSpan(
    connection: PoolConnection,
    shape: TableShape,
    slots: number,
    start: number,
    end: number,
  ): Promise<number> {
    const pk = shape.primaryKey.map((c) => `\`${c.replaceAll('`', '``')}\``)
    const key = `\`${shape.key}\``
    const columns = [...new Set([...pk, key])].join(', ')
    const doomed: unknown[][] = []
    await this.#scan(connection, shape, columns, async (rows) => {
      for (const row of rows)
        if (this.#inSpan(row[shape.key], slots, start, end))
          doomed.push(shape.primaryKey.map((c) => row[c]))
    })
    for (let i = 0; i < doomed.length; i += this.#chunkRows) {
      const chunk = doomed.slice(i, i + this.#chunkRows)
      await this.#query(connection, `DELETE FROM ${shape.quoted} WHERE (${pk.join(', ')}) IN (?)`, [
        chunk,
      ])
    }
    return doomed.length
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** A column or table name, quoted. */
function quote(name: string): string {
  return `\`${name.replaceAll('`', '``')}\``
}

/** The name of a change log trigger: readable, and unique per table (a long name is cut and hashed). */
function triggerName(table: string, event: string): string {
  const hash = createHash('md5').update(table).digest('hex').slice(0, 8)
  return `ballast_cl_${table.slice(0, 32)}_${hash}_${event.slice(0, 3).toLowerCase()}`
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
