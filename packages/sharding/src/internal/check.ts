import { InvalidArgumentError } from '../errors.js'

/** A number of milliseconds, > 0 (>= 0 with `allowZero`), or an `InvalidArgumentError` naming the option. */
export function positive(name: string, value: unknown, allowZero = false): number {
  if (
    typeof value !== 'number' ||
    !Number.isFinite(value) ||
    value < 0 ||
    (!allowZero && value === 0)
  ) {
    throw new InvalidArgumentError(
      `invalid option "${name}": expected a ${allowZero ? 'non-negative' : 'positive'} number of milliseconds, got ${String(value)}`,
    )
  }
  return value
}

/** One of `allowed`, or an `InvalidArgumentError` naming the option. */
export function oneOf<T extends string>(name: string, value: unknown, allowed: readonly T[]): T {
  if (!allowed.includes(value as T)) {
    throw new InvalidArgumentError(
      `invalid option "${name}": expected one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${String(value)}`,
    )
  }
  return value as T
}
