/**
 * What every web service shares: the session middleware (SSO through `@ballast/session`), CSRF
 * checks on every POST, the page layout, health and stats endpoints.
 */
import type { SessionStore } from '@ballast/session'
import type { ShopConfig } from '../config.js'
import { isLoopbackAddress, isLoopbackHost } from '../control.js'
import { createRedis, createRedisCluster, createRedisSubscriber } from '../platform/redis.js'
import { createShopSessions, type ShopSession, type ShopSessionData } from '../platform/session.js'
import { type ShardRouter, withCausalToken } from '../platform/sharding.js'
import { loadOrCreateSecrets, type Secrets } from '../secrets.js'
import { html, type SafeHtml } from '../web/html.js'
import {
  type Ctx,
  HttpError,
  Router,
  readForm,
  redirect,
  send,
  sendHtml,
  sendJson,
} from '../web/http.js'
import { asset } from '../web/static.js'

export interface ServiceEnv {
  config: ShopConfig
  instance: string
  secrets: Secrets
  redis: ReturnType<typeof createRedis>
  subscriber: () => ReturnType<typeof createRedisSubscriber>
  cluster: ReturnType<typeof createRedisCluster>
  sessions: SessionStore<ShopSessionData>
  closers: (() => Promise<void> | void)[]
}

export function createServiceEnv(config: ShopConfig, instance: string): ServiceEnv {
  const secrets = loadOrCreateSecrets(config.runDir)
  const redis = createRedis(config.redisUrl)
  redis.on('error', () => {})
  const cluster = createRedisCluster(config.redisClusterNodes)
  cluster.on('error', () => {})
  const env: ServiceEnv = {
    config,
    instance,
    secrets,
    redis,
    cluster,
    sessions: createShopSessions(cluster, config.ns, secrets.sessionSecret),
    closers: [],
    subscriber: () => {
      const sub = createRedisSubscriber(config.redisUrl)
      sub.on('error', () => {})
      env.closers.push(() => sub.disconnect())
      return sub
    },
  }
  env.closers.push(
    () => env.sessions.close(),
    () => redis.disconnect(),
    async () => {
      await cluster.quit().catch(() => cluster.disconnect())
    },
  )
  return env
}

/** The session of each request behind {@link webRouter}, set by its middleware. */
const requestSessions = new WeakMap<Ctx, ShopSession>()

export function session(ctx: Ctx): ShopSession {
  const s = requestSessions.get(ctx)
  if (s === undefined) throw new Error('no session on this request: route it through webRouter()')
  return s
}

export function currentUser(
  ctx: Ctx,
): { id: string; name: string; email: string; isAdmin: boolean } | undefined {
  const s = session(ctx)
  if (!s.userId) return undefined
  return {
    id: s.userId,
    name: s.data.name ?? '',
    email: s.data.email ?? '',
    isAdmin: s.data.isAdmin === true,
  }
}

export function requireUser(ctx: Ctx): {
  id: string
  name: string
  email: string
  isAdmin: boolean
} {
  const u = currentUser(ctx)
  if (!u) throw new HttpError(401, 'Please log in')
  return u
}

/** Writes the session (and its cookie) before the response goes out. */
async function commit(ctx: Ctx): Promise<void> {
  const s = requestSessions.get(ctx)
  if (!s) return
  const cookie = await s.commit()
  if (cookie) ctx.res.setHeader('set-cookie', cookie)
}

export interface PageOptions {
  status?: number
  cacheControl?: string
  /** A wider main column (the ops page's charts and tables), still within a 1280 px screen. */
  wide?: boolean
}

