import { randomUUID } from 'node:crypto'
import {
  createServer,
  type IncomingMessage,
  type Server,
  type ServerOptions,
  type ServerResponse,
} from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Duplex, Writable } from 'node:stream'
import {
  type Checks,
  checkProviders,
  checks,
  type Duration,
  Emitter,
  type Listener,
  merge,
  observe,
  show,
  type TelemetryOptions,
  telemetry,
  type Unsubscribe,
} from '@ballast/shared'
import { type Meter, trace } from '@opentelemetry/api'
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
import { Attempt, onHeadersTimeout } from './internal/proxy/attempt.js'
import { ProxyCache } from './internal/proxy/cache.js'
import { compressor } from './internal/proxy/compression.js'
import {
  announcesBody,
  failureBody,
  isWebSocketUpgrade,
  noRouteBody,
  type RequestContext,
  type RouteRuntime,
  upstreamPath,
} from './internal/proxy/context.js'
import { downstreamHeaders, upstreamHeaders } from './internal/proxy/forwardHeaders.js'
import {
  attemptChannel,
  isLive,
  ProxyTelemetry,
  requestChannel,
  type ServedRequest,
} from './internal/proxy/telemetry.js'
import { proxyUpgrade, type UpgradeOwner } from './internal/proxy/upgrade.js'
import {
  byPrecedence,
  matchRoute,
  normalizePath,
  type ParsedHost,
  parseHost,
  parseRequestTarget,
  type RequestTarget,
} from './internal/requestTarget.js'
import { BALANCER_ATTRIBUTES, isSaneRequestId, SCOPE } from './internal/telemetry.js'
import { isIdempotent, isTimeout, neverSent, UpstreamPools } from './internal/upstreams.js'
import { parseCacheControl, type ResponseCache, responseCacheKey } from './responseCache.js'
import { createRetryBudget, type RetryBudgetOptions } from './retryBudget.js'

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
export const DEFAULT_COMPRESSION_OPTIONS: Readonly<Required<CompressionOptions>> = Object.freeze({
  threshold: 1024,
  brotli: false,
  level: 6,
})

/** The defaults of {@link ProxyCacheOptions} (the store has none). */
export const DEFAULT_PROXY_CACHE_OPTIONS: Readonly<Required<Omit<ProxyCacheOptions, 'store'>>> =
  Object.freeze({
    maxBodyBytes: 1_048_576,
  })

/**
 * Options of {@link createProxy}. `meterProvider` and `tracerProvider` (from
 * {@link TelemetryOptions}) default to the global ones; the balancers and health checkers the
 * proxy creates report through them too.
 */
