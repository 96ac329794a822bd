import { describe, expect, it } from 'vitest'
import {
  AdaptiveThrottle,
  type AdaptiveThrottleSettings,
  type ThrottleClock,
} from '../src/internal/mover/adaptiveThrottle.js'

/** A clock that only moves when a probe takes time or the throttle sleeps; it records the sleeps. */
function fakeClock() {
  let now = 0
  const sleeps: number[] = []
  const clock: ThrottleClock = {
    now: () => now,
    sleep: async (ms, signal) => {
      sleeps.push(ms)
      if (signal?.aborted !== true) now += ms
    },
  }
  return { clock, sleeps, advance: (ms: number) => (now += ms) }
}

/** Each chunk's own work: 100 ms, so the cap on the pause (4 times it) stays out of the way. */
async function chunks(throttle: AdaptiveThrottle, advance: (ms: number) => void, n: number) {
  for (let i = 0; i < n; i++) {
    advance(100)
    await throttle.pause()
  }
}

/** A probe whose latencies are given in turn (the last one repeats); counts its calls. */
function probeTaking(advance: (ms: number) => void, latencies: number[]) {
  let calls = 0
  return {
    probe: async () => {
      advance(latencies[Math.min(calls, latencies.length - 1)]!)
      calls++
    },
    calls: () => calls,
  }
}

const ADAPTIVE: AdaptiveThrottleSettings = {
  chunkDelayMs: 0,
  latencyRatio: 1.5,
  maxDelayMs: 80,
  niceRatio: 0,
}

