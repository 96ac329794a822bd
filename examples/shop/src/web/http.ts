/**
 * A deliberately small HTTP layer on node:http for the shop's services: routes, cookies,
 * urlencoded forms, and responses with ETags, compression and security headers. Every request
 * is a SERVER span (`METHOD route`, continuing the caller's W3C trace context) and a point of
 * the `http.server.request.duration` histogram.
 */
import { createHash } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { performance } from 'node:perf_hooks'
import { brotliCompressSync, gzipSync, constants as zlib } from 'node:zlib'
import {
  type Attributes,
  context,
  type Histogram,
  metrics,
  SpanKind,
  SpanStatusCode,
  trace,
} from '@opentelemetry/api'
import { contextFromHeaders, errorType, SHOP_SCOPE } from '../platform/tracing.js'
import type { SafeHtml } from './html.js'
import { sameOriginPath } from './redirect.js'

export interface Ctx {
  req: IncomingMessage
  res: ServerResponse
  url: URL
  params: Record<string, string>
  cookies: Record<string, string>
  /** Values shared by middleware (session, user, csrf token). */
  state: Record<string, unknown>
}

export type Handler = (ctx: Ctx) => Promise<void> | void

interface Route {
  method: string
  /** The route as registered (`/orders/:id`): the span name and `http.route`, never the ids. */
  path: string
  parts: string[]
  handler: Handler
}

/**
 * Bucket boundaries (seconds) of the request duration histogram: the ballast packages'
 * `DURATION_BUCKETS` (the shop cannot import `@ballast/shared`), half a millisecond to ten
 * seconds.
 */
const DURATION_BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
]

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'])

let requestDuration: Histogram | undefined

/**
 * `http.server.request.duration` on the global meter, made at the first request: the process
 * installs its MeterProvider at start, before it serves anything.
 */
function requestDurationHistogram(): Histogram {
  requestDuration ??= metrics.getMeter(SHOP_SCOPE).createHistogram('http.server.request.duration', {
    description: 'Duration of the HTTP requests this process served',
    unit: 's',
    advice: { explicitBucketBoundaries: DURATION_BUCKETS },
  })
  return requestDuration
}

export class HttpError extends Error {
  readonly status: number
  constructor(status: number, message: string) {
    super(message)
    this.status = status
  }
}

export class Router {
  readonly #routes: Route[] = []
  #before: Handler[] = []
  #onError: (ctx: Ctx, err: unknown) => void = defaultOnError

