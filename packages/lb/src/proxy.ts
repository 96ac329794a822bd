import { randomUUID } from 'node:crypto'
import {
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type Server,
  type ServerOptions,
  type ServerResponse,
} from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import type { Duplex, Writable } from 'node:stream'
import { createBrotliCompress, createGzip, constants as zlibConstants } from 'node:zlib'
import { merge, show } from '@ballast/shared'
import type { Dispatcher } from 'undici'
import { type Balancer, type BalancerOptions, createBalancer } from './balancer.js'
import type { Endpoint, EndpointInput } from './endpoint.js'
import {
  InvalidArgumentError,
  isLbError,
  LbClosedError,
  NoEndpointAvailableError,
} from './errors.js'
import type { HashKey } from './hash.js'
import {
  createHealthChecker,
  type HealthChecker,
  type HealthCheckerOptions,
} from './healthChecker.js'
import {
  byPrecedence,
  connectionTokens,
  matchRoute,
  normalizePath,
  type ParsedHost,
  parseHost,
  parseRequestTarget,
  type RequestTarget,
} from './internal/requestTarget.js'
import {
  HOP_BY_HOP,
  isIdempotent,
  isTimeout,
  neverSent,
  UpstreamPools,
} from './internal/upstreams.js'
import {
  type CachedResponse,
  etagMatches,
  parseCacheControl,
  type ResponseCache,
  responseCacheKey,
  sharedMaxAgeMs,
  varyNames,
} from './responseCache.js'
import { createRetryBudget, type RetryBudget, type RetryBudgetOptions } from './retryBudget.js'
import { type Listener, TypedEmitter } from './typedEmitter.js'

/** One routing rule of the proxy: requests whose host and path match go to its upstream. */
export interface ProxyRoute {
  /**
   * A name for messages, events and stats.
   * @default the host and prefix
   */
  name?: string
  /**
   * The `Host` to match (port ignored, case-insensitive); `*.example.com` matches subdomains.
   * @default any host
   */
  host?: string
  /**
   * The path prefix to match, on segment boundaries (`/api` matches `/api` and `/api/x`, not `/apix`),
   * against the request's normalised path (dot segments resolved, `%2e` decoded, `//` merged).
   * @default '/'
   */
  pathPrefix?: string
  /**
   * Remove the prefix from the path sent upstream.
   * @default false
   */
  stripPrefix?: boolean
  /** A balancer whose endpoint values are origins, or a list of origins (`http://host:port`). */
  upstream: Balancer<string> | ReadonlyArray<string | EndpointInput<string>>
  /** The routing key for the hashing strategies, from the request (such as a session cookie). */
  key?: (req: IncomingMessage) => HashKey | undefined
}

/** Response compression of the proxy. */
export interface CompressionOptions {
  /**
   * Responses with a known length below this many bytes are sent as they are.
   * @default 1024
   */
  threshold?: number
  /**
   * Offer Brotli to clients that accept it (costs more CPU than gzip).
   * @default false
   */
  brotli?: boolean
  /**
   * gzip level, an integer from 1 to 9 (Brotli, when chosen, uses quality 4).
   * @default 6
   */
  level?: number
}

/** The response cache of the proxy. */
export interface ProxyCacheOptions {
  /** Where entries are stored. */
  store: ResponseCache
  /**
   * Larger responses are not stored.
   * @default 1048576
   */
  maxBodyBytes?: number
}

/** The defaults of {@link CompressionOptions}. */
export const DEFAULT_COMPRESSION_OPTIONS: Required<CompressionOptions> = {
  threshold: 1024,
  brotli: false,
  level: 6,
}

/** The defaults of {@link ProxyCacheOptions} (the store has none). */
export const DEFAULT_PROXY_CACHE_OPTIONS: Required<Omit<ProxyCacheOptions, 'store'>> = {
  maxBodyBytes: 1_048_576,
}

/** Options of {@link createProxy}. */
export interface ProxyOptions {
  /** The routes; the most specific match wins (a host before none, then the longest prefix). */
  routes: readonly ProxyRoute[]
  /**
   * Options of the balancers the proxy creates for routes given as lists of origins.
   * @default { strategy: 'peak-ewma' }
   */
  balancer?: Omit<BalancerOptions<string>, 'endpoints'>
  /**
   * Active health checks for the balancers the proxy creates; `false` for none.
   * @default false
   */
  healthCheck?: Omit<HealthCheckerOptions<string>, 'balancer'> | false
  /**
   * Connections per upstream endpoint.
   * @default 128
   */
  connections?: number
  /**
   * Time to connect to an upstream, in milliseconds.
   * @default 2000
   */
  connectTimeoutMs?: number
  /**
   * Time until the upstream sends its response headers, in milliseconds (then 504).
   * @default 30000
   */
  headersTimeoutMs?: number
  /**
   * Longest pause between two upstream body chunks, in milliseconds.
   * @default 60000
   */
  bodyTimeoutMs?: number
  /**
   * Idle upstream connections are closed after this, in milliseconds.
   * @default 4000
   */
  keepAliveTimeoutMs?: number
  /**
   * Attempts per request; only idempotent requests without a body are retried (and any request
   * whose connection was refused), always on another endpoint.
   * @default 2
   */
  maxAttempts?: number
  /**
   * Retry budget options (one budget per route), or `false`.
   * @default {} (20 % of requests plus 10 a second over 10 s)
   */
  retryBudget?: RetryBudgetOptions | false
  /**
   * Upstream statuses on which an idempotent request is retried on another endpoint.
   * @default [502, 503, 504]
   */
  retryOnStatus?: readonly number[]
  /**
   * Add `X-Forwarded-For`, `-Proto` and `-Host`.
   * @default true
   */
  xForwarded?: boolean
  /**
   * Keep incoming `X-Forwarded-Proto`/`-Host` (set this only behind another trusted proxy).
   * @default false
   */
  trustForwarded?: boolean
  /**
   * Send the client's `Host` upstream; `false` sends the upstream's own host.
   * @default true
   */
  preserveHost?: boolean
  /**
   * Compress compressible responses for clients that accept gzip (or Brotli); `false` for none.
   * @default false
   */
  compression?: CompressionOptions | boolean
  /**
   * Answer cacheable GETs from a store, honouring `Cache-Control`, `Vary` and `ETag`/`If-None-Match`.
   * @default undefined (no cache)
   */
  cache?: ProxyCacheOptions
  /**
   * How long `close()` waits for in-flight requests before cutting them, in milliseconds.
   * @default 10000
   */
  drainTimeoutMs?: number
  /**
   * Options of the `node:http` server. The proxy turns on `optimizeEmptyRequests` (node 24.9 and
   * later: a request without a body skips the stream life cycle of its `IncomingMessage`);
   * pass `optimizeEmptyRequests: false` to turn it off. It also sets `shouldUpgradeCallback`
   * (node 24.9 and later) so that only `Upgrade: websocket` is tunnelled and any other upgrade,
   * such as h2c, is an ordinary request; replacing it gives up that defence.
   * @default { optimizeEmptyRequests: true, shouldUpgradeCallback: (only WebSocket) }
   */
  server?: ServerOptions
}

