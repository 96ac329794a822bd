import {
  DEFAULT_HASH_RING_OPTIONS,
  type OutlierDetectionOptions,
  type StrategyName,
} from '@ballast/lb'
import type { CircuitBreakerOptions } from '@ballast/resilience'
import type { Duration, TelemetryOptions } from '@ballast/shared'
import type { PoolOptions } from 'mysql2'
import type { CausalToken } from './causalToken.js'
import type { SlotMapStore } from './slotMapStore.js'

/**
 * How fresh a read must be:
 * - `eventual`: any healthy replica (lag within `maxReplicaLag`).
 * - `bounded`: a replica whose measured lag is at most `maxLag` (per call, or `boundedLag`).
 * - `read-your-writes`: a replica that has applied every write of the current causal token
 *   (the async context's, or the router's own outside one); it waits with
 *   `MASTER_GTID_WAIT` in the same round trip as the read and reads the primary on timeout.
 * - `strong`: the primary.
 */
export type Consistency = 'eventual' | 'bounded' | 'read-your-writes' | 'strong'

/** Which server a statement may use: `auto` lets the classifier decide. */
export type ServerRole = 'auto' | 'primary' | 'replica'

/** A server's connection settings: a `mysql://` URL or mysql2 pool options (`uri`, `host`, `user`, …). */
export type ServerConfig = string | PoolOptions

/** One shard: a primary that takes writes and replicas that take reads. */
export interface ShardConfig {
  /** The shard's id: letters, digits, `_` and `-`, up to 64; it places the shard on the ring. */
  id: string
  /**
   * Relative share of keys on the ring.
   * @default 1
   */
  weight?: number
  /** The primary. */
  primary: ServerConfig
  /**
   * The replicas; reads are spread over the healthy ones.
   * @default []
   */
  replicas?: readonly ServerConfig[]
}

/**
 * Settings of lb's `HashRing` that places slots on shards. They must stay the same for keys to
 * stay put, and {@link planResharding} must be given the same ones.
 */
export interface RingOptions {
  /**
   * Ring points per unit of shard weight (lb's `HashRing` default).
   * @default 4096
   */
  pointsPerWeight?: number
  /**
   * Seed of the ring's hash (lb's `HashRing` default).
   * @default 0
   */
  seed?: number
}

/** The defaults of {@link RingOptions}, frozen: lb's `HashRing`'s. */
export const DEFAULT_RING_OPTIONS: Readonly<Required<RingOptions>> = Object.freeze({
  pointsPerWeight: DEFAULT_HASH_RING_OPTIONS.pointsPerWeight,
  seed: DEFAULT_HASH_RING_OPTIONS.seed,
})

/**
 * Options of {@link createShardRouter}. `meterProvider` and `tracerProvider` (from
 * `TelemetryOptions`) say where its metrics and spans go: the global providers by default.
 */
