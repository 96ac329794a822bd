import type { HashKey } from '../hash.js'
import { BUCKET_BITS, type HashRing, type RingSnapshot, ringInternals } from '../hashRing.js'
import type { EndpointState } from './endpointState.js'

/** What a strategy reads from the balancer besides its endpoint list. */
export interface StrategyContext {
  random: () => number
  clock: () => number
  totalInFlight(): number
  ewmaDecayMs: number
  balanceFactor: number
}

export type Exclude<T> = EndpointState<T> | readonly EndpointState<T>[] | undefined

export function excluded<T>(ep: EndpointState<T>, exclude: Exclude<T>): boolean {
  if (exclude === undefined) return false
  if (exclude === ep) return true
  return Array.isArray(exclude) && (exclude as readonly EndpointState<T>[]).includes(ep)
}

export interface Strategy<T> {
  /** Called with the usable endpoints whenever membership, health or weights change. */
  rebuild(
    usable: EndpointState<T>[],
    all: readonly EndpointState<T>[],
    ring: HashRing | undefined,
  ): void
  pick(key: HashKey | undefined, exclude: Exclude<T>): EndpointState<T> | undefined
}

function firstNotExcluded<T>(
  list: readonly EndpointState<T>[],
  start: number,
  exclude: Exclude<T>,
): EndpointState<T> | undefined {
  const n = list.length
  for (let k = 0; k < n; k++) {
    const ep = list[(start + k) % n]!
    if (!excluded(ep, exclude)) return ep
  }
  return undefined
}

export class RoundRobin<T> implements Strategy<T> {
  #list: EndpointState<T>[] = []
  #next = 0
  rebuild(usable: EndpointState<T>[]): void {
    this.#list = usable
  }
  pick(_key: HashKey | undefined, exclude: Exclude<T>): EndpointState<T> | undefined {
    const list = this.#list
    const n = list.length
    if (n === 0) return undefined
    let i = this.#next
    if (i >= n) i = 0
    this.#next = i + 1
    const ep = list[i]!
    if (exclude === undefined || !excluded(ep, exclude)) return ep
    return firstNotExcluded(list, i + 1, exclude)
  }
}

/** nginx's smooth weighted round robin: weights {5,1,1} give a a b a c a a. */
export class SmoothWeightedRoundRobin<T> implements Strategy<T> {
  #list: EndpointState<T>[] = []
  rebuild(usable: EndpointState<T>[]): void {
    this.#list = usable
    for (const ep of usable) ep.current = 0
  }
  pick(_key: HashKey | undefined, exclude: Exclude<T>): EndpointState<T> | undefined {
    const list = this.#list
    let best: EndpointState<T> | undefined
    let total = 0
    for (let i = 0; i < list.length; i++) {
      const ep = list[i]!
      if (exclude !== undefined && excluded(ep, exclude)) continue
      const w = ep.effectiveWeight
      ep.current += w
      total += w
      if (best === undefined || ep.current > best.current) best = ep
    }
    if (best !== undefined) best.current -= total
    return best
  }
}

export class WeightedRandom<T> implements Strategy<T> {
  #list: EndpointState<T>[] = []
  #cumulative = new Float64Array(0)
  #uniform = true
  readonly #ctx: StrategyContext
  constructor(ctx: StrategyContext) {
    this.#ctx = ctx
  }
  rebuild(usable: EndpointState<T>[]): void {
    this.#list = usable
    this.#cumulative = new Float64Array(usable.length)
    let sum = 0
    this.#uniform = true
    for (let i = 0; i < usable.length; i++) {
      const w = usable[i]!.effectiveWeight
      if (w !== usable[0]!.effectiveWeight) this.#uniform = false
      sum += w
      this.#cumulative[i] = sum
    }
  }
  #draw(): number {
    const n = this.#list.length
    if (this.#uniform) return Math.floor(this.#ctx.random() * n)
    const c = this.#cumulative
    const target = this.#ctx.random() * c[n - 1]!
    let lo = 0
    let hi = n - 1
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (c[mid]! <= target) lo = mid + 1
      else hi = mid
    }
    return lo
  }
  pick(_key: HashKey | undefined, exclude: Exclude<T>): EndpointState<T> | undefined {
    const list = this.#list
    if (list.length === 0) return undefined
    const i = this.#draw()
    const ep = list[i]!
    if (exclude === undefined || !excluded(ep, exclude)) return ep
    for (let tries = 0; tries < 4; tries++) {
      const other = list[this.#draw()]!
      if (!excluded(other, exclude)) return other
    }
    return firstNotExcluded(list, i + 1, exclude)
  }
}

/** Power of two choices; subclasses define which of two endpoints is less loaded. */
abstract class PowerOfTwo<T> implements Strategy<T> {
  protected list: EndpointState<T>[] = []
  protected readonly ctx: StrategyContext
  constructor(ctx: StrategyContext) {
    this.ctx = ctx
  }
  rebuild(usable: EndpointState<T>[]): void {
    this.list = usable
  }
  /** Whether `b` is less loaded than `a` (ties keep `a`). */
  protected abstract better(a: EndpointState<T>, b: EndpointState<T>): boolean
  pick(_key: HashKey | undefined, exclude: Exclude<T>): EndpointState<T> | undefined {
    const list = this.list
    const n = list.length
    if (n === 0) return undefined
    if (n === 1) {
      const only = list[0]!
      return exclude !== undefined && excluded(only, exclude) ? undefined : only
    }
    const random = this.ctx.random
    const i = Math.floor(random() * n)
    let j = Math.floor(random() * (n - 1))
    if (j >= i) j++
    const a = list[i]!
    const b = list[j]!
    if (exclude !== undefined) {
      const xa = excluded(a, exclude)
      const xb = excluded(b, exclude)
      if (xa || xb) {
        if (!xa) return a
        if (!xb) return b
        return this.#bestOf(exclude)
      }
    }
    return this.better(a, b) ? b : a
  }
  #bestOf(exclude: Exclude<T>): EndpointState<T> | undefined {
    let best: EndpointState<T> | undefined
    for (const ep of this.list) {
      if (excluded(ep, exclude)) continue
      if (best === undefined || this.better(best, ep)) best = ep
    }
    return best
  }
}

