import type { RuleId } from './surface.js'

/** A violation the rules would report that is not one, and why (a reviewer must accept the reason). */
export interface Allowance {
  /** The package, such as `mq`. */
  pkg: string
  /** The symbol as the violation names it, such as `BrokerOptions.confirmWindow`. */
  symbol: string
  /** The rule it is excused from. */
  rule: RuleId
  /** Why it is not a violation. */
  reason: string
}

/** Every excused violation. Keep it short: each entry is a hole in a rule. */
export const ALLOWLIST: readonly Allowance[] = [
  {
    pkg: 'mq',
    symbol: 'BrokerOptions.confirmWindow',
    rule: 'option-duration',
    reason:
      'a count (messages published and not yet confirmed, the AMQP publisher-confirm window), not a time',
  },
  {
    pkg: 'resilience',
    symbol: 'HttpIdempotencyOptions',
    rule: 'options-default',
    reason:
      'the generic base of ExpressIdempotencyOptions and FastifyIdempotencyOptions, whose defaults are DEFAULT_EXPRESS_IDEMPOTENCY_OPTIONS and DEFAULT_FASTIFY_IDEMPOTENCY_OPTIONS',
  },
  {
    pkg: 'cache',
    symbol: 'SetOptions',
    rule: 'options-default',
    reason:
      "per-call options with no constant default: ttl and grace default to the cache's own settings (DEFAULT_CACHE_OPTIONS), tags to none",
  },
  {
    pkg: 'resilience',
    symbol: 'ClaimOptions',
    rule: 'options-default',
    reason:
      "per-call options with no constant default: wait defaults to the store's own wait (DEFAULT_IDEMPOTENCY_OPTIONS), scope to none",
  },
  {
    pkg: 'resilience',
    symbol: 'RunOptions',
    rule: 'options-default',
    reason: 'per-call options with no constant default: scope defaults to none',
  },
  {
    pkg: 'sharding',
    symbol: "ShardRouterEvents['fell-back-to-primary']",
    rule: 'event-name',
    reason:
      'past tense with its complement: the router itself fell back to the primary, so there is no thing to put first',
  },
]

/** Whether a violation is excused by an entry of `allowlist`. */
export function isAllowed(
  v: { pkg: string; symbol: string; rule: RuleId },
  allowlist: readonly Allowance[] = ALLOWLIST,
): boolean {
  return allowlist.some((a) => a.pkg === v.pkg && a.symbol === v.symbol && a.rule === v.rule)
}