export async function page(
  ctx: Ctx,
  env: ServiceEnv,
  title: string,
  body: SafeHtml,
  opts: PageOptions = {},
): Promise<void> {
  const s = requestSessions.get(ctx)
  const user = s ? currentUser(ctx) : undefined
  const flash = s?.data.flash
  if (flash) s.data.flash = undefined
  // Only logged-in pages carry a token in the layout: public pages stay free of per-visitor data.
  const csrf = s && user ? s.csrfToken() : ''
  const doc = html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · ballast shop</title>
<link rel="stylesheet" href="${asset('app.css')}">
<script src="${asset('app.js')}" defer></script></head>
<body><header><a class="brand" href="/">ballast shop</a>
<form class="inline" action="/search" method="get"><input name="q" placeholder="Search products" aria-label="Search"></form>
<a href="/cart">Cart</a><a href="/orders">Orders</a>
${
  user
    ? html`<a href="/account" data-user="${user.email}">${user.name}</a>${user.isAdmin ? html`<a href="/ops">Ops</a><a href="/admin">Admin</a>` : ''}
<form class="inline" action="/logout" method="post"><input type="hidden" name="_csrf" value="${csrf}"><button class="secondary">Log out</button></form>`
    : html`<a href="/login">Log in</a><a href="/signup">Sign up</a>`
}
</header><main${opts.wide ? html` class="wide"` : ''}>
${flash ? html`<p class="flash">${flash}</p>` : ''}
${body}
</main><footer>served by <span data-instance>${env.instance}</span>${s && !s.isNew ? html` · session <span data-session>${s.idHash.slice(0, 12)}</span>` : ''}</footer></body></html>`
  await commit(ctx)
  sendHtml(ctx, opts.status ?? 200, doc, { cacheControl: opts.cacheControl })
}

export async function go(ctx: Ctx, location: string, flash?: string): Promise<void> {
  if (flash) session(ctx).data.flash = flash
  await commit(ctx)
  redirect(ctx, location)
}

/** A piece of a page (the ops page's script swaps it in), never cached, after the session is written. */
export async function fragment(ctx: Ctx, body: SafeHtml): Promise<void> {
  await commit(ctx)
  sendHtml(ctx, 200, body, { cacheControl: 'no-store' })
}

export async function json(ctx: Ctx, status: number, value: unknown): Promise<void> {
  await commit(ctx)
  sendJson(ctx, status, value)
}

/** A form field as a string ('' when missing). */
export async function field(ctx: Ctx, name: string): Promise<string> {
  return (await readForm(ctx)).get(name) ?? ''
}

/** The csrf hidden input for forms. */
export function csrfInput(ctx: Ctx): SafeHtml {
  return html`<input type="hidden" name="_csrf" value="${session(ctx).csrfToken()}">`
}

export interface WebServiceOptions {
  /** Stats this service adds to `/_internal/stats`. */
  stats?: () => Promise<Record<string, unknown>> | Record<string, unknown>
  /** Paths whose GETs must not load the session (cacheable public pages decide themselves). */
}

/** A router with the session middleware, CSRF checks and the internal endpoints. */
export function webRouter(env: ServiceEnv, opts: WebServiceOptions = {}): Router {
  const router = new Router()
  router.get('/_internal/health', (ctx) =>
    send(ctx, 200, 'ok', { contentType: 'text/plain', cacheControl: 'no-store' }),
  )
  router.get('/_internal/stats', async (ctx) => {
    sendJson(ctx, 200, {
      instance: env.instance,
      pid: process.pid,
      session: env.sessions.stats(),
      ...(await opts.stats?.()),
    })
  })
  router.use(async (ctx) => {
    if (isInternalPath(ctx.url.pathname)) {
      // A loopback peer that no proxy forwarded (the supervisor, the gateway's health checks),
      // or an admin's session: the gateway forwards with X-Forwarded-For, so a client that
      // reached an instance through it is not taken for a loopback peer.
      if (isDirectLoopbackPeer(ctx)) return
      requestSessions.set(
        ctx,
        await env.sessions.loadRequest({
          cookie: ctx.req.headers.cookie,
          ip: ctx.req.socket.remoteAddress,
        }),
      )
      if (currentUser(ctx)?.isAdmin !== true) throw new HttpError(403, 'Admins only')
      return
    }
    requestSessions.set(
      ctx,
      await env.sessions.loadRequest({
        cookie: ctx.req.headers.cookie,
        ip: ctx.req.socket.remoteAddress,
      }),
    )
    if (ctx.req.method === 'POST') {
      const token = ctx.req.headers['content-type']?.startsWith('application/x-www-form-urlencoded')
        ? (await readForm(ctx)).get('_csrf')
        : ctx.req.headers['x-csrf-token']
      if (!session(ctx).verifyCsrf(token))
        throw new HttpError(403, 'Invalid or missing CSRF token: reload the page and try again')
    }
  })
  router.onError((ctx, err) => {
    const { status, message, retryAfter } = errorAnswer(err)
    if (status === 500)
      process.stderr.write(`${env.instance}: ${String((err as Error)?.stack ?? err)}\n`)
    else if (retryAfter !== undefined)
      process.stderr.write(`${env.instance}: 503 ${errorCode(err)}: ${(err as Error).message}\n`)
    if (status === 401 && ctx.req.method === 'GET') {
      redirect(ctx, `/login?next=${encodeURIComponent(ctx.url.pathname)}`)
      return
    }
    const body = html`<h1>${status === 404 ? 'Not found' : 'Sorry'}</h1><p class="error">${message}</p>`
    sendHtml(ctx, status, body, {
      cacheControl: 'no-store',
      ...(retryAfter === undefined ? {} : { headers: { 'retry-after': String(retryAfter) } }),
    })
  })
  return router
}

/** Seconds a client is told to wait before it tries again after a retryable failure. */
const RETRY_AFTER_S = 1

/**
 * MariaDB's answers that roll a transaction back for another's sake: a deadlock (InnoDB's, or a
 * metadata lock's against DDL) and a lock wait timeout. Nothing of the request's transaction was
 * kept, so the same request may succeed in a moment.
 */
const TRANSIENT_ERRNOS = new Set([1213, 1205])

/**
 * The answer to an error a handler threw: an {@link HttpError}'s own status and message; a
 * ballast error marked `retryable` (a shard failing over, a slot moving to another shard, a
 * breaker open) or a transaction MariaDB rolled back for another's sake is `503` with
 * `Retry-After`, since the same request can succeed in a moment (a checkout is idempotent by
 * its form's key) and clients, proxies and load balancers treat a 503 that way; anything else
 * is `500`.
 */
export function errorAnswer(err: unknown): {
  status: number
  message: string
  retryAfter?: number
} {
  if (err instanceof HttpError) return { status: err.status, message: err.message }
  const { retryable, errno } = (err ?? {}) as { retryable?: unknown; errno?: unknown }
  if (retryable === true || (typeof errno === 'number' && TRANSIENT_ERRNOS.has(errno)))
    return {
      status: 503,
      message: 'Busy for a moment; please try again.',
      retryAfter: RETRY_AFTER_S,
    }
  return { status: 500, message: 'Something went wrong; please try again.' }
}

function errorCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : 'retryable'
}

/**
 * Runs `fn` with the session's causal token from `@ballast/sharding` (replica reads wait for the
 * user's own writes) and keeps the token, grown by the writes `fn` made, in the session: the
 * next request, on any instance, sees them.
 */
export async function consistent<T>(
  ctx: Ctx,
  router: ShardRouter,
  fn: () => Promise<T>,
): Promise<T> {
  const s = session(ctx)
  const { value, token } = await withCausalToken(router, s.data.ryw, fn)
  if (token !== (s.data.ryw ?? '')) s.data.ryw = token
  return value
}

/**
 * Whether the router reads `pathname` as an `/_internal/` path. It matches on the non-empty
 * segments, so `//_internal/stats` (what `/.//_internal/stats` resolves to) is one: the guard
 * decides on what the router serves, not on a prefix of the spelling.
 */
export function isInternalPath(pathname: string): boolean {
  let start = 0
  while (pathname.charCodeAt(start) === 47) start++
  return (
    pathname.startsWith('_internal', start) &&
    (pathname.length === start + 9 || pathname.charCodeAt(start + 9) === 47)
  )
}

/**
 * Whether the request comes straight from this machine: a loopback peer, a loopback Host (a
 * DNS-rebound page names another) and no `X-Forwarded-For` (nothing proxied it).
 */
function isDirectLoopbackPeer(ctx: Ctx): boolean {
  return (
    isLoopbackAddress(ctx.req.socket.remoteAddress) &&
    isLoopbackHost(ctx.req.headers.host) &&
    ctx.req.headers['x-forwarded-for'] === undefined
  )
}

/**
 * The client's address. Behind the gateway every request comes from 127.0.0.1; the gateway
 * (lb's proxy) appends the address it saw as the last `X-Forwarded-For` entry, the only one
 * to trust (earlier entries come from the client).
 */
export function clientAddress(ctx: Ctx): string {
  const peer = ctx.req.socket.remoteAddress ?? 'unknown'
  const xff = ctx.req.headers['x-forwarded-for']
  const isLoopback = peer === '127.0.0.1' || peer === '::1' || peer === '::ffff:127.0.0.1'
  if (!isLoopback || typeof xff !== 'string') return peer
  return xff.split(',').at(-1)?.trim() || peer
}
