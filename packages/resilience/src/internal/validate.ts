import { InvalidArgumentError } from '../errors.js'

/** Renders a value for an error message: strings quoted, everything else as written. */
export function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'function') return 'a function'
  if (typeof value === 'bigint') return `${value}n`
  if (typeof value === 'object' && value !== null) {
    try {
      return JSON.stringify(value)
    } catch {
      return Object.prototype.toString.call(value)
    }
  }
  return String(value)
}

/** Throws the house-style error: `invalid option "name": expected ..., got ...`. */
export function invalid(name: string, expected: string, value: unknown): never {
  throw new InvalidArgumentError(
    `invalid option "${name}": expected ${expected}, got ${show(value)}`,
  )
}

export function positiveNumber(name: string, value: unknown, what = 'a positive number'): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) invalid(name, what, value)
  return value
}

export function nonNegativeNumber(name: string, value: unknown, what = 'a number >= 0'): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) invalid(name, what, value)
  return value
}

export function positiveInteger(name: string, value: unknown, what = 'a positive integer'): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0)
    invalid(name, what, value)
  return value
}

export function nonNegativeInteger(name: string, value: unknown, what = 'an integer >= 0'): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) invalid(name, what, value)
  return value
}

/** A duration in milliseconds: a finite number > 0, or `Infinity` when `allowInfinity`. */
export function duration(name: string, value: unknown, allowInfinity = false): number {
  if (allowInfinity && value === Number.POSITIVE_INFINITY) return value
  return positiveNumber(
    name,
    value,
    allowInfinity
      ? 'a positive number of milliseconds or Infinity'
      : 'a positive number of milliseconds',
  )
}

export function optionalFunction<F>(name: string, value: unknown): F | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'function') invalid(name, 'a function', value)
  return value as F
}

export function oneOf<T extends string>(name: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    invalid(name, `one of ${allowed.map((a) => `"${a}"`).join(', ')}`, value)
  }
  return value as T
}

export function boolean(name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') invalid(name, 'a boolean', value)
  return value
}

export function nonEmptyString(name: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) invalid(name, 'a non-empty string', value)
  return value
}

export function object(name: string, value: unknown): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    invalid(name, 'an object', value)
  }
  return value as Record<string, unknown>
}

/** Merges options over defaults once; a field given as `undefined` keeps its default. */
export function merge<D extends object, O extends object>(
  defaults: D,
  options: O | undefined,
): D & O {
  const out = { ...defaults } as Record<string, unknown>
  if (options !== undefined && options !== null) {
    if (typeof options !== 'object') invalid('options', 'an object', options)
    for (const [k, v] of Object.entries(options)) if (v !== undefined) out[k] = v
  }
  return out as D & O
}
