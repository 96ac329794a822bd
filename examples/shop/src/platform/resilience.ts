/**
 * ADAPTER for `@ballast/resilience`: the payment provider's circuit breaker, idempotency keys
 * in Redis, login rate limits and the degradation switchboard. The shop codes against the
 * interfaces below; until the package's exports land, minimal in-shop versions live here.
 */
import type { Redis } from 'ioredis'

export type BreakerState = 'closed' | 'open' | 'half-open'

export class BreakerOpenError extends Error {
  readonly code = 'E_BREAKER_OPEN'
}

export interface Breaker {
  run<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T>
  readonly state: BreakerState
  stats(): {
    state: BreakerState
    successes: number
    failures: number
    rejected: number
    opened: number
  }
}

export interface BreakerOptions {
  /** Consecutive failures that open it. */
  failureThreshold: number
  /** How long it stays open before one trial call. */
  openMs: number
  /** Each call's timeout. */
  timeoutMs: number
}

export function createBreaker(o: BreakerOptions): Breaker {
  let state: BreakerState = 'closed'
  let consecutive = 0
  let openedAt = 0
  let trial = false
  const s = { successes: 0, failures: 0, rejected: 0, opened: 0 }
  const open = () => {
    state = 'open'
    openedAt = Date.now()
    s.opened++
  }
  return {
    get state() {
      if (state === 'open' && Date.now() - openedAt >= o.openMs) state = 'half-open'
      return state
    },
    async run<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
      const now = this.state
      if (now === 'open' || (now === 'half-open' && trial)) {
        s.rejected++
        throw new BreakerOpenError('payment provider circuit is open')
      }
      if (now === 'half-open') trial = true
      const ac = new AbortController()
      const timer = setTimeout(
        () => ac.abort(new Error(`timed out after ${o.timeoutMs} ms`)),
        o.timeoutMs,
      )
      try {
        const value = await Promise.race([
          fn(ac.signal),
          new Promise<never>((_, reject) =>
            ac.signal.addEventListener('abort', () => reject(ac.signal.reason)),
          ),
        ])
        s.successes++
        consecutive = 0
        state = 'closed'
        return value
      } catch (err) {
        s.failures++
        consecutive++
        if (state === 'half-open' || consecutive >= o.failureThreshold) open()
        throw err
      } finally {
        clearTimeout(timer)
        trial = false
      }
    },
    stats() {
      return { state: this.state, ...s }
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
