import { createFaultProxy, mysqlUrl, type TempDatabase, tempDatabase } from '@ballast/testkit'
import { createTestTelemetry, type TestTelemetry } from '@ballast/testkit/otel'
import { SpanStatusCode } from '@opentelemetry/api'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import {
  createShardRouter,
  createSlotMapStore,
  InvalidArgumentError,
  InvalidSlotMapError,
  SlotMapConflictError,
  type SlotMapStore,
  SlotMapUnavailableError,
} from '../src/index.js'
import { eventually, ORDERS_DDL, sql } from './fixtures.js'

/** Two shard databases with an orders table on the standard server (this file needs no replica). */
let topo: { standard: string[]; cleanup(): Promise<void> }
let meta: TempDatabase
const stores: SlotMapStore[] = []

function store(options: Partial<Parameters<typeof createSlotMapStore>[0]> = {}): SlotMapStore {
  const made = createSlotMapStore({ server: meta.url, interval: 0, lease: '1h', ...options })
  stores.push(made)
  return made
}

beforeAll(async () => {
  const server = await mysqlUrl()
  const dbs = [
    await tempDatabase(server, 'slot_map_store_s0'),
    await tempDatabase(server, 'slot_map_store_s1'),
  ]
  for (const db of dbs) await sql(db.url, ORDERS_DDL)
  topo = {
    standard: dbs.map((db) => db.url),
    cleanup: async () => {
      await Promise.all(dbs.map((db) => db.cleanup()))
    },
  }
  meta = await tempDatabase(await mysqlUrl(), 'slot_map_meta')
})

afterAll(async () => {
  await Promise.all(stores.map((s) => s.close()))
  await meta?.cleanup()
  await topo?.cleanup()
})

const shards = () => [
  { id: 's1', primary: topo.standard[0]! },
  { id: 's2', primary: topo.standard[1]! },
]

