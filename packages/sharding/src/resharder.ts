import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import { type Duration, Emitter, merge, type Unsubscribe } from '@ballast/shared'
import {
  isShardingError,
  ReshardBusyError,
  ReshardStateError,
  ShardingClosedError,
} from './errors.js'
import { argument, option, POSITIVE } from './internal/check.js'
import {
  FINISHED,
  type RunMove,
  type RunMovePhase,
  type RunRow,
  type RunState,
  RunTable,
} from './internal/resharder/runTable.js'
import { rangesIn, SHARD_ID } from './internal/slotRanges.js'
import { planReshardingFrom, type ReshardingPlan, type ShardPlacement } from './reshardingPlan.js'
import type { RingOptions, ShardConfig } from './shardRouterOptions.js'
import { DEFAULT_RING_OPTIONS } from './shardRouterOptions.js'
import type { SlotMap } from './slotMap.js'
import { type SlotMapStore, slotMapStoreInternals } from './slotMapStore.js'
import {
  type ChunkCopiedEvent,
  createSlotMover,
  type LogAppliedEvent,
  type MovedTable,
  type SlotMover,
  type SlotMoverOptions,
  type SlotSpan,
} from './slotMover.js'

/** Options of {@link createResharder}. */
export interface ResharderOptions {
  /** The slot map store the routers follow. The runs are kept beside the map, in `<table>_reshard`. */
  store: SlotMapStore
  /** Every shard, the new ones included (the router's `shards`). */
  shards: readonly ShardConfig[]
  /** The tables whose rows move with their slots. */
  tables: readonly MovedTable[]
  /** Options of the slot mover that runs each move (`fenceDelay`, `chunkRows`, `verify`, …). */
  mover?: Partial<Omit<SlotMoverOptions, 'store' | 'shards' | 'tables'>>
  /**
   * The ring the routers place slots with (their `ring` option): a plan moves slots to where
   * this ring puts them for the next shard list.
   * @default DEFAULT_RING_OPTIONS
   */
  ring?: RingOptions
  /**
   * How long the old copies of a move stay on its source after its cut-over before they are
   * purged (routers that have not yet seen the new map read them meanwhile). At least the
   * store's `lease`. {@link Resharder.start}'s `grace` overrides it per run.
   * @default 60000
   */
  grace?: Duration
  /**
   * A move is cut over once a catch-up pass leaves at most this many change log entries (the
   * cut-over applies the rest under the fence, so fewer means a shorter write pause).
   * @default 100
   */
  cutOverEntries?: number
  /**
   * Catch-up passes at most before the cut-over, whatever the lag (writers can outrun them),
   * once the routers have checked the fence for `fenceDelay` (the passes while they wait do not
   * count).
   * @default 10
   */
  catchUpPasses?: number
  /**
   * How often the running process renews its heartbeat in the run's row and reads the commands
   * other processes leave there (pause, resume, abort).
   * @default 1000
   */
  interval?: Duration
  /**
   * A run whose heartbeat is older than this is orphaned (the process running it died):
   * {@link Resharder.resume} and {@link Resharder.abort} may take it over. Longer than `interval`.
   * @default 15000
   */
  heartbeatTimeout?: Duration
  /**
   * How often a step that fails with a retryable error (a shard or the store unreachable, a
   * busy move lock) is tried again, with a backoff from 200 ms doubling to 5 s, before the run
   * fails (it stays resumable).
   * @default 10
   */
  stepRetries?: number
}

/** The defaults of {@link ResharderOptions}, frozen. */
export const DEFAULT_RESHARDER_OPTIONS: Readonly<{
  ring: Readonly<RingOptions>
  grace: Duration
  cutOverEntries: number
  catchUpPasses: number
  interval: Duration
  heartbeatTimeout: Duration
  stepRetries: number
}> = Object.freeze({
  ring: DEFAULT_RING_OPTIONS,
  grace: 60_000,
  cutOverEntries: 100,
  catchUpPasses: 10,
  interval: 1000,
  heartbeatTimeout: 15_000,
  stepRetries: 10,
})

/** Options of {@link Resharder.start}. */
export interface ReshardStartOptions {
  /**
   * How long the old copies stay on the source after each cut-over.
   * @default the resharder's `grace`
   */
  grace?: Duration
}

/** The defaults of {@link ReshardStartOptions}, frozen: none of its own (the resharder's `grace`). */
export const DEFAULT_RESHARD_START_OPTIONS: Readonly<ReshardStartOptions> = Object.freeze({})

/**
 * Where a run is: `running`; `paused` (by {@link ReshardRun.pause} or the CLI; moves stop after
 * the chunk in progress); `aborting` (moves not yet cut over are being rolled back); `failed`
 * (a step failed beyond its retries: `resume()` continues it, `abort()` rolls it back); `done`
 * (every move cut over and purged); `aborted`.
 */
export type ReshardState = 'running' | 'paused' | 'aborting' | 'failed' | 'done' | 'aborted'

/**
 * Where one move of a run is: `pending`, `copying` (begun: routers check the fence; rows are
 * copied), `catching-up`, `cutting-over`, `moved` (the target owns it; the old copies wait for
 * the grace period), `purged`, or `aborted` (given back to the source).
 */
export type ReshardMovePhase =
  | 'pending'
  | 'copying'
  | 'catching-up'
  | 'cutting-over'
  | 'moved'
  | 'purged'
  | 'aborted'

