import { randomUUID } from 'node:crypto'
import type { Readable } from 'node:stream'
import {
  type Checks,
  checkProviders,
  checks,
  type Duration,
  durationHistogram,
  errorType,
  failSpan,
  merge,
  observe,
  type TelemetryOptions,
  telemetry,
} from '@ballast/shared'
import {
  type Attributes,
  context,
  type Histogram,
  type Span,
  SpanStatusCode,
  type Tracer,
} from '@opentelemetry/api'
import type { Dispatcher } from 'undici'
import { type Balancer, type BalancerOptions, createBalancer } from './balancer.js'
import type { Endpoint, EndpointInput } from './endpoint.js'
import {
  InvalidArgumentError,
  LbClosedError,
  NoEndpointAvailableError,
  UpstreamError,
  UpstreamTimeoutError,
} from './errors.js'
import type { HashKey } from './hash.js'
import {
  createHealthChecker,
  type HealthChecker,
  type HealthCheckerOptions,
} from './healthChecker.js'
import {
  endpointAddress,
  isSaneRequestId,
  methodAttribute,
  SCOPE,
  spanName,
  startAttemptSpan,
} from './internal/telemetry.js'
import { isIdempotent, isTimeout, neverSent, UpstreamPools } from './internal/upstreams.js'
import { createRetryBudget, type RetryBudget, type RetryBudgetOptions } from './retryBudget.js'

/**
 * Options of {@link createBalancedClient}. `meterProvider` and `tracerProvider` (from
 * {@link TelemetryOptions}) default to the global ones; the balancer and health checker the
 * client creates report through them too.
 */
export interface BalancedClientOptions extends TelemetryOptions {
  /**
   * The upstream origins (`http://host:port`), or `{ id, weight, value }` where `value` (default
   * the id) is the origin. Ignored when `balancer` is given.
   */
  endpoints?: ReadonlyArray<string | EndpointInput<string>>
  /**
   * A balancer to use, or options for the one the client creates (with `endpoints`). A balancer
   * passed in is not closed by the client.
   * @default { strategy: 'peak-ewma' }
   */
  balancer?: Balancer<string> | Omit<BalancerOptions<string>, 'endpoints'>
  /**
   * Active health checks on the endpoints; `false` for none.
   * @default false
   */
  healthCheck?: Omit<HealthCheckerOptions<string>, 'balancer'> | false
  /**
   * Connections per endpoint.
   * @default 64
   */
  connections?: number
  /**
   * Time to establish a connection.
   * @default 2000
   */
  connectTimeout?: Duration
  /**
   * Time until the response headers arrive (then {@link UpstreamTimeoutError}).
   * @default 10000
   */
  headersTimeout?: Duration
  /**
   * Longest pause between two body chunks.
   * @default 30000
   */
  bodyTimeout?: Duration
  /**
   * Idle keep-alive connections are closed after this.
   * @default 4000
   */
  keepAliveTimeout?: Duration
  /**
   * Attempts per request, the first included; retries go to a different endpoint.
   * @default 3
   */
  maxAttempts?: number
  /**
   * The retry budget, its options, or `false` for no budget (retries limited by `maxAttempts` only).
   * @default {} (20 % of requests plus 10 a second over 10 s)
   */
  retryBudget?: RetryBudget | RetryBudgetOptions | false
  /**
   * Response statuses on which an idempotent request is retried on another endpoint.
   * @default [502, 503, 504]
   */
  retryOnStatus?: readonly number[]
  /**
   * Which statuses count as failures of the endpoint for outlier detection.
   * @default status >= 500
   */
  isFailure?: (status: number) => boolean
}

/** The defaults of {@link BalancedClientOptions}. */
export const DEFAULT_BALANCED_CLIENT_OPTIONS: Readonly<
  Required<
    Omit<
      BalancedClientOptions,
      'endpoints' | 'balancer' | 'healthCheck' | 'retryBudget' | 'meterProvider' | 'tracerProvider'
    >
  >
> = Object.freeze({
  connections: 64,
  connectTimeout: 2000,
  headersTimeout: 10_000,
  bodyTimeout: 30_000,
  keepAliveTimeout: 4000,
  maxAttempts: 3,
  retryOnStatus: Object.freeze([502, 503, 504]),
  isFailure: (status: number) => status >= 500,
})

const check: Checks = checks(InvalidArgumentError)
const argument: Checks = checks(InvalidArgumentError, 'argument')

