/**
 * The shop's resharding, run by the supervisor (the one process that knows every shard's
 * current primary, and already runs the chaos switch): `@ballast/sharding`'s resharder moves
 * the slots the ring gives a new shard from the shards that own them, while every router
 * follows the shared slot map. The ops page asks for it over the control port and shows its
 * progress, read from the store (so a run of the `ballast-reshard` CLI shows too). A run is
 * kept in the store: a supervisor started again goes on with one left unfinished.
 */
import {
  createResharder,
  type Resharder,
  type ReshardStatus,
  type ShardPlacement,
} from '@ballast/sharding'
import type { ShopConfig } from '../config.js'
import {
  type ReshardRunView,
  RUN_IN_PROGRESS,
  type ShardsView,
  storeMillisBetween,
  summarizeSlotMap,
} from './reshardView.js'
import { loadShopSlotMap, MOVED_TABLES, type SlotMapStore, shardConfig } from './sharding.js'

/** How often the process running a resharding writes its heartbeat and reads commands left for it. */
export const RESHARD_INTERVAL_MS = 500

/** A run whose heartbeat is older than this was left by a process that died: a new supervisor takes it over. */
export const RESHARD_HEARTBEAT_TIMEOUT_MS = 5000

export interface ShopReshardOptions {
  /** The shop's configuration: its shards are read when a run starts (a switched primary included). */
  config: ShopConfig
  /** How long a move waits after it begins before it fences (at least `SHOP_FENCE_DELAY_MS`). */
  fenceDelayMs: number
  /** How long the old copies stay on the source after a cut-over before they are purged. */
  graceMs: number
  log: (line: string) => void
}

/** The supervisor's handle on resharding. */
export interface ShopReshard {
  /** The map, what moves, and the latest run's progress, for the ops page. */
  view(): Promise<ShardsView>
  /** Starts moving to the ring of the shards that own slots plus `shard` (which must own none). */
  addShard(shard: string): Promise<void>
  pause(): Promise<void>
  resume(): Promise<void>
  abort(): Promise<void>
  /** Whether a run is in progress (paused or failed included): the shard-primary switch waits for none. */
  busy(): Promise<boolean>
  /** Leaves a run of this process paused in the store (the next start resumes it). */
  close(): Promise<void>
}

function runView(status: ReshardStatus): ReshardRunView {
  return {
    id: status.id,
    state: status.state,
    target: status.next.map((s) => s.id),
    moves: status.moves.map((m) => ({
      from: m.from,
      to: m.to,
      phase: m.phase,
      slots: m.slots,
      rowsCopied: m.rowsCopied,
      lagEntries: m.lagEntries,
    })),
    movedSlots: status.movedSlots,
    totalSlots: status.totalSlots,
    rowsCopied: status.rowsCopied,
    elapsedMs: storeMillisBetween(status.createdAt, status.updatedAt),
    orphaned: status.orphaned,
    ...(status.error ? { error: status.error } : {}),
  }
}

