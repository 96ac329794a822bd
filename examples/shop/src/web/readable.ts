/**
 * Readable forms of the services' `stats()` for the ops page: counters as "3 handled · 1 failed",
 * the degrader's features as "recommendations full, reviews off", the outbox relays per shard;
 * never raw JSON in a cell.
 */

/** `deadLettered` → `dead lettered`, `l2Errors` → `L2 errors`. */
export function words(key: string): string {
  return key
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .replace(/^l([12])\b/i, 'L$1')
    .replace(/[-_]/g, ' ')
    .toLowerCase()
    .replace(/\bl([12])\b/g, 'L$1')
}

function num(v: number): string {
  if (!Number.isFinite(v)) return String(v)
  if (Number.isInteger(v)) return v.toLocaleString('en-US')
  return Math.abs(v) >= 10 ? v.toFixed(0) : v.toFixed(1)
}

/**
 * Any stats value as text: numbers, yes/no, strings; objects as `key value · key value`, nested
 * ones as `key (key value, ...)`; `keys` picks and orders the top-level entries.
 */
export function readable(value: unknown, keys?: readonly string[]): string {
  if (value === null || value === undefined) return ''
  if (typeof value === 'number') return num(value)
  if (typeof value === 'boolean') return value ? 'yes' : 'no'
  if (typeof value === 'string') return value
  if (Array.isArray(value)) return value.map((v) => readable(v)).join(', ')
  if (typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
    const picked = keys
      ? keys.flatMap((k) =>
          k in (value as object) ? [[k, (value as Record<string, unknown>)[k]] as const] : [],
        )
      : entries
    return picked
      .map(([k, v]) =>
        typeof v === 'object' && v !== null
          ? `${words(k)} (${readable(v).replaceAll(' · ', ', ')})`
          : `${words(k)} ${readable(v)}`,
      )
      .join(' · ')
  }
  return String(value)
}

/** The degrader's stats: each feature's level, then the overload signals. */
export function readableDegrader(d: unknown): string {
  if (typeof d !== 'object' || d === null) return ''
  const s = d as {
    features?: Record<string, { level?: string; breakerOpen?: boolean }>
    shedSteps?: number
    eventLoopDelayMs?: number
    inFlight?: number
    paymentBreaker?: string
  }
  const features = Object.entries(s.features ?? {})
    .map(([name, f]) => `${name} ${f.level ?? '?'}${f.breakerOpen ? ' (breaker open)' : ''}`)
    .join(', ')
  const parts = [
    features && `features: ${features}`,
    s.shedSteps !== undefined && `${num(s.shedSteps)} shed steps`,
    s.eventLoopDelayMs !== undefined && `event loop delay ${num(s.eventLoopDelayMs)} ms`,
    s.inFlight !== undefined && `${num(s.inFlight)} in flight`,
    s.paymentBreaker !== undefined && `payment breaker ${s.paymentBreaker}`,
  ]
  return parts.filter(Boolean).join(' · ')
}

/** The outbox relays of an order instance, per shard: `a: 3 sent, 0 pending, 0 failed`. */
export function readableOutbox(relays: unknown): string {
  if (typeof relays !== 'object' || relays === null) return ''
  return Object.entries(relays as Record<string, Record<string, number>>)
    .map(
      ([shard, r]) =>
        `shard ${shard}: ${num(r.sent ?? 0)} sent, ${num(r.pending ?? 0)} pending, ${num(r.failed ?? 0)} failed, ${num(r.deferred ?? 0)} deferred`,
    )
    .join('; ')
}

/** A broker's stats, the counters an operator reads first. */
export function readableBroker(b: unknown): string {
  if (typeof b !== 'object' || b === null) return ''
  const s = b as Record<string, unknown>
  const connected = s.connected as { publisher?: boolean; consumer?: boolean } | undefined
  return [
    readable(s, ['published', 'confirmed', 'consumed', 'acked', 'retried', 'deadLettered']),
    connected &&
      `connected: publisher ${connected.publisher ? 'yes' : 'NO'}, consumer ${connected.consumer ? 'yes' : 'no'}`,
  ]
    .filter(Boolean)
    .join(' · ')
}