describe('SlotMapStore', () => {
  it('initializes a map that places every key where the static ring does, and keeps an existing map', async () => {
    const first = store()
    const map = await first.initialize({ shards: [{ id: 's1' }, { id: 's2' }] })
    expect(map.version).toBe(1)
    expect(map.slots).toBe(4096)
    expect(map.ranges[0]!.start).toBe(0)
    expect(map.ranges[map.ranges.length - 1]!.end).toBe(4096)
    const ring = createShardRouter({ shards: shards(), healthCheckInterval: 0 })
    const mapped = createShardRouter({ shards: shards(), slotMap: first, healthCheckInterval: 0 })
    try {
      for (let i = 0; i < 2000; i++)
        expect(mapped.shardFor(`user-${i}`)).toBe(ring.shardFor(`user-${i}`))
    } finally {
      await Promise.all([ring.close(), mapped.close()])
    }
    // A second initialize (another process starting) keeps the map as it is.
    const again = await store().initialize({ shards: [{ id: 'other' }] })
    expect(again.version).toBe(1)
    expect(again.ranges).toEqual(map.ranges)
  })

  it('changes the map by compare-and-set: a change based on an old version is refused', async () => {
    const a = store()
    const b = store()
    const map = await a.load()
    await b.load()
    const last = map.ranges[map.ranges.length - 1]!
    const next = await a.update(map.version, [
      ...map.ranges.slice(0, -1),
      { ...last, shard: last.shard === 's1' ? 's2' : 's1' },
    ])
    expect(next.version).toBe(map.version + 1)
    // b still holds the old version: its change loses and it reloads the map.
    const refused = await b.update(map.version, map.ranges).catch((e: unknown) => e)
    expect(refused).toBeInstanceOf(SlotMapConflictError)
    expect((refused as SlotMapConflictError).code).toBe('E_SHARD_SLOT_MAP_CONFLICT')
    expect((refused as SlotMapConflictError).retryable).toBe(true)
    expect(b.version).toBe(next.version)
    // Put it back, so the other tests see the ring's placement.
    await a.update(next.version, map.ranges)
  })

  it('follows changes by polling the version, and routers route by the new map', async () => {
    const follower = store({ interval: 30, lease: '10s' })
    const writer = store()
    await follower.load()
    const map = await writer.load()
    const router = createShardRouter({
      shards: shards(),
      slotMap: follower,
      healthCheckInterval: 0,
    })
    try {
      const key = 'user-follow-1'
      const slot = router.slotFor(key)
      const owner = router.shardFor(key)
      const other = owner === 's1' ? 's2' : 's1'
      const seen: number[] = []
      follower.on('map-changed', ({ version }) => seen.push(version))
      // Only this one slot changes owner (a map change with no rows to move: the table is empty).
      const ranges = map.ranges.flatMap((r) =>
        slot >= r.start && slot < r.end
          ? [
              ...(r.start < slot ? [{ ...r, end: slot }] : []),
              { start: slot, end: slot + 1, shard: other },
              ...(slot + 1 < r.end ? [{ ...r, start: slot + 1 }] : []),
            ]
          : [r],
      )
      const next = await writer.update(map.version, ranges)
      await eventually(() => follower.version === next.version, 5000, 20)
      expect(seen).toContain(next.version)
      expect(router.shardFor(key)).toBe(other)
      await router.query(
        key,
        'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, ?, ?)',
        [1, key, 5, Date.now()],
      )
      const url = other === 's1' ? topo.standard[0]! : topo.standard[1]!
      expect(await sql(url, 'SELECT user_id FROM orders WHERE id = 1')).toEqual([{ user_id: key }])
      await writer.update(next.version, map.ranges)
      await eventually(() => router.shardFor(key) === owner, 5000, 20)
    } finally {
      await router.close()
    }
  })

  it('refreshes a map older than its lease before a statement', async () => {
    // A lease long enough that the second statement comes within it on a loaded machine.
    const leased = store({ interval: 0, lease: 1000 })
    await leased.load()
    const router = createShardRouter({ shards: shards(), slotMap: leased, healthCheckInterval: 0 })
    try {
      const reads = leased.stats().reads
      await new Promise((r) => setTimeout(r, 1050))
      await router.query('user-lease', 'SELECT COUNT(*) AS n FROM orders')
      expect(leased.stats().reads).toBe(reads + 1)
      // Within the lease, no read of the store.
      await router.query('user-lease', 'SELECT COUNT(*) AS n FROM orders')
      expect(leased.stats().reads).toBe(reads + 1)
    } finally {
      await router.close()
    }
  })

  it('fails a statement with a retryable SlotMapUnavailableError when the lease ran out and the store is unreachable', async () => {
    const leased = store({ interval: 0, lease: 100 })
    await leased.load()
    const router = createShardRouter({ shards: shards(), slotMap: leased, healthCheckInterval: 0 })
    try {
      // The store's pool is closed under it: every read fails from now on.
      await leased.close()
      await new Promise((r) => setTimeout(r, 150))
      const error = await router.query('user-down', 'SELECT 1').catch((e: unknown) => e)
      expect(error).toBeInstanceOf(SlotMapUnavailableError)
      expect((error as SlotMapUnavailableError).code).toBe('E_SHARD_SLOT_MAP_UNAVAILABLE')
      expect((error as SlotMapUnavailableError).retryable).toBe(true)
    } finally {
      await router.close()
    }
    const unreachable = store({ server: 'mysql://root@127.0.0.1:1/test', timeout: 1000 })
    const error = await unreachable.load().catch((e: unknown) => e)
    expect(error).toBeInstanceOf(SlotMapUnavailableError)
    expect((error as SlotMapUnavailableError).retryable).toBe(true)
  })

  it('refuses a table with no map and a corrupt map with InvalidSlotMapError', async () => {
    const empty = store({ table: 'no_map_here' })
    await sql(
      meta.url,
      'CREATE TABLE no_map_here (id TINYINT PRIMARY KEY, version BIGINT, map MEDIUMTEXT)',
    )
    expect(await empty.load().catch((e: unknown) => e)).toBeInstanceOf(InvalidSlotMapError)
    await sql(
      meta.url,
      `INSERT INTO no_map_here VALUES (1, 1, '{"slots": 16, "ranges": [{"start": 0, "end": 8, "shard": "s1"}]}')`,
    )
    const gap = await empty.load().catch((e: unknown) => e)
    expect(gap).toBeInstanceOf(InvalidSlotMapError)
    expect((gap as Error).message).toMatch(/end at slot 8, expected 16/)
    await sql(meta.url, `UPDATE no_map_here SET version = 2, map = 'not json'`)
    expect(await empty.load().catch((e: unknown) => e)).toBeInstanceOf(InvalidSlotMapError)
  })

  it('checks its options and the router checks the store it is given', async () => {
    expect(() => createSlotMapStore({ server: meta.url, table: 'x; DROP TABLE y' })).toThrow(
      /invalid option "table"/,
    )
    expect(() => createSlotMapStore({ server: meta.url, interval: '1m', lease: '30s' })).toThrow(
      /invalid option "interval"/,
    )
    expect(() => createSlotMapStore({ server: 42 as never })).toThrow(InvalidArgumentError)
    const notLoaded = store()
    expect(() => createShardRouter({ shards: shards(), slotMap: notLoaded })).toThrow(
      /invalid option "slotMap": expected a store that has loaded/,
    )
    const loaded = store()
    await loaded.load()
    expect(() =>
      createShardRouter({ shards: [shards()[0]!], slotMap: loaded, healthCheckInterval: 0 }),
    ).toThrow(
      /invalid option "slotMap": expected a map that names only shards of "shards", got "s2"/,
    )
    expect(() =>
      createShardRouter({ shards: shards(), slotMap: loaded, slots: 1024, healthCheckInterval: 0 }),
    ).toThrow(/invalid option "slots"/)
    expect(() => createShardRouter({ shards: shards(), slotMap: {} as never })).toThrow(
      /invalid option "slotMap"/,
    )
  })
})

