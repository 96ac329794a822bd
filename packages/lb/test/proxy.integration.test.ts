import { once } from 'node:events'
import { request as httpRequest } from 'node:http'
import { type AddressInfo, createServer as createNetServer } from 'node:net'
import { gunzipSync } from 'node:zlib'
import { request } from 'undici'
import { afterEach, describe, expect, it } from 'vitest'
import {
  type CachedResponse,
  createBalancer,
  createProxy,
  InvalidArgumentError,
  type ProxyOptions,
  type RequestFailedEvent,
  type ReverseProxy,
} from '../src/index.js'
import { type Backend, bytesBody, startBackends } from './fixtures/backend.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

let cleanup: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const fn of cleanup.reverse()) await fn()
  cleanup = []
})

async function backends(...names: string[]): Promise<Backend[]> {
  const list = await startBackends(...names)
  cleanup.push(async () => {
    await Promise.all(list.map((b) => b.kill()))
  })
  return list
}

async function proxy(options: ProxyOptions): Promise<{ proxy: ReverseProxy; url: string }> {
  const p = createProxy(options)
  const address: AddressInfo = await p.listen(0, '127.0.0.1')
  cleanup.push(() => p.close())
  return { proxy: p, url: `http://127.0.0.1:${address.port}` }
}

async function get(
  url: string,
  init: { method?: string; headers?: Record<string, string>; body?: string | Buffer } = {},
) {
  const res = await request(url, {
    method: (init.method ?? 'GET') as 'GET',
    headers: init.headers ?? {},
    body: init.body ?? null,
  })
  const body = Buffer.from(await res.body.arrayBuffer())
  return { status: res.statusCode, headers: res.headers, body, text: body.toString() }
}

