import { createFaultProxy, redisUrl } from '@ballast/testkit'
import { createTestTelemetry, type ReadableSpan, type TestTelemetry } from '@ballast/testkit/otel'
import { SpanKind, SpanStatusCode } from '@opentelemetry/api'
import { Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { isSessionError, type SessionStore } from '../src/index.js'
import { storeOn } from './fixtures.js'

let client: Redis
const disposers: (() => Promise<void>)[] = []
let otel: TestTelemetry

beforeAll(async () => {
  client = new Redis(await redisUrl(), { lazyConnect: true })
  await client.connect()
})
afterEach(async () => {
  for (const dispose of disposers.splice(0).reverse()) await dispose()
  await otel?.shutdown()
})
afterAll(async () => {
  await client.quit()
})

/** A store reporting to a fresh in-memory SDK (`otel`). */
async function make(options: Parameters<typeof storeOn>[1] = {}, on: Redis = client) {
  otel = createTestTelemetry()
  const made = await storeOn(on, {
    meterProvider: otel.meterProvider,
    tracerProvider: otel.tracerProvider,
    ...options,
  })
  disposers.push(made.dispose)
  return made.store
}

function cookieOf(store: SessionStore, token: string): string {
  return `${store.cookieName}=${token}`
}

/** Every attribute value of every span and metric point, as strings. */
async function everyAttributeValue(): Promise<string[]> {
  const values: string[] = []
  for (const span of otel.spans()) {
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

describe('SessionStore telemetry', () => {
  describe('metrics', () => {
    it('counts loads by outcome: found, expired, invalid', async () => {
      const store = await make()
      const live = await store.create({ data: { n: 1 } })
      const gone = await store.create({ data: { n: 2 } })
      await store.destroy(gone.id)

      await store.loadRequest({ cookie: cookieOf(store, live.token) })
      await store.loadRequest({ cookie: cookieOf(store, live.token) })
      await store.loadRequest({ cookie: cookieOf(store, gone.token) })
      await store.loadRequest({ cookie: cookieOf(store, 'forged') })
      await store.loadRequest({ cookie: cookieOf(store, `${live.token.slice(0, -2)}xx`) })
      await store.loadRequest({}) // no id: no lookup at all

      const where = (outcome: string) => ({ 'ballast.session.outcome': outcome })
      expect(await otel.value('ballast.session.loads', where('found'))).toBe(2)
      expect(await otel.value('ballast.session.loads', where('expired'))).toBe(1)
      expect(await otel.value('ballast.session.loads', where('invalid'))).toBe(2)
      expect(await otel.value('ballast.session.loads', where('failed'))).toBe(0)
      const metric = (await otel.collect()).find(
        (m) => m.descriptor.name === 'ballast.session.loads',
      )
      expect(metric?.descriptor.unit).toBe('{load}')
      expect(store.stats()).toMatchObject({ loads: 3, hits: 2, misses: 1, loadsFailed: 0 })
    })

    it('counts creates, regenerations and destroys by reason', async () => {
      const store = await make({ maxSessionsPerUser: 1 })
      const first = await store.create({ userId: 'u1' })
      await store.create({ userId: 'u1' }) // evicts the first
      const other = await store.create({ userId: 'u2' })
      const renewed = await store.regenerate(other.id)
      await store.destroy(renewed.id)
      await store.create({ userId: 'u3' })
      await store.destroyAllForUser('u3')

      expect(await otel.value('ballast.session.created')).toBe(5) // 4 creates + the regenerated id
      expect(await otel.value('ballast.session.regenerated')).toBe(1)
      const destroyed = async (reason: string) =>
        otel.value('ballast.session.destroyed', { 'ballast.session.reason': reason })
      expect(await destroyed('evicted')).toBe(1)
      expect(await destroyed('logout')).toBe(1)
      expect(await destroyed('logout-everywhere')).toBe(1)
      expect(await destroyed('linked')).toBe(0)
      expect(await destroyed('replaced')).toBe(0)
      expect(store.stats().destroyedByReason).toEqual({
        logout: 1,
        'logout-everywhere': 1,
        linked: 0,
        evicted: 1,
        replaced: 0,
      })
      expect(await store.load(first.id)).toBeUndefined()
    })

    it('counts suspicions by reason, the same as the suspicion-raised events', async () => {
      const store = await make({ ticketOrigins: ['https://b.example'] })
      const reasons: string[] = []
      store.on('suspicion-raised', ({ reason }) => reasons.push(reason))
      const live = await store.create({ userId: 'u1' })
      await store.loadRequest({ cookie: cookieOf(store, 'x') })
      await store.loadRequest({ cookie: cookieOf(store, `${live.token.slice(0, -2)}xx`) })
      await store.destroy(live.id)
      await store.loadRequest({ cookie: cookieOf(store, live.token) })
      await store.redeemTicket('not a ticket', { origin: 'https://b.example' })

      expect(reasons).toEqual(['malformed', 'bad-signature', 'unknown', 'ticket-malformed'])
      for (const reason of reasons) {
        expect(
          await otel.value('ballast.session.suspicions', { 'ballast.session.reason': reason }),
        ).toBe(1)
      }
      expect(
        await otel.value('ballast.session.suspicions', {
          'ballast.session.reason': 'ticket-unknown',
        }),
      ).toBe(0)
      expect(await otel.value('ballast.session.suspicions')).toBe(4)
      expect(
        await otel.value('ballast.session.tickets', { 'ballast.session.outcome': 'rejected' }),
      ).toBe(1)
      expect(store.stats().suspicionsByReason).toMatchObject({ malformed: 1, unknown: 1 })
    })

    it('counts saves by outcome: saved, refused, unchanged', async () => {
      const store = await make()
      const live = await store.create({ data: { n: 1 } })
      const session = await store.loadRequest({ cookie: cookieOf(store, live.token) })
      ;(session.data as { n: number }).n = 2
      await session.commit()
      const idle = await store.loadRequest({ cookie: cookieOf(store, live.token) })
      await idle.commit()
      await store.destroy(live.id)
      expect(await store.save(live.id, { set: { n: 3 } })).toBe(false)

      const where = (outcome: string) => ({ 'ballast.session.outcome': outcome })
      expect(await otel.value('ballast.session.saves', where('saved'))).toBe(1)
      expect(await otel.value('ballast.session.saves', where('refused'))).toBe(1)
      expect(await otel.value('ballast.session.saves', where('unchanged'))).toBe(1)
    })

    it('times every Redis round trip in db.client.operation.duration, in seconds', async () => {
      const store = await make()
      const live = await store.create({ data: { n: 1 } })
      await store.load(live.id)
      await store.load(live.id)
      await store.destroy(live.id)

      const points = await otel.points('db.client.operation.duration')
      const load = points.find((p) => p.attributes['db.query.summary'] === 'EVALSHA load')
      expect(load?.attributes).toEqual({
        'db.system.name': 'redis',
        'db.operation.name': 'EVALSHA',
        'db.query.summary': 'EVALSHA load',
        'server.address': client.options.host,
        'server.port': client.options.port,
      })
      expect(load?.value).toBe(2)
      expect(load?.sum).toBeGreaterThan(0)
      expect(load?.sum).toBeLessThan(1) // seconds, not milliseconds
      expect(
        await otel.value('db.client.operation.duration', { 'db.query.summary': 'EVALSHA create' }),
      ).toBe(1)
      expect(
        await otel.value('db.client.operation.duration', { 'db.query.summary': 'EVALSHA destroy' }),
      ).toBe(1)
      expect(await otel.value('db.client.operation.duration')).toBe(store.stats().redisCalls)
      const metric = (await otel.collect()).find(
        (m) => m.descriptor.name === 'db.client.operation.duration',
      )
      expect(metric?.descriptor.unit).toBe('s')
    })

    it('stops reporting counters once the store is closed', async () => {
      const store = await make()
      await store.create({ data: { n: 1 } })
      await store.close()
      expect(await otel.points('ballast.session.created')).toEqual([])
      expect(await otel.points('ballast.session.loads')).toEqual([])
    })
  })

  describe('spans', () => {
    it('traces a request load as an INTERNAL ballast.session.load with its Redis round trip as a CLIENT child', async () => {
      const store = await make()
      const live = await store.create({ data: { n: 1 } })
      otel.resetSpans()
      const tracer = otel.tracerProvider.getTracer('test')
      await tracer.startActiveSpan('GET /cart', async (request) => {
        await store.loadRequest({ cookie: cookieOf(store, live.token) })
        request.end()
      })

      const [root] = otel.spansNamed('GET /cart')
      const [load] = otel.spansNamed('ballast.session.load')
      const [redis] = otel.spansNamed('EVALSHA load')
      expect(load?.kind).toBe(SpanKind.INTERNAL)
      expect(load?.attributes).toEqual({ 'ballast.session.outcome': 'found' })
      expect(load?.parentSpanContext?.spanId).toBe(root?.spanContext().spanId)
      expect(redis?.kind).toBe(SpanKind.CLIENT)
      expect(redis?.attributes).toMatchObject({
        'db.system.name': 'redis',
        'db.operation.name': 'EVALSHA',
        'db.query.summary': 'EVALSHA load',
      })
      expect(redis?.parentSpanContext?.spanId).toBe(load?.spanContext().spanId)
      expect(redis?.spanContext().traceId).toBe(root?.spanContext().traceId)
    })

    it('gives a load of an ended session the outcome expired, and a refused id no span at all', async () => {
      const store = await make()
      const live = await store.create({})
      await store.destroy(live.id)
      otel.resetSpans()
      await store.loadRequest({ cookie: cookieOf(store, live.token) })
      await store.loadRequest({ cookie: cookieOf(store, 'forged') })
      const loads = otel.spansNamed('ballast.session.load')
      expect(loads.map((s) => s.attributes['ballast.session.outcome'])).toEqual(['expired'])
      expect(otel.spans()).toHaveLength(2) // the load and its one round trip
    })

    it('traces saves as ballast.session.save with the outcome created, saved or refused', async () => {
      const store = await make()
      const fresh = await store.loadRequest({})
      ;(fresh.data as { n: number }).n = 1
      await fresh.commit()
      const again = await store.loadRequest({ cookie: cookieOf(store, fresh.token) })
      ;(again.data as { n: number }).n = 2
      await again.commit()
      const unchanged = await store.loadRequest({ cookie: cookieOf(store, fresh.token) })
      await unchanged.commit() // no round trip, no span
      await store.destroy(fresh.id)
      await store.save(fresh.id, { set: { n: 3 } })

      const saves = otel.spansNamed('ballast.session.save')
      expect(saves.map((s) => s.attributes['ballast.session.outcome'])).toEqual([
        'created',
        'saved',
        'refused',
      ])
      for (const save of saves) expect(save.kind).toBe(SpanKind.INTERNAL)
      const children = (span: ReadableSpan) =>
        otel.spans().filter((s) => s.parentSpanContext?.spanId === span.spanContext().spanId)
      expect(children(saves[0]!).map((s) => s.name)).toEqual(['EVALSHA create'])
      expect(children(saves[1]!).map((s) => s.name)).toEqual(['EVALSHA save'])
    })

    it('names plain commands after the command (SET and GETDEL of SSO tickets)', async () => {
      const store = await make({ ticketOrigins: ['https://b.example'] })
      const live = await store.create({ userId: 'u1' })
      const ticket = await store.issueTicket(live.id, { targetOrigin: 'https://b.example' })
      await store.redeemTicket(ticket, { origin: 'https://b.example' })
      const set = otel.spansNamed('SET')[0]
      const getdel = otel.spansNamed('GETDEL')[0]
      expect(set?.attributes['db.operation.name']).toBe('SET')
      expect(getdel?.attributes['db.operation.name']).toBe('GETDEL')
      expect(getdel?.kind).toBe(SpanKind.CLIENT)
    })
  })

  describe('with Redis cut', () => {
    it('fails the load with SessionUnavailableError, error.type on both spans and on the latency histogram', async () => {
      const url = new URL(await redisUrl())
      const proxy = await createFaultProxy({ host: url.hostname, port: Number(url.port || 6379) })
      const cut = new Redis({
        host: proxy.host,
        port: proxy.port,
        retryStrategy: () => 50,
        maxRetriesPerRequest: 1,
      })
      cut.on('error', () => {}) // reconnect noise while the proxy refuses
      disposers.push(async () => {
        cut.disconnect()
        await proxy.close()
      })
      const store = await make({ timeout: 300 }, cut)
      const live = await store.create({ data: { n: 1 } })
      otel.resetSpans()
      proxy.cut()
      proxy.refuse()

      const failure = await store
        .loadRequest({ cookie: cookieOf(store, live.token) })
        .catch((error: unknown) => error)
      expect(isSessionError(failure) && failure.code).toBe('E_SESSION_UNAVAILABLE')

      const [load] = otel.spansNamed('ballast.session.load')
      const [redis] = otel.spansNamed('EVALSHA load')
      for (const span of [load, redis]) {
        expect(span?.status.code).toBe(SpanStatusCode.ERROR)
        expect(span?.attributes['error.type']).toBe('E_SESSION_UNAVAILABLE')
      }
      expect(load?.attributes['ballast.session.outcome']).toBeUndefined()
      expect(
        await otel.value('db.client.operation.duration', {
          'db.query.summary': 'EVALSHA load',
          'error.type': 'E_SESSION_UNAVAILABLE',
        }),
      ).toBe(1)
      expect(
        await otel.value('ballast.session.loads', { 'ballast.session.outcome': 'failed' }),
      ).toBe(1)
      expect(store.stats().loadsFailed).toBe(1)
      proxy.restore()
    })
  })

  describe('secrets', () => {
    it('puts no session id, cookie, token, user id or session data in any span or metric attribute', async () => {
      const store = await make({ ticketOrigins: ['https://b.example'] })
      const userId = 'user-7f3a9c-private'
      const data = { card: 'data-4111111111111111' }
      const created = await store.create({ userId, data })
      const cookie = cookieOf(store, created.token)
      const session = await store.loadRequest({ cookie })
      ;(session.data as { more: string }).more = 'data-more-private'
      await session.commit()
      await session.regenerate({ userId })
      const ticket = await store.issueTicket(session.id, { targetOrigin: 'https://b.example' })
      await store.redeemTicket(ticket, { origin: 'https://b.example' })
      await store.loadRequest({ cookie: `${cookie.slice(0, -2)}xx` })
      await store.destroyAllForUser(userId)

      const secrets = [
        created.id,
        created.token,
        session.id,
        session.token,
        cookie,
        encodeURIComponent(created.token),
        ticket,
        userId,
        data.card,
        'data-more-private',
      ]
      const values = await everyAttributeValue()
      expect(values.length).toBeGreaterThan(20)
      for (const value of values) {
        for (const secret of secrets) expect(value).not.toContain(secret)
      }
      expect(otel.spans().length).toBeGreaterThan(10)
    })
  })
})