describe('SlotMapStore telemetry', () => {
  let otel: TestTelemetry
  const cleanups: Array<() => Promise<void>> = []

  afterEach(async () => {
    while (cleanups.length > 0) await cleanups.pop()!()
    await otel?.shutdown()
  })

  /** A store reporting to a fresh in-memory SDK, on its own table, closed after the test. */
  function traced(options: Partial<Parameters<typeof createSlotMapStore>[0]> = {}): SlotMapStore {
    otel = createTestTelemetry()
    const made = createSlotMapStore({
      server: meta.url,
      interval: 0,
      lease: '1h',
      meterProvider: otel.meterProvider,
      tracerProvider: otel.tracerProvider,
      ...options,
    })
    cleanups.push(() => made.close())
    return made
  }

  it('reports the version in use, reads, updates and the lease age; a span per refresh and per update, a lost compare-and-set failed', async () => {
    const tracked = traced({ table: 'telemetry_map' })
    // Nothing is in use before the first load: no version, no age.
    expect(await otel.value('ballast.sharding.slot_map.version')).toBeUndefined()
    expect(await otel.value('ballast.sharding.slot_map.lease_age')).toBeUndefined()
    const map = await tracked.initialize({ shards: [{ id: 's1' }, { id: 's2' }] })
    expect(await otel.value('ballast.sharding.slot_map.version')).toBe(map.version)
    const next = await tracked.update(map.version, map.ranges)
    expect(await otel.value('ballast.sharding.slot_map.version')).toBe(next.version)
    expect(await otel.value('ballast.sharding.slot_map.updates')).toBe(1)
    await expect(tracked.update(map.version, map.ranges)).rejects.toThrow(SlotMapConflictError)
    expect(await otel.value('ballast.sharding.slot_map.updates')).toBe(1)
    const [won, lost] = otel.spansNamed('ballast.sharding.slot_map.update')
    expect(won!.attributes['ballast.sharding.slot_map.version']).toBe(map.version)
    expect(won!.status.code).toBe(SpanStatusCode.UNSET)
    expect(lost!.attributes['error.type']).toBe('E_SHARD_SLOT_MAP_CONFLICT')
    expect(lost!.status.code).toBe(SpanStatusCode.ERROR)

    await tracked.refresh()
    const refreshes = otel.spansNamed('ballast.sharding.slot_map.refresh')
    expect(refreshes.at(-1)!.attributes['ballast.sharding.slot_map.version']).toBe(next.version)
    expect(await otel.value('ballast.sharding.slot_map.reads')).toBe(tracked.stats().reads)
    expect(await otel.value('ballast.sharding.slot_map.refresh_failures')).toBe(0)
    const metric = (await otel.collect()).find(
      (m) => m.descriptor.name === 'ballast.sharding.slot_map.lease_age',
    )
    expect(metric?.descriptor.unit).toBe('s')
    const young = (await otel.value('ballast.sharding.slot_map.lease_age'))!
    expect(young).toBeGreaterThanOrEqual(0)
    expect(young).toBeLessThan(1)
    await new Promise((r) => setTimeout(r, 250))
    expect(await otel.value('ballast.sharding.slot_map.lease_age')).toBeGreaterThanOrEqual(0.25)
  })

  it('counts the reads that fail while the metadata server is cut off, and the lease ages until one succeeds', async () => {
    const u = new URL(meta.url)
    const proxy = await createFaultProxy({ host: u.hostname, port: Number(u.port) })
    cleanups.push(() => proxy.close())
    const polled = traced({
      server: proxy.url(meta.url),
      interval: 50,
      lease: 10_000,
      timeout: 300,
    })
    await polled.load()
    const failures: unknown[] = []
    polled.on('refresh-failed', ({ error }) => failures.push(error))
    proxy.refuse()
    proxy.cut()
    await eventually(() => failures.length >= 3)
    expect(await otel.value('ballast.sharding.slot_map.refresh_failures')).toBe(
      polled.stats().failed,
    )
    expect(polled.stats().failed).toBeGreaterThanOrEqual(3)
    const aged = (await otel.value('ballast.sharding.slot_map.lease_age'))!
    expect(aged).toBeGreaterThanOrEqual(0.1)
    // A refresh a caller waits for shows as a failed span.
    await expect(polled.refresh()).rejects.toThrow(SlotMapUnavailableError)
    const refresh = otel.spansNamed('ballast.sharding.slot_map.refresh').at(-1)!
    expect(refresh.attributes['error.type']).toBe('E_SHARD_SLOT_MAP_UNAVAILABLE')
    proxy.restore()
    await polled.refresh()
    expect(await otel.value('ballast.sharding.slot_map.lease_age')).toBeLessThan(aged)
  })

  it('stops reporting once closed, and refuses a provider that is not one', async () => {
    const closing = traced({ table: 'telemetry_map' })
    await closing.initialize({ shards: [{ id: 's1' }, { id: 's2' }] })
    expect(closing.version).toBeGreaterThan(0)
    // Not collected before: a cumulative SDK keeps reporting a point it has seen once.
    await closing.close()
    expect(await otel.points('ballast.sharding.slot_map.version')).toEqual([])
    expect(await otel.points('ballast.sharding.slot_map.reads')).toEqual([])
    expect(() => createSlotMapStore({ server: meta.url, meterProvider: {} as never })).toThrow(
      /invalid option "meterProvider"/,
    )
    expect(() => createSlotMapStore({ server: meta.url, tracerProvider: 5 as never })).toThrow(
      InvalidArgumentError,
    )
  })
})

