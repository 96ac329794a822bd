import { createFaultProxy, type FaultProxy } from '@ballast/testkit'
import { createTestTelemetry, type ReadableSpan, type TestTelemetry } from '@ballast/testkit/otel'
import { type Span, SpanKind, SpanStatusCode } from '@opentelemetry/api'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import {
  createShardRouter,
  InvalidArgumentError,
  ScatterGatherError,
  type ShardRouter,
  type ShardRouterOptions,
} from '../src/index.js'
import { type Topology, topology } from './fixtures.js'

let topo: Topology
let otel: TestTelemetry
const cleanups: Array<() => Promise<void>> = []
// Ids no attribute could hold by chance (a port, a count): the no-parameter-values checks look for them.
let nextId = 7_340_001

beforeAll(async () => {
  topo = await topology('shard_telemetry', 1, 2)
})

afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!()
  await otel?.shutdown()
})

afterAll(async () => {
  await topo?.cleanup()
})

/** A router reporting to a fresh in-memory SDK (`otel`), closed after the test. */
function make(options: ShardRouterOptions): ShardRouter {
  otel = createTestTelemetry()
  const router = createShardRouter({
    healthCheckInterval: 0,
    meterProvider: otel.meterProvider,
    tracerProvider: otel.tracerProvider,
    ...options,
  })
  cleanups.push(() => router.close())
  return router
}

async function proxyFor(url: string): Promise<{ proxy: FaultProxy; url: string }> {
  const u = new URL(url)
  const proxy = await createFaultProxy({ host: u.hostname, port: Number(u.port) })
  cleanups.push(() => proxy.close())
  return { proxy, url: proxy.url(url) }
}

const dbOf = (url: string) => new URL(url).pathname.slice(1)
const portOf = (url: string) => Number(new URL(url).port)

/** Runs `fn` in an active span of the test's own, which it returns (ended). */
async function inRequest(fn: () => Promise<unknown>): Promise<Span> {
  const tracer = otel.tracerProvider.getTracer('test')
  return tracer.startActiveSpan('request', async (span) => {
    try {
      await fn()
    } finally {
      span.end()
    }
    return span
  })
}

const childrenOf = (parent: { spanContext(): { spanId: string } }) =>
  otel.spans().filter((s) => s.parentSpanContext?.spanId === parent.spanContext().spanId)

/** Every attribute value, event attribute and status message of every span and metric point. */
async function everyValue(): Promise<string[]> {
  const values: string[] = []
  for (const span of otel.spans()) {
    values.push(span.name)
    for (const value of Object.values(span.attributes)) values.push(String(value))
    for (const event of span.events) {
      for (const value of Object.values(event.attributes ?? {})) values.push(String(value))
    }
    if (span.status.message !== undefined) values.push(span.status.message)
  }
  for (const metric of await otel.collect()) {
    for (const point of metric.dataPoints) {
      for (const value of Object.values(point.attributes)) values.push(String(value))
    }
  }
  return values
}

async function unitOf(name: string): Promise<string | undefined> {
  return (await otel.collect()).find((m) => m.descriptor.name === name)?.descriptor.unit
}

const INSERT = 'INSERT INTO orders (id, user_id, total, note, created_at) VALUES (?, ?, ?, ?, ?)'

