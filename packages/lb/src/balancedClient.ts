import type { Readable } from 'node:stream'
import { type Checks, checks, type Duration, merge } from '@ballast/shared'
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
import { isIdempotent, isTimeout, neverSent, UpstreamPools } from './internal/upstreams.js'
import { createRetryBudget, type RetryBudget, type RetryBudgetOptions } from './retryBudget.js'

/** Options of {@link createBalancedClient}. */
export interface BalancedClientOptions {
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
  Required<Omit<BalancedClientOptions, 'endpoints' | 'balancer' | 'healthCheck' | 'retryBudget'>>
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
  /** Request headers. */
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

  constructor(options: BalancedClientOptions) {
    const o = merge(DEFAULT_BALANCED_CLIENT_OPTIONS, options)
    check.positiveInteger('connections', o.connections)
    check.positiveInteger('maxAttempts', o.maxAttempts)
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
      this.balancer = createBalancer<string>({ ...(o.balancer ?? {}), endpoints: o.endpoints })
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
        : createHealthChecker({ ...o.healthCheck, balancer: this.balancer })
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
          headers: options.headers ?? null,
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
    await this.#checker?.close()
    await this.#pools.close()
    if (this.#ownBalancer) await this.balancer.close()
  }
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