/** One request of a {@link BalancedClient}. */
export interface BalancedRequestOptions {
  /** The path and query, such as `/orders?id=1`. */
  path: string
  /**
   * The HTTP method.
   * @default 'GET'
   */
  method?: string
  /**
   * Request headers. An `x-request-id` that is a sane token (up to 128 letters, digits, `-`, `_`,
   * `.`, `:`) is sent as it is, else one is generated; a `traceparent`/`tracestate` here is
   * replaced by the attempt span's context when a propagator is installed.
   */
  headers?: Record<string, string | string[]>
  /**
   * The body. A string or bytes can be sent again on a retry; a stream cannot, so a request with
   * a stream body is never retried after it may have been sent.
   */
  body?: string | Uint8Array | Readable | null
  /** Routing key for the hashing strategies (such as a user id). */
  key?: HashKey
  /**
   * Whether the request may be sent twice.
   * @default true for GET, HEAD, OPTIONS, PUT, DELETE and TRACE
   */
  idempotent?: boolean
  /** Aborts the request. */
  signal?: AbortSignal
}

/**
 * The defaults of {@link BalancedRequestOptions} (`idempotent` has none of its own: it follows
 * the method).
 */
export const DEFAULT_BALANCED_REQUEST_OPTIONS: Readonly<
  Required<Pick<BalancedRequestOptions, 'method'>>
> = Object.freeze({ method: 'GET' })

/** The answer to a {@link BalancedClient.request}. Consume or `dump()` the body. */
export interface BalancedResponse {
  /** The HTTP status. */
  statusCode: number
  /** The response headers, names in lower case. */
  headers: Record<string, string | string[] | undefined>
  /** The body stream (undici's, with `text()`, `json()`, `arrayBuffer()` and `dump()`). */
  body: Dispatcher.ResponseData['body']
  /** The id of the endpoint that answered. */
  endpoint: string
  /** How many attempts were made (1 when the first answered). */
  attempts: number
}

/** Counters of a {@link BalancedClient}. */
export interface BalancedClientStats {
  /** Requests made (first attempts). */
  requests: number
  /** Retries made. */
  retries: number
  /** Retries refused by the budget. */
  retriesRefused: number
  /** Requests that ended in an error. */
  failed: number
}

/** An HTTP client over a balanced set of upstream origins. */
export interface BalancedClient {
  /** The balancer in use. */
  readonly balancer: Balancer<string>
  /**
   * Sends a request to an endpoint the strategy picks, retrying idempotent requests on another
   * endpoint within the budget.
   * @throws NoEndpointAvailableError at once when no endpoint is usable.
   * @throws UpstreamError when every allowed attempt failed to get an answer.
   * @throws UpstreamTimeoutError when the last attempt timed out.
   */
  request(options: BalancedRequestOptions): Promise<BalancedResponse>
  /** Counters. */
  stats(): BalancedClientStats
  /** Closes the pools (waiting for requests in flight), the health checker and an own balancer. */
  close(): Promise<void>
}

function isBalancer(value: unknown): value is Balancer<string> {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Balancer<string>).pick === 'function'
  )
}

class BalancedClientImpl implements BalancedClient {
  readonly balancer: Balancer<string>
  readonly #ownBalancer: boolean
  readonly #pools: UpstreamPools
  readonly #checker: HealthChecker<string> | undefined
  readonly #budget: RetryBudget | undefined
  readonly #maxAttempts: number
  readonly #headersTimeoutMs: number
  readonly #bodyTimeoutMs: number
  readonly #retryOnStatus: ReadonlySet<number>
  readonly #isFailure: (status: number) => boolean
  #requests = 0
  #retries = 0
  #refused = 0
  #failed = 0
  #closed = false
  readonly #tracer: Tracer
  readonly #duration: Histogram
  readonly #stopObserving: () => void