describe('ShardRouter telemetry', () => {
  describe('routed statements', () => {
    it('makes one CLIENT span per statement, named by operation and database, a child of the active span, with no parameter value', async () => {
      const pair = topo.pair[0]!
      const router = make({
        shards: [{ id: 'pair', primary: pair.primary, replicas: [pair.replica] }],
      })
      const secret = 'user-4c1d-secret'
      const id = nextId++
      const request = await inRequest(async () => {
        await router.query(secret, INSERT, [id, secret, '12.34', 'note-9f2e', 1])
        await router.query(secret, 'SELECT * FROM orders WHERE user_id = ?', [secret], {
          consistency: 'eventual',
        })
      })
      const db = dbOf(pair.primary)

      const [insert, ...moreInserts] = otel.spansNamed(`INSERT ${db}`)
      expect(moreInserts).toEqual([])
      expect(insert?.kind).toBe(SpanKind.CLIENT)
      expect(insert?.attributes).toEqual({
        'db.system.name': 'mariadb',
        'db.namespace': db,
        'db.operation.name': 'INSERT',
        'server.address': '127.0.0.1',
        'server.port': portOf(pair.primary),
        'ballast.sharding.shard': 'pair',
        'ballast.sharding.role': 'primary',
      })
      expect(insert?.status.code).toBe(SpanStatusCode.UNSET)
      expect(insert?.parentSpanContext?.spanId).toBe(request.spanContext().spanId)

      const [select] = otel.spansNamed(`SELECT ${db}`)
      expect(select?.kind).toBe(SpanKind.CLIENT)
      expect(select?.attributes).toMatchObject({
        'db.system.name': 'mariadb',
        'db.namespace': db,
        'db.operation.name': 'SELECT',
        'server.port': portOf(pair.replica),
        'ballast.sharding.shard': 'pair',
        'ballast.sharding.role': 'replica',
      })
      expect(select?.parentSpanContext?.spanId).toBe(request.spanContext().spanId)
      expect(select?.spanContext().traceId).toBe(request.spanContext().traceId)

      const values = (await everyValue()).join('\n')
      for (const param of [secret, '12.34', 'note-9f2e', String(id)]) {
        expect(values).not.toContain(param)
      }
      expect(Object.keys(insert!.attributes)).not.toContain('db.query.text')
    })

    it('records db.client.operation.duration and counts ballast.sharding.queries per shard and role', async () => {
      const pair = topo.pair[0]!
      const router = make({
        shards: [{ id: 'pair', primary: pair.primary, replicas: [pair.replica] }],
      })
      const id = nextId++
      await router.query('k', INSERT, [id, 'k', '1.00', null, 1])
      await router.query('k', 'SELECT id FROM orders WHERE id = ?', [id], { use: 'primary' })
      await router.query('k', 'SELECT id FROM orders WHERE id = ?', [id], {
        consistency: 'eventual',
      })
      await router.query('k', 'SELECT id FROM orders WHERE id = ?', [id], {
        consistency: 'eventual',
      })

      const duration = 'db.client.operation.duration'
      expect(await unitOf(duration)).toBe('s')
      const on = (role: string, operation: string) => ({
        'ballast.sharding.shard': 'pair',
        'ballast.sharding.role': role,
        'db.operation.name': operation,
        'db.system.name': 'mariadb',
        'db.namespace': dbOf(pair.primary),
      })
      expect(await otel.value(duration, on('primary', 'INSERT'))).toBe(1)
      expect(await otel.value(duration, on('primary', 'SELECT'))).toBe(1)
      expect(await otel.value(duration, on('replica', 'SELECT'))).toBe(2)
      const points = await otel.points(duration)
      for (const point of points) {
        expect(point.sum).toBeGreaterThan(0)
        expect(point.sum).toBeLessThan(5)
        expect(point.attributes['error.type']).toBeUndefined()
      }

      expect(await unitOf('ballast.sharding.queries')).toBe('{query}')
      const queries = (role: string) =>
        otel.value('ballast.sharding.queries', {
          'ballast.sharding.shard': 'pair',
          'ballast.sharding.role': role,
        })
      expect(await queries('primary')).toBe(2)
      expect(await queries('replica')).toBe(2)
      expect(
        await otel.value('ballast.sharding.failed', { 'ballast.sharding.shard': 'pair' }),
      ).toBe(0)
      const stats = router.stats().shards.pair!
      expect(stats).toMatchObject({ primaryQueries: 2, replicaQueries: 2, failed: 0 })
    })

    it('fails a statement span with the error code and no server message (it may quote values)', async () => {
      const pair = topo.pair[0]!
      const router = make({ shards: [{ id: 'pair', primary: pair.primary }] })
      const id = nextId++
      await router.query('k', INSERT, [id, 'k', '1.00', null, 1])
      await expect(router.query('k', INSERT, [id, 'dup-7a1b', '1.00', null, 1])).rejects.toThrow(
        /Duplicate entry/,
      )
      const [, failed] = otel.spansNamed(`INSERT ${dbOf(pair.primary)}`)
      expect(failed?.status.code).toBe(SpanStatusCode.ERROR)
      expect(failed?.status.message).toBeUndefined()
      expect(failed?.attributes['error.type']).toBe('ER_DUP_ENTRY')
      expect(
        await otel.value('db.client.operation.duration', {
          'ballast.sharding.role': 'primary',
          'error.type': 'ER_DUP_ENTRY',
        }),
      ).toBe(1)
      // A statement error is the statement's, not the server's: nothing counts as failed.
      expect(
        await otel.value('ballast.sharding.failed', { 'ballast.sharding.shard': 'pair' }),
      ).toBe(0)
      expect((await everyValue()).join('\n')).not.toContain(String(id))
    })
  })

  describe('read-your-writes', () => {
    it('shows the GTID wait of a replica read as a child span, with its outcome and duration', async () => {
      const pair = topo.pair[0]!
      const router = make({
        shards: [{ id: 'pair', primary: pair.primary, replicas: [pair.replica] }],
        gtidWaitTimeout: 5000,
      })
      const id = nextId++
      await router.query('k', INSERT, [id, 'k', '1.00', null, 1])
      const rows = await router.query('k', 'SELECT id FROM orders WHERE id = ?', [id])
      expect(rows).toHaveLength(1)

      const read = otel
        .spansNamed(`SELECT ${dbOf(pair.primary)}`)
        .find((s) => s.attributes['ballast.sharding.role'] === 'replica')
      expect(read).toBeDefined()
      expect(read?.status.code).toBe(SpanStatusCode.UNSET)
      const [wait, ...others] = childrenOf(read!)
      expect(others).toEqual([])
      expect(wait?.name).toBe('ballast.sharding.gtid_wait')
      expect(wait?.kind).toBe(SpanKind.INTERNAL)
      expect(wait?.attributes).toEqual({
        'ballast.sharding.shard': 'pair',
        'ballast.sharding.gtid_wait.outcome': 'caught_up',
      })
      expect(durationMs(wait!)).toBeLessThanOrEqual(durationMs(read!))

      const outcome = (o: string) => ({ 'ballast.sharding.gtid_wait.outcome': o })
      expect(await otel.value('ballast.sharding.gtid_waits', outcome('caught_up'))).toBe(1)
      expect(await otel.value('ballast.sharding.gtid_waits', outcome('timed_out'))).toBe(0)
      expect(await otel.value('ballast.sharding.gtid_waits', outcome('skipped'))).toBe(0)
      expect(await unitOf('ballast.sharding.gtid_wait.duration')).toBe('s')
      expect(
        await otel.value('ballast.sharding.gtid_wait.duration', {
          ...outcome('caught_up'),
          'ballast.sharding.shard': 'pair',
        }),
      ).toBe(1)
      expect(router.stats()).toMatchObject({
        gtidWaits: 1,
        gtidWaitsCaughtUp: 1,
        fellBackToPrimary: 0,
      })

      // The replica is now known to have the token: the next read does not wait.
      await router.query('k', 'SELECT id FROM orders WHERE id = ?', [id])
      expect(await otel.value('ballast.sharding.gtid_waits', outcome('skipped'))).toBe(1)
      const skipped = otel
        .spansNamed(`SELECT ${dbOf(pair.primary)}`)
        .filter((s) => s.attributes['ballast.sharding.role'] === 'replica')[1]
      expect(skipped?.attributes['ballast.sharding.gtid_wait.outcome']).toBe('skipped')
      expect(childrenOf(skipped!)).toEqual([])
    })

    it('shows a wait that timed out, and the read the primary then served as a fallback', async () => {
      const pair = topo.pair[0]!
      // The primary posing as its own replica: its gtid_slave_pos never reaches its own writes,
      // so every wait times out, without touching the shared replica.
      const router = make({
        shards: [{ id: 'pair', primary: pair.primary, replicas: [pair.primary] }],
        gtidWaitTimeout: 150,
      })
      const id = nextId++
      await router.query('k', INSERT, [id, 'k', '1.00', null, 1])
      const rows = await router.query('k', 'SELECT id FROM orders WHERE id = ?', [id])
      expect(rows).toHaveLength(1)

      const reads = otel.spansNamed(`SELECT ${dbOf(pair.primary)}`)
      const onReplica = reads.find((s) => s.attributes['ballast.sharding.role'] === 'replica')
      const onPrimary = reads.find((s) => s.attributes['ballast.sharding.role'] === 'primary')
      const [wait] = childrenOf(onReplica!)
      expect(wait?.name).toBe('ballast.sharding.gtid_wait')
      expect(wait?.attributes['ballast.sharding.gtid_wait.outcome']).toBe('timed_out')
      expect(durationMs(wait!)).toBeGreaterThanOrEqual(140)
      expect(onPrimary?.attributes['ballast.sharding.fallback.reason']).toBe('gtid-wait-timeout')
      expect(onPrimary?.status.code).toBe(SpanStatusCode.UNSET)

      const outcome = (o: string) => ({ 'ballast.sharding.gtid_wait.outcome': o })
      expect(await otel.value('ballast.sharding.gtid_waits', outcome('timed_out'))).toBe(1)
      expect(await otel.value('ballast.sharding.gtid_waits', outcome('caught_up'))).toBe(0)
      const [waited] = (await otel.points('ballast.sharding.gtid_wait.duration')).filter(
        (p) => p.attributes['ballast.sharding.gtid_wait.outcome'] === 'timed_out',
      )
      expect(waited?.value).toBe(1)
      expect(waited?.sum).toBeGreaterThanOrEqual(0.14)
      expect(
        await otel.value('ballast.sharding.fell_back_to_primary', {
          'ballast.sharding.fallback.reason': 'gtid-wait-timeout',
        }),
      ).toBe(1)
      expect(
        await otel.value('ballast.sharding.fell_back_to_primary', {
          'ballast.sharding.fallback.reason': 'replica-error',
        }),
      ).toBe(0)
      expect(router.stats().fellBackToPrimaryByReason['gtid-wait-timeout']).toBe(1)
    })
  })

  describe('replica lag', () => {
    it('reports each replica lag as a gauge, +Inf and unavailable for a server that does not replicate', async () => {
      const pair = topo.pair[0]!
      const router = make({
        shards: [{ id: 'pair', primary: pair.primary, replicas: [pair.replica, pair.primary] }],
      })
      expect(await otel.points('ballast.sharding.replica.lag')).toEqual([]) // not measured yet
      await router.checkReplicas()
      expect(await unitOf('ballast.sharding.replica.lag')).toBe('s')
      const replica = (i: number) => ({
        'ballast.sharding.shard': 'pair',
        'ballast.sharding.replica': `pair/replica-${i}`,
      })
      const real = await otel.value('ballast.sharding.replica.lag', replica(0))
      expect(real).toBeGreaterThanOrEqual(0)
      expect(real).toBeLessThan(60)
      expect(await otel.value('ballast.sharding.replica.lag', replica(1))).toBe(Infinity)
      expect(await otel.value('ballast.sharding.replica.available', replica(0))).toBe(1)
      expect(await otel.value('ballast.sharding.replica.available', replica(1))).toBe(0)
      // The health checks are not statements of the application: no span, no duration.
      expect(otel.spans()).toEqual([])
      expect(await otel.points('db.client.operation.duration')).toEqual([])
    })
  })

  describe('scatter-gather', () => {
    function scatterRouter(
      s1: string = topo.standard[1]!,
      options: Partial<ShardRouterOptions> = {},
    ) {
      const pair = topo.pair[0]!
      return make({
        shards: [
          { id: 'pair', primary: pair.primary, replicas: [pair.replica] },
          { id: 's0', primary: topo.standard[0]! },
          { id: 's1', primary: s1 },
        ],
        consistency: 'eventual',
        ...options,
      })
    }

    it('makes an INTERNAL span that is the parent of the per-shard statements, and records its duration', async () => {
      const router = scatterRouter()
      const request = await inRequest(async () => {
        await router.all('SELECT COUNT(*) AS n FROM orders', [], { aggregate: { n: 'count' } })
        await router.all('SELECT id FROM orders ORDER BY id', [], { orderBy: 'id', limit: 5 })
      })
      const scatters = otel.spansNamed('ballast.sharding.scatter')
      expect(scatters).toHaveLength(2)
      for (const scatter of scatters) {
        expect(scatter.kind).toBe(SpanKind.INTERNAL)
        expect(scatter.parentSpanContext?.spanId).toBe(request.spanContext().spanId)
        expect(scatter.attributes).toEqual({
          'db.operation.name': 'SELECT',
          'ballast.sharding.shard_count': 3,
          'ballast.sharding.scatter.outcome': 'complete',
          'ballast.sharding.failed_shards': 0,
        })
        const children = childrenOf(scatter)
        expect(children.map((s) => s.attributes['ballast.sharding.shard']).sort()).toEqual([
          'pair',
          's0',
          's1',
        ])
        for (const child of children) {
          expect(child.kind).toBe(SpanKind.CLIENT)
          expect(child.name).toMatch(/^SELECT shard_telemetry/)
        }
        expect(
          children.find((s) => s.attributes['ballast.sharding.shard'] === 'pair')?.attributes,
        ).toMatchObject({ 'ballast.sharding.role': 'replica' })
      }
      expect(await unitOf('ballast.sharding.scatter.duration')).toBe('s')
      expect(
        await otel.value('ballast.sharding.scatter.duration', {
          'ballast.sharding.scatter.outcome': 'complete',
        }),
      ).toBe(2)
      expect(await otel.value('ballast.sharding.scatter.calls')).toBe(2)
      expect(await otel.value('ballast.sharding.scatter.partial')).toBe(0)
    })

    it('shows a down shard as a partial result or a failed call, with the shard error on its statement', async () => {
      const { proxy, url } = await proxyFor(topo.standard[1]!)
      const router = scatterRouter(url, { connectTimeout: 500, primaryBreaker: false })
      proxy.refuse()
      const partial = await router.all(
        'SELECT COUNT(*) AS n FROM orders',
        [],
        { aggregate: { n: 'count' } },
        { onShardError: 'partial' },
      )
      expect(partial.partial).toBe(true)
      await expect(
        router.all('SELECT id FROM orders', [], undefined, { onShardError: 'error' }),
      ).rejects.toThrow(ScatterGatherError)

      const [first, second] = otel.spansNamed('ballast.sharding.scatter')
      expect(first?.attributes).toMatchObject({
        'ballast.sharding.scatter.outcome': 'partial',
        'ballast.sharding.failed_shards': 1,
      })
      expect(first?.status.code).toBe(SpanStatusCode.UNSET)
      const down = childrenOf(first!).find((s) => s.attributes['ballast.sharding.shard'] === 's1')
      expect(down?.status.code).toBe(SpanStatusCode.ERROR)
      expect(down?.attributes['error.type']).toBe('E_SHARD_UNAVAILABLE')
      expect(down?.status.message).toMatch(/s1/)

      expect(second?.attributes).toMatchObject({
        'ballast.sharding.scatter.outcome': 'failed',
        'ballast.sharding.failed_shards': 1,
        'error.type': 'E_SHARD_SCATTER_GATHER',
      })
      expect(second?.status.code).toBe(SpanStatusCode.ERROR)

      const outcome = (o: string) => ({ 'ballast.sharding.scatter.outcome': o })
      expect(await otel.value('ballast.sharding.scatter.duration', outcome('partial'))).toBe(1)
      expect(await otel.value('ballast.sharding.scatter.duration', outcome('failed'))).toBe(1)
      expect(await otel.value('ballast.sharding.scatter.duration', outcome('complete'))).toBe(
        undefined,
      )
      expect(await otel.value('ballast.sharding.scatter.partial')).toBe(1)
      expect(await otel.value('ballast.sharding.scatter.failed')).toBe(1)
      expect(
        await otel.value('db.client.operation.duration', {
          'ballast.sharding.shard': 's1',
          'error.type': 'E_SHARD_UNAVAILABLE',
        }),
      ).toBe(2)
      expect(await otel.value('ballast.sharding.failed', { 'ballast.sharding.shard': 's1' })).toBe(
        2,
      )
      expect(await otel.value('ballast.sharding.failed', { 'ballast.sharding.shard': 's0' })).toBe(
        0,
      )
    })
  })

  describe('faults', () => {
    it('shows a cut replica as replica errors, a primary fallback and an unavailable replica', async () => {
      const pair = topo.pair[0]!
      const { proxy, url } = await proxyFor(pair.replica)
      const router = make({
        shards: [{ id: 'pair', primary: pair.primary, replicas: [url] }],
        connectTimeout: 500,
        outlierDetection: { consecutiveFailures: 1, baseEjectionTime: 60_000 },
      })
      const read = () =>
        router.query('k', 'SELECT COUNT(*) AS n FROM orders', [], { consistency: 'eventual' })
      await read() // a connection to the replica, through the proxy
      proxy.refuse()
      proxy.cut()
      const rows = (await read()) as Array<{ n: number }>
      expect(Number(rows[0]?.n)).toBeGreaterThanOrEqual(0) // the primary answered

      const replica = { 'ballast.sharding.shard': 'pair', 'ballast.sharding.role': 'replica' }
      expect(
        await otel.value('db.client.operation.duration', {
          ...replica,
          'error.type': 'E_SHARD_UNAVAILABLE',
        }),
      ).toBe(1)
      expect(
        await otel.value('ballast.sharding.fell_back_to_primary', {
          'ballast.sharding.fallback.reason': 'replica-error',
        }),
      ).toBe(1)
      expect(
        await otel.value('ballast.sharding.failed', { 'ballast.sharding.shard': 'pair' }),
      ).toBe(1)
      expect(
        await otel.value('ballast.sharding.replica.available', {
          'ballast.sharding.replica': 'pair/replica-0',
        }),
      ).toBe(0) // ejected by outlier detection

      const spans = otel.spansNamed(`SELECT ${dbOf(pair.primary)}`)
      const failed = spans.filter((s) => s.status.code === SpanStatusCode.ERROR)
      expect(failed).toHaveLength(1)
      expect(failed[0]?.attributes).toMatchObject({
        ...replica,
        'error.type': 'E_SHARD_UNAVAILABLE',
      })
      const fallback = spans.find(
        (s) => s.attributes['ballast.sharding.fallback.reason'] !== undefined,
      )
      expect(fallback?.attributes).toMatchObject({
        'ballast.sharding.role': 'primary',
        'ballast.sharding.fallback.reason': 'replica-error',
      })
      expect(fallback?.status.code).toBe(SpanStatusCode.UNSET)

      // Ejected: the next read goes straight to the primary.
      await read()
      expect(
        await otel.value('ballast.sharding.fell_back_to_primary', {
          'ballast.sharding.fallback.reason': 'no-healthy-replica',
        }),
      ).toBe(1)
      await router.checkReplicas()
      expect(
        await otel.value('ballast.sharding.replica.lag', {
          'ballast.sharding.replica': 'pair/replica-0',
        }),
      ).toBe(Infinity)
    })

    it('counts a GTID wait on a replica that was cut as failed, and the read the primary served instead', async () => {
      const pair = topo.pair[0]!
      const { proxy, url } = await proxyFor(pair.replica)
      const router = make({
        shards: [{ id: 'pair', primary: pair.primary, replicas: [url] }],
        connectTimeout: 500,
        gtidWaitTimeout: 5000,
      })
      await router.query('k', 'SELECT 1 AS one', [], { consistency: 'eventual' }) // a replica connection
      const id = nextId++
      await router.query('k', INSERT, [id, 'k', '1.00', null, 1])
      proxy.refuse()
      proxy.cut()
      const rows = await router.query('k', 'SELECT id FROM orders WHERE id = ?', [id])
      expect(rows).toHaveLength(1)

      const outcome = (o: string) => ({ 'ballast.sharding.gtid_wait.outcome': o })
      expect(await otel.value('ballast.sharding.gtid_waits', outcome('failed'))).toBe(1)
      expect(await otel.value('ballast.sharding.gtid_waits', outcome('caught_up'))).toBe(0)
      expect(await otel.points('ballast.sharding.gtid_wait.duration')).toEqual([]) // no wait ended
      const reads = otel.spansNamed(`SELECT ${dbOf(pair.primary)}`)
      const [warmup, failed, ...more] = reads.filter(
        (s) => s.attributes['ballast.sharding.role'] === 'replica',
      )
      expect(more).toEqual([])
      expect(warmup?.status.code).toBe(SpanStatusCode.UNSET)
      expect(failed?.status.code).toBe(SpanStatusCode.ERROR)
      expect(failed?.attributes).toMatchObject({
        'error.type': 'E_SHARD_UNAVAILABLE',
        'ballast.sharding.gtid_wait.outcome': 'failed',
      })
      expect(childrenOf(failed!)).toEqual([])
      const served = reads.find((s) => s.attributes['ballast.sharding.role'] === 'primary')
      expect(served?.attributes['ballast.sharding.fallback.reason']).toBe('replica-error')
      expect(
        await otel.value('ballast.sharding.fell_back_to_primary', {
          'ballast.sharding.fallback.reason': 'replica-error',
        }),
      ).toBe(1)
      expect(router.stats()).toMatchObject({
        gtidWaits: 1,
        gtidWaitsFailed: 1,
        gtidWaitsCaughtUp: 0,
      })
    })

    it('shows a refused primary as failed spans and errors, then its open breaker', async () => {
      const pair = topo.pair[0]!
      const { proxy, url } = await proxyFor(pair.primary)
      const router = make({
        shards: [{ id: 'pair', primary: url }],
        connectTimeout: 500,
        primaryBreaker: { volumeThreshold: 2, errorThresholdPercentage: 50, resetTimeout: 60_000 },
      })
      proxy.refuse()
      for (let i = 0; i < 4; i++) {
        await expect(router.query('k', 'SELECT 1 AS one')).rejects.toMatchObject({
          code: 'E_SHARD_UNAVAILABLE',
        })
      }
      const spans = otel.spansNamed(`SELECT ${dbOf(pair.primary)}`)
      expect(spans).toHaveLength(4)
      for (const span of spans) {
        expect(span.status.code).toBe(SpanStatusCode.ERROR)
        expect(span.attributes['error.type']).toBe('E_SHARD_UNAVAILABLE')
      }
      // The last ones never reached the server: the breaker refused them.
      expect(spans.at(-1)?.status.message).toMatch(/circuit breaker is open/)
      expect(
        await otel.value('db.client.operation.duration', {
          'ballast.sharding.role': 'primary',
          'error.type': 'E_SHARD_UNAVAILABLE',
        }),
      ).toBe(4)
      expect(
        await otel.value('ballast.sharding.failed', { 'ballast.sharding.shard': 'pair' }),
      ).toBeGreaterThanOrEqual(2)
      // The primary's breaker reports its state where the router's metrics go.
      const breaker = (state: string) =>
        otel.value('ballast.resilience.breaker.state', {
          'ballast.resilience.breaker.name': 'pair/primary',
          'ballast.resilience.state': state,
        })
      expect(await breaker('open')).toBe(1)
      expect(await breaker('closed')).toBe(0)
    })
  })

  describe('transactions', () => {
    it('makes an INTERNAL span parent of its statements, committed or rolled back', async () => {
      const pair = topo.pair[0]!
      const router = make({ shards: [{ id: 'pair', primary: pair.primary }] })
      const id = nextId++
      await router.transaction('k', async (tx) => {
        await tx.query(INSERT, [id, 'k', '1.00', null, 1])
        await tx.query('SELECT id FROM orders WHERE id = ?', [id])
      })
      await expect(
        router.transaction('k', async (tx) => {
          await tx.query(INSERT, [nextId++, 'k', '1.00', null, 1])
          throw new Error('the application changed its mind about order 31337')
        }),
      ).rejects.toThrow(/changed its mind/)

      const [committed, rolledBack] = otel.spansNamed('ballast.sharding.transaction')
      expect(committed?.kind).toBe(SpanKind.INTERNAL)
      expect(committed?.attributes).toEqual({
        'ballast.sharding.shard': 'pair',
        'ballast.sharding.role': 'primary',
        'ballast.sharding.transaction.outcome': 'committed',
      })
      expect(childrenOf(committed!).map((s) => s.name)).toEqual([
        `START TRANSACTION ${dbOf(pair.primary)}`,
        `INSERT ${dbOf(pair.primary)}`,
        `SELECT ${dbOf(pair.primary)}`,
        `COMMIT ${dbOf(pair.primary)}`,
      ])
      expect(rolledBack?.attributes).toMatchObject({
        'ballast.sharding.transaction.outcome': 'rolled_back',
        'error.type': 'Error',
      })
      expect(rolledBack?.status.code).toBe(SpanStatusCode.ERROR)
      expect(rolledBack?.status.message).toBeUndefined() // the application's message stays out
      expect(childrenOf(rolledBack!).map((s) => s.attributes['db.operation.name'])).toEqual([
        'START TRANSACTION',
        'INSERT',
        'ROLLBACK',
      ])
      const outcome = (o: string) => ({ 'ballast.sharding.transaction.outcome': o })
      expect(await otel.value('ballast.sharding.transactions', outcome('committed'))).toBe(1)
      expect(await otel.value('ballast.sharding.transactions', outcome('rolled_back'))).toBe(1)
    })
  })

  describe('options and lifecycle', () => {
    it('refuses a meterProvider or tracerProvider that is not one', () => {
      const shards = [{ id: 'a', primary: 'mysql://root@127.0.0.1:1/x' }]
      for (const bad of [{ meterProvider: {} }, { tracerProvider: 'x' }, { meterProvider: null }]) {
        expect(() =>
          createShardRouter({ shards, ...(bad as object) } as ShardRouterOptions),
        ).toThrow(InvalidArgumentError)
      }
    })

    it('stops reporting its observed instruments on close()', async () => {
      const router = make({ shards: [{ id: 'pair', primary: topo.pair[0]!.primary }] })
      await router.query('k', 'SELECT 1 AS one')
      expect(router.stats().shards.pair?.primaryQueries).toBe(1)
      // Not collected before: a cumulative SDK keeps reporting a point it has seen once.
      await router.close()
      expect(await otel.points('ballast.sharding.queries')).toEqual([])
      expect(await otel.points('ballast.sharding.gtid_waits')).toEqual([])
      expect(await otel.points('ballast.resilience.breaker.state')).toEqual([]) // its primary's breaker
    })
  })
})

function durationMs(span: ReadableSpan): number {
  return span.duration[0] * 1000 + span.duration[1] / 1e6
}