describe('AdaptiveThrottle', () => {
  it('pauses only the fixed chunk delay, and never probes, with the adaptive part off', async () => {
    const { clock, sleeps, advance } = fakeClock()
    const { probe, calls } = probeTaking(advance, [100])
    const throttle = await AdaptiveThrottle.start(
      { chunkDelayMs: 20, latencyRatio: 0, maxDelayMs: 1000, niceRatio: 0 },
      probe,
      clock,
    )
    for (let i = 0; i < 3; i++) await throttle.pause()
    expect(sleeps).toEqual([20, 20, 20])
    expect(calls()).toBe(0)
    expect(throttle.stats()).toEqual({ chunks: 3, backoffs: 0, pausedMs: 60 })
  })

  it("with a nice ratio, pauses at least that many times each chunk's own time, even while the source is fast", async () => {
    const { clock, sleeps, advance } = fakeClock()
    const throttle = await AdaptiveThrottle.start(
      { chunkDelayMs: 5, latencyRatio: 1.5, maxDelayMs: 1000, niceRatio: 3 },
      probeTaking(advance, [2]).probe,
      clock,
    )
    // Chunks of 10 ms and 40 ms (the probe after each is not the chunk's time).
    advance(10)
    await throttle.pause()
    advance(40)
    await throttle.pause()
    // The step works a quarter of the time at most (with a nice ratio of 3), plus chunkDelay.
    expect(sleeps).toEqual([5 + 3 * 10, 5 + 3 * 40])
  })

  it('does not pause at all with neither part', async () => {
    const { clock, sleeps, advance } = fakeClock()
    const throttle = await AdaptiveThrottle.start(
      { chunkDelayMs: 0, latencyRatio: 0, maxDelayMs: 1000, niceRatio: 0 },
      probeTaking(advance, [1]).probe,
      clock,
    )
    await throttle.pause()
    expect(sleeps).toEqual([])
  })

  it("takes the median of five probes before the first chunk as the source's baseline", async () => {
    const { clock, advance } = fakeClock()
    const { probe, calls } = probeTaking(advance, [9, 2, 4, 3, 50])
    const throttle = await AdaptiveThrottle.start(ADAPTIVE, probe, clock)
    expect(calls()).toBe(5)
    expect(throttle.baselineMs).toBe(4)
  })

  it('runs chunks back to back while the source answers as fast as before the copy', async () => {
    const { clock, sleeps, advance } = fakeClock()
    // Baseline 10 ms; 14 ms is under 1.5 times it.
    const throttle = await AdaptiveThrottle.start(
      ADAPTIVE,
      probeTaking(advance, [10, 10, 10, 10, 10, 14]).probe,
      clock,
    )
    for (let i = 0; i < 10; i++) await throttle.pause()
    expect(sleeps).toEqual([])
    expect(throttle.delayMs).toBe(0)
  })

  it('doubles its pause while the source is slower than the bound, up to the longest pause, and gives it back 5 ms a chunk once it is not', async () => {
    const { clock, sleeps, advance } = fakeClock()
    // Baseline 10 ms, then 40 ms (over 15) for six chunks, then 10 ms again.
    const latencies = [10, 10, 10, 10, 10, 40, 40, 40, 40, 40, 40, 10]
    const throttle = await AdaptiveThrottle.start(
      ADAPTIVE,
      probeTaking(advance, latencies).probe,
      clock,
    )
    await chunks(throttle, advance, 6)
    expect(sleeps).toEqual([5, 10, 20, 40, 80, 80])
    expect(throttle.stats().backoffs).toBe(6)
    // The smoothed latency halves its distance to 10 ms each chunk: 25, 17.5 (still over 15), then under.
    await chunks(throttle, advance, 4)
    expect(sleeps.slice(6)).toEqual([80, 80, 75, 70])
    expect(throttle.stats()).toMatchObject({ chunks: 10, backoffs: 8 })
  })

  it('ignores latency within 1 ms of a sub-millisecond baseline', async () => {
    const { clock, sleeps, advance } = fakeClock()
    const throttle = await AdaptiveThrottle.start(
      ADAPTIVE,
      probeTaking(advance, [0.2, 0.2, 0.2, 0.2, 0.2, 1.1]).probe,
      clock,
    )
    for (let i = 0; i < 5; i++) await throttle.pause()
    expect(sleeps).toEqual([])
  })

  it('adds the fixed chunk delay to the adaptive pause', async () => {
    const { clock, sleeps, advance } = fakeClock()
    const throttle = await AdaptiveThrottle.start(
      { ...ADAPTIVE, chunkDelayMs: 20 },
      probeTaking(advance, [10, 10, 10, 10, 10, 40]).probe,
      clock,
    )
    await chunks(throttle, advance, 2)
    expect(sleeps).toEqual([25, 30])
  })

  it('pauses at most 4 times as long as the chunk took, whatever the source answers', async () => {
    const { clock, sleeps, advance } = fakeClock()
    const throttle = await AdaptiveThrottle.start(
      { ...ADAPTIVE, chunkDelayMs: 3 },
      probeTaking(advance, [10, 10, 10, 10, 10, 400]).probe,
      clock,
    )
    for (let i = 0; i < 8; i++) {
      advance(2)
      await throttle.pause()
    }
    // The adaptive part grew to 80 ms, but a 2 ms chunk gets 8 ms of it (the fixed 3 ms on top).
    expect(throttle.delayMs).toBe(80)
    expect(Math.max(...sleeps)).toBe(11)
  })

  it('keeps its pause between 0 and the longest pause whatever the source answers', async () => {
    const { clock, advance } = fakeClock()
    const latencies = Array.from({ length: 500 }, (_, i) => ((i * 7919) % 97) / 3)
    const throttle = await AdaptiveThrottle.start(
      ADAPTIVE,
      probeTaking(advance, latencies).probe,
      clock,
    )
    for (let i = 0; i < 495; i++) {
      await throttle.pause()
      expect(throttle.delayMs).toBeGreaterThanOrEqual(0)
      expect(throttle.delayMs).toBeLessThanOrEqual(ADAPTIVE.maxDelayMs)
    }
  })

  it('ends a pause at once when the signal aborts, and skips it when it had', async () => {
    const { advance } = fakeClock()
    const real = await AdaptiveThrottle.start(
      { chunkDelayMs: 60_000, latencyRatio: 0, maxDelayMs: 0, niceRatio: 0 },
      probeTaking(advance, [1]).probe,
    )
    const controller = new AbortController()
    const started = performance.now()
    const pausing = real.pause(controller.signal)
    setTimeout(() => controller.abort(new Error('paused')), 10)
    await pausing
    expect(performance.now() - started).toBeLessThan(5000)
    const again = performance.now()
    await real.pause(controller.signal)
    expect(performance.now() - again).toBeLessThan(1000)
  })
})
