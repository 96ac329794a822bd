import { connect } from 'node:net'
import {
  type Checks,
  checkProviders,
  checks,
  type Duration,
  Emitter,
  type Listener,
  merge,
  observe,
  type TelemetryOptions,
  telemetry,
  type Unsubscribe,
} from '@ballast/shared'
import type { Balancer } from './balancer.js'
import type { Endpoint } from './endpoint.js'
import { InvalidArgumentError, LbClosedError } from './errors.js'
import { SCOPE } from './internal/telemetry.js'

/** A check function: resolves true (or void) when the endpoint is healthy; false or a throw marks a failure. */
export type HealthCheckFunction<T = string> = (
  endpoint: Endpoint<T>,
  signal: AbortSignal,
) => Promise<boolean | undefined> | boolean | undefined

/** An HTTP check: a GET to `path` on the endpoint's origin must answer with an expected status. */
export interface HttpHealthCheck {
  /** The kind of check. */
  type: 'http'
  /**
   * The path requested.
   * @default '/health'
   */
  path?: string
  /**
   * Statuses that count as healthy.
   * @default 200-399
   */
  expectStatus?: (status: number) => boolean
}

/** A TCP check: the endpoint's host and port must accept a connection. */
export interface TcpHealthCheck {
  /** The kind of check. */
  type: 'tcp'
}

/**
 * Options of {@link createHealthChecker}. `meterProvider` (from {@link TelemetryOptions}) receives
 * the checks counter; the verdicts show on the balancer's `ballast.lb.endpoint.healthy` gauge.
 */
export interface HealthCheckerOptions<T = string> extends TelemetryOptions {
  /** The balancer whose endpoints are checked and marked. */
  balancer: Balancer<T>
  /**
   * What to check: HTTP, TCP, or a function.
   * @default { type: 'http', path: '/health' }
   */
  check?: HttpHealthCheck | TcpHealthCheck | HealthCheckFunction<T>
  /**
   * Time between two checks of an endpoint.
   * @default 5000
   */
  interval?: Duration
  /**
   * A check that takes longer fails.
   * @default 2000
   */
  timeout?: Duration
  /**
   * Consecutive passing checks that bring an unhealthy endpoint back.
   * @default 2
   */
  rise?: number
  /**
   * Consecutive failing checks that mark a healthy endpoint unhealthy.
   * @default 3
   */
  fall?: number
  /**
   * The URL an HTTP or TCP check targets, from the endpoint.
   * @default the endpoint's value when it is a string, else its id (such as `http://127.0.0.1:8080`)
   */
  target?: (endpoint: Endpoint<T>) => string
}

/** The defaults of {@link HealthCheckerOptions}. */
export const DEFAULT_HEALTH_CHECKER_OPTIONS: Readonly<
  Required<Pick<HealthCheckerOptions, 'check' | 'interval' | 'timeout' | 'rise' | 'fall'>>
> = Object.freeze({
  check: Object.freeze({ type: 'http', path: '/health' }) as HttpHealthCheck,
  interval: 5000,
  timeout: 2000,
  rise: 2,
  fall: 3,
})

/** Payload of the health checker's `checked` event. */
export interface CheckedEvent<T = string> {
  /** The endpoint checked. */
  endpoint: Endpoint<T>
  /** Whether this one check passed. */
  healthy: boolean
  /** How long it took, in milliseconds. */
  durationMs: number
  /** Why it failed, when it threw or timed out. */
  error?: unknown
}

/** The events of a {@link HealthChecker}, each with its one payload object. */
export interface HealthCheckerEvents<T = string> {
  /** One check of one endpoint finished, passed or failed (after the balancer was told). */
  checked: CheckedEvent<T>
}

/** Counters of a {@link HealthChecker}. */
export interface HealthCheckerStats {
  /** Checks run. */
  checks: number
  /** Checks that passed. */
  succeeded: number
  /** Checks that failed. */
  failed: number
  /** Endpoints currently marked unhealthy by this checker. */
  unhealthy: string[]
}

