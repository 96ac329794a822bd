/**
 * What an idempotent consumer needs from a store: claim a message id before handling it, mark it
 * done after, release it when the handler failed. {@link idempotencyDeduplicator} builds one on
 * the Redis idempotency store of `@ballast/resilience`; any store with these three calls works.
 */
export interface Deduplicator {
  /**
   * Claims `key`: `'acquired'` (handle it), `'completed'` (handled before: drop it) or
   * `'in-progress'` (another consumer holds the claim right now).
   */
  begin(key: string): Promise<'acquired' | 'completed' | 'in-progress'>
  /** Marks `key` as handled, for as long as the store remembers. */
  complete(key: string): Promise<void>
  /** Gives up the claim on `key` so a retry can handle it. */
  release(key: string): Promise<void>
}
