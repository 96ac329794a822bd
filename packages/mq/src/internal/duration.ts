import { InvalidArgumentError } from '../errors.js'
import { show } from './show.js'

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** A duration: milliseconds, or a string such as `'250ms'`, `'30s'`, `'15m'`, `'2h'`, `'7d'`. */
export type Duration = number | `${number}${'ms' | 's' | 'm' | 'h' | 'd'}`

/** Parses a {@link Duration} to milliseconds, naming the option when it is invalid. */
export function toMs(option: string, value: unknown, { allowZero = true } = {}): number {
  let ms: number | undefined
  if (typeof value === 'number') ms = value
  else if (typeof value === 'string') {
    const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(value.trim())
    if (match) ms = Number(match[1]) * (UNITS[match[2] as string] as number)
  }
  if (ms === undefined || !Number.isFinite(ms) || ms < 0 || (!allowZero && ms === 0)) {
    throw new InvalidArgumentError(
      `invalid option "${option}": expected a ${allowZero ? 'non-negative' : 'positive'} number of milliseconds or a string like '30s', got ${show(value)}`,
    )
  }
  return ms
}

/** Checks a positive integer option. */
export function positiveInt(option: string, value: unknown, { allowZero = false } = {}): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < (allowZero ? 0 : 1)) {
    throw new InvalidArgumentError(
      `invalid option "${option}": expected a ${allowZero ? 'non-negative' : 'positive'} integer, got ${show(value)}`,
    )
  }
  return value
}