export interface ProxyOptions extends TelemetryOptions {
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
   * Time to connect to an upstream.
   * @default 2000
   */
  connectTimeout?: Duration
  /**
   * Time until the upstream sends its response headers (then 504).
   * @default 30000
   */
  headersTimeout?: Duration
  /**
   * Longest pause between two upstream body chunks.
   * @default 60000
   */
  bodyTimeout?: Duration
  /**
   * Idle upstream connections are closed after this.
   * @default 4000
   */
  keepAliveTimeout?: Duration
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
   * How long `close()` waits for in-flight requests before cutting them.
   * @default 10000
   */
  drainTimeout?: Duration
  /**
   * Also record `http.client.request.duration` for each attempt upstream (when an SDK records
   * metrics): per endpoint, a latency histogram with percentiles. Off by default because its
   * record is about half the CPU the proxy spends on metrics per request (the metrics SDK sorts
   * and serialises each record's attributes to find its series). Without it, per endpoint,
   * `ballast.lb.endpoint.requests` counts requests and failures and
   * `ballast.lb.endpoint.response_time` sums their times (the mean, at no cost per request);
   * the proxy's own `http.server.request.duration`, its counters and its spans are the same
   * either way.
   * @default false
   */
  clientRequestDuration?: boolean
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
export const DEFAULT_PROXY_OPTIONS: Readonly<
  Required<
    Omit<
      ProxyOptions,
      | 'routes'
      | 'balancer'
      | 'healthCheck'
      | 'retryBudget'
      | 'cache'
      | 'server'
      | 'meterProvider'
      | 'tracerProvider'
    >
  >
> = Object.freeze({
  connections: 128,
  connectTimeout: 2000,
  headersTimeout: 30_000,
  bodyTimeout: 60_000,
  keepAliveTimeout: 4000,
  maxAttempts: 2,
  retryOnStatus: Object.freeze([502, 503, 504]),
  xForwarded: true,
  trustForwarded: false,
  preserveHost: true,
  compression: false,
  drainTimeout: 10_000,
  clientRequestDuration: false,
})

/** Payload of the proxy's `upstream-failed` event. */
export interface UpstreamFailedEvent {
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

/** Payload of the proxy's `retried` event. */
export interface RetriedEvent {
  /** The route's name. */
  route: string
  /** The endpoint that failed. */
  from: string
  /** The attempt that failed (1 for the first). */
  attempt: number
  /** The error code or status that caused the retry. */
  reason: string
}

/** Payload of the proxy's `cache-failed` event. */
export interface CacheFailedEvent {
  /** The cache key. */
  key: string
  /** What the store threw. */
  error: unknown
}

/** The events of a {@link ReverseProxy}, each with its one payload object. */
export interface ProxyEvents {
  /** An attempt to an upstream failed (it may be retried, then `retried` follows). */
  'upstream-failed': UpstreamFailedEvent
  /** A request was sent again, to another endpoint. */
  retried: RetriedEvent
  /** The cache store threw or rejected; the request went upstream (or was not stored). */
  'cache-failed': CacheFailedEvent
  /** The proxy answered 502, 503 or 504 (with a generic body); the details are in the payload. */
  'request-failed': RequestFailedEvent
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
  timedOut: number
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
  /**
   * Adds an event listener; returns a function that removes it. A listener that throws does
   * not break the request: its error is rethrown in a microtask.
   */
  on<K extends keyof ProxyEvents>(event: K, listener: Listener<ProxyEvents[K]>): Unsubscribe
  /** Adds a listener called at most once; returns a function that removes it. */
  once<K extends keyof ProxyEvents>(event: K, listener: Listener<ProxyEvents[K]>): Unsubscribe
  /** Removes a listener. */
  off<K extends keyof ProxyEvents>(event: K, listener: Listener<ProxyEvents[K]>): void
  /**
   * Graceful shutdown: stops accepting, lets in-flight requests finish (up to `drainTimeout`),
   * then closes connections, pools, health checkers and the balancers it created.
   */
  close(): Promise<void>
}
/** Bodies up to this size that arrive in one chunk leave with the response head in one write. */
const WHOLE_BODY_MAX = 16_384

function isBalancer(value: unknown): value is Balancer<string> {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Balancer<string>).pick === 'function'
  )
}

const check: Checks = checks(InvalidArgumentError)

/** The proxy's durations, in milliseconds. */
interface ProxyTimeouts {
  readonly connectTimeoutMs: number
  readonly headersTimeoutMs: number
  readonly bodyTimeoutMs: number
  readonly keepAliveTimeoutMs: number
  readonly drainTimeoutMs: number
}

