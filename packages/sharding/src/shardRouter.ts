import { AsyncLocalStorage } from 'node:async_hooks'
import {
  type Balancer,
  type BalancerOptions,
  createBalancer,
  type Endpoint,
  isLbError,
  type OutlierDetectionOptions,
  type StrategyName,
} from '@ballast/lb'
import {
  BreakerOpenError,
  type CircuitBreaker,
  type CircuitBreakerOptions,
  circuitBreaker,
} from '@ballast/resilience'
import { Emitter, type Unsubscribe } from '@ballast/shared'
import type { PoolOptions } from 'mysql2'
import { CausalToken, checkSecrets, signToken, verifyToken } from './causalToken.js'
import { classifyStatement, statementBody } from './classifyStatement.js'
import {
  InvalidArgumentError,
  ScatterGatherError,
  type ShardFailure,
  ShardingClosedError,
  ShardTimeoutError,
  ShardUnavailableError,
  UnknownShardError,
  UnsafeStatementError,
} from './errors.js'
import { checkShard, type MonitoredShard, type ReplicaState } from './internal/replicaMonitor.js'
import {
  GUARDED,
  isConnectionError,
  lastGtidOf,
  queryOn,
  Server,
  STREAMED,
} from './internal/server.js'
import { buildSlotTable } from './internal/slotTable.js'
import { type RowSink, StreamMerge } from './internal/streamMerge.js'
import {
  type AggregateMerge,
  checkMergeSpec,
  type MergeSpec,
  mergeAggregates,
  type OrderByMerge,
  type Row,
  rowComparator,
} from './mergeSpec.js'
import { type ShardKey, slotFor } from './shardKey.js'

const SHARD_ID = /^[A-Za-z0-9_-]{1,64}$/

/**
 * How fresh a read must be:
 * - `eventual`: any healthy replica (lag within `maxReplicaLagMs`).
 * - `bounded`: a replica whose measured lag is at most `maxLagMs` (per call, or `boundedLagMs`).
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
   * Ring points per unit of shard weight.
   * @default lb's HashRing default (4096)
   */
  pointsPerWeight?: number
  /**
   * Seed of the ring's hash.
   * @default 0
   */
  seed?: number
}

