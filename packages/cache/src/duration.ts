/**
 * A duration: a number of milliseconds, or a string such as `'250ms'`, `'30s'`, `'15m'`,
 * `'2h'` or `'1d'`. Strings are parsed in one place ({@link parseDuration}).
 */
export type Duration = number | `${number}${'ms' | 's' | 'm' | 'h' | 'd'}`

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }
const PATTERN = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$/

/**
 * Milliseconds of a {@link Duration}, or `undefined` when it is not one (a negative or
 * non-finite number, an unknown unit).
 *
 * @example
 * ```ts
 * parseDuration('15m') // 900000
 * parseDuration(250) // 250
 * ```
 */
export function parseDuration(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value : undefined
  if (typeof value !== 'string') return undefined
  const match = PATTERN.exec(value)
  if (match === null) return undefined
  // a long enough run of digits is Infinity: not a duration
  const ms = Number(match[1]) * (UNITS[match[2] as string] as number)
  return Number.isFinite(ms) ? ms : undefined
}