/** Runs active health checks on a balancer's endpoints and marks them healthy or not. */
export interface HealthChecker<T = string> {
  /** Checks every endpoint once now (also runs on the interval). */
  checkNow(): Promise<void>
  /** Counters. */
  stats(): HealthCheckerStats
  /**
   * Adds an event listener; returns a function that removes it. A listener that throws does
   * not break the checks: its error is rethrown in a microtask.
   */
  on<K extends keyof HealthCheckerEvents<T> & string>(
    event: K,
    listener: Listener<HealthCheckerEvents<T>[K]>,
  ): Unsubscribe
  /** Adds a listener called at most once; returns a function that removes it. */
  once<K extends keyof HealthCheckerEvents<T> & string>(
    event: K,
    listener: Listener<HealthCheckerEvents<T>[K]>,
  ): Unsubscribe
  /** Removes a listener. */
  off<K extends keyof HealthCheckerEvents<T> & string>(
    event: K,
    listener: Listener<HealthCheckerEvents<T>[K]>,
  ): void
  /** Stops checking; waits for checks in progress. */
  close(): Promise<void>
}

interface Streak {
  passes: number
  fails: number
}

function httpCheck(
  url: string,
  path: string,
  expect: (s: number) => boolean,
  signal: AbortSignal,
): Promise<boolean> {
  return fetch(new URL(path, url), { signal, redirect: 'manual' }).then(async (res) => {
    await res.body?.cancel()
    return expect(res.status)
  })
}

function tcpCheck(url: string, signal: AbortSignal): Promise<boolean> {
  const u = new URL(url)
  const port = Number(u.port || (u.protocol === 'https:' ? 443 : 80))
  return new Promise((resolve, reject) => {
    const socket = connect({ host: u.hostname.replace(/^\[|\]$/g, ''), port })
    const onAbort = () => {
      socket.destroy()
      reject(signal.reason)
    }
    signal.addEventListener('abort', onAbort, { once: true })
    socket.once('connect', () => {
      signal.removeEventListener('abort', onAbort)
      socket.destroy()
      resolve(true)
    })
    socket.once('error', (error) => {
      signal.removeEventListener('abort', onAbort)
      reject(error)
    })
  })
}

const check: Checks = checks(InvalidArgumentError)

