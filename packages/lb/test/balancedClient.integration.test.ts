import { getEventListeners } from 'node:events'
import { afterEach, describe, expect, it } from 'vitest'
import {
  type BalancedClient,
  createBalancedClient,
  InvalidArgumentError,
  isLbError,
  NoEndpointAvailableError,
  UpstreamError,
  UpstreamTimeoutError,
} from '../src/index.js'
import { type Backend, startBackends } from './fixtures/backend.js'

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

function client(options: Parameters<typeof createBalancedClient>[0]): BalancedClient {
  const c = createBalancedClient(options)
  cleanup.push(() => c.close())
  return c
}

async function waitFor(check: () => boolean, timeoutMs: number): Promise<number> {
  const started = performance.now()
  while (!check()) {
    if (performance.now() - started > timeoutMs)
      throw new Error(`condition not met within ${timeoutMs} ms`)
    await sleep(5)
  }
  return performance.now() - started
}

describe('createBalancedClient', () => {
  it('spreads requests over the endpoints and says which one answered', async () => {
    const [a, b] = await backends('a', 'b')
    const c = client({ endpoints: [a!.url, b!.url], balancer: { strategy: 'round-robin' } })
    const seen = new Set<string>()
    for (let i = 0; i < 4; i++) {
      const res = await c.request({ path: '/hello' })
      expect(res.statusCode).toBe(200)
      const body = (await res.body.json()) as { backend: string }
      expect(res.endpoint).toBe(body.backend === 'a' ? a!.url : b!.url)
      seen.add(body.backend)
    }
    expect(seen).toEqual(new Set(['a', 'b']))
    expect(c.stats()).toMatchObject({ requests: 4, retries: 0, failed: 0 })
  })

  it('ejects a backend killed during a load run, retries idempotent requests elsewhere, loses only in-flight POSTs, and slow-starts it on return', async () => {
    const [a, b] = await backends('a', 'b')
    const c = client({
      endpoints: [a!.url, b!.url],
      balancer: {
        strategy: 'weighted-round-robin',
        outlierDetection: { consecutiveFailures: 3, baseEjectionTime: 5000 },
        slowStart: { window: 2000 },
      },
      healthCheck: { interval: 50, rise: 2, fall: 2, timeout: 200 },
      retryBudget: { minPerSecond: 1000 },
      // A request that waited for the headers timeout instead of failing on the reset would
      // hang the test: the slow path cannot pass unnoticed.
      headersTimeout: '1h',
    })
    const events: string[] = []
    c.balancer.on('ejected', (e) => events.push(`ejected ${e.endpoint.id} ${e.reason}`))
    c.balancer.on('health-changed', (e) =>
      events.push(`${e.healthy ? 'healthy' : 'unhealthy'} ${e.endpoint.id}`),
    )
    let stop = false
    let getOk = 0
    let postOk = 0
    const getErrors: unknown[] = []
    const postErrors: unknown[] = []
    const worker = async (w: number) => {
      for (let i = 0; !stop; i++) {
        const post = (i + w) % 3 === 0
        try {
          const res = await c.request({
            path: '/slow?ms=15',
            method: post ? 'POST' : 'GET',
            body: post ? 'order' : null,
          })
          await res.body.dump()
          expect(res.statusCode).toBe(200)
          if (post) postOk++
          else getOk++
        } catch (error) {
          ;(post ? postErrors : getErrors).push(error)
        }
      }
    }
    const workers = Array.from({ length: 6 }, (_, w) => worker(w))
    await sleep(300)
    await b!.kill()
    // Taken out by its health check (50 ms interval, fall 2) or by outlier ejection; the bound
    // is generous because the machine is shared: the ejection is the behaviour, not its speed.
    await waitFor(() => !c.balancer.get(b!.url)!.healthy || c.balancer.get(b!.url)!.ejected, 3000)
    await sleep(300)
    const hitsWhileDown = a!.hits
    expect(c.balancer.pick().id).toBe(a!.url)
    await b!.start()
    await waitFor(() => c.balancer.get(b!.url)!.healthy && !c.balancer.get(b!.url)!.ejected, 2000)
    const restored = c.balancer.get(b!.url)!
    expect(restored.effectiveWeight).toBeLessThan(restored.weight)
    await sleep(400)
    stop = true
    await Promise.all(workers)
    expect(getErrors).toEqual([])
    // Lost: only POSTs in flight on b when it died (at most one per worker), failed at once.
    expect(postErrors.length).toBeLessThanOrEqual(6)
    // Failed on the reset (E_LB_UPSTREAM), not on the hour-long headers timeout.
    for (const e of postErrors)
      expect(isLbError(e) && (e as { code: string }).code).toBe('E_LB_UPSTREAM')
    expect(getOk).toBeGreaterThan(50)
    expect(postOk).toBeGreaterThan(20)
    expect(a!.hits).toBeGreaterThan(hitsWhileDown)
    expect(b!.hits).toBeGreaterThan(0)
    expect(events[0]).toMatch(/^(unhealthy|ejected) /)
    expect(events.at(-1)).toBe(`healthy ${b!.url}`)
  })

  it('fails at once with a typed error when every endpoint is down', async () => {
    const [a, b] = await backends('a', 'b')
    // Hour-long timeouts: an answer that waited for one would hang the test.
    const c = client({ endpoints: [a!.url, b!.url], connectTimeout: '1h', headersTimeout: '1h' })
    await a!.kill()
    await b!.kill()
    const error = await c.request({ path: '/' }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(NoEndpointAvailableError)
    expect((error as Error).message).toMatch(/refused/)
    expect(c.balancer.stats().endpoints.map((e) => e.picks)).toEqual([1, 1])
    // Once health checks mark them down, the client does not even try.
    c.balancer.setHealthy(a!.url, false)
    c.balancer.setHealthy(b!.url, false)
    const again = await c.request({ path: '/' }).catch((e: unknown) => e)
    expect(again).toBeInstanceOf(NoEndpointAvailableError)
    expect((again as Error).message).toMatch(/all 2 endpoints are unhealthy/)
    expect(c.balancer.stats().endpoints.map((e) => e.picks)).toEqual([1, 1])
  })

  it('times out a slow endpoint with a typed error and retries a GET elsewhere', async () => {
    const [a, b] = await backends('a', 'b')
    a!.delayMs = 1000
    const c = client({
      endpoints: [a!.url, b!.url],
      headersTimeout: 200,
      balancer: { strategy: 'round-robin' },
    })
    const res = await c.request({ path: '/x' })
    // The client's own 200 ms timer cut the attempt on a: undici's (1.2 s) would have let a
    // answer first, after 1 s.
    expect(res.statusCode).toBe(200)
    expect(res.endpoint).toBe(b!.url)
    expect(res.attempts).toBe(2)
    await res.body.dump()
    const post = await c.request({ path: '/x', method: 'POST', body: 'x' }).catch((e: unknown) => e)
    expect(post).toBeInstanceOf(UpstreamTimeoutError)
    expect((post as UpstreamTimeoutError).timeoutMs).toBe(200)
  })

  it('retries a GET answered with 503 on another endpoint, within the budget', async () => {
    const [a, b] = await backends('a', 'b')
    a!.healthy = false
    const c = client({ endpoints: [a!.url, b!.url], balancer: { strategy: 'round-robin' } })
    const res = await c.request({ path: '/health' })
    expect(res.statusCode).toBe(200)
    expect(res.endpoint).toBe(b!.url)
    await res.body.dump()
    const strict = client({
      endpoints: [a!.url, b!.url],
      balancer: { strategy: 'round-robin' },
      retryBudget: { ratio: 0, minPerSecond: 0 },
    })
    const first = await strict.request({ path: '/health' })
    expect(first.statusCode).toBe(503)
    await first.body.dump()
    expect(strict.stats().retriesRefused).toBe(1)
  })

  it('retries only idempotent requests after the request was sent: a POST cut mid-way is not sent twice', async () => {
    const [a, b] = await backends('a', 'b')
    const c = client({ endpoints: [a!.url, b!.url], balancer: { strategy: 'round-robin' } })
    const post = await c
      .request({ path: '/reset', method: 'POST', body: 'pay 10 EUR' })
      .catch((e: unknown) => e)
    expect(post).toBeInstanceOf(UpstreamError)
    expect((post as UpstreamError).attempts).toBe(1)
    expect(a!.hits + b!.hits).toBe(1)
    const getError = await c.request({ path: '/reset' }).catch((e: unknown) => e)
    expect(getError).toBeInstanceOf(UpstreamError)
    expect((getError as UpstreamError).attempts).toBe(2)
    expect(a!.hits + b!.hits).toBe(3)
    expect(a!.hits).toBeGreaterThan(0)
    expect(b!.hits).toBeGreaterThan(0)
  })

  it('stops the body when the caller aborts after the headers arrived', async () => {
    const [a] = await backends('a')
    const c = client({ endpoints: [a!.url], bodyTimeout: 20_000 })
    const controller = new AbortController()
    // The backend would end the body after 10 s; the abort must cut it long before.
    const res = await c.request({ path: '/slowbody?ms=10000', signal: controller.signal })
    expect(res.statusCode).toBe(200)
    const reading = res.body.text()
    await sleep(50)
    controller.abort(new Error('user left'))
    await expect(reading).rejects.toThrow()
    await waitFor(() => a!.cut === 1, 5000)
  })

  it('leaves no listener on a long-lived signal once a response without a body arrived, read or not', async () => {
    const [a] = await backends('a')
    const c = client({ endpoints: [a!.url] })
    const shutdown = new AbortController()
    for (let i = 0; i < 20; i++) {
      const res = await c.request({ method: 'HEAD', path: '/health', signal: shutdown.signal })
      expect(res.statusCode).toBe(200)
    }
    expect(getEventListeners(shutdown.signal, 'abort')).toHaveLength(0)
    // A body that is read to its end unlinks the signal too.
    const res = await c.request({ path: '/health', signal: shutdown.signal })
    expect(await res.body.text()).toBe('ok')
    await new Promise((r) => setImmediate(r)) // 'close' follows 'end' on the next tick
    expect(getEventListeners(shutdown.signal, 'abort')).toHaveLength(0)
  })

  it('rejects bad options, naming them', () => {
    expect(() => createBalancedClient({ endpoints: ['not a url'] })).toThrow(InvalidArgumentError)
    expect(() => createBalancedClient({})).toThrow(/"endpoints"/)
    expect(() =>
      createBalancedClient({ endpoints: ['http://127.0.0.1:1'], maxAttempts: 0 }),
    ).toThrow(/"maxAttempts"/)
  })
})