/** A request another process left for the process running a run ({@link ReshardStatus.command}). */
export type ReshardCommand = 'pause' | 'resume' | 'abort'

/** One move of a run: the slots of one source going to one target. */
export interface ReshardMoveStatus {
  /** The source shard. */
  from: string
  /** The target shard. */
  to: string
  /** The move's slot spans, `[start, end)`, in slot order. */
  spans: SlotSpan[]
  /** How many slots move. */
  slots: number
  /** Where the move is. */
  phase: ReshardMovePhase
  /** Rows copied by the bulk copy so far. */
  rowsCopied: number
  /** Change log entries left after the last catch-up pass. */
  lagEntries: number
  /** When it was cut over (epoch ms), once it was. */
  movedAt?: number
}

/** A run as {@link Resharder.status} reads it from the store, in any process. */
export interface ReshardStatus {
  /** The run's id (counts runs in this store). */
  id: number
  /** Where the run is. */
  state: ReshardState
  /** The shard list the run moves to. */
  next: ShardPlacement[]
  /** Milliseconds the old copies stay after each cut-over. */
  graceMs: number
  /** The moves, one per (source, target). */
  moves: ReshardMoveStatus[]
  /** A command left for the process running it and not yet acted on. */
  command: ReshardCommand | null
  /** Slots moved (cut over) so far, of `totalSlots`. */
  movedSlots: number
  /** Slots the run moves. */
  totalSlots: number
  /** Rows copied by every move so far. */
  rowsCopied: number
  /** Milliseconds since the running process's last heartbeat (null: no process holds it). */
  heartbeatAgeMs: number | null
  /**
   * True when the run is not over and no live process runs it (it died, or paused and left):
   * {@link Resharder.resume} continues it, {@link Resharder.abort} rolls it back.
   */
  orphaned: boolean
  /** Why it failed, for `failed` (and the last error of a step). */
  error: string | null
  /** When it started, and when its row last changed (the store server's clock). */
  createdAt: string
  updatedAt: string
}

/** What a run ended as: {@link ReshardRun.done}. */
export interface ReshardSummary {
  /** The run's id. */
  id: number
  /** `done`, `aborted`, or `paused` (the resharder was closed: `resume()` continues). */
  state: 'done' | 'aborted' | 'paused'
  /** The moves as they ended. */
  moves: ReshardMoveStatus[]
  /** Slots now owned by their new shard. */
  movedSlots: number
  /** Rows copied by the bulk copies. */
  rowsCopied: number
  /** Milliseconds this process ran it. */
  durationMs: number
}

/** Payload of the `move-progressed` event: a move's phase or counters changed. */
export interface ReshardMoveProgressedEvent {
  /** The source. */
  from: string
  /** The target. */
  to: string
  /** Slots of the move. */
  slots: number
  /** Where the move is. */
  phase: ReshardMovePhase
  /** Rows copied so far. */
  rowsCopied: number
  /** Change log entries left after the last catch-up pass. */
  lagEntries: number
}

/** Payload of the `state-changed` event. */
export interface ReshardStateChangedEvent {
  /** The run's new state. */
  state: ReshardState
  /** The error that failed it, for `failed`. */
  error?: unknown
}

/** The events of a {@link ReshardRun}. */
export interface ReshardRunEvents {
  /** A move's phase, rows copied or catch-up lag changed. */
  'move-progressed': ReshardMoveProgressedEvent
  /** The run's state changed. */
  'state-changed': ReshardStateChangedEvent
}

/** Why the steps of a run stop: paused, aborted, closed here, or taken over elsewhere. */
type Why = 'pause' | 'abort' | 'close' | 'lost'
const RANK: Record<Why, number> = { pause: 0, abort: 1, close: 2, lost: 3 }

/** The reason a step's signal carries when the run interrupts it. */
class Interrupted extends Error {
  constructor(readonly why: Why) {
    super(`resharding ${why}`)
  }
}

const spansOf = (move: RunMove): SlotSpan[] => move.spans.map(([start, end]) => ({ start, end }))

function statusOfMove(move: RunMove): ReshardMoveStatus {
  return {
    from: move.from,
    to: move.to,
    spans: spansOf(move),
    slots: move.slots,
    phase: move.phase,
    rowsCopied: move.rowsCopied,
    lagEntries: move.lagEntries,
    ...(move.movedAt === undefined ? {} : { movedAt: move.movedAt }),
  }
}

const isMoved = (move: RunMove) => move.phase === 'moved' || move.phase === 'purged'

/** Where the map has a move's slots: all given to the target, all still the source's, or in between. */
function placeOf(map: SlotMap, move: RunMove): 'target' | 'source' | 'moving' {
  let target = true
  let source = true
  for (const [start, end] of move.spans)
    for (const part of rangesIn(map, start, end)) {
      if (part.moving !== undefined || part.shard !== move.to) target = false
      if (part.moving !== undefined || part.shard !== move.from) source = false
    }
  return target ? 'target' : source ? 'source' : 'moving'
}

/**
 * The outcome of a promise that may settle long before anyone awaits it (a purge waiting out its
 * grace while other moves run): a rejection then is a result, not an unhandled rejection.
 */
const settled = <T>(promise: Promise<T>): Promise<PromiseSettledResult<T>> =>
  promise.then(
    (value) => ({ status: 'fulfilled', value }),
    (reason: unknown) => ({ status: 'rejected', reason }),
  )

