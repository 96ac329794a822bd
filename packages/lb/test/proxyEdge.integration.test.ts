import { once } from 'node:events'
import { request as httpRequest } from 'node:http'
import { type AddressInfo, connect, createServer as createNetServer, type Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import {
  type CachedResponse,
  createProxy,
  type ProxyOptions,
  type RequestFailedEvent,
  type ReverseProxy,
  type UpstreamFailedEvent,
} from '../src/index.js'
import { type Backend, startBackends } from './fixtures/backend.js'

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

async function proxy(options: ProxyOptions): Promise<{ proxy: ReverseProxy; port: number }> {
  const p = createProxy(options)
  const address: AddressInfo = await p.listen(0, '127.0.0.1')
  cleanup.push(() => p.close())
  return { proxy: p, port: address.port }
}

/** A server on a raw socket: answers every request with `answer` and closes. */
async function rawUpstream(answer: string): Promise<string> {
  const sockets = new Set<Socket>()
  const server = createNetServer((socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
    socket.once('data', () => socket.end(answer))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  cleanup.push(
    () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy()
        server.close(() => r())
      }),
  )
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

interface RawResponse {
  status: number
  head: string
  headers: Record<string, string>
  body: string
}

/** Sends bytes as they are on a fresh connection and reads until the proxy closes it. */
async function send(port: number, text: string): Promise<RawResponse> {
  const socket = connect(port, '127.0.0.1')
  socket.write(text)
  let all = ''
  socket.setEncoding('latin1')
  socket.on('data', (d: string) => {
    all += d
  })
  await once(socket, 'close')
  const end = all.indexOf('\r\n\r\n')
  const head = all.slice(0, end)
  const headers: Record<string, string> = {}
  for (const line of head.split('\r\n').slice(1)) {
    const colon = line.indexOf(':')
    headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim()
  }
  let body = all.slice(end + 4)
  if (headers['transfer-encoding'] === 'chunked') {
    let out = ''
    for (;;) {
      const eol = body.indexOf('\r\n')
      const size = Number.parseInt(body.slice(0, eol), 16)
      if (!(size > 0)) break
      out += body.slice(eol + 2, eol + 2 + size)
      body = body.slice(eol + 4 + size)
    }
    body = out
  }
  return { status: Number(head.split(' ')[1]), head, headers, body }
}

const get = (port: number, target: string, host = `127.0.0.1:${port}`, extra = '') =>
  send(port, `GET ${target} HTTP/1.1\r\nHost: ${host}\r\n${extra}Connection: close\r\n\r\n`)

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

describe('createProxy at the edge (raw sockets)', () => {
  describe('Host header', () => {
    it('refuses a Host that is not host[:port] with 400, so it cannot poison the cache key of another path', async () => {
      const [a] = await backends('a')
      const { store, map } = mapStore()
      const { port } = await proxy({ routes: [{ upstream: [a!.url] }], cache: { store } })
      const cacheable = '/cache?cc=max-age%3D60'
      const poisoned = await get(port, cacheable, 'shop.test/x')
      expect(poisoned.status).toBe(400)
      expect(map.size).toBe(0)
      // The victim: GET /x/cache... on shop.test must come from the backend, not the attacker's entry.
      const victim = await get(port, `/x${cacheable}`, 'shop.test')
      expect(victim.status).toBe(200)
      expect(victim.headers['x-cache']).toBe('MISS')
      expect(JSON.parse(victim.body)).toMatchObject({ backend: 'a', url: `/x${cacheable}` })
      for (const bad of ['shop.test:80/x', 'a b', 'shop.test:99999', 'shop..test', '[::1', 'x@y']) {
        expect((await get(port, '/', bad)).status, bad).toBe(400)
      }
      const twice = await send(
        port,
        'GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n',
      )
      expect(twice.status).toBe(400)
      expect(a!.hits).toBe(1)
    })

    it('keys cached entries by method, normalised host, path and query', async () => {
      const [a] = await backends('a')
      const { store, map } = mapStore()
      const { port } = await proxy({ routes: [{ upstream: [a!.url] }], cache: { store } })
      const target = '/cache?cc=max-age%3D60'
      expect((await get(port, target, 'Shop.Test:8080')).headers['x-cache']).toBe('MISS')
      expect((await get(port, target, 'shop.test:8080')).headers['x-cache']).toBe('HIT')
      expect((await get(port, target, 'shop.test.:8080')).headers['x-cache']).toBe('HIT')
      expect((await get(port, target, 'shop.test')).headers['x-cache']).toBe('MISS')
      expect([...map.keys()]).toEqual([
        JSON.stringify(['GET', 'shop.test:8080', '/cache', 'cc=max-age%3D60']),
        JSON.stringify(['GET', 'shop.test', '/cache', 'cc=max-age%3D60']),
      ])
    })
  })

  describe('request target', () => {
    async function guarded() {
      const [app, guard] = await backends('app', 'guard')
      const { port } = await proxy({
        routes: [
          { pathPrefix: '/_internal', upstream: [guard!.url] },
          { pathPrefix: '/', upstream: [app!.url] },
        ],
      })
      return { app: app!, guard: guard!, port }
    }

    it('never routes a target that normalises into a prefix to another route', async () => {
      const { app, port } = await guarded()
      for (const target of [
        '/./_internal/x',
        '/%2e/_internal/x',
        '/a/%2E%2e/_internal/x',
        '/public/../_internal/x',
        '//_internal/x',
        '/%5finternal/x',
        '/public/%2e%2e/_internal/x',
      ]) {
        const res = await get(port, target)
        expect(res.status, target).toBe(200)
        expect(res.headers['x-backend'], target).toBe('guard')
        expect(JSON.parse(res.body).url, target).toBe('/_internal/x')
      }
      expect(app.hits).toBe(0)
    })

    it('refuses with 400 targets it cannot normalise safely and absolute-form targets for another host', async () => {
      const { app, guard, port } = await guarded()
      for (const target of [
        'http://x/_internal/x',
        'http://evil.test/',
        '/public/%2f..%2f_internal/x',
        '/public/..%5c_internal/x',
        '/public\\..\\_internal/x',
        '/..;/_internal/x',
        '/../_internal/x',
        '/%zz',
        '*',
      ]) {
        const res = await get(port, target)
        expect(res.status, target).toBe(400)
        expect(res.body, target).toMatch(/^400 Bad Request/)
      }
      expect(app.hits + guard.hits).toBe(0)
      // Absolute-form naming the proxy itself is routed on its normalised path.
      const own = await get(port, `http://127.0.0.1:${port}/a/../_internal/x?q=1`)
      expect(own.status).toBe(200)
      expect(own.headers['x-backend']).toBe('guard')
      expect(JSON.parse(own.body).url).toBe('/_internal/x?q=1')
    })

    it('refuses a traversal target on a WebSocket upgrade too', async () => {
      const { app, port } = await guarded()
      const res = await send(
        port,
        `GET /%2e%2e/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
      )
      expect(res.status).toBe(400)
      const bad = await send(
        port,
        `GET / HTTP/1.1\r\nHost: a/b\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
      )
      expect(bad.status).toBe(400)
      expect(app.hits).toBe(0)
    })
  })

  describe('request smuggling', () => {
    it('never forwards a request whose length is ambiguous or whose headers are folded', async () => {
      const [a] = await backends('a')
      const { port } = await proxy({ routes: [{ upstream: [a!.url] }] })
      for (const head of [
        'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n',
        'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n',
        'GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n',
        'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n',
      ]) {
        const res = await send(port, `${head}Connection: close\r\n\r\n0\r\n\r\n`)
        expect(res.status, head).toBe(400)
      }
      expect(a!.hits).toBe(0)
    })
  })

  describe('Connection header of a response', () => {
    it('strips only the headers whose exact names it lists', async () => {
      const origin = await rawUpstream(
        'HTTP/1.1 200 OK\r\nConnection: close, x-set-cookie-hint\r\nSet-Cookie: sid=1\r\nx-set-cookie-hint: y\r\nx-cookie: z\r\ncontent-length: 2\r\n\r\nok',
      )
      const { port } = await proxy({ routes: [{ upstream: [origin] }] })
      const res = await get(port, '/')
      expect(res.status).toBe(200)
      expect(res.headers['set-cookie']).toBe('sid=1')
      expect(res.headers['x-cookie']).toBe('z')
      expect(res.headers['x-set-cookie-hint']).toBeUndefined()
      expect(res.body).toBe('ok')
    })
  })

  describe('WebSocket upgrade refused by the upstream', () => {
    it('relays a non-101 answer with valid framing and no hop-by-hop headers', async () => {
      const origin = await rawUpstream(
        'HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nKeep-Alive: timeout=5\r\nx-reason: nope\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n',
      )
      const { port } = await proxy({ routes: [{ upstream: [origin] }] })
      const req = httpRequest({
        host: '127.0.0.1',
        port,
        path: '/ws',
        headers: { connection: 'Upgrade', upgrade: 'websocket' },
      })
      req.end()
      const [res] = (await once(req, 'response')) as [import('node:http').IncomingMessage]
      let body = ''
      for await (const chunk of res) body += chunk
      expect(res.statusCode).toBe(403)
      expect(res.headers['x-reason']).toBe('nope')
      expect(res.headers['keep-alive']).toBeUndefined()
      expect(body).toBe('hello world')
    })
  })

  describe('error bodies', () => {
    const GENERIC =
      /^(502 Bad Gateway|503 Service Unavailable|504 Gateway Timeout)\nrequest id: ([\w-]+)\n$/

    it('answer 502, 503 and 504 with the status and a request id; the details go to events', async () => {
      const [a] = await backends('a')
      const refused = await backends('gone')
      const goneUrl = refused[0]!.url
      await refused[0]!.kill()
      const badHeader = await rawUpstream(
        'HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-bad: a\u0001b\r\n\r\nok',
      )
      const { port, proxy: p } = await proxy({
        routes: [
          { name: 'down', pathPrefix: '/down', upstream: [goneUrl] },
          { name: 'bad', pathPrefix: '/bad', upstream: [badHeader] },
          { name: 'slow', pathPrefix: '/', upstream: [a!.url] },
        ],
        headersTimeout: 100,
      })
      const failed: RequestFailedEvent[] = []
      const upstreamErrors: UpstreamFailedEvent[] = []
      p.on('request-failed', (e) => failed.push(e))
      p.on('upstream-failed', (e) => upstreamErrors.push(e))
      const answers = [
        await get(port, '/down/x'),
        await get(port, '/bad/x'),
        await get(port, '/slow?ms=1000'),
      ]
      expect(answers.map((r) => r.status)).toEqual([503, 502, 504])
      for (const [i, res] of answers.entries()) {
        const m = GENERIC.exec(res.body)
        expect(m, res.body).not.toBeNull()
        expect(res.body).not.toContain('127.0.0.1')
        expect(res.headers['x-request-id']).toBe(m![2])
        expect(failed[i]).toMatchObject({ requestId: m![2], status: res.status })
      }
      expect(failed.map((e) => e.route)).toEqual(['down', 'bad', 'slow'])
      expect(failed[0]!.endpoint).toBe(goneUrl)
      expect(failed[2]!.endpoint).toBe(a!.url)
      expect(upstreamErrors.find((e) => e.route === 'bad')?.requestId).toBe(failed[1]!.requestId)
    })

    it('answer a failed WebSocket upgrade with a generic body too', async () => {
      const refused = await backends('gone')
      const goneUrl = refused[0]!.url
      await refused[0]!.kill()
      const { port, proxy: p } = await proxy({ routes: [{ upstream: [goneUrl] }] })
      const failed: RequestFailedEvent[] = []
      p.on('request-failed', (e) => failed.push(e))
      const res = await send(
        port,
        `GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
      )
      expect(res.status).toBe(502)
      expect(res.body).toMatch(GENERIC)
      expect(res.body).not.toContain('127.0.0.1')
      expect(failed).toMatchObject([{ status: 502, endpoint: goneUrl }])
      expect(res.body).toContain(failed[0]!.requestId)
    })
  })
})

/** A raw upstream that writes `answer` on the first bytes of each connection and keeps the socket open. */
async function heldUpstream(answer: string) {
  const sockets = new Set<Socket>()
  const server = createNetServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => socket.destroy())
    socket.once('close', () => sockets.delete(socket))
    socket.once('data', () => socket.write(answer))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  cleanup.push(
    () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy()
        server.close(() => r())
      }),
  )
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, sockets }
}

describe('createProxy on HEAD, upgrades, 404s and unusual targets', () => {
  it('answers a HEAD from the cached GET, as most proxies do', async () => {
    const [a] = await backends('a')
    const { store } = mapStore()
    const { port, proxy: p } = await proxy({ routes: [{ upstream: [a!.url] }], cache: { store } })
    const target = '/cache?cc=max-age%3D60'
    const full = await get(port, target, 'shop.test')
    expect(full.headers['x-cache']).toBe('MISS')
    const head = await send(
      port,
      `HEAD ${target} HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n`,
    )
    expect(head.status).toBe(200)
    expect(head.headers['x-cache']).toBe('HIT')
    expect(head.headers['content-length']).toBe(String(Buffer.byteLength(full.body)))
    expect(head.body).toBe('')
    expect(a!.hits).toBe(1)
    // A HEAD that misses goes upstream as a HEAD and stores nothing.
    const miss = await send(
      port,
      `HEAD /cache?cc=max-age%3D61 HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n`,
    )
    expect(miss.status).toBe(200)
    expect(a!.seen.at(-1)?.method).toBe('HEAD')
    expect(p.stats()).toMatchObject({ cacheHits: 1, cacheMisses: 2 })
  })

  it('cuts a refused upgrade whose body fails midway instead of appending a 502 to it', async () => {
    const upstream = await heldUpstream(
      'HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n',
    )
    // connectTimeout is also the idle limit of an upgrade before its 101: it cuts the stalled body.
    const { port } = await proxy({ routes: [{ upstream: [upstream.url] }], connectTimeout: 200 })
    const socket = connect(port, '127.0.0.1')
    socket.write(
      'GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
    )
    let all = ''
    socket.setEncoding('latin1')
    socket.on('data', (d: string) => {
      all += d
    })
    await once(socket, 'close')
    expect(all.startsWith('HTTP/1.1 403 Forbidden\r\n')).toBe(true)
    expect(all).toContain('hello')
    expect(all).not.toContain('502')
  })

  it('tunnels only WebSocket upgrades, and strips hop-by-hop headers from them as from any request', async () => {
    const [a] = await backends('a')
    const { port, proxy: p } = await proxy({
      routes: [{ pathPrefix: '/public', upstream: [a!.url] }],
    })
    // h2c: a tunnel would let the client send any request to the upstream, past the route's prefix.
    const h2c = await send(
      port,
      'GET /public/x HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nProxy-Authorization: Basic c2VjcmV0\r\n\r\n',
    )
    expect(h2c.status).toBe(200)
    const plain = a!.seen.at(-1)!
    expect(plain.url).toBe('/public/x')
    expect(plain.headers.upgrade).toBeUndefined()
    expect(plain.headers['http2-settings']).toBeUndefined()
    expect(plain.headers['proxy-authorization']).toBeUndefined()
    expect(p.stats().upgrades).toBe(0)
    // A WebSocket upgrade is tunnelled, without the headers its Connection lists or other hop-by-hop ones.
    const req = httpRequest({
      host: '127.0.0.1',
      port,
      path: '/public/ws',
      headers: {
        connection: 'Upgrade, x-hop',
        upgrade: 'websocket',
        'x-hop': '1',
        'keep-alive': 'timeout=5',
        'proxy-authorization': 'Basic c2VjcmV0',
        'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
      },
    })
    req.end()
    const [res, socket] = (await once(req, 'upgrade')) as [
      import('node:http').IncomingMessage,
      Socket,
    ]
    socket.destroy()
    expect(res.statusCode).toBe(101)
    const seen = a!.seen.at(-1)!.headers
    expect(seen.upgrade).toBe('websocket')
    expect(seen.connection?.toLowerCase()).toBe('upgrade')
    expect(seen['sec-websocket-key']).toBe('dGhlIHNhbXBsZSBub25jZQ==')
    expect(seen['x-hop']).toBeUndefined()
    expect(seen['keep-alive']).toBeUndefined()
    expect(seen['proxy-authorization']).toBeUndefined()
    // Frames sent right behind the handshake reach the upstream once it has switched protocols.
    const eager = connect(port, '127.0.0.1')
    eager.setEncoding('latin1')
    eager.write(
      'GET /public/ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nping',
    )
    let echoed = ''
    for await (const chunk of eager) {
      echoed += chunk
      if (echoed.includes('a:ping')) break
    }
    eager.destroy()
    expect(echoed).toMatch(/^HTTP\/1\.1 101 [\s\S]*a:ping$/)
  })

  it('names in a 404 only the validated host and the normalised path, never the query the client wrote', async () => {
    const [a] = await backends('a')
    const { port } = await proxy({ routes: [{ host: 'only.test', upstream: [a!.url] }] })
    const res = await get(port, '/x/./y?%3Cscript%3E=<b>Call+us</b>', 'Other.Test')
    expect(res.status).toBe(404)
    expect(res.body).toBe('404 Not Found: no route for host "other.test" and path "/x/y"\n')
  })

  it('never forwards CONNECT, OPTIONS *, userinfo or a bare IPv6 Host, and routes a bracketed IPv6 Host', async () => {
    const [a] = await backends('a')
    const { port } = await proxy({ routes: [{ upstream: [a!.url] }] })
    // No 'connect' listener: node closes the connection without an answer.
    const tunnel = await send(port, 'CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n')
    expect(tunnel.head).toBe('')
    const star = await send(port, 'OPTIONS * HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n')
    expect(star.status).toBe(400)
    for (const host of ['user@a.test', 'a.test@evil.test', '::1', '[::1%25lo]', '[::1]x', '']) {
      expect((await get(port, '/', host)).status, host).toBe(400)
    }
    expect((await get(port, 'http://user@a.test/', 'a.test')).status).toBe(400)
    const v6 = await get(port, '/v6', '[::1]:8080')
    expect(v6.status).toBe(200)
    expect(JSON.parse(v6.body)).toMatchObject({ url: '/v6' })
    expect(a!.seen.map((s) => s.url)).toEqual(['/v6'])
  })

  it('never lets the bytes after an upgrade request reach an upstream that refused the upgrade', async () => {
    // An upstream without WebSocket support answers 426 and reads on: any bytes the proxy sent
    // after the upgrade request, it would parse as the next request on that connection.
    let received = ''
    const upstream = createNetServer((socket) => {
      socket.setEncoding('latin1')
      socket.on('error', () => socket.destroy())
      socket.on('data', (d: string) => {
        received += d
        socket.write('HTTP/1.1 426 Upgrade Required\r\ncontent-length: 0\r\n\r\n')
      })
    })
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r))
    cleanup.push(() => new Promise((r) => upstream.close(() => r())))
    const origin = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`
    const { port } = await proxy({ routes: [{ pathPrefix: '/public', upstream: [origin] }] })
    const smuggled = 'GET /_internal/x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\n\r\n'
    for (const framing of ['Content-Length: 5\r\n', '']) {
      const res = await send(
        port,
        `GET /public/ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n${framing}\r\nhello${smuggled}`,
      )
      expect([400, 426], framing).toContain(res.status)
    }
    // And an h2c POST is an ordinary request, body and all.
    const h2c = await send(
      port,
      'POST /public/p HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nContent-Length: 5\r\n\r\nhello',
    )
    expect(h2c.status).toBe(426)
    expect(received).not.toContain('/_internal/x')
    expect(received).toContain('POST /public/p HTTP/1.1')
  })
})