  use(fn: Handler): this {
    this.#before.push(fn)
    return this
  }
  get(path: string, handler: Handler): this {
    return this.#add('GET', path, handler)
  }
  post(path: string, handler: Handler): this {
    return this.#add('POST', path, handler)
  }
  onError(fn: (ctx: Ctx, err: unknown) => void): this {
    this.#onError = fn
    return this
  }
  #add(method: string, path: string, handler: Handler): this {
    this.#routes.push({ method, path, parts: path.split('/').filter(Boolean), handler })
    return this
  }

  match(
    method: string,
    pathname: string,
  ): { handler: Handler; params: Record<string, string>; route: string } | undefined {
    const segs = pathname.split('/').filter(Boolean)
    for (const r of this.#routes) {
      if (r.method !== method && !(method === 'HEAD' && r.method === 'GET')) continue
      if (r.parts.length !== segs.length) continue
      const params: Record<string, string> = {}
      let ok = true
      for (let i = 0; i < segs.length; i++) {
        const p = r.parts[i] as string
        const s = segs[i] as string
        if (p.startsWith(':')) {
          try {
            params[p.slice(1)] = decodeURIComponent(s)
          } catch {
            ok = false
            break
          }
        } else if (p !== s) {
          ok = false
          break
        }
      }
      if (ok) return { handler: r.handler, params, route: r.path }
    }
    return undefined
  }

  /**
   * Serves one request in a SERVER span named `METHOD route` (just `METHOD` when no route
   * matches), child of the context in the request's `traceparent`; the span ends, and the
   * duration is recorded, when the response closes. The attributes are bounded: method, route,
   * status, `error.type`; never the path with its ids, a query, a cookie or a user.
   */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now()
    const url = new URL(req.url ?? '/', 'http://shop.local')
    const method = KNOWN_METHODS.has(req.method ?? '') ? (req.method as string) : '_OTHER'
    const m = this.match(req.method ?? 'GET', url.pathname)
    const attributes: Attributes = { 'http.request.method': method, 'url.scheme': 'http' }
    if (m) attributes['http.route'] = m.route
    const parent = contextFromHeaders(req.headers)
    const span = trace
      .getTracer(SHOP_SCOPE)
      .startSpan(m ? `${method} ${m.route}` : method, { kind: SpanKind.SERVER, attributes }, parent)
    let failure: unknown
    res.once('close', () => {
      const status = res.statusCode
      span.setAttribute('http.response.status_code', status)
      const recorded: Attributes = {
        'http.request.method': method,
        'http.response.status_code': status,
      }
      // A server span fails on a 5xx only (a 4xx is the client's); error.type is the thrown
      // error's code when there was one, else the status, as the HTTP conventions ask.
      if (status >= 500 || !res.writableFinished) {
        const type =
          failure !== undefined ? errorType(failure) : status >= 500 ? String(status) : 'aborted'
        span.setAttribute('error.type', type)
        recorded['error.type'] = type
        if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR })
      }
      span.end()
      requestDurationHistogram().record((performance.now() - started) / 1000, recorded)
    })
    const ctx: Ctx = {
      req,
      res,
      url,
      params: {},
      cookies: parseCookies(req.headers.cookie),
      state: {},
    }
    await context.with(trace.setSpan(parent, span), async () => {
      try {
        if (!m) throw new HttpError(404, 'Not found')
        ctx.params = m.params
        for (const fn of this.#before) {
          await fn(ctx)
          if (res.headersSent || res.writableEnded) return
        }
        await m.handler(ctx)
      } catch (err) {
        if (!(err instanceof HttpError)) failure = err
        if (!res.headersSent) this.#onError(ctx, err)
        else res.destroy()
      }
    })
  }

  listen(port: number, host = '127.0.0.1'): Promise<Server> {
    const server = createServer((req, res) => {
      void this.handle(req, res)
    })
    server.keepAliveTimeout = 65_000
    return new Promise((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, host, () => resolve(server))
    })
  }
}

function defaultOnError(ctx: Ctx, err: unknown): void {
  const status = err instanceof HttpError ? err.status : 500
  const message = err instanceof HttpError ? err.message : 'Internal error'
  if (status === 500) process.stderr.write(`${String((err as Error)?.stack ?? err)}\n`)
  sendText(ctx, status, message)
}

export function parseCookies(header: string | undefined): Record<string, string> {
  const out: Record<string, string> = {}
  if (!header) return out
  for (const part of header.split(';')) {
    const i = part.indexOf('=')
    if (i < 0) continue
    const k = part.slice(0, i).trim()
    const v = part.slice(i + 1).trim()
    try {
      out[k] = decodeURIComponent(v)
    } catch {
      out[k] = v
    }
  }
  return out
}

export function setCookie(
  ctx: Ctx,
  name: string,
  value: string,
  opts: { maxAgeSeconds?: number; httpOnly?: boolean } = {},
): void {
  let c = `${name}=${encodeURIComponent(value)}; Path=/; SameSite=Lax`
  if (opts.httpOnly !== false) c += '; HttpOnly'
  if (opts.maxAgeSeconds !== undefined) c += `; Max-Age=${opts.maxAgeSeconds}`
  const prev = ctx.res.getHeader('set-cookie')
  const list = Array.isArray(prev) ? prev : prev ? [String(prev)] : []
  ctx.res.setHeader('set-cookie', [...list, c])
}