export interface ShardRouterOptions extends TelemetryOptions {
  /**
   * The shards. At least one; ids unique. With `slotMap`, every shard the map may name (its
   * servers); without, the shards the ring places slots on.
   */
  shards: readonly ShardConfig[]
  /**
   * A loaded {@link SlotMapStore} (`await store.load()`): the router routes by its shared,
   * versioned slot map instead of placing slots on a ring of `shards`, follows its changes, and
   * writes of slots that are moving check the source shard's fence in their transaction (a write
   * refused there is retried on the new owner within the statement's timeout). `slots` must be
   * the map's; `ring` is not used. See `docs/resharding.md`.
   * @default none: slots are placed on lb's `HashRing` of `shards`
   */
  slotMap?: SlotMapStore
  /**
   * Slots keys hash to before the ring places slots on shards; a power of two. Keys of a slot
   * move together, and {@link IdGenerator} can embed a slot in an id (`slotBits = log2(slots)`).
   * Changing it moves most keys.
   * @default 4096
   */
  slots?: number
  /**
   * Settings of lb's `HashRing` (points per unit of weight, seed); they must stay the same for
   * keys to stay put, and {@link planResharding} must be given the same ones.
   * @default DEFAULT_RING_OPTIONS
   */
  ring?: RingOptions
  /**
   * Consistency of a read that names none (per call or in the async context).
   * @default 'read-your-writes'
   */
  consistency?: Consistency
  /**
   * Replicas whose measured lag goes over this are taken out of rotation until they catch up
   * (a {@link Duration}: milliseconds, or a string such as `'10s'`).
   * @default 10000
   */
  maxReplicaLag?: Duration
  /**
   * The lag bound of a `bounded` read that gives no `maxLag`; zero allowed.
   * @default 1000
   */
  boundedLag?: Duration
  /**
   * How long a read-your-writes read waits for its replica to apply the token
   * (`MASTER_GTID_WAIT`) before it reads the primary instead.
   * @default 1000
   */
  gtidWaitTimeout?: Duration
  /**
   * Bound on one statement, waiting for a connection included; a write that times out
   * throws a retryable {@link ShardTimeoutError}.
   * @default 10000
   */
  queryTimeout?: Duration
  /**
   * mysql2 `connectTimeout` of every pool (unless a server's options set one).
   * @default 3000
   */
  connectTimeout?: Duration
  /**
   * mysql2 `connectionLimit` of every pool (unless a server's options set one).
   * @default 10
   */
  connectionLimit?: number
  /**
   * What a read does when its shard has replicas but none is healthy: `'primary'` reads the
   * primary (counted in `stats().fellBackToPrimary`), `'error'` throws a retryable
   * {@link ShardUnavailableError}.
   * @default 'primary'
   */
  noHealthyReplica?: 'primary' | 'error'
  /**
   * How often replicas' lag and health are checked; 0 turns checks off.
   * @default 1000
   */
  healthCheckInterval?: Duration
  /**
   * How replicas are picked: an lb strategy name.
   * @default 'peak-ewma'
   */
  replicaStrategy?: StrategyName
  /**
   * lb outlier detection of replicas: failed reads eject a replica for a while.
   * @default { consecutiveFailures: 3, baseEjectionTime: 5000, maxEjectionShare: 1 }
   */
  outlierDetection?: OutlierDetectionOptions
  /**
   * The circuit breaker (from `@ballast/resilience`) in front of each shard's primary: when
   * most recent statements failed to reach it, statements fail at once with a retryable
   * {@link ShardUnavailableError} instead of waiting for timeouts; `false` turns it off. Only
   * connection failures and timeouts count, never SQL errors.
   * @default { volumeThreshold: 10, errorThresholdPercentage: 50, resetTimeout: 5000 }
   */
  primaryBreaker?: PrimaryBreakerOptions | false
  /**
   * Per-shard timeout of {@link ShardRouter.all}.
   * @default 5000
   */
  scatterTimeout?: Duration
  /**
   * What {@link ShardRouter.all} does when a shard fails: `'error'` throws a
   * {@link ScatterGatherError}; `'partial'` returns the other shards' rows flagged `partial`.
   * @default 'error'
   */
  onShardError?: 'error' | 'partial'
  /**
   * Secrets that sign causal tokens given to clients (HMAC-SHA256), each at least 32
   * characters. The first signs, any verifies: rotate by putting a new secret first, and drop
   * the old one once the tokens it signed no longer matter (a token only matters until the
   * replicas have applied its writes: seconds). Required to take a token as a string
   * (`run({ causalToken: string })`) or to give one ({@link ShardRouter.signCausalToken}); a
   * string that fails verification is ignored and counted, never an error.
   * @default none: token strings are refused with an {@link InvalidArgumentError}
   */
  secrets?: string | readonly string[]
}

/**
 * The options of the primary breaker: resilience's circuit breaker options that the router does
 * not set itself.
 * @inline
 */
type PrimaryBreakerOptions = Omit<CircuitBreakerOptions, 'errorFilter' | 'fallback' | 'name'>

/**
 * The defaults of {@link ShardRouterOptions}, frozen. An option given as `undefined` keeps its
 * default; `outlierDetection` and `primaryBreaker` objects are merged over theirs field by field.
 */
export const DEFAULT_SHARD_ROUTER_OPTIONS: Readonly<{
  slots: number
  ring: Readonly<RingOptions>
  consistency: Consistency
  maxReplicaLag: Duration
  boundedLag: Duration
  gtidWaitTimeout: Duration
  queryTimeout: Duration
  connectTimeout: Duration
  connectionLimit: number
  noHealthyReplica: 'primary' | 'error'
  healthCheckInterval: Duration
  replicaStrategy: StrategyName
  outlierDetection: Readonly<OutlierDetectionOptions>
  primaryBreaker: Readonly<PrimaryBreakerOptions> | false
  scatterTimeout: Duration
  onShardError: 'error' | 'partial'
}> = Object.freeze({
  slots: 4096,
  ring: DEFAULT_RING_OPTIONS,
  consistency: 'read-your-writes',
  maxReplicaLag: 10_000,
  boundedLag: 1000,
  gtidWaitTimeout: 1000,
  queryTimeout: 10_000,
  connectTimeout: 3000,
  connectionLimit: 10,
  noHealthyReplica: 'primary',
  healthCheckInterval: 1000,
  replicaStrategy: 'peak-ewma',
  outlierDetection: Object.freeze({
    consecutiveFailures: 3,
    baseEjectionTime: 5000,
    maxEjectionShare: 1,
  }),
  primaryBreaker: Object.freeze({
    volumeThreshold: 10,
    errorThresholdPercentage: 50,
    resetTimeout: 5000,
  }),
  scatterTimeout: 5000,
  onShardError: 'error',
})