/** Options of {@link createShardRouter}. */
export interface ShardRouterOptions {
  /** The shards. At least one; ids unique. */
  shards: readonly ShardConfig[]
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
   * @default {} (lb's defaults)
   */
  ring?: RingOptions
  /**
   * Consistency of a read that names none (per call or in the async context).
   * @default 'read-your-writes'
   */
  consistency?: Consistency
  /**
   * Replicas whose measured lag goes over this are taken out of rotation until they catch up, in ms.
   * @default 10000
   */
  maxReplicaLagMs?: number
  /**
   * The lag bound of a `bounded` read that gives no `maxLagMs`, in ms.
   * @default 1000
   */
  boundedLagMs?: number
  /**
   * How long a read-your-writes read waits for its replica to apply the token
   * (`MASTER_GTID_WAIT`) before it reads the primary instead, in ms.
   * @default 1000
   */
  gtidWaitTimeoutMs?: number
  /**
   * Bound on one statement, waiting for a connection included, in ms; a write that times out
   * throws a retryable {@link ShardTimeoutError}.
   * @default 10000
   */
  queryTimeoutMs?: number
  /**
   * mysql2 `connectTimeout` of every pool (unless a server's options set one), in ms.
   * @default 3000
   */
  connectTimeoutMs?: number
  /**
   * mysql2 `connectionLimit` of every pool (unless a server's options set one).
   * @default 10
   */
  connectionLimit?: number
  /**
   * What a read does when its shard has replicas but none is healthy: `'primary'` reads the
   * primary (counted in `stats().replicaFallbacks`), `'error'` throws a retryable
   * {@link ShardUnavailableError}.
   * @default 'primary'
   */
  noHealthyReplica?: 'primary' | 'error'
  /**
   * How often replicas' lag and health are checked, in ms; 0 turns checks off.
   * @default 1000
   */
  healthCheckIntervalMs?: number
  /**
   * How replicas are picked: an lb strategy name.
   * @default 'peak-ewma'
   */
  replicaStrategy?: StrategyName
  /**
   * lb outlier detection of replicas: failed reads eject a replica for a while.
   * @default { consecutiveFailures: 3, baseEjectionTimeMs: 5000, maxEjectionShare: 1 }
   */
  outlierDetection?: OutlierDetectionOptions
  /**
   * The circuit breaker (from `@ballast/resilience`) in front of each shard's primary: when
   * most recent statements failed to reach it, statements fail at once with a retryable
   * {@link ShardUnavailableError} instead of waiting for timeouts; `false` turns it off. Only
   * connection failures and timeouts count, never SQL errors.
   * @default { volumeThreshold: 10, errorThresholdPercentage: 50, resetTimeout: 5000 }
   */
  primaryBreaker?: Omit<CircuitBreakerOptions, 'errorFilter' | 'fallback' | 'name'> | false
  /**
   * Per-shard timeout of {@link ShardRouter.all}, in ms.
   * @default 5000
   */
  scatterTimeoutMs?: number
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

/** The defaults of {@link ShardRouterOptions}. */
export const DEFAULT_SHARD_ROUTER_OPTIONS: Readonly<
  Required<Omit<ShardRouterOptions, 'shards' | 'ring' | 'secrets'>>
> = {
  slots: 4096,
  consistency: 'read-your-writes' as Consistency,
  maxReplicaLagMs: 10_000,
  boundedLagMs: 1000,
  gtidWaitTimeoutMs: 1000,
  queryTimeoutMs: 10_000,
  connectTimeoutMs: 3000,
  connectionLimit: 10,
  noHealthyReplica: 'primary' as 'primary' | 'error',
  healthCheckIntervalMs: 1000,
  replicaStrategy: 'peak-ewma' as StrategyName,
  outlierDetection: {
    consecutiveFailures: 3,
    baseEjectionTimeMs: 5000,
    maxEjectionShare: 1,
  } as OutlierDetectionOptions,
  scatterTimeoutMs: 5000,
  onShardError: 'error' as 'error' | 'partial',
  primaryBreaker: { volumeThreshold: 10, errorThresholdPercentage: 50, resetTimeout: 5000 } as
    | Omit<CircuitBreakerOptions, 'errorFilter' | 'fallback' | 'name'>
    | false,
}

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
   * Lag bound of a `bounded` read, in ms.
   * @default the router's `boundedLagMs`
   */
  maxLagMs?: number
  /**
   * Bound on this statement, in ms.
   * @default the router's `queryTimeoutMs`
   */
  timeoutMs?: number
}

/**
 * Routing hints and the causal token of an async context, set by {@link ShardRouter.run}:
 * they hold for every statement made inside the callback (and its awaits), and nowhere else.
 */
export interface RoutingScope {
  /** Which server statements use by default in this context. */
  use?: ServerRole
  /** Consistency of reads in this context. */
  consistency?: Consistency
  /** Lag bound of `bounded` reads in this context, in ms. */
  maxLagMs?: number
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
export interface ScatterOptions extends Omit<QueryOptions, 'timeoutMs'> {
  /**
   * Per-shard timeout, in ms.
   * @default the router's `scatterTimeoutMs`
   */
  timeoutMs?: number
  /**
   * What to do when a shard fails.
   * @default the router's `onShardError`
   */
  onShardError?: 'error' | 'partial'
}

/** The merged answer of {@link ShardRouter.all}. */
export interface ScatterResult<T = Row> {
  /** The merged rows. */
  rows: T[]
  /** Whether some shard failed and its rows are missing (only with `onShardError: 'partial'`). */
  partial: boolean
  /** Every shard that failed, with its error. */
  failures: ShardFailure[]
  /** The shards that answered, in shard order. */
  shards: string[]
}

/** A transaction on one shard's primary, given to the callback of {@link ShardRouter.transaction}. */
export interface ShardTransaction {
  /** The shard the transaction runs on. */
  readonly shard: string
  /**
   * Runs a statement inside the transaction (always on the primary), values through placeholders.
   * @throws once the transaction has ended.
   */
  query<T = Row[]>(sql: string, params?: readonly unknown[]): Promise<T>
}

/** Options of {@link ShardRouter.transaction}. */
export interface TransactionOptions {
  /**
   * Isolation level of this transaction.
   * @default the server's (REPEATABLE READ on MariaDB)
   */
  isolationLevel?: 'READ UNCOMMITTED' | 'READ COMMITTED' | 'REPEATABLE READ' | 'SERIALIZABLE'
  /**
   * Bound on each statement of the transaction, in ms.
   * @default the router's `queryTimeoutMs`
   */
  timeoutMs?: number
}

/** Counters of one shard. */
export interface ShardStats {
  /** Statements run on the primary. */
  primaryQueries: number
  /** Reads run on replicas. */
  replicaQueries: number
  /** Statements that failed because a server was unreachable or timed out. */
  errors: number
}

/** The state of one replica, in {@link ShardRouterStats}. */
export interface ReplicaStats {
  /** The replica's id, `<shard>/replica-<n>`. */
  id: string
  /** Its shard. */
  shard: string
  /** Whether it takes reads now (healthy and not ejected). */
  available: boolean
  /** Whether the last health check passed. */
  healthy: boolean
  /** Whether lb's outlier detection has ejected it for failed reads. */
  ejected: boolean
  /** Measured lag in ms (`null` before the first check, `Infinity` when replication is stopped). */
  lagMs: number | null
  /** Why it is unhealthy, if it is. */
  reason: string | undefined
  /** Reads it served. */
  reads: number
}

/** Transaction counters, in {@link ShardRouterStats}. */
export interface TransactionStats {
  /** Transactions committed. */
  committed: number
  /** Transactions rolled back (the callback threw, a statement failed or the connection dropped). */
  rolledBack: number
}

/** Scatter-gather counters, in {@link ShardRouterStats}. */
export interface ScatterStats {
  /** Calls of {@link ShardRouter.all}. */
  calls: number
  /** Calls that returned partial results (`onShardError: 'partial'` and some shard failed). */
  partial: number
  /** Calls that threw a {@link ScatterGatherError}. */
  failed: number
}

/** A snapshot of a router's counters, from {@link ShardRouter.stats}. */
export interface ShardRouterStats {
  /** Per shard id. */
  shards: Record<string, ShardStats>
  /** Reads meant for a replica that the primary served (no healthy replica, replica error, GTID wait timeout). */
  replicaFallbacks: number
  /** Read-your-writes reads that waited on a replica with `MASTER_GTID_WAIT`. */
  gtidWaits: number
  /** Waits that timed out (the read then went to the primary). */
  gtidWaitTimeouts: number
  /** Read-your-writes reads that needed no wait: the replica was known to have the token already. */
  gtidWaitsSkipped: number
  /** Causal token strings refused (malformed, unsigned, tampered or signed with an unknown secret) and ignored. */
  causalTokensRefused: number
  /** Token positions dropped because the primary, sampled after the request began, had not written them. */
  causalPositionsDropped: number
  /** Transactions committed and rolled back. */
  transactions: TransactionStats
  /** Scatter-gather calls, those that returned partial results and those that failed. */
  scatter: ScatterStats
  /** Every replica. */
  replicas: ReplicaStats[]
}

/** Payload of the `replica-ejected` event. */
export interface ReplicaEjectedEvent {
  /** The replica's shard. */
  shard: string
  /** The replica's id, `<shard>/replica-<n>`. */
  replica: string
  /** Why it left rotation: the failed health check (e.g. `SQL thread stopped`, `lag over the bound`) or `ejected: …`. */
  reason: string
}

/** Payload of the `replica-restored` event. */
export interface ReplicaRestoredEvent {
  /** The replica's shard. */
  shard: string
  /** The replica's id, `<shard>/replica-<n>`. */
  replica: string
}

/**
 * Why a read meant for a replica went to the primary: no replica qualified, the replicas
 * tried failed, the replica did not apply the causal token within `gtidWaitTimeoutMs`, or the
 * token demands a position the router has not seen the primary write yet (a write of another
 * process since the last health check, or a forged position): no replica waits for it.
 */
export type FallbackReason =
  | 'no-healthy-replica'
  | 'replica-error'
  | 'gtid-wait-timeout'
  | 'token-ahead-of-primary'

/** Payload of the `fell-back-to-primary` event. */
export interface FellBackToPrimaryEvent {
  /** The shard of the read. */
  shard: string
  /** Why the primary served it. */
  reason: FallbackReason
  /** The last replica error, with `reason: 'replica-error'`. */
  error?: unknown
}

/** Payload of the `causal-token-refused` event. */
export interface CausalTokenRefusedEvent {
  /**
   * Why: `malformed` (not a signed token, e.g. unsigned or cut), `bad-signature` (tampered, or
   * signed with a secret the router does not hold), `ahead-of-primary` (positions the primary
   * had not written when sampled after the request began; they were dropped).
   */
  reason: 'malformed' | 'bad-signature' | 'ahead-of-primary'
  /** The shard whose positions were dropped, with `ahead-of-primary`. */
  shard?: string
}

/** Payload of the `health-check-failed` event. */
export interface HealthCheckFailedEvent {
  /** The server's shard. */
  shard: string
  /** The server's id, `<shard>/primary` or `<shard>/replica-<n>`. */
  server: string
  /** The error of the check. */
  error: unknown
}

/** The events of a {@link ShardRouter}, with their payloads. */
export interface ShardRouterEvents {
  /** A replica left rotation: failed health check or lag over the bound (`reason`), or ejected by outlier detection. */
  'replica-ejected': ReplicaEjectedEvent
  /** A replica is back in rotation. */
  'replica-restored': ReplicaRestoredEvent
  /** A read meant for a replica went to the primary. */
  'fell-back-to-primary': FellBackToPrimaryEvent
  /** A health check could not reach a server. */
  'health-check-failed': HealthCheckFailedEvent
  /** A causal token string was refused, or positions of a token were dropped; the request goes on without them. */
  'causal-token-refused': CausalTokenRefusedEvent
}

interface Shard {
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
}

interface Scope {
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

function positive(name: string, value: unknown, allowZero = false): number {
  if (
    typeof value !== 'number' ||
    !Number.isFinite(value) ||
    value < 0 ||
    (!allowZero && value === 0)
  ) {
    throw new InvalidArgumentError(
      `invalid option "${name}": expected a ${allowZero ? 'non-negative' : 'positive'} number of milliseconds, got ${String(value)}`,
    )
  }
  return value
}

function oneOf<T extends string>(name: string, value: unknown, allowed: readonly T[]): T {
  if (!allowed.includes(value as T)) {
    throw new InvalidArgumentError(
      `invalid option "${name}": expected one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${String(value)}`,
    )
  }
  return value as T
}

const CONSISTENCIES: readonly Consistency[] = ['eventual', 'bounded', 'read-your-writes', 'strong']
const ROLES: readonly ServerRole[] = ['auto', 'primary', 'replica']

function ignore(): void {}

const NO_OPTIONS: QueryOptions = Object.freeze({})

/**
 * Routes statements over shards by a shard key: the key's slot is placed on lb's `HashRing`
 * of shards; writes, locking reads and anything the classifier is unsure of go to the shard's
 * primary; plain reads go to a replica picked by an lb balancer (with outlier ejection),
 * fresh enough for the read's {@link Consistency}. Create it with {@link createShardRouter}.
 */
export class ShardRouter {
  readonly #events = new Emitter<ShardRouterEvents>()
  readonly #shards: Shard[]
  readonly #byId = new Map<string, Shard>()
  readonly #table: Uint16Array
  readonly #slots: number
  readonly #o: typeof DEFAULT_SHARD_ROUTER_OPTIONS
  readonly #als = new AsyncLocalStorage<Scope>()
  /** Whether any async context was ever entered: until then, statements skip the context lookup. */
  #scoped = false
  #token = CausalToken.empty
  readonly #secrets: string[] | undefined
  #closed = false
  #timer: ReturnType<typeof setTimeout> | undefined
  readonly #keepTimerLists: Array<ReturnType<typeof setTimeout>> = []
  #checking: Promise<void> | undefined
  #counters = {
    replicaFallbacks: 0,
    gtidWaits: 0,
    gtidWaitTimeouts: 0,
    gtidWaitsSkipped: 0,
    causalTokensRefused: 0,
    causalPositionsDropped: 0,
    committed: 0,
    rolledBack: 0,
    scatterCalls: 0,
    scatterPartial: 0,
    scatterFailed: 0,
  }

