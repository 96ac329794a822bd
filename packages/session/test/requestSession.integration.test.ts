import type { Cluster, Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { connect, storeOn, TOPOLOGIES } from './fixtures.js'

describe.each(TOPOLOGIES)('RequestSession on Redis %s', (topology) => {
  let client: Redis | Cluster
  const disposers: (() => Promise<void>)[] = []
  beforeAll(async () => {
    client = await connect(topology)
  })
  afterEach(async () => {
    for (const dispose of disposers.splice(0)) await dispose()
  })
  afterAll(async () => {
    await client.quit()
  })
  async function make(options: Parameters<typeof storeOn>[1] = {}) {
    const made = await storeOn(client, options)
    disposers.push(made.dispose)
    return made
  }

  it('reads the id from a bearer header only when enabled, and the cookie wins', async () => {
    const { store } = await make({ bearer: true })
    const a = await store.create({ data: { who: 'a' } })
    const b = await store.create({ data: { who: 'b' } })
    const viaBearer = await store.loadRequest({ authorization: `Bearer ${a.token}` })
    expect(viaBearer.data).toEqual({ who: 'a' })
    const both = await store.loadRequest({
      authorization: `Bearer ${a.token}`,
      cookie: `${store.cookieName}=${b.token}`,
    })
    expect(both.data).toEqual({ who: 'b' })
    const { store: cookieOnly } = await make()
    const ignored = await cookieOnly.loadRequest({ authorization: `Bearer ${a.token}` })
    expect(ignored.isNew).toBe(true)
  })

  it('stores an untouched session only with saveUninitialized', async () => {
    const { store: lazy } = await make()
    const untouched = await lazy.loadRequest({})
    expect(await untouched.commit()).toBeUndefined()
    expect(lazy.stats().created).toBe(0)
    const { store: eager } = await make({ saveUninitialized: true })
    const stored = await eager.loadRequest({})
    expect(await stored.commit()).toMatch(/^__Host-sid=/)
    expect(eager.stats().created).toBe(1)
  })

  it('removes fields missing from a replaced data object', async () => {
    const { store } = await make()
    const { token } = await store.create({ data: { a: 1, b: 2 } })
    const cookie = `${store.cookieName}=${token}`
    const session = await store.loadRequest({ cookie })
    session.data = { b: 3 }
    await session.commit()
    expect((await store.loadRequest({ cookie })).data).toEqual({ b: 3 })
  })

  it('does not bring a session back when regenerate races a logout everywhere', async () => {
    const { store } = await make()
    const { token } = await store.create({ userId: 'u1', data: { role: 'user' } })
    const cookie = `${store.cookieName}=${token}`
    const inFlight = await store.loadRequest({ cookie })
    await store.destroyAllForUser('u1')
    inFlight.data.role = 'admin'
    await expect(inFlight.regenerate()).rejects.toMatchObject({ code: 'E_SESSION_NOT_FOUND' })
    expect(inFlight.isDestroyed).toBe(true)
    await inFlight.commit()
    expect(await store.listForUser('u1')).toEqual([])
  })

  it('a login on an expired session starts a fresh one with the current data', async () => {
    const { store } = await make()
    const { id, token } = await store.create({ data: { cart: [1] } })
    const session = await store.loadRequest({ cookie: `${store.cookieName}=${token}` })
    await store.destroy(id)
    await session.regenerate({ userId: 'u9' })
    expect(session.userId).toBe('u9')
    expect(session.data).toEqual({ cart: [1] })
    expect(session.setCookieHeader()).toContain(session.token)
  })

  it('sends Max-Age only for persistent cookies, bounded by the absolute timeout', async () => {
    const { store } = await make({ cookie: { persistent: true }, absoluteTimeout: '1h' })
    const session = await store.loadRequest({})
    session.data.a = 1
    const header = await session.commit()
    const maxAge = Number(/Max-Age=(\d+)/.exec(header ?? '')?.[1])
    expect(maxAge).toBeGreaterThan(3500)
    expect(maxAge).toBeLessThanOrEqual(3600)
  })

  it('lists sessions with when they were last used', async () => {
    const { store } = await make()
    const { token } = await store.create({ userId: 'u3' })
    const before = Date.now()
    await new Promise((resolve) => setTimeout(resolve, 50))
    await store.loadRequest({ cookie: `${store.cookieName}=${token}` })
    const [info] = await store.listForUser('u3')
    expect(info!.lastSeenAt).toBeGreaterThanOrEqual(before)
    expect(info!.idHash).toHaveLength(16)
  })
})
