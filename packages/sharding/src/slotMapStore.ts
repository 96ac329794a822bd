import {
  type Duration,
  Emitter,
  failSpan,
  inSpan,
  merge,
  observe,
  type TelemetryOptions,
  type Unsubscribe,
} from '@ballast/shared'
import { SpanKind, type Tracer } from '@opentelemetry/api'
import { createPool, type Pool, type PoolOptions } from 'mysql2'
import {
  InvalidArgumentError,
  InvalidSlotMapError,
  ShardingClosedError,
  SlotMapConflictError,
  SlotMapUnavailableError,
} from './errors.js'
import { argument, checkedTelemetry, option, POSITIVE } from './internal/check.js'
import {
  type CompiledSlotMap,
  checkRanges,
  compile,
  rangesFromRing,
  SHARD_ID,
} from './internal/slotRanges.js'
import type { RingOptions, ServerConfig } from './shardRouterOptions.js'
import { DEFAULT_RING_OPTIONS } from './shardRouterOptions.js'
import type { SlotMap, SlotRange } from './slotMap.js'

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_$]{0,63}$/
/** The map's table name leaves room for the `_moves` suffix of its progress table. */
const MAP_TABLE = /^[A-Za-z_][A-Za-z0-9_$]{0,57}$/

/**
 * Options of {@link createSlotMapStore}. Every process that routes or moves slots must use the
 * same `table`, `fenceTable` and `lease`. Its metrics and spans go to `meterProvider` and
 * `tracerProvider` (`TelemetryOptions`; the global providers by default).
 */
export interface SlotMapStoreOptions extends TelemetryOptions {
  /** The metadata server and database that holds the map: a `mysql://` URL or mysql2 pool options. */
  server: ServerConfig
  /**
   * The table of the map (one row), in the server's database; created by {@link SlotMapStore.initialize}.
   * The slot mover keeps the progress of its moves beside it, in `<table>_moves`.
   * @default 'ballast_slot_map'
   */
  table?: string
  /**
   * The table of fence rows, created in the database of each source shard of a move.
   * @default 'ballast_slot_fence'
   */
  fenceTable?: string
  /**
   * How often the map's version is polled after {@link SlotMapStore.load}; 0 turns polling off
   * (then every statement past `lease` refreshes first).
   * @default 1000
   */
  interval?: Duration
  /**
   * How old a map may be for a router to route by it: past this since the last poll that
   * confirmed it, a statement refreshes the map first. A mover waits at least this long after a
   * move begins before it fences (see `docs/resharding.md`). Longer than `interval`.
   * @default 30000
   */
  lease?: Duration
  /**
   * Bound on each statement the store runs, waiting for a connection included.
   * @default 5000
   */
  timeout?: Duration
}

/** The defaults of {@link SlotMapStoreOptions}, frozen. */
export const DEFAULT_SLOT_MAP_STORE_OPTIONS: Readonly<{
  table: string
  fenceTable: string
  interval: Duration
  lease: Duration
  timeout: Duration
}> = Object.freeze({
  table: 'ballast_slot_map',
  fenceTable: 'ballast_slot_fence',
  interval: 1000,
  lease: 30_000,
  timeout: 5000,
})

/** How {@link SlotMapStore.initialize} builds the first map when the store has none. */
export interface SlotMapInitOptions {
  /** The shards to place slots on, with the ring the router used: the map keeps every key where the ring put it. */
  shards: ReadonlyArray<{ id: string; weight?: number }>
  /**
   * Slots keys hash to (the router's `slots`).
   * @default 4096
   */
  slots?: number
  /**
   * The ring the router used (its `ring` option).
   * @default DEFAULT_RING_OPTIONS
   */
  ring?: RingOptions
}

/** The defaults of {@link SlotMapInitOptions}, frozen: the router's. */
export const DEFAULT_SLOT_MAP_INIT_OPTIONS: Readonly<{
  slots: number
  ring: Readonly<RingOptions>
}> = Object.freeze({ slots: 4096, ring: DEFAULT_RING_OPTIONS })

/** Payload of the `map-changed` event. */
export interface SlotMapChangedEvent {
  /** The new map's version. */
  version: number
  /** The version it replaced (0 on the first load). */
  previousVersion: number
}

/** Payload of the `refresh-failed` event. */
export interface SlotMapRefreshFailedEvent {
  /** Why the poll or refresh failed ({@link SlotMapUnavailableError} or {@link InvalidSlotMapError}). */
  error: unknown
}

