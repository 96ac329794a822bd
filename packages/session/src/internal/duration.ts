import { InvalidArgumentError } from '../errors.js'

/** A duration: milliseconds, or a string such as `'500ms'`, `'30s'`, `'15m'`, `'12h'`, `'7d'`. */
export type Duration = number | string

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }
const PATTERN = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$/

/**
 * The one place durations are parsed. Throws an `InvalidArgumentError` naming `option` when
 * the value is not a positive, finite duration.
 */
export function parseDuration(option: string, value: Duration): number {
  let ms: number | undefined
  if (typeof value === 'number') ms = value
  else if (typeof value === 'string') {
    const match = PATTERN.exec(value)
    if (match) ms = Number(match[1]) * UNITS[match[2]!]!
  }
  if (ms === undefined || !Number.isFinite(ms) || ms <= 0) {
    throw new InvalidArgumentError(
      `invalid option "${option}": expected a positive number of milliseconds or a string like '15m', got ${JSON.stringify(value)}`,
    )
  }
  return Math.round(ms)
}