/** How often a move's catch-up runs while it waits for the routers to check the fence. */
const CATCH_UP_EVERY_MS = 200

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason)
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', stop)
      resolve()
    }, ms)
    const stop = () => {
      clearTimeout(timer)
      reject(signal!.reason)
    }
    signal?.addEventListener('abort', stop, { once: true })
  })

let construct: (options: ResharderOptions) => Resharder
let runOf: (resharder: Resharder, row: RunRow, owner: string, mode: 'run' | 'abort') => ReshardRun

/**
 * A running resharding: its progress events, `pause()`, `resume()`, `abort()`, and `done`.
 * Made by {@link Resharder.start} or {@link Resharder.resume}.
 */
export class ReshardRun {
  readonly #events = new Emitter<ReshardRunEvents>()
  readonly #table: RunTable
  readonly #mover: SlotMover
  readonly #store: SlotMapStore
  readonly #settings: RunSettings
  readonly #owner: string
  readonly #startedAt = performance.now()
  readonly #moves: RunMove[]
  readonly #graceMs: number
  #state: RunState
  #error: string | null = null
  #controller = new AbortController()
  /** What stopped the steps: the strongest request wins (lost > close > abort > pause). */
  #request: Why | undefined
  #wake: (() => void) | undefined
  #heartbeat: ReturnType<typeof setTimeout> | undefined
  #saving: Promise<unknown> = Promise.resolve()
  #dirty = false
  #abortDone: { promise: Promise<void>; resolve: () => void }
  /** The run's id. */
  readonly id: number
  /**
   * Resolves with the summary when the run ends (`done`, `aborted`, or `paused` by
   * {@link Resharder.close}); rejects with the error that failed it (the run stays `failed` in
   * the store, resumable).
   */
  readonly done: Promise<ReshardSummary>

  static {
    runOf = (resharder, row, owner, mode) =>
      new ReshardRun(resharderParts(resharder), row, owner, mode)
  }