class ProxyImpl extends Emitter<ProxyEvents> implements ReverseProxy {
  readonly server: Server
  readonly maxCacheBytes: number
  readonly #routes: RouteRuntime[]
  readonly #pools: UpstreamPools
  readonly #options: typeof DEFAULT_PROXY_OPTIONS & ProxyOptions
  readonly #timeouts: ProxyTimeouts
  readonly #retryOnStatus: ReadonlySet<number>
  readonly #compression: Required<CompressionOptions> | undefined
  readonly #cache: ProxyCache | undefined
  readonly #upgraded = new Set<Duplex>()
  readonly #upgradeOwner: UpgradeOwner
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
    timedOut: 0,
    cacheHits: 0,
    cacheMisses: 0,
    upgrades: 0,
  }
  readonly #telemetry: ProxyTelemetry | undefined
  readonly #stopObserving: () => void

  constructor(options: ProxyOptions) {
    super()
    const o = merge(DEFAULT_PROXY_OPTIONS, options)
    this.#options = o
    checkProviders(check, o)
    const providers = telemetry(SCOPE, o)
    const live = isLive(providers.meter, o.tracerProvider ?? trace.getTracerProvider())
    const clientRequestDuration = check.boolean('clientRequestDuration', o.clientRequestDuration)
    // Subscribed to the proxy's channels only when an SDK records something: without one, the
    // request path publishes nothing and pays one check.
    this.#telemetry =
      live.metrics || live.traces
        ? new ProxyTelemetry(this, providers, {
            traced: live.traces,
            clientRequestDuration: live.metrics && clientRequestDuration,
          })
        : undefined
    check.positiveInteger('connections', o.connections)
    check.positiveInteger('maxAttempts', o.maxAttempts)
    const timeouts: ProxyTimeouts = {
      connectTimeoutMs: check.duration('connectTimeout', o.connectTimeout, { positive: true }),
      headersTimeoutMs: check.duration('headersTimeout', o.headersTimeout, { positive: true }),
      bodyTimeoutMs: check.duration('bodyTimeout', o.bodyTimeout, { positive: true }),
      keepAliveTimeoutMs: check.duration('keepAliveTimeout', o.keepAliveTimeout, {
        positive: true,
      }),
      drainTimeoutMs: check.duration('drainTimeout', o.drainTimeout, { positive: true }),
    }
    this.#timeouts = timeouts
    if (!Array.isArray(o.routes) || o.routes.length === 0) {
      check.invalid('routes', 'a list of at least one route', o.routes)
    }
    this.#retryOnStatus = new Set(o.retryOnStatus)
    this.#compression =
      o.compression === false
        ? undefined
        : merge(DEFAULT_COMPRESSION_OPTIONS, o.compression === true ? {} : o.compression)
    if (this.#compression !== undefined) {
      const { level, threshold } = this.#compression
      if (!Number.isInteger(level) || level < 1 || level > 9) {
        check.invalid('compression.level', 'an integer from 1 to 9', level)
      }
      if (!Number.isInteger(threshold) || threshold < 0) {
        check.invalid('compression.threshold', 'an integer >= 0', threshold)
      }
    }
    if (
      o.cache !== undefined &&
      (typeof o.cache.store?.get !== 'function' || typeof o.cache.store?.set !== 'function')
    ) {
      check.invalid(
        'cache.store',
        'an object with get(key) and set(key, value, ttlMs)',
        o.cache.store,
      )
    }
    this.#cache =
      o.cache === undefined
        ? undefined
        : new ProxyCache(o.cache.store, {
            counters: this.#stats,
            miss: (ctx) => this.#attempt(ctx),
            failed: (key, error) => this.emit('cache-failed', { key, error }),
          })
    this.maxCacheBytes = merge(DEFAULT_PROXY_CACHE_OPTIONS, o.cache).maxBodyBytes
    if (!Number.isInteger(this.maxCacheBytes) || this.maxCacheBytes <= 0) {
      check.invalid('cache.maxBodyBytes', 'a positive integer', this.maxCacheBytes)
    }
    this.#pools = new UpstreamPools({
      connections: o.connections,
      connectTimeoutMs: timeouts.connectTimeoutMs,
      keepAliveTimeoutMs: timeouts.keepAliveTimeoutMs,
    })
    this.#routes = o.routes.map((r, i) => this.#route(r, i))
    this.#routes.sort(byPrecedence)
    this.#upgradeOwner = {
      counters: this.#stats,
      settings: {
        preserveHost: o.preserveHost,
        xForwarded: o.xForwarded,
        trustForwarded: o.trustForwarded,
        connectTimeoutMs: timeouts.connectTimeoutMs,
      },
      upgraded: this.#upgraded,
      closing: () => this.#closing,
      parse: (req) => this.#parse(req),
      match: (host, path) => this.#match(host, path),
      failed: (event) => this.emit('request-failed', event),
    }
    // Requests without a body skip the readable-stream life cycle of their IncomingMessage
    // (node >= 24.9; older versions ignore the option); the proxy never reads such a body.
    // Only WebSocket upgrades leave the request path (node >= 24.9 reads shouldUpgradeCallback;
    // older versions send every upgrade to proxyUpgrade, which treats the others alike): any other
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
      proxyUpgrade(this.#upgradeOwner, req, socket, head),
    )
    this.#stopObserving = observeProxy(
      providers.meter,
      this.#stats,
      () => this.#inFlight,
      () => this.#telemetry?.flush(),
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
        `invalid option "routes[${i}].pathPrefix": expected a path starting with "/" without dot segments, got ${show(rawPrefix)}`,
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
        check.invalid(`routes[${i}].upstream`, 'a balancer or a list of origins', r.upstream)
      }
      for (const e of r.upstream) {
        const origin = typeof e === 'string' ? e : (e.value ?? e.id)
        if (typeof origin !== 'string' || !/^https?:\/\/[^/]+\/?$/.test(origin)) {
          check.invalid(`routes[${i}].upstream`, 'origins such as "http://127.0.0.1:8080"', origin)
        }
      }
      const { meterProvider, tracerProvider } = this.#options
      balancer = createBalancer<string>({
        ...(this.#options.balancer ?? {}),
        endpoints: r.upstream,
        meterProvider,
        tracerProvider,
        [BALANCER_ATTRIBUTES]: { 'ballast.lb.route': name },
      } as BalancerOptions<string>)
      own = true
      if (this.#options.healthCheck !== false && this.#options.healthCheck !== undefined)
        checker = createHealthChecker({
          ...this.#options.healthCheck,
          balancer,
          meterProvider,
          tracerProvider,
        })
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
        this.#options.retryBudget === false
          ? undefined
          : createRetryBudget(this.#options.retryBudget ?? {}),
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
    let served: ServedRequest | undefined
    if (requestChannel.hasSubscribers) {
      served = {
        proxy: this,
        req,
        res,
        route: undefined,
        host: undefined,
        error: undefined,
        startedAt: 0,
        span: undefined,
        traceContext: undefined,
        unsampledHeaders: undefined,
      }
      requestChannel.start.publish(served)
    }
    let host: ParsedHost | undefined
    let target: RequestTarget
    let headers: string[] | undefined
    try {
      ;({ host, target } = this.#parse(req))
      headers = upstreamHeaders(req, this.#options)
    } catch (error) {
      if (!isLbError(error)) throw error
      res.once('close', () => this.#done(served))
      this.#badRequest(res, (error as Error).message)
      return
    }
    if (headers === undefined) {
      res.once('close', () => this.#done(served))
      this.#badRequest(res, 'more than one Host header')
      return
    }
    if (served !== undefined) served.host = host
    const route = this.#match(host, target.path)
    if (route === undefined) {
      res.once('close', () => this.#done(served))
      this.#stats.noRoute++
      this.#answer(res, 404, noRouteBody(host, target))
      return
    }
    if (served !== undefined) served.route = route.name
    const method = req.method ?? 'GET'
    // The request id goes upstream: the client's when it is a sane token, else a new UUID
    // (replacing one that is not).
    const incomingId = req.headers['x-request-id']
    let requestId: string
    if (isSaneRequestId(incomingId)) requestId = incomingId
    else {
      requestId = randomUUID()
      if (incomingId !== undefined) headers = withoutHeader(headers, 'x-request-id')
      headers.push('x-request-id', requestId)
    }
    const hasBody = announcesBody(req)
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
      requestId,
      served,
    }
    res.once('close', () => {
      this.#done(served)
      if (!res.writableFinished) {
        ctx.aborted = true
        ctx.attempt?.controller?.abort(new Error('client went away'))
      }
    })
    route.budget?.recordRequest()
    if (this.#cache !== undefined && (method === 'GET' || method === 'HEAD') && !hasBody) {
      const cacheControl = parseCacheControl(req.headers['cache-control'])
      if (
        !cacheControl.has('no-store') &&
        !cacheControl.has('no-cache') &&
        req.headers.authorization === undefined
      ) {
        // A HEAD is answered from the stored GET (headers, no body); only a GET stores.
        ctx.cacheKey = responseCacheKey('GET', host?.authority, target.path, target.query)
        this.#cache.lookup(ctx)
        return
      }
    }
    this.#attempt(ctx)
  }

  /** A request is over (answered or abandoned). */
  #done(served: ServedRequest | undefined): void {
    this.#inFlight--
    if (this.#closing && this.#inFlight === 0) this.#onDrained?.()
    if (served !== undefined) requestChannel.asyncEnd.publish(served)
  }

  /** Publishes the end of an attempt whose start was published, once. */
  #endAttempt(attempt: Attempt, error?: unknown): void {
    if (!attempt.published || attempt.reported) return
    attempt.reported = true
    attempt.error = error
    attemptChannel.asyncEnd.publish(attempt)
  }

  onAttemptEnd(attempt: Attempt): void {
    this.#endAttempt(attempt)
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
      if (ctx.served !== undefined) ctx.served.error = error
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
    if (ctx.served !== undefined && attemptChannel.hasSubscribers) {
      attempt.published = true
      attemptChannel.start.publish(attempt)
    }
    attempt.timer = setTimeout(onHeadersTimeout, this.#timeouts.headersTimeoutMs, attempt)
    this.#pools.get(endpoint).dispatch(
      {
        path: ctx.path,
        method: ctx.method as Dispatcher.HttpMethod,
        headers: attempt.headers ?? ctx.headers,
        body: ctx.hasBody ? ctx.req : null,
        headersTimeout: this.#timeouts.headersTimeoutMs + 1000,
        bodyTimeout: this.#timeouts.bodyTimeoutMs,
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
    attempt.status = status
    ctx.route.balancer.end(attempt.endpoint, attempt.startedAt, status < 500)
    if (
      this.#retryOnStatus.has(status) &&
      ctx.idempotent &&
      ctx.tried.length < this.#options.maxAttempts &&
      ctx.route.balancer.size > ctx.tried.length
    ) {
      if (this.#takeRetry(ctx.route)) {
        attempt.retrying = true
        this.#endAttempt(attempt)
        this.emit('retried', {
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
    const out = downstreamHeaders(headers)
    if (ctx.cacheKey !== undefined) this.#cache!.prepare(attempt, status, out)
    let sink: Writable = res
    const acceptEncoding = ctx.acceptEncoding
    if (
      acceptEncoding !== undefined &&
      this.#compression !== undefined &&
      ctx.method !== 'HEAD' &&
      status !== 204 &&
      status !== 304 &&
      out['content-encoding'] === undefined
    ) {
      sink = compressor(this.#compression, acceptEncoding, out, res) ?? res
    }
    attempt.sink = sink
    if (sink === res && ctx.method !== 'HEAD') {
      const length = out['content-length']
      if (typeof length === 'string' && length.length <= 5) {
        const n = Number(length)
        if (n > 0 && n <= WHOLE_BODY_MAX) attempt.wholeBodyLength = n
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
      this.emit('upstream-failed', {
        route: ctx.route.name,
        endpoint: attempt.endpoint.id,
        error,
        attempt: ctx.tried.length,
        requestId,
      })
      this.#stats.badGateway++
      attempt.invalid = true
      this.#endAttempt(attempt, error)
      if (ctx.served !== undefined) ctx.served.error = error
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
    this.#endAttempt(attempt, error)
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
    if (this.has('upstream-failed')) {
      this.emit('upstream-failed', {
        route: ctx.route.name,
        endpoint: attempt.endpoint.id,
        error,
        attempt: ctx.tried.length,
        requestId: this.#requestId(ctx),
      })
    }
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
      ctx.tried.length < this.#options.maxAttempts &&
      ctx.route.balancer.size > ctx.tried.length &&
      this.#takeRetry(ctx.route)
    ) {
      this.#stats.retries++
      attempt.lastError = error
      this.emit('retried', {
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

  store(attempt: Attempt): void {
    this.#cache!.store(attempt)
  }

  #fail(ctx: RequestContext, attempt: Attempt, error: unknown): void {
    const code =
      (error as { code?: string } | undefined)?.code ??
      (error as Error | undefined)?.message ??
      'error'
    if (ctx.served !== undefined) ctx.served.error = error
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
      this.#stats.timedOut++
      this.#failure(ctx.res, this.#requestId(ctx), {
        ...failure,
        status: 504,
        reason: `no answer within ${this.#timeouts.headersTimeoutMs} ms (${code})`,
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

  /** Answers with a short plain-text body, or cuts the response if its head already left. */
  #answer(res: ServerResponse, status: number, body: string, extra?: Record<string, string>): void {
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
    this.#answer(res, event.status, failureBody(event.status, requestId), {
      'x-request-id': requestId,
    })
  }

  #badRequest(res: ServerResponse, why: string): void {
    this.#stats.badRequests++
    res.shouldKeepAlive = false
    this.#answer(res, 400, `400 Bad Request: ${why}\n`)
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
    this.#stopObserving()
    const closed = new Promise<void>((resolve) => {
      if (!this.server.listening) resolve()
      else this.server.close(() => resolve())
    })
    this.server.closeIdleConnections()
    if (this.#inFlight > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.#timeouts.drainTimeoutMs)
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
    // Last: the requests cut above still end their spans.
    this.#telemetry?.close()
  }
}

/**
 * Registers the proxy's observable counters, read from its stats when the SDK collects; first,
 * `beforeCollect` hands the SDK the durations measured since the last collection.
 */
function observeProxy(
  meter: Meter,
  stats: Readonly<Omit<ProxyStats, 'inFlight' | 'routes'>>,
  inFlight: () => number,
  beforeCollect: () => void,
): () => void {
  return observe(
    meter,
    {
      'ballast.lb.proxy.requests': {
        kind: 'counter',
        description: 'Requests the proxy received',
        unit: '{request}',
      },
      'ballast.lb.proxy.in_flight': {
        kind: 'upDownCounter',
        description: 'Requests being handled now',
        unit: '{request}',
      },
      'ballast.lb.proxy.retries': {
        kind: 'counter',
        description: 'Requests sent again to another endpoint',
        unit: '{retry}',
      },
      'ballast.lb.proxy.retries_refused': {
        kind: 'counter',
        description: 'Retries the retry budget refused',
        unit: '{retry}',
      },
      'ballast.lb.proxy.failed': {
        kind: 'counter',
        description:
          'Requests the proxy answered itself with an error, by ballast.lb.proxy.reason (no_route, bad_request, unavailable, bad_gateway, timed_out)',
        unit: '{request}',
      },
      'ballast.lb.proxy.cache.hits': {
        kind: 'counter',
        description: 'Responses served from the response cache',
        unit: '{request}',
      },
      'ballast.lb.proxy.cache.misses': {
        kind: 'counter',
        description: 'Cacheable requests that went upstream',
        unit: '{request}',
      },
      'ballast.lb.proxy.upgrades': {
        kind: 'counter',
        description: 'WebSocket connections proxied',
        unit: '{connection}',
      },
    },
    (record) => {
      beforeCollect()
      record('ballast.lb.proxy.requests', stats.requests)
      record('ballast.lb.proxy.in_flight', inFlight())
      record('ballast.lb.proxy.retries', stats.retries)
      record('ballast.lb.proxy.retries_refused', stats.retriesRefused)
      record('ballast.lb.proxy.failed', stats.noRoute, { 'ballast.lb.proxy.reason': 'no_route' })
      record('ballast.lb.proxy.failed', stats.badRequests, {
        'ballast.lb.proxy.reason': 'bad_request',
      })
      record('ballast.lb.proxy.failed', stats.unavailable, {
        'ballast.lb.proxy.reason': 'unavailable',
      })
      record('ballast.lb.proxy.failed', stats.badGateway, {
        'ballast.lb.proxy.reason': 'bad_gateway',
      })
      record('ballast.lb.proxy.failed', stats.timedOut, { 'ballast.lb.proxy.reason': 'timed_out' })
      record('ballast.lb.proxy.cache.hits', stats.cacheHits)
      record('ballast.lb.proxy.cache.misses', stats.cacheMisses)
      record('ballast.lb.proxy.upgrades', stats.upgrades)
    },
  )
}

/** The header list without every header of this (lower-case) name. */
function withoutHeader(headers: string[], name: string): string[] {
  const out: string[] = []
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i]!.toLowerCase() !== name) out.push(headers[i]!, headers[i + 1]!)
  }
  return out
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
 *   healthCheck: { check: { type: 'http', path: '/health' }, interval: '2s' },
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
