/**
 * `@ballast/resilience` for the shop: the payment provider's circuit breaker, idempotency keys
 * in Redis (checkout and payment), the login rate limits shared by every instance through
 * Redis, and the degrader that switches recommendations and reviews off first, under overload
 * and while the payment breaker is open.
 */
import {
  BreakerOpenError,
  type ChangeReason,
  type CircuitBreaker,
  circuitBreaker,
  createDegrader,
  createIdempotency,
  createRateLimiter,
  type Degrader,
  type FeatureLevel,
  type Idempotency,
  IdempotencyUnavailableError,
  isResilienceError,
  type RateLimiter,
} from '@ballast/resilience'
import type { Redis } from 'ioredis'

export type { BreakerState, CircuitBreaker } from '@ballast/resilience'
export { BreakerOpenError }

export interface BreakerOptions {
  /** Failures among the last `window` calls (at least `volume` of them) that open it, in percent. */
  errorThresholdPercentage: number
  window: number
  volume: number
  /** How long it stays open before a trial call. */
  openMs: number
  /** Each call's timeout. */
  timeoutMs: number
}

/** The payment provider's breaker. */
export function createPaymentBreaker(o: BreakerOptions): CircuitBreaker {
  return circuitBreaker({
    name: 'payment-provider',
    window: { type: 'count', size: o.window },
    errorThresholdPercentage: o.errorThresholdPercentage,
    volumeThreshold: o.volume,
    resetTimeout: o.openMs,
    timeout: o.timeoutMs,
  })
}

/**
 * Checkout's idempotency keys: a double-clicked Pay runs checkout once; the duplicate waits
 * for the first (up to 5 s) and gets its order id.
 */
export function checkoutIdempotency(redis: Redis, prefix: string): Idempotency {
  return createIdempotency({
    redis,
    prefix,
    wait: 5000,
    lease: 15_000,
    retention: 24 * 3600_000,
    commandTimeout: 1000,
  })
}

/**
 * Payment's idempotency keys (`pay:<order id>`). Every failure of the provider call releases
 * the key: the breaker's `BreakerOpenError` is not retryable (`retryable: false`), and the
 * default `isTransient` would store it as a permanent failure and replay it for 24 h, leaving
 * the order in `payment_pending` for good. The provider is asked with the same key on retry.
 */
export function paymentIdempotency(redis: Redis, prefix: string): Idempotency {
  return createIdempotency({
    redis,
    prefix,
    wait: 3000,
    lease: 15_000,
    retention: 24 * 3600_000,
    commandTimeout: 1000,
    isTransient: () => true,
  })
}

/** Redis is unreachable: the idempotency store refused to run the work (nothing ran). */
export function isIdempotencyUnavailable(err: unknown): boolean {
  // the code, through the brand, also matches an error from another installed copy
  return (
    err instanceof IdempotencyUnavailableError ||
    (isResilienceError(err) && err.code === 'E_RESILIENCE_IDEMPOTENCY_UNAVAILABLE')
  )
}

/**
 * Login limits per account and per address, one budget per key for every account instance
 * (the package's GCRA in Redis). While Redis is away `take()` rejects; then a per-process
 * limiter with the same limits decides (the package leaves fail-open to the caller).
 */
export interface LoginLimiter {
  /** Counts an attempt; returns how long to wait (ms) when over a limit, else 0. */
  hit(account: string, address: string): Promise<number>
  /** A successful login: the account's budget is whole again (the address's is not). */
  succeeded(account: string): Promise<void>
  stats(): { allowed: number; limited: number; fallbacks: number }
  close(): Promise<void>
}

export function createLoginLimiter(redis: Redis, prefix: string): LoginLimiter {
  const make = (name: string, limit: number, shared: boolean): RateLimiter =>
    createRateLimiter({
      limit,
      interval: 60_000,
      burst: limit,
      ...(shared ? { redis, prefix: `${prefix}${name}:` } : {}),
    })
  const perAccount = make('acct', 5, true)
  const perAddress = make('ip', 30, true)
  const localAccount = make('acct', 5, false)
  const localAddress = make('ip', 30, false)
  const s = { allowed: 0, limited: 0, fallbacks: 0 }
  const take = async (shared: RateLimiter, local: RateLimiter, key: string) => {
    try {
      return await shared.take(key)
    } catch {
      s.fallbacks++
      return local.take(key)
    }
  }
  return {
    async hit(account, address) {
      const [a, b] = await Promise.all([
        take(perAccount, localAccount, account),
        take(perAddress, localAddress, address),
      ])
      const wait = Math.max(a.allowed ? 0 : a.retryAfterMs, b.allowed ? 0 : b.retryAfterMs)
      const limited = !a.allowed || !b.allowed
      if (limited) s.limited++
      else s.allowed++
      return limited ? Math.max(wait, 1) : 0
    },
    async succeeded(account) {
      await localAccount.reset(account)
      await perAccount.reset(account).catch(() => {
        s.fallbacks++
      })
    },
    stats: () => ({ ...s }),
    async close() {
      for (const l of [perAccount, perAddress, localAccount, localAddress]) await l.close()
    },
  }
}