/** The defaults of {@link ProxyOptions}. */
export const DEFAULT_PROXY_OPTIONS: Required<
  Omit<ProxyOptions, 'routes' | 'balancer' | 'healthCheck' | 'retryBudget' | 'cache' | 'server'>
> = {
  connections: 128,
  connectTimeoutMs: 2000,
  headersTimeoutMs: 30_000,
  bodyTimeoutMs: 60_000,
  keepAliveTimeoutMs: 4000,
  maxAttempts: 2,
  retryOnStatus: [502, 503, 504],
  xForwarded: true,
  trustForwarded: false,
  preserveHost: true,
  compression: false,
  drainTimeoutMs: 10_000,
}

/** Payload of the proxy's `upstream-error` event. */
export interface UpstreamErrorEvent {
  /** The route's name. */
  route: string
  /** The endpoint that failed. */
  endpoint: string
  /** What went wrong. */
  error: unknown
  /** Which attempt it was (1 for the first). */
  attempt: number
  /** The id the client gets in the body of a 502/503/504 answer to this request, if it gets one. */
  requestId: string
}

/**
 * Payload of the proxy's `request-failed` event: the proxy answered 502, 503 or 504. The client
 * gets only the status and `requestId`; the details are here, for logs.
 */
export interface RequestFailedEvent {
  /** The id in the answer's body and `x-request-id` header. */
  requestId: string
  /** The status the client got. */
  status: 502 | 503 | 504
  /** The route's name. */
  route: string
  /** The endpoint of the last attempt, if one was picked. */
  endpoint: string | undefined
  /** Why, for people: the error code or a sentence. */
  reason: string
  /** The underlying error, if any. */
  error: unknown
  /** How many attempts were made. */
  attempts: number
}

/** Payload of the proxy's `retry` event. */
export interface RetryEvent {
  /** The route's name. */
  route: string
  /** The endpoint that failed. */
  from: string
  /** The attempt that failed (1 for the first). */
  attempt: number
  /** The error code or status that caused the retry. */
  reason: string
}

/** Payload of the proxy's `cache-error` event. */
export interface CacheErrorEvent {
  /** The cache key. */
  key: string
  /** What the store threw. */
  error: unknown
}

/** The events of a {@link ReverseProxy}. */
export interface ProxyEvents {
  /** An attempt to an upstream failed (it may be retried). */
  'upstream-error': [event: UpstreamErrorEvent]
  /** A request is retried on another endpoint. */
  retry: [event: RetryEvent]
  /** The cache store failed; the request went upstream. */
  'cache-error': [event: CacheErrorEvent]
  /** The proxy answered 502, 503 or 504 (with a generic body); the details are in the payload. */
  'request-failed': [event: RequestFailedEvent]
}

/** Counters of a {@link ReverseProxy}. */
export interface ProxyStats {
  /** Requests received. */
  requests: number
  /** Requests being handled now. */
  inFlight: number
  /** Retries on another endpoint. */
  retries: number
  /** Retries refused by the budget. */
  retriesRefused: number
  /** 404 answers: no route matched. */
  noRoute: number
  /** 400 answers: a `Host` header or request target the proxy refuses. */
  badRequests: number
  /** 503 answers: no endpoint available. */
  unavailable: number
  /** 502 answers: upstream failed. */
  badGateway: number
  /** 504 answers: upstream too slow. */
  timeouts: number
  /** Responses served from the cache. */
  cacheHits: number
  /** Cacheable requests that went upstream. */
  cacheMisses: number
  /** WebSocket (upgrade) connections proxied. */
  upgrades: number
  /** Per route: its balancer's stats. */
  routes: Record<string, ReturnType<Balancer<string>['stats']>>
}

/** A reverse proxy over `node:http`. */
export interface ReverseProxy {
  /** The underlying server (listen on it yourself, or call {@link ReverseProxy.listen}). */
  readonly server: Server
  /** Starts listening; resolves with the address. */
  listen(port?: number, host?: string): Promise<AddressInfo>
  /** The request handler, to mount on a server of your own. */
  handle(req: IncomingMessage, res: ServerResponse): void
  /** Counters. */
  stats(): ProxyStats
  /** Adds an event listener; returns a function that removes it. */
  on<K extends keyof ProxyEvents>(event: K, listener: Listener<ProxyEvents[K]>): () => void
  /**
   * Graceful shutdown: stops accepting, lets in-flight requests finish (up to `drainTimeoutMs`),
   * then closes connections, pools, health checkers and the balancers it created.
   */
  close(): Promise<void>
}

interface RouteRuntime {
  name: string
  host: string | undefined
  wildcard: boolean
  prefix: string
  stripPrefix: boolean
  balancer: Balancer<string>
  own: boolean
  checker: HealthChecker<string> | undefined
  budget: RetryBudget | undefined
  key: ((req: IncomingMessage) => HashKey | undefined) | undefined
}

const COMPRESSIBLE =
  /^(text\/|application\/(json|javascript|xml|x-javascript|[a-z.+-]*\+(json|xml))|image\/svg\+xml)/i

/** Bodies up to this size that arrive in one chunk leave with the response head in one write. */
const WHOLE_BODY_MAX = 16_384

