import { type Checks, checks, type Duration, merge } from '@ballast/shared'
import { type BalancerOptions, createBalancer, STRATEGIES, type StrategyName } from './balancer.js'
import { InvalidArgumentError } from './errors.js'

/** Options of {@link simulate}. */
export interface SimulationOptions {
  /** The strategy under test. */
  strategy: StrategyName
  /**
   * Seed of every random draw; equal options and seed give equal results.
   * @default 1
   */
  seed?: number
  /**
   * Number of backends.
   * @default 10
   */
  backends?: number
  /**
   * Requests a backend serves at once; more wait in its queue.
   * @default 4
   */
  slotsPerBackend?: number
  /**
   * Offered load as a share of total capacity (open-loop Poisson arrivals).
   * @default 0.7
   */
  utilisation?: number
  /**
   * Simulated time.
   * @default 60000
   */
  duration?: Duration
  /**
   * Median of the lognormal service time.
   * @default 20
   */
  serviceMedian?: Duration
  /**
   * σ of the lognormal service time.
   * @default 0.5
   */
  serviceSigma?: number
  /**
   * How many backends turn slow.
   * @default 1
   */
  slowBackends?: number
  /**
   * How much slower they are (service time × this); `1` for an all-healthy run.
   * @default 10
   */
  slowFactor?: number
  /**
   * When they turn slow, as a share of the run.
   * @default 0.25
   */
  slowFrom?: number
  /**
   * When they recover, as a share of the run.
   * @default 0.75
   */
  slowUntil?: number
  /**
   * Other balancer options (the simulator sets endpoints, strategy, clock and random).
   * @default { outlierDetection: false, slowStart: false }
   */
  balancer?: Omit<BalancerOptions<number>, 'endpoints' | 'strategy' | 'clock' | 'random'>
}

/** The defaults of {@link SimulationOptions}. */
export const DEFAULT_SIMULATION_OPTIONS: Readonly<
  Required<Omit<SimulationOptions, 'strategy' | 'balancer'>>
> = Object.freeze({
  seed: 1,
  backends: 10,
  slotsPerBackend: 4,
  utilisation: 0.7,
  duration: 60_000,
  serviceMedian: 20,
  serviceSigma: 0.5,
  slowBackends: 1,
  slowFactor: 10,
  slowFrom: 0.25,
  slowUntil: 0.75,
})

const check: Checks = checks(InvalidArgumentError)

/** The latency distribution of one simulated run, in milliseconds. */
export interface SimulationResult {
  /** The strategy simulated. */
  strategy: StrategyName
  /** Requests completed. */
  requests: number
  /** Median latency (queueing + service). */
  p50: number
  /** 99th percentile latency. */
  p99: number
  /** 99.9th percentile latency. */
  p999: number
  /** Mean latency. */
  mean: number
  /** Requests still queued or in service when arrivals stopped (a sign of unbounded queues). */
  unfinished: number
  /** Share of requests sent to the slow backends while they were slow. */
  slowShare: number
}

/**
 * A small, fast seeded generator of uniform numbers in [0, 1) (sfc32), for reproducible
 * simulations and tests.
 * @example
 * ```ts
 * import { createSeededRandom } from '@ballast/lb'
 * const random = createSeededRandom(42)
 * random() // the same sequence for the same seed
 * ```
 */
export function createSeededRandom(seed: number): () => number {
  let a = 0x9e3779b9
  let b = 0x243f6a88
  let c = 0xb7e15162
  let d = seed | 0
  const next = () => {
    a |= 0
    b |= 0
    c |= 0
    d |= 0
    const t = (((a + b) | 0) + d) | 0
    d = (d + 1) | 0
    a = b ^ (b >>> 9)
    b = (c + (c << 3)) | 0
    c = (c << 21) | (c >>> 11)
    c = (c + t) | 0
    return (t >>> 0) / 4294967296
  }
  for (let i = 0; i < 16; i++) next()
  return next
}

/** A binary min-heap of (time, payload) events. */
class EventHeap {
  times: number[] = []
  payloads: number[] = []
  get size(): number {
    return this.times.length
  }
  push(time: number, payload: number): void {
    const t = this.times
    const p = this.payloads
    let i = t.length
    t.push(time)
    p.push(payload)
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (t[parent]! <= time) break
      t[i] = t[parent]!
      p[i] = p[parent]!
      i = parent
    }
    t[i] = time
    p[i] = payload
  }
  /** Removes the earliest event; returns its payload (its time is in `lastTime`). */
  lastTime = 0
  pop(): number {
    const t = this.times
    const p = this.payloads
    const topPayload = p[0]!
    this.lastTime = t[0]!
    const lastT = t.pop()!
    const lastP = p.pop()!
    const n = t.length
    if (n > 0) {
      let i = 0
      while (true) {
        let child = 2 * i + 1
        if (child >= n) break
        if (child + 1 < n && t[child + 1]! < t[child]!) child++
        if (t[child]! >= lastT) break
        t[i] = t[child]!
        p[i] = p[child]!
        i = child
      }
      t[i] = lastT
      p[i] = lastP
    }
    return topPayload
  }
}

const ARRIVAL = -1

