import type { AsyncLocalStorage } from 'node:async_hooks'
import type { Balancer } from '@ballast/lb'
import type { CircuitBreaker } from '@ballast/resilience'
import type { CausalToken } from '../causalToken.js'
import type { FallbackReason } from '../shardRouterEvents.js'
import type { Consistency, QueryOptions, ServerRole } from '../shardRouterOptions.js'
import type { ShardStats } from '../shardRouterStats.js'
import type { QueryInstruments } from './queryTelemetry.js'
import type { MonitoredShard, ReplicaState } from './replicaMonitor.js'
import type { Server } from './server.js'
import type { RowSink } from './streamMerge.js'

/** One shard as the router holds it: its servers, breaker, replica balancer and counters. */
export interface Shard {
  id: string
  index: number
  primary: Server
  breaker: CircuitBreaker<[], never> | undefined
  /**
   * Until when (ms since the epoch) statements go through the breaker: a healthy primary's
   * statements skip it, and the first connection failure engages it for a breaker window.
   */
  guardedUntil: number
  replicas: ReplicaState[]
  balancer: Balancer<ReplicaState> | undefined
  monitored: MonitoredShard
  stats: ShardStats
  /**
   * Set when the router saw slots move to this shard (a new slot map): the causal tokens of
   * their old owners must be honoured here (see `ShardRouter`'s read-your-writes across a move).
   */
  movedIn: MovedIn | undefined
}

/** Slots that moved to a shard, as the router saw it: what its replicas must have applied. */
export interface MovedIn {
  /** When the router first routed by the map that gave the slots to the shard (`performance.now()`). */
  at: number
  /** The slots' previous owners: a token naming one of them may have written a moved row. */
  from: Set<string>
  /** The shard primary's position read after `at` (it holds every copied row), once known. */
  position: CausalToken | undefined
  /** The read of that position in flight, shared by the reads that need it. */
  reading: Promise<CausalToken | undefined> | undefined
}

/** What `all()` filters rows by (`slotKey`): per slot, the index of its shard in `shards`. */
export interface ScatterRouting {
  /** Per slot, the index of the owner in the router's shards (`0xffff` for a shard it does not have). */
  readonly table: Uint16Array
  /** How many slots keys hash to. */
  readonly slots: number
  /** The ids of shards the map gives slots to that the router does not have (their rows are missing). */
  readonly unknown: readonly string[]
}

/** The routing hints and causal token of one async context (see `ShardRouter.run`). */
export interface Scope {
  use: ServerRole | undefined
  consistency: Consistency | undefined
  maxLagMs: number | undefined
  token: CausalToken
  /**
   * When the context's token came in, by `performance.now()` (monotonic, like the primary's
   * samples): a primary sample taken after it must cover it.
   */
  since: number
  parent: Scope | undefined
  tx:
    | { shard: string; run: (sql: string, params: readonly unknown[]) => Promise<unknown> }
    | undefined
}

/** The router's counters that are not per shard; `stats()` and the observed instruments read them. */
export interface RouterCounters {
  fellBackToPrimary: number
  fellBackToPrimaryByReason: Record<FallbackReason, number>
  gtidWaits: number
  gtidWaitsCaughtUp: number
  gtidWaitsTimedOut: number
  gtidWaitsFailed: number
  gtidWaitsSkipped: number
  causalTokensRefused: number
  causalPositionsDropped: number
  committed: number
  rolledBack: number
  scatterCalls: number
  scatterPartial: number
  scatterFailed: number
}

/**
 * What `transaction()` and `all()`, in their own files, need of the router's private state:
 * built once by the router's constructor.
 */
export interface RouterInternals {
  /** The shards, in configuration order. */
  readonly shards: readonly Shard[]
  /** The router's counters (the same object `stats()` reads). */
  readonly counters: RouterCounters
  /** The router's tracer and histograms. */
  readonly instruments: QueryInstruments
  /** The async context of routing hints and causal tokens. */
  readonly context: AsyncLocalStorage<Scope>
  /** The router's default per-statement timeout, in ms. */
  readonly queryTimeoutMs: number
  /** The router's default per-shard timeout of `all()`, in ms. */
  readonly scatterTimeoutMs: number
  /** The router's default policy of `all()` when a shard fails. */
  readonly onShardError: 'error' | 'partial'
  /** Notes that an async context was entered: statements look the context up from now on. */
  enterContext(): void
  /** Whether a shard's statements must go through its primary breaker now. */
  guarded(shard: Shard): boolean
  /** The error a caller sees for a breaker failure: an open breaker becomes `ShardUnavailableError`. */
  breakerError(shard: Shard, error: unknown): unknown
  /** Adds a write's GTID to the router's token and to every enclosing context's. */
  noteWrite(shardId: string, gtid: string, scope: Scope | undefined): void
  /** Whether the router routes by a slot map store (then `all()` needs a `slotKey`). */
  readonly slotMapped: boolean
  /**
   * The routing `all()` filters rows by: with a slot map, the map is read first (the newest,
   * so a router that has not polled since a cut-over does not count the frozen source's rows).
   */
  scatterRouting(): Promise<ScatterRouting>
  /** Picks the server of one statement and runs it; may throw synchronously. */
  route(
    shard: Shard,
    sql: string,
    params: readonly unknown[],
    options: QueryOptions,
    defaultTimeoutMs: number,
    sink?: RowSink,
  ): Promise<unknown>
}