const FORM_LIMIT = 64 * 1024

export async function readBody(req: IncomingMessage, limit = FORM_LIMIT): Promise<string> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > limit) throw new HttpError(413, 'Request body too large')
    chunks.push(chunk as Buffer)
  }
  return Buffer.concat(chunks).toString('utf8')
}

export async function readForm(ctx: Ctx): Promise<URLSearchParams> {
  if (ctx.state.form) return ctx.state.form as URLSearchParams
  const type = ctx.req.headers['content-type'] ?? ''
  if (!type.startsWith('application/x-www-form-urlencoded'))
    throw new HttpError(415, 'Expected a form')
  const form = new URLSearchParams(await readBody(ctx.req))
  ctx.state.form = form
  return form
}

export async function readJson<T>(ctx: Ctx): Promise<T> {
  return JSON.parse(await readBody(ctx.req)) as T
}

const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'same-origin',
  'x-frame-options': 'DENY',
}

export interface SendOptions {
  /** `Cache-Control`; pages default to private revalidation. */
  cacheControl?: string
  contentType?: string
  headers?: Record<string, string>
}

/** Sends a body with a strong ETag (answering 304 on a match) and br/gzip compression when asked for. */
export function send(
  ctx: Ctx,
  status: number,
  body: string | Buffer,
  opts: SendOptions = {},
): void {
  const { res, req } = ctx
  const buf = typeof body === 'string' ? Buffer.from(body) : body
  const etag = `"${createHash('sha1').update(buf).digest('base64url')}"`
  res.setHeader('content-type', opts.contentType ?? 'text/html; charset=utf-8')
  res.setHeader('cache-control', opts.cacheControl ?? 'private, no-cache')
  res.setHeader('vary', 'Accept-Encoding, Cookie')
  for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v)
  for (const [k, v] of Object.entries(opts.headers ?? {})) res.setHeader(k, v)
  if (status === 200) {
    res.setHeader('etag', etag)
    const inm = req.headers['if-none-match']
    if (inm?.split(',').some((t) => t.trim() === etag || t.trim() === `W/${etag}`)) {
      res.statusCode = 304
      res.end()
      return
    }
  }
  let out = buf
  const ae = String(req.headers['accept-encoding'] ?? '')
  if (buf.length > 1024) {
    if (/\bbr\b/.test(ae)) {
      out = brotliCompressSync(buf, { params: { [zlib.BROTLI_PARAM_QUALITY]: 4 } })
      res.setHeader('content-encoding', 'br')
    } else if (/\bgzip\b/.test(ae)) {
      out = gzipSync(buf, { level: 6 })
      res.setHeader('content-encoding', 'gzip')
    }
  }
  res.statusCode = status
  res.setHeader('content-length', out.length)
  res.end(req.method === 'HEAD' ? undefined : out)
}

export function sendHtml(ctx: Ctx, status: number, page: SafeHtml, opts: SendOptions = {}): void {
  send(ctx, status, page.value, opts)
}

export function sendText(ctx: Ctx, status: number, text: string): void {
  send(ctx, status, text, { contentType: 'text/plain; charset=utf-8', cacheControl: 'no-store' })
}

export function sendJson(ctx: Ctx, status: number, value: unknown): void {
  send(ctx, status, JSON.stringify(value), {
    contentType: 'application/json',
    cacheControl: 'no-store',
  })
}

export function redirect(ctx: Ctx, location: string, status = 303): void {
  // Only same-origin paths, read as a browser reads a Location header (`/\host` and `/\t/host`
  // are `//host` to it): an open redirect would let a link send users elsewhere.
  const safe = sameOriginPath(location)
  ctx.res.statusCode = status
  ctx.res.setHeader('location', safe)
  ctx.res.setHeader('cache-control', 'no-store')
  ctx.res.end()
}