/** The events of a {@link SlotMapStore}, with their payloads. */
export interface SlotMapStoreEvents {
  /** A newer map was read (by a poll, a refresh, a load or an update). */
  'map-changed': SlotMapChangedEvent
  /** A poll or refresh could not read the map; the last one stays in use until `lease` runs out. */
  'refresh-failed': SlotMapRefreshFailedEvent
}

/** Counters of a {@link SlotMapStore}, from {@link SlotMapStore.stats}. */
export interface SlotMapStoreStats {
  /** The version of the map in use (0 before the first load). */
  version: number
  /** Reads of the map's version (polls, refreshes, loads). */
  reads: number
  /** Reads that failed. */
  failed: number
  /** Reads that found a newer map. */
  changes: number
  /** Changes written with {@link SlotMapStore.update}. */
  updates: number
}

/** The store's observed instruments: each reads what `stats()` already keeps. */
const INSTRUMENTS = {
  'ballast.sharding.slot_map.version': {
    kind: 'gauge',
    description: 'Version of the slot map in use (no point before the first load)',
    unit: '{version}',
  },
  'ballast.sharding.slot_map.reads': {
    kind: 'counter',
    description: 'Reads of the slot map (polls, refreshes, loads), failed ones included',
    unit: '{read}',
  },
  'ballast.sharding.slot_map.refresh_failures': {
    kind: 'counter',
    description: 'Reads of the slot map (polls, refreshes, loads) that failed',
    unit: '{read}',
  },
  'ballast.sharding.slot_map.lease_age': {
    kind: 'gauge',
    description:
      'Time since a read last confirmed the slot map in use; past the lease, statements refresh it first',
    unit: 's',
  },
  'ballast.sharding.slot_map.updates': {
    kind: 'counter',
    description: 'Changes of the slot map written by this store (compare-and-set won)',
    unit: '{update}',
  },
} as const

/** The span attribute of the map's version (after a refresh; the expected one of an update). */
const MAP_VERSION = 'ballast.sharding.slot_map.version'

/** What the router and the mover read of a store, beside its public API. */
export interface SlotMapStoreInternals {
  readonly fenceTable: string
  /** The table of the slot mover's progress, `<table>_moves`. */
  readonly movesTable: string
  /** Runs a statement on the store's server (the mover's progress rows). */
  query(sql: string, values: unknown[]): Promise<unknown>
  readonly leaseMs: number
  compiled(): CompiledSlotMap | undefined
  /** Whether the map in use was confirmed within `lease`. */
  fresh(): boolean
  /** Reads the map now (coalesced with a read in flight). */
  refresh(): Promise<CompiledSlotMap>
}

/** Gives the router and the mover the store's internals: set by the class's static block. */
let internalsOf: (store: SlotMapStore) => SlotMapStoreInternals

/** The internals of a store, for the router and the mover of this package. */
export function slotMapStoreInternals(store: SlotMapStore): SlotMapStoreInternals {
  return internalsOf(store)
}

let construct: (options: SlotMapStoreOptions) => SlotMapStore

/**
 * The shared, versioned slot map every router routes by: one row in a MariaDB/MySQL table
 * (`version`, the ranges as JSON), loaded once and then followed by polling its version every
 * `interval`. Changes are compare-and-set on the version, so two movers never both win. Create
 * it with {@link createSlotMapStore}.
 */
export class SlotMapStore {
  readonly #events = new Emitter<SlotMapStoreEvents>()
  readonly #pool: Pool
  readonly #table: string
  readonly #fenceTable: string
  readonly #intervalMs: number
  readonly #leaseMs: number
  readonly #timeoutMs: number
  #compiled: CompiledSlotMap | undefined
  /** `performance.now()` at the start of the last read that confirmed the map in use. */
  #confirmedAt = Number.NEGATIVE_INFINITY
  #reading: Promise<CompiledSlotMap> | undefined
  /** `performance.now()` when the read in flight began. */
  #readingSince = 0
  #timer: ReturnType<typeof setTimeout> | undefined
  #polling = false
  #closed = false
  readonly #stats = { reads: 0, failed: 0, changes: 0, updates: 0 }
  readonly #tracer: Tracer
  /** Unregisters the observed instruments (in `close()`). */
  readonly #stopObserving: () => void

  static {
    construct = (options) => new SlotMapStore(options)
    internalsOf = (store) => ({
      fenceTable: store.#fenceTable,
      movesTable: `${store.#table}_moves`,
      query: (sql, values) => store.#query(sql, values),
      leaseMs: store.#leaseMs,
      compiled: () => store.#compiled,
      fresh: () => performance.now() - store.#confirmedAt < store.#leaseMs,
      refresh: () => store.#traced(() => store.#readNew()),
    })
  }

