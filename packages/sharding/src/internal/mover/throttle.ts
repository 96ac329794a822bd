import { sleep } from './context.js'

/**
 * The throttle of the copy and of the catch-up: the one function they await after each chunk,
 * so the source's own statements keep their latency. Today a fixed pause of `chunkDelay`
 * (0: none).
 */
export function createThrottle(chunkDelayMs: number): () => Promise<void> {
  if (chunkDelayMs <= 0) return () => Promise.resolve()
  return () => sleep(chunkDelayMs)
}
