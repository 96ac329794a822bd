import { createFaultProxy, type FaultProxy, redisClusterNodes, redisUrl } from '@ballast/testkit'
import { Cluster, Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createSessionStore, type SessionStore } from '../src/index.js'
import { Signer } from '../src/internal/signer.js'
import { type App, type AppHooks, FRAMEWORKS, startApp } from './apps.js'
import { connect, cookieOf, OLD_SECRET, SECRET, sleep, storeOn, TOPOLOGIES } from './fixtures.js'

interface Body {
  isNew?: boolean
  userId?: string
  data?: Record<string, unknown>
  ok?: boolean
  token?: string
  ticket?: string
  code?: string
}

async function call(app: App, path: string, cookie?: string, headers: Record<string, string> = {}) {
  const response = await fetch(app.url + path, {
    method: path.startsWith('/get') ? 'GET' : 'POST',
    headers: cookie === undefined ? headers : { ...headers, cookie },
  })
  return { response, body: (await response.json()) as Body, cookie: cookieOf(response) }
}

describe.each(TOPOLOGIES)('middleware on Redis %s', (topology) => {
  let client: Redis | Cluster
  beforeAll(async () => {
    client = await connect(topology)
  })
  afterAll(async () => {
    await client.quit()
  })

  describe.each(FRAMEWORKS)('%s', (framework) => {
    const cleanups: (() => Promise<void>)[] = []
    afterEach(async () => {
      for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
    })

    async function setup(options: Parameters<typeof storeOn>[1] = {}, hooks: AppHooks = {}) {
      const made = await storeOn(client, options)
      cleanups.push(made.dispose)
      const app = await startApp(framework, made.store, { hooks })
      cleanups.push(() => app.close())
      return { ...made, app }
    }

    it('costs nothing for a visitor who stores nothing: no cookie, no Redis call', async () => {
      const { store, app } = await setup()
      const { body, cookie } = await call(app, '/get')
      expect(body.isNew).toBe(true)
      expect(cookie).toBeUndefined()
      expect(store.stats().redisCalls).toBe(0)
    })

    it('sets a hardened cookie on first write; an unchanged request costs one round trip and no cookie', async () => {
      const { store, app } = await setup()
      const first = await call(app, '/set?field=lang&value=fr')
      const header = first.response.headers.getSetCookie()[0]!
      expect(header).toMatch(
        /^__Host-sid=[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; Secure; SameSite=Lax$/,
      )
      expect(first.response.headers.get('cache-control')).toBe('no-store')
      const before = store.stats().redisCalls
      const second = await call(app, '/get', first.cookie)
      expect(second.body).toMatchObject({ isNew: false, data: { lang: 'fr' } })
      expect(second.cookie).toBeUndefined()
      expect(store.stats().redisCalls - before).toBe(1)
      const changed = store.stats().redisCalls
      await call(app, '/set?field=lang&value=de', first.cookie)
      expect(store.stats().redisCalls - changed).toBe(2)
    })

    it('gives every forged cookie a fresh session without a Redis call', async () => {
      const { store, app } = await setup()
      const real = (await call(app, '/set?field=secret&value=s3')).cookie!
      const [name, value] = real.split('=') as [string, string]
      const id = value.slice(0, 43)
      const sig = value.slice(44)
      const flip = (s: string, i: number) =>
        s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1)
      const forged = [
        `${flip(id, 5)}.${sig}`, // tampered id
        `${id}.${flip(sig, 7)}`, // tampered signature
        `${id}.${sig.slice(0, -1)}${sig.endsWith('A') ? 'B' : 'A'}`, // last character
        value.slice(0, 60), // truncated
        id, // no signature
        new Signer([OLD_SECRET]).sign(id), // a secret that was never (or no longer) ours
        'x'.repeat(4000), // huge
        '../../etc/passwd',
        `${id}.${sig}.${sig}`,
        '',
      ]
      const before = store.stats().redisCalls
      for (const candidate of forged) {
        const { body } = await call(app, '/get', `${name}=${candidate}`)
        expect(body.isNew).toBe(true)
        expect(body.data).toEqual({})
      }
      expect(store.stats().redisCalls).toBe(before)
      expect(store.stats().suspicionsRaised).toBeGreaterThanOrEqual(forged.length - 1)
    })

    it('makes a session fixed before login useless after it', async () => {
      const { app } = await setup()
      const planted = (await call(app, '/set?field=x&value=1')).cookie! // the attacker's
      const login = await call(app, '/login?user=alice', planted) // the victim logs in with it
      expect(login.body.userId).toBe('alice')
      expect(login.cookie).toBeDefined()
      expect(login.cookie).not.toBe(planted)
      const attacker = await call(app, '/get', planted)
      expect(attacker.body).toMatchObject({ isNew: true, data: {} })
      expect(attacker.body.userId).toBeUndefined()
      const victim = await call(app, '/get', login.cookie)
      expect(victim.body).toMatchObject({ userId: 'alice', data: { x: '1' } })
    })

    it('keeps a session dead when logout happens while another request is in flight', async () => {
      const { store, app, prefix } = await setup()
      const cookie = (await call(app, '/login?user=bob')).cookie!
      const slow = call(app, '/slow-set?field=cart&value=full&delay=300', cookie)
      await sleep(80)
      const logout = await call(app, '/logout', cookie)
      expect(logout.response.headers.getSetCookie()[0]).toContain('Max-Age=0')
      await slow
      expect((await call(app, '/get', cookie)).body.isNew).toBe(true)
      expect(await client.keys(`${prefix}*`)).toEqual([])
      expect(store.stats().savesRefused).toBe(1)
    })

    it('keeps every change when concurrent requests change different fields', async () => {
      const { app } = await setup()
      const cookie = (await call(app, '/set?field=base&value=0')).cookie!
      await Promise.all(
        Array.from({ length: 20 }, (_, i) => call(app, `/set?field=f${i}&value=${i}`, cookie)),
      )
      const { body } = await call(app, '/get', cookie)
      for (let i = 0; i < 20; i++) expect(body.data?.[`f${i}`]).toBe(String(i))
    })

    it('ends sessions at the idle timeout and says so with an expired event', async () => {
      const { store, app } = await setup({ idleTimeout: 300, absoluteTimeout: 10_000 })
      const expired: string[] = []
      store.on('expired', (e) => expired.push(e.idHash))
      const cookie = (await call(app, '/set?field=a&value=1')).cookie!
      await sleep(200)
      expect((await call(app, '/get', cookie)).body.isNew).toBe(false) // slid
      await sleep(200)
      expect((await call(app, '/get', cookie)).body.isNew).toBe(false) // 400 ms in: slid again
      await sleep(450)
      expect((await call(app, '/get', cookie)).body.isNew).toBe(true)
      expect(expired).toHaveLength(1)
      expect(cookie).not.toContain(expired[0]!)
    })

    it('checks CSRF tokens against the one stored in the session', async () => {
      const { app } = await setup()
      const first = await call(app, '/csrf')
      const token = first.body.token!
      const ok = await call(app, '/csrf-check', first.cookie, { 'x-csrf-token': token })
      expect(ok.response.status).toBe(200)
      const bad = await call(app, '/csrf-check', first.cookie, { 'x-csrf-token': `${token}x` })
      expect(bad.response.status).toBe(403)
      const none = await call(app, '/csrf-check', first.cookie)
      expect(none.response.status).toBe(403)
    })

    it('logs a user out everywhere', async () => {
      const { app } = await setup()
      const laptop = (await call(app, '/login?user=carol')).cookie!
      const phone = (await call(app, '/login?user=carol')).cookie!
      await call(app, '/logout?everywhere=1', phone)
      expect((await call(app, '/get', laptop)).body.isNew).toBe(true)
      expect((await call(app, '/get', phone)).body.isNew).toBe(true)
    })
  })

  describe('single sign-on', () => {
    const cleanups: (() => Promise<void>)[] = []
    afterEach(async () => {
      for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
    })

    it('shares one login across subdomains and instances through a parent-domain cookie', async () => {
      const cart = await storeOn(client, { cookie: { domain: 'shop.example' } })
      cleanups.push(cart.dispose)
      // Another subsystem (and instance) built from the same configuration.
      const payment = createSessionStore({
        redis: client,
        secrets: [SECRET],
        prefix: cart.prefix,
        cookie: { domain: 'shop.example' },
      })
      const cartApp = await startApp('express', cart.store)
      const payApp = await startApp('fastify', payment)
      cleanups.push(
        () => cartApp.close(),
        () => payApp.close(),
        () => payment.close(),
      )
      const login = await call(cartApp, '/login?user=dana')
      expect(login.response.headers.getSetCookie()[0]).toMatch(
        /^__Secure-sid=.*; Domain=shop\.example; HttpOnly; Secure; SameSite=Lax$/,
      )
      expect((await call(payApp, '/get', login.cookie)).body.userId).toBe('dana')
      await call(payApp, '/logout', login.cookie)
      expect((await call(cartApp, '/get', login.cookie)).body.isNew).toBe(true)
    })

    it('carries a login to another domain with a one-time ticket, and logout ends both', async () => {
      const made = await storeOn(client, { ticketOrigins: ['https://pay.example'] })
      cleanups.push(made.dispose)
      const shop = await startApp('express', made.store, { origin: 'https://shop.example' })
      const pay = await startApp('http', made.store, { origin: 'https://pay.example' })
      cleanups.push(
        () => shop.close(),
        () => pay.close(),
      )
      const home = (await call(shop, '/login?user=erin')).cookie!
      const { ticket } = (await call(shop, '/ticket?to=https://pay.example', home)).body
      const redeemed = await call(pay, `/redeem?ticket=${ticket}`)
      expect(redeemed.body.ok).toBe(true)
      const away = redeemed.cookie!
      expect(away).not.toBe(home)
      expect((await call(pay, '/get', away)).body.userId).toBe('erin')
      expect((await call(pay, `/redeem?ticket=${ticket}`)).body.ok).toBe(false) // used
      expect((await call(shop, `/redeem?ticket=${ticket}`)).body.ok).toBe(false)
      await call(shop, '/logout?everywhere=1', home)
      expect((await call(pay, '/get', away)).body.isNew).toBe(true)
    })
  })
})

