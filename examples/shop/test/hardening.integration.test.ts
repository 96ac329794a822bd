/**
 * The shop's edges (issue #15): where login sends the browser, who may drive the supervisor's
 * chaos switch and read `/_internal/`, and that Pay charges what the checkout page showed.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import fc from 'fast-check'
import { describe, expect, inject, it } from 'vitest'
import { instancesOf, layoutInstances, MAX_ORDER_INSTANCES, orderWorkerId } from '../src/config.js'
import {
  CONTROL_TOKEN_HEADER,
  loadOrCreateControlToken,
  refuseControlRequest,
} from '../src/control.js'
import { createOrderIds } from '../src/platform/sharding.js'
import type { Ctx } from '../src/web/http.js'
import { redirect } from '../src/web/http.js'
import { sameOriginPath } from '../src/web/redirect.js'
import { Client, shopHandle } from './fixture.js'

const shop = shopHandle(inject('shop'))
const origin = new URL(shop.url).origin
const gatewayPort = shop.config.gatewayPort
const controlPort = shop.config.controlPort

/** One request exactly as written: raw path, any Host, any headers. */
function raw(
  port: number,
  options: { method?: string; path: string; headers?: Record<string, string>; body?: string },
): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: options.method ?? 'GET',
        path: options.path,
        headers: options.headers,
        timeout: 10_000,
      },
      (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => {
          body += chunk
        })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }))
      },
    )
    req.on('error', reject)
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.end(options.body)
  })
}

function controlToken(): string {
  const file = join(shop.config.runDir, 'control-token')
  return existsSync(file) ? readFileSync(file, 'utf8').trim() : ''
}

describe('login redirect', () => {
  it('sends the browser only to a path of this shop, whatever next says', async () => {
    const c = new Client(shop.url)
    const cases: [string, string][] = [
      ['/%5Cevil.example', '/'],
      ['/%09/evil.example', '/'],
      ['//evil.example', '/'],
      ['/.//evil.example', '/'],
      ['https://evil.example/', '/'],
      ['javascript:alert(1)', '/'],
      ['/product/3?from=login', '/product/3?from=login'],
    ]
    for (const [next, expected] of cases) {
      await c.get(`/login?next=${next}`)
      const res = await c.post(`/login?next=${next}`, {
        email: 'user2@shop.example',
        password: shop.secrets.seedPassword,
      })
      expect(res.status, next).toBe(303)
      const location = String(res.headers.get('location'))
      // How a browser reads the Location header.
      expect(new URL(location, shop.url).origin, `${next} -> ${location}`).toBe(origin)
      expect(location, next).toBe(expected)
    }
  })
})

describe('sameOriginPath', () => {
  const ORIGINS = ['https://shop.example', 'http://127.0.0.1:20100']
  // Prefixes that have fooled redirect checks: backslashes, tabs, encoded slashes, schemes.
  const tricky = fc.constantFrom(
    '/',
    '//',
    '/\\',
    '\\',
    '/\t/',
    '/\n/',
    '/%5C',
    '/%2F',
    '/./',
    '/../',
    '/.//',
    'https:',
    'https://',
    'http:/',
    'javascript:',
    'data:',
    ' /',
    '\u0000/',
  )
  const next = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 60 }),
    fc
      .tuple(tricky, fc.string({ unit: 'binary', maxLength: 30 }))
      .map(([head, tail]) => head + tail),
    fc.tuple(tricky, tricky, fc.domain()).map(([a, b, host]) => `${a}${b}${host}`),
  )

  it('gives a path that a browser resolves to this origin, for any next (fuzz)', () => {
    fc.assert(
      fc.property(next, (value) => {
        const path = sameOriginPath(value)
        expect(path.startsWith('/')).toBe(true)
        for (const origin of ORIGINS) expect(new URL(path, origin).origin).toBe(origin)
        // Decoded once more (a Location header read back as a query parameter) it still is.
        const again = sameOriginPath(path)
        for (const origin of ORIGINS) expect(new URL(again, origin).origin).toBe(origin)
      }),
      { numRuns: 3000, seed: 0x2ed1 },
    )
  })

  it('keeps a plain path of the shop as it is', () => {
    expect(sameOriginPath('/product/3?from=login#reviews')).toBe('/product/3?from=login#reviews')
    expect(sameOriginPath(null)).toBe('/')
    expect(sameOriginPath('/\\evil.example')).toBe('/')
    expect(sameOriginPath('/\t/evil.example')).toBe('/')
  })
})