export async function startShopReshard(o: ShopReshardOptions): Promise<ShopReshard> {
  const store: SlotMapStore = await loadShopSlotMap(o.config.slotMapDb)
  // Made again when a shard's primary changed (the shard-primary switch), so moves write to
  // the primaries of now; never while one of its runs goes on (the switch waits for none).
  let resharder: Resharder | undefined
  let madeFor = ''
  const current = async (): Promise<Resharder> => {
    const shards = JSON.stringify(o.config.shards)
    if (resharder && madeFor === shards) return resharder
    await resharder?.close()
    resharder = createResharder({
      store,
      shards: o.config.shards.map(shardConfig),
      tables: MOVED_TABLES,
      mover: { fenceDelay: o.fenceDelayMs },
      grace: o.graceMs,
      interval: RESHARD_INTERVAL_MS,
      heartbeatTimeout: RESHARD_HEARTBEAT_TIMEOUT_MS,
    })
    madeFor = shards
    return resharder
  }
  const follow = (done: Promise<unknown>, what: string) => {
    done.then(
      (summary) => o.log(`shop: resharding ${what}: ${JSON.stringify(summary)}`),
      (error: unknown) => o.log(`shop: resharding ${what} failed: ${String(error)}`),
    )
  }

  // A run the last supervisor left (paused by its stop, or orphaned by a crash: then its
  // heartbeat must grow stale first) goes on from each move's phase.
  let closed = false
  const resumeLeft = async () => {
    for (let attempt = 0; attempt < 10 && !closed; attempt++) {
      try {
        const r = await current()
        const status = await r.status()
        if (!status || !RUN_IN_PROGRESS.includes(status.state) || status.state === 'failed') return
        if (!status.orphaned) {
          await new Promise((resolve) => setTimeout(resolve, RESHARD_HEARTBEAT_TIMEOUT_MS))
          continue
        }
        const run = await r.resume()
        if (run) follow(run.done, `run ${run.id} (resumed)`)
        o.log(`shop: resharding run ${status.id} resumed`)
        return
      } catch (error) {
        o.log(`shop: resharding: could not resume the run left unfinished: ${String(error)}`)
        return
      }
    }
  }
  const resuming = resumeLeft()

  // The run's status, read from the store every RESHARD_INTERVAL_MS in the background: the ops
  // page (which polls every second) gets the last one at once, even while the server is slow.
  let latest: ReshardStatus | undefined
  let statusRead: Promise<void> | undefined
  const readStatus = (): Promise<void> => {
    statusRead ??= (async () => {
      try {
        latest = await (await current()).status()
      } catch {
        // kept: the last status read (the next read tries again)
      } finally {
        statusRead = undefined
      }
    })()
    return statusRead
  }
  /** A read that starts after this call (an action's effect is in it), not one already in flight. */
  const refreshStatus = async (): Promise<void> => {
    await statusRead
    await readStatus()
  }
  await readStatus()
  const statusTimer = setInterval(() => void readStatus(), RESHARD_INTERVAL_MS)
  statusTimer.unref()

  const view = async (): Promise<ShardsView> => {
    const status = latest
    const summary = summarizeSlotMap(
      store.current(),
      o.config.shards.map((s) => s.id),
    )
    const run = status ? runView(status) : undefined
    const empty = summary.shards.find((s) => s.slots === 0)
    const busy = (run && RUN_IN_PROGRESS.includes(run.state)) || summary.moving.length > 0
    return {
      ...summary,
      ...(run ? { run } : {}),
      ...(busy
        ? {
            unavailable:
              run?.state === 'failed'
                ? 'the last resharding failed: resume or abort it'
                : 'a resharding is in progress',
          }
        : empty
          ? { addable: empty.id }
          : { unavailable: 'every configured shard owns slots already' }),
    }
  }

  return {
    view,
    async addShard(shard) {
      const now = await view()
      if (now.addable !== shard)
        throw new Error(
          `shard ${shard} cannot be added now: ${now.unavailable ?? 'it is not a configured shard that owns no slot'}`,
        )
      const next: ShardPlacement[] = [
        ...now.shards.filter((s) => s.slots > 0).map((s) => ({ id: s.id })),
        { id: shard },
      ]
      const run = await (await current()).start(next)
      const what = `run ${run.id} to ${next.map((s) => s.id).join(', ')}`
      o.log(`shop: resharding ${what} started`)
      follow(run.done, what)
      await refreshStatus()
    },
    async pause() {
      await (await current()).pause()
      await refreshStatus()
    },
    async resume() {
      const run = await (await current()).resume()
      if (run) follow(run.done, `run ${run.id} (resumed)`)
      await refreshStatus()
    },
    async abort() {
      await (await current()).abort()
      await refreshStatus()
    },
    async busy() {
      const status = await (await current()).status()
      return status !== undefined && RUN_IN_PROGRESS.includes(status.state)
    },
    async close() {
      closed = true
      clearInterval(statusTimer)
      await statusRead
      await resuming
      await resharder?.close()
      await store.close()
    },
  }
}