describe('forged cookies in bulk', () => {
  it('accepts none of 10,000 and calls Redis for none of the malformed ones', async () => {
    const client = await connect('standalone')
    const made = await storeOn(client)
    try {
      const { store } = made
      const real = await store.create({ data: { secret: 1 } })
      const signer = new Signer([OLD_SECRET])
      const name = store.cookieName
      const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
      const rnd = (n: number) =>
        Array.from({ length: n }, () => alphabet[Math.floor(Math.random() * 64)]).join('')
      let wellFormedForgeries = 0
      for (let i = 0; i < 10_000; i++) {
        let value: string
        switch (i % 6) {
          case 0: // tampered id, original signature
            value = rnd(43) + real.token.slice(43)
            break
          case 1: // tampered signature
            value = `${real.id}.${rnd(43)}`
            break
          case 2: // truncated
            value = real.token.slice(0, Math.floor(Math.random() * 86))
            break
          case 3: // a rotated-out secret: well formed, wrong key
            value = signer.sign(real.id)
            wellFormedForgeries++
            break
          case 4: // wrong shape
            value = `${rnd(20)}!${rnd(20)}`
            break
          default: // huge
            value = rnd(8000)
        }
        const session = await store.loadRequest({ cookie: `${name}=${value}` })
        expect(session.isNew).toBe(true)
        expect(session.data).toEqual({})
      }
      expect(wellFormedForgeries).toBeGreaterThan(1000)
      expect(store.stats().loads).toBe(0)
      expect(store.stats().redisCalls).toBe(1) // the create above, nothing after
      expect(store.stats().suspicionsRaised).toBe(10_000)
    } finally {
      await made.dispose()
      await client.quit()
    }
  })
})