  /** @internal Use {@link createShardRouter}. */
  constructor(options: ShardRouterOptions) {
    if (typeof options !== 'object' || options === null) {
      throw new InvalidArgumentError(`invalid options: expected an object, got ${String(options)}`)
    }
    const o = {
      ...DEFAULT_SHARD_ROUTER_OPTIONS,
      ...options,
    } as typeof DEFAULT_SHARD_ROUTER_OPTIONS & ShardRouterOptions
    const slots = o.slots
    if (!Number.isInteger(slots) || slots < 1 || slots > 65536 || (slots & (slots - 1)) !== 0) {
      throw new InvalidArgumentError(
        `invalid option "slots": expected a power of two up to 65536, got ${String(slots)}`,
      )
    }
    oneOf('consistency', o.consistency, CONSISTENCIES)
    positive('maxReplicaLagMs', o.maxReplicaLagMs)
    positive('boundedLagMs', o.boundedLagMs, true)
    positive('gtidWaitTimeoutMs', o.gtidWaitTimeoutMs)
    positive('queryTimeoutMs', o.queryTimeoutMs)
    positive('connectTimeoutMs', o.connectTimeoutMs)
    positive('scatterTimeoutMs', o.scatterTimeoutMs)
    positive('healthCheckIntervalMs', o.healthCheckIntervalMs, true)
    if (!Number.isInteger(o.connectionLimit) || o.connectionLimit < 1) {
      throw new InvalidArgumentError(
        `invalid option "connectionLimit": expected a positive integer, got ${String(o.connectionLimit)}`,
      )
    }
    oneOf('noHealthyReplica', o.noHealthyReplica, ['primary', 'error'])
    oneOf('onShardError', o.onShardError, ['error', 'partial'])
    this.#secrets = o.secrets === undefined ? undefined : checkSecrets(o.secrets)
    if (!Array.isArray(o.shards) || o.shards.length === 0) {
      throw new InvalidArgumentError(
        `invalid option "shards": expected a non-empty array, got ${Array.isArray(o.shards) ? '[]' : typeof o.shards}`,
      )
    }
    const seen = new Set<string>()
    for (const s of o.shards) {
      if (typeof s !== 'object' || s === null || typeof s.id !== 'string' || !SHARD_ID.test(s.id)) {
        throw new InvalidArgumentError(
          `invalid option "shards": each shard needs an id of letters, digits, "_" or "-" (1 to 64), got ${JSON.stringify((s as { id?: unknown } | null)?.id)}`,
        )
      }
      if (seen.has(s.id))
        throw new InvalidArgumentError(`invalid option "shards": duplicate shard id "${s.id}"`)
      seen.add(s.id)
      if (typeof s.primary !== 'string' && (typeof s.primary !== 'object' || s.primary === null)) {
        throw new InvalidArgumentError(
          `invalid option "shards[${s.id}].primary": expected a URL or mysql2 pool options`,
        )
      }
      if (s.replicas !== undefined && !Array.isArray(s.replicas)) {
        throw new InvalidArgumentError(
          `invalid option "shards[${s.id}].replicas": expected an array`,
        )
      }
    }
    this.#o = o
    this.#slots = slots
    const placement = buildSlotTable(o.shards, slots, o.ring ?? {})
    this.#table = placement.table
    const defaults = { connectTimeoutMs: o.connectTimeoutMs, connectionLimit: o.connectionLimit }
    const window = o.primaryBreaker === false ? undefined : o.primaryBreaker.window
    const guardMs = window?.type === 'time' ? window.duration : 10_000
    this.#shards = o.shards.map((config, index) => {
      const replicaConfigs: readonly ServerConfig[] = config.replicas ?? []
      const primary = new Server(config.id, 'primary', `${config.id}/primary`, config.primary, {
        ...defaults,
        multipleStatements: false,
        trackGtid: replicaConfigs.length > 0,
      })
      const replicas: ReplicaState[] = replicaConfigs.map((rc, i) => ({
        server: new Server(config.id, 'replica', `${config.id}/replica-${i}`, rc, {
          ...defaults,
          multipleStatements: true,
          trackGtid: false,
        }),
        applied: CausalToken.empty,
        lagMs: undefined,
        healthy: true,
        reason: undefined,
        reads: 0,
        checkedAt: 0,
      }))
      let balancer: Balancer<ReplicaState> | undefined
      if (replicas.length > 0) {
        const balancerOptions: BalancerOptions<ReplicaState> = {
          strategy: o.replicaStrategy,
          endpoints: replicas.map((r) => ({ id: r.server.id, value: r })),
          // A stale or stopped replica must never take reads because too few are healthy.
          panicThreshold: 0,
          outlierDetection: {
            ...DEFAULT_SHARD_ROUTER_OPTIONS.outlierDetection,
            ...o.outlierDetection,
          },
        }
        balancer = createBalancer(balancerOptions)
        balancer.on('ejected', ({ endpoint, reason }) =>
          this.#events.emit('replica-ejected', {
            shard: config.id,
            replica: endpoint.id,
            reason: `ejected: ${reason}`,
          }),
        )
        balancer.on('restored', ({ endpoint, reason }) => {
          if (reason === 'ejection-expired')
            this.#events.emit('replica-restored', { shard: config.id, replica: endpoint.id })
        })
      }
      const shard: Shard = {
        id: config.id,
        index,
        primary,
        breaker:
          o.primaryBreaker === false
            ? undefined
            : circuitBreaker({
                ...o.primaryBreaker,
                name: `${config.id}/primary`,
                // Only the server failing counts, never a statement's own SQL error.
                errorFilter: (error: unknown) => !isConnectionError(error),
              }),
        guardedUntil: 0,
        replicas,
        balancer,
        monitored: { id: config.id, primary, replicas, samples: [] },
        stats: { primaryQueries: 0, replicaQueries: 0, errors: 0 },
      }
      primary.onFailure = (error, flags) => {
        shard.stats.errors++
        const breaker = shard.breaker
        if (breaker === undefined) return
        shard.guardedUntil = Date.now() + guardMs
        // A statement that skipped the breaker still counts as its failure.
        if ((flags & GUARDED) === 0) breaker.execute(() => Promise.reject(error)).catch(ignore)
      }
      if (replicaConfigs.length > 0) {
        primary.onGtid = (gtid, scope) =>
          this.#noteWrite(config.id, gtid, scope as Scope | undefined)
      }
      this.#byId.set(config.id, shard)
      return shard
    })
    if (o.healthCheckIntervalMs > 0 && this.#shards.some((s) => s.replicas.length > 0))
      this.#schedule(0)
    // Node keeps one timer list per duration and tears it down when its last timer is cleared:
    // with one statement at a time, every statement's timeout would build and destroy the list
    // (a priority-queue update each way). One idle, unref'd timer per default duration keeps
    // the lists alive, so a statement's timeout costs an append and an unlink.
    for (const ms of new Set([o.queryTimeoutMs, o.scatterTimeoutMs])) {
      const keep = setTimeout(function refresh() {
        keep.refresh()
      }, ms)
      keep.unref()
      this.#keepTimerLists.push(keep)
    }
  }

  /**
   * Adds a listener of a router event; returns a function that removes it. A listener that
   * throws never breaks the statement that emitted: its error is rethrown in a microtask.
   * @example
   * ```ts
   * const off = router.on('replica-ejected', ({ replica, reason }) => log.warn({ replica, reason }))
   * off()
   * ```
   */
  on<K extends keyof ShardRouterEvents>(
    event: K,
    listener: (event: ShardRouterEvents[K]) => void,
  ): Unsubscribe {
    return this.#events.on(event, listener)
  }

  /** Adds a listener called at most once; returns a function that removes it. */
  once<K extends keyof ShardRouterEvents>(
    event: K,
    listener: (event: ShardRouterEvents[K]) => void,
  ): Unsubscribe {
    return this.#events.once(event, listener)
  }

  /** Removes a listener added with {@link ShardRouter.on} or {@link ShardRouter.once}. */
  off<K extends keyof ShardRouterEvents>(
    event: K,
    listener: (event: ShardRouterEvents[K]) => void,
  ): void {
    this.#events.off(event, listener)
  }

  /** How many slots keys hash to. */
  get slots(): number {
    return this.#slots
  }

  /** The shard ids, in configuration order. */
  shardIds(): string[] {
    return this.#shards.map((s) => s.id)
  }

  /**
   * The id of the shard that owns a key (or a {@link SlotKey}).
   * @throws ShardKeyMissingError if the key is missing or empty.
   */
  shardFor(key: ShardKey): string {
    return this.#shardOf(key).id
  }

  /** The slot of a key: which slot of `slots` it hashes to. */
  slotFor(key: ShardKey): number {
    return slotFor(key, this.#slots)
  }

  /**
   * Runs `fn` in an async context with routing hints and a causal token: every statement made
   * inside it (across awaits) uses them, and nothing outside it does. Writes inside add their
   * GTIDs to the context's token (and to every enclosing context's). A token string is
   * verified with the router's `secrets` (see {@link RoutingScope.causalToken}).
   *
   * @throws InvalidArgumentError if a hint is invalid, the token is neither a string nor a {@link CausalToken}, or it is a string and the router has no `secrets`.
   * @example
   * ```ts
   * app.post('/orders', (req, res) =>
   *   router.run({ causalToken: req.cookies.ryw ?? '' }, async () => {
   *     await router.query(req.userId, 'INSERT INTO orders (user_id, total) VALUES (?, ?)', [req.userId, 12])
   *     res.cookie('ryw', router.signCausalToken(), { httpOnly: true }).sendStatus(201)
   *   }),
   * )
   * ```
   */
  run<R>(scope: RoutingScope, fn: () => R): R {
    if (scope.use !== undefined) oneOf('use', scope.use, ROLES)
    if (scope.consistency !== undefined) oneOf('consistency', scope.consistency, CONSISTENCIES)
    if (scope.maxLagMs !== undefined) positive('maxLagMs', scope.maxLagMs, true)
    this.#scoped = true
    const parent = this.#als.getStore()
    const token = scope.causalToken
    let given: CausalToken
    if (token === undefined) given = CausalToken.empty
    else if (typeof token === 'string') given = this.verifyCausalToken(token)
    else if (token instanceof CausalToken) given = token
    else {
      throw new InvalidArgumentError(
        `invalid option "causalToken": expected a signed token string or a CausalToken, got ${token === null ? 'null' : typeof token}`,
      )
    }
    const store: Scope = {
      use: scope.use ?? parent?.use,
      consistency: scope.consistency ?? parent?.consistency,
      maxLagMs: scope.maxLagMs ?? parent?.maxLagMs,
      token: (parent?.token ?? CausalToken.empty).merge(given),
      since: performance.now(),
      parent,
      tx: parent?.tx,
    }
    return this.#als.run(store, fn)
  }

  /**
   * The causal token of the current async context (see {@link ShardRouter.run}), or, outside
   * any context, the router's own token of every write it has made. Put
   * {@link ShardRouter.signCausalToken}'s string in a cookie to carry read-your-writes to the
   * next request.
   */
  causalToken(): CausalToken {
    return (this.#scoped ? this.#als.getStore()?.token : undefined) ?? this.#token
  }

  /**
   * The signed string of a causal token (by default the current one, see
   * {@link ShardRouter.causalToken}), for a cookie or header: `run({ causalToken })` and
   * {@link ShardRouter.verifyCausalToken} read it back. Signed with the first of `secrets`.
   * @throws InvalidArgumentError if the router has no `secrets`.
   * @example
   * ```ts
   * res.cookie('ryw', router.signCausalToken(), { httpOnly: true, sameSite: 'lax' })
   * ```
   */
  signCausalToken(token: CausalToken = this.causalToken()): string {
    return signToken(token, this.#needSecrets()[0]!)
  }

  /**
   * Reads a signed causal token string from a client. Anything that is not a token signed
   * with one of `secrets` (unsigned, tampered, cut, another secret's) gives
   * {@link CausalToken.empty}, is counted in `stats().causalTokensRefused` and emitted as
   * `causal-token-refused`: a bad cookie costs the user read-your-writes for one request,
   * never an error. `run({ causalToken: string })` calls it.
   * @throws InvalidArgumentError if the router has no `secrets`.
   */
  verifyCausalToken(text: string): CausalToken {
    const result = verifyToken(text, this.#needSecrets())
    if (typeof result !== 'string') return result
    this.#counters.causalTokensRefused++
    if (this.#events.has('causal-token-refused'))
      this.#events.emit('causal-token-refused', { reason: result })
    return CausalToken.empty
  }

  #needSecrets(): string[] {
    if (this.#secrets === undefined) {
      throw new InvalidArgumentError(
        'invalid option "secrets": causal tokens travel as strings only signed; give the router secrets (or pass a CausalToken from server-side storage)',
      )
    }
    return this.#secrets
  }

  /**
   * Runs one statement on the shard of `shardKey`. Values go through `?` placeholders (never
   * into the SQL text); one statement per call. Writes, locking reads and statements the
   * classifier is unsure of run on the primary; plain reads on a replica fresh enough for the
   * read's consistency, else on the primary. Returns what mysql2 returns first: rows for a
   * read, a `ResultSetHeader` for a write.
   *
   * @throws ShardKeyMissingError if the key is missing.
   * @throws UnsafeStatementError if `sql` holds more than one statement.
   * @throws ShardUnavailableError or ShardTimeoutError (retryable) if the server is unreachable or slow.
   * @example
   * ```ts
   * await router.query(userId, 'INSERT INTO orders (id, user_id, total) VALUES (?, ?, ?)', [orderId, userId, 25])
   * const orders = await router.query(userId, 'SELECT * FROM orders WHERE user_id = ?', [userId])
   * ```
   */
  query<T = Row[]>(
    shardKey: ShardKey,
    sql: string,
    params: readonly unknown[] = [],
    options: QueryOptions = NO_OPTIONS,
  ): Promise<T> {
    // Not an async function: the hot path hands mysql2's promise straight back, without an
    // extra promise and microtask per layer. Every throw still becomes a rejection.
    try {
      if (this.#closed) throw new ShardingClosedError('shard router', 'query')
      const shard = this.#shardOf(shardKey)
      if (!Array.isArray(params)) {
        throw new InvalidArgumentError(
          `invalid params: expected an array of values for "?" placeholders, got ${typeof params}`,
        )
      }
      return this.#route(shard, sql, params, options, this.#o.queryTimeoutMs) as Promise<T>
    } catch (error) {
      return Promise.reject(error)
    }
  }

  /**
   * Runs `fn` in a transaction on the primary of the shard of `shardKey`: every statement of
   * `tx` (and every `router.query` to the same shard made inside `fn`) runs on one connection
   * between `START TRANSACTION` and `COMMIT`. If `fn` throws, or a statement fails, the
   * transaction is rolled back and the error rethrown; if the connection drops, the server
   * rolls it back. The commit's GTID joins the causal token.
   *
   * @example
   * ```ts
   * await router.transaction(userId, async (tx) => {
   *   const [account] = await tx.query('SELECT balance FROM accounts WHERE user_id = ? FOR UPDATE', [userId])
   *   await tx.query('UPDATE accounts SET balance = ? WHERE user_id = ?', [account.balance - 10, userId])
   * })
   * ```
   */
  async transaction<R>(
    shardKey: ShardKey,
    fn: (tx: ShardTransaction) => Promise<R>,
    options: TransactionOptions = {},
  ): Promise<R> {
    if (this.#closed) throw new ShardingClosedError('shard router', 'transaction')
    const shard = this.#shardOf(shardKey)
    const timeoutMs =
      options.timeoutMs === undefined
        ? this.#o.queryTimeoutMs
        : positive('timeoutMs', options.timeoutMs)
    if (options.isolationLevel !== undefined) {
      oneOf('isolationLevel', options.isolationLevel, [
        'READ UNCOMMITTED',
        'READ COMMITTED',
        'REPEATABLE READ',
        'SERIALIZABLE',
      ])
    }
    const server = shard.primary
    const connection = await (this.#guarded(shard)
      ? shard.breaker!.execute(() => server.connection(timeoutMs, GUARDED))
      : server.connection(timeoutMs)
    ).catch((error: unknown) => {
      throw this.#breakerError(shard, error)
    })
    let open = true
    let broken = false
    const run = async (sql: string, params: readonly unknown[]): Promise<unknown> => {
      if (!open)
        throw new InvalidArgumentError(
          'the transaction has ended: run statements inside its callback',
        )
      if (!Array.isArray(params))
        throw new InvalidArgumentError(`invalid params: expected an array, got ${typeof params}`)
      const cls = classifyStatement(sql)
      if (cls.multi)
        throw new UnsafeStatementError(
          'one statement per call: the SQL holds several (values belong in placeholders)',
        )
      shard.stats.primaryQueries++
      try {
        return await queryOn(server, connection, sql, params, timeoutMs)
      } catch (error) {
        if (isConnectionError(error)) broken = true
        throw error
      }
    }
    const tx: ShardTransaction = {
      shard: shard.id,
      query: <T = Row[]>(sql: string, params: readonly unknown[] = []) =>
        run(sql, params) as Promise<T>,
    }
    try {
      if (options.isolationLevel !== undefined) {
        await queryOn(
          server,
          connection,
          `SET TRANSACTION ISOLATION LEVEL ${options.isolationLevel}`,
          [],
          timeoutMs,
        )
      }
      await queryOn(server, connection, 'START TRANSACTION', [], timeoutMs)
      this.#scoped = true
      const parent = this.#als.getStore()
      const store: Scope = {
        use: parent?.use,
        consistency: parent?.consistency,
        maxLagMs: parent?.maxLagMs,
        token: parent?.token ?? CausalToken.empty,
        since: parent?.since ?? performance.now(),
        parent,
        tx: { shard: shard.id, run },
      }
      const result = await this.#als.run(store, () => fn(tx))
      const commit = await queryOn(server, connection, 'COMMIT', [], timeoutMs)
      open = false
      this.#counters.committed++
      const gtid = lastGtidOf(commit)
      if (gtid !== undefined) this.#noteWrite(shard.id, gtid, parent)
      return result
    } catch (error) {
      open = false
      this.#counters.rolledBack++
      if (!broken && !isConnectionError(error)) {
        await queryOn(server, connection, 'ROLLBACK', [], timeoutMs).catch(() => {
          broken = true
        })
      } else {
        broken = true
      }
      throw server.wrap(error)
    } finally {
      open = false
      if (broken) connection.destroy()
      else connection.release()
    }
  }

  /**
   * Scatter-gather: runs one statement on every shard in parallel (each bounded by a
   * per-shard timeout) and merges the rows: concatenated, k-way merged by an `ORDER BY` as
   * the rows stream in (with `limit`/`offset`, each shard is asked for `LIMIT offset + limit`
   * and the call returns as soon as that many rows are merged), or combined as
   * aggregates (`COUNT`/`SUM`/`MIN`/`MAX`, `AVG` from SUM and COUNT). A shard that fails makes
   * the call throw a {@link ScatterGatherError}, or, with `onShardError: 'partial'`, returns the
   * rest flagged `partial`.
   *
   * @example
   * ```ts
   * const latest = await router.all(
   *   'SELECT id, user_id, total, created_at FROM orders WHERE status = ? ORDER BY created_at DESC, id DESC',
   *   ['paid'],
   *   { orderBy: [{ column: 'created_at', direction: 'desc' }, { column: 'id', direction: 'desc' }], limit: 20 },
   * )
   * const totals = await router.all('SELECT COUNT(*) AS n, SUM(total) AS s FROM orders', [], {
   *   aggregate: { n: 'count', s: 'sum', avg: { avg: { sum: 's', count: 'n' } } },
   * })
   * ```
   */
  async all<T = Row>(
    sql: string,
    params: readonly unknown[] = [],
    merge?: MergeSpec,
    options: ScatterOptions = {},
  ): Promise<ScatterResult<T>> {
    if (this.#closed) throw new ShardingClosedError('shard router', 'all')
    if (!Array.isArray(params))
      throw new InvalidArgumentError(`invalid params: expected an array, got ${typeof params}`)
    const limit = checkMergeSpec(merge)
    const onShardError = options.onShardError ?? this.#o.onShardError
    oneOf('onShardError', onShardError, ['error', 'partial'])
    const timeoutMs =
      options.timeoutMs === undefined
        ? this.#o.scatterTimeoutMs
        : positive('timeoutMs', options.timeoutMs)
    const cls = classifyStatement(sql)
    if (cls.multi) {
      throw new UnsafeStatementError(
        'one statement per call: the SQL holds several (values belong in placeholders)',
      )
    }
    let text = sql
    if (limit !== undefined) {
      if (cls.hasLimit) {
        throw new InvalidArgumentError(
          'invalid merge: the SQL has its own LIMIT; give limit/offset in the merge and the router asks each shard for LIMIT offset + limit',
        )
      }
      // Trailing comments go, and the LIMIT gets its own line: a `--` or `#` comment must not
      // swallow it (each shard would return its whole result).
      text = `${statementBody(sql)}\nLIMIT ${limit}`
    }
    this.#counters.scatterCalls++
    if (merge !== undefined && !('aggregate' in merge)) {
      return this.#streamAll<T>(text, params, merge, limit, options, timeoutMs, onShardError)
    }
    const settled = await Promise.allSettled(
      this.#shards.map((shard) => {
        try {
          return this.#route(shard, text, params, options, timeoutMs)
        } catch (error) {
          return Promise.reject(error)
        }
      }),
    )
    const lists: Row[][] = []
    const answered: string[] = []
    const failures: ShardFailure[] = []
    settled.forEach((s, i) => {
      const id = this.#shards[i]!.id
      if (s.status === 'fulfilled') {
        answered.push(id)
        lists.push(Array.isArray(s.value) ? (s.value as Row[]) : [s.value as Row])
      } else failures.push({ shard: id, error: s.reason })
    })
    if (failures.length > 0 && onShardError === 'error') {
      this.#counters.scatterFailed++
      throw new ScatterGatherError(failures)
    }
    if (failures.length > 0) this.#counters.scatterPartial++
    let rows: Row[]
    if (merge === undefined) rows = lists.flat()
    else rows = mergeAggregates(lists, merge as AggregateMerge)
    return { rows: rows as T[], partial: failures.length > 0, failures, shards: answered }
  }

  /**
   * The `ORDER BY` merge of {@link ShardRouter.all}: every shard's rows stream into a k-way
   * merge as they arrive, and the call returns once `offset + limit` rows are merged (the
   * shards still sending are drained in the background and their connections released).
   * Reads that wait for a GTID on a replica arrive whole, and merge as they come.
   */
  async #streamAll<T>(
    sql: string,
    params: readonly unknown[],
    merge: OrderByMerge,
    limit: number | undefined,
    options: ScatterOptions,
    timeoutMs: number,
    onShardError: 'error' | 'partial',
  ): Promise<ScatterResult<T>> {
    const shards = this.#shards
    const merger = new StreamMerge<Row>(
      shards.map((s) => s.id),
      rowComparator(merge.orderBy),
      limit ?? Infinity,
      onShardError,
    )
    shards.forEach((shard, i) => {
      let answer: Promise<unknown>
      try {
        answer = this.#route(shard, sql, params, options, timeoutMs, merger.sink(i))
      } catch (error) {
        answer = Promise.reject(error)
      }
      answer.then(
        (rows) => {
          if (rows === STREAMED) merger.end(i)
          else merger.end(i, Array.isArray(rows) ? rows : [rows])
        },
        (error: unknown) => merger.fail(i, error),
      )
    })
    const { rows, failures, answered } = await merger.done
    if (failures.length > 0 && onShardError === 'error') {
      this.#counters.scatterFailed++
      throw new ScatterGatherError(failures)
    }
    if (failures.length > 0) this.#counters.scatterPartial++
    const offset = merge.offset ?? 0
    return {
      rows: (offset > 0 ? rows.slice(offset) : rows) as T[],
      partial: failures.length > 0,
      failures,
      shards: answered,
    }
  }

  /** Counters of queries by shard and role, replica fallbacks, GTID waits, and every replica's state. */
  stats(): ShardRouterStats {
    const shards: Record<string, ShardStats> = {}
    const replicas: ReplicaStats[] = []
    for (const shard of this.#shards) {
      shards[shard.id] = { ...shard.stats }
      for (const r of shard.replicas) {
        const ep = shard.balancer?.get(r.server.id)
        const ejected = ep?.ejected ?? false
        replicas.push({
          id: r.server.id,
          shard: shard.id,
          available: r.healthy && !ejected,
          healthy: r.healthy,
          ejected,
          lagMs: r.lagMs ?? null,
          reason: r.reason,
          reads: r.reads,
        })
      }
    }
    const c = this.#counters
    return {
      shards,
      replicaFallbacks: c.replicaFallbacks,
      gtidWaits: c.gtidWaits,
      gtidWaitTimeouts: c.gtidWaitTimeouts,
      gtidWaitsSkipped: c.gtidWaitsSkipped,
      causalTokensRefused: c.causalTokensRefused,
      causalPositionsDropped: c.causalPositionsDropped,
      transactions: { committed: c.committed, rolledBack: c.rolledBack },
      scatter: { calls: c.scatterCalls, partial: c.scatterPartial, failed: c.scatterFailed },
      replicas,
    }
  }

  /** Runs one round of replica health checks now (they also run every `healthCheckIntervalMs`). */
  async checkReplicas(): Promise<void> {
    if (this.#closed) throw new ShardingClosedError('shard router', 'checkReplicas')
    if (this.#checking !== undefined) return this.#checking
    const round = Promise.all(
      this.#shards
        .filter((s) => s.replicas.length > 0)
        .map(async (shard) => {
          const before = shard.replicas.map((r) => r.healthy)
          await checkShard(
            shard.monitored,
            Math.min(this.#o.connectTimeoutMs, Math.max(this.#o.healthCheckIntervalMs, 200)),
            this.#o.maxReplicaLagMs,
            Math.max(this.#o.maxReplicaLagMs * 2, 10_000),
            (server, error) =>
              this.#events.emit('health-check-failed', {
                shard: shard.id,
                server: server.id,
                error,
              }),
          )
          shard.replicas.forEach((r, i) => {
            shard.balancer?.setHealthy(r.server.id, r.healthy)
            if (before[i] && !r.healthy) {
              this.#events.emit('replica-ejected', {
                shard: shard.id,
                replica: r.server.id,
                reason: r.reason ?? 'unhealthy',
              })
            } else if (!before[i] && r.healthy) {
              this.#events.emit('replica-restored', { shard: shard.id, replica: r.server.id })
            }
          })
        }),
    ).then(() => undefined)
    this.#checking = round
    try {
      await round
    } finally {
      this.#checking = undefined
    }
  }

  /** Stops health checks and closes every pool. Statements in flight finish first; new ones (`query`, `transaction`, `all`, `checkReplicas`) throw {@link ShardingClosedError}. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    for (const keep of this.#keepTimerLists) clearTimeout(keep)
    await this.#checking?.catch(() => {})
    await Promise.all(
      this.#shards.flatMap((s) => [
        s.primary.close(),
        ...s.replicas.map((r) => r.server.close()),
        s.balancer?.close() ?? Promise.resolve(),
      ]),
    )
  }

  #schedule(delayMs: number): void {
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      if (this.#closed) return
      void this.checkReplicas().finally(() => {
        if (!this.#closed) this.#schedule(this.#o.healthCheckIntervalMs)
      })
    }, delayMs)
    this.#timer.unref()
  }

  #shardOf(key: ShardKey): Shard {
    const slot = slotFor(key, this.#slots)
    const shard = this.#shards[this.#table[slot]!]
    if (shard === undefined) throw new UnknownShardError(`slot ${slot}`)
    return shard
  }

  #breakerError(shard: Shard, error: unknown): unknown {
    if (!(error instanceof BreakerOpenError)) return error
    return new ShardUnavailableError(
      shard.id,
      'primary',
      `primary of shard "${shard.id}" is failing: its circuit breaker is open`,
      { cause: error },
    )
  }

  #noteWrite(shardId: string, gtid: string, scope: Scope | undefined): void {
    let token: CausalToken
    try {
      token = CausalToken.of(shardId, gtid)
    } catch {
      return
    }
    this.#token = this.#token.merge(token)
    for (let s = scope; s !== undefined; s = s.parent) s.token = s.token.merge(token)
  }

  /**
   * The part of a read-your-writes token a replica may be asked to wait for: only positions
   * the primary is known to have written (its last `gtid_binlog_pos` sample, or this router's
   * own writes), so a forged position never holds a replica connection for
   * `gtidWaitTimeoutMs`. Positions beyond that are dropped from the context's token when the
   * primary was sampled after the token came in (it would have them by then); otherwise they
   * may be another process's fresh write, and the read goes to the primary (`undefined`).
   */
  #withinPrimary(
    shard: Shard,
    token: CausalToken,
    scope: Scope | undefined,
  ): CausalToken | undefined {
    const samples = shard.monitored.samples
    const latest = samples[samples.length - 1]
    // The usual cases first, with no allocation: the sample or this router's writes cover it.
    if (latest?.position.covers(token, shard.id) || this.#token.covers(token, shard.id))
      return token
    const known = latest === undefined ? this.#token : latest.position.merge(this.#token)
    if (known.covers(token, shard.id)) return token
    if (latest === undefined || scope === undefined || latest.at < scope.since) return undefined
    const kept = token.dropAhead(shard.id, known)
    const dropped = token.positionCount(shard.id) - kept.positionCount(shard.id)
    for (let s: Scope | undefined = scope; s !== undefined; s = s.parent) {
      if (s.since <= latest.at) s.token = s.token.dropAhead(shard.id, known)
    }
    this.#counters.causalPositionsDropped += dropped
    if (this.#events.has('causal-token-refused'))
      this.#events.emit('causal-token-refused', { reason: 'ahead-of-primary', shard: shard.id })
    return kept
  }

  /** Picks the server of one statement and runs it. May throw synchronously: callers turn that into a rejection. */
  #route(
    shard: Shard,
    sql: string,
    params: readonly unknown[],
    options: QueryOptions,
    defaultTimeoutMs: number,
    sink?: RowSink,
  ): Promise<unknown> {
    const cls = classifyStatement(sql)
    if (cls.multi) {
      throw new UnsafeStatementError(
        'one statement per call: the SQL holds several (values belong in placeholders)',
      )
    }
    const scope = this.#scoped ? this.#als.getStore() : undefined
    if (scope?.tx !== undefined && scope.tx.shard === shard.id) return scope.tx.run(sql, params)
    const timeoutMs =
      options.timeoutMs === undefined ? defaultTimeoutMs : positive('timeoutMs', options.timeoutMs)
    const use = options.use ?? scope?.use ?? 'auto'
    const kind = cls.kind
    if (
      use === 'primary' ||
      kind === 'write' ||
      kind === 'locking-read' ||
      (kind === 'unknown' && use !== 'replica')
    ) {
      return this.#onPrimary(shard, sql, params, timeoutMs, scope, sink)
    }
    const consistency = options.consistency ?? scope?.consistency ?? this.#o.consistency
    if (consistency === 'strong' || shard.balancer === undefined)
      return this.#onPrimary(shard, sql, params, timeoutMs, scope, sink)
    return this.#onReplica(
      shard,
      sql,
      params,
      timeoutMs,
      consistency,
      options.maxLagMs ?? scope?.maxLagMs,
      scope,
      sink,
    )
  }

  /**
   * Whether a shard's statements must go through its primary breaker now: while it is not
   * closed, and for a breaker window after the last connection failure. A primary that has
   * not failed lately is not slowed by its breaker (the failure that engages it is counted).
   */
  #guarded(shard: Shard): boolean {
    const breaker = shard.breaker
    return breaker !== undefined && (breaker.state !== 'closed' || shard.guardedUntil > Date.now())
  }

  #onPrimary(
    shard: Shard,
    sql: string,
    params: readonly unknown[],
    timeoutMs: number,
    scope: Scope | undefined,
    sink?: RowSink,
  ): Promise<unknown> {
    shard.stats.primaryQueries++
    // The write's GTID reaches the causal token through the server's onGtid hook, before the
    // promise settles; connection failures reach stats and the breaker through onFailure.
    const primary = shard.primary
    if (!this.#guarded(shard)) {
      return sink === undefined
        ? primary.query(sql, params, timeoutMs, scope)
        : primary.stream(sql, params, timeoutMs, sink)
    }
    return shard
      .breaker!.execute(() =>
        sink === undefined
          ? primary.query(sql, params, timeoutMs, scope, GUARDED)
          : primary.stream(sql, params, timeoutMs, sink, GUARDED),
      )
      .catch((error: unknown) => {
        throw this.#breakerError(shard, error)
      })
  }

  async #fallback(
    shard: Shard,
    reason: FallbackReason,
    sql: string,
    params: readonly unknown[],
    timeoutMs: number,
    scope: Scope | undefined,
    error?: unknown,
    sink?: RowSink,
  ): Promise<unknown> {
    if (reason === 'no-healthy-replica' && this.#o.noHealthyReplica === 'error') {
      throw new ShardUnavailableError(
        shard.id,
        'replica',
        `no healthy replica of shard "${shard.id}"`,
        { cause: error },
      )
    }
    this.#counters.replicaFallbacks++
    if (this.#events.has('fell-back-to-primary'))
      this.#events.emit(
        'fell-back-to-primary',
        error === undefined ? { shard: shard.id, reason } : { shard: shard.id, reason, error },
      )
    return this.#onPrimary(shard, sql, params, timeoutMs, scope, sink)
  }

  async #onReplica(
    shard: Shard,
    sql: string,
    params: readonly unknown[],
    timeoutMs: number,
    consistency: Consistency,
    maxLagMs: number | undefined,
    scope: Scope | undefined,
    sink?: RowSink,
  ): Promise<unknown> {
    const balancer = shard.balancer!
    let exclude: Endpoint<ReplicaState>[] | undefined
    if (consistency === 'bounded') {
      const bound = maxLagMs ?? this.#o.boundedLagMs
      for (const r of shard.replicas) {
        if (r.lagMs === undefined || r.lagMs > bound) {
          exclude ??= []
          exclude.push(balancer.get(r.server.id)!)
        }
      }
    }
    let token = consistency === 'read-your-writes' ? (scope?.token ?? this.#token) : undefined
    if (token?.has(shard.id)) {
      token = this.#withinPrimary(shard, token, scope)
      if (token === undefined) {
        return this.#fallback(
          shard,
          'token-ahead-of-primary',
          sql,
          params,
          timeoutMs,
          scope,
          undefined,
          sink,
        )
      }
    }
    for (let attempt = 0; attempt < shard.replicas.length; attempt++) {
      let ep: Endpoint<ReplicaState>
      try {
        ep = balancer.pick(undefined, exclude)
      } catch (error) {
        if (!isLbError(error)) throw error
        return this.#fallback(
          shard,
          attempt === 0 ? 'no-healthy-replica' : 'replica-error',
          sql,
          params,
          timeoutMs,
          scope,
          undefined,
          sink,
        )
      }
      const replica = ep.value
      const startedAt = balancer.begin(ep)
      try {
        let rows: unknown
        if (token?.has(shard.id) && !replica.applied.covers(token, shard.id)) {
          this.#counters.gtidWaits++
          const waitMs = this.#o.gtidWaitTimeoutMs
          // The wait and the read share one round trip; the read's rows count only if the wait succeeded.
          const results = await replica.server.query(
            `SELECT MASTER_GTID_WAIT(?, ?) AS w;\n${statementBody(sql)}`,
            [token.positionFor(shard.id), waitMs / 1000, ...params],
            timeoutMs + waitMs,
          )
          const [waitRows, readRows] = results as [Array<{ w: unknown }>, unknown]
          if (Number(waitRows[0]?.w) !== 0 || waitRows[0]?.w === null) {
            balancer.end(ep, startedAt, true)
            this.#counters.gtidWaitTimeouts++
            return this.#fallback(shard, 'gtid-wait-timeout', sql, params, timeoutMs, scope)
          }
          replica.applied = replica.applied.merge(token)
          rows = readRows
        } else {
          if (token?.has(shard.id)) this.#counters.gtidWaitsSkipped++
          rows =
            sink === undefined
              ? await replica.server.query(sql, params, timeoutMs)
              : await replica.server.stream(sql, params, timeoutMs, sink)
        }
        balancer.end(ep, startedAt, true)
        replica.reads++
        shard.stats.replicaQueries++
        return rows
      } catch (error) {
        const failed = isConnectionError(error)
        balancer.end(ep, startedAt, !failed)
        if (!failed) throw error
        shard.stats.errors++
        // Rows already merged cannot be taken back: a stream that broke half way fails the shard.
        if (sink !== undefined && sink.count > 0) throw error
        exclude ??= []
        exclude.push(ep)
        if (attempt === shard.replicas.length - 1) {
          return this.#fallback(shard, 'replica-error', sql, params, timeoutMs, scope, error, sink)
        }
      }
    }
    return this.#fallback(
      shard,
      'no-healthy-replica',
      sql,
      params,
      timeoutMs,
      scope,
      undefined,
      sink,
    )
  }
}

/**
 * Creates a {@link ShardRouter}: one mysql2 pool per server, lb's `HashRing` over the shards,
 * an lb balancer over each shard's replicas, and a health loop that measures replica lag.
 *
 * @example
 * ```ts
 * import { createShardRouter } from '@ballast/sharding'
 *
 * const router = createShardRouter({
 *   shards: [
 *     { id: 's1', primary: 'mysql://app@db1:3306/shop', replicas: ['mysql://app@db1r:3306/shop'] },
 *     { id: 's2', primary: 'mysql://app@db2:3306/shop', replicas: ['mysql://app@db2r:3306/shop'] },
 *   ],
 * })
 * await router.query(42, 'INSERT INTO orders (user_id, total) VALUES (?, ?)', [42, 25])
 * const rows = await router.query(42, 'SELECT * FROM orders WHERE user_id = ?', [42]) // sees the insert
 * await router.close()
 * ```
 */
export function createShardRouter(options: ShardRouterOptions): ShardRouter {
  return new ShardRouter(options)
}
