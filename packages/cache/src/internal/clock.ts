/**
 * A wall clock read at most once per millisecond: `Date.now()` on every L1 hit would cost
 * a good share of the hit. The cached reading is dropped by one unref'd timer at a time,
 * as lru-cache does with `ttlResolution`. When the global `setTimeout` is swapped (fake
 * timers in a test), the clock notices and schedules with the new one.
 */
let cached = 0
let scheduledWith: typeof setTimeout | undefined

function forget(): void {
  cached = 0
  scheduledWith = undefined
}

function schedule(): void {
  if (scheduledWith === globalThis.setTimeout) return
  scheduledWith = globalThis.setTimeout
  setTimeout(forget, 1).unref?.()
}

export function now(): number {
  if (cached === 0 || scheduledWith !== globalThis.setTimeout) {
    cached = Date.now()
    schedule()
  }
  return cached
}

/** The exact time, for writes: an expiry computed from a stale reading would shorten TTLs. */
export function exactNow(): number {
  cached = Date.now()
  schedule()
  return cached
}