  /** Private: runs come from {@link Resharder.start} and {@link Resharder.resume}. */
  private constructor(parts: ResharderParts, row: RunRow, owner: string, mode: 'run' | 'abort') {
    this.#table = parts.table
    this.#mover = parts.mover
    this.#store = parts.store
    this.#settings = parts.settings
    this.#owner = owner
    this.id = row.id
    this.#moves = row.moves
    this.#graceMs = row.graceMs
    this.#state = mode === 'abort' || row.state === 'aborting' ? 'aborting' : 'running'
    let resolve!: () => void
    this.#abortDone = { promise: new Promise<void>((r) => (resolve = r)), resolve }
    parts.track(this)
    const off = [
      this.#mover.on('chunk-copied', (e) => this.#onCopied(e)),
      this.#mover.on('log-applied', (e) => this.#onLogApplied(e)),
    ]
    this.done = this.#drive().finally(() => {
      for (const unsubscribe of off) unsubscribe()
      parts.untrack(this)
    })
    // The caller may never await `done` (a CLI that only pauses): its rejection is not unhandled.
    this.done.catch(() => {})
  }

  /** The run's state in this process. */
  get state(): ReshardState {
    return this.#state
  }

  /** The moves as this process sees them now. */
  moves(): ReshardMoveStatus[] {
    return this.#moves.map(statusOfMove)
  }

  /** Adds a listener; returns a function that removes it. A listener that throws breaks nothing. */
  on<K extends keyof ReshardRunEvents>(
    event: K,
    listener: (event: ReshardRunEvents[K]) => void,
  ): Unsubscribe {
    return this.#events.on(event, listener)
  }

  /** Adds a listener called at most once; returns a function that removes it. */
  once<K extends keyof ReshardRunEvents>(
    event: K,
    listener: (event: ReshardRunEvents[K]) => void,
  ): Unsubscribe {
    return this.#events.once(event, listener)
  }

  /** Removes a listener added with {@link ReshardRun.on} or {@link ReshardRun.once}. */
  off<K extends keyof ReshardRunEvents>(
    event: K,
    listener: (event: ReshardRunEvents[K]) => void,
  ): void {
    this.#events.off(event, listener)
  }

  /**
   * Pauses the run: a copy or catch-up in progress stops after its chunk or pass (its progress
   * kept), a begin or cut-over in progress finishes first, and no step starts until
   * {@link ReshardRun.resume}. Routers keep writing; moves begun keep their fence checks and
   * change logs. Does nothing unless the run is running.
   */
  pause(): void {
    if (this.#state !== 'running') return
    this.#interrupt('pause')
  }

  /** Resumes a paused run (also one paused from another process). */
  resume(): void {
    if (this.#state !== 'paused' || this.#request !== 'pause') return
    this.#request = undefined
    this.#wake?.()
  }

  /**
   * Aborts the run: the step in progress stops, each move not yet cut over is given back to its
   * source (the target's copy is deleted: nothing is lost, writes never left the source); moves
   * already cut over stay on their target (their old copies are still purged after the grace
   * period: `done` resolves after that). Resolves once the moves are rolled back.
   */
  async abort(): Promise<void> {
    if (this.#state === 'done' || this.#state === 'aborted') return
    if (this.#state !== 'aborting') this.#interrupt('abort')
    await Promise.race([this.#abortDone.promise, this.done.then(() => {})])
  }

  /** Stops the run in this process (left paused in the store): {@link Resharder.close}. */
  async close(): Promise<void> {
    if (FINISHED.includes(this.#state)) return
    this.#interrupt('close')
    await this.done.catch(() => {})
  }

  #interrupt(why: Why): void {
    if (this.#request === undefined || RANK[why] > RANK[this.#request]) this.#request = why
    this.#controller.abort(new Interrupted(why))
    if (why !== 'pause') this.#wake?.()
  }

  #setState(state: RunState, error?: unknown): void {
    if (state === this.#state) return
    this.#state = state
    if (this.#events.has('state-changed'))
      this.#events.emit('state-changed', error === undefined ? { state } : { state, error })
  }

  #progress(move: RunMove): void {
    if (this.#events.has('move-progressed'))
      this.#events.emit('move-progressed', {
        from: move.from,
        to: move.to,
        slots: move.slots,
        phase: move.phase,
        rowsCopied: move.rowsCopied,
        lagEntries: move.lagEntries,
      })
  }

  /** The move an event of the mover is about: the one of its source and target. */
  #moveOf(event: ChunkCopiedEvent | LogAppliedEvent): RunMove | undefined {
    return this.#moves.find((m) => m.from === event.from && m.to === event.to)
  }

  #onCopied(event: ChunkCopiedEvent): void {
    const move = this.#moveOf(event)
    if (move === undefined) return
    move.rowsCopied = event.totalRows
    this.#dirty = true
    this.#progress(move)
  }

  #onLogApplied(event: LogAppliedEvent): void {
    const move = this.#moveOf(event)
    if (move === undefined) return
    move.lagEntries = event.lagEntries
    this.#dirty = true
    this.#progress(move)
  }

  /** Writes state and moves, one write at a time; losing the row stops the run. */
  #save(): Promise<void> {
    const saving = this.#saving.then(async () => {
      this.#dirty = false
      const kept = await this.#table.save(
        this.id,
        this.#owner,
        this.#state,
        this.#moves,
        this.#error,
      )
      if (!kept) {
        this.#interrupt('lost')
        throw new ReshardBusyError(
          this.id,
          `resharding run ${this.id} was taken over by another process: this one stopped`,
        )
      }
    })
    this.#saving = saving.catch(() => {})
    return saving
  }

  async #phase(move: RunMove, phase: RunMovePhase): Promise<void> {
    move.phase = phase
    this.#progress(move)
    await this.#save()
  }

  #beat(): void {
    this.#heartbeat = setTimeout(async () => {
      try {
        if (this.#dirty) await this.#save()
        const beat = await this.#table.beat(this.id, this.#owner)
        if (beat === undefined) {
          this.#interrupt('lost')
          return
        }
        if (beat.command !== null) {
          await this.#table.clearCommand(this.id, beat.command)
          if (beat.command === 'pause') this.pause()
          else if (beat.command === 'resume') this.resume()
          else void this.abort().catch(() => {})
        }
      } catch {
        // The store is unreachable: the next beat tries again; a step that needs it fails or retries.
      }
      if (!FINISHED.includes(this.#state) && this.#heartbeat !== undefined) this.#beat()
    }, this.#settings.intervalMs)
    this.#heartbeat.unref()
  }

  async #drive(): Promise<ReshardSummary> {
    this.#beat()
    try {
      await this.#save()
      this.#reconcile(await this.#store.refresh())
      for (;;) {
        const aborting = this.#state === 'aborting'
        const why = aborting ? await this.#rollBack() : await this.#advance()
        if (why === undefined) return await this.#finish(aborting ? 'aborted' : 'done')
        if (why === 'lost') throw this.#lost()
        if (why === 'close') {
          // Left in the store as it is (paused, or aborting: resume() finishes the abort).
          if (!aborting) this.#setState('paused')
          await this.#save()
          return this.#summary('paused')
        }
        if (why === 'pause') {
          this.#setState('paused')
          await this.#save()
          // Until resume() or abort(), here or from another process (through the heartbeat).
          if (this.#request === 'pause')
            await new Promise<void>((resolve) => {
              this.#wake = resolve
            })
          this.#wake = undefined
        }
        const request = this.#request
        this.#request = undefined
        this.#controller = new AbortController()
        if (request === 'lost') throw this.#lost()
        if (request === 'close') {
          await this.#save()
          return this.#summary('paused')
        }
        this.#setState(request === 'abort' || aborting ? 'aborting' : 'running')
        await this.#save()
      }
    } catch (error) {
      if (!(error instanceof ReshardBusyError)) {
        this.#error = error instanceof Error ? error.message : String(error)
        this.#setState('failed', error)
        await this.#save().catch(() => {})
      }
      throw error
    } finally {
      clearTimeout(this.#heartbeat)
      this.#heartbeat = undefined
      await this.#saving
      if (this.#request !== 'lost') await this.#table.release(this.id, this.#owner).catch(() => {})
      this.#abortDone.resolve()
    }
  }

  #lost(): ReshardBusyError {
    return new ReshardBusyError(
      this.id,
      `resharding run ${this.id} was taken over by another process: this one stopped`,
    )
  }

  /** Moves whose slots the map already gives to their target were cut over (by a run that died). */
  #reconcile(map: SlotMap): void {
    for (const move of this.#moves) {
      if (isMoved(move) || move.phase === 'aborted') continue
      if (placeOf(map, move) === 'target') {
        move.phase = 'moved'
        move.movedAt ??= Date.now()
      }
    }
  }

  /**
   * Runs every move to `purged`: one move per source at a time, sources in parallel, each
   * move's purge after its grace period. Resolves undefined when all are done, or why it
   * stopped.
   */
  async #advance(): Promise<Why | undefined> {
    const signal = this.#controller.signal
    const purges: Array<Promise<PromiseSettledResult<void>>> = []
    const bySource = new Map<string, RunMove[]>()
    for (const move of this.#moves) {
      if (move.phase === 'aborted' || move.phase === 'purged') continue
      if (move.phase === 'moved') {
        purges.push(settled(this.#purgeAfterGrace(move, signal)))
        continue
      }
      const list = bySource.get(move.from)
      if (list === undefined) bySource.set(move.from, [move])
      else list.push(move)
    }
    const workers = [...bySource.values()].map(async (moves) => {
      for (const move of moves) {
        await this.#moveOne(move, signal)
        purges.push(settled(this.#purgeAfterGrace(move, signal)))
      }
    })
    const results = await Promise.allSettled(workers)
    const ends = await Promise.all(purges)
    for (const result of [...results, ...ends])
      if (result.status === 'rejected' && !(result.reason instanceof Interrupted))
        throw result.reason
    return signal.aborted ? this.#request : undefined
  }

  async #moveOne(move: RunMove, signal: AbortSignal): Promise<void> {
    const set = spansOf(move)
    signal.throwIfAborted()
    if (move.phase === 'pending' || move.phase === 'copying') {
      if (move.phase === 'pending') await this.#phase(move, 'copying')
      // Again after a crash: begin() resumes.
      await this.#step(() => this.#mover.begin(set, move.to), signal)
      signal.throwIfAborted()
      await this.#step(() => this.#mover.copy(set, { signal }), signal)
      await this.#phase(move, 'catching-up')
    }
    if (move.phase === 'catching-up') {
      // Passes until the lag is small, and until the routers have checked the fence for
      // fenceDelay (the cut-over would wait for that): waiting here keeps a pause prompt.
      for (let pass = 0; ; ) {
        signal.throwIfAborted()
        const { lagEntries, fenceInMs } = await this.#step(
          () => this.#mover.catchUp(set, { signal }),
          signal,
        )
        move.lagEntries = lagEntries
        const caughtUp = lagEntries <= this.#settings.cutOverEntries
        if (fenceInMs > 0) {
          if (caughtUp) await sleep(Math.min(fenceInMs, CATCH_UP_EVERY_MS), signal)
          continue
        }
        if (caughtUp || ++pass >= this.#settings.catchUpPasses) break
      }
      signal.throwIfAborted()
      await this.#phase(move, 'cutting-over')
    }
    if (move.phase === 'cutting-over') {
      // The cut-over is never interrupted: its write pause is short, and it is atomic.
      await this.#step(() => this.#mover.cutOver(set), undefined)
      move.movedAt = Date.now()
      await this.#phase(move, 'moved')
    }
  }

  async #purgeAfterGrace(move: RunMove, signal: AbortSignal): Promise<void> {
    const wait = (move.movedAt ?? Date.now()) + this.#graceMs - Date.now()
    if (wait > 0) await sleep(wait, signal)
    signal.throwIfAborted()
    const { rowsDeleted } = await this.#step(
      () => this.#mover.purge(spansOf(move), move.from),
      signal,
    )
    move.rowsPurged = rowsDeleted
    await this.#phase(move, 'purged')
  }

  /**
   * Gives every move not cut over back to its source; moves cut over are purged after their
   * grace. Resolves undefined when all are, or why it stopped (closed, taken over).
   */
  async #rollBack(): Promise<Why | undefined> {
    const map = await this.#store.refresh()
    this.#reconcile(map)
    const bySource = new Map<string, RunMove[]>()
    for (const move of this.#moves) {
      if (isMoved(move) || move.phase === 'aborted') continue
      const list = bySource.get(move.from)
      if (list === undefined) bySource.set(move.from, [move])
      else list.push(move)
    }
    await Promise.all(
      [...bySource.values()].map(async (moves) => {
        for (const move of moves) await this.#rollBackOne(move)
      }),
    )
    this.#abortDone.resolve()
    const signal = this.#controller.signal
    const purges = this.#moves
      .filter((move) => move.phase === 'moved')
      .map((move) => this.#purgeAfterGrace(move, signal))
    for (const result of await Promise.allSettled(purges))
      if (result.status === 'rejected' && !(result.reason instanceof Interrupted))
        throw result.reason
    return signal.aborted ? this.#request : undefined
  }

  async #rollBackOne(move: RunMove): Promise<void> {
    const set = spansOf(move)
    if (move.phase !== 'pending') {
      try {
        await this.#step(() => this.#mover.abort(set), undefined)
      } catch (error) {
        const map = await this.#store.refresh()
        const place = placeOf(map, move)
        if (!isShardingError(error) || error.code !== 'E_SHARD_INVALID_ARGUMENT') throw error
        if (place === 'moving') {
          // The source's fence says moved (a cut-over committed there, not yet in the map):
          // it can only be finished.
          await this.#step(() => this.#mover.cutOver(set), undefined)
          move.movedAt = Date.now()
          await this.#phase(move, 'moved')
          return
        }
        if (place === 'target') {
          move.movedAt ??= Date.now()
          await this.#phase(move, 'moved')
          return
        }
        // Never begun (the map still gives it to the source, and the mover has no trace of it).
      }
    }
    await this.#phase(move, 'aborted')
  }

  /** Runs a mover step, again after a retryable failure (200 ms doubling to 5 s), up to `stepRetries`. */
  async #step<R>(run: () => Promise<R>, signal: AbortSignal | undefined): Promise<R> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await run()
      } catch (error) {
        if (signal?.aborted) throw signal.reason
        if (!isShardingError(error) || !error.retryable || attempt >= this.#settings.stepRetries)
          throw error
        this.#error = error.message
        this.#dirty = true
        await sleep(Math.min(5000, 200 * 2 ** attempt), signal)
      }
    }
  }

  async #finish(state: 'done' | 'aborted'): Promise<ReshardSummary> {
    this.#error = null
    this.#setState(state)
    await this.#save()
    return this.#summary(state)
  }

  #summary(state: ReshardSummary['state']): ReshardSummary {
    return {
      id: this.id,
      state,
      moves: this.moves(),
      movedSlots: this.#moves.filter(isMoved).reduce((n, m) => n + m.slots, 0),
      rowsCopied: this.#moves.reduce((n, m) => n + m.rowsCopied, 0),
      durationMs: performance.now() - this.#startedAt,
    }
  }
}

