import { AsyncLocalStorage } from 'node:async_hooks'
import {
  type Balancer,
  type BalancerOptions,
  createBalancer,
  type Endpoint,
  isLbError,
} from '@ballast/lb'
import { BreakerOpenError, circuitBreaker } from '@ballast/resilience'
import { type Duration, Emitter, merge, parseDuration, type Unsubscribe } from '@ballast/shared'
import { CausalToken, checkSecrets, signToken, verifyToken } from './causalToken.js'
import { classifyStatement, statementBody } from './classifyStatement.js'
import {
  InvalidArgumentError,
  ShardingClosedError,
  ShardUnavailableError,
  SlotMovedError,
  UnknownShardError,
  UnsafeStatementError,
} from './errors.js'
import {
  adoptInvalidArgument,
  argument,
  checkedTelemetry,
  option,
  POSITIVE,
} from './internal/check.js'
import { checkFence } from './internal/fence.js'
import { FALLBACK_REASON, GTID_WAIT_OUTCOME, queryInstruments } from './internal/queryTelemetry.js'
import { checkShard, type ReplicaState } from './internal/replicaMonitor.js'
import type {
  RouterCounters,
  RouterInternals,
  ScatterRouting,
  Scope,
  Shard,
} from './internal/routerInternals.js'
import { observeRouter } from './internal/routerMetrics.js'
import {
  GUARDED,
  isConnectionError,
  QUIET,
  Server,
  type ServerDefaults,
} from './internal/server.js'
import type { CompiledSlotMap } from './internal/slotRanges.js'
import { buildSlotTable } from './internal/slotTable.js'
import type { RowSink } from './internal/streamMerge.js'
import type { MergeSpec, QueryResult, Row } from './mergeSpec.js'
import { type ScatterResult, scatterGather } from './scatterGather.js'
import { type ShardKey, slotFor } from './shardKey.js'
import type { FallbackReason, ShardRouterEvents } from './shardRouterEvents.js'
import {
  type Consistency,
  DEFAULT_QUERY_OPTIONS,
  DEFAULT_SCATTER_OPTIONS,
  DEFAULT_SET_PRIMARY_OPTIONS,
  DEFAULT_SHARD_ROUTER_OPTIONS,
  DEFAULT_TRANSACTION_OPTIONS,
  type QueryOptions,
  type RoutingScope,
  type ScatterOptions,
  type ServerConfig,
  type ServerRole,
  type SetPrimaryOptions,
  type ShardRouterOptions,
  type TransactionOptions,
} from './shardRouterOptions.js'
import type { ReplicaStats, ShardRouterStats, ShardStats } from './shardRouterStats.js'
import { SlotMapStore, type SlotMapStoreInternals, slotMapStoreInternals } from './slotMapStore.js'
import { runTransaction, type ShardTransaction } from './transaction.js'

const SHARD_ID = /^[A-Za-z0-9_-]{1,64}$/

/** The router's options once checked, durations in milliseconds. */
interface RouterSettings {
  consistency: Consistency
  maxReplicaLagMs: number
  boundedLagMs: number
  gtidWaitTimeoutMs: number
  queryTimeoutMs: number
  connectTimeoutMs: number
  scatterTimeoutMs: number
  healthCheckIntervalMs: number
  noHealthyReplica: 'primary' | 'error'
  onShardError: 'error' | 'partial'
}

/** `#table`'s entry for a slot whose owner in the slot map is not one of the router's shards. */
const NO_SHARD = 0xffff
/** First and longest wait between tries of a write refused by a fence while the map still names the old owner. */
const MOVED_RETRY_FIRST_MS = 10
const MOVED_RETRY_MAX_MS = 100

