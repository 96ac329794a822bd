import OpossumBreaker from 'opossum'

/**
 * Opossum's `Status` class, taken from an instance: opossum documents `options.status` as the
 * way to hand a breaker its statistics object, and we hand it a subclass whose window is O(1)
 * per call and needs no timer.
 */
const NO_ROTATION = {
  on() {},
  removeListener() {},
  // Opossum subscribes to the controller only when it has no listener yet: report one, so it
  // never subscribes and never keeps a reference to the breaker.
  listenerCount: () => 1,
}

type StatusCtor = new (options: Record<string, unknown>) => object

const OpossumStatus = OpossumBreaker.newStatus({
  rollingCountBuckets: 1,
  rollingCountTimeout: 1000,
  rollingPercentilesEnabled: false,
  enableSnapshots: false,
  rotateBucketController: NO_ROTATION as any,
}).constructor as StatusCtor

/** The shape of the window a breaker trips on. */
export type WindowSpec =
  | { type: 'time'; duration: number; buckets: number }
  | { type: 'count'; size: number }

/** What opossum reads on every failure to decide whether to open: kept up to date, never rebuilt. */
interface TripStats {
  fires: number
  failures: number
}

/**
 * The rolling window and counters of one breaker. Opossum calls `increment()` from its event
 * listeners and reads `stats` on each failure; both are O(1) here whatever the number of calls
 * in the window (opossum's own Status concatenates and sorts every latency in the window on
 * each failure when percentiles are on). Time buckets rotate lazily on access: no timers.
 */
export class BreakerWindow extends OpossumStatus {
  // totals since creation
  fires = 0
  successes = 0
  failures = 0
  rejects = 0
  timeouts = 0
  fallbacks = 0
  opens = 0
  // window
  readonly #count: boolean
  readonly #size: number
  readonly #bucketMs: number
  readonly #ok: Uint32Array
  readonly #bad: Uint32Array
  #ring: Uint8Array | undefined
  #pos = 0
  #bucket = 0
  /** When the current bucket ends (ms): the hot path compares against it, nothing more. */
  #bucketEnd = 0
  #windowCalls = 0
  #windowFailures = 0
  readonly #trip: TripStats = { fires: 0, failures: 0 }
  // latency samples (only when percentiles are on)
  readonly #samples: Float64Array | undefined
  #sampleCount = 0
  readonly #now: () => number

  constructor(spec: WindowSpec, latencySamples: number, now: () => number = Date.now) {
    super({
      rollingCountBuckets: 1,
      rollingCountTimeout: 1000,
      rollingPercentilesEnabled: false,
      enableSnapshots: false,
      rotateBucketController: NO_ROTATION,
    })
    this.#now = now
    if (spec.type === 'count') {
      this.#count = true
      this.#size = spec.size
      this.#bucketMs = 0
      this.#ring = new Uint8Array(spec.size)
      this.#ok = new Uint32Array(0)
      this.#bad = new Uint32Array(0)
    } else {
      this.#count = false
      this.#size = spec.buckets
      this.#bucketMs = spec.duration / spec.buckets
      this.#ok = new Uint32Array(spec.buckets)
      this.#bad = new Uint32Array(spec.buckets)
      this.#bucket = Math.floor(now() / this.#bucketMs)
      this.#bucketEnd = (this.#bucket + 1) * this.#bucketMs
    }
    this.#samples = latencySamples > 0 ? new Float64Array(latencySamples) : undefined
  }

  /** Called by opossum's listeners for every counted event. */
  increment(property: string, latency?: number): void {
    switch (property) {
      case 'successes':
        this.successes++
        this.#record(false)
        if (this.#samples !== undefined) this.#sample(latency ?? 0)
        return
      case 'failures':
        this.failures++
        this.#record(true)
        if (this.#samples !== undefined) this.#sample(latency ?? 0)
        return
      case 'fires':
        this.fires++
        return
      case 'rejects':
        this.rejects++
        return
      case 'timeouts':
        this.timeouts++
        return
      default:
        return
    }
  }

  /** Opossum's trip input: calls and failures in the window. */
  get stats(): TripStats {
    if (!this.#count) this.#advance()
    this.#trip.fires = this.#windowCalls
    this.#trip.failures = this.#windowFailures
    return this.#trip
  }

  /** Calls and failures in the window now. */
  windowCounts(): { calls: number; failures: number } {
    const s = this.stats
    return { calls: s.fires, failures: s.failures }
  }

  open(): void {
    this.opens++
  }

  /** The breaker closed: a recovered dependency starts with a clean window. */
  close(): void {
    this.reset()
  }

  reset(): void {
    this.#windowCalls = 0
    this.#windowFailures = 0
    this.#pos = 0
    if (this.#ring !== undefined) this.#ring.fill(0)
    this.#ok.fill(0)
    this.#bad.fill(0)
    if (!this.#count) {
      this.#bucket = Math.floor(this.#now() / this.#bucketMs)
      this.#bucketEnd = (this.#bucket + 1) * this.#bucketMs
    }
  }

  /** Latency percentiles over the kept samples, in milliseconds; computed only when asked. */
  latency(): { mean: number; p50: number; p90: number; p99: number } | undefined {
    const samples = this.#samples
    if (samples === undefined) return undefined
    const n = Math.min(this.#sampleCount, samples.length)
    if (n === 0) return { mean: 0, p50: 0, p90: 0, p99: 0 }
    const sorted = samples.slice(0, n).sort()
    let sum = 0
    for (const v of sorted) sum += v
    const at = (q: number) => sorted[Math.min(n - 1, Math.ceil(q * n) - 1)] ?? 0
    return { mean: sum / n, p50: at(0.5), p90: at(0.9), p99: at(0.99) }
  }

  #sample(latency: number): void {
    const samples = this.#samples as Float64Array
    samples[this.#sampleCount % samples.length] = latency
    this.#sampleCount++
  }

  #record(failed: boolean): void {
    if (this.#count) {
      const ring = this.#ring as Uint8Array
      const old = ring[this.#pos]
      if (old === 0) this.#windowCalls++
      else if (old === 2) this.#windowFailures--
      ring[this.#pos] = failed ? 2 : 1
      if (failed) this.#windowFailures++
      this.#pos = this.#pos + 1 === this.#size ? 0 : this.#pos + 1
      return
    }
    this.#advance()
    const i = this.#bucket % this.#size
    this.#windowCalls++
    if (failed) {
      ;(this.#bad as Uint32Array)[i]!++
      this.#windowFailures++
    } else (this.#ok as Uint32Array)[i]!++
  }

  #advance(): void {
    const now = this.#now()
    if (now < this.#bucketEnd) return
    const id = Math.floor(now / this.#bucketMs)
    let steps = id - this.#bucket
    if (steps <= 0) return
    if (steps > this.#size) steps = this.#size
    for (let s = 1; s <= steps; s++) {
      const i = (this.#bucket + s) % this.#size
      const ok = this.#ok[i] as number
      const bad = this.#bad[i] as number
      this.#windowCalls -= ok + bad
      this.#windowFailures -= bad
      this.#ok[i] = 0
      this.#bad[i] = 0
    }
    this.#bucket = id
    this.#bucketEnd = (id + 1) * this.#bucketMs
  }
}