interface RunSettings {
  cutOverEntries: number
  catchUpPasses: number
  intervalMs: number
  stepRetries: number
}

interface ResharderParts {
  table: RunTable
  mover: SlotMover
  store: SlotMapStore
  settings: RunSettings
  track(run: ReshardRun): void
  untrack(run: ReshardRun): void
}

let resharderParts: (resharder: Resharder) => ResharderParts

/**
 * Moves a deployment from its current slot map to the ring placement of a new shard list, while
 * the routers keep writing: the moves of {@link Resharder.plan}, one per source at a time and
 * sources in parallel, each `begin → copy → catch up → cut over → purge after the grace period`
 * (see {@link SlotMover}). The run is kept in the store (`<table>_reshard`), so
 * {@link Resharder.status} reads it from any process, {@link Resharder.pause} and
 * {@link Resharder.abort} reach the process running it, and {@link Resharder.resume} continues
 * it after that process died. Create it with {@link createResharder}.
 */
export class Resharder {
  readonly #store: SlotMapStore
  readonly #shardIds: Set<string>
  readonly #table: RunTable
  readonly #mover: SlotMover
  readonly #ring: RingOptions
  readonly #graceMs: number
  readonly #leaseMs: number
  readonly #heartbeatTimeoutMs: number
  readonly #settings: RunSettings
  readonly #runs = new Set<ReshardRun>()
  readonly #parts: ResharderParts
  #closed = false
  #closing: Promise<void> | undefined

