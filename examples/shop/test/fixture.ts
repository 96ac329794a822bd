/**
 * Test fixtures: a whole shop on its own ports, databases, Redis keys and queues (a unique
 * namespace), and a small cookie-keeping HTTP client that fills CSRF tokens like a browser.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { amqpClusterUrls, redisUrl, uniqueName } from '@ballast/testkit'
import mysql from 'mysql2/promise'
import type { ShardSpec, ShopConfig } from '../src/config.js'
import { controlHeaders } from '../src/control.js'
import { dropKeysAndQueues } from '../src/data/cleanup.js'
import type { Secrets } from '../src/secrets.js'
import type { ChaosFault } from '../src/services/gateway.js'
import { findFreeBasePort, type Shop, startShop } from '../src/supervisor.js'

export interface TestShop extends Shop {
  close(): Promise<void>
}

export async function startTestShop(
  label: string,
  opts: {
    products?: number
    users?: number
    stock?: number
    degrader?: ShopConfig['degrader']
  } = {},
): Promise<TestShop> {
  const ns = uniqueName(label)
    .replace(/[^A-Za-z0-9_]/g, '_')
    .slice(0, 40)
  const runDir = mkdtempSync(join(tmpdir(), `${ns}-`))
  const basePort = await findFreeBasePort()
  const shop = await startShop({
    basePort,
    ns,
    runDir,
    seedProducts: opts.products ?? 300,
    seedUsers: opts.users ?? 20,
    stock: opts.stock ?? 100_000,
    ...(opts.degrader ? { degrader: opts.degrader } : {}),
    // Shard b on a MariaDB pair of the shop's own: the chaos run switches its primary over.
    shardPair: 'private',
    // The resharding test's old copies go soon after each cut-over (at least the map's lease).
    reshard: { graceMs: 4000 },
    onLog: () => {},
  })
  return Object.assign(shop, {
    async close() {
      await shop.stop({ dropData: true })
      await dropKeysAndQueues(shop.config, await redisUrl(), await amqpClusterUrls())
      rmSync(runDir, { recursive: true, force: true })
    },
  })
}

/** The shop started by the global setup, as a test file sees it; faults go through its control port. */
export interface ShopHandle {
  config: ShopConfig
  secrets: Secrets
  url: string
  chaos(fault: ChaosFault, on: boolean): Promise<void>
  /** The supervisor's `/status` (processes, chaos switch, what the last cluster faults did). */
  status(): Promise<Awaited<ReturnType<Shop['status']>>>
}

export function shopHandle(provided: {
  config: ShopConfig
  secrets: Secrets
  url: string
}): ShopHandle {
  return {
    ...provided,
    async chaos(fault, on) {
      const res = await fetch(`http://127.0.0.1:${provided.config.controlPort}/chaos`, {
        method: 'POST',
        headers: controlHeaders(provided.config.runDir),
        body: JSON.stringify({ fault, on }),
      })
      if (!res.ok) throw new Error(`chaos ${fault} answered ${res.status}: ${await res.text()}`)
    },
    async status() {
      const res = await fetch(`http://127.0.0.1:${provided.config.controlPort}/status`, {
        headers: controlHeaders(provided.config.runDir),
        signal: AbortSignal.timeout(30_000),
      })
      if (!res.ok) throw new Error(`status answered ${res.status}`)
      return (await res.json()) as Awaited<ReturnType<Shop['status']>>
    },
  }
}

/** Rows of a shard's primary (for checks the shop's pages do not show). */
export async function shardRows<T = mysql.RowDataPacket>(
  shard: ShardSpec,
  sql: string,
  params: unknown[] = [],
): Promise<T[]> {
  const c = await mysql.createConnection({ ...shard.primary })
  try {
    const [rows] = await c.query(sql, params)
    return rows as T[]
  } finally {
    await c.end()
  }
}

export async function catalogRows<T = mysql.RowDataPacket>(
  shop: { config: ShopConfig },
  sql: string,
  params: unknown[] = [],
): Promise<T[]> {
  const c = await mysql.createConnection({ ...shop.config.catalogDb })
  try {
    const [rows] = await c.query(sql, params)
    return rows as T[]
  } finally {
    await c.end()
  }
}

/** A cookie-keeping client: `post` takes the CSRF token from the last page it fetched. */
export class Client {
  readonly base: string
  readonly cookies = new Map<string, string>()
  lastHtml = ''
  constructor(base: string) {
    this.base = base.replace(/\/$/, '')
  }
  #cookieHeader(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ')
  }
  #keep(res: Response): void {
    for (const c of res.headers.getSetCookie()) {
      const [pair = ''] = c.split(';')
      const i = pair.indexOf('=')
      const name = pair.slice(0, i)
      const value = pair.slice(i + 1)
      if (/max-age=0/i.test(c) || value === '') this.cookies.delete(name)
      else this.cookies.set(name, value)
    }
  }
  async get(
    path: string,
    headers: Record<string, string> = {},
  ): Promise<Response & { text_: string }> {
    const res = await fetch(this.base + path, {
      headers: { cookie: this.#cookieHeader(), ...headers },
      redirect: 'manual',
      signal: AbortSignal.timeout(15_000),
    })
    this.#keep(res)
    const text = await res.text()
    if ((res.headers.get('content-type') ?? '').includes('text/html')) this.lastHtml = text
    return Object.assign(res, { text_: text })
  }
  csrf(): string {
    return /name="_csrf" value="([^"]+)"/.exec(this.lastHtml)?.[1] ?? ''
  }
  async post(
    path: string,
    form: Record<string, string>,
    headers: Record<string, string> = {},
  ): Promise<Response & { text_: string }> {
    const body = new URLSearchParams({ _csrf: this.csrf(), ...form })
    const res = await fetch(this.base + path, {
      method: 'POST',
      headers: {
        cookie: this.#cookieHeader(),
        'content-type': 'application/x-www-form-urlencoded',
        ...headers,
      },
      body,
      redirect: 'manual',
      signal: AbortSignal.timeout(15_000),
    })
    this.#keep(res)
    return Object.assign(res, { text_: await res.text() })
  }
  /** Presses Pay on the checkout page last fetched: posts its hidden fields, as a browser does. */
  async pay(headers: Record<string, string> = {}): Promise<Response & { text_: string }> {
    const hidden = (name: string) =>
      new RegExp(`name="${name}" value="([^"]*)"`).exec(this.lastHtml)?.[1] ?? ''
    return this.post('/checkout', { idem: hidden('idem'), cart: hidden('cart') }, headers)
  }
  async login(email: string, password: string): Promise<void> {
    await this.get('/login')
    const res = await this.post('/login', { email, password })
    if (res.status !== 303) throw new Error(`login of ${email} answered ${res.status}`)
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export async function eventually<T>(
  fn: () => Promise<T | undefined | false>,
  timeoutMs: number,
  what: string,
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  while (Date.now() < deadline) {
    try {
      const v = await fn()
      if (v) return v
    } catch (err) {
      last = err
    }
    await sleep(250)
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`)
}