describe('SlotMapStore.refresh() and update() while a poll is in flight', () => {
  it('resolve with a map at least as new as the row when called, not the older one the poll read', async () => {
    const u = new URL(meta.url)
    const proxy = await createFaultProxy({ host: u.hostname, port: Number(u.port) })
    try {
      const writer = store({ table: 'in_flight_map' })
      await writer.initialize({ shards: [{ id: 's1' }, { id: 's2' }] })
      // Every statement of this store reaches the server 300 ms late and its answer comes back
      // 300 ms later, and it polls all the time.
      const slow = store({ table: 'in_flight_map', server: proxy.url(meta.url), interval: 10 })
      await slow.load()
      proxy.setLatency(300)
      /** Until a poll has read the row and its answer is on the way back. */
      const pollStarted = async () => {
        const reads = slow.stats().reads
        await eventually(() => slow.stats().reads > reads, 5000, 2)
        await new Promise((r) => setTimeout(r, 400))
      }

      // A change made while a poll that began before it is in flight.
      await pollStarted()
      const changed = await writer.update(writer.version, writer.current().ranges)
      expect((await slow.refresh()).version).toBe(changed.version)

      // The store's own change, while its poll is in flight: it returns the map it wrote.
      await pollStarted()
      const own = await slow.update(changed.version, changed.ranges)
      expect(own.version).toBe(changed.version + 1)
      expect(slow.version).toBe(own.version)
    } finally {
      await proxy.close()
    }
  })
})
