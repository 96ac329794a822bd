import parseMs from 'ms'

/**
 * A duration: a number of milliseconds, or a string with its unit such as `'250ms'`, `'30s'`,
 * `'15m'`, `'2h'` or `'1d'`. Strings are read by the `ms` package; a string with no unit
 * (`'30'`), a negative or a non-finite value is refused with the package's
 * `InvalidArgumentError` naming the option.
 */
export type Duration = number | `${number}${'ms' | 's' | 'm' | 'h' | 'd'}`

// `ms` reads a bare number as milliseconds: '30' is the seconds-or-milliseconds trap.
const HAS_UNIT = /[a-z]\s*$/i

/**
 * Milliseconds of a `Duration`, or `undefined` when the value is not one: a negative,
 * `NaN` or infinite number, a string `ms` cannot read, a string with no unit (`'30'`), or
 * anything that is neither a number nor a string.
 *
 * @example
 * ```ts
 * parseDuration('15m') // 900000
 * parseDuration(250) // 250
 * parseDuration('30') // undefined: say '30s' or '30ms'
 * ```
 */
export function parseDuration(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value : undefined
  if (typeof value !== 'string' || !HAS_UNIT.test(value)) return undefined
  let ms: number
  try {
    ms = parseMs(value.trim() as Parameters<typeof parseMs>[0])
  } catch {
    return undefined // ms throws on strings over 100 characters
  }
  return typeof ms === 'number' && Number.isFinite(ms) && ms >= 0 ? ms : undefined
}