  static {
    construct = (options) => new Resharder(options)
    resharderParts = (resharder) => resharder.#parts
  }

  /** Private: create one with {@link createResharder}. */
  private constructor(options: ResharderOptions) {
    if (typeof options !== 'object' || options === null)
      option.invalid('options', 'an object', options)
    const merged = merge(DEFAULT_RESHARDER_OPTIONS, options)
    if (typeof merged.store !== 'object' || merged.store === null)
      option.invalid('store', 'a SlotMapStore (createSlotMapStore)', merged.store)
    this.#store = merged.store
    const internals = slotMapStoreInternals(merged.store)
    this.#table = new RunTable(internals)
    if (this.#table.name.length > 64)
      option.invalid(
        'store',
        'a store whose table name leaves room for the "_reshard" suffix (up to 56 characters)',
        this.#table.name.slice(0, -'_reshard'.length),
      )
    this.#leaseMs = internals.leaseMs
    if (!Array.isArray(merged.shards) || merged.shards.length === 0)
      option.invalid('shards', 'a non-empty array of shards', merged.shards)
    this.#shardIds = new Set(
      merged.shards.map((shard, i) =>
        option.string(`shards[${i}].id`, shard?.id, { pattern: SHARD_ID }),
      ),
    )
    this.#ring = merge(DEFAULT_RING_OPTIONS, merged.ring ?? {})
    this.#graceMs = option.duration('grace', merged.grace)
    if (this.#graceMs < this.#leaseMs)
      option.invalid('grace', `at least the store's lease (${this.#leaseMs} ms)`, merged.grace)
    const intervalMs = option.duration('interval', merged.interval, POSITIVE)
    this.#heartbeatTimeoutMs = option.duration('heartbeatTimeout', merged.heartbeatTimeout)
    if (this.#heartbeatTimeoutMs <= intervalMs)
      option.invalid(
        'heartbeatTimeout',
        `a duration longer than "interval" (${intervalMs} ms)`,
        merged.heartbeatTimeout,
      )
    this.#settings = {
      cutOverEntries: option.nonNegativeInteger('cutOverEntries', merged.cutOverEntries),
      catchUpPasses: option.positiveInteger('catchUpPasses', merged.catchUpPasses),
      intervalMs,
      stepRetries: option.nonNegativeInteger('stepRetries', merged.stepRetries),
    }
    if (merged.mover !== undefined && (typeof merged.mover !== 'object' || merged.mover === null))
      option.invalid('mover', 'an object of slot mover options', merged.mover)
    // The mover checks shards and tables (and names them in its errors).
    this.#mover = createSlotMover({
      ...merged.mover,
      store: merged.store,
      shards: merged.shards,
      tables: merged.tables,
    })
    this.#parts = {
      table: this.#table,
      mover: this.#mover,
      store: this.#store,
      settings: this.#settings,
      track: (run) => this.#runs.add(run),
      untrack: (run) => this.#runs.delete(run),
    }
  }

  /**
   * What a run to `next` would move now: from the CURRENT slot map (ranges moved earlier stay
   * where they are) to the ring's placement of `next`, one move per (source, target) with its
   * slot ranges, largest first.
   * @throws InvalidArgumentError if `next` names a shard the resharder was not given.
   * @example
   * ```ts
   * const plan = await resharder.plan([{ id: 's1' }, { id: 's2' }, { id: 's3' }])
   * plan.movedFraction // about 1/3: s3 takes a third of the keys, from s1 and s2
   * ```
   */
  async plan(next: readonly ShardPlacement[]): Promise<ReshardingPlan> {
    this.#open('plan')
    this.#checkPlacement(next)
    const map = await this.#store.refresh()
    return planReshardingFrom(map, next, this.#ring)
  }

  /**
   * Starts moving to the ring placement of `next`: computes the plan from the current map,
   * records the run in the store (one run at a time) and runs it in this process. The returned
   * run reports progress and can be paused, resumed and aborted.
   * @throws ReshardBusyError (retryable) if another run is not over.
   * @throws InvalidArgumentError if `next` names a shard the resharder was not given, or `grace` is shorter than the lease.
   * @example
   * ```ts
   * const run = await resharder.start([{ id: 's1' }, { id: 's2' }, { id: 's3' }], { grace: '5m' })
   * run.on('move-progressed', (e) => console.log(e.from, '->', e.to, e.phase, e.rowsCopied))
   * const summary = await run.done
   * ```
   */
  async start(
    next: readonly ShardPlacement[],
    options: ReshardStartOptions = {},
  ): Promise<ReshardRun> {
    this.#open('start')
    if (typeof options !== 'object' || options === null)
      argument.invalid('options', 'an object', options)
    const graceMs =
      options.grace === undefined ? this.#graceMs : argument.duration('grace', options.grace)
    if (graceMs < this.#leaseMs)
      argument.invalid('grace', `at least the store's lease (${this.#leaseMs} ms)`, options.grace)
    const plan = await this.plan(next)
    const moves: RunMove[] = plan.moves.map((move) => ({
      from: move.from,
      to: move.to,
      spans: move.ranges.map(([start, end]) => [start, end] as [number, number]),
      slots: move.slots,
      phase: 'pending',
      rowsCopied: 0,
      lagEntries: 0,
    }))
    const placement = next.map((shard) =>
      shard.weight === undefined ? { id: shard.id } : { id: shard.id, weight: shard.weight },
    )
    const owner = ownerId()
    const id = await this.#table.create(owner, placement, graceMs, moves)
    if (id === undefined) {
      const active = await this.#table.latest()
      throw new ReshardBusyError(
        active?.id ?? 0,
        `resharding run ${active?.id ?? '?'} is ${active?.state ?? 'in progress'}: resume() or abort() it before starting another`,
      )
    }
    const row: RunRow = {
      id,
      state: 'running',
      command: null,
      owner,
      placement,
      graceMs,
      moves,
      error: null,
      createdAt: '',
      updatedAt: '',
      heartbeatAgeMs: 0,
    }
    return runOf(this, row, owner, 'run')
  }

  /**
   * The run in progress, else the last one, as the store has it (any process can read it);
   * undefined if there was never a run.
   */
  async status(): Promise<ReshardStatus | undefined> {
    this.#open('status')
    const row = await this.#table.latest()
    return row === undefined ? undefined : this.#statusOf(row)
  }

  /**
   * Continues the run in progress in this process: a run paused here is resumed; a run whose
   * process died (or paused and closed), or that failed, is taken over and each move goes on
   * from its phase. A run paused by a live process elsewhere is resumed there (this resolves
   * with undefined).
   * @throws ReshardStateError if there is no run in progress.
   * @throws ReshardBusyError (retryable) if a live process runs it and it is not paused.
   */
  async resume(): Promise<ReshardRun | undefined> {
    this.#open('resume')
    const local = [...this.#runs][0]
    if (local !== undefined) {
      local.resume()
      return local
    }
    const row = await this.#active('resume')
    if (!this.#orphaned(row)) {
      if (row.state === 'paused') {
        await this.#table.command(row.id, 'resume')
        return undefined
      }
      throw new ReshardBusyError(
        row.id,
        `resharding run ${row.id} is ${row.state} in another process (heartbeat ${Math.round(row.heartbeatAgeMs ?? 0)} ms ago)`,
      )
    }
    return this.#takeOver(row, row.state === 'aborting' ? 'abort' : 'run')
  }

  /**
   * Pauses the run in progress, wherever it runs: in this process at once, in another through
   * the run's row (it stops after the chunk in progress, within its `interval`); an orphaned
   * run is marked paused.
   * @throws ReshardStateError if there is no run in progress or it is not running.
   */
  async pause(): Promise<void> {
    this.#open('pause')
    const local = [...this.#runs][0]
    if (local !== undefined) return local.pause()
    const row = await this.#active('pause')
    if (row.state === 'paused') return
    if (row.state !== 'running')
      throw new ReshardStateError(
        row.state,
        `resharding run ${row.id} is ${row.state}: it cannot be paused`,
      )
    if (this.#orphaned(row)) {
      await this.#table.setState(row.id, ['running'], 'paused')
      return
    }
    await this.#table.command(row.id, 'pause')
  }

  /**
   * Aborts the run in progress, wherever it runs: each move not yet cut over goes back to its
   * source and the target's copy is deleted; moves already cut over stay on their target. A run
   * of another live process is told through its row (this resolves once the row says
   * `aborted`, or after `wait`); an orphaned one is taken over and rolled back here.
   * @throws ReshardStateError if there is no run in progress.
   */
  async abort(options: { wait?: Duration } = {}): Promise<ReshardStatus | undefined> {
    this.#open('abort')
    const local = [...this.#runs][0]
    if (local !== undefined) {
      await local.abort()
      return this.status()
    }
    const row = await this.#active('abort')
    if (this.#orphaned(row)) {
      const run = this.#takeOver(row, 'abort')
      await (await run).done
      return this.status()
    }
    await this.#table.command(row.id, 'abort')
    const waitMs = argument.duration('wait', options.wait ?? 60_000)
    const deadline = performance.now() + waitMs
    for (;;) {
      const now = await this.#table.latest()
      if (now === undefined || now.id !== row.id || FINISHED.includes(now.state))
        return now === undefined ? undefined : this.#statusOf(now)
      if (performance.now() > deadline) return this.#statusOf(now)
      await sleep(this.#settings.intervalMs)
    }
  }

  /** Stops the runs of this process (left paused in the store: `resume()` continues) and closes the mover. */
  close(): Promise<void> {
    this.#closed = true
    this.#closing ??= (async () => {
      await Promise.all([...this.#runs].map((run) => run.close()))
      await this.#mover.close()
    })()
    return this.#closing
  }

  async #takeOver(row: RunRow, mode: 'run' | 'abort'): Promise<ReshardRun> {
    const owner = ownerId()
    if (!(await this.#table.takeOver(row.id, owner, this.#heartbeatTimeoutMs)))
      throw new ReshardBusyError(
        row.id,
        `resharding run ${row.id} was taken over by another process`,
      )
    const fresh = (await this.#table.latest())!
    return runOf(this, fresh, owner, mode)
  }

  async #active(operation: string): Promise<RunRow> {
    const row = await this.#table.latest()
    if (row === undefined || FINISHED.includes(row.state))
      throw new ReshardStateError(
        'none',
        `no resharding run is in progress: nothing to ${operation}${row === undefined ? '' : ` (run ${row.id} is ${row.state})`}`,
      )
    return row
  }

  #orphaned(row: RunRow): boolean {
    if (FINISHED.includes(row.state)) return false
    return (
      row.owner === null ||
      row.heartbeatAgeMs === null ||
      row.heartbeatAgeMs > this.#heartbeatTimeoutMs
    )
  }

  #statusOf(row: RunRow): ReshardStatus {
    const moves = row.moves.map(statusOfMove)
    return {
      id: row.id,
      state: row.state,
      next: row.placement,
      graceMs: row.graceMs,
      moves,
      command: row.command,
      movedSlots: row.moves.filter(isMoved).reduce((n, m) => n + m.slots, 0),
      totalSlots: row.moves.reduce((n, m) => n + m.slots, 0),
      rowsCopied: row.moves.reduce((n, m) => n + m.rowsCopied, 0),
      heartbeatAgeMs: row.owner === null ? null : row.heartbeatAgeMs,
      orphaned: this.#orphaned(row),
      error: row.error,
      createdAt: row.createdAt,
      updatedAt: row.updatedAt,
    }
  }

  #checkPlacement(next: readonly ShardPlacement[]): void {
    if (!Array.isArray(next) || next.length === 0)
      argument.invalid('next', 'a non-empty array of shards { id, weight? }', next)
    const seen = new Set<string>()
    next.forEach((shard, i) => {
      const id = argument.string(`next[${i}].id`, shard?.id, { pattern: SHARD_ID })
      if (!this.#shardIds.has(id))
        argument.invalid(`next[${i}].id`, "one of the resharder's shards", id)
      if (seen.has(id)) argument.invalid(`next[${i}].id`, 'a shard listed once', id)
      seen.add(id)
      if (shard.weight !== undefined) argument.positiveNumber(`next[${i}].weight`, shard.weight)
    })
  }

  #open(operation: string): void {
    if (this.#closed) throw new ShardingClosedError('resharder', operation)
  }
}

/** A process's identity in the run's row: host, pid and a random part. */
function ownerId(): string {
  return `${hostname().slice(0, 24)}:${process.pid}:${randomUUID().slice(0, 8)}`
}

/**
 * Creates a {@link Resharder} for one deployment: its slot map store, every shard (the new ones
 * too) and the tables that move.
 * @example
 * ```ts
 * import { createResharder, createSlotMapStore } from '@ballast/sharding'
 *
 * const store = createSlotMapStore({ server: 'mysql://app@meta:3306/shop' })
 * await store.load()
 * const resharder = createResharder({ store, shards, tables: [{ table: 'orders', key: 'user_id' }] })
 * const run = await resharder.start([{ id: 's1' }, { id: 's2' }, { id: 's3' }])
 * run.on('move-progressed', (e) => console.log(`${e.from} -> ${e.to}: ${e.phase}, ${e.rowsCopied} rows`))
 * console.log(await run.done) // { state: 'done', movedSlots, rowsCopied, … }
 * await resharder.close()
 * ```
 */
export function createResharder(options: ResharderOptions): Resharder {
  return construct(options)
}
