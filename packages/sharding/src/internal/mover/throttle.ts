import type { PoolConnection } from 'mysql2/promise'
import { AdaptiveThrottle, type AdaptiveThrottleSettings } from './adaptiveThrottle.js'
import type { ShardConnections } from './connections.js'

/** Awaited after each chunk of a step: the pause the throttle gives it (`signal` ends it early). */
export type Pace = (signal?: AbortSignal) => Promise<void>

/** The slot mover's throttle: the copy, each catch-up pass and the verification pace their chunks by it. */
export interface MoverThrottle {
  /** The settings, as merged from the mover's options (`chunkDelay`, `latencyRatio`, `maxThrottleDelay`, `niceRatio`). */
  readonly settings: AdaptiveThrottleSettings
  /**
   * Starts pacing one step's chunks on `source`: times the probe (`SELECT 1` on that connection)
   * a few times for the baseline, before the step's first chunk. With `adaptive: false` (a
   * catch-up pass, which must keep up with the writers) only `chunkDelay` paces (no probe, no
   * nice ratio).
   */
  start(source: PoolConnection, options?: { adaptive?: boolean }): Promise<Pace>
}

/** The mover's throttle: a fixed `chunkDelayMs` after each chunk, and the adaptive pause of {@link AdaptiveThrottle} on top. */
export function createMoverThrottle(
  settings: AdaptiveThrottleSettings,
  connections: ShardConnections,
): MoverThrottle {
  const idle: Pace = () => Promise.resolve()
  return {
    settings,
    async start(source, { adaptive = true } = {}) {
      const latencyRatio = adaptive ? settings.latencyRatio : 0
      const niceRatio = adaptive ? settings.niceRatio : 0
      if (settings.chunkDelayMs <= 0 && latencyRatio <= 0 && niceRatio <= 0) return idle
      const throttle = await AdaptiveThrottle.start({ ...settings, latencyRatio, niceRatio }, () =>
        connections.query(source, 'SELECT 1'),
      )
      return (signal) => throttle.pause(signal)
    },
  }
}