describe('redirect', () => {
  /** The Location a redirect() sends for `location`. */
  function locationOf(location: string): string {
    const headers: Record<string, unknown> = {}
    const res = {
      statusCode: 200,
      setHeader: (name: string, value: unknown) => {
        headers[name] = value
      },
      end: () => {},
    }
    redirect({ res } as unknown as Ctx, location)
    return String(headers.location)
  }

  it('never sends the browser to another origin, whatever a caller passes', () => {
    for (const location of [
      '/\\evil.example',
      '/\t/evil.example',
      '/\n/evil.example',
      '//evil.example',
    ]) {
      const sent = locationOf(location)
      expect(new URL(sent, origin).origin, `${JSON.stringify(location)} -> ${sent}`).toBe(origin)
    }
    expect(locationOf('/orders/42?x=1')).toBe('/orders/42?x=1')
    expect(locationOf('/login?next=%2Fproduct%2F3')).toBe('/login?next=%2Fproduct%2F3')
  })
})

describe('order instances', () => {
  it('get a worker id of their own for every instance the id generator supports', () => {
    const ids = new Set<number>()
    for (const spec of layoutInstances(20_000, {
      catalog: 1,
      cart: 1,
      account: 1,
      order: MAX_ORDER_INSTANCES,
    }).filter((i) => i.service === 'order'))
      ids.add(orderWorkerId(spec.name))
    expect(ids.size).toBe(MAX_ORDER_INSTANCES)
    expect(Math.min(...ids)).toBe(0)
    expect(Math.max(...ids)).toBe(MAX_ORDER_INSTANCES - 1)
  })

  it('refuse to start beyond that, with a clear error', () => {
    expect(() =>
      layoutInstances(20_000, { catalog: 1, cart: 1, account: 1, order: MAX_ORDER_INSTANCES + 1 }),
    ).toThrow(`between 1 and ${MAX_ORDER_INSTANCES}`)
    expect(() => orderWorkerId(`order-${MAX_ORDER_INSTANCES + 1}`)).toThrow('order-1 to order-16')
  })

  it('match what the order id generator accepts (its worker bits), no more, no less', () => {
    expect(() => createOrderIds(orderWorkerId(`order-${MAX_ORDER_INSTANCES}`))).not.toThrow()
    expect(() => createOrderIds(MAX_ORDER_INSTANCES)).toThrow('workerId')
  })
})

describe("the supervisor's control port", () => {
  const restore = JSON.stringify({ fault: 'payment-provider', on: false })
  const json = { 'content-type': 'application/json' }

  it('refuses a chaos request without the run directory token', async () => {
    const res = await raw(controlPort, {
      method: 'POST',
      path: '/chaos',
      headers: json,
      body: restore,
    })
    expect(res.status).toBe(403)
    const wrong = await raw(controlPort, {
      method: 'POST',
      path: '/chaos',
      headers: { ...json, 'x-shop-control-token': 'guess' },
      body: restore,
    })
    expect(wrong.status).toBe(403)
  })

  it('refuses a form or text body, which a web page can send without a preflight', async () => {
    expect(controlToken()).not.toBe('')
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data']) {
      const res = await raw(controlPort, {
        method: 'POST',
        path: '/chaos',
        headers: { 'content-type': type, 'x-shop-control-token': controlToken() },
        body: restore,
      })
      expect(res.status, type).toBe(415)
    }
  })

  it('refuses a Host that is not loopback (DNS rebinding)', async () => {
    for (const host of ['evil.example', `evil.example:${controlPort}`, '127.0.0.1.evil.example']) {
      const res = await raw(controlPort, {
        method: 'POST',
        path: '/chaos',
        headers: { ...json, host, 'x-shop-control-token': controlToken() },
        body: restore,
      })
      expect(res.status, host).toBe(403)
      const status = await raw(controlPort, {
        path: '/status',
        headers: { host, 'x-shop-control-token': controlToken() },
      })
      expect(status.status, host).toBe(403)
    }
  })

  it("guards the payment provider's fault switch the same way", async () => {
    const providerPort = Number(new URL(shop.config.providerUrl).port)
    const fail = JSON.stringify({ mode: 'fail' })
    const attempts: Record<string, string>[] = [
      { 'content-type': 'text/plain' },
      { 'content-type': 'application/json' },
      {
        'content-type': 'application/json',
        host: 'evil.example',
        'x-shop-control-token': controlToken(),
      },
    ]
    for (const headers of attempts) {
      const res = await raw(providerPort, { method: 'POST', path: '/mode', headers, body: fail })
      expect(res.status, JSON.stringify(headers)).toBeGreaterThanOrEqual(403)
    }
    const stats = await raw(providerPort, { path: '/_internal/stats' })
    expect(JSON.parse(stats.body).mode).toBe('ok')
  })

  it('answers a body that is not a JSON object with 400, not 500', async () => {
    for (const body of ['null', '"x"', '[]', '{"fault":', '']) {
      const res = await raw(controlPort, {
        method: 'POST',
        path: '/chaos',
        headers: { ...json, 'x-shop-control-token': controlToken() },
        body,
      })
      expect(res.status, body).toBe(400)
    }
  })

  it('obeys JSON with the token on a loopback Host', async () => {
    for (const host of [
      `127.0.0.1:${controlPort}`,
      `localhost:${controlPort}`,
      `[::1]:${controlPort}`,
    ]) {
      const res = await raw(controlPort, {
        method: 'POST',
        path: '/chaos',
        headers: {
          'content-type': 'application/json; charset=utf-8',
          host,
          'x-shop-control-token': controlToken(),
        },
        body: restore,
      })
      expect(res.status, host).toBe(200)
    }
    const status = await raw(controlPort, {
      path: '/status',
      headers: { 'x-shop-control-token': controlToken() },
    })
    expect(status.status).toBe(200)
    expect(JSON.parse(status.body).chaos['payment-provider']).toBe(false)
  })
})

