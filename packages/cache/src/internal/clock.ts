/**
 * A wall clock read at most once per millisecond: `Date.now()` on every L1 hit would cost
 * a good share of the hit. The cached reading is dropped by one unref'd timer at a time,
 * as lru-cache does with `ttlResolution`.
 */
let cached = 0
let scheduled = false

function forget(): void {
  cached = 0
  scheduled = false
}

function schedule(): void {
  if (scheduled) return
  scheduled = true
  setTimeout(forget, 1).unref()
}

export function now(): number {
  if (cached === 0) {
    cached = Date.now()
    schedule()
  }
  return cached
}

/** The exact time, for writes: computing expiry from a stale reading would lengthen nothing, but shorten TTLs. */
export function exactNow(): number {
  cached = Date.now()
  schedule()
  return cached
}
