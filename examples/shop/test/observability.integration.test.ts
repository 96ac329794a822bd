/**
 * The shop's metrics as an operator sees them: a real Prometheus (Debian's package, started by
 * the supervisor) scrapes every shop process; its rules pass promtool; the breaker alert fires
 * when the payment provider fails and clears once it is back; and the /ops page, in a real
 * browser, shows the charts from Prometheus's API and fits a 1280 px wide screen.
 */
import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { type Browser, chromium } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import {
  alerts,
  PROMTOOL_BIN,
  prometheusConfig,
  RULES_DIR,
  scrapeTargets,
} from '../src/platform/prometheus.js'
import { Client, eventually, shopHandle } from './fixture.js'

const run = promisify(execFile)
const CHROMIUM = '/usr/bin/chromium'
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-sync']
// Users and products of their own: the other test files share this shop.
const USERS = ['user17@shop.example', 'user18@shop.example']
const PRODUCTS = [251, 252, 253]

const shop = shopHandle(inject('shop'))
const prometheus = `http://127.0.0.1:${shop.config.prometheusPort}`

async function promQuery(
  query: string,
): Promise<{ metric: Record<string, string>; value: [number, string] }[]> {
  const res = await fetch(`${prometheus}/api/v1/query?${new URLSearchParams({ query })}`, {
    signal: AbortSignal.timeout(2000),
  })
  const body = (await res.json()) as {
    data: { result: { metric: Record<string, string>; value: [number, string] }[] }
  }
  return body.data.result
}

/** Adds a product and presses Pay: the order is taken whatever the provider does (payment is a worker's job). */
async function placeOrder(c: Client, productId: number): Promise<void> {
  await c.get(`/product/${productId}`)
  await c.post('/cart/add', { productId: String(productId), qty: '1' })
  await c.get('/checkout')
  await c.pay()
}