/**
 * Runs a seeded discrete-event simulation of a strategy (no sockets, no timers): open-loop
 * Poisson arrivals at a share of capacity, backends with a few service slots and a FIFO queue,
 * lognormal service times, and some backends `slowFactor` times slower for part of the run.
 * It drives the real balancer with a simulated clock.
 *
 * @example
 * ```ts
 * import { simulate } from '@ballast/lb'
 *
 * const healthy = simulate({ strategy: 'peak-ewma', slowFactor: 1 })
 * const degraded = simulate({ strategy: 'peak-ewma' }) // one of 10 backends 10x slower mid-run
 * console.log(healthy.p99, degraded.p99)
 * ```
 */
export function simulate(options: SimulationOptions): SimulationResult {
  const o = merge(DEFAULT_SIMULATION_OPTIONS, options)
  check.oneOf('strategy', o.strategy, STRATEGIES)
  const durationMs = check.duration('duration', o.duration, { positive: true })
  const serviceMedianMs = check.duration('serviceMedian', o.serviceMedian, { positive: true })
  for (const name of ['backends', 'slotsPerBackend', 'slowFactor'] as const) {
    check.positiveNumber(name, o[name])
  }
  if (typeof o.utilisation !== 'number' || !(o.utilisation > 0 && o.utilisation < 1)) {
    check.invalid('utilisation', 'a number above 0 and below 1', o.utilisation)
  }
  let now = 0
  const arrivalsRandom = createSeededRandom(o.seed)
  const serviceRandom = createSeededRandom(o.seed ^ 0x5bd1e995)
  const keyRandom = createSeededRandom(o.seed ^ 0x27d4eb2f)
  const balancer = createBalancer<number>({
    outlierDetection: false,
    slowStart: false,
    ...(o.balancer ?? {}),
    strategy: o.strategy,
    endpoints: Array.from({ length: o.backends }, (_, i) => ({ id: `backend-${i}`, value: i })),
    clock: () => now,
    random: createSeededRandom(o.seed ^ 0x1b873593),
  })
  const endpoints = balancer.endpoints()
  const mu = Math.log(serviceMedianMs)
  const meanService = serviceMedianMs * Math.exp((o.serviceSigma * o.serviceSigma) / 2)
  const rate = (o.utilisation * o.backends * o.slotsPerBackend) / meanService // per ms
  const slowFrom = o.slowFrom * durationMs
  const slowUntil = o.slowUntil * durationMs
  const busy = new Int32Array(o.backends)
  const queues: number[][] = Array.from({ length: o.backends }, () => [])
  // per request: arrival time, backend, start time
  const arrivalAt: number[] = []
  const backendOf: number[] = []
  const startedAt: number[] = []
  const latencies: number[] = []
  let spare: number | undefined
  const normal = (): number => {
    if (spare !== undefined) {
      const s = spare
      spare = undefined
      return s
    }
    const u = 1 - serviceRandom()
    const v = serviceRandom()
    const r = Math.sqrt(-2 * Math.log(u))
    spare = r * Math.sin(2 * Math.PI * v)
    return r * Math.cos(2 * Math.PI * v)
  }
  const heap = new EventHeap()
  const startService = (id: number, b: number) => {
    busy[b]!++
    const slow = b < o.slowBackends && now >= slowFrom && now < slowUntil ? o.slowFactor : 1
    heap.push(now + Math.exp(mu + o.serviceSigma * normal()) * slow, id)
  }
  let unfinished = 0
  let slowSent = 0
  let sentInWindow = 0
  heap.push(-Math.log(1 - arrivalsRandom()) / rate, ARRIVAL)
  while (heap.size > 0) {
    const payload = heap.pop()
    now = heap.lastTime
    if (payload === ARRIVAL) {
      if (now >= durationMs) {
        for (let b = 0; b < o.backends; b++) unfinished += busy[b]! + queues[b]!.length
        continue
      }
      heap.push(now - Math.log(1 - arrivalsRandom()) / rate, ARRIVAL)
      const key = `k${Math.floor(keyRandom() * 1e9)}`
      const ep = balancer.pick(key)
      const b = ep.value
      const id = arrivalAt.length
      arrivalAt.push(now)
      backendOf.push(b)
      startedAt.push(balancer.begin(ep))
      if (now >= slowFrom && now < slowUntil) {
        sentInWindow++
        if (b < o.slowBackends) slowSent++
      }
      if (busy[b]! < o.slotsPerBackend) startService(id, b)
      else queues[b]!.push(id)
    } else {
      const id = payload
      const b = backendOf[id]!
      balancer.end(endpoints[b]!, startedAt[id]!, true)
      latencies.push(now - arrivalAt[id]!)
      busy[b]!--
      const next = queues[b]!.shift()
      if (next !== undefined) startService(next, b)
    }
  }
  void balancer.close()
  const sorted = Float64Array.from(latencies).sort()
  const q = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? 0
  let sum = 0
  for (const l of sorted) sum += l
  return {
    strategy: o.strategy,
    requests: sorted.length,
    p50: q(0.5),
    p99: q(0.99),
    p999: q(0.999),
    mean: sorted.length === 0 ? 0 : sum / sorted.length,
    unfinished,
    slowShare: sentInWindow === 0 ? 0 : slowSent / sentInWindow,
  }
}