class HealthCheckerImpl<T> extends Emitter<HealthCheckerEvents<T>> implements HealthChecker<T> {
  readonly #balancer: Balancer<T>
  readonly #run: (
    endpoint: Endpoint<T>,
    signal: AbortSignal,
  ) => Promise<boolean | undefined> | boolean | undefined
  readonly #timeoutMs: number
  readonly #rise: number
  readonly #fall: number
  readonly #streaks = new Map<string, Streak>()
  readonly #timer: ReturnType<typeof setInterval>
  #running: Promise<void> | undefined
  #checks = 0
  #succeeded = 0
  #failed = 0
  #closed = false
  readonly #stopObserving: () => void

  constructor(options: HealthCheckerOptions<T>) {
    super()
    const o = merge(DEFAULT_HEALTH_CHECKER_OPTIONS, options)
    if (
      typeof o.balancer !== 'object' ||
      o.balancer === null ||
      typeof o.balancer.setHealthy !== 'function'
    ) {
      check.invalid('balancer', 'a balancer from createBalancer()', o.balancer)
    }
    const intervalMs = check.duration('interval', o.interval, { positive: true })
    const timeoutMs = check.duration('timeout', o.timeout, { positive: true })
    check.positiveInteger('rise', o.rise)
    check.positiveInteger('fall', o.fall)
    checkProviders(check, o)
    if (o.target !== undefined) check.func('target', o.target)
    const target = o.target ?? ((e: Endpoint<T>) => (typeof e.value === 'string' ? e.value : e.id))
    const kind = o.check
    if (typeof kind === 'function') this.#run = kind as HealthCheckFunction<T>
    else if (kind?.type === 'http') {
      const path = kind.path ?? '/health'
      const expect = kind.expectStatus ?? ((s: number) => s >= 200 && s < 400)
      this.#run = (e, signal) => httpCheck(target(e), path, expect, signal)
    } else if (kind?.type === 'tcp') this.#run = (e, signal) => tcpCheck(target(e), signal)
    else {
      check.invalid('check', "{ type: 'http' | 'tcp' } or a function", kind)
    }
    this.#balancer = o.balancer
    this.#timeoutMs = timeoutMs
    this.#rise = o.rise
    this.#fall = o.fall
    this.#timer = setInterval(() => {
      if (this.#running === undefined && !this.#closed) void this.checkNow()
    }, intervalMs)
    this.#timer.unref?.()
    this.#stopObserving = observe(
      telemetry(SCOPE, o).meter,
      {
        'ballast.lb.health_checks': {
          kind: 'counter',
          description: 'Active health checks run, by ballast.lb.outcome (success, failure)',
          unit: '{check}',
        },
      },
      (record) => {
        record('ballast.lb.health_checks', this.#succeeded, { 'ballast.lb.outcome': 'success' })
        record('ballast.lb.health_checks', this.#failed, { 'ballast.lb.outcome': 'failure' })
      },
    )
  }

  checkNow(): Promise<void> {
    if (this.#closed) return Promise.reject(new LbClosedError('health checker', 'checkNow'))
    const run = Promise.all(this.#balancer.endpoints().map((e) => this.#checkOne(e))).then(() => {
      if (this.#running === run) this.#running = undefined
    })
    this.#running = run
    return run
  }

  async #checkOne(endpoint: Endpoint<T>): Promise<void> {
    const started = performance.now()
    const controller = new AbortController()
    const timer = setTimeout(
      () => controller.abort(new Error(`health check timed out after ${this.#timeoutMs} ms`)),
      this.#timeoutMs,
    )
    let healthy = false
    let error: unknown
    try {
      const result = await Promise.race([
        Promise.resolve(this.#run(endpoint, controller.signal)),
        new Promise<never>((_, reject) =>
          controller.signal.addEventListener('abort', () => reject(controller.signal.reason), {
            once: true,
          }),
        ),
      ])
      healthy = result !== false
    } catch (e) {
      error = e
    } finally {
      clearTimeout(timer)
    }
    if (this.#closed || this.#balancer.get(endpoint.id) !== endpoint) return
    this.#checks++
    if (healthy) this.#succeeded++
    else this.#failed++
    let streak = this.#streaks.get(endpoint.id)
    if (streak === undefined) {
      streak = { passes: 0, fails: 0 }
      this.#streaks.set(endpoint.id, streak)
    }
    if (healthy) {
      streak.passes++
      streak.fails = 0
      if (!endpoint.healthy && streak.passes >= this.#rise)
        this.#balancer.setHealthy(endpoint.id, true)
    } else {
      streak.fails++
      streak.passes = 0
      if (endpoint.healthy && streak.fails >= this.#fall)
        this.#balancer.setHealthy(endpoint.id, false)
    }
    if (!this.has('checked')) return
    this.emit('checked', {
      endpoint,
      healthy,
      durationMs: performance.now() - started,
      ...(error === undefined ? {} : { error }),
    })
  }

  stats(): HealthCheckerStats {
    return {
      checks: this.#checks,
      succeeded: this.#succeeded,
      failed: this.#failed,
      unhealthy: this.#balancer
        .endpoints()
        .filter((e) => !e.healthy)
        .map((e) => e.id),
    }
  }

  async close(): Promise<void> {
    if (!this.#closed) this.#stopObserving()
    this.#closed = true
    clearInterval(this.#timer)
    await this.#running
  }
}

/**
 * Starts active health checks (HTTP, TCP or a function) on every endpoint of a balancer: after
 * `fall` failures in a row an endpoint is marked unhealthy, after `rise` passes healthy again
 * (and slow-starts). A passing check also returns an endpoint that outlier detection ejected.
 *
 * @example
 * ```ts
 * import { createBalancer, createHealthChecker } from '@ballast/lb'
 *
 * const balancer = createBalancer({ endpoints: ['http://127.0.0.1:3001', 'http://127.0.0.1:3002'] })
 * const checker = createHealthChecker({
 *   balancer,
 *   check: { type: 'http', path: '/health' },
 *   interval: '1s',
 *   rise: 2,
 *   fall: 3,
 * })
 * // later
 * await checker.close()
 * ```
 */
export function createHealthChecker<T = string>(
  options: HealthCheckerOptions<T>,
): HealthChecker<T> {
  return new HealthCheckerImpl<T>(options)
}