describe('Prometheus', () => {
  it('has a configuration and rules that promtool accepts', async () => {
    if (!existsSync(PROMTOOL_BIN))
      throw new Error(
        `${PROMTOOL_BIN} is missing: install Debian's package "prometheus" (bash scripts/system-deps.sh)`,
      )
    const dir = mkdtempSync(join(tmpdir(), 'shop-promtool-'))
    try {
      const file = join(dir, 'prometheus.yml')
      writeFileSync(file, prometheusConfig(shop.config))
      const config = await run(PROMTOOL_BIN, ['check', 'config', file])
      expect(config.stdout).toMatch(/SUCCESS/)
      const rules = await run(PROMTOOL_BIN, [
        'check',
        'rules',
        join(RULES_DIR, 'recording.yml'),
        join(RULES_DIR, 'alerts.yml'),
      ])
      expect(rules.stdout).toMatch(/recording\.yml\s+SUCCESS: \d+ rules found/)
      expect(rules.stdout).toMatch(/alerts\.yml\s+SUCCESS: 4 rules found/)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('scrapes every shop process, one job per service, and finds each one up', async () => {
    const expected = scrapeTargets(shop.config)
    const up = await eventually(
      async () => {
        const r = await promQuery('up')
        return r.length === expected.length && r.every((s) => s.value[1] === '1') ? r : undefined
      },
      15_000,
      'every target to be up',
    )
    expect(up.map((s) => `${s.metric.job}/${s.metric.instance}`).sort()).toEqual(
      expected.map((t) => `${t.job}/${t.instance}`).sort(),
    )
    // The exporter names each process after its resource (service.name, service.instance.id).
    const info = await promQuery('target_info{job="order"}')
    expect(info.map((s) => s.metric.service_instance_id).sort()).toEqual(
      shop.config.instances
        .filter((i) => i.service === 'order')
        .map((i) => i.name)
        .sort(),
    )
  })
})

describe('alerts', () => {
  it('fires BreakerOpen while the payment provider fails and clears after it is restored', async () => {
    const clients = await Promise.all(
      USERS.map(async (email) => {
        const c = new Client(shop.url)
        await c.login(email, shop.secrets.seedPassword)
        return c
      }),
    )
    const firing = async () =>
      (await alerts(prometheus)).filter(
        (a) => a.labels.alertname === 'BreakerOpen' && a.state === 'firing',
      )
    // Not firing before (another test file's chaos run may have opened the breaker moments ago).
    await eventually(
      async () => (await firing()).length === 0,
      20_000,
      'no BreakerOpen alert before the fault',
    )
    await shop.chaos('payment-provider', true)
    try {
      let n = 0
      // Orders keep coming until the payment worker's breaker has opened and the alert fires.
      const fired = await eventually(
        async () => {
          await Promise.all(
            clients.map((c, i) => placeOrder(c, PRODUCTS[(n++ + i) % PRODUCTS.length] as number)),
          )
          const f = await firing()
          return f.length > 0 ? f : undefined
        },
        20_000,
        'the BreakerOpen alert to fire',
      )
      // The payment worker's breaker, and only that one (not the catalog's mirror of it).
      expect(fired).toHaveLength(1)
      expect(fired[0]?.labels).toMatchObject({
        job: 'payment',
        ballast_resilience_breaker_name: 'payment-provider',
        severity: 'page',
      })
    } finally {
      await shop.chaos('payment-provider', false)
    }
    // The worker's retries close the breaker; the alert clears 10 s after it was last open.
    await eventually(
      async () => (await firing()).length === 0,
      25_000,
      'the BreakerOpen alert to clear',
    )
  }, 70_000)
})

describe('the ops page', () => {
  let browser: Browser
  beforeAll(async () => {
    if (!existsSync(CHROMIUM))
      throw new Error(
        `${CHROMIUM} is missing: install Debian's chromium (bash scripts/system-deps.sh)`,
      )
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS })
  }, 30_000)
  afterAll(async () => {
    await browser?.close()
  })

  it('shows charts with data from Prometheus and fits a 1280×800 screen', async () => {
    const ctx = await browser.newContext({
      baseURL: shop.url,
      viewport: { width: 1280, height: 800 },
    })
    const page = await ctx.newPage()
    await page.goto('/login')
    await page.fill('input[name=email]', 'admin@shop.example')
    await page.fill('input[name=password]', shop.secrets.adminPassword)
    await page.click('button:has-text("Log in")')
    await page.waitForURL((u) => !u.pathname.startsWith('/login'))
    // Traffic for the request-rate chart.
    for (let i = 0; i < 5; i++) await page.request.get('/')
    const charts = await eventually(
      async () => {
        await page.goto('/ops')
        const withData = await page
          .locator('svg[data-chart][data-series]:not([data-series="0"])')
          .count()
        return withData >= 3 ? withData : undefined
      },
      15_000,
      'the ops page to show charts with data',
    )
    expect(charts).toBeGreaterThanOrEqual(3)
    for (const name of [
      'request-rate',
      'error-ratio',
      'p99',
      'cache-hit-ratio',
      'breakers',
      'queues',
      'replica-lag',
    ])
      expect(await page.locator(`svg[data-chart="${name}"]`).count(), name).toBe(1)
    // A line with points: a path with at least two coordinates.
    const path = await page
      .locator('svg[data-chart="request-rate"] path[data-line]')
      .first()
      .getAttribute('d')
    expect(path).toMatch(/^M[\d.]+ [\d.]+( L[\d.]+ [\d.]+)+/)
    expect(await page.locator('[data-alerts]').count()).toBe(1)
    // The traces section (the waterfall of the last checkouts, tested with a real trace in
    // tracing.integration.test.ts) and every instance's values as text, never raw JSON.
    expect(await page.locator('[data-traces]').count()).toBe(1)
    const cells = await page.locator('[data-instance-row] td').allTextContents()
    expect(cells.length).toBeGreaterThan(10)
    for (const cell of cells) expect(cell).not.toMatch(/[{}]|"\w+":/)
    expect(cells.join(' ')).toMatch(/broker: published \d+/)
    // A string: the test's TypeScript has no DOM types.
    const overflow = Number(
      await page.evaluate('document.documentElement.scrollWidth - window.innerWidth'),
    )
    expect(overflow).toBeLessThanOrEqual(0)
    await ctx.close()
  }, 30_000)
})
