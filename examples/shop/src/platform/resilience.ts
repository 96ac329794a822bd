/**
 * `@ballast/resilience` for the shop: the payment provider's circuit breaker is the package's
 * (for real). Still ADAPTERS with minimal in-shop versions: idempotency keys in Redis, login
 * rate limits and the degradation switchboard (the package's createIdempotency, rate limiter
 * and createDegrader have landed; swapping each is a change to this file only).
 */
import { BreakerOpenError, circuitBreaker } from '@ballast/resilience'
import type { Redis } from 'ioredis'

export type BreakerState = 'closed' | 'open' | 'halfOpen'

export { BreakerOpenError }

export interface Breaker {
  run<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T>
  readonly state: BreakerState
  stats(): {
    state: BreakerState
    successes: number
    failures: number
    rejected: number
    timeouts: number
  }
}

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

/** The payment provider's breaker: `@ballast/resilience`'s circuitBreaker (on opossum). */
export function createBreaker(o: BreakerOptions): Breaker {
  const cb = circuitBreaker({
    name: 'payment-provider',
    window: { type: 'count', size: o.window },
    errorThresholdPercentage: o.errorThresholdPercentage,
    volumeThreshold: o.volume,
    resetTimeout: o.openMs,
    timeout: o.timeoutMs,
  })
  return {
    get state() {
      return cb.state
    },
    run<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
      // The breaker's timeout rejects the call; the signal also stops the request itself.
      return cb.execute(() => fn(AbortSignal.timeout(o.timeoutMs))) as Promise<T>
    },
    stats() {
      const s = cb.stats()
      return {
        state: s.state,
        successes: s.successes,
        failures: s.failures,
        rejected: s.rejects,
        timeouts: s.timeouts,
      }
    },
  }
}

/** Idempotency keys in Redis: the first caller runs, later callers get the stored result. */
export interface IdempotencyStore {
  /**
   * Runs `fn` once per key: a concurrent duplicate waits for the first and gets its result;
   * a completed key returns the stored result without running `fn`.
   */
  once<T>(key: string, ttlMs: number, fn: () => Promise<T>): Promise<T>
}

export class IdempotencyBusyError extends Error {
  readonly code = 'E_IDEMPOTENCY_IN_PROGRESS'
}

export function createIdempotencyStore(redis: Redis, prefix: string): IdempotencyStore {
  return {
    async once<T>(key: string, ttlMs: number, fn: () => Promise<T>): Promise<T> {
      const k = `${prefix}idem:${key}`
      const claimed = await redis.set(k, JSON.stringify({ state: 'running' }), 'PX', 30_000, 'NX')
      if (claimed !== 'OK') {
        for (let i = 0; i < 100; i++) {
          const raw = await redis.get(k)
          if (raw === null) break
          const rec = JSON.parse(raw) as { state: string; value?: T }
          if (rec.state === 'done') return rec.value as T
          await new Promise((r) => setTimeout(r, 50))
        }
        throw new IdempotencyBusyError(`operation ${key} is still in progress`)
      }
      try {
        const value = await fn()
        await redis.set(k, JSON.stringify({ state: 'done', value }), 'PX', ttlMs)
        return value
      } catch (err) {
        await redis.del(k).catch(() => {})
        throw err
      }
    },
  }
}

/** Fixed-window rate limits in Redis; when Redis is away, an in-process window takes over. */
export interface RateLimiter {
  /** Counts a hit; returns how long to wait (ms) when over the limit, else 0. */
  hit(key: string): Promise<number>
  reset(key: string): Promise<void>
  stats(): { allowed: number; limited: number; fallbacks: number }
}

export function createRateLimiter(
  redis: Redis,
  prefix: string,
  limit: number,
  windowMs: number,
): RateLimiter {
  const local = new Map<string, { n: number; until: number }>()
  const s = { allowed: 0, limited: 0, fallbacks: 0 }
  return {
    async hit(key) {
      let n: number
      let ttl: number
      try {
        const k = `${prefix}rl:${key}`
        const res = await redis.multi().incr(k).pexpire(k, windowMs, 'NX').pttl(k).exec()
        n = Number(res?.[0]?.[1] ?? 0)
        ttl = Number(res?.[2]?.[1] ?? windowMs)
      } catch {
        s.fallbacks++
        const now = Date.now()
        const w = local.get(key)
        if (!w || w.until <= now) local.set(key, { n: 1, until: now + windowMs })
        else w.n++
        const cur = local.get(key) as { n: number; until: number }
        n = cur.n
        ttl = cur.until - now
      }
      if (n > limit) {
        s.limited++
        return Math.max(ttl, 1)
      }
      s.allowed++
      return 0
    },
    async reset(key) {
      local.delete(key)
      await redis.del(`${prefix}rl:${key}`).catch(() => {})
    },
    stats: () => ({ ...s }),
  }
}

/**
 * The degradation switchboard: optional features, lowest priority first, switch off when the
 * instance is overloaded (event-loop delay or in-flight requests over a limit) and back on
 * when it recovers. An operator can force a feature off.
 */
export interface Degrader {
  enabled(feature: string): boolean
  force(feature: string, off: boolean): void
  begin(): () => void
  stats(): { load: number; features: Record<string, { on: boolean; forcedOff: boolean }> }
  close(): void
}

export function createDegrader(features: string[], maxInFlight: number): Degrader {
  let inflight = 0
  let lagMs = 0
  let last = performance.now()
  const forced = new Set<string>()
  const timer = setInterval(() => {
    const now = performance.now()
    lagMs = Math.max(0, now - last - 100)
    last = now
  }, 100)
  timer.unref()
  // Load in [0, 1+]: the worse of in-flight requests and event-loop lag (200 ms = full).
  const load = () => Math.max(inflight / maxInFlight, lagMs / 200)
  const enabled = (feature: string) => {
    if (forced.has(feature)) return false
    const i = features.indexOf(feature)
    if (i < 0) return true
    // Feature i (0 = first to go) switches off once load passes 0.6 + 0.2 * i.
    return load() < 0.6 + 0.2 * i
  }
  return {
    enabled,
    force(feature, off) {
      if (off) forced.add(feature)
      else forced.delete(feature)
    },
    begin() {
      inflight++
      let done = false
      return () => {
        if (!done) inflight--
        done = true
      }
    },
    stats() {
      const f: Record<string, { on: boolean; forcedOff: boolean }> = {}
      for (const name of features) f[name] = { on: enabled(name), forcedOff: forced.has(name) }
      return { load: Number(load().toFixed(2)), features: f }
    },
    close() {
      clearInterval(timer)
    },
  }
}
