/**
 * A wall clock read at most once per millisecond: `Date.now()` on every L1 hit would cost
 * more than the hit itself. The cached reading is dropped by an unref'd timer, as lru-cache
 * does with `ttlResolution`.
 */
let cached = 0

function forget(): void {
  cached = 0
}

export function now(): number {
  if (cached === 0) {
    cached = Date.now()
    setTimeout(forget, 1).unref()
  }
  return cached
}

/** The exact time, for the places where a millisecond matters. */
export function exactNow(): number {
  cached = 0
  return now()
}