const FAILURE_TEXT = { 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout' }

/** The body of a 502/503/504 answer: the status and the request id, nothing about the inside. */
function failureBody(status: 502 | 503 | 504, requestId: string): string {
  return `${status} ${FAILURE_TEXT[status]}\nrequest id: ${requestId}\n`
}

/**
 * The body of a 404: the host name and path as the proxy parsed them (validated, so they carry
 * no markup), never the query or raw target, which a client could fill with text to reflect.
 */
function noRouteBody(host: ParsedHost | undefined, target: RequestTarget): string {
  return `404 Not Found: no route for host ${JSON.stringify(host?.name ?? '')} and path ${JSON.stringify(target.path)}\n`
}

/** The path and query sent upstream: the normalised path, without the prefix when it is stripped. */
function upstreamPath(route: RouteRuntime, target: RequestTarget): string {
  let path = target.path
  if (route.stripPrefix && route.prefix !== '/') {
    path = path.slice(route.prefix.length)
    if (path === '') path = '/'
  }
  return target.query === undefined ? path : `${path}?${target.query}`
}

/** Whether a request asks for a WebSocket, the one protocol the proxy tunnels. */
function isWebSocketUpgrade(req: IncomingMessage): boolean {
  return req.headers.upgrade?.trim().toLowerCase() === 'websocket'
}

function isBalancer(value: unknown): value is Balancer<string> {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Balancer<string>).pick === 'function'
  )
}

function positive(name: string, value: unknown): number {
  if (typeof value !== 'number' || !(value > 0) || !Number.isFinite(value)) {
    throw new InvalidArgumentError(
      `invalid option "${name}": expected a positive number, got ${String(value)}`,
    )
  }
  return value
}

function headersTimeoutError(): Error {
  return Object.assign(new Error('upstream did not send response headers in time'), {
    code: 'UND_ERR_HEADERS_TIMEOUT',
  })
}

function onHeadersTimeout(attempt: Attempt): void {
  attempt.timer = undefined
  attempt.timedOut = true
  attempt.controller?.abort(headersTimeoutError())
}

class Attempt implements Dispatcher.DispatchHandler {
  readonly ctx: RequestContext
  readonly endpoint: Endpoint<string>
  readonly startedAt: number
  controller: Dispatcher.DispatchController | undefined
  ended = false
  retrying = false
  sink: Writable | undefined
  chunks: Buffer[] | undefined
  size = 0
  maxAge = 0
  stored: { status: number; headers: Record<string, string | string[]> } | undefined
  lastError: unknown = undefined
  /** The precise headers timer (undici's own runs on coarse timers). */
  timer: ReturnType<typeof setTimeout> | undefined = undefined
  timedOut = false
  /** The upstream response could not be relayed; the client already got a 502. */
  invalid = false
  /**
   * The announced length of a small body sent straight to the client (no compression), or -1:
   * when it arrives in one chunk, status line, headers and body leave in one write.
   */
  whole = -1

  constructor(ctx: RequestContext, endpoint: Endpoint<string>, startedAt: number) {
    this.ctx = ctx
    this.endpoint = endpoint
    this.startedAt = startedAt
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller
    if (this.ctx.aborted) controller.abort(new Error('client went away'))
    else if (this.timedOut) controller.abort(headersTimeoutError())
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
    statusMessage?: string,
  ): void {
    if (statusCode < 200) return
    this.ctx.proxy.onResponseStart(this, controller, statusCode, headers, statusMessage)
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    const chunks = this.chunks
    if (chunks !== undefined) {
      this.size += chunk.length
      if (this.size > this.ctx.proxy.maxCacheBytes) this.chunks = undefined
      else chunks.push(chunk)
    }
    const sink = this.sink
    if (sink === undefined) return
    if (this.whole === chunk.length) {
      // The whole body in one chunk: as a latin1 string (bytes unchanged), node's http response
      // joins it to the head and sends both in one write instead of a writev of two buffers.
      this.whole = -1
      this.sink = undefined
      ;(sink as ServerResponse).end(chunk.toString('latin1'), 'latin1')
      return
    }
    this.whole = -1
    if (!sink.write(chunk)) {
      controller.pause()
      sink.once('drain', () => controller.resume())
    }
  }

  onResponseEnd(): void {
    if (this.chunks !== undefined && this.stored !== undefined) this.ctx.proxy.store(this)
    if (this.sink === undefined) return
    this.sink.end()
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    this.ctx.proxy.onAttemptError(this, error)
  }
}

interface RequestContext {
  proxy: ProxyImpl
  req: IncomingMessage
  res: ServerResponse
  route: RouteRuntime
  method: string
  path: string
  headers: string[]
  hasBody: boolean
  idempotent: boolean
  key: HashKey | undefined
  tried: Endpoint<string>[]
  attempt: Attempt | undefined
  aborted: boolean
  cacheKey: string | undefined
  acceptEncoding: string | undefined
  /** Set when an event or a failure answer first needs it. */
  requestId: string | undefined
}