  /** Private: create a store with {@link createSlotMapStore}. */
  private constructor(options: SlotMapStoreOptions) {
    if (typeof options !== 'object' || options === null)
      option.invalid('options', 'an object', options)
    const merged = merge(DEFAULT_SLOT_MAP_STORE_OPTIONS, options)
    const server: unknown = merged.server
    if (typeof server !== 'string' && (typeof server !== 'object' || server === null))
      option.invalid('server', 'a mysql:// URL or mysql2 pool options', typeof server)
    this.#table = option.string('table', merged.table, { pattern: MAP_TABLE })
    this.#fenceTable = option.string('fenceTable', merged.fenceTable, { pattern: IDENTIFIER })
    this.#intervalMs = option.duration('interval', merged.interval)
    this.#leaseMs = option.duration('lease', merged.lease, POSITIVE)
    this.#timeoutMs = option.duration('timeout', merged.timeout, POSITIVE)
    if (this.#intervalMs >= this.#leaseMs)
      option.invalid(
        'interval',
        `a duration shorter than "lease" (${this.#leaseMs} ms)`,
        merged.interval,
      )
    const base: PoolOptions =
      typeof server === 'string' ? { uri: server } : { ...(server as PoolOptions) }
    const { meter, tracer } = checkedTelemetry(options)
    this.#tracer = tracer
    this.#stopObserving = observe(meter, INSTRUMENTS, (record) => {
      const stats = this.#stats
      record('ballast.sharding.slot_map.reads', stats.reads)
      record('ballast.sharding.slot_map.refresh_failures', stats.failed)
      record('ballast.sharding.slot_map.updates', stats.updates)
      if (this.#compiled === undefined) return
      record('ballast.sharding.slot_map.version', this.#compiled.map.version)
      record('ballast.sharding.slot_map.lease_age', (performance.now() - this.#confirmedAt) / 1000)
    })
    this.#pool = createPool({ connectionLimit: 2, connectTimeout: this.#timeoutMs, ...base })
    // Errors reach each statement's callback; the events only must not go unheard.
    this.#pool.on('error', () => {})
    this.#pool.on('connection', (connection) => connection.on('error', () => {}))
  }

  /** Adds a listener; returns a function that removes it. A listener that throws breaks nothing. */
  on<K extends keyof SlotMapStoreEvents>(
    event: K,
    listener: (event: SlotMapStoreEvents[K]) => void,
  ): Unsubscribe {
    return this.#events.on(event, listener)
  }

  /** Adds a listener called at most once; returns a function that removes it. */
  once<K extends keyof SlotMapStoreEvents>(
    event: K,
    listener: (event: SlotMapStoreEvents[K]) => void,
  ): Unsubscribe {
    return this.#events.once(event, listener)
  }

  /** Removes a listener added with {@link SlotMapStore.on} or {@link SlotMapStore.once}. */
  off<K extends keyof SlotMapStoreEvents>(
    event: K,
    listener: (event: SlotMapStoreEvents[K]) => void,
  ): void {
    this.#events.off(event, listener)
  }

  /** The version of the map in use: 0 before the first load. */
  get version(): number {
    return this.#compiled?.map.version ?? 0
  }

  /**
   * The map in use.
   * @throws InvalidArgumentError before the first {@link SlotMapStore.load}.
   */
  current(): SlotMap {
    if (this.#compiled === undefined)
      throw new InvalidArgumentError('the slot map store has not loaded: await store.load() first')
    return this.#compiled.map
  }

  /** Which shard owns a slot in the map in use. */
  ownerOf(slot: number): string {
    const compiled = this.#compiled
    if (compiled === undefined) return this.current().ranges[0]!.shard
    argument.integer('slot', slot, { min: 0, max: compiled.map.slots - 1 })
    return compiled.ids[compiled.owners[slot]!]!
  }

  /**
   * Creates the map's table if it is missing and, if it holds no map yet, writes the first one:
   * the static ring's placement of `shards`, so routers switching from `shards` to `slotMap`
   * move no key. Then loads the map (see {@link SlotMapStore.load}) and returns it; an existing
   * map is kept as it is.
   * @example
   * ```ts
   * const store = createSlotMapStore({ server: 'mysql://app@meta:3306/shop' })
   * await store.initialize({ shards: [{ id: 's1' }, { id: 's2' }] })
   * const router = createShardRouter({ shards, slotMap: store })
   * ```
   */
  async initialize(init: SlotMapInitOptions): Promise<SlotMap> {
    if (this.#closed) throw new ShardingClosedError('slot map store', 'initialize')
    if (typeof init !== 'object' || init === null) argument.invalid('init', 'an object', init)
    const merged = merge(DEFAULT_SLOT_MAP_INIT_OPTIONS, init)
    const shards: unknown = merged.shards
    if (!Array.isArray(shards) || shards.length === 0)
      argument.invalid('shards', 'a non-empty array of shards', shards)
    for (const [i, shard] of (shards as Array<{ id: unknown }>).entries())
      argument.string(`shards[${i}].id`, shard?.id, { pattern: SHARD_ID })
    const ring = merge(DEFAULT_RING_OPTIONS, merged.ring)
    const ranges = rangesFromRing(merged.shards, merged.slots, ring)
    const map = JSON.stringify({ slots: merged.slots, ranges })
    await this.#query(
      `CREATE TABLE IF NOT EXISTS \`${this.#table}\` (id TINYINT UNSIGNED NOT NULL PRIMARY KEY, version BIGINT UNSIGNED NOT NULL, map MEDIUMTEXT NOT NULL, updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))`,
      [],
    )
    await this.#query(`INSERT IGNORE INTO \`${this.#table}\` (id, version, map) VALUES (1, 1, ?)`, [
      map,
    ])
    return this.load()
  }

  /**
   * Reads the map and, the first time, starts polling its version every `interval` (the
   * timer does not keep the process alive). Resolves with the map in use.
   * @throws SlotMapUnavailableError if the store cannot be read; InvalidSlotMapError if it holds no valid map.
   */
  async load(): Promise<SlotMap> {
    if (this.#closed) throw new ShardingClosedError('slot map store', 'load')
    const compiled = await this.#traced(() => this.#read())
    if (!this.#polling && this.#intervalMs > 0) {
      this.#polling = true
      this.#schedule()
    }
    return compiled.map
  }

  /**
   * Reads the map now, whatever the interval (a hint that it changed: a refused write, a
   * message from the mover): the map it resolves with is at least as new as the store's row
   * when it was called. One read is shared by concurrent calls; a poll in flight that began
   * before the call is waited for, then read again.
   */
  async refresh(): Promise<SlotMap> {
    if (this.#closed) throw new ShardingClosedError('slot map store', 'refresh')
    return (await this.#traced(() => this.#readNew())).map
  }

  /**
   * Replaces the map's ranges if its version is still `expectedVersion` (compare-and-set), and
   * returns the new map (version + 1). The slot mover's tool: a hand-made change must keep
   * every slot's rows where the new map says they are.
   * @throws SlotMapConflictError (retryable) if the map changed since `expectedVersion`.
   * @throws InvalidSlotMapError if `ranges` do not cover every slot once.
   */
  async update(expectedVersion: number, ranges: readonly SlotRange[]): Promise<SlotMap> {
    if (this.#closed) throw new ShardingClosedError('slot map store', 'update')
    argument.integer('expectedVersion', expectedVersion, { min: 1 })
    const slots = this.current().slots
    const checked = checkRanges(slots, ranges)
    return inSpan(
      this.#tracer,
      'ballast.sharding.slot_map.update',
      { kind: SpanKind.INTERNAL, attributes: { [MAP_VERSION]: expectedVersion } },
      () => this.#compareAndSet(expectedVersion, slots, checked),
    )
  }

  async #compareAndSet(
    expectedVersion: number,
    slots: number,
    checked: SlotRange[],
  ): Promise<SlotMap> {
    const result = (await this.#query(
      `UPDATE \`${this.#table}\` SET version = version + 1, map = ? WHERE id = 1 AND version = ?`,
      [JSON.stringify({ slots, ranges: checked }), expectedVersion],
    )) as { affectedRows: number }
    if (result.affectedRows !== 1) {
      await this.#read().catch(() => {})
      throw new SlotMapConflictError(expectedVersion)
    }
    this.#stats.updates++
    const compiled = await this.#readNew()
    return compiled.map
  }

  /** Counters of reads, failures, changes and updates. */
  stats(): SlotMapStoreStats {
    return { version: this.version, ...this.#stats }
  }

  /** Stops polling and closes the pool; later calls throw {@link ShardingClosedError}. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#stopObserving()
    await this.#reading?.catch(() => {})
    await this.#pool.promise().end()
  }

  #schedule(): void {
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      if (this.#closed) return
      this.#read()
        .catch(() => {})
        .finally(() => {
          if (!this.#closed) this.#schedule()
        })
    }, this.#intervalMs)
    this.#timer.unref()
  }

  /**
   * A caller's wait for a read of the map, in a `ballast.sharding.slot_map.refresh` span (the
   * version it got, or the failure): a refresh a refused write or an expired lease caused shows
   * under that statement's span. The polls have none: nobody waits for them.
   */
  async #traced(read: () => Promise<CompiledSlotMap>): Promise<CompiledSlotMap> {
    const span = this.#tracer.startSpan('ballast.sharding.slot_map.refresh', {
      kind: SpanKind.INTERNAL,
    })
    try {
      const compiled = await read()
      if (span.isRecording()) span.setAttribute(MAP_VERSION, compiled.map.version)
      return compiled
    } catch (error) {
      failSpan(span, error)
      throw error
    } finally {
      span.end()
    }
  }

  /**
   * A read that began after the call, so it sees every change committed before it: a poll in
   * flight may have read the row before a cut-over's change (and an update's own change), so
   * it is waited for and a new read made.
   */
  async #readNew(): Promise<CompiledSlotMap> {
    const asked = performance.now()
    for (;;) {
      const reading = this.#read()
      if (this.#readingSince >= asked) return reading
      await reading.catch(() => {})
    }
  }

  /** One read of the map, shared by concurrent callers; only a newer version replaces the map in use. */
  #read(): Promise<CompiledSlotMap> {
    if (this.#reading !== undefined) return this.#reading
    this.#readingSince = performance.now()
    const reading = this.#readOnce().finally(() => {
      if (this.#reading === reading) this.#reading = undefined
    })
    this.#reading = reading
    return reading
  }

  async #readOnce(): Promise<CompiledSlotMap> {
    const startedAt = performance.now()
    const known = this.version
    this.#stats.reads++
    try {
      // The map's text comes back only when the version moved: a poll of an unchanged map is a
      // primary-key lookup that returns one number.
      const rows = (await this.#query(
        `SELECT version, IF(version = ?, NULL, map) AS map FROM \`${this.#table}\` WHERE id = 1`,
        [known],
      )) as Array<{ version: unknown; map: string | null }>
      const row = rows[0]
      if (row === undefined)
        throw new InvalidSlotMapError(
          `the slot map store holds no map (table "${this.#table}"): call store.initialize() first`,
        )
      const version = Number(row.version)
      if (row.map !== null && version > known) {
        let parsed: { slots?: unknown; ranges?: unknown }
        try {
          parsed = JSON.parse(row.map) as typeof parsed
        } catch (cause) {
          throw new InvalidSlotMapError('invalid slot map: the stored map is not JSON', { cause })
        }
        const ranges = checkRanges(parsed?.slots, parsed?.ranges)
        this.#compiled = compile({ version, slots: parsed.slots as number, ranges })
        this.#stats.changes++
        if (this.#events.has('map-changed'))
          this.#events.emit('map-changed', { version, previousVersion: known })
      }
      this.#confirmedAt = Math.max(this.#confirmedAt, startedAt)
      return this.#compiled!
    } catch (error) {
      this.#stats.failed++
      if (this.#events.has('refresh-failed')) this.#events.emit('refresh-failed', { error })
      throw error
    }
  }

  async #query(sql: string, values: unknown[]): Promise<unknown> {
    try {
      const [result] = await this.#pool.promise().query({ sql, values, timeout: this.#timeoutMs })
      return result
    } catch (cause) {
      throw new SlotMapUnavailableError(
        `the slot map store could not be read: ${(cause as Error)?.message ?? String(cause)}`,
        { cause },
      )
    }
  }
}

/**
 * Creates a {@link SlotMapStore} on a MariaDB/MySQL server (any database of the application's,
 * or a small metadata server). Call `initialize()` once per deployment and `load()` in each
 * process before giving it to {@link createShardRouter} as `slotMap`.
 *
 * @example
 * ```ts
 * import { createShardRouter, createSlotMapStore } from '@ballast/sharding'
 *
 * const slotMap = createSlotMapStore({ server: 'mysql://app@meta:3306/shop' })
 * await slotMap.load()
 * const router = createShardRouter({ shards, slotMap })
 * ```
 */
export function createSlotMapStore(options: SlotMapStoreOptions): SlotMapStore {
  return construct(options)
}
