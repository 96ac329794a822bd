/**
 * gateway: the `@ballast/lb` reverse proxy in front of every web service (per-service
 * balancers with health checks and retries, routing by path), its response cache for public
 * catalog pages (purged when a price changes), the static assets, and the operations page.
 */
import { type CachedResponse, createProxy, type ProxyRoute, type ResponseCache } from '@ballast/lb'
import { instancesOf, type ShopConfig, type WebService } from '../config.js'
import { controlHeaders } from '../control.js'
import type { ShardsView } from '../platform/reshardView.js'
import type { RouterHealth } from '../platform/sharding.js'
import { opsCharts } from '../web/charts.js'
import { html } from '../web/html.js'
import { HttpError, send, sendJson } from '../web/http.js'
import { readable, readableBroker, readableDegrader, readableOutbox } from '../web/readable.js'
import { type MapFollower, shardsPanel } from '../web/shardsPanel.js'
import { findHashedAsset, IMMUTABLE } from '../web/static.js'
import { traceWaterfallSection } from '../web/waterfall.js'
import { GATEWAY_PURGE_CHANNEL } from './catalog.js'
import {
  createServiceEnv,
  field,
  fragment,
  go,
  page,
  requireUser,
  session,
  webRouter,
} from './common.js'

/** Which service owns which path prefix; everything else is the catalog's. */
export const ROUTES: { prefix: string; service: WebService }[] = [
  { prefix: '/signup', service: 'account' },
  { prefix: '/login', service: 'account' },
  { prefix: '/logout', service: 'account' },
  { prefix: '/logout-everywhere', service: 'account' },
  { prefix: '/account', service: 'account' },
  { prefix: '/cart', service: 'cart' },
  { prefix: '/checkout', service: 'order' },
  { prefix: '/orders', service: 'order' },
  { prefix: '/', service: 'catalog' },
]

export const CHAOS_FAULTS = [
  'catalog-instance',
  'redis',
  'replica',
  'rabbitmq',
  'rabbitmq-node',
  'redis-failover',
  'shard-primary',
  'payment-provider',
] as const
export type ChaosFault = (typeof CHAOS_FAULTS)[number]

/** What each fault of the chaos switch does, as the ops page says it. */
export const CHAOS_FAULT_DESCRIPTIONS: Record<ChaosFault, string> = {
  'catalog-instance': 'stops catalog-1 (the balancer ejects it)',
  redis: 'cuts the standalone Redis (cache L2, idempotency keys, rate limits)',
  replica: "cuts shard a's replica (reads fall back to the primary)",
  rabbitmq: 'cuts every RabbitMQ node (the outbox holds events)',
  'rabbitmq-node':
    "SIGKILLs the RabbitMQ cluster node carrying most of the shop's connections (quorum queues keep going on the other two); restore restarts it",
  'redis-failover':
    "fails over the sessions' Redis Cluster master holding most sessions: SIGKILLed on the shop's own cluster (its replica takes over; restore restarts it as a replica), CLUSTER FAILOVER and back on the shared one",
  'shard-primary':
    "switches shard b's primary over to its replica (read-only old primary, replica caught up and promoted, every router told to follow, the old primary rejoins as replica); restore switches back the same way",
  'payment-provider':
    'the payment provider refuses every charge (orders wait in "payment pending")',
}

/** A bounded in-memory response store; price changes clear it through Redis pub/sub. */
function memoryResponseCache(max = 2000): ResponseCache & { clear(): void; size(): number } {
  const map = new Map<string, { value: CachedResponse; expires: number }>()
  return {
    get(key) {
      const e = map.get(key)
      if (!e) return undefined
      if (e.expires <= Date.now()) {
        map.delete(key)
        return undefined
      }
      return e.value
    },
    set(key, value, ttlMs) {
      if (map.size >= max) map.delete(map.keys().next().value as string)
      map.set(key, { value, expires: Date.now() + ttlMs })
    },
    clear: () => map.clear(),
    size: () => map.size,
  }
}

