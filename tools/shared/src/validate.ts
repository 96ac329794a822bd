import { parseDuration } from './duration.js'
import { show } from './options.js'

/** A package's `InvalidArgumentError` class, which the checks throw. */
export type InvalidArgumentErrorClass = new (message: string) => Error

/** What is checked: an option at construction, or an argument of a call. */
export type CheckKind = 'option' | 'argument'

/**
 * The validation helpers, bound to one package's `InvalidArgumentError`. Every check returns
 * the value it accepted (durations as milliseconds), or throws
 * `invalid option "<name>": expected <what>, got <shown value>` (`argument` for per-call
 * arguments), the one message shape of every ballast package.
 */
export interface Checks {
  /** Throws the house-style error for `name`. */
  invalid(name: string, expected: string, value: unknown): never
  /** A `Duration` as milliseconds: zero is allowed unless `positive`; `Infinity` only with `infinite`. */
  duration(
    name: string,
    value: unknown,
    options?: { positive?: boolean; infinite?: boolean },
  ): number
  /** A finite number within `min`..`max` (inclusive; both optional). */
  number(name: string, value: unknown, range?: { min?: number; max?: number }): number
  /** A finite number > 0. */
  positiveNumber(name: string, value: unknown): number
  /** An integer within `min`..`max` (inclusive; both optional). */
  integer(name: string, value: unknown, range?: { min?: number; max?: number }): number
  /** An integer >= 1. */
  positiveInteger(name: string, value: unknown): number
  /** An integer >= 0. */
  nonNegativeInteger(name: string, value: unknown): number
  /** A number within 0..1. */
  ratio(name: string, value: unknown): number
  boolean(name: string, value: unknown): boolean
  /** A string, non-empty unless `allowEmpty`, matching `pattern` when given. */
  string(name: string, value: unknown, options?: { allowEmpty?: boolean; pattern?: RegExp }): string
  /** One of the allowed strings. */
  oneOf<T extends string>(name: string, value: unknown, allowed: readonly T[]): T
  /** A function. */
  func<F extends (...args: never[]) => unknown>(name: string, value: unknown): F
  /** A plain object (not `null`, not an array). */
  object(name: string, value: unknown): Record<string, unknown>
}

function rangeText(kind: 'a number' | 'an integer', min?: number, max?: number): string {
  if (min !== undefined && max !== undefined) return `${kind} from ${min} to ${max}`
  if (min !== undefined) return `${kind} >= ${min}`
  if (max !== undefined) return `${kind} <= ${max}`
  return kind
}

/**
 * Builds the {@link Checks} of a package, throwing its own error class.
 *
 * @example
 * ```ts
 * const check = checks(InvalidArgumentError)
 * const interval = check.duration('healthCheck.interval', options.healthCheck.interval, { positive: true })
 * // InvalidArgumentError: invalid option "healthCheck.interval": expected a positive duration ..., got "soon"
 * ```
 */
export function checks(ErrorClass: InvalidArgumentErrorClass, kind: CheckKind = 'option'): Checks {
  const invalid = (name: string, expected: string, value: unknown): never => {
    throw new ErrorClass(`invalid ${kind} "${name}": expected ${expected}, got ${show(value)}`)
  }
  // a number or an integer within min..max (inclusive; both optional)
  const ranged =
    (what: 'a number' | 'an integer', accepts: (value: number) => boolean) =>
    (name: string, value: unknown, { min, max }: { min?: number; max?: number } = {}) => {
      if (
        typeof value !== 'number' ||
        !accepts(value) ||
        (min !== undefined && value < min) ||
        (max !== undefined && value > max)
      ) {
        invalid(name, rangeText(what, min, max), value)
      }
      return value as number
    }
  const number = ranged('a number', Number.isFinite)
  const integer = ranged('an integer', Number.isSafeInteger)
  return {
    invalid,
    duration(name, value, { positive = false, infinite = false } = {}) {
      if (infinite && value === Number.POSITIVE_INFINITY) return value
      const ms = parseDuration(value)
      if (ms === undefined || (positive && ms === 0)) {
        invalid(
          name,
          `a ${positive ? 'positive' : 'non-negative'} duration (milliseconds, or a string such as '250ms', '30s', '15m')${infinite ? ' or Infinity' : ''}`,
          value,
        )
      }
      return ms as number
    },
    number,
    positiveNumber(name, value) {
      if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
        invalid(name, 'a positive number', value)
      }
      return value as number
    },
    integer,
    positiveInteger: (name, value) => integer(name, value, { min: 1 }),
    nonNegativeInteger: (name, value) => integer(name, value, { min: 0 }),
    ratio: (name, value) => number(name, value, { min: 0, max: 1 }),
    boolean(name, value) {
      if (typeof value !== 'boolean') invalid(name, 'a boolean', value)
      return value as boolean
    },
    string(name, value, { allowEmpty = false, pattern } = {}) {
      if (typeof value !== 'string' || (!allowEmpty && value.length === 0)) {
        invalid(name, allowEmpty ? 'a string' : 'a non-empty string', value)
      }
      if (pattern !== undefined && !pattern.test(value as string)) {
        invalid(name, `a string matching ${pattern}`, value)
      }
      return value as string
    },
    oneOf(name, value, allowed) {
      if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
        invalid(name, `one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}`, value)
      }
      return value as (typeof allowed)[number]
    },
    func<F>(name: string, value: unknown): F {
      if (typeof value !== 'function') invalid(name, 'a function', value)
      return value as F
    },
    object(name, value) {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        invalid(name, 'an object', value)
      }
      return value as Record<string, unknown>
    },
  }
}