  constructor(options: BalancedClientOptions) {
    const o = merge(DEFAULT_BALANCED_CLIENT_OPTIONS, options)
    const { meterProvider, tracerProvider } = o
    check.positiveInteger('connections', o.connections)
    check.positiveInteger('maxAttempts', o.maxAttempts)
    checkProviders(check, o)
    const connectTimeoutMs = check.duration('connectTimeout', o.connectTimeout, { positive: true })
    const headersTimeoutMs = check.duration('headersTimeout', o.headersTimeout, { positive: true })
    const bodyTimeoutMs = check.duration('bodyTimeout', o.bodyTimeout, { positive: true })
    const keepAliveTimeoutMs = check.duration('keepAliveTimeout', o.keepAliveTimeout, {
      positive: true,
    })
    if (isBalancer(o.balancer)) {
      this.balancer = o.balancer
      this.#ownBalancer = false
    } else {
      if (!Array.isArray(o.endpoints)) {
        check.invalid('endpoints', 'a list of origins (or a "balancer")', o.endpoints)
      }
      for (const e of o.endpoints) {
        const origin = typeof e === 'string' ? e : (e.value ?? e.id)
        if (typeof origin !== 'string' || !/^https?:\/\/[^/]+\/?$/.test(origin)) {
          check.invalid('endpoints', 'origins such as "http://127.0.0.1:8080"', origin)
        }
      }
      this.balancer = createBalancer<string>({
        ...(o.balancer ?? {}),
        endpoints: o.endpoints,
        meterProvider,
        tracerProvider,
      })
      this.#ownBalancer = true
    }
    this.#pools = new UpstreamPools({
      connections: o.connections,
      connectTimeoutMs,
      keepAliveTimeoutMs,
    })
    this.#pools.watch(this.balancer)
    this.#checker =
      o.healthCheck === false || o.healthCheck === undefined
        ? undefined
        : createHealthChecker({
            ...o.healthCheck,
            balancer: this.balancer,
            meterProvider,
            tracerProvider,
          })
    this.#budget =
      o.retryBudget === false
        ? undefined
        : isBudget(o.retryBudget)
          ? o.retryBudget
          : createRetryBudget(o.retryBudget ?? {})
    this.#maxAttempts = o.maxAttempts
    this.#headersTimeoutMs = headersTimeoutMs
    this.#bodyTimeoutMs = bodyTimeoutMs
    this.#retryOnStatus = new Set(o.retryOnStatus)
    this.#isFailure = o.isFailure
    const { meter, tracer } = telemetry(SCOPE, o)
    this.#tracer = tracer
    this.#duration = durationHistogram(
      meter,
      'http.client.request.duration',
      'Duration of each attempt to an endpoint, until its response headers arrived or it failed',
    )
    this.#stopObserving = observe(
      meter,
      {
        'ballast.lb.client.requests': {
          kind: 'counter',
          description: 'Requests made (first attempts)',
          unit: '{request}',
        },
        'ballast.lb.client.retries': {
          kind: 'counter',
          description: 'Retries made, each on another endpoint',
          unit: '{retry}',
        },
        'ballast.lb.client.retries_refused': {
          kind: 'counter',
          description: 'Retries the retry budget refused',
          unit: '{retry}',
        },
        'ballast.lb.client.failed': {
          kind: 'counter',
          description: 'Requests that ended in an error',
          unit: '{request}',
        },
      },
      (record) => {
        record('ballast.lb.client.requests', this.#requests)
        record('ballast.lb.client.retries', this.#retries)
        record('ballast.lb.client.retries_refused', this.#refused)
        record('ballast.lb.client.failed', this.#failed)
      },
    )
  }

  async request(options: BalancedRequestOptions): Promise<BalancedResponse> {
    if (this.#closed) throw new LbClosedError('balanced client', 'request')
    if (typeof options?.path !== 'string' || !options.path.startsWith('/')) {
      argument.invalid('path', 'a string starting with "/"', options?.path)
    }
    const method = (options.method ?? DEFAULT_BALANCED_REQUEST_OPTIONS.method).toUpperCase()
    const body = options.body ?? null
    const replayable = body === null || typeof body === 'string' || body instanceof Uint8Array
    const idempotent = (options.idempotent ?? isIdempotent(method)) && replayable
    this.#requests++
    this.#budget?.recordRequest()
    const tried: Endpoint<string>[] = []
    let lastError: unknown
    const methodAttr = methodAttribute(method)
    // Every attempt's CLIENT span is a child of the caller's active span: retries are siblings.
    const parent = context.active()
    const headers = outgoingHeaders(options.headers)
    for (let attempt = 1; ; attempt++) {
      let endpoint: Endpoint<string>
      try {
        endpoint = this.balancer.pick(options.key, tried)
      } catch (error) {
        this.#failed++
        if (attempt === 1 || !(error instanceof NoEndpointAvailableError)) throw error
        throw this.#finalError(lastError, tried)
      }
      tried.push(endpoint)
      const startedAt = this.balancer.begin(endpoint)
      const address = endpointAddress(endpoint)
      const attributes: Attributes = {
        'http.request.method': methodAttr,
        'server.address': address.address,
        'server.port': address.port,
      }
      const injected: Record<string, string> = {}
      const span = startAttemptSpan(
        this.#tracer,
        spanName(methodAttr),
        attempt > 1
          ? {
              ...attributes,
              'url.scheme': address.scheme,
              'http.request.resend_count': attempt - 1,
            }
          : { ...attributes, 'url.scheme': address.scheme },
        parent,
        injected,
      )
      const sentAt = performance.now()
      let response: Dispatcher.ResponseData
      // undici's own headers timeout runs on coarse timers (about half a second of slack), so
      // the client keeps a precise one of its own and aborts the attempt with a typed error.
      const attemptAbort = new AbortController()
      const timer = setTimeout(
        () => attemptAbort.abort(new UpstreamTimeoutError(endpoint.id, this.#headersTimeoutMs)),
        this.#headersTimeoutMs,
      )
      const userSignal = options.signal
      const onUserAbort = () => attemptAbort.abort(userSignal?.reason)
      userSignal?.addEventListener('abort', onUserAbort, { once: true })
      if (userSignal?.aborted) onUserAbort()
      try {
        response = await this.#pools.get(endpoint).request({
          path: options.path,
          method: method as Dispatcher.HttpMethod,
          headers: withInjected(headers, injected),
          body,
          idempotent,
          signal: attemptAbort.signal,
          headersTimeout: this.#headersTimeoutMs + 1000,
          bodyTimeout: this.#bodyTimeoutMs,
        })
        clearTimeout(timer)
        // The caller's signal stays linked to the attempt until the body ends: aborting after
        // the headers must stop a slow body (undici destroys it) rather than wait for bodyTimeout.
        // A response that has no body is over now: callers rarely read its empty body, and a
        // listener left until then would pile up on a long-lived signal.
        if (userSignal !== undefined) {
          if (hasNoBody(method, response.statusCode, response.headers['content-length'])) {
            userSignal.removeEventListener('abort', onUserAbort)
          } else {
            response.body.once('close', () => userSignal.removeEventListener('abort', onUserAbort))
          }
        }
      } catch (error) {
        clearTimeout(timer)
        this.#endAttempt(span, attributes, sentAt, undefined, error)
        userSignal?.removeEventListener('abort', onUserAbort)
        // An abort by the caller is not the endpoint's failure.
        this.balancer.end(endpoint, startedAt, options.signal?.aborted === true)
        lastError = error
        if (options.signal?.aborted) {
          this.#failed++
          throw error
        }
        // A refused connection sent nothing: any method may go to the next endpoint, if its
        // body can be sent again (bytes, or a stream nothing has read yet).
        const unread = replayable || !(body as Readable).readableDidRead
        const canRetry = (idempotent || (neverSent(error) && unread)) && attempt < this.#maxAttempts
        if (canRetry && this.#takeRetry()) continue
        this.#failed++
        throw this.#finalError(error, tried)
      }
      const status = response.statusCode
      this.#endAttempt(span, attributes, sentAt, status, undefined)
      this.balancer.end(endpoint, startedAt, !this.#isFailure(status))
      if (
        this.#retryOnStatus.has(status) &&
        idempotent &&
        attempt < this.#maxAttempts &&
        this.balancer.size > tried.length
      ) {
        if (this.#takeRetry()) {
          await response.body.dump().catch(() => undefined)
          lastError = new Error(`status ${status}`)
          continue
        }
      }
      return {
        statusCode: status,
        headers: response.headers,
        body: response.body,
        endpoint: endpoint.id,
        attempts: attempt,
      }
    }
  }

  /**
   * Ends an attempt's CLIENT span (at its response headers: the body is the caller's to read)
   * and records its duration.
   */
  #endAttempt(
    span: Span,
    attributes: Attributes,
    sentAt: number,
    status: number | undefined,
    error: unknown,
  ): void {
    if (status !== undefined) {
      attributes['http.response.status_code'] = status
      span.setAttribute('http.response.status_code', status)
    }
    if (error !== undefined) {
      attributes['error.type'] = errorType(error)
      failSpan(span, error)
    } else if (status !== undefined && status >= 400) {
      // A client span with a 4xx or 5xx answer is an error (HTTP semantic conventions).
      attributes['error.type'] = String(status)
      span.setAttribute('error.type', String(status))
      span.setStatus({ code: SpanStatusCode.ERROR })
    }
    span.end()
    this.#duration.record((performance.now() - sentAt) / 1000, attributes)
  }

  /** The error of the last attempt; when it could not even connect and every endpoint was tried, none is available. */
  #finalError(error: unknown, tried: Endpoint<string>[]): Error {
    if (neverSent(error) && tried.length >= this.balancer.size) {
      return new NoEndpointAvailableError(
        this.balancer.size,
        `every endpoint was tried and the last refused the connection (${tried.map((e) => e.id).join(', ')})`,
        { cause: error },
      )
    }
    return finalError(error, tried.at(-1)!, tried.length, this.#headersTimeoutMs)
  }

  #takeRetry(): boolean {
    if (this.#budget !== undefined && !this.#budget.tryRetry()) {
      this.#refused++
      return false
    }
    this.#retries++
    return true
  }

  stats(): BalancedClientStats {
    return {
      requests: this.#requests,
      retries: this.#retries,
      retriesRefused: this.#refused,
      failed: this.#failed,
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#stopObserving()
    await this.#checker?.close()
    await this.#pools.close()
    if (this.#ownBalancer) await this.balancer.close()
  }
}

/**
 * The caller's headers to send, with an `x-request-id`: theirs when it is a sane token, else a
 * new UUID (one request id for every attempt of the request).
 */
function outgoingHeaders(
  given: Record<string, string | string[]> | undefined,
): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  let requestId: string | undefined
  if (given !== undefined) {
    for (const name in given) {
      if (name.toLowerCase() === 'x-request-id') {
        const value = given[name]
        if (isSaneRequestId(value)) requestId = value
        continue
      }
      out[name] = given[name]!
    }
  }
  out['x-request-id'] = requestId ?? randomUUID()
  return out
}

/**
 * The headers with the injected trace context: when the propagator wrote anything, the caller's
 * `traceparent`/`tracestate` (in any case) give way to it; with no propagator, they stay.
 */
function withInjected(
  headers: Record<string, string | string[]>,
  injected: Record<string, string>,
): Record<string, string | string[]> {
  let written = false
  for (const _ in injected) {
    written = true
    break
  }
  if (!written) return headers
  const out: Record<string, string | string[]> = {}
  for (const name in headers) {
    const lower = name.toLowerCase()
    if (lower === 'traceparent' || lower === 'tracestate' || Object.hasOwn(injected, lower))
      continue
    out[name] = headers[name]!
  }
  return Object.assign(out, injected)
}

/** Whether a response can carry no body bytes (RFC 9110 §6.4.1), so nothing is left to abort. */
function hasNoBody(
  method: string,
  status: number,
  contentLength: string | string[] | undefined,
): boolean {
  return method === 'HEAD' || status === 204 || status === 304 || contentLength === '0'
}

function isBudget(value: unknown): value is RetryBudget {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as RetryBudget).tryRetry === 'function'
  )
}

function finalError(
  error: unknown,
  endpoint: Endpoint<string>,
  attempts: number,
  headersTimeoutMs: number,
): Error {
  if (error instanceof UpstreamTimeoutError) return error
  if (isTimeout(error)) {
    const code = (error as { code?: string }).code
    return new UpstreamTimeoutError(
      endpoint.id,
      code === 'UND_ERR_HEADERS_TIMEOUT' ? headersTimeoutMs : 0,
      { cause: error },
    )
  }
  const detail =
    (error as { code?: string; message?: string } | null)?.code ??
    (error as Error | null)?.message ??
    String(error)
  return new UpstreamError(
    endpoint.id,
    attempts,
    `upstream "${endpoint.id}" failed after ${attempts} attempt(s): ${detail}`,
    { cause: error },
  )
}

/**
 * Creates an HTTP client (undici) that spreads requests over several origins with a balancing
 * strategy, per-endpoint connection pools, timeouts, optional health checks, and retries of
 * idempotent requests on a different endpoint within a retry budget.
 *
 * @example
 * ```ts
 * import { createBalancedClient } from '@ballast/lb'
 *
 * const client = createBalancedClient({
 *   endpoints: ['http://127.0.0.1:3001', 'http://127.0.0.1:3002'],
 *   balancer: { strategy: 'peak-ewma' },
 *   healthCheck: { check: { type: 'http', path: '/health' }, interval: '1s' },
 * })
 * const res = await client.request({ path: '/orders/42' })
 * console.log(res.statusCode, res.endpoint, await res.body.json())
 * await client.close()
 * ```
 */
export function createBalancedClient(options: BalancedClientOptions): BalancedClient {
  return new BalancedClientImpl(options)
}
