/** What the adaptive throttle needs of time: the tests give it a clock of their own. */
export interface ThrottleClock {
  /** Milliseconds, monotonic. */
  now(): number
  /** Waits `ms`; resolves early when `signal` aborts (the step then stops on its own). */
  sleep(ms: number, signal?: AbortSignal): Promise<void>
}

/** The settings of one {@link AdaptiveThrottle}, merged and checked by the mover. */
export interface AdaptiveThrottleSettings {
  /** The fixed pause after each chunk (the mover's `chunkDelay`), in ms. */
  chunkDelayMs: number
  /**
   * How much slower than its baseline the source may answer the probe before the throttle backs
   * off (the probe's latency over the baseline's); 0 turns the adaptive part off.
   */
  latencyRatio: number
  /** The longest adaptive pause after a chunk, in ms. */
  maxDelayMs: number
  /** The least pause after a chunk, in multiples of the chunk's own time (gh-ost's nice ratio); 0: none. */
  niceRatio: number
}

/** Probes timed before the first chunk: their median is the baseline. */
const BASELINE_PROBES = 5
/** What the adaptive pause grows by at least, and shrinks by per chunk under the bound (ms). */
const STEP_MS = 5
/** A probe may be this much over the baseline whatever the ratio: a local server's sub-millisecond jitter is no load. */
const SLACK_MS = 1
/** Weight of the newest probe in the smoothed latency. */
const SMOOTHING = 0.5
/**
 * The adaptive pause after a chunk is at most this many times the chunk's own time: however
 * loaded the source, the step keeps a fifth of its pace (and small chunks get short pauses).
 */
const MAX_SLOWDOWN = 4

const realClock: ThrottleClock = {
  now: () => performance.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve) => {
      if (signal?.aborted === true) return resolve()
      const done = () => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      signal?.addEventListener('abort', done, { once: true })
    }),
}

/**
 * Paces the chunks of one step of a move (a copy, a catch-up pass, a verification) by the
 * source's latency, so the application's statements on the source keep theirs. Before the first
 * chunk it times a cheap probe on the source a few times (the median is the baseline: the source
 * under the application's load, without the mover's); after each chunk it times the probe again
 * and, while the smoothed latency is over `latencyRatio` times the baseline (and at least 1 ms
 * over it), doubles its pause (from 5 ms, up to `maxDelayMs`: the copy's rate halves), else
 * shortens it by 5 ms (the rate comes back step by step): AIMD, as TCP paces a sender by its
 * round trips. The adaptive pause is at most 4 times the chunk's own time (the step keeps a
 * fifth of its pace, and small chunks get short pauses), and at least `niceRatio` times it. The
 * fixed `chunkDelayMs` is paused on top.
 */
export class AdaptiveThrottle {
  readonly #settings: AdaptiveThrottleSettings
  readonly #probe: () => Promise<unknown>
  readonly #clock: ThrottleClock
  #baselineMs = 0
  #smoothedMs: number | undefined
  #delayMs = 0
  #chunks = 0
  #backoffs = 0
  #pausedMs = 0
  /** When the last pause (or the baseline) ended: the chunk since is the step's own work. */
  #workStart = 0

  private constructor(
    settings: AdaptiveThrottleSettings,
    probe: () => Promise<unknown>,
    clock: ThrottleClock,
  ) {
    this.#settings = settings
    this.#probe = probe
    this.#clock = clock
  }

  /**
   * A throttle for one step: measures the baseline with `probe` first (unless the adaptive part
   * is off, then the probe never runs).
   */
  static async start(
    settings: AdaptiveThrottleSettings,
    probe: () => Promise<unknown>,
    clock: ThrottleClock = realClock,
  ): Promise<AdaptiveThrottle> {
    const throttle = new AdaptiveThrottle(settings, probe, clock)
    if (settings.latencyRatio > 0) {
      const times: number[] = []
      for (let i = 0; i < BASELINE_PROBES; i++) times.push(await throttle.#time())
      times.sort((a, b) => a - b)
      throttle.#baselineMs = times[Math.floor(times.length / 2)]!
    }
    throttle.#workStart = clock.now()
    return throttle
  }

  /** The probe's latency before the first chunk (ms; 0 with the adaptive part off). */
  get baselineMs(): number {
    return this.#baselineMs
  }

  /** The adaptive pause the next chunk gets (ms), on top of `chunkDelayMs`. */
  get delayMs(): number {
    return this.#delayMs
  }

  /** Chunks paced so far, how many of them made it back off, and the time paused in all (ms). */
  stats(): { chunks: number; backoffs: number; pausedMs: number } {
    return { chunks: this.#chunks, backoffs: this.#backoffs, pausedMs: this.#pausedMs }
  }

  /** Called after each chunk: probes the source, adjusts the pause, and pauses. */
  async pause(signal?: AbortSignal): Promise<void> {
    this.#chunks++
    const workMs = this.#clock.now() - this.#workStart
    const { latencyRatio, maxDelayMs, chunkDelayMs, niceRatio } = this.#settings
    if (latencyRatio > 0) {
      // Probed at once, before the pause: the source's latency right after the chunk's load,
      // not after it had time to drain.
      const latency = await this.#time()
      this.#smoothedMs =
        this.#smoothedMs === undefined
          ? latency
          : this.#smoothedMs + SMOOTHING * (latency - this.#smoothedMs)
      const bound = Math.max(this.#baselineMs * latencyRatio, this.#baselineMs + SLACK_MS)
      if (this.#smoothedMs > bound) {
        this.#backoffs++
        this.#delayMs = Math.min(maxDelayMs, Math.max(STEP_MS, this.#delayMs * 2))
      } else this.#delayMs = Math.max(0, this.#delayMs - STEP_MS)
    }
    const ms =
      chunkDelayMs + Math.max(niceRatio * workMs, Math.min(this.#delayMs, MAX_SLOWDOWN * workMs))
    if (ms > 0 && signal?.aborted !== true) {
      this.#pausedMs += ms
      await this.#clock.sleep(ms, signal)
    }
    this.#workStart = this.#clock.now()
  }

  async #time(): Promise<number> {
    const started = this.#clock.now()
    await this.#probe()
    return this.#clock.now() - started
  }
}