export class LeastRequest<T> extends PowerOfTwo<T> {
  protected better(a: EndpointState<T>, b: EndpointState<T>): boolean {
    return (b.inFlight + 1) / b.effectiveWeight < (a.inFlight + 1) / a.effectiveWeight
  }
}

/**
 * P2C over Finagle's peak EWMA: cost = latency EWMA × (in flight + 1) / weight, where the EWMA
 * jumps to any sample above it and otherwise decays towards recent samples, and towards zero
 * while the endpoint gets no traffic, so a once-slow endpoint is probed again. An endpoint with
 * requests in flight and no sample yet is avoided (Finagle's penalty).
 */
export class PeakEwma<T> extends PowerOfTwo<T> {
  protected better(a: EndpointState<T>, b: EndpointState<T>): boolean {
    const ca = a.cost
    const cb = b.cost
    if (ca === 0 || cb === 0) {
      // No sample yet: free when idle, penalised while it has requests in flight.
      const pa = ca === 0 ? (a.inFlight === 0 ? 0 : PENALTY + a.inFlight) : -1
      const pb = cb === 0 ? (b.inFlight === 0 ? 0 : PENALTY + b.inFlight) : -1
      if (pa >= 0 && pb >= 0) return pb < pa
      if (pb === 0) return true
      if (pa === 0) return false
      return pb < 0
    }
    // Both decay by exp(-(now - stamp) / τ); comparing them needs only the gap between their
    // stamps, so no clock read and one exp per pick.
    const sa =
      ((ca * (a.inFlight + 1)) / a.effectiveWeight) *
      Math.exp((a.stamp - b.stamp) / this.ctx.ewmaDecayMs)
    const sb = (cb * (b.inFlight + 1)) / b.effectiveWeight
    return sb < sa
  }
}

/** Finagle's penalty for an endpoint with requests in flight and no latency sample yet. */
const PENALTY = 1e9

/** Records a latency sample into an endpoint's peak EWMA. */
export function observeLatency<T>(
  ep: EndpointState<T>,
  rtt: number,
  now: number,
  tau: number,
): void {
  const td = Math.max(now - ep.stamp, 0)
  const w = Math.exp(-td / tau)
  if (rtt > ep.cost) ep.cost = rtt
  else ep.cost = ep.cost * w + rtt * (1 - w)
  ep.stamp = now
}

/** Consistent hashing over a ring of every endpoint; unusable owners pass the key clockwise. */
export class ConsistentHash<T> implements Strategy<T> {
  protected ring: RingSnapshot | undefined
  protected byRank: EndpointState<T>[] = []
  protected usableCount = 0
  protected usableWeight = 0
  readonly #fallback: WeightedRandom<T>
  protected readonly ctx: StrategyContext
  constructor(ctx: StrategyContext) {
    this.ctx = ctx
    this.#fallback = new WeightedRandom(ctx)
  }
  rebuild(
    usable: EndpointState<T>[],
    all: readonly EndpointState<T>[],
    ring: HashRing | undefined,
  ): void {
    // The balancer rebuilds after every ring change, so a snapshot of its arrays stays current.
    this.ring = ring === undefined ? undefined : ringInternals.snapshot(ring)
    const byId = new Map(all.map((ep) => [ep.id, ep]))
    this.byRank = this.ring === undefined ? [] : this.ring.ids.map((id) => byId.get(id)!)
    this.usableCount = usable.length
    this.usableWeight = 0
    for (const ep of usable) this.usableWeight += ep.weight
    this.#fallback.rebuild(usable)
  }
  /** In-flight cap factor per unit of weight; +Infinity means no cap. */
  protected capacityFactor(): number {
    return Number.POSITIVE_INFINITY
  }
  pick(key: HashKey | undefined, exclude: Exclude<T>): EndpointState<T> | undefined {
    const ring = this.ring
    if (this.usableCount === 0 || ring === undefined) return undefined
    if (key === undefined) return this.#fallback.pick(undefined, exclude)
    const { hashes, owners, buckets } = ring
    const total = hashes.length
    const h = ring.hash(key, ring.seed) >>> 0
    const bucket = h >>> (32 - BUCKET_BITS)
    let lo = buckets[bucket]!
    let hi = buckets[bucket + 1]!
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (hashes[mid]! < h) lo = mid + 1
      else hi = mid
    }
    let p = lo === total ? 0 : lo
    const byRank = this.byRank
    const factor = this.capacityFactor()
    for (let step = 0; step < total; step++) {
      const ep = byRank[owners[p]!]!
      if (
        ep.usable &&
        ep.inFlight < Math.ceil(factor * ep.weight) &&
        (exclude === undefined || !excluded(ep, exclude))
      ) {
        return ep
      }
      p = p + 1 === total ? 0 : p + 1
    }
    return undefined
  }
}

/**
 * Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam; HAProxy's
 * hash-balance-factor): an endpoint takes a key only while its in-flight requests are below
 * ⌈balanceFactor × (all in flight + 1) × its weight share⌉; otherwise the key walks on.
 */
export class BoundedLoad<T> extends ConsistentHash<T> {
  protected override capacityFactor(): number {
    return (this.ctx.balanceFactor * (this.ctx.totalInFlight() + 1)) / this.usableWeight
  }
}
