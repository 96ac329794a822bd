/**
 * Operations: the catalog sheds recommendations, then reviews, under a bounded overload and
 * brings them back after (resilience's degrader); a service process killed with SIGKILL is
 * restarted by the supervisor while the shop keeps serving through the other instance.
 */
import { describe, expect, inject, it } from 'vitest'
import { controlHeaders } from '../src/control.js'
import type { ProcessInfo } from '../src/supervisor.js'
import { Client, eventually, shopHandle, sleep } from './fixture.js'

const shop = shopHandle(inject('shop'))

interface Change {
  feature: string
  from: string
  to: string
  reason: string
  at: number
}

const portOf = (name: string): number => {
  const i = shop.config.instances.find((x) => x.name === name)
  if (!i) throw new Error(`no instance ${name}`)
  return i.port
}

async function catalogStats(name: string): Promise<{
  degrader: { features: Record<string, { level: string }> }
  degraderChanges: Change[]
}> {
  const res = await fetch(`http://127.0.0.1:${portOf(name)}/_internal/stats`, {
    signal: AbortSignal.timeout(5000),
  })
  return (await res.json()) as Awaited<ReturnType<typeof catalogStats>>
}

async function processes(): Promise<ProcessInfo[]> {
  const res = await fetch(`http://127.0.0.1:${shop.config.controlPort}/status`, {
    headers: controlHeaders(shop.config.runDir),
    signal: AbortSignal.timeout(5000),
  })
  return ((await res.json()) as { processes: ProcessInfo[] }).processes
}

describe('degradation under load', () => {
  it('switches recommendations off before reviews under a bounded overload, and back on after', async () => {
    const name = 'catalog-2'
    const base = `http://127.0.0.1:${portOf(name)}`
    const since = Date.now()
    let stop = false
    let requests = 0
    let recsOffReviewsOn = 0
    const words = ['Kettle', 'Lamp', 'Chair', 'Mug', 'Desk', 'Tent', 'Red', 'Blue']
    // At most 48 clients for at most 12 s, straight at one instance (the gateway would cache):
    // searches (each a database query, so requests stay in flight) and product pages. On a
    // quiet machine the server answers fast, so it takes this many clients to keep more than
    // the test's limit of 6 requests in flight at the moments the degrader samples.
    const load = Array.from({ length: 48 }, async (_, i) => {
      while (!stop) {
        const path =
          i % 4 === 0
            ? `/product/${1 + ((requests + i) % 50)}`
            : `/search?q=${words[(requests + i) % words.length]}`
        const res = await fetch(base + path, {
          signal: AbortSignal.timeout(10_000),
        }).catch(() => undefined)
        requests++
        const text = (await res?.text()) ?? ''
        if (
          text.includes('data-degraded="recommendations"') &&
          !text.includes('data-degraded="reviews"')
        )
          recsOffReviewsOn++
      }
    })
    let last: unknown
    const shedChanges = await eventually(
      async () => {
        const stats = await catalogStats(name)
        last = stats.degrader
        const changes = stats.degraderChanges.filter(
          (c) => c.at >= since && c.reason === 'overload' && c.to === 'off',
        )
        return changes.some((c) => c.feature === 'reviews') ? changes : undefined
      },
      12_000,
      'the catalog to shed both features under load',
    )
      .catch((err: Error) => {
        throw new Error(`${err.message}; last degrader stats ${JSON.stringify(last)}`)
      })
      .finally(() => {
        stop = true
      })
    await Promise.all(load)
    expect(requests).toBeGreaterThan(0)
    // Recommendations (priority 10) went first; reviews (20) only after them.
    const recsOff = shedChanges.find((c) => c.feature === 'recommendations')
    const reviewsOff = shedChanges.find((c) => c.feature === 'reviews')
    expect(recsOff).toBeDefined()
    expect(reviewsOff).toBeDefined()
    expect(recsOff?.at ?? Infinity).toBeLessThanOrEqual(reviewsOff?.at ?? 0)
    // And pages showed it: recommendations switched off while reviews were still there.
    expect(recsOffReviewsOn).toBeGreaterThan(0)

    // Load gone: both come back (recovered), and the page shows recommendations again.
    await eventually(
      async () => {
        const s = await catalogStats(name)
        return (
          s.degrader.features.recommendations?.level === 'full' &&
          s.degrader.features.reviews?.level === 'full'
        )
      },
      10_000,
      'recommendations and reviews to come back',
    )
    const page = await (await fetch(`${base}/product/7`)).text()
    expect(page).toContain('You may also like')
    expect(page).not.toContain('data-degraded')
    const recovered = (await catalogStats(name)).degraderChanges.filter(
      (c) => c.at >= since && c.reason === 'recovered',
    )
    expect(recovered.map((c) => c.feature)).toContain('recommendations')
  }, 30_000)
})

describe('supervisor', () => {
  it('restarts a service process killed with SIGKILL while the other instance keeps serving', async () => {
    const name = 'catalog-2'
    const before = (await processes()).find((p) => p.name === name)
    expect(before?.state).toBe('up')
    const oldPid = before?.pid ?? 0
    expect(oldPid).toBeGreaterThan(0)

    const c = new Client(shop.url)
    await c.login('user5@shop.example', shop.secrets.seedPassword)
    process.kill(oldPid, 'SIGKILL')

    // While it is gone, every page is served (logged-in pages are private: not the gateway's cache).
    const servedBy = new Set<string>()
    let back: ProcessInfo | undefined
    const deadline = Date.now() + 20_000
    while (Date.now() < deadline) {
      const res = await c.get('/search?q=Kettle')
      expect(res.status).toBe(200)
      const instance = /data-instance>([^<]+)</.exec(res.text_)?.[1]
      if (instance) servedBy.add(instance)
      back = (await processes()).find((p) => p.name === name)
      if (back?.state === 'up' && back.pid !== oldPid) break
      await sleep(100)
    }
    expect(servedBy).toContain('catalog-1')
    // The killed one came back as a new process, counted as a restart...
    expect(back?.state).toBe('up')
    expect(back?.pid).not.toBe(oldPid)
    expect(back?.restarts).toBeGreaterThanOrEqual(1)
    // ...answers, and the gateway sends it traffic again.
    const health = await fetch(`http://127.0.0.1:${portOf(name)}/_internal/health`)
    expect(health.status).toBe(200)
    await eventually(
      async () => {
        const res = await c.get('/search?q=Lamp')
        return res.status === 200 && res.text_.includes(`data-instance>${name}<`)
      },
      15_000,
      `the gateway to route to ${name} again`,
    )
  }, 45_000)
})
