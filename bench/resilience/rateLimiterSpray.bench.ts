/**
 * The local rate limiter once full: every call brings a new key (a key spray), and every
 * stored key is still busy (its bucket not yet refilled). Issue #14: evicting in insertion
 * order with a sweep of the whole map cost 0.8 ms per new key at 100 000 keys; least recently
 * used order on a linked list is O(1). The old algorithm is reproduced here for the ratio.
 * The hot-key case guards against the V8 pitfall of re-inserting one key in a Map on every
 * use (its tombstones pile up in one hash bucket): that cost 50-300 µs a call.
 * Run: pnpm exec tsx --conditions=@ballast/source bench/resilience/rateLimiterSpray.bench.ts
 */
import { LocalRateLimiter } from '@ballast/resilience'
import { compare, isSmoke } from '../harness.js'

const MAX_KEYS = isSmoke() ? 1000 : 100_000
// One call per minute per key: every key stays busy for the whole run.
const options = { limit: 1, interval: 60_000, maxKeys: MAX_KEYS }

/** The pre-#14 eviction: drop idle keys in one pass, then the oldest inserted. */
class InsertionOrderLimiter {
  readonly #tat = new Map<string, number>()
  readonly #t = options.interval / options.limit
  readonly #tau = this.#t

  takeSync(key: string): boolean {
    const now = Date.now()
    const stored = this.#tat.get(key)
    const tat = stored === undefined || stored < now ? now : stored
    const next = tat + this.#t
    if (next - now - this.#tau > 0) return false
    if (stored === undefined && this.#tat.size >= MAX_KEYS) {
      for (const [k, v] of this.#tat) if (v <= now) this.#tat.delete(k)
      let excess = this.#tat.size - MAX_KEYS + 1
      for (const k of this.#tat.keys()) {
        if (excess-- <= 0) break
        this.#tat.delete(k)
      }
    }
    this.#tat.set(key, next)
    return true
  }
}

const ours = new LocalRateLimiter(options)
const before = new InsertionOrderLimiter()
for (let k = 0; k < MAX_KEYS; k++) {
  ours.takeSync(`fill${k}`)
  before.takeSync(`fill${k}`)
}
let spray = 0
await compare({
  package: 'resilience',
  name: 'rate-limiter-local-spray',
  title: `Local rate limiter full of ${MAX_KEYS} busy keys, a new key each call (ns)`,
  cases: [
    {
      name: '@ballast/resilience LocalRateLimiter.takeSync (LRU, O(1) eviction)',
      fn: () => ours.takeSync(`spray${spray++}`),
      ours: true,
    },
    {
      name: 'same, and a blocked hot key used between sprays (two calls)',
      fn: () => {
        ours.takeSync('hot')
        return ours.takeSync(`spray${spray++}`)
      },
    },
    {
      name: 'before #14: insertion order, sweep of the whole map per new key',
      fn: () => before.takeSync(`spray${spray++}`),
    },
  ],
  notes: [
    'The blocked hot key stays blocked through the spray (LRU); before #14 it was evicted and allowed again.',
  ],
})