describe.each(TOPOLOGIES)('Redis %s outage through the fault proxy', (topology) => {
  // Every node sits behind its own proxy; on Cluster, natMap sends the client to the proxies
  // for the addresses CLUSTER SLOTS announces, so nothing reaches Redis around them.
  let proxies: FaultProxy[] = []
  let client: Redis | Cluster
  let store: SessionStore
  const cleanups: (() => Promise<void>)[] = []
  const each = (fn: (proxy: FaultProxy) => void) => {
    for (const proxy of proxies) fn(proxy)
  }

  beforeAll(async () => {
    if (topology === 'standalone') {
      const url = new URL(await redisUrl())
      proxies = [await createFaultProxy({ host: url.hostname, port: Number(url.port || 6379) })]
      client = new Redis({
        host: proxies[0]!.host,
        port: proxies[0]!.port,
        retryStrategy: () => 50,
        maxRetriesPerRequest: 1,
      })
    } else {
      const nodes = await redisClusterNodes()
      proxies = await Promise.all(nodes.map((node) => createFaultProxy(node)))
      const natMap: Record<string, { host: string; port: number }> = {}
      nodes.forEach((node, i) => {
        natMap[`${node.host}:${node.port}`] = { host: proxies[i]!.host, port: proxies[i]!.port }
      })
      client = new Cluster(
        proxies.map((p) => ({ host: p.host, port: p.port })),
        {
          natMap,
          clusterRetryStrategy: () => 50,
          redisOptions: { maxRetriesPerRequest: 1 },
        },
      )
    }
    client.on('error', () => {}) // reconnect noise while the proxies refuse
    const made = await storeOn(client, { timeout: 300 })
    store = made.store
    cleanups.push(made.dispose)
  })
  afterEach(() => each((p) => p.restore()))
  afterAll(async () => {
    each((p) => p.restore())
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
    client.disconnect()
    await Promise.all(proxies.map((p) => p.close()))
  })

  async function recovered(app: App, cookie: string) {
    const deadline = Date.now() + 15_000
    for (;;) {
      const { response, body } = await call(app, '/get', cookie)
      if (response.status === 200) return body
      if (Date.now() > deadline) throw new Error('did not recover within 15 s')
      await sleep(100)
    }
  }

  describe.each(FRAMEWORKS)('%s', (framework) => {
    it('answers 503 with a clear body while Redis is cut, stays up, and recovers', async () => {
      const app = await startApp(framework, store)
      try {
        const cookie = (await call(app, '/set?field=a&value=1')).cookie!
        each((p) => {
          p.cut()
          p.refuse()
        })
        const started = Date.now()
        const down = await call(app, '/get', cookie)
        expect(down.response.status).toBe(503)
        expect(down.response.headers.get('retry-after')).toBe('1')
        expect(down.body.code).toBe('E_SESSION_UNAVAILABLE')
        expect(Date.now() - started).toBeLessThan(3000)
        each((p) => p.blackhole())
        const hung = await call(app, '/get', cookie)
        expect(hung.response.status).toBe(503)
        each((p) => p.restore())
        const body = await recovered(app, cookie)
        expect(body).toMatchObject({ isNew: false, data: { a: '1' } })
      } finally {
        await app.close()
      }
    })

    it('answers 503 when the write at the end of the request fails, and sets no cookie', async () => {
      const app = await startApp(framework, store, {
        hooks: { duringSlow: () => each((p) => p.blackhole()) },
      })
      try {
        const cookie = (await call(app, '/set?field=a&value=1')).cookie!
        const failed = await call(app, '/slow-set?field=a&value=2&delay=10', cookie)
        expect(failed.response.status).toBe(503)
        expect(failed.cookie).toBeUndefined()
        each((p) => p.restore())
        // The session survives. The timed-out write may still land: ioredis resends unanswered
        // commands after reconnecting (documented in the README).
        const body = await recovered(app, cookie)
        expect(body.isNew).toBe(false)
        expect(['1', '2']).toContain(body.data?.a)
      } finally {
        await app.close()
      }
    })
  })
})
