/**
 * A deliberately small HTTP layer on node:http for the shop's services: routes, cookies,
 * urlencoded forms, and responses with ETags, compression and security headers.
 */
import { createHash } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { brotliCompressSync, gzipSync, constants as zlib } from 'node:zlib'
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
  parts: string[]
  handler: Handler
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
    this.#routes.push({ method, parts: path.split('/').filter(Boolean), handler })
    return this
  }

  match(
    method: string,
    pathname: string,
  ): { handler: Handler; params: Record<string, string> } | undefined {
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
      if (ok) return { handler: r.handler, params }
    }
    return undefined
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://shop.local')
    const ctx: Ctx = {
      req,
      res,
      url,
      params: {},
      cookies: parseCookies(req.headers.cookie),
      state: {},
    }
    try {
      const m = this.match(req.method ?? 'GET', url.pathname)
      if (!m) throw new HttpError(404, 'Not found')
      ctx.params = m.params
      for (const fn of this.#before) {
        await fn(ctx)
        if (res.headersSent || res.writableEnded) return
      }
      await m.handler(ctx)
    } catch (err) {
      if (!res.headersSent) this.#onError(ctx, err)
      else res.destroy()
    }
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
