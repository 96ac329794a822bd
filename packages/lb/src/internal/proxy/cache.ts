import type { OutgoingHttpHeaders } from 'node:http'
import {
  type CachedResponse,
  etagMatches,
  parseCacheControl,
  type ResponseCache,
  sharedMaxAgeMs,
  varyNames,
} from '../../responseCache.js'
import type { Attempt } from './attempt.js'
import type { RequestContext } from './context.js'

/** What the response cache calls back into: the proxy. */
export interface CacheOwner {
  /** The proxy's counters. */
  readonly counters: { cacheHits: number; cacheMisses: number }
  /** Nothing usable in the cache: the request goes upstream. */
  miss(ctx: RequestContext): void
  /** The store threw or rejected. */
  failed(key: string, error: unknown): void
}

/** The proxy's response cache over a {@link ResponseCache} store. */
export class ProxyCache {
  readonly #store: ResponseCache
  readonly #owner: CacheOwner

  constructor(store: ResponseCache, owner: CacheOwner) {
    this.#store = store
    this.#owner = owner
  }

  /** Answers the request from the store, or sends it upstream (`owner.miss`). */
  lookup(ctx: RequestContext): void {
    const key = ctx.cacheKey!
    const owner = this.#owner
    let result: ReturnType<ResponseCache['get']>
    try {
      result = this.#store.get(key)
    } catch (error) {
      owner.failed(key, error)
      owner.counters.cacheMisses++
      owner.miss(ctx)
      return
    }
    const onEntry = (entry: CachedResponse | undefined) => {
      if (entry !== undefined && this.#serve(ctx, entry)) return
      owner.counters.cacheMisses++
      owner.miss(ctx)
    }
    if (result !== undefined && typeof (result as Promise<unknown>).then === 'function') {
      ;(result as Promise<CachedResponse | undefined>).then(onEntry, (error: unknown) => {
        owner.failed(key, error)
        owner.counters.cacheMisses++
        owner.miss(ctx)
      })
    } else onEntry(result as CachedResponse | undefined)
  }

  /** Answers from a stored entry if it is fresh and its `Vary` headers match; false if not. */
  #serve(ctx: RequestContext, entry: CachedResponse): boolean {
    if (ctx.aborted) return true
    const now = Date.now()
    if (now - entry.storedAt >= entry.maxAgeMs) return false
    if (entry.vary !== undefined) {
      for (const name in entry.vary) {
        const v = ctx.req.headers[name]
        if ((Array.isArray(v) ? v.join(', ') : (v ?? '')) !== entry.vary[name]) return false
      }
    }
    this.#owner.counters.cacheHits++
    const res = ctx.res
    const age = String(Math.floor((now - entry.storedAt) / 1000))
    if (etagMatches(ctx.req.headers['if-none-match'], entry.etag)) {
      const headers: OutgoingHttpHeaders = { etag: entry.etag, age, 'x-cache': 'HIT' }
      for (const name of ['cache-control', 'vary', 'expires', 'last-modified', 'content-location'])
        if (entry.headers[name] !== undefined) headers[name] = entry.headers[name]
      res.writeHead(304, headers)
      res.end()
      return true
    }
    const body = Buffer.from(entry.body, 'base64')
    res.writeHead(entry.status, {
      ...entry.headers,
      'content-length': String(body.length),
      age,
      'x-cache': 'HIT',
    })
    res.end(ctx.method === 'HEAD' ? undefined : body)
    return true
  }

  /**
   * At the response head of a request the cache may answer: marks the response `x-cache: MISS`
   * and, when it may be stored, makes the attempt collect its body.
   */
  prepare(attempt: Attempt, status: number, out: OutgoingHttpHeaders): void {
    const ctx = attempt.ctx
    if (ctx.method !== 'GET') return
    const maxAge = sharedMaxAgeMs(status, out, false)
    if (maxAge > 0 && !parseCacheControl(ctx.req.headers['cache-control']).has('no-store')) {
      attempt.maxAge = maxAge
      attempt.chunks = []
      attempt.stored = { status, headers: { ...(out as Record<string, string | string[]>) } }
    }
    out['x-cache'] = 'MISS'
  }

  /** Stores the response an attempt collected. */
  store(attempt: Attempt): void {
    const ctx = attempt.ctx
    const stored = attempt.stored!
    delete stored.headers['x-cache']
    const names = varyNames(stored.headers.vary)
    let vary: Record<string, string> | undefined
    if (names.length > 0) {
      vary = {}
      for (const name of names) {
        const v = ctx.req.headers[name]
        vary[name] = Array.isArray(v) ? v.join(', ') : (v ?? '')
      }
    }
    const etag = stored.headers.etag
    const entry: CachedResponse = {
      status: stored.status,
      headers: stored.headers,
      body: Buffer.concat(attempt.chunks!).toString('base64'),
      storedAt: Date.now(),
      maxAgeMs: attempt.maxAge,
      ...(typeof etag === 'string' ? { etag } : {}),
      ...(vary === undefined ? {} : { vary }),
    }
    const key = ctx.cacheKey!
    try {
      const result = this.#store.set(key, entry, attempt.maxAge)
      if (result !== undefined && typeof (result as Promise<unknown>).then === 'function') {
        ;(result as Promise<unknown>).catch((error: unknown) => this.#owner.failed(key, error))
      }
    } catch (error) {
      this.#owner.failed(key, error)
    }
  }
}
