import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'

/** A response stored by the proxy's cache hook. Plain data, so any store can serialise it. */
export interface CachedResponse {
  /** The HTTP status (200). */
  status: number
  /** The response headers to replay (hop-by-hop headers removed). */
  headers: Record<string, string | string[]>
  /** The body, base64-encoded so JSON stores keep it intact. */
  body: string
  /** When it was stored, in milliseconds since the epoch. */
  storedAt: number
  /** How long it stays fresh from `storedAt`, in milliseconds. */
  maxAgeMs: number
  /** The `ETag` of the response, if any. */
  etag?: string
  /** The request header values it was stored for, by the names in its `Vary` header (lower case). */
  vary?: Record<string, string>
}

/**
 * The small get/set interface the proxy's response cache plugs into, such as a
 * `@ballast/cache` instance or a `Map` wrapper. `ttlMs` is how long the store should keep it.
 */
export interface ResponseCache {
  /** Returns the entry stored under the key, if any. */
  get(key: string): Promise<CachedResponse | undefined> | CachedResponse | undefined
  /** Stores an entry under the key for `ttlMs` milliseconds. */
  set(key: string, value: CachedResponse, ttlMs: number): Promise<unknown> | unknown
}

/** Directives of a `Cache-Control` header, names in lower case; valueless ones map to `true`. */
export function parseCacheControl(
  header: string | string[] | undefined,
): Map<string, string | true> {
  const out = new Map<string, string | true>()
  if (header === undefined) return out
  for (const part of (Array.isArray(header) ? header.join(',') : header).split(',')) {
    const eq = part.indexOf('=')
    const name = (eq === -1 ? part : part.slice(0, eq)).trim().toLowerCase()
    if (name === '') continue
    out.set(
      name,
      eq === -1
        ? true
        : part
            .slice(eq + 1)
            .trim()
            .replace(/^"|"$/g, ''),
    )
  }
  return out
}

/**
 * How long a response may be served from a shared cache, in milliseconds, or 0 when it must
 * not be stored: `s-maxage` wins over `max-age`; `no-store`, `no-cache`, `private`, a
 * `Set-Cookie` or `Vary: *` forbid storing.
 */
export function sharedMaxAgeMs(
  status: number,
  headers: IncomingHttpHeaders | OutgoingHttpHeaders,
  authorized: boolean,
): number {
  if (status !== 200) return 0
  if (headers['set-cookie'] !== undefined) return 0
  const vary = headers.vary
  if (typeof vary === 'string' && vary.includes('*')) return 0
  const cc = parseCacheControl(headers['cache-control'] as string | string[] | undefined)
  if (cc.has('no-store') || cc.has('no-cache') || cc.has('private')) return 0
  if (authorized && !cc.has('public') && !cc.has('s-maxage')) return 0
  const raw = cc.get('s-maxage') ?? cc.get('max-age')
  if (typeof raw !== 'string') return 0
  const seconds = Number.parseInt(raw, 10)
  return Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 0
}

/** Lower-cased header names listed in a `Vary` header. */
export function varyNames(header: string | string[] | number | undefined): string[] {
  if (header === undefined) return []
  return String(Array.isArray(header) ? header.join(',') : header)
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== '')
}

/** Whether an `If-None-Match` header matches an ETag (weak comparison, as RFC 9110 asks for GET). */
export function etagMatches(ifNoneMatch: string | undefined, etag: string | undefined): boolean {
  if (ifNoneMatch === undefined || etag === undefined) return false
  if (ifNoneMatch.trim() === '*') return true
  const strip = (t: string) => t.trim().replace(/^W\//, '')
  const target = strip(etag)
  return ifNoneMatch.split(',').some((t) => strip(t) === target)
}

/**
 * The key the proxy stores a response under: the method, the normalised `host[:port]`, the
 * normalised path and the query, as a JSON array. Each part stays in its own slot, so two
 * requests share a key only when all four are equal, whatever bytes a part holds (a `Host`
 * with a `/` cannot pass for a longer path).
 */
export function responseCacheKey(
  method: string,
  host: string | undefined,
  path: string,
  query: string | undefined,
): string {
  return JSON.stringify([method, host ?? null, path, query ?? null])
}