describe('the control token', () => {
  it('is made afresh, mode 0600, when the file in the run directory holds none', () => {
    const dir = mkdtempSync(join(tmpdir(), 'shop-control-'))
    try {
      const file = join(dir, 'control-token')
      // A file emptied by a crash while it was written, or by hand.
      for (const content of ['', '\n', '   ', 'short']) {
        writeFileSync(file, content, { mode: 0o600 })
        const token = loadOrCreateControlToken(dir)
        expect(token, JSON.stringify(content)).toMatch(/^[A-Za-z0-9_-]{43}$/)
        expect(readFileSync(file, 'utf8').trim()).toBe(token)
        expect(statSync(file).mode & 0o777).toBe(0o600)
        expect(loadOrCreateControlToken(dir)).toBe(token)
      }
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('opens nothing when the expected token is empty (fails closed)', () => {
    const headers = { host: '127.0.0.1:1', [CONTROL_TOKEN_HEADER]: '' }
    expect(refuseControlRequest('GET', headers, '')?.status).toBe(403)
    expect(
      refuseControlRequest('GET', { ...headers, [CONTROL_TOKEN_HEADER]: 'x' }, 'x')?.status,
    ).toBe(403)
  })
})

describe("an instance's /_internal/ paths, reached directly", () => {
  const catalog = instancesOf(shop.config, 'catalog')[0]?.port ?? 0
  // Spellings the instance's router matches to /_internal/stats (it ignores empty segments).
  const spellings = [
    '/_internal/stats',
    '/.//_internal/stats',
    '/x/..//_internal/stats',
    '/%2e//_internal/stats',
    '/_internal//stats',
  ]

  it('are not served to a request a proxy forwarded or that names another Host', async () => {
    for (const path of spellings) {
      for (const headers of [
        { host: 'shop.example' },
        { 'x-forwarded-for': '203.0.113.9' },
      ] as Record<string, string>[]) {
        const res = await raw(catalog, { path, headers })
        expect(res.status, `${path} ${JSON.stringify(headers)}`).toBe(403)
        expect(res.body, path).not.toContain('"pid"')
      }
    }
  })

  it('are served to a direct loopback peer, however spelled', async () => {
    for (const path of spellings) {
      const res = await raw(catalog, { path })
      expect(res.status, path).toBe(200)
      expect(res.body, path).toContain('"pid"')
    }
  })
})

describe("the gateway's /_internal/ paths", () => {
  const spellings = ['/./_internal/stats', '/%2e/_internal/stats', '/x/../_internal/stats']

  // The shop under its public name: what a browser sends once it is deployed, even when a TLS
  // terminator on the same machine makes every peer loopback.
  const host = 'shop.example'

  it('are not served to an anonymous client, however the path is spelled', async () => {
    for (const path of spellings) {
      const res = await raw(gatewayPort, { path, headers: { host } })
      expect(res.status, path).toBe(403)
      expect(res.body, path).not.toContain('"pid"')
    }
    // A client behind another proxy is not a loopback peer of the gateway.
    const forwarded = await raw(gatewayPort, {
      path: '/_internal/stats',
      headers: { 'x-forwarded-for': '203.0.113.9' },
    })
    expect(forwarded.status).toBe(403)
  })

  it('forwards every other spelling with X-Forwarded-For, which a client cannot strip', async () => {
    // Spellings the gateway does not serve itself but its proxy normalises to /_internal/stats:
    // the instance must see them as forwarded even with a loopback Host and no client header.
    for (const path of ['/%5Finternal/stats', '//_internal/stats', '/.//_internal/stats']) {
      for (const headers of [
        { host: `127.0.0.1:${gatewayPort}` },
        { host: `127.0.0.1:${gatewayPort}`, connection: 'x-forwarded-for' },
      ] as Record<string, string>[]) {
        const res = await raw(gatewayPort, { path, headers })
        expect(res.status, `${path} ${JSON.stringify(headers)}`).toBe(403)
        expect(res.body, path).not.toContain('"pid"')
      }
    }
  })

  it('are served to an admin session, and to a loopback peer such as the supervisor', async () => {
    const admin = new Client(shop.url)
    await admin.login('admin@shop.example', shop.secrets.adminPassword)
    const cookie = [...admin.cookies].map(([k, v]) => `${k}=${v}`).join('; ')
    for (const path of spellings) {
      const res = await raw(gatewayPort, { path, headers: { host, cookie } })
      expect(res.status, path).toBe(200)
      expect(res.body, path).toContain('"pid"')
    }
    expect((await raw(gatewayPort, { path: '/_internal/health' })).status).toBe(200)
    expect((await raw(gatewayPort, { path: '/_internal/stats' })).status).toBe(200)
  })
})

describe('checkout', () => {
  const field = (html: string, name: string) =>
    new RegExp(`name="${name}" value="([^"]*)"`).exec(html)?.[1] ?? ''
  const total = (html: string) => />total<\/th><th>([^<]+)<\/th>/.exec(html)?.[1]

  it('refuses a Pay whose cart changed after the checkout page was shown', async () => {
    const c = new Client(shop.url)
    await c.login('user6@shop.example', shop.secrets.seedPassword)
    await c.get('/account') // a logged-in page: its forms carry the CSRF token
    expect((await c.post('/cart/add', { productId: '11', qty: '1' })).status).toBe(303)
    const shown = await c.get('/checkout')
    const form = { idem: field(shown.text_, 'idem'), cart: field(shown.text_, 'cart') }
    // Another tab adds ten items.
    expect((await c.post('/cart/add', { productId: '12', qty: '10' })).status).toBe(303)
    const stale = await c.post('/checkout', form)
    expect(stale.status, stale.text_).toBe(303)
    expect(stale.headers.get('location')).toBe('/checkout')
    // The page shown now says why and has the new total; paying from it places that order.
    const fresh = await c.get('/checkout')
    expect(fresh.text_).toContain('Your cart changed')
    expect((await c.get('/orders')).text_).toContain('No orders yet.')
    expect(total(shown.text_)).toMatch(/^\$/)
    expect(total(fresh.text_)).not.toBe(total(shown.text_))
    const paid = await c.post('/checkout', {
      idem: field(fresh.text_, 'idem'),
      cart: field(fresh.text_, 'cart'),
    })
    expect(String(paid.headers.get('location'))).toMatch(/^\/orders\//)
    const order = await c.get(String(paid.headers.get('location')))
    expect(total(order.text_)).toBe(total(fresh.text_))
  })

  it('charges once when two tabs showing the same cart press Pay together', async () => {
    const c = new Client(shop.url)
    await c.login('user8@shop.example', shop.secrets.seedPassword)
    await c.get('/account')
    expect((await c.post('/cart/add', { productId: '14', qty: '2' })).status).toBe(303)
    // Two checkout pages: two keys, one digest.
    const tabs = [await c.get('/checkout'), await c.get('/checkout')].map((page) => ({
      idem: field(page.text_, 'idem'),
      cart: field(page.text_, 'cart'),
    }))
    expect(tabs[0]?.cart).toBe(tabs[1]?.cart)
    expect(tabs[0]?.idem).not.toBe(tabs[1]?.idem)
    const [a, b] = await Promise.all(tabs.map((form) => c.post('/checkout', form)))
    const locations = [a, b].map((r) => String(r?.headers.get('location'))).sort()
    expect(locations[0]).toBe('/cart')
    expect(locations[1]).toMatch(/^\/orders\//)
    const orders = (await c.get('/orders')).text_
    expect(orders.match(/data-order="/g) ?? []).toHaveLength(1)
  })

  it('refuses a Pay that carries no digest of the page it came from', async () => {
    const c = new Client(shop.url)
    await c.login('user7@shop.example', shop.secrets.seedPassword)
    await c.get('/account')
    expect((await c.post('/cart/add', { productId: '13', qty: '1' })).status).toBe(303)
    const shown = await c.get('/checkout')
    const res = await c.post('/checkout', { idem: field(shown.text_, 'idem') })
    expect(res.status, res.text_).toBe(400)
    expect((await c.get('/orders')).text_).toContain('No orders yet.')
  })
})