class ProxyImpl extends TypedEmitter<ProxyEvents> implements ReverseProxy {
  readonly server: Server
  readonly maxCacheBytes: number
  readonly #routes: RouteRuntime[]
  readonly #pools: UpstreamPools
  readonly #o: typeof DEFAULT_PROXY_OPTIONS & ProxyOptions
  readonly #retryOnStatus: ReadonlySet<number>
  readonly #compression: Required<CompressionOptions> | undefined
  readonly #cache: ResponseCache | undefined
  readonly #upgraded = new Set<Duplex>()
  #inFlight = 0
  #closing = false
  #closed: Promise<void> | undefined
  #onDrained: (() => void) | undefined
  readonly #stats = {
    requests: 0,
    retries: 0,
    retriesRefused: 0,
    noRoute: 0,
    badRequests: 0,
    unavailable: 0,
    badGateway: 0,
    timeouts: 0,
    cacheHits: 0,
    cacheMisses: 0,
    upgrades: 0,
  }

  constructor(options: ProxyOptions) {
    super()
    const o = merge(DEFAULT_PROXY_OPTIONS, options)
    this.#o = o
    for (const name of [
      'connections',
      'connectTimeoutMs',
      'headersTimeoutMs',
      'bodyTimeoutMs',
      'keepAliveTimeoutMs',
      'maxAttempts',
      'drainTimeoutMs',
    ] as const) {
      positive(name, o[name])
    }
    if (!Array.isArray(o.routes) || o.routes.length === 0) {
      throw new InvalidArgumentError(
        'invalid option "routes": expected at least one route, got none',
      )
    }
    this.#retryOnStatus = new Set(o.retryOnStatus)
    this.#compression =
      o.compression === false
        ? undefined
        : merge(DEFAULT_COMPRESSION_OPTIONS, o.compression === true ? {} : o.compression)
    if (this.#compression !== undefined) {
      const { level, threshold } = this.#compression
      if (!Number.isInteger(level) || level < 1 || level > 9) {
        throw new InvalidArgumentError(
          `invalid option "compression.level": expected an integer from 1 to 9, got ${show(level)}`,
        )
      }
      if (!Number.isInteger(threshold) || threshold < 0) {
        throw new InvalidArgumentError(
          `invalid option "compression.threshold": expected an integer >= 0, got ${show(threshold)}`,
        )
      }
    }
    if (
      o.cache !== undefined &&
      (typeof o.cache.store?.get !== 'function' || typeof o.cache.store?.set !== 'function')
    ) {
      throw new InvalidArgumentError(
        'invalid option "cache.store": expected an object with get(key) and set(key, value, ttlMs)',
      )
    }
    this.#cache = o.cache?.store
    this.maxCacheBytes = merge(DEFAULT_PROXY_CACHE_OPTIONS, o.cache).maxBodyBytes
    if (!Number.isInteger(this.maxCacheBytes) || this.maxCacheBytes <= 0) {
      throw new InvalidArgumentError(
        `invalid option "cache.maxBodyBytes": expected a positive integer, got ${show(this.maxCacheBytes)}`,
      )
    }
    this.#pools = new UpstreamPools({
      connections: o.connections,
      connectTimeoutMs: o.connectTimeoutMs,
      keepAliveTimeoutMs: o.keepAliveTimeoutMs,
    })
    this.#routes = o.routes.map((r, i) => this.#route(r, i))
    this.#routes.sort(byPrecedence)
    // Requests without a body skip the readable-stream life cycle of their IncomingMessage
    // (node >= 24.9; older versions ignore the option); the proxy never reads such a body.
    // Only WebSocket upgrades leave the request path (node >= 24.9 reads shouldUpgradeCallback;
    // older versions send every upgrade to #upgrade, which treats the others alike): any other
    // Upgrade, such as h2c, is an ordinary request whose Upgrade header is hop-by-hop.
    this.server = createServer(
      {
        optimizeEmptyRequests: true,
        shouldUpgradeCallback: isWebSocketUpgrade,
        ...o.server,
      } as ServerOptions,
      (req, res) => this.handle(req, res),
    )
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
      this.#upgrade(req, socket, head),
    )
  }

  #route(r: ProxyRoute, i: number): RouteRuntime {
    const rawPrefix = r.pathPrefix ?? '/'
    let prefix: string
    try {
      if (typeof rawPrefix !== 'string') throw new TypeError('not a string')
      // Requests are routed on their normalised path, so the prefix is normalised alike.
      prefix = normalizePath(rawPrefix)
    } catch (error) {
      throw new InvalidArgumentError(
        `invalid option "routes[${i}].pathPrefix": expected a path starting with "/" without dot segments, got ${JSON.stringify(rawPrefix)}`,
        { cause: error },
      )
    }
    const host = r.host?.toLowerCase()
    const name = r.name ?? `${host ?? '*'}${prefix}`
    let balancer: Balancer<string>
    let own = false
    let checker: HealthChecker<string> | undefined
    if (isBalancer(r.upstream)) balancer = r.upstream
    else {
      if (!Array.isArray(r.upstream)) {
        throw new InvalidArgumentError(
          `invalid option "routes[${i}].upstream": expected a balancer or a list of origins`,
        )
      }
      for (const e of r.upstream) {
        const origin = typeof e === 'string' ? e : (e.value ?? e.id)
        if (typeof origin !== 'string' || !/^https?:\/\/[^/]+\/?$/.test(origin)) {
          throw new InvalidArgumentError(
            `invalid endpoint ${JSON.stringify(origin)} in routes[${i}].upstream: expected an origin such as "http://127.0.0.1:8080"`,
          )
        }
      }
      balancer = createBalancer<string>({ ...(this.#o.balancer ?? {}), endpoints: r.upstream })
      own = true
      if (this.#o.healthCheck !== false && this.#o.healthCheck !== undefined)
        checker = createHealthChecker({ ...this.#o.healthCheck, balancer })
    }
    this.#pools.watch(balancer)
    return {
      name,
      host: host?.startsWith('*.') ? host.slice(1) : host,
      wildcard: host?.startsWith('*.') ?? false,
      prefix: prefix.length > 1 && prefix.endsWith('/') ? prefix.slice(0, -1) : prefix,
      stripPrefix: r.stripPrefix ?? false,
      balancer,
      own,
      checker,
      budget:
        this.#o.retryBudget === false ? undefined : createRetryBudget(this.#o.retryBudget ?? {}),
      key: r.key,
    }
  }

  /** The route for a parsed host and a normalised path (no query). */
  #match(host: ParsedHost | undefined, path: string): RouteRuntime | undefined {
    return matchRoute(this.#routes, host?.name, path)
  }

  /**
   * Parses what routing reads from the client: the `Host` header and the request target.
   * @throws InvalidRequestError (answered with 400).
   */
  #parse(req: IncomingMessage): { host: ParsedHost | undefined; target: RequestTarget } {
    const raw = req.headers.host
    const host = raw === undefined ? undefined : parseHost(raw)
    return { host, target: parseRequestTarget(req.url ?? '/', host) }
  }

  listen(port = 0, host = '127.0.0.1'): Promise<AddressInfo> {
    if (this.#closing) return Promise.reject(new LbClosedError('reverse proxy', 'listen'))
    return new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(port, host, () => {
        this.server.off('error', reject)
        resolve(this.server.address() as AddressInfo)
      })
    })
  }

  handle(req: IncomingMessage, res: ServerResponse): void {
    this.#stats.requests++
    this.#inFlight++
    if (this.#closing) res.shouldKeepAlive = false
    let host: ParsedHost | undefined
    let target: RequestTarget
    let headers: string[] | undefined
    try {
      ;({ host, target } = this.#parse(req))
      headers = this.#upstreamHeaders(req)
    } catch (error) {
      if (!isLbError(error)) throw error
      res.once('close', () => this.#done())
      this.#badRequest(res, (error as Error).message)
      return
    }
    if (headers === undefined) {
      res.once('close', () => this.#done())
      this.#badRequest(res, 'more than one Host header')
      return
    }
    const route = this.#match(host, target.path)
    if (route === undefined) {
      res.once('close', () => this.#done())
      this.#stats.noRoute++
      this.#plain(res, 404, noRouteBody(host, target))
      return
    }
    const method = req.method ?? 'GET'
    const cl = req.headers['content-length']
    const hasBody =
      (cl !== undefined && cl !== '0') || req.headers['transfer-encoding'] !== undefined
    const ctx: RequestContext = {
      proxy: this,
      req,
      res,
      route,
      method,
      path: upstreamPath(route, target),
      headers,
      hasBody,
      idempotent: !hasBody && isIdempotent(method),
      key: route.key?.(req),
      tried: [],
      attempt: undefined,
      aborted: false,
      cacheKey: undefined,
      acceptEncoding:
        this.#compression === undefined
          ? undefined
          : (req.headers['accept-encoding'] as string | undefined),
      requestId: undefined,
    }
    res.once('close', () => {
      this.#done()
      if (!res.writableFinished) {
        ctx.aborted = true
        ctx.attempt?.controller?.abort(new Error('client went away'))
      }
    })
    route.budget?.recordRequest()
    if (this.#cache !== undefined && (method === 'GET' || method === 'HEAD') && !hasBody) {
      const cc = parseCacheControl(req.headers['cache-control'])
      if (!cc.has('no-store') && !cc.has('no-cache') && req.headers.authorization === undefined) {
        // A HEAD is answered from the stored GET (headers, no body); only a GET stores.
        ctx.cacheKey = responseCacheKey('GET', host?.authority, target.path, target.query)
        this.#lookup(ctx)
        return
      }
    }
    this.#attempt(ctx)
  }

  /** A request is over (answered or abandoned). */
  #done(): void {
    this.#inFlight--
    if (this.#closing && this.#inFlight === 0) this.#onDrained?.()
  }

  /** The headers to send upstream, or `undefined` when the request has more than one `Host`. */
  #upstreamHeaders(req: IncomingMessage): string[] | undefined {
    const raw = req.rawHeaders
    const out: string[] = []
    const listed = connectionTokens(req.headers.connection)
    const o = this.#o
    let hosts = 0
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!
      const lower = name.toLowerCase()
      if (HOP_BY_HOP.has(lower) || lower === 'expect' || listed?.has(lower)) continue
      // node keeps the first of two Host headers; an upstream may read the second.
      if (lower === 'host' && ++hosts > 1) return undefined
      if (lower === 'host' && !o.preserveHost) continue
      if (o.xForwarded && lower.startsWith('x-forwarded-')) {
        if (lower === 'x-forwarded-for') continue
        if (!o.trustForwarded) continue
      }
      out.push(name, raw[i + 1]!)
    }
    if (o.xForwarded) {
      const ip = req.socket.remoteAddress ?? ''
      const prior = req.headers['x-forwarded-for']
      out.push('x-forwarded-for', prior === undefined ? ip : `${prior}, ${ip}`)
      if (!o.trustForwarded || req.headers['x-forwarded-proto'] === undefined) {
        out.push(
          'x-forwarded-proto',
          (req.socket as Socket & { encrypted?: boolean }).encrypted ? 'https' : 'http',
        )
      }
      if (!o.trustForwarded || req.headers['x-forwarded-host'] === undefined) {
        if (req.headers.host !== undefined) out.push('x-forwarded-host', req.headers.host)
      }
    }
    return out
  }

  #attempt(ctx: RequestContext): void {
    if (ctx.aborted) return
    const { route } = ctx
    let endpoint: Endpoint<string>
    try {
      endpoint = route.balancer.pick(ctx.key, ctx.tried)
    } catch (error) {
      const last = ctx.attempt
      if (last !== undefined && error instanceof NoEndpointAvailableError) {
        this.#fail(ctx, last, last.lastError)
        return
      }
      this.#stats.unavailable++
      const detail = error instanceof NoEndpointAvailableError ? error.message : String(error)
      this.#failure(ctx.res, this.#requestId(ctx), {
        status: 503,
        route: route.name,
        endpoint: undefined,
        reason: detail,
        error,
        attempts: ctx.tried.length,
      })
      ctx.req.resume()
      return
    }
    ctx.tried.push(endpoint)
    const attempt = new Attempt(ctx, endpoint, route.balancer.begin(endpoint))
    ctx.attempt = attempt
    attempt.timer = setTimeout(onHeadersTimeout, this.#o.headersTimeoutMs, attempt)
    this.#pools.get(endpoint).dispatch(
      {
        path: ctx.path,
        method: ctx.method as Dispatcher.HttpMethod,
        headers: ctx.headers,
        body: ctx.hasBody ? ctx.req : null,
        headersTimeout: this.#o.headersTimeoutMs + 1000,
        bodyTimeout: this.#o.bodyTimeoutMs,
      },
      attempt,
    )
  }

  onResponseStart(
    attempt: Attempt,
    controller: Dispatcher.DispatchController,
    status: number,
    headers: Record<string, string | string[] | undefined>,
    statusMessage: string | undefined,
  ): void {
    const ctx = attempt.ctx
    clearTimeout(attempt.timer)
    attempt.ended = true
    ctx.route.balancer.end(attempt.endpoint, attempt.startedAt, status < 500)
    if (
      this.#retryOnStatus.has(status) &&
      ctx.idempotent &&
      ctx.tried.length < this.#o.maxAttempts &&
      ctx.route.balancer.size > ctx.tried.length
    ) {
      if (this.#takeRetry(ctx.route)) {
        attempt.retrying = true
        this.emit('retry', {
          route: ctx.route.name,
          from: attempt.endpoint.id,
          attempt: ctx.tried.length,
          reason: `status ${status}`,
        })
        controller.abort(new Error(`retrying after status ${status}`))
        return
      }
    }
    const res = ctx.res
    const out: OutgoingHttpHeaders = {}
    const listed = connectionTokens(headers.connection)
    for (const name in headers) {
      if (HOP_BY_HOP.has(name)) continue
      if (listed?.has(name)) continue
      out[name] = headers[name]
    }
    if (ctx.cacheKey !== undefined && ctx.method === 'GET') {
      const maxAge = sharedMaxAgeMs(status, out, false)
      if (maxAge > 0 && !parseCacheControl(ctx.req.headers['cache-control']).has('no-store')) {
        attempt.maxAge = maxAge
        attempt.chunks = []
        attempt.stored = { status, headers: { ...(out as Record<string, string | string[]>) } }
      }
      out['x-cache'] = 'MISS'
    }
    let sink: Writable = res
    const enc = ctx.acceptEncoding
    if (
      enc !== undefined &&
      this.#compression !== undefined &&
      ctx.method !== 'HEAD' &&
      status !== 204 &&
      status !== 304 &&
      out['content-encoding'] === undefined
    ) {
      const type = out['content-type']
      const length = out['content-length']
      const c = this.#compression
      if (
        typeof type === 'string' &&
        COMPRESSIBLE.test(type) &&
        (length === undefined || Number(length) >= c.threshold)
      ) {
        const coding =
          c.brotli && /\bbr\b/.test(enc)
            ? 'br'
            : /\bgzip\b/.test(enc) && !/gzip;\s*q=0(\.0*)?(,|$)/.test(enc)
              ? 'gzip'
              : undefined
        if (coding !== undefined) {
          delete out['content-length']
          out['content-encoding'] = coding
          const vary = out.vary
          out.vary = vary === undefined ? 'accept-encoding' : `${String(vary)}, accept-encoding`
          const z =
            coding === 'br'
              ? createBrotliCompress({ params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 4 } })
              : createGzip({ level: c.level })
          z.pipe(res)
          z.on('error', (e) => res.destroy(e))
          sink = z
        }
      }
    }
    attempt.sink = sink
    if (sink === res && ctx.method !== 'HEAD') {
      const length = out['content-length']
      if (typeof length === 'string' && length.length <= 5) {
        const n = Number(length)
        if (n > 0 && n <= WHOLE_BODY_MAX) attempt.whole = n
      }
    }
    if (this.#closing) res.shouldKeepAlive = false
    try {
      if (statusMessage) res.writeHead(status, statusMessage, out)
      else res.writeHead(status, out)
    } catch (error) {
      // node rejects some header values upstreams send (control characters, bad names): answer
      // 502 rather than let the error escape into undici.
      attempt.sink = undefined
      attempt.chunks = undefined
      const requestId = this.#requestId(ctx)
      this.emit('upstream-error', {
        route: ctx.route.name,
        endpoint: attempt.endpoint.id,
        error,
        attempt: ctx.tried.length,
        requestId,
      })
      this.#stats.badGateway++
      attempt.invalid = true
      controller.abort(error as Error)
      this.#failure(res, requestId, {
        status: 502,
        route: ctx.route.name,
        endpoint: attempt.endpoint.id,
        reason: `invalid response header (${(error as Error).message})`,
        error,
        attempts: ctx.tried.length,
      })
    }
  }

  onAttemptError(attempt: Attempt, error: Error): void {
    const ctx = attempt.ctx
    clearTimeout(attempt.timer)
    if (attempt.invalid) return
    if (!attempt.ended) {
      attempt.ended = true
      // A client that went away is not the endpoint's failure.
      ctx.route.balancer.end(attempt.endpoint, attempt.startedAt, ctx.aborted)
    }
    if (ctx.aborted) return
    if (attempt.retrying) {
      this.#stats.retries++
      this.#attempt(ctx)
      return
    }
    this.emit('upstream-error', {
      route: ctx.route.name,
      endpoint: attempt.endpoint.id,
      error,
      attempt: ctx.tried.length,
      requestId: this.#requestId(ctx),
    })
    if (ctx.res.headersSent) {
      // The response already started: all we can do is cut it so the client sees it is incomplete.
      ctx.res.destroy(error)
      return
    }
    // A refused connection sent nothing; a body not yet read by undici can go to the next endpoint.
    const retryable =
      ctx.idempotent || (neverSent(error) && (!ctx.hasBody || !ctx.req.readableDidRead))
    if (
      retryable &&
      ctx.tried.length < this.#o.maxAttempts &&
      ctx.route.balancer.size > ctx.tried.length &&
      this.#takeRetry(ctx.route)
    ) {
      this.#stats.retries++
      attempt.lastError = error
      this.emit('retry', {
        route: ctx.route.name,
        from: attempt.endpoint.id,
        attempt: ctx.tried.length,
        reason: (error as { code?: string }).code ?? error.message,
      })
      this.#attempt(ctx)
      return
    }
    this.#fail(ctx, attempt, error)
  }

  #fail(ctx: RequestContext, attempt: Attempt, error: unknown): void {
    const code =
      (error as { code?: string } | undefined)?.code ??
      (error as Error | undefined)?.message ??
      'error'
    const failure = {
      route: ctx.route.name,
      endpoint: attempt.endpoint.id,
      error,
      attempts: ctx.tried.length,
    }
    if (neverSent(error) && ctx.tried.length >= ctx.route.balancer.size) {
      this.#stats.unavailable++
      const ids = ctx.tried.map((e) => e.id).join(', ')
      this.#failure(ctx.res, this.#requestId(ctx), {
        ...failure,
        status: 503,
        reason: `every endpoint was tried and the last refused the connection (${ids})`,
      })
      ctx.req.resume()
      return
    }
    if (isTimeout(error) && code !== 'UND_ERR_CONNECT_TIMEOUT') {
      this.#stats.timeouts++
      this.#failure(ctx.res, this.#requestId(ctx), {
        ...failure,
        status: 504,
        reason: `no answer within ${this.#o.headersTimeoutMs} ms (${code})`,
      })
    } else {
      this.#stats.badGateway++
      this.#failure(ctx.res, this.#requestId(ctx), {
        ...failure,
        status: 502,
        reason: `failed (${code}) after ${ctx.tried.length} attempt(s)`,
      })
    }
    ctx.req.resume()
  }

  #takeRetry(route: RouteRuntime): boolean {
    if (route.budget !== undefined && !route.budget.tryRetry()) {
      this.#stats.retriesRefused++
      return false
    }
    return true
  }

  #plain(res: ServerResponse, status: number, body: string, extra?: Record<string, string>): void {
    if (res.headersSent) {
      res.destroy()
      return
    }
    res.writeHead(status, {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      ...extra,
    })
    res.end(body)
  }

  #requestId(ctx: RequestContext): string {
    ctx.requestId ??= randomUUID()
    return ctx.requestId
  }

  /**
   * Answers 502/503/504 with the status and the request id only: upstream addresses and error
   * text would tell a client about the inside. The details go to the `request-failed` event.
   */
  #failure(
    res: ServerResponse,
    requestId: string,
    event: Omit<RequestFailedEvent, 'requestId'>,
  ): void {
    this.emit('request-failed', { requestId, ...event })
    this.#plain(res, event.status, failureBody(event.status, requestId), {
      'x-request-id': requestId,
    })
  }

  #badRequest(res: ServerResponse, why: string): void {
    this.#stats.badRequests++
    res.shouldKeepAlive = false
    this.#plain(res, 400, `400 Bad Request: ${why}\n`)
  }

  #lookup(ctx: RequestContext): void {
    const key = ctx.cacheKey!
    let result: ReturnType<ResponseCache['get']>
    try {
      result = this.#cache!.get(key)
    } catch (error) {
      this.emit('cache-error', { key, error })
      this.#stats.cacheMisses++
      this.#attempt(ctx)
      return
    }
    const onEntry = (entry: CachedResponse | undefined) => {
      if (entry !== undefined && this.#serveCached(ctx, entry)) return
      this.#stats.cacheMisses++
      this.#attempt(ctx)
    }
    if (result !== undefined && typeof (result as Promise<unknown>).then === 'function') {
      ;(result as Promise<CachedResponse | undefined>).then(onEntry, (error: unknown) => {
        this.emit('cache-error', { key, error })
        this.#stats.cacheMisses++
        this.#attempt(ctx)
      })
    } else onEntry(result as CachedResponse | undefined)
  }

  #serveCached(ctx: RequestContext, entry: CachedResponse): boolean {
    if (ctx.aborted) return true
    const now = Date.now()
    if (now - entry.storedAt >= entry.maxAgeMs) return false
    if (entry.vary !== undefined) {
      for (const name in entry.vary) {
        const v = ctx.req.headers[name]
        if ((Array.isArray(v) ? v.join(', ') : (v ?? '')) !== entry.vary[name]) return false
      }
    }
    this.#stats.cacheHits++
    const res = ctx.res
    const age = String(Math.floor((now - entry.storedAt) / 1000))
    if (etagMatches(ctx.req.headers['if-none-match'], entry.etag)) {
      const h: OutgoingHttpHeaders = { etag: entry.etag, age, 'x-cache': 'HIT' }
      for (const name of ['cache-control', 'vary', 'expires', 'last-modified', 'content-location'])
        if (entry.headers[name] !== undefined) h[name] = entry.headers[name]
      res.writeHead(304, h)
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
      const r = this.#cache!.set(key, entry, attempt.maxAge)
      if (r !== undefined && typeof (r as Promise<unknown>).then === 'function') {
        ;(r as Promise<unknown>).catch((error: unknown) => this.emit('cache-error', { key, error }))
      }
    } catch (error) {
      this.emit('cache-error', { key, error })
    }
  }

  #upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const answer = (status: number, text: string, body: string, extra = '') => {
      socket.end(
        `HTTP/1.1 ${status} ${text}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-content-type-options: nosniff\r\n${extra}connection: close\r\n\r\n${body}`,
      )
    }
    let requestId: string | undefined
    const failure = (event: Omit<RequestFailedEvent, 'requestId'>) => {
      requestId ??= randomUUID()
      this.emit('request-failed', { requestId, ...event })
      answer(
        event.status,
        FAILURE_TEXT[event.status],
        failureBody(event.status, requestId),
        `x-request-id: ${requestId}\r\n`,
      )
    }
    socket.on('error', () => socket.destroy())
    if (this.#closing) {
      answer(503, 'Service Unavailable', '503 Service Unavailable: the proxy is shutting down\n')
      return
    }
    let host: ParsedHost | undefined
    let target: RequestTarget
    try {
      ;({ host, target } = this.#parse(req))
    } catch (error) {
      if (!isLbError(error)) throw error
      this.#stats.badRequests++
      answer(400, 'Bad Request', `400 Bad Request: ${(error as Error).message}\n`)
      return
    }
    // A handshake has no body. Bytes after the request head (`head`, and what follows on the
    // socket) are the client's first frames: they go upstream only after its 101, since an
    // upstream that refuses the upgrade would read them as its next request (smuggling).
    const cl = req.headers['content-length']
    if ((cl !== undefined && cl !== '0') || req.headers['transfer-encoding'] !== undefined) {
      this.#stats.badRequests++
      answer(400, 'Bad Request', '400 Bad Request: an upgrade request with a body\n')
      return
    }
    const route = this.#match(host, target.path)
    if (route === undefined) {
      this.#stats.noRoute++
      answer(404, 'Not Found', noRouteBody(host, target))
      return
    }
    let endpoint: Endpoint<string>
    try {
      endpoint = route.balancer.pick(route.key?.(req))
    } catch (error) {
      this.#stats.unavailable++
      failure({
        status: 503,
        route: route.name,
        endpoint: undefined,
        reason: (error as Error).message,
        error,
        attempts: 0,
      })
      return
    }
    const origin = new URL(endpoint.value)
    const headers: Record<string, string | string[]> = {}
    // Only WebSocket is tunnelled. Any other protocol (h2c above all) would give the client a raw
    // connection on which it sends further requests to the upstream past the routes; such a
    // request goes upstream as a plain one, without Upgrade, and its connection closes after it.
    const websocket = isWebSocketUpgrade(req)
    if (websocket) {
      headers.connection = 'Upgrade'
      headers.upgrade = req.headers.upgrade!
    }
    const listed = connectionTokens(req.headers.connection)
    let hosts = 0
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i]!.toLowerCase()
      if (name === 'host' && ++hosts > 1) {
        this.#stats.badRequests++
        answer(400, 'Bad Request', '400 Bad Request: more than one Host header\n')
        return
      }
      if (HOP_BY_HOP.has(name) || listed?.has(name) || name === 'content-length') continue
      if (name === 'host' && !this.#o.preserveHost) continue
      if (name.startsWith('x-forwarded-') && !this.#o.trustForwarded) continue
      const prev = headers[name]
      const value = req.rawHeaders[i + 1]!
      headers[name] =
        prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value]
    }
    if (this.#o.xForwarded) {
      const ip = req.socket.remoteAddress ?? ''
      const prior = req.headers['x-forwarded-for']
      headers['x-forwarded-for'] = prior === undefined ? ip : `${prior}, ${ip}`
      headers['x-forwarded-proto'] ??= (req.socket as Socket & { encrypted?: boolean }).encrypted
        ? 'https'
        : 'http'
      if (req.headers.host !== undefined) headers['x-forwarded-host'] ??= req.headers.host
    }
    const startedAt = route.balancer.begin(endpoint)
    let ended = false
    const end = (ok: boolean) => {
      if (!ended) {
        ended = true
        route.balancer.end(endpoint, startedAt, ok)
      }
    }
    const upstream = httpRequest({
      // A connection of its own: a 101 takes it over, and after a refusal it closes rather
      // than idling in node's global agent beyond the proxy's close().
      agent: false,
      host: origin.hostname,
      port: origin.port || 80,
      method: req.method,
      path: upstreamPath(route, target),
      headers,
      timeout: this.#o.connectTimeoutMs,
    })
    upstream.on('timeout', () =>
      upstream.destroy(
        Object.assign(new Error('upgrade timed out'), { code: 'UND_ERR_HEADERS_TIMEOUT' }),
      ),
    )
    let answered = false
    upstream.on('error', (error) => {
      end(false)
      if (answered) {
        // The refusal is already on its way: cut it so the client sees it is incomplete.
        socket.destroy()
        return
      }
      if (socket.writable) {
        this.#stats.badGateway++
        failure({
          status: 502,
          route: route.name,
          endpoint: endpoint.id,
          reason: (error as { code?: string }).code ?? error.message,
          error,
          attempts: 1,
        })
      }
    })
    upstream.on('response', (res) => {
      answered = true
      end(res.statusCode !== undefined && res.statusCode < 500)
      // A refusal (no 101): node has already de-chunked the body, so relay it without the
      // hop-by-hop headers (Transfer-Encoding among them) and delimit it by closing the connection.
      const listed = connectionTokens(res.headers.connection)
      let text = `HTTP/1.1 ${res.statusCode} ${res.statusMessage}\r\n`
      for (let i = 0; i < res.rawHeaders.length; i += 2) {
        const name = res.rawHeaders[i]!
        const lower = name.toLowerCase()
        if (HOP_BY_HOP.has(lower) || listed?.has(lower)) continue
        text += `${name}: ${res.rawHeaders[i + 1]}\r\n`
      }
      socket.write(`${text}connection: close\r\n\r\n`)
      res.on('error', () => socket.destroy())
      res.pipe(socket)
    })
    upstream.on('upgrade', (res, upSocket, upHead) => {
      end(true)
      upstream.setTimeout(0)
      this.#stats.upgrades++
      let text = `HTTP/1.1 101 ${res.statusMessage ?? 'Switching Protocols'}\r\n`
      for (let i = 0; i < res.rawHeaders.length; i += 2)
        text += `${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}\r\n`
      socket.write(`${text}\r\n`)
      if (upHead.length > 0) socket.write(upHead)
      if (head.length > 0) upSocket.write(head)
      this.#upgraded.add(socket)
      socket.once('close', () => {
        this.#upgraded.delete(socket)
        upSocket.destroy()
      })
      upSocket.once('close', () => socket.destroy())
      upSocket.on('error', () => socket.destroy())
      upSocket.pipe(socket)
      socket.pipe(upSocket)
    })
    upstream.end()
  }

  stats(): ProxyStats {
    const routes: ProxyStats['routes'] = {}
    for (const r of this.#routes) routes[r.name] = r.balancer.stats()
    return { ...this.#stats, inFlight: this.#inFlight, routes }
  }

  close(): Promise<void> {
    this.#closed ??= this.#close()
    return this.#closed
  }

  async #close(): Promise<void> {
    this.#closing = true
    const closed = new Promise<void>((resolve) => {
      if (!this.server.listening) resolve()
      else this.server.close(() => resolve())
    })
    this.server.closeIdleConnections()
    if (this.#inFlight > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.#o.drainTimeoutMs)
        timer.unref?.()
        this.#onDrained = () => {
          clearTimeout(timer)
          resolve()
        }
      })
    }
    this.server.closeAllConnections()
    for (const s of this.#upgraded) s.destroy()
    await closed
    await Promise.all(this.#routes.map((r) => r.checker?.close()))
    await this.#pools.close()
    await Promise.all(this.#routes.filter((r) => r.own).map((r) => r.balancer.close()))
  }
}

/**
 * Creates an L7 reverse proxy on `node:http`: routes by host and path prefix to upstream
 * balancers, streams bodies both ways, sets `X-Forwarded-*`, strips hop-by-hop headers, retries
 * idempotent requests on another endpoint, answers 502/503/504 with a generic body and a request
 * id (details in the `request-failed` event), refuses a bad `Host` or request target with 400, proxies
 * WebSocket upgrades, drains on shutdown, and optionally compresses and caches responses.
 *
 * @example
 * ```ts
 * import { createProxy } from '@ballast/lb'
 *
 * const proxy = createProxy({
 *   routes: [
 *     { pathPrefix: '/api', upstream: ['http://127.0.0.1:3001', 'http://127.0.0.1:3002'] },
 *     { host: 'static.shop.test', upstream: ['http://127.0.0.1:4000'] },
 *   ],
 *   healthCheck: { check: { type: 'http', path: '/health' }, intervalMs: 2000 },
 *   compression: true,
 * })
 * await proxy.listen(8080)
 * // on SIGTERM: stop accepting, finish what is in flight
 * await proxy.close()
 * ```
 */
export function createProxy(options: ProxyOptions): ReverseProxy {
  return new ProxyImpl(options)
}
