import { parseDuration } from '../duration.js'
import { InvalidArgumentError } from '../errors.js'

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'bigint') return `${value}n`
  if (typeof value === 'function') return 'a function'
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}

/** Throws the house-style error for an option or argument. */
export function invalid(name: string, expected: string, got: unknown, kind = 'option'): never {
  throw new InvalidArgumentError(
    `invalid ${kind} "${name}": expected ${expected}, got ${show(got)}`,
  )
}

/** A duration in ms; `positive` rejects 0. */
export function duration(name: string, value: unknown, positive: boolean, kind = 'option'): number {
  const ms = parseDuration(value)
  if (ms === undefined || (positive && ms <= 0)) {
    invalid(
      name,
      positive
        ? 'a positive number of milliseconds or a duration string like "15m"'
        : 'a non-negative number of milliseconds or a duration string like "15m"',
      value,
      kind,
    )
  }
  return ms
}

export function integer(name: string, value: unknown, min: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    invalid(name, `an integer >= ${min}`, value)
  }
  return value
}

export function ratio(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !(value >= min && value <= max)) {
    invalid(name, `a number from ${min} to ${max}`, value)
  }
  return value
}

export function boolean(name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') invalid(name, 'a boolean', value)
  return value
}

export function string(name: string, value: unknown, pattern?: RegExp): string {
  if (
    typeof value !== 'string' ||
    value.length === 0 ||
    (pattern !== undefined && !pattern.test(value))
  ) {
    invalid(
      name,
      pattern === undefined ? 'a non-empty string' : `a string matching ${pattern}`,
      value,
    )
  }
  return value
}
