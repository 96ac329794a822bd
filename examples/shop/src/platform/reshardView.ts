/**
 * What the ops page's "Shards" panel shows, as plain data the supervisor sends over its control
 * port: the slot map summed up per shard (slots, ranges, share), the ranges moving by source,
 * target and phase, and the resharding run with its progress per move. Pure functions: the
 * page's tests check them without servers.
 */
import type { SlotMap } from '@ballast/sharding'

/** One shard's part of the slot map. */
export interface ShardShareView {
  id: string
  /** Slots the shard owns (a moving range counts for its source until it is cut over). */
  slots: number
  /** Contiguous ranges it owns. */
  ranges: number
}

/** Ranges of the map moving from one shard to another in one phase. */
export interface MovingView {
  from: string
  to: string
  /** The map's phase: `copying`, `catching-up` or `fenced`. */
  phase: string
  ranges: number
  slots: number
}

/** The progress of one move of a run (one source to one target), as the resharder keeps it in the store. */
export interface MoveProgressView {
  from: string
  to: string
  /**
   * Where the move is: `pending`, `copying`, `catching-up`, `cutting-over`, `moved` (old copies
   * wait for the grace period), `purged`, `aborted`.
   */
  phase: string
  slots: number
  /** Rows copied to the target by the bulk copy so far (every table). */
  rowsCopied: number
  /** Change log entries left after the last catch-up pass: the catch-up's lag. */
  lagEntries: number
}

/** A resharding run as the panel shows it (the latest run in the store, running or not). */
export interface ReshardRunView {
  id: number
  /** `running`, `paused`, `aborting`, `failed` (resumable), `done`, `aborted`. */
  state: string
  /** The shards the run moves to. */
  target: string[]
  moves: MoveProgressView[]
  movedSlots: number
  totalSlots: number
  rowsCopied: number
  /** How long it has run (to its last change in the store; the store's clock). */
  elapsedMs: number
  /** No live process runs it (the supervisor died mid-way): the next start resumes it. */
  orphaned: boolean
  error?: string
}

/** States of a run that still hold the shards: no other run can start. */
export const RUN_IN_PROGRESS: readonly string[] = ['running', 'paused', 'aborting', 'failed']

/** The whole panel: the map, what moves, the run, and which shard the admin may add. */
export interface ShardsView {
  version: number
  slots: number
  shards: ShardShareView[]
  moving: MovingView[]
  run?: ReshardRunView
  /** A configured shard that owns no slot and could be added now (no run going), else undefined. */
  addable?: string
  /** Why a resharding cannot start from the page (shown beside the button), if it cannot. */
  unavailable?: string
}

/**
 * The map summed up per shard, in the order of `shardIds` (shards that own nothing included,
 * with 0), then any the map names that `shardIds` does not.
 */
export function summarizeSlotMap(
  map: SlotMap,
  shardIds: readonly string[],
): Pick<ShardsView, 'version' | 'slots' | 'shards' | 'moving'> {
  const owned = new Map<string, ShardShareView>()
  for (const id of shardIds) owned.set(id, { id, slots: 0, ranges: 0 })
  const moving = new Map<string, MovingView>()
  for (const r of map.ranges) {
    const size = r.end - r.start
    const s = owned.get(r.shard) ?? { id: r.shard, slots: 0, ranges: 0 }
    s.slots += size
    s.ranges++
    owned.set(r.shard, s)
    if (r.moving) {
      const key = `${r.shard}>${r.moving.to}>${r.moving.phase}`
      const m = moving.get(key) ?? {
        from: r.shard,
        to: r.moving.to,
        phase: r.moving.phase,
        ranges: 0,
        slots: 0,
      }
      m.ranges++
      m.slots += size
      moving.set(key, m)
    }
  }
  return {
    version: map.version,
    slots: map.slots,
    shards: [...owned.values()],
    moving: [...moving.values()].sort(
      (x, y) => x.from.localeCompare(y.from) || x.to.localeCompare(y.to),
    ),
  }
}

/** A share of slots as the panel prints it: `33.3 %`. */
export function percent(part: number, whole: number): string {
  return whole === 0 ? '0 %' : `${((part / whole) * 100).toFixed(1)} %`
}

/** A count of rows, with thousands separated: `12,345`. */
export function count(n: number): string {
  return Math.round(n).toLocaleString('en-US')
}

/** How long a run has taken (or took): `850 ms`, `12.4 s`, `3 min 5 s`. */
export function elapsed(fromMs: number, toMs: number): string {
  const ms = Math.max(0, toMs - fromMs)
  if (ms < 1000) return `${ms} ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`
  const s = Math.round(ms / 1000)
  return `${Math.floor(s / 60)} min ${s % 60} s`
}

/** One move's progress in words: `copying · 1,200 rows copied · lag 14 entries`. */
export function moveProgressText(m: MoveProgressView): string {
  const lag =
    m.phase === 'catching-up' || m.phase === 'cutting-over' || m.lagEntries > 0
      ? ` · lag ${count(m.lagEntries)} entries`
      : ''
  return `${m.phase} · ${count(m.rowsCopied)} rows copied${lag}`
}

/**
 * Milliseconds between two of the store's timestamps (`2026-12-07 18:02:11.123456`, both from
 * the store server's clock, so its time zone does not matter); 0 if either is unreadable.
 */
export function storeMillisBetween(from: string, to: string): number {
  const parse = (t: string) => Date.parse(`${t.trim().replace(' ', 'T').slice(0, 23)}Z`)
  const ms = parse(to) - parse(from)
  return Number.isFinite(ms) && ms > 0 ? ms : 0
}