/** Per-call routing of one statement. */
export interface QueryOptions {
  /**
   * Which server: `'primary'` forces the primary; `'replica'` lets a statement the classifier
   * is unsure of go to a replica (writes and locking reads never do).
   * @default the async context's, else 'auto'
   */
  use?: ServerRole
  /**
   * How fresh a read must be.
   * @default the async context's, else the router's `consistency`
   */
  consistency?: Consistency
  /**
   * Lag bound of a `bounded` read.
   * @default the async context's, else the router's `boundedLag`
   */
  maxLag?: Duration
  /**
   * Bound on this statement.
   * @default the router's `queryTimeout`
   */
  timeout?: Duration
}

/** The defaults of {@link QueryOptions}, frozen: none is set per call, so each falls back to the async context's, then to the router's options. */
export const DEFAULT_QUERY_OPTIONS: Readonly<QueryOptions> = Object.freeze({})

/**
 * Routing hints and the causal token of an async context, set by {@link ShardRouter.run}:
 * they hold for every statement made inside the callback (and its awaits), and nowhere else.
 */
export interface RoutingScope {
  /** Which server statements use by default in this context. */
  use?: ServerRole
  /** Consistency of reads in this context. */
  consistency?: Consistency
  /** Lag bound of `bounded` reads in this context. */
  maxLag?: Duration
  /**
   * The causal token to start from. A string is a signed token from a client (the user's
   * cookie, made by {@link ShardRouter.signCausalToken}), verified with the router's
   * `secrets`: one that fails verification is ignored and counted. A {@link CausalToken} is
   * trusted as given (e.g. parsed from a server-side session). Writes made in the context add
   * to it; read it back with {@link ShardRouter.causalToken}.
   * @throws InvalidArgumentError (from {@link ShardRouter.run}) for a string when the router has no `secrets`.
   */
  causalToken?: CausalToken | string
}

/** Options of {@link ShardRouter.all}. */
export interface ScatterOptions extends Omit<QueryOptions, 'timeout'> {
  /**
   * Per-shard timeout.
   * @default the router's `scatterTimeout`
   */
  timeout?: Duration
  /**
   * What to do when a shard fails.
   * @default the router's `onShardError`
   */
  onShardError?: 'error' | 'partial'
  /**
   * The result column holding each row's shard key (the value the application routes the row
   * by), so that a row counts only on the shard that owns its slot in the slot map the call
   * routed with: rows of a range being copied to a new shard, and the old copies a move leaves
   * on its source until `purge`, are dropped, and `all()` neither counts a row twice nor misses
   * one while slots move (see `docs/resharding.md`). The column must be in every row (select
   * it); a row whose key is `NULL` or empty is kept (no move ever copies it). For an aggregate
   * merge the SQL must group by the key column (`SELECT user_id, COUNT(*) AS n … GROUP BY
   * user_id`): each row is then one key's part, kept or dropped whole, and the merge adds the
   * kept parts. `false` says the rows never move (a table no move copies, or a write), and
   * nothing is dropped.
   *
   * Required on a router with a `slotMap` (an {@link InvalidArgumentError} otherwise): its
   * shards may hold copies at any time, a move's before the cut-over and after it until
   * `purge`. Optional with static `shards`.
   * @default none: required with `slotMap`, no filter with static `shards`
   */
  slotKey?: string | false
}

/** The defaults of {@link ScatterOptions}, frozen: none is set per call, so each falls back to the async context's, then to the router's options (`scatterTimeout`, `onShardError`). */
export const DEFAULT_SCATTER_OPTIONS: Readonly<ScatterOptions> = Object.freeze({})

/** Options of {@link ShardRouter.transaction}. */
export interface TransactionOptions {
  /**
   * Isolation level of this transaction.
   * @default the server's (REPEATABLE READ on MariaDB)
   */
  isolationLevel?: 'READ UNCOMMITTED' | 'READ COMMITTED' | 'REPEATABLE READ' | 'SERIALIZABLE'
  /**
   * Bound on each statement of the transaction.
   * @default the router's `queryTimeout`
   */
  timeout?: Duration
}

/** The defaults of {@link TransactionOptions}, frozen: none is set per call (the server's isolation level, the router's `queryTimeout`). */
export const DEFAULT_TRANSACTION_OPTIONS: Readonly<TransactionOptions> = Object.freeze({})

/** Options of {@link ShardRouter.setPrimary}. */
export interface SetPrimaryOptions {
  /**
   * How long statements still running on the old primary may take to finish before they are
   * cut off (their connections destroyed) with a retryable {@link ShardUnavailableError}.
   * Statements waiting for one of its connections fail at once.
   * @default 1000
   */
  drainTimeout?: Duration
}

/** The defaults of {@link SetPrimaryOptions}, frozen. */
export const DEFAULT_SET_PRIMARY_OPTIONS: Readonly<Required<SetPrimaryOptions>> = Object.freeze({
  drainTimeout: 1000,
})