describe('createProxy', () => {
  describe('routing', () => {
    it('routes by host and path prefix, most specific first, and strips a prefix when asked', async () => {
      const [api, web, admin] = await backends('api', 'web', 'admin')
      const { url } = await proxy({
        routes: [
          { upstream: [web!.url] },
          { pathPrefix: '/api', stripPrefix: true, upstream: [api!.url] },
          { host: 'admin.shop.test', upstream: [admin!.url] },
        ],
      })
      const r1 = await get(`${url}/api/orders?id=1`)
      expect(JSON.parse(r1.text)).toMatchObject({ backend: 'api', url: '/orders?id=1' })
      expect(JSON.parse((await get(`${url}/apix`)).text)).toMatchObject({
        backend: 'web',
        url: '/apix',
      })
      const r3 = await get(`${url}/api/x`, { headers: { host: 'admin.shop.test:8080' } })
      expect(JSON.parse(r3.text)).toMatchObject({ backend: 'admin', url: '/api/x' })
    })

    it('answers 404 with a clear body when no route matches', async () => {
      const [a] = await backends('a')
      const { url } = await proxy({ routes: [{ host: 'only.test', upstream: [a!.url] }] })
      const res = await get(`${url}/x`)
      expect(res.status).toBe(404)
      expect(res.text).toMatch(/no route for host/)
    })
  })

  describe('headers', () => {
    it('adds X-Forwarded-*, keeps Host, and strips hop-by-hop headers both ways', async () => {
      const [a] = await backends('a')
      const { url } = await proxy({ routes: [{ upstream: [a!.url] }] })
      // undici would drop the Connection header itself, so send this one with node:http.
      const res = await new Promise<{ text: string; headers: Record<string, unknown> }>(
        (resolve, reject) => {
          const req = httpRequest(`${url}/h`, {
            headers: {
              connection: 'keep-alive, x-secret',
              'x-secret': '1',
              'x-keep': '2',
              te: 'trailers',
              'x-forwarded-for': '10.0.0.9',
            },
          })
          req.on('response', async (r) => {
            let text = ''
            for await (const chunk of r) text += chunk
            resolve({ text, headers: r.headers })
          })
          req.on('error', reject)
          req.end()
        },
      )
      const seen = JSON.parse(res.text).headers as Record<string, string>
      expect(seen['x-forwarded-for']).toBe('10.0.0.9, 127.0.0.1')
      expect(seen['x-forwarded-proto']).toBe('http')
      expect(seen['x-forwarded-host']).toBe(new URL(url).host)
      expect(seen.host).toBe(new URL(url).host)
      expect(seen['x-keep']).toBe('2')
      expect(seen['x-secret']).toBeUndefined()
      expect(seen.te).toBeUndefined()
      expect(res.headers['x-backend']).toBe('a')
    })
  })

  describe('streaming', () => {
    it('streams a large request body up and the response down', async () => {
      const [a] = await backends('a')
      const { url } = await proxy({ routes: [{ upstream: [a!.url] }] })
      const payload = Buffer.alloc(4 * 1024 * 1024, 7)
      const res = await get(`${url}/echo`, { method: 'POST', body: payload })
      expect(res.status).toBe(200)
      expect(res.body.equals(payload)).toBe(true)
    })

    it('relays bodies with a content-length byte for byte, small (head and body in one write) and large', async () => {
      const [a] = await backends('a')
      const { url } = await proxy({ routes: [{ upstream: [a!.url] }] })
      for (const n of [1, 512, 16_384, 16_385, 200_000]) {
        const res = await get(`${url}/bytes?n=${n}`)
        expect(res.status).toBe(200)
        expect(res.headers['content-length']).toBe(String(n))
        expect(res.body.equals(bytesBody(n))).toBe(true)
        const head = await get(`${url}/bytes?n=${n}`, { method: 'HEAD' })
        expect(head.headers['content-length']).toBe(String(n))
        expect(head.body.length).toBe(0)
      }
    })
  })

  describe('failures', () => {
    it('retries a GET on another endpoint when one refuses, and answers 503 at once when all are down', async () => {
      const [a, b] = await backends('a', 'b')
      const { url, proxy: p } = await proxy({
        routes: [{ upstream: [a!.url, b!.url] }],
        balancer: { strategy: 'round-robin' },
      })
      await a!.kill()
      for (let i = 0; i < 4; i++) expect(JSON.parse((await get(`${url}/x`)).text).backend).toBe('b')
      await b!.kill()
      const failed: RequestFailedEvent[] = []
      p.on('request-failed', (e) => failed.push(e))
      const res = await get(`${url}/x`)
      expect(res.status).toBe(503)
      expect(res.text).toMatch(/^503 Service Unavailable\nrequest id: /)
      expect(failed[0]!.reason).toMatch(
        /every endpoint was tried and the last refused the connection/,
      )
      expect(failed[0]!.route).toBe('*/')
      expect(p.stats().retries).toBeGreaterThan(0)
    })

    it('sends a POST with a body to another endpoint when the first refuses the connection', async () => {
      const [a, b] = await backends('a', 'b')
      const { url } = await proxy({
        routes: [{ upstream: [a!.url, b!.url] }],
        balancer: { strategy: 'round-robin' },
      })
      await a!.kill()
      for (let i = 0; i < 4; i++) {
        const res = await get(`${url}/echo`, { method: 'POST', body: `order ${i}` })
        expect(res.status).toBe(200)
        expect(res.text).toBe(`order ${i}`)
        expect(res.headers['x-backend']).toBe('b')
      }
    })

    it('answers 502 when an upstream sends a header node cannot relay', async () => {
      const raw = createNetServer((socket) => {
        socket.once('data', () => {
          socket.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-bad: a\u0001b\r\n\r\nok')
        })
      })
      await new Promise<void>((r) => raw.listen(0, '127.0.0.1', r))
      cleanup.push(() => new Promise((r) => raw.close(() => r())))
      const { url } = await proxy({
        routes: [{ upstream: [`http://127.0.0.1:${(raw.address() as AddressInfo).port}`] }],
      })
      const res = await get(`${url}/x`)
      expect(res.status).toBe(502)
      expect(res.text).toMatch(/502 Bad Gateway/)
    })

    it('does not hold clients that hang up against the endpoint', async () => {
      const [a] = await backends('a')
      const balancer = createBalancer({
        endpoints: [a!.url],
        outlierDetection: { consecutiveFailures: 2 },
      })
      const { url, proxy: p } = await proxy({ routes: [{ upstream: balancer }] })
      for (let i = 0; i < 4; i++) {
        const controller = new AbortController()
        const pending = request(`${url}/slow?ms=300`, { signal: controller.signal })
        await sleep(30)
        controller.abort()
        await expect(pending).rejects.toThrow()
      }
      await sleep(20)
      expect(balancer.get(a!.url)!.ejected).toBe(false)
      expect(balancer.stats().endpoints[0]!.failed).toBe(0)
      expect(p.stats().inFlight).toBe(0)
      await balancer.close()
    })

    it('answers 503 immediately when health checks have marked every endpoint down', async () => {
      const [a] = await backends('a')
      const balancer = createBalancer({ endpoints: [a!.url] })
      const { url, proxy: p } = await proxy({ routes: [{ name: 'api', upstream: balancer }] })
      const failed: RequestFailedEvent[] = []
      p.on('request-failed', (e) => failed.push(e))
      balancer.setHealthy(a!.url, false)
      const res = await get(`${url}/x`)
      expect(res.status).toBe(503)
      expect(res.text).toBe(`503 Service Unavailable\nrequest id: ${failed[0]!.requestId}\n`)
      expect(failed[0]).toMatchObject({ route: 'api', status: 503 })
      expect(failed[0]!.reason).toMatch(/no endpoint available/)
      expect(a!.hits).toBe(0)
    })

    it('answers 504 with a clear body when the upstream is too slow, and 502 when a POST is cut', async () => {
      const [a] = await backends('a')
      const { url, proxy: p } = await proxy({
        routes: [{ upstream: [a!.url] }],
        headersTimeout: 150,
      })
      const failed: RequestFailedEvent[] = []
      p.on('request-failed', (e) => failed.push(e))
      // The proxy's own 150 ms timer answers 504: undici's (1.15 s) would have let the
      // upstream answer 200 first, after 1 s.
      const slow = await get(`${url}/slow?ms=1000`)
      expect(slow.status).toBe(504)
      expect(slow.text).toMatch(/^504 Gateway Timeout\nrequest id: /)
      expect(failed[0]!.reason).toMatch(/no answer within 150 ms/)
      const pending = get(`${url}/slow?ms=100`, { method: 'POST', body: 'order' })
      await sleep(30)
      await a!.kill()
      const cut = await pending
      expect(cut.status).toBe(502)
      expect(cut.text).toMatch(/^502 Bad Gateway\nrequest id: /)
      expect(failed[1]).toMatchObject({ status: 502, endpoint: a!.url })
      expect(failed[1]!.reason).toMatch(/failed/)
    })

    it('keeps a load run whole when a backend is killed: GETs all succeed, only in-flight POSTs get 502, it comes back slow-started', async () => {
      const [a, b] = await backends('a', 'b')
      const balancer = createBalancer({
        strategy: 'weighted-round-robin',
        endpoints: [a!.url, b!.url],
        outlierDetection: { consecutiveFailures: 3, baseEjectionTime: 300 },
        slowStart: { window: 2000 },
      })
      const { url } = await proxy({
        routes: [{ upstream: balancer }],
        maxAttempts: 2,
        retryBudget: { minPerSecond: 1000 },
        // A lost POST answered on the headers timeout rather than on the reset would be a 504,
        // an hour later: the slow path cannot pass unnoticed.
        headersTimeout: '1h',
      })
      const ejected: string[] = []
      const restored: string[] = []
      balancer.on('ejected', (e) => ejected.push(e.endpoint.id))
      balancer.on('restored', (e) => restored.push(e.endpoint.id))
      let stop = false
      let lost = 0
      const statuses = { get: new Map<number, number>(), post: new Map<number, number>() }
      const worker = async (w: number) => {
        for (let i = 0; !stop; i++) {
          const post = (i + w) % 3 === 0
          const res = await get(`${url}/slow?ms=15`, post ? { method: 'POST', body: 'x' } : {})
          const m = post ? statuses.post : statuses.get
          m.set(res.status, (m.get(res.status) ?? 0) + 1)
          if (res.status === 502) lost++
          if (res.status === 502) expect(res.text).toMatch(/^502 Bad Gateway\nrequest id: /)
        }
      }
      const workers = Array.from({ length: 6 }, (_, w) => worker(w))
      await sleep(300)
      await b!.kill()
      await sleep(200)
      expect(ejected).toEqual([b!.url])
      await b!.start()
      // The ejection (300 ms) expires; b returns and ramps up.
      await sleep(300)
      expect(restored).toEqual([b!.url])
      expect(balancer.get(b!.url)!.effectiveWeight).toBeLessThan(1)
      await sleep(200)
      stop = true
      await Promise.all(workers)
      expect([...statuses.get.keys()]).toEqual([200])
      // Lost: only POSTs that were in flight on b when it died (at most one per worker),
      // answered 502 on the reset (never 504, the hour-long timeout).
      expect(lost).toBeLessThanOrEqual(6)
      expect([...statuses.post.keys()].filter((s) => s !== 200 && s !== 502)).toEqual([])
      expect(b!.hits).toBeGreaterThan(0)
      await balancer.close()
    })
  })

  describe('WebSocket upgrade', () => {
    it('tunnels an upgraded connection both ways', async () => {
      const [a] = await backends('a')
      const { url } = await proxy({ routes: [{ upstream: [a!.url] }] })
      const u = new URL(url)
      const req = httpRequest({
        host: u.hostname,
        port: u.port,
        path: '/ws',
        headers: { connection: 'Upgrade', upgrade: 'websocket' },
      })
      req.end()
      const [res, socket] = (await once(req, 'upgrade')) as [
        { statusCode: number; headers: Record<string, string> },
        import('node:net').Socket,
      ]
      expect(res.statusCode).toBe(101)
      expect(res.headers['x-backend']).toBe('a')
      socket.write('ping')
      const [data] = (await once(socket, 'data')) as [Buffer]
      expect(data.toString()).toBe('a:ping')
      socket.destroy()
    })
  })

  describe('graceful shutdown', () => {
    it('stops accepting and lets in-flight requests finish', async () => {
      const [a] = await backends('a')
      const p = createProxy({ routes: [{ upstream: [a!.url] }] })
      const { port } = await p.listen(0)
      const inFlight = get(`http://127.0.0.1:${port}/slow?ms=300`)
      await sleep(50)
      const closing = p.close()
      await sleep(20)
      await expect(get(`http://127.0.0.1:${port}/x`)).rejects.toThrow()
      const res = await inFlight
      expect(res.status).toBe(200)
      await closing
    })
  })

  describe('compression', () => {
    it('gzips compressible responses for clients that accept it, and leaves others alone', async () => {
      const [a] = await backends('a')
      const { url } = await proxy({ routes: [{ upstream: [a!.url] }], compression: true })
      const zipped = await get(`${url}/big`, { headers: { 'accept-encoding': 'gzip, deflate' } })
      expect(zipped.headers['content-encoding']).toBe('gzip')
      expect(zipped.headers.vary).toMatch(/accept-encoding/)
      const plain = await get(`${url}/big`)
      expect(plain.headers['content-encoding']).toBeUndefined()
      expect(gunzipSync(zipped.body).equals(plain.body)).toBe(true)
      expect(zipped.body.length).toBeLessThan(plain.body.length / 3)
    })
  })

  describe('response cache', () => {
    function mapStore() {
      const map = new Map<string, CachedResponse>()
      return {
        map,
        store: {
          get: (k: string) => map.get(k),
          set: (k: string, v: CachedResponse) => void map.set(k, v),
        },
      }
    }

    it('answers a cacheable GET from the store without touching the backend, honouring If-None-Match', async () => {
      const [a] = await backends('a')
      const { store } = mapStore()
      const { url, proxy: p } = await proxy({ routes: [{ upstream: [a!.url] }], cache: { store } })
      const path = `${url}/cache?cc=${encodeURIComponent('public, max-age=60')}&etag=${encodeURIComponent('"v1"')}`
      const first = await get(path)
      expect(first.headers['x-cache']).toBe('MISS')
      const second = await get(path)
      expect(second.headers['x-cache']).toBe('HIT')
      expect(second.text).toBe(first.text)
      expect(second.headers.age).toBeDefined()
      const revalidated = await get(path, { headers: { 'if-none-match': 'W/"v1"' } })
      expect(revalidated.status).toBe(304)
      expect(revalidated.body.length).toBe(0)
      expect(a!.hits).toBe(1)
      expect(p.stats()).toMatchObject({ cacheHits: 2, cacheMisses: 1 })
    })

    it('keeps variants apart by Vary, and never stores private, no-store or cookie-setting responses', async () => {
      const [a] = await backends('a')
      const { store, map } = mapStore()
      const { url } = await proxy({ routes: [{ upstream: [a!.url] }], cache: { store } })
      const vary = `${url}/cache?cc=max-age%3D60&vary=accept-language`
      const en = await get(vary, { headers: { 'accept-language': 'en' } })
      const de = await get(vary, { headers: { 'accept-language': 'de' } })
      expect(de.text).not.toBe(en.text)
      expect(de.headers['x-cache']).toBe('MISS')
      await get(`${url}/cache?cc=private%2C%20max-age%3D60`)
      await get(`${url}/cache?cc=no-store`)
      const hitsBefore = a!.hits
      await get(`${url}/cache?cc=private%2C%20max-age%3D60`)
      expect(a!.hits).toBe(hitsBefore + 1)
      expect([...map.keys()].every((k) => k.includes('vary='))).toBe(true)
      // A request that asks for a fresh answer bypasses the store.
      await get(vary, { headers: { 'accept-language': 'de', 'cache-control': 'no-cache' } })
      expect(a!.hits).toBe(hitsBefore + 2)
    })
  })

  it('rejects bad options, naming them', () => {
    expect(() => createProxy({ routes: [] })).toThrow(InvalidArgumentError)
    expect(() =>
      createProxy({ routes: [{ pathPrefix: 'api', upstream: ['http://127.0.0.1:1'] }] }),
    ).toThrow(/pathPrefix/)
    expect(() => createProxy({ routes: [{ upstream: ['ftp://x'] }] })).toThrow(/"ftp:\/\/x"/)
    expect(() => createProxy({ routes: [{ upstream: [] }] })).toThrow(/"endpoints"/)
  })
})