/** Optional features of product pages, lowest priority first. */
export const FEATURES = ['recommendations', 'reviews'] as const
export type Feature = (typeof FEATURES)[number]

export interface DegraderSettings {
  /** Requests in flight on one instance above which it sheds. */
  maxInFlight: number
  /** Event-loop p99 delay above which it sheds, in ms. */
  maxEventLoopDelay: number
  /** Sampling interval (one shedding step per sample), in ms. */
  interval: number
}

export const DEFAULT_DEGRADER_SETTINGS: DegraderSettings = {
  maxInFlight: 64,
  maxEventLoopDelay: 200,
  interval: 250,
}

export interface ShopDegrader {
  readonly degrader: Degrader<Feature>
  /** The latest level changes, newest last (for the ops page and the tests). */
  changes(): {
    feature: Feature
    from: FeatureLevel
    to: FeatureLevel
    reason: ChangeReason
    at: number
  }[]
  close(): Promise<void>
}

/**
 * Recommendations (priority 10) then reviews (20) shed under overload; both go off while any of
 * `breakers` is open (the payment provider's, mirrored into this process).
 */
export function createShopDegrader(
  breakers: readonly CircuitBreaker[],
  settings: DegraderSettings = DEFAULT_DEGRADER_SETTINGS,
): ShopDegrader {
  const degrader = createDegrader({
    features: {
      recommendations: { priority: 10, breakers, breakerLevel: 'off' },
      reviews: { priority: 20, breakers, breakerLevel: 'off' },
    },
    overload: {
      maxInFlight: settings.maxInFlight,
      maxEventLoopDelay: settings.maxEventLoopDelay,
      interval: settings.interval,
    },
  })
  const log: ReturnType<ShopDegrader['changes']> = []
  degrader.on('level-changed', (c) => {
    log.push({ ...c, at: Date.now() })
    if (log.length > 50) log.shift()
  })
  return {
    degrader,
    changes: () => [...log],
    close: () => degrader.close(),
  }
}

/**
 * The payment breaker lives in the payment worker; the degrader takes breakers of its own
 * process. The worker publishes its breaker's state to Redis (on every change, refreshed every
 * second) and each catalog instance mirrors it into a local breaker it trips and resets.
 */
export function publishBreakerState(
  redis: Redis,
  key: string,
  breaker: CircuitBreaker,
): () => void {
  const put = () => {
    redis.set(key, breaker.state, 'PX', 5000).catch(() => {})
  }
  for (const e of ['opened', 'half-opened', 'closed'] as const) breaker.on(e, put)
  const timer = setInterval(put, 1000)
  timer.unref()
  put()
  return () => clearInterval(timer)
}

export interface BreakerMirror {
  readonly breaker: CircuitBreaker
  close(): void
}

export function mirrorBreaker(
  redis: Redis,
  key: string,
  name: string,
  pollMs = 250,
): BreakerMirror {
  // Opened and closed only by the poll below: a long reset timeout keeps it from half-opening by itself.
  const breaker = circuitBreaker({ name, resetTimeout: 24 * 3600_000 })
  const poll = async () => {
    const state = await redis.get(key).catch(() => undefined)
    if (state === undefined) return // Redis away: keep the last known state
    const open = state === 'open' || state === 'halfOpen'
    if (open && breaker.state === 'closed') breaker.trip()
    else if (!open && breaker.state !== 'closed') breaker.reset()
  }
  const timer = setInterval(() => void poll(), pollMs)
  timer.unref()
  void poll()
  return {
    breaker,
    close: () => {
      clearInterval(timer)
      void breaker.close()
    },
  }
}

/** Where the payment worker publishes its breaker's state. */
export const PAYMENT_BREAKER_KEY = (ns: string) => `${ns}:breaker:payment-provider`