/** The router's view of its slot map store: the compiled map its `#table` was built from. */
interface MappedRouting {
  readonly store: SlotMapStoreInternals
  compiled: CompiledSlotMap
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

const CONSISTENCIES: readonly Consistency[] = ['eventual', 'bounded', 'read-your-writes', 'strong']
const ROLES: readonly ServerRole[] = ['auto', 'primary', 'replica']

function ignore(): void {}

/** Calls the router's private constructor: set by the class's static block, used by {@link createShardRouter}. */
let construct: (options: ShardRouterOptions) => ShardRouter

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
  /** Per slot, the index of its shard in `#shards` (`NO_SHARD` for a map's unknown id). */
  #table: Uint16Array
  readonly #slots: number
  /** Set when routing by a slot map store (`slotMap`): the map `#table` was built from. */
  readonly #mapped: MappedRouting | undefined
  #fenceChecks = 0
  #fenceChecksRefused = 0
  readonly #options: RouterSettings
  readonly #context = new AsyncLocalStorage<Scope>()
  /** Whether any async context was ever entered: until then, statements skip the context lookup. */
  #scoped = false
  #token = CausalToken.empty
  readonly #secrets: string[] | undefined
  #closed = false
  #timer: ReturnType<typeof setTimeout> | undefined
  readonly #keepTimerLists: Array<ReturnType<typeof setTimeout>> = []
  readonly #internals: RouterInternals
  /** What every server's pool is made with (a new primary's too, see {@link ShardRouter.setPrimary}). */
  readonly #serverDefaults: Omit<ServerDefaults, 'multipleStatements' | 'trackGtid'>
  /** How long the primary breaker stays engaged after a connection failure, in ms. */
  readonly #guardMs: number
  #checking: Promise<void> | undefined
  /** Unregisters the observed instruments (in `close()`). */
  readonly #stopObserving: () => void
  readonly #counters: RouterCounters = {
    fellBackToPrimary: 0,
    fellBackToPrimaryByReason: {
      'no-healthy-replica': 0,
      'replica-error': 0,
      'gtid-wait-timeout': 0,
      'token-ahead-of-primary': 0,
      'slot-moved': 0,
    },
    gtidWaits: 0,
    gtidWaitsCaughtUp: 0,
    gtidWaitsTimedOut: 0,
    gtidWaitsFailed: 0,
    gtidWaitsSkipped: 0,
    causalTokensRefused: 0,
    causalPositionsDropped: 0,
    committed: 0,
    rolledBack: 0,
    scatterCalls: 0,
    scatterPartial: 0,
    scatterFailed: 0,
  }

  static {
    construct = (options) => new ShardRouter(options)
  }

  /** Private: create a router with {@link createShardRouter}. */
  private constructor(options: ShardRouterOptions) {
    if (typeof options !== 'object' || options === null)
      option.invalid('options', 'an object', options)
    const merged = merge(DEFAULT_SHARD_ROUTER_OPTIONS, options)
    let slots = merged.slots
    if (!Number.isInteger(slots) || slots < 1 || slots > 65536 || (slots & (slots - 1)) !== 0) {
      option.invalid('slots', 'a power of two up to 65536', slots)
    }
    let compiled: CompiledSlotMap | undefined
    let store: SlotMapStoreInternals | undefined
    if (options.slotMap !== undefined) {
      if (!(options.slotMap instanceof SlotMapStore))
        option.invalid('slotMap', 'a SlotMapStore (createSlotMapStore)', options.slotMap)
      store = slotMapStoreInternals(options.slotMap)
      const loaded =
        store.compiled() ??
        option.invalid(
          'slotMap',
          'a store that has loaded (await slotMap.load())',
          'a store not loaded yet',
        )
      if (options.slots !== undefined && options.slots !== loaded.map.slots)
        option.invalid('slots', `the slot map's ${loaded.map.slots} (or nothing)`, options.slots)
      compiled = loaded
      slots = loaded.map.slots
    }
    const settings: RouterSettings = {
      consistency: option.oneOf('consistency', merged.consistency, CONSISTENCIES),
      maxReplicaLagMs: option.duration('maxReplicaLag', merged.maxReplicaLag, POSITIVE),
      boundedLagMs: option.duration('boundedLag', merged.boundedLag),
      gtidWaitTimeoutMs: option.duration('gtidWaitTimeout', merged.gtidWaitTimeout, POSITIVE),
      queryTimeoutMs: option.duration('queryTimeout', merged.queryTimeout, POSITIVE),
      connectTimeoutMs: option.duration('connectTimeout', merged.connectTimeout, POSITIVE),
      scatterTimeoutMs: option.duration('scatterTimeout', merged.scatterTimeout, POSITIVE),
      healthCheckIntervalMs: option.duration('healthCheckInterval', merged.healthCheckInterval),
      noHealthyReplica: option.oneOf('noHealthyReplica', merged.noHealthyReplica, [
        'primary',
        'error',
      ]),
      onShardError: option.oneOf('onShardError', merged.onShardError, ['error', 'partial']),
    }
    const connectionLimit = option.positiveInteger('connectionLimit', merged.connectionLimit)
    const { meter, tracer } = checkedTelemetry(options)
    const { meterProvider, tracerProvider } = options
    const instruments = queryInstruments(meter, tracer)
    option.object('ring', merged.ring)
    option.object('outlierDetection', merged.outlierDetection)
    if (merged.primaryBreaker !== false) option.object('primaryBreaker', merged.primaryBreaker)
    this.#secrets = merged.secrets === undefined ? undefined : checkSecrets(merged.secrets)
    const shards: unknown = merged.shards
    if (!Array.isArray(shards) || shards.length === 0) {
      option.invalid(
        'shards',
        'a non-empty array of shards',
        Array.isArray(shards) ? [] : typeof shards,
      )
    }
    const seen = new Set<string>()
    merged.shards.forEach((shardConfig: unknown, i) => {
      const config = option.object(`shards[${i}]`, shardConfig)
      const id = option.string(`shards[${i}].id`, config.id, { pattern: SHARD_ID })
      if (seen.has(id)) option.invalid(`shards[${i}].id`, 'an id no other shard has', id)
      seen.add(id)
      if (config.weight !== undefined) option.positiveNumber(`shards[${i}].weight`, config.weight)
      if (
        typeof config.primary !== 'string' &&
        (typeof config.primary !== 'object' || config.primary === null)
      ) {
        // Never shown: a server's settings may hold a password.
        option.invalid(
          `shards[${i}].primary`,
          'a mysql:// URL or mysql2 pool options',
          typeof config.primary,
        )
      }
      if (config.replicas !== undefined && !Array.isArray(config.replicas)) {
        option.invalid(
          `shards[${i}].replicas`,
          'an array of mysql:// URLs or mysql2 pool options',
          typeof config.replicas,
        )
      }
    })
    this.#options = settings
    this.#slots = slots
    if (compiled === undefined) {
      const placement = adoptInvalidArgument(
        () => buildSlotTable(merged.shards, slots, merged.ring),
        'ring.',
      )
      this.#table = placement.table
      this.#mapped = undefined
    } else {
      const unknown = compiled.ids.find((id) => !seen.has(id))
      if (unknown !== undefined)
        option.invalid('slotMap', 'a map that names only shards of "shards"', unknown)
      this.#table = this.#tableOf(compiled, merged.shards)
      this.#mapped = { store: store!, compiled }
    }
    const defaults = {
      connectTimeoutMs: settings.connectTimeoutMs,
      connectionLimit,
      instruments,
    }
    const primaryBreaker = merged.primaryBreaker
    const window = primaryBreaker === false ? undefined : primaryBreaker.window
    this.#guardMs = window?.type === 'time' ? (parseDuration(window.duration) ?? 10_000) : 10_000
    this.#serverDefaults = defaults
    this.#shards = merged.shards.map((config, index) => {
      const replicaConfigs: readonly ServerConfig[] = config.replicas ?? []
      const primary = new Server(config.id, 'primary', `${config.id}/primary`, config.primary, {
        ...defaults,
        multipleStatements: false,
        trackGtid: replicaConfigs.length > 0,
      })
      const replicas: ReplicaState[] = replicaConfigs.map((replicaConfig, i) => ({
        server: new Server(config.id, 'replica', `${config.id}/replica-${i}`, replicaConfig, {
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
          strategy: merged.replicaStrategy,
          endpoints: replicas.map((r) => ({ id: r.server.id, value: r })),
          // A stale or stopped replica must never take reads because too few are healthy.
          panicThreshold: 0,
          outlierDetection: merged.outlierDetection,
        }
        balancer = adoptInvalidArgument(() => createBalancer(balancerOptions))
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
          primaryBreaker === false
            ? undefined
            : adoptInvalidArgument(
                () =>
                  circuitBreaker({
                    ...primaryBreaker,
                    name: `${config.id}/primary`,
                    // Only the server failing counts, never a statement's own SQL error.
                    errorFilter: (error: unknown) => !isConnectionError(error),
                    // Its state reports where the router's metrics go, unless given its own.
                    meterProvider: primaryBreaker.meterProvider ?? meterProvider,
                    tracerProvider: primaryBreaker.tracerProvider ?? tracerProvider,
                  }),
                'primaryBreaker.',
              ),
        guardedUntil: 0,
        replicas,
        balancer,
        monitored: { id: config.id, primary, replicas, samples: [] },
        stats: { primaryQueries: 0, replicaQueries: 0, failed: 0, switchovers: 0 },
        movedIn: undefined,
      }
      this.#attachPrimary(shard, primary)
      this.#byId.set(config.id, shard)
      return shard
    })
    this.#internals = {
      shards: this.#shards,
      counters: this.#counters,
      instruments,
      context: this.#context,
      queryTimeoutMs: settings.queryTimeoutMs,
      scatterTimeoutMs: settings.scatterTimeoutMs,
      onShardError: settings.onShardError,
      enterContext: () => {
        this.#scoped = true
      },
      guarded: (shard) => this.#guarded(shard),
      breakerError: (shard, error) => this.#breakerError(shard, error),
      noteWrite: (shardId, gtid, scope) => this.#noteWrite(shardId, gtid, scope),
      route: (shard, sql, params, options, defaultTimeoutMs, sink) =>
        this.#route(shard, sql, params, options, defaultTimeoutMs, sink),
      slotMapped: this.#mapped !== undefined,
      scatterRouting: () => this.#scatterRouting(),
    }
    if (
      settings.healthCheckIntervalMs > 0 &&
      this.#shards.some((shard) => shard.replicas.length > 0)
    )
      this.#schedule(0)
    this.#stopObserving = observeRouter(meter, this.#shards, this.#counters)
    // Node keeps one timer list per duration and tears it down when its last timer is cleared:
    // with one statement at a time, every statement's timeout would build and destroy the list
    // (a priority-queue update each way). One idle, unref'd timer per default duration keeps
    // the lists alive, so a statement's timeout costs an append and an unlink.
    for (const ms of new Set([settings.queryTimeoutMs, settings.scatterTimeoutMs])) {
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
    return this.#shards.map((shard) => shard.id)
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
    if (scope.use !== undefined) argument.oneOf('use', scope.use, ROLES)
    if (scope.consistency !== undefined)
      argument.oneOf('consistency', scope.consistency, CONSISTENCIES)
    const maxLagMs =
      scope.maxLag === undefined ? undefined : argument.duration('maxLag', scope.maxLag)
    this.#scoped = true
    const parent = this.#context.getStore()
    const token = scope.causalToken
    let given: CausalToken
    if (token === undefined) given = CausalToken.empty
    else if (typeof token === 'string') given = this.verifyCausalToken(token)
    else if (token instanceof CausalToken) given = token
    else return argument.invalid('causalToken', 'a signed token string or a CausalToken', token)
    const store: Scope = {
      use: scope.use ?? parent?.use,
      consistency: scope.consistency ?? parent?.consistency,
      maxLagMs: maxLagMs ?? parent?.maxLagMs,
      token: (parent?.token ?? CausalToken.empty).merge(given),
      since: performance.now(),
      parent,
      tx: parent?.tx,
    }
    return this.#context.run(store, fn)
  }

  /**
   * The causal token of the current async context (see {@link ShardRouter.run}), or, outside
   * any context, the router's own token of every write it has made. Put
   * {@link ShardRouter.signCausalToken}'s string in a cookie to carry read-your-writes to the
   * next request.
   */
  causalToken(): CausalToken {
    return (this.#scoped ? this.#context.getStore()?.token : undefined) ?? this.#token
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
   * read, a `ResultSetHeader` for a write; name the type as with mysql2's `pool.query<T>()`
   * (`router.query<OrderRow[]>(…)`, `router.query<ResultSetHeader>(…)`; rows default to {@link Row}).
   *
   * @throws ShardKeyMissingError if the key is missing.
   * @throws UnsafeStatementError if `sql` holds more than one statement.
   * @throws ShardUnavailableError or ShardTimeoutError (retryable) if the server is unreachable or slow.
   * @example
   * ```ts
   * await router.query(userId, 'INSERT INTO orders (id, user_id, total) VALUES (?, ?, ?)', [orderId, userId, 25])
   * interface OrderRow { id: string; total: number }
   * const orders = await router.query<OrderRow[]>(userId, 'SELECT id, total FROM orders WHERE user_id = ?', [userId])
   * ```
   */
  query<T extends QueryResult = Row[]>(
    shardKey: ShardKey,
    sql: string,
    params: readonly unknown[] = [],
    options: QueryOptions = DEFAULT_QUERY_OPTIONS,
  ): Promise<T> {
    // Not an async function: the hot path hands mysql2's promise straight back, without an
    // extra promise and microtask per layer. Every throw still becomes a rejection.
    try {
      if (this.#closed) throw new ShardingClosedError('shard router', 'query')
      const mapped = this.#mapped
      const slot = mapped === undefined ? -1 : slotFor(shardKey, this.#slots)
      const shard = mapped === undefined ? this.#shardOf(shardKey) : this.#shardOfSlot(slot)
      if (!Array.isArray(params)) {
        throw new InvalidArgumentError(
          `invalid argument "params": expected an array of values for "?" placeholders, got ${typeof params}`,
        )
      }
      if (mapped !== undefined && this.#needsMappedPath(mapped, slot, sql, options))
        return this.#mappedQuery(mapped, slot, sql, params, options) as Promise<T>
      return this.#route(shard, sql, params, options, this.#options.queryTimeoutMs) as Promise<T>
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
    options: TransactionOptions = DEFAULT_TRANSACTION_OPTIONS,
  ): Promise<R> {
    if (this.#closed) throw new ShardingClosedError('shard router', 'transaction')
    const mapped = this.#mapped
    if (mapped === undefined)
      return runTransaction(this.#internals, this.#shardOf(shardKey), fn, options)
    const slot = slotFor(shardKey, this.#slots)
    const deadline = this.#movedDeadline(options)
    let delayMs = MOVED_RETRY_FIRST_MS
    for (;;) {
      await this.#freshMap(mapped)
      const shard = this.#shardOfSlot(slot)
      if (mapped.compiled.moving[slot] !== 1)
        return runTransaction(this.#internals, shard, fn, options)
      // The fence is checked before fn runs: a refusal retries on the new owner, and fn runs once.
      let checked = false
      try {
        return await runTransaction(
          this.#internals,
          shard,
          async (tx) => {
            await this.#checkFence(tx, mapped, slot, shard)
            checked = true
            return fn(tx)
          },
          options,
        )
      } catch (error) {
        if (checked || !(error instanceof SlotMovedError)) throw error
        delayMs = await this.#afterMoved(mapped, slot, shard, error, deadline, delayMs)
      }
    }
  }

  /**
   * Scatter-gather: runs one statement on every shard in parallel (each bounded by a
   * per-shard timeout) and merges the rows: concatenated, k-way merged by an `ORDER BY` as
   * the rows stream in (with `limit`/`offset`, each shard is asked for `LIMIT offset + limit`
   * and the call returns as soon as that many rows are merged), or combined as
   * aggregates (`COUNT`/`SUM`/`MIN`/`MAX`, `AVG` from SUM and COUNT). A shard that fails makes
   * the call throw a {@link ScatterGatherError}, or, with `onShardError: 'partial'`, returns the
   * rest flagged `partial`. With a `slotMap`, name the column of each row's shard key
   * (`slotKey`): a row then counts only on its slot's owner, so a resharding move's copies
   * count once (see {@link ScatterOptions.slotKey}).
   *
   * @throws InvalidArgumentError if the router has a `slotMap` and no `slotKey` is given, or the rows lack the `slotKey` column.
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
   * // With a slot map: one row per key, each counted on its slot's owner only.
   * const exact = await router.all(
   *   'SELECT user_id, COUNT(*) AS n, SUM(total) AS s FROM orders GROUP BY user_id',
   *   [],
   *   { aggregate: { n: 'count', s: 'sum' } },
   *   { slotKey: 'user_id' },
   * )
   * ```
   */
  async all<T extends object = Row>(
    sql: string,
    params: readonly unknown[] = [],
    merge?: MergeSpec,
    options: ScatterOptions = DEFAULT_SCATTER_OPTIONS,
  ): Promise<ScatterResult<T>> {
    if (this.#closed) throw new ShardingClosedError('shard router', 'all')
    return scatterGather<T>(this.#internals, sql, params, merge, options)
  }

  /** Counters of queries by shard and role, replica fallbacks, GTID waits, and every replica's state. */
  stats(): ShardRouterStats {
    const shards: Record<string, ShardStats> = {}
    const replicas: ReplicaStats[] = []
    for (const shard of this.#shards) {
      shards[shard.id] = { ...shard.stats }
      for (const r of shard.replicas) {
        const endpoint = shard.balancer?.get(r.server.id)
        const ejected = endpoint?.ejected ?? false
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
    const counters = this.#counters
    return {
      shards,
      fellBackToPrimary: counters.fellBackToPrimary,
      fellBackToPrimaryByReason: { ...counters.fellBackToPrimaryByReason },
      gtidWaits: counters.gtidWaits,
      gtidWaitsCaughtUp: counters.gtidWaitsCaughtUp,
      gtidWaitsTimedOut: counters.gtidWaitsTimedOut,
      gtidWaitsFailed: counters.gtidWaitsFailed,
      gtidWaitsSkipped: counters.gtidWaitsSkipped,
      causalTokensRefused: counters.causalTokensRefused,
      causalPositionsDropped: counters.causalPositionsDropped,
      transactions: { committed: counters.committed, rolledBack: counters.rolledBack },
      scatter: {
        calls: counters.scatterCalls,
        partial: counters.scatterPartial,
        failed: counters.scatterFailed,
      },
      replicas,
      slotMapVersion: this.#mapped?.compiled.map.version ?? 0,
      fenceChecks: this.#fenceChecks,
      fenceChecksRefused: this.#fenceChecksRefused,
    }
  }

  /**
   * Points a shard at a new primary, after an operator or an orchestrator promoted a replica
   * (the old primary stopped or made read-only, the replica's replication stopped and reset,
   * `read_only` off). From the call on, the shard's statements go to the new primary's pool
   * and its breaker starts closed. The old primary's pool takes nothing more: a statement
   * waiting for one of its connections fails at once, and one still running there gets
   * `drainTimeout` to finish, then fails; both with a retryable {@link ShardUnavailableError},
   * so the caller's retry runs on the new primary. A write cut off that way may or may not
   * have been applied: retry it idempotently. Causal tokens taken on the old primary keep
   * working when the new one continues its GTIDs (a replica with `log_slave_updates`, in the
   * same GTID domain). Emits `primary-switched`; resolves once the old pool is closed.
   *
   * Each router process holds its own pools: every process that routes to the shard must be
   * told (the operator's tooling calls each, or each watches where the primary is).
   *
   * @throws UnknownShardError if no shard has the id.
   * @throws InvalidArgumentError if the server or an option is invalid.
   * @example
   * ```ts
   * // after promoting db1r (see the README's "When the cluster fails over")
   * await router.setPrimary('s1', 'mysql://app@db1r:3306/shop')
   * ```
   */
  async setPrimary(
    shardId: string,
    primary: ServerConfig,
    options: SetPrimaryOptions = DEFAULT_SET_PRIMARY_OPTIONS,
  ): Promise<void> {
    if (this.#closed) throw new ShardingClosedError('shard router', 'setPrimary')
    if (typeof shardId !== 'string') argument.invalid('shardId', 'a shard id', shardId)
    const shard = this.#byId.get(shardId)
    if (shard === undefined) throw new UnknownShardError(shardId)
    if (typeof primary !== 'string' && (typeof primary !== 'object' || primary === null)) {
      // Never shown: a server's settings may hold a password.
      argument.invalid('primary', 'a mysql:// URL or mysql2 pool options', typeof primary)
    }
    if (typeof options !== 'object' || options === null)
      argument.invalid('options', 'an object', options)
    const drainMs = argument.duration(
      'drainTimeout',
      merge(DEFAULT_SET_PRIMARY_OPTIONS, options).drainTimeout,
    )
    const next = new Server(shard.id, 'primary', `${shard.id}/primary`, primary, {
      ...this.#serverDefaults,
      multipleStatements: false,
      trackGtid: shard.replicas.length > 0,
    })
    const previous = shard.primary
    // The old pool's late failures are the switchover's, not the new primary's: they count in
    // the shard's failures but never reach its breaker.
    previous.onFailure = () => {
      shard.stats.failed++
    }
    this.#attachPrimary(shard, next)
    shard.primary = next
    shard.monitored.primary = next
    shard.guardedUntil = 0
    shard.breaker?.reset()
    shard.stats.switchovers++
    if (this.#events.has('primary-switched'))
      this.#events.emit('primary-switched', {
        shard: shard.id,
        server: next.address,
        previous: previous.address,
        inFlight: previous.pending.size,
      })
    await previous.retire(drainMs)
  }

  /** Wires a primary's hooks: failures to the shard's stats and breaker, write GTIDs to causal tokens. */
  #attachPrimary(shard: Shard, primary: Server): void {
    primary.onFailure = (error, flags) => {
      shard.stats.failed++
      const breaker = shard.breaker
      if (breaker === undefined) return
      shard.guardedUntil = Date.now() + this.#guardMs
      // A statement that skipped the breaker still counts as its failure.
      if ((flags & GUARDED) === 0) breaker.execute(() => Promise.reject(error)).catch(ignore)
    }
    if (shard.replicas.length > 0) {
      primary.onGtid = (gtid, scope) => this.#noteWrite(shard.id, gtid, scope as Scope | undefined)
    }
  }

  /** Runs one round of replica health checks now (they also run every `healthCheckInterval`). */
  async checkReplicas(): Promise<void> {
    if (this.#closed) throw new ShardingClosedError('shard router', 'checkReplicas')
    if (this.#checking !== undefined) return this.#checking
    const round = Promise.all(
      this.#shards
        .filter((shard) => shard.replicas.length > 0)
        .map(async (shard) => {
          const before = shard.replicas.map((r) => r.healthy)
          await checkShard(
            shard.monitored,
            Math.min(
              this.#options.connectTimeoutMs,
              Math.max(this.#options.healthCheckIntervalMs, 200),
            ),
            this.#options.maxReplicaLagMs,
            Math.max(this.#options.maxReplicaLagMs * 2, 10_000),
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
    this.#stopObserving()
    await this.#checking?.catch(() => {})
    await Promise.all(
      this.#shards.flatMap((shard) => [
        shard.primary.close(),
        ...shard.replicas.map((r) => r.server.close()),
        shard.balancer?.close() ?? Promise.resolve(),
        // Unregisters its observed instruments.
        shard.breaker?.close() ?? Promise.resolve(),
      ]),
    )
  }

  #schedule(delayMs: number): void {
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      if (this.#closed) return
      void this.checkReplicas().finally(() => {
        if (!this.#closed) this.#schedule(this.#options.healthCheckIntervalMs)
      })
    }, delayMs)
    this.#timer.unref()
  }

  #shardOf(key: ShardKey): Shard {
    return this.#shardOfSlot(slotFor(key, this.#slots))
  }

  #shardOfSlot(slot: number): Shard {
    // With a slot map: one reference compare per statement notices a newer map.
    const mapped = this.#mapped
    if (mapped !== undefined && mapped.store.compiled() !== mapped.compiled) this.#follow(mapped)
    const shard = this.#shards[this.#table[slot]!]
    if (shard === undefined) throw new UnknownShardError(`slot ${slot}`)
    return shard
  }

  /**
   * Routes by the store's newest map from now on, and notes on each shard that takes slots
   * which shards they came from: a causal token of those must be honoured there (see
   * {@link ShardRouter.#movedToken}).
   */
  #follow(mapped: MappedRouting): void {
    const latest = mapped.store.compiled()!
    const before = this.#table
    const after = this.#tableOf(latest, this.#shards)
    const now = performance.now()
    for (let slot = 0; slot < after.length; slot++) {
      const from = before[slot]!
      const to = after[slot]!
      if (from === to || from === NO_SHARD || to === NO_SHARD) continue
      const shard = this.#shards[to]!
      // A later move into the shard needs a later position of its primary.
      if (shard.movedIn === undefined || shard.movedIn.at !== now)
        shard.movedIn = {
          at: now,
          from: new Set(shard.movedIn?.from),
          position: undefined,
          reading: undefined,
        }
      shard.movedIn.from.add(this.#shards[from]!.id)
    }
    this.#table = after
    mapped.compiled = latest
  }

  /**
   * What `all()` filters rows by: the store's map read now (a router that has not polled since
   * a cut-over would count the frozen source's copy and miss the target's new rows); when the
   * store cannot answer, the map in use while its lease holds.
   */
  async #scatterRouting(): Promise<ScatterRouting> {
    const mapped = this.#mapped
    if (mapped === undefined) return { table: this.#table, slots: this.#slots, unknown: [] }
    try {
      await mapped.store.refresh()
    } catch (error) {
      if (!mapped.store.fresh()) throw error
    }
    if (mapped.store.compiled() !== mapped.compiled) this.#follow(mapped)
    const known = new Set(this.#shards.map((shard) => shard.id))
    return {
      table: this.#table,
      slots: this.#slots,
      unknown: mapped.compiled.ids.filter((id) => !known.has(id)),
    }
  }

  /** The routing table of a compiled slot map over the router's shards (in configuration order). */
  #tableOf(compiled: CompiledSlotMap, shards: ReadonlyArray<{ id: string }>): Uint16Array {
    const index = new Map(shards.map((shard, i) => [shard.id, i]))
    const byMapIndex = compiled.ids.map((id) => index.get(id) ?? NO_SHARD)
    const table = new Uint16Array(this.#slots)
    const owners = compiled.owners
    for (let slot = 0; slot < table.length; slot++) table[slot] = byMapIndex[owners[slot]!]!
    return table
  }

  /**
   * Whether a statement on a slot takes the slow path of a slot map: the map is older than the
   * store's lease (refresh first), or the slot is moving and the statement goes to the primary
   * (check the fence in its transaction).
   */
  #needsMappedPath(
    mapped: MappedRouting,
    slot: number,
    sql: string,
    options: QueryOptions,
  ): boolean {
    if (!mapped.store.fresh()) return true
    const compiled = mapped.store.compiled()!
    if (compiled.moving[slot] !== 1) return false
    return this.#goesToPrimary(sql, options) || this.#tokenNamesTarget(compiled, slot, options)
  }

  /**
   * Whether a read of a moving slot is read-your-writes with a token that names the move's
   * target: the token may hold a write this router's map does not yet route to the target (the
   * move was cut over since the last poll), and the source's frozen copy would be older.
   */
  #tokenNamesTarget(compiled: CompiledSlotMap, slot: number, options: QueryOptions): boolean {
    const scope = this.#scoped ? this.#context.getStore() : undefined
    const consistency = options.consistency ?? scope?.consistency ?? this.#options.consistency
    if (consistency !== 'read-your-writes') return false
    const token = scope?.token ?? this.#token
    if (token === CausalToken.empty) return false
    const ranges = compiled.map.ranges
    let low = 0
    let high = ranges.length - 1
    while (low < high) {
      const middle = (low + high + 1) >>> 1
      if (ranges[middle]!.start <= slot) low = middle
      else high = middle - 1
    }
    const to = ranges[low]!.moving?.to
    return to !== undefined && token.has(to)
  }

  /** Whether `#route` would send the statement to the primary (by its class and `use`). */
  #goesToPrimary(sql: string, options: QueryOptions): boolean {
    const scope = this.#scoped ? this.#context.getStore() : undefined
    const use = options.use ?? scope?.use ?? 'auto'
    const kind = classifyStatement(sql).kind
    return (
      use === 'primary' ||
      kind === 'write' ||
      kind === 'locking-read' ||
      (kind === 'unknown' && use !== 'replica')
    )
  }

  /** The writer's side of the fence, counted. */
  async #checkFence(
    tx: ShardTransaction,
    mapped: MappedRouting,
    slot: number,
    shard: Shard,
  ): Promise<void> {
    this.#fenceChecks++
    try {
      await checkFence(tx.query.bind(tx), mapped.store.fenceTable, slot, shard.id)
    } catch (error) {
      if (error instanceof SlotMovedError) this.#fenceChecksRefused++
      throw error
    }
  }

  /** Refreshes the map if the store's lease ran out (throws the store's retryable error if it cannot). */
  async #freshMap(mapped: MappedRouting): Promise<void> {
    if (!mapped.store.fresh()) await mapped.store.refresh()
  }

  /**
   * After a fence refused a write of `slot` on `from`: refreshes the map (a hint that it moved)
   * and, while the map still names `from` (the mover has fenced but not yet published), waits a
   * little. Throws the refusal once the statement's time is up.
   */
  async #afterMoved(
    mapped: MappedRouting,
    slot: number,
    from: Shard,
    error: SlotMovedError,
    deadline: number,
    delayMs: number,
  ): Promise<number> {
    if (performance.now() >= deadline) throw error
    await mapped.store.refresh().catch(() => {})
    if (this.#shardOfSlot(slot) !== from) return MOVED_RETRY_FIRST_MS
    if (performance.now() + delayMs >= deadline) throw error
    await sleep(delayMs)
    return Math.min(delayMs * 2, MOVED_RETRY_MAX_MS)
  }

  /**
   * `query()` with a slot map when the map must be refreshed or the slot is moving: a write of a
   * moving slot runs in a transaction on the owner that first checks the slot's fence row; if the
   * owner refuses (the slot moved), the map is refreshed and the write tried on the new owner,
   * within the statement's timeout.
   */
  /** Until when a statement refused by a fence keeps retrying on the new owner: its own timeout. */
  #movedDeadline(options: { timeout?: Duration }): number {
    const timeoutMs =
      options.timeout === undefined
        ? this.#options.queryTimeoutMs
        : argument.duration('timeout', options.timeout, POSITIVE)
    return performance.now() + timeoutMs
  }

  async #mappedQuery(
    mapped: MappedRouting,
    slot: number,
    sql: string,
    params: readonly unknown[],
    options: QueryOptions,
  ): Promise<unknown> {
    const deadline = this.#movedDeadline(options)
    let delayMs = MOVED_RETRY_FIRST_MS
    for (;;) {
      await this.#freshMap(mapped)
      if (
        mapped.store.compiled()!.moving[slot] === 1 &&
        !this.#goesToPrimary(sql, options) &&
        this.#tokenNamesTarget(mapped.store.compiled()!, slot, options)
      ) {
        // Read the map now: if the move was cut over, the read goes to the target. A store
        // that cannot answer leaves the map in use (within its lease).
        await mapped.store.refresh().catch((error: unknown) => {
          if (!mapped.store.fresh()) throw error
        })
      }
      const shard = this.#shardOfSlot(slot)
      const scope = this.#scoped ? this.#context.getStore() : undefined
      // Inside a transaction on this shard (which checked the fence): the statement is its.
      if (
        (scope?.tx !== undefined && scope.tx.shard === shard.id) ||
        mapped.compiled.moving[slot] !== 1 ||
        !this.#goesToPrimary(sql, options)
      )
        return this.#route(shard, sql, params, options, this.#options.queryTimeoutMs)
      try {
        return await runTransaction(
          this.#internals,
          shard,
          async (tx) => {
            await this.#checkFence(tx, mapped, slot, shard)
            return tx.query(sql, params)
          },
          { timeout: Math.max(1, Math.ceil(deadline - performance.now())) },
        )
      } catch (error) {
        if (!(error instanceof SlotMovedError)) throw error
        delayMs = await this.#afterMoved(mapped, slot, shard, error, deadline, delayMs)
      }
    }
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
    for (let context = scope; context !== undefined; context = context.parent)
      context.token = context.token.merge(token)
  }

  /**
   * The part of a read-your-writes token a replica may be asked to wait for: only positions
   * the primary is known to have written (its last `gtid_binlog_pos` sample, or this router's
   * own writes), so a forged position never holds a replica connection for
   * `gtidWaitTimeout`. Positions beyond that are dropped from the context's token when the
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
    for (let context: Scope | undefined = scope; context !== undefined; context = context.parent) {
      if (context.since <= latest.at) context.token = context.token.dropAhead(shard.id, known)
    }
    this.#counters.causalPositionsDropped += dropped
    if (this.#events.has('causal-token-refused'))
      this.#events.emit('causal-token-refused', { reason: 'ahead-of-primary', shard: shard.id })
    return kept
  }

  /**
   * Read-your-writes across a move: a token naming a shard that slots moved off to `shard`
   * may stand for a write of a moved row, which reached `shard`'s primary by the mover's copy,
   * not by a position the token holds. Such a token gets the position `shard`'s primary had
   * once this router routed by the new map (every copied row is in it: the mover copies before
   * it publishes the map), so a replica serves the read only once it has applied the copy.
   * `undefined` when that position cannot be read: the read goes to the primary. Once every
   * replica has applied the position, nothing more is needed and the note goes.
   */
  async #movedToken(shard: Shard, token: CausalToken): Promise<CausalToken | undefined> {
    const moved = shard.movedIn!
    let names = false
    for (const id of moved.from) if (token.has(id)) names = true
    if (!names) return token
    if (moved.position === undefined) {
      moved.reading ??= this.#primaryPositionAfter(shard, moved.at).finally(() => {
        moved.reading = undefined
      })
      const position = await moved.reading
      if (position === undefined) return undefined
      moved.position = position
    }
    const position = moved.position
    if (shard.replicas.every((r) => r.applied.covers(position, shard.id))) {
      if (shard.movedIn === moved) shard.movedIn = undefined
      return token
    }
    return token.merge(position)
  }

  /** The position of a shard's primary sampled after `at`: the health checks' sample, or read now (`undefined` if it fails). */
  async #primaryPositionAfter(shard: Shard, at: number): Promise<CausalToken | undefined> {
    for (const sample of shard.monitored.samples) if (sample.at >= at) return sample.position
    try {
      const rows = (await shard.primary.query(
        'SELECT @@GLOBAL.gtid_binlog_pos AS p',
        [],
        this.#options.connectTimeoutMs,
        undefined,
        QUIET,
      )) as Array<{ p: unknown }>
      const p = rows[0]?.p
      return typeof p === 'string' ? CausalToken.of(shard.id, p) : undefined
    } catch {
      return undefined
    }
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
    const statement = classifyStatement(sql)
    if (statement.multi) {
      throw new UnsafeStatementError(
        'one statement per call: the SQL holds several (values belong in placeholders)',
      )
    }
    const scope = this.#scoped ? this.#context.getStore() : undefined
    if (scope?.tx !== undefined && scope.tx.shard === shard.id) return scope.tx.run(sql, params)
    const timeoutMs =
      options.timeout === undefined
        ? defaultTimeoutMs
        : argument.duration('timeout', options.timeout, POSITIVE)
    const use = options.use ?? scope?.use ?? 'auto'
    const kind = statement.kind
    if (
      use === 'primary' ||
      kind === 'write' ||
      kind === 'locking-read' ||
      (kind === 'unknown' && use !== 'replica')
    ) {
      return this.#onPrimary(shard, sql, params, timeoutMs, scope, sink)
    }
    const consistency = options.consistency ?? scope?.consistency ?? this.#options.consistency
    if (consistency === 'strong' || shard.balancer === undefined)
      return this.#onPrimary(shard, sql, params, timeoutMs, scope, sink)
    return this.#onReplica(
      shard,
      sql,
      params,
      timeoutMs,
      consistency,
      options.maxLag === undefined ? scope?.maxLagMs : argument.duration('maxLag', options.maxLag),
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
    fallback?: FallbackReason,
  ): Promise<unknown> {
    shard.stats.primaryQueries++
    // The write's GTID reaches the causal token through the server's onGtid hook, before the
    // promise settles; connection failures reach stats and the breaker through onFailure.
    const primary = shard.primary
    const op = primary.telemetry.begin(sql)
    if (fallback !== undefined && op.span.isRecording())
      op.span.setAttribute(FALLBACK_REASON, fallback)
    if (!this.#guarded(shard)) {
      return sink === undefined
        ? primary.query(sql, params, timeoutMs, scope, 0, op)
        : primary.stream(sql, params, timeoutMs, sink, 0, op)
    }
    return shard
      .breaker!.execute(() =>
        sink === undefined
          ? primary.query(sql, params, timeoutMs, scope, GUARDED, op)
          : primary.stream(sql, params, timeoutMs, sink, GUARDED, op),
      )
      .catch((error: unknown) => {
        const thrown = this.#breakerError(shard, error)
        // An open breaker refuses before the statement runs: its span still ends, failed.
        if (thrown !== error) op.fail(thrown)
        throw thrown
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
    if (reason === 'no-healthy-replica' && this.#options.noHealthyReplica === 'error') {
      throw new ShardUnavailableError(
        shard.id,
        'replica',
        `no healthy replica of shard "${shard.id}"`,
        { cause: error },
      )
    }
    this.#counters.fellBackToPrimary++
    this.#counters.fellBackToPrimaryByReason[reason]++
    if (this.#events.has('fell-back-to-primary'))
      this.#events.emit(
        'fell-back-to-primary',
        error === undefined ? { shard: shard.id, reason } : { shard: shard.id, reason, error },
      )
    return this.#onPrimary(shard, sql, params, timeoutMs, scope, sink, reason)
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
      const bound = maxLagMs ?? this.#options.boundedLagMs
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
    if (token !== undefined && shard.movedIn !== undefined) {
      token = await this.#movedToken(shard, token)
      if (token === undefined)
        return this.#fallback(shard, 'slot-moved', sql, params, timeoutMs, scope, undefined, sink)
    }
    for (let attempt = 0; attempt < shard.replicas.length; attempt++) {
      let endpoint: Endpoint<ReplicaState>
      try {
        endpoint = balancer.pick(undefined, exclude)
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
      const replica = endpoint.value
      const startedAt = balancer.begin(endpoint)
      const op = replica.server.telemetry.begin(sql)
      let waiting = false
      try {
        let rows: unknown
        if (token?.has(shard.id) && !replica.applied.covers(token, shard.id)) {
          this.#counters.gtidWaits++
          waiting = true
          op.gtidWait = true
          const waitMs = this.#options.gtidWaitTimeoutMs
          // The wait and the read share one round trip; the read's rows count only if the wait
          // succeeded. The replica times the wait itself (t, in µs: SYSDATE is read after the
          // wait, NOW at the statement's start), so its span shows apart from the read.
          const results = await replica.server.query(
            `SELECT MASTER_GTID_WAIT(?, ?) AS w, TIMESTAMPDIFF(MICROSECOND, NOW(6), SYSDATE(6)) AS t;\n${statementBody(sql)}`,
            [token.positionFor(shard.id), waitMs / 1000, ...params],
            timeoutMs + waitMs,
            undefined,
            0,
            op,
          )
          waiting = false
          const [waitRows, readRows] = results as [Array<{ w: unknown }>, unknown]
          if (Number(waitRows[0]?.w) !== 0 || waitRows[0]?.w === null) {
            balancer.end(endpoint, startedAt, true)
            this.#counters.gtidWaitsTimedOut++
            return this.#fallback(shard, 'gtid-wait-timeout', sql, params, timeoutMs, scope)
          }
          this.#counters.gtidWaitsCaughtUp++
          replica.applied = replica.applied.merge(token)
          rows = readRows
        } else {
          if (token?.has(shard.id)) {
            this.#counters.gtidWaitsSkipped++
            if (op.span.isRecording()) op.span.setAttribute(GTID_WAIT_OUTCOME, 'skipped')
          }
          rows =
            sink === undefined
              ? await replica.server.query(sql, params, timeoutMs, undefined, 0, op)
              : await replica.server.stream(sql, params, timeoutMs, sink, 0, op)
        }
        balancer.end(endpoint, startedAt, true)
        replica.reads++
        shard.stats.replicaQueries++
        return rows
      } catch (error) {
        if (waiting) this.#counters.gtidWaitsFailed++
        const failed = isConnectionError(error)
        balancer.end(endpoint, startedAt, !failed)
        if (!failed) throw error
        shard.stats.failed++
        // Rows already merged cannot be taken back: a stream that broke half way fails the shard.
        if (sink !== undefined && sink.count > 0) throw error
        exclude ??= []
        exclude.push(endpoint)
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
  return construct(options)
}
