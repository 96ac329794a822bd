import type { Idempotency, IdempotencyClaim } from '@ballast/resilience'
import type { Deduplicator } from './deduplicator.js'

/**
 * A {@link Deduplicator} on the Redis idempotency store of `@ballast/resilience`: a delivery
 * claims its message id (the claim's lease is renewed while the handler runs and lapses if the
 * process dies), a handled one is completed and later deliveries of the same id are dropped, a
 * failed one is released so its retry runs.
 *
 * @example
 * ```ts
 * import { createIdempotency } from '@ballast/resilience'
 * const idempotency = createIdempotency({ redis, prefix: 'billing:', lease: 30_000, retention: 7 * 86_400_000 })
 * await broker.consume('billing', handler, { idempotency: idempotencyDeduplicator(idempotency) })
 * ```
 */
export function idempotencyDeduplicator(idempotency: Idempotency): Deduplicator {
  const claims = new Map<string, IdempotencyClaim>()
  return {
    async begin(key) {
      const outcome = await idempotency.claim(key)
      switch (outcome.status) {
        case 'acquired':
          claims.set(key, outcome.claim)
          return 'acquired'
        case 'completed':
          return 'completed'
        default:
          return 'in-progress'
      }
    },
    async complete(key) {
      const claim = claims.get(key)
      claims.delete(key)
      await claim?.complete(true)
    },
    async release(key) {
      const claim = claims.get(key)
      claims.delete(key)
      await claim?.release()
    },
  }
}