async function fetchJson(url: string, init: RequestInit = {}, timeoutMs = 1000): Promise<unknown> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) })
  if (!res.ok) throw new Error(`${url} answered ${res.status}`)
  return res.json()
}

/** Services whose processes route to the shards: each follows the slot map. */
const ROUTING_SERVICES: ReadonlySet<string> = new Set([
  'account',
  'cart',
  'order',
  'inventory',
  'payment',
  'delivery',
])

/** Each routing process's slot map version, from its stats (undefined: it did not answer). */
function mapFollowers(
  instances: readonly {
    spec: { name: string; service: string }
    stats?: Record<string, unknown>
  }[],
): MapFollower[] {
  return instances
    .filter((i) => ROUTING_SERVICES.has(i.spec.service))
    .map((i) => ({
      name: i.spec.name,
      version: (i.stats?.router as RouterHealth | undefined)?.slotMapVersion,
    }))
}

export async function startGateway(config: ShopConfig, instance: string, port: number) {
  const env = createServiceEnv(config, instance)
  const responseCache = memoryResponseCache()
  const sub = env.subscriber()
  const purges = { received: 0 }
  await sub.subscribe(GATEWAY_PURGE_CHANNEL(config.ns)).catch(() => {})
  sub.on('message', () => {
    purges.received++
    responseCache.clear()
  })

  const routes: ProxyRoute[] = ROUTES.map((r) => ({
    name: `${r.service}${r.prefix}`,
    pathPrefix: r.prefix,
    upstream: instancesOf(config, r.service).map((i) => ({
      id: i.name,
      value: `http://127.0.0.1:${i.port}`,
    })),
  }))
  const proxy = createProxy({
    routes,
    balancer: {
      strategy: 'least-request',
      // An instance that failed (crashed, restarted by the supervisor) is tried again after 3 s (5 s at most),
      // not lb's default 30 s; the health check keeps it out while it is really down.
      outlierDetection: {
        consecutiveFailures: 3,
        baseEjectionTime: '3s',
        maxEjectionTime: '5s',
      },
      // A restarted instance ramps up over 3 s (lb's default is 10 s): the services are small.
      slowStart: { window: '3s' },
    },
    healthCheck: {
      check: { type: 'http', path: '/_internal/health' },
      interval: '1s',
      timeout: '1s',
      rise: 1,
      fall: 2,
    },
    connectTimeout: 500,
    headersTimeout: '10s',
    maxAttempts: 2,
    cache: { store: responseCache },
  })
  env.closers.push(() => proxy.close())

  const app = webRouter(env, {
    stats: () => ({
      proxy: proxy.stats(),
      responseCache: { entries: responseCache.size(), purges: purges.received },
    }),
  })

  /** Every instance's stats (but the gateway's), each bounded in time; `only` picks services. */
  const instanceStats = (only?: ReadonlySet<string>) =>
    Promise.all(
      config.instances
        .filter((i) => i.service !== 'gateway' && (!only || only.has(i.service)))
        .map(async (i) => {
          try {
            return {
              spec: i,
              stats: (await fetchJson(`http://127.0.0.1:${i.port}/_internal/stats`)) as Record<
                string,
                unknown
              >,
            }
          } catch (err) {
            return { spec: i, error: (err as Error).message }
          }
        }),
    )

  /** The supervisor's slot map and resharding view (undefined: it did not answer). */
  const shardsView = async (): Promise<ShardsView | undefined> => {
    try {
      return (await fetchJson(
        `http://127.0.0.1:${config.controlPort}/shards`,
        { headers: controlHeaders(config.runDir) },
        // two reads of the store's tables on the standard server
        5000,
      )) as ShardsView
    } catch {
      return undefined
    }
  }

  const ops = async () => {
    const [instances, shards] = await Promise.all([instanceStats(), shardsView()])
    let control: Record<string, unknown> | undefined
    try {
      control = (await fetchJson(`http://127.0.0.1:${config.controlPort}/status`, {
        headers: controlHeaders(config.runDir),
      })) as Record<string, unknown>
    } catch {}
    return {
      instances,
      gateway: {
        proxy: proxy.stats(),
        responseCache: { entries: responseCache.size(), purges: purges.received },
      },
      control,
      shards,
    }
  }

  const requireAdmin = (ctx: Parameters<typeof requireUser>[0]) => {
    if (!requireUser(ctx).isAdmin) throw new HttpError(403, 'Admins only')
  }

  app.get('/ops.json', async (ctx) => {
    requireAdmin(ctx)
    sendJson(ctx, 200, await ops())
  })

  app.get('/ops', async (ctx) => {
    requireAdmin(ctx)
    // The stats of every process, the charts and alerts from Prometheus and the last checkouts'
    // traces from the supervisor's receiver, read together (each bounded in time, none throws).
    const [o, observed, waterfall] = await Promise.all([
      ops(),
      opsCharts(config),
      traceWaterfallSection(config),
    ])
    const get = (v: unknown, ...path: string[]): unknown =>
      path.reduce<unknown>(
        (a, k) => (a && typeof a === 'object' ? (a as Record<string, unknown>)[k] : undefined),
        v,
      )
    const ratio = (c: unknown) => {
      const s = c as { l1Hits?: number; l2Hits?: number; misses?: number } | undefined
      if (!s) return ''
      const total = (s.l1Hits ?? 0) + (s.l2Hits ?? 0) + (s.misses ?? 0)
      return total === 0
        ? 'no reads yet'
        : `L1 ${(((s.l1Hits ?? 0) / total) * 100).toFixed(1)}% · L2 ${(((s.l2Hits ?? 0) / total) * 100).toFixed(1)}% · miss ${(((s.misses ?? 0) / total) * 100).toFixed(1)}%`
    }
    const routeStats = o.gateway.proxy.routes
    const chaos = (get(o.control, 'chaos') ?? {}) as Record<string, boolean>
    const chaosDetails = (get(o.control, 'chaosDetails') ?? {}) as Record<string, string>
    const csrf = session(ctx).csrfToken()
    await page(
      ctx,
      env,
      'Operations',
      html`<h1>Operations</h1>
${observed.alerts}
${shardsPanel(o.shards, mapFollowers(o.instances), csrf)}
<h2>Metrics <span class="muted">(Prometheus, last 5 minutes)</span></h2>
${observed.charts}
${waterfall}
<h2>Chaos switch</h2>
<table><thead><tr><th>fault</th><th>what it does</th><th>state</th><th>last switch</th><th></th></tr></thead><tbody>
${CHAOS_FAULTS.map(
  (
    f,
  ) => html`<tr data-fault="${f}"><td>${f}</td><td class="muted">${CHAOS_FAULT_DESCRIPTIONS[f]}</td><td class="${chaos[f] ? 'bad' : 'ok'}">${chaos[f] ? 'FAULT ON' : 'normal'}</td><td data-chaos-detail>${chaosDetails[f] ?? ''}</td><td>
<form method="post" action="/ops/chaos" class="inline"><input type="hidden" name="_csrf" value="${csrf}"><input type="hidden" name="fault" value="${f}"><input type="hidden" name="on" value="${chaos[f] ? '0' : '1'}"><button class="${chaos[f] ? '' : 'secondary'}">${chaos[f] ? 'restore' : 'inject'}</button></form></td></tr>`,
)}
</tbody></table>
<h2>Balancer endpoints (gateway)</h2>
<table><thead><tr><th>route</th><th>endpoint</th><th>healthy</th><th>ejected</th><th>in flight</th></tr></thead><tbody>
${Object.entries(routeStats).flatMap(([route, s]) =>
  (
    (s as { endpoints?: { id: string; healthy: boolean; ejected: boolean; inFlight: number }[] })
      .endpoints ?? []
  ).map(
    (e) =>
      html`<tr><td>${route}</td><td>${e.id}</td><td class="${e.healthy ? 'ok' : 'bad'}">${e.healthy ? 'yes' : 'NO'}</td><td class="${e.ejected ? 'bad' : ''}">${e.ejected ? 'ejected' : 'no'}</td><td>${e.inFlight}</td></tr>`,
  ),
)}
</tbody></table>
<p>Gateway: ${o.gateway.proxy.requests} requests, response cache ${o.gateway.proxy.cacheHits} hits / ${o.gateway.proxy.cacheMisses} misses, ${o.gateway.responseCache.entries} entries, ${o.gateway.responseCache.purges} purges.</p>
<h2>Instances</h2>
<table class="instances"><thead><tr><th>instance</th><th>cache (L1 / L2 / miss)</th><th>breaker</th><th>shards (primary / replica lag)</th><th>queue work</th><th>other</th></tr></thead><tbody>
${o.instances.map((i) => {
  const s = i.stats
  if (!s)
    return html`<tr><td>${i.spec.name}</td><td colspan="5" class="bad">down: ${i.error ?? ''}</td></tr>`
  // routerHealth() of the instance's shard router: per shard the statements and connection
  // errors, per replica its health and measured lag (-1: replication stopped).
  const router = s.router as RouterHealth | undefined
  const breaker = s.breaker as { state?: string } | undefined
  const work = [
    s.counters ? readable(s.counters) : '',
    s.broker ? `broker: ${readableBroker(s.broker)}` : '',
    s.outbox ? `outbox: ${readableOutbox(get(s, 'outbox', 'relays'))}` : '',
  ].filter(Boolean)
  const other = [
    s.degrader ? `degrader: ${readableDegrader(s.degrader)}` : '',
    s.payments ? `payments: ${readable(s.payments)}` : '',
    s.checkout ? `checkouts: ${readable(s.checkout)}` : '',
    s.loginLimits ? `login limits: ${readable(s.loginLimits)}` : '',
    s.mode ? `mode ${String(s.mode)}, ${readable(s, ['requests', 'charged', 'failures'])}` : '',
  ].filter(Boolean)
  return html`<tr data-instance-row="${i.spec.name}"><td>${i.spec.name}${s.pid ? html` <span class="muted">pid ${String(s.pid)}</span>` : ''}</td>
<td>${ratio(s.cache)}</td>
<td>${breaker ? html`<span class="${breaker.state === 'closed' ? 'ok' : 'bad'}">${breaker.state ?? ''}</span> <span class="muted">${readable(breaker, ['opens', 'failures', 'rejected', 'timeouts'])}</span>` : ''}</td>
<td data-router>${
    router
      ? html`${Object.entries(router.shards).map(([id, sh]) => {
          const replicas = router.replicas.filter((r) => r.shard === id)
          return html`${id}: primary ${sh.primaryQueries} q, ${sh.failed} failed (since start)${replicas.map(
            (r) =>
              html` / ${r.id} <span class="${r.available ? 'ok' : 'bad'}" data-replica="${r.id}">${r.available ? 'up' : `DOWN${r.reason ? ` (${r.reason})` : ''}`}, lag ${r.lagMs === null ? '?' : r.lagMs < 0 ? 'stopped' : `${r.lagMs} ms`}</span>`,
          )}<br>`
        })}<span class="muted">replica fallbacks ${router.replicaFallbacks}</span>`
      : ''
  }</td>
<td data-work>${work.map((w) => html`<div>${w}</div>`)}</td>
<td data-other class="muted">${other.map((w) => html`<div>${w}</div>`)}</td></tr>`
})}
</tbody></table>
<h2>Queues</h2>
<table><thead><tr><th>queue</th><th>ready</th><th>consumers</th></tr></thead><tbody>
${(
  (get(o.control, 'queues') as
    | { name: string; messages: number; consumers: number }[]
    | undefined) ?? []
).map(
  (q) => html`<tr><td>${q.name}</td><td>${q.messages}</td><td>${q.consumers}</td></tr>`,
)}</tbody></table>
<h2>Processes</h2>
<table><thead><tr><th>name</th><th>pid</th><th>state</th><th>restarts</th></tr></thead><tbody>
${(
  (get(o.control, 'processes') as
    | { name: string; pid: number; state: string; restarts: number }[]
    | undefined) ?? []
).map(
  (p) =>
    html`<tr><td>${p.name}</td><td>${p.pid}</td><td>${p.state}</td><td>${p.restarts}</td></tr>`,
)}</tbody></table>`,
      { cacheControl: 'no-store', wide: true },
    )
  })

  // The Shards panel alone: the ops page's script fetches it every second while a resharding runs.
  app.get('/ops/shards', async (ctx) => {
    requireAdmin(ctx)
    const [instances, view] = await Promise.all([instanceStats(ROUTING_SERVICES), shardsView()])
    await fragment(ctx, shardsPanel(view, mapFollowers(instances), session(ctx).csrfToken()))
  })

  // The panel's buttons: start a resharding onto the shard that owns nothing, pause, resume, abort.
  app.post('/ops/reshard', async (ctx) => {
    requireAdmin(ctx)
    const action = await field(ctx, 'action')
    const shard = await field(ctx, 'shard')
    if (!['add-shard', 'pause', 'resume', 'abort'].includes(action))
      throw new HttpError(400, 'Unknown resharding action')
    const res = await fetch(`http://127.0.0.1:${config.controlPort}/reshard`, {
      method: 'POST',
      headers: controlHeaders(config.runDir),
      body: JSON.stringify(action === 'add-shard' ? { action, shard } : { action }),
      // an abort waits for the moves to give their ranges back
      signal: AbortSignal.timeout(60_000),
    })
    if (!res.ok) {
      const { error } = (await res.json().catch(() => ({}))) as { error?: string }
      return go(ctx, '/ops', `Resharding: ${error ?? `the supervisor answered ${res.status}`}`)
    }
    await go(
      ctx,
      '/ops',
      action === 'add-shard'
        ? `Resharding started: adding shard ${shard}`
        : `Resharding: ${action}`,
    )
  })

  app.post('/ops/chaos', async (ctx) => {
    requireAdmin(ctx)
    const fault = await field(ctx, 'fault')
    const on = (await field(ctx, 'on')) === '1'
    if (!(CHAOS_FAULTS as readonly string[]).includes(fault))
      throw new HttpError(400, 'Unknown fault')
    await fetchJson(
      `http://127.0.0.1:${config.controlPort}/chaos`,
      {
        method: 'POST',
        headers: controlHeaders(config.runDir),
        body: JSON.stringify({ fault, on }),
      },
      // a RabbitMQ node waits for the cluster lock, and its restart takes ~10 s
      180_000,
    )
    await go(ctx, '/ops', `${fault}: ${on ? 'fault injected' : 'restored'}`)
  })

  const server = await app.listen(port)
  // The gateway's own pages, the static assets and its health stay here; all else is proxied.
  server.removeAllListeners('request')
  server.on('request', (req, res) => {
    // Decide on the path as the services will read it (`/./_internal/x` is `/_internal/x`),
    // so no spelling of an internal path is proxied past the gateway's own checks.
    let path: string
    try {
      path = new URL(req.url ?? '/', 'http://gateway.invalid').pathname
    } catch {
      path = '/'
    }
    if (path.startsWith('/static/')) {
      const a = findHashedAsset(path.slice('/static/'.length))
      const ctx = {
        req,
        res,
        url: new URL(req.url ?? '/', 'http://x'),
        params: {},
        cookies: {},
        state: {},
      }
      if (!a)
        return send(ctx, 404, 'not found', { contentType: 'text/plain', cacheControl: 'no-store' })
      return send(ctx, 200, a.body, { contentType: a.contentType, cacheControl: IMMUTABLE })
    }
    if (
      path === '/ops' ||
      path === '/ops.json' ||
      path.startsWith('/ops/') ||
      path.startsWith('/_internal/')
    ) {
      void app.handle(req, res)
      return
    }
    proxy.handle(req, res)
  })
  return {
    server,
    close: async () => {
      for (const c of env.closers.reverse()) await c()
    },
  }
}
