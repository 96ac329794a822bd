import type { Cluster, Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { isSessionError, type SessionStore } from '../src/index.js'
import { LuaScript } from '../src/internal/scripts.js'
import { connect, OLD_SECRET, SECRET, sleep, storeOn, TOPOLOGIES } from './fixtures.js'

describe.each(TOPOLOGIES)('SessionStore on Redis %s', (topology) => {
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

  describe('create and load', () => {
    it('stores data under a 256-bit id and reads it back in one round trip', async () => {
      const { store } = await make()
      const created = await store.create({ data: { cart: ['sku-1'] } })
      expect(created.id).toMatch(/^[A-Za-z0-9_-]{43}$/)
      const before = store.stats().redisCalls
      const loaded = await store.load(created.id)
      expect(store.stats().redisCalls - before).toBe(1)
      expect(loaded?.data).toEqual({ cart: ['sku-1'] })
    })

    it('answers undefined for an unknown id and makes no call for a malformed one', async () => {
      const { store } = await make()
      expect(await store.load('A'.repeat(43))).toBeUndefined()
      const before = store.stats().redisCalls
      expect(await store.load('not-an-id')).toBeUndefined()
      expect(await store.load('x'.repeat(100_000))).toBeUndefined()
      expect(store.stats().redisCalls).toBe(before)
    })

    it('sets the Redis expiry to the idle deadline, never past the absolute one', async () => {
      const { store, prefix } = await make({ idleTimeout: 60_000, absoluteTimeout: 90_000 })
      const { id } = await store.create({ data: { a: 1 } })
      const pttl = await client.pttl(`${prefix}{${id}}`)
      expect(pttl).toBeGreaterThan(55_000)
      expect(pttl).toBeLessThanOrEqual(60_000)
    })
  })

  describe('concurrent calls', () => {
    it('gives each of many loads started together its own session', async () => {
      const { store } = await make()
      const made = await Promise.all(
        Array.from({ length: 20 }, (_, i) => store.create({ data: { n: i } })),
      )
      const ids = made.map((m, i) => (i % 5 === 4 ? 'B'.repeat(43) : m.id))
      const loaded = await Promise.all(ids.map((id) => store.load(id)))
      loaded.forEach((record, i) => {
        if (i % 5 === 4) expect(record).toBeUndefined()
        else expect(record?.data).toEqual({ n: i })
      })
    })

    it("sends the commands of one event-loop turn in one socket write, the app's own included, and uncorks after", async () => {
      const { store } = await make()
      const made = await Promise.all(
        Array.from({ length: 10 }, (_, i) => store.create({ data: { n: i } })),
      )
      if (topology === 'cluster') {
        // a Cluster's commands go to many sockets: left alone
        const loaded = await Promise.all(made.map((m) => store.load(m.id)))
        expect(loaded.map((r) => r?.data)).toEqual(made.map((_, i) => ({ n: i })))
        return
      }
      const stream = (client as Redis).stream
      let writes = 0
      const countWrites = (name: '_write' | '_writev') => {
        const original = stream[name] as (...args: unknown[]) => void
        stream[name] = function (this: unknown, ...args: unknown[]) {
          writes++
          return original.apply(this, args)
        } as never
        return () => {
          stream[name] = original as never
        }
      }
      const restore = [countWrites('_write'), countWrites('_writev')]
      try {
        const loads = made.map((m) => store.load(m.id))
        const own = (client as Redis).echo('the app, same turn')
        expect(stream.writableCorked).toBe(1)
        const [loaded, echoed] = await Promise.all([Promise.all(loads), own])
        expect(loaded.map((r) => r?.data)).toEqual(made.map((_, i) => ({ n: i })))
        expect(echoed).toBe('the app, same turn')
        expect(writes).toBe(1)
        expect(stream.writableCorked).toBe(0)
      } finally {
        for (const r of restore) r()
      }
    })

    it('falls back to EVAL for each call of a script Redis has not seen (NOSCRIPT)', async () => {
      const script = new LuaScript(
        'echo',
        `-- ${Date.now()}-${Math.random()}\nreturn redis.call('ECHO', ARGV[1])`,
        1,
      )
      const replies = await Promise.all(
        Array.from({ length: 6 }, (_, i) =>
          script.run(client, [`session-test-noscript-${i}`], [`hello-${i}`]),
        ),
      )
      expect(replies).toEqual(Array.from({ length: 6 }, (_, i) => `hello-${i}`))
    })
  })

  describe('expiry', () => {
    it('ends a session after the idle timeout, and each read slides it', async () => {
      const { store } = await make({ idleTimeout: 400, absoluteTimeout: 60_000 })
      const { id } = await store.create({ data: { a: 1 } })
      for (let i = 0; i < 4; i++) {
        await sleep(200)
        expect(await store.load(id)).toBeDefined() // 800 ms in total, alive thanks to sliding
      }
      await sleep(600)
      expect(await store.load(id)).toBeUndefined()
    })

    it('ends a session at the absolute timeout even while it is in use', async () => {
      const { store } = await make({ idleTimeout: 400, absoluteTimeout: 900 })
      const { id } = await store.create({ data: { a: 1 } })
      const started = Date.now()
      while (Date.now() - started < 700) {
        expect(await store.load(id)).toBeDefined()
        await sleep(150)
      }
      await sleep(400)
      expect(await store.load(id)).toBeUndefined()
    })
  })

  describe('save', () => {
    it('writes only changed fields: concurrent changes to different fields both survive', async () => {
      const { store } = await make()
      const { id } = await store.create({ data: { a: 0, b: 0, keep: 'x' } })
      await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          store.save(id, { set: i % 2 === 0 ? { a: i } : { b: i } }),
        ),
      )
      const after = await store.load(id)
      expect(after?.data.keep).toBe('x')
      expect(after?.data.a).toBe(48)
      expect(after?.data.b).toBe(49)
    })

    it('never brings back a destroyed session', async () => {
      const { store, prefix } = await make()
      const { id } = await store.create({ data: { a: 1 } })
      await store.destroy(id)
      expect(await store.save(id, { set: { a: 2 } })).toBe(false)
      expect(await client.exists(`${prefix}{${id}}`)).toBe(0)
      expect(store.stats().savesRefused).toBe(1)
    })

    it('removes unset fields', async () => {
      const { store } = await make()
      const { id } = await store.create({ data: { a: 1, b: 2 } })
      await store.save(id, { unset: ['a'] })
      expect((await store.load(id))?.data).toEqual({ b: 2 })
    })
  })

  describe('regenerate', () => {
    it('issues a new id with the same data and kills the old id at once', async () => {
      const { store } = await make()
      const old = await store.create({ data: { cart: [1] } })
      const fresh = await store.regenerate(old.id, { userId: 'u1' })
      expect(fresh.id).not.toBe(old.id)
      expect(fresh.data).toEqual({ cart: [1] })
      expect(fresh.userId).toBe('u1')
      expect(await store.load(old.id)).toBeUndefined()
      expect(await store.save(old.id, { set: { x: 1 } })).toBe(false)
    })

    it('keeps the absolute deadline unless it is a login', async () => {
      const { store } = await make()
      const anon = await store.create({ data: { a: 1 } })
      await sleep(20)
      const same = await store.regenerate(anon.id)
      expect(same.absoluteExpiresAt).toBe(anon.absoluteExpiresAt)
      await sleep(20)
      const login = await store.regenerate(same.id, { userId: 'u1' })
      expect(login.absoluteExpiresAt).toBeGreaterThan(anon.absoluteExpiresAt)
      await sleep(20)
      const privilege = await store.regenerate(login.id)
      expect(privilege.absoluteExpiresAt).toBe(login.absoluteExpiresAt)
      expect(privilege.userId).toBe('u1')
    })

    it('fails with E_SESSION_NOT_FOUND for an id that names no session', async () => {
      const { store } = await make()
      const error = await store.regenerate('A'.repeat(43)).catch((e: unknown) => e)
      expect(isSessionError(error) && error.code).toBe('E_SESSION_NOT_FOUND')
    })
  })

  describe('per-user index', () => {
    it('lists a user’s live sessions, prunes ended ones, and logs out everywhere', async () => {
      const { store } = await make()
      const a = await store.create({ userId: 'u1' })
      const b = await store.create({ userId: 'u1' })
      const other = await store.create({ userId: 'u2' })
      expect((await store.listForUser('u1')).map((s) => s.id)).toEqual([a.id, b.id])
      await store.destroy(a.id)
      expect((await store.listForUser('u1')).map((s) => s.id)).toEqual([b.id])
      const c = await store.create({ userId: 'u1' })
      expect(await store.destroyAllForUser('u1', { except: c.id })).toBe(1)
      expect(await store.load(b.id)).toBeUndefined()
      expect(await store.load(c.id)).toBeDefined()
      expect(await store.destroyAllForUser('u1')).toBe(1)
      expect(await store.listForUser('u1')).toEqual([])
      expect(await store.load(other.id)).toBeDefined()
    })

    it('caps concurrent sessions per user by evicting the oldest', async () => {
      const { store } = await make({ maxSessionsPerUser: 2 })
      const destroyed: string[] = []
      store.on('destroyed', (e) => destroyed.push(e.reason))
      const first = await store.create({ userId: 'u1' })
      const second = await store.create({ userId: 'u1' })
      const third = await store.create({ userId: 'u1' })
      expect(await store.load(first.id)).toBeUndefined()
      expect(await store.load(second.id)).toBeDefined()
      expect(await store.load(third.id)).toBeDefined()
      expect(destroyed).toEqual(['evicted'])
      expect((await store.listForUser('u1')).map((s) => s.id)).toEqual([second.id, third.id])
    })

    it('drops entries of idle-expired sessions without a sweeper', async () => {
      const { store } = await make({ idleTimeout: 200, absoluteTimeout: 60_000 })
      await store.create({ userId: 'u1' })
      await sleep(400)
      expect(await store.listForUser('u1')).toEqual([])
    })
  })

  describe('SSO tickets', () => {
    const origin = 'https://pay.example'

    async function loggedIn(store: SessionStore) {
      const anon = await store.create({ data: { lang: 'fr', cart: [1] } })
      return store.regenerate(anon.id, { userId: 'u7' })
    }

    it('opens a session of the same login at the bound origin, once', async () => {
      const { store } = await make({ ticketOrigins: [origin] })
      const home = await loggedIn(store)
      const ticket = await store.issueTicket(home.id, { targetOrigin: origin, carry: ['lang'] })
      const away = await store.redeemTicket(ticket, { origin })
      expect(away?.userId).toBe('u7')
      expect(away?.loginId).toBe(home.loginId)
      expect(away?.data).toEqual({ lang: 'fr' })
      expect(away?.id).not.toBe(home.id)
      expect(await store.redeemTicket(ticket, { origin })).toBeUndefined()
    })

    it('refuses a ticket at another origin, after its TTL, or after logout', async () => {
      const { store } = await make({ ticketOrigins: [origin], ticketTtl: 200 })
      const suspicious: string[] = []
      store.on('suspicion-raised', (e) => suspicious.push(e.reason))
      const home = await loggedIn(store)
      const t1 = await store.issueTicket(home.id, { targetOrigin: origin })
      expect(await store.redeemTicket(t1, { origin: 'https://evil.example' })).toBeUndefined()
      expect(await store.redeemTicket(t1, { origin })).toBeUndefined() // burnt by the attempt
      const t2 = await store.issueTicket(home.id, { targetOrigin: origin })
      await sleep(350)
      expect(await store.redeemTicket(t2, { origin })).toBeUndefined()
      const t3 = await store.issueTicket(home.id, { targetOrigin: origin })
      await store.destroy(home.id)
      expect(await store.redeemTicket(t3, { origin })).toBeUndefined()
      expect(suspicious).toEqual([
        'ticket-origin-mismatch',
        'ticket-unknown',
        'ticket-unknown',
        'ticket-login-ended',
      ])
      await expect(
        store.issueTicket(home.id, { targetOrigin: 'https://not-listed.example' }),
      ).rejects.toThrow('invalid argument "targetOrigin"')
    })

    it('ends linked sessions with destroy({ linked }) and with logout everywhere', async () => {
      const { store } = await make({ ticketOrigins: [origin] })
      const home = await loggedIn(store)
      const away = await store.redeemTicket(
        await store.issueTicket(home.id, { targetOrigin: origin }),
        { origin },
      )
      const otherDevice = await store.create({ userId: 'u7' })
      await store.destroy(home.id, { linked: true })
      expect(await store.load(away!.id)).toBeUndefined()
      expect(await store.load(otherDevice.id)).toBeDefined()
      const again = await loggedIn(store)
      const linked = await store.redeemTicket(
        await store.issueTicket(again.id, { targetOrigin: origin }),
        { origin },
      )
      expect(await store.destroyAllForUser('u7')).toBe(3)
      expect(await store.load(linked!.id)).toBeUndefined()
    })

    it('refuses to issue a ticket for a session without a user', async () => {
      const { store } = await make({ ticketOrigins: [origin] })
      const anon = await store.create({ data: { a: 1 } })
      const error = await store.issueTicket(anon.id, { targetOrigin: origin }).catch((e) => e)
      expect(error.code).toBe('E_SESSION_NOT_LOGGED_IN')
    })
  })

  describe('encryption at rest', () => {
    const key1 = Buffer.alloc(32, 7).toString('base64')
    const key2 = Buffer.alloc(32, 9).toString('hex')

    it('stores no plain data, and reads it back after a key rotation', async () => {
      const { store, prefix } = await make({ encryptionKeys: [key1] })
      const { id } = await store.create({ data: { card: '4111-1111' } })
      const raw = await client.hget(`${prefix}{${id}}`, 'd:card')
      expect(raw).not.toContain('4111')
      const sameKeys = await storeOn(client, { encryptionKeys: [key2, key1], prefix })
      disposers.push(async () => sameKeys.store.close())
      expect((await sameKeys.store.load(id))?.data).toEqual({ card: '4111-1111' })
      const keyGone = await storeOn(client, { encryptionKeys: [key2], prefix })
      disposers.push(async () => keyGone.store.close())
      // Without the key the field is unreadable: it is dropped, never returned garbled.
      expect((await keyGone.store.load(id))?.data).toEqual({})
    })
  })

  describe('secret rotation', () => {
    it('accepts cookies signed with a secret still in the list, refuses them once removed', async () => {
      const { store: before, prefix } = await make({ secrets: [OLD_SECRET] })
      const { token } = await before.create({ data: { a: 1 } })
      const during = await storeOn(client, { secrets: [SECRET, OLD_SECRET], prefix })
      const after = await storeOn(client, { secrets: [SECRET], prefix })
      disposers.push(async () => {
        await during.store.close()
        await after.store.close()
      })
      const cookie = `${during.store.cookieName}=${token}`
      expect((await during.store.loadRequest({ cookie })).isNew).toBe(false)
      const refused = await after.store.loadRequest({ cookie })
      expect(refused.isNew).toBe(true)
      expect(after.store.stats().suspicionsRaised).toBe(1)
    })
  })
})
