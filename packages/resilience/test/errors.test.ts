import { describe, expect, it } from 'vitest'
import { errors, InvalidArgumentError, isResilienceError, ResilienceError } from '../src/index.js'

describe('ResilienceError', () => {
  it('carries a stable code, the cause and whether a retry can help', () => {
    const cause = new Error('socket closed')
    const error = new ResilienceError('E_RESILIENCE_TEST', 'it failed', { cause, retryable: true })
    expect(error.code).toBe('E_RESILIENCE_TEST')
    expect(error.cause).toBe(cause)
    expect(error.retryable).toBe(true)
    expect(error).toBeInstanceOf(Error)
  })

  it('is recognised by the guard across copies of the package, and nothing else is', () => {
    const error = new InvalidArgumentError('invalid option "x": expected a number, got "a"')
    expect(isResilienceError(error)).toBe(true)
    expect(error.code).toBe('E_RESILIENCE_INVALID_ARGUMENT')
    expect(errors.InvalidArgumentError).toBe(InvalidArgumentError)
    // A structurally identical error from another copy carries the same global brand.
    const foreign = Object.defineProperty(new Error('x'), Symbol.for('ballast.error'), {
      value: '@ballast/resilience',
    })
    expect(isResilienceError(foreign)).toBe(true)
    expect(isResilienceError(new Error('plain'))).toBe(false)
    expect(isResilienceError(null)).toBe(false)
  })
})

/** One instance of every class in `errors` but the base, built with a `cause`. */
function instances(cause: unknown): Record<string, ResilienceError> {
  return {
    InvalidArgumentError: new errors.InvalidArgumentError('bad', { cause }),
    BreakerOpenError: new errors.BreakerOpenError('psp', { cause }),
    TimeoutError: new errors.TimeoutError(2000, { cause }),
    BulkheadRejectedError: new errors.BulkheadRejectedError(4, 20, { cause }),
    AbortedError: new errors.AbortedError({ cause }),
    RateLimitedError: new errors.RateLimitedError('ip:1', 500, { cause }),
    RateLimiterUnavailableError: new errors.RateLimiterUnavailableError('down', { cause }),
    IdempotencyKeyInvalidError: new errors.IdempotencyKeyInvalidError('bad key', { cause }),
    IdempotencyScopeMissingError: new errors.IdempotencyScopeMissingError('no scope', { cause }),
    IdempotencyMismatchError: new errors.IdempotencyMismatchError('k', { cause }),
    IdempotencyInFlightError: new errors.IdempotencyInFlightError('k', 100, { cause }),
    IdempotencyFencedError: new errors.IdempotencyFencedError('k', 3, { cause }),
    IdempotencyUnavailableError: new errors.IdempotencyUnavailableError('down', { cause }),
    IdempotencyNotReplicatedError: new errors.IdempotencyNotReplicatedError('0 of 1', 0, 1, {
      cause,
    }),
    IdempotentFailureError: new errors.IdempotentFailureError('declined', 'Error', undefined, {
      cause,
    }),
    ResilienceClosedError: new errors.ResilienceClosedError('rate limiter', 'take', { cause }),
  }
}

/** `E_RESILIENCE_` and the class name without `Error` and a leading `Resilience`, in SCREAMING_SNAKE. */
function codeOf(className: string): string {
  const what = className.replace(/Error$/, '').replace(/^Resilience/, '')
  return `E_RESILIENCE_${what.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()}`
}

const RETRYABLE = new Set([
  'BreakerOpenError',
  'TimeoutError',
  'RateLimitedError',
  'RateLimiterUnavailableError',
  'IdempotencyInFlightError',
  'IdempotencyUnavailableError',
  'IdempotencyNotReplicatedError',
])

describe('errors', () => {
  const cause = new Error('the driver said no')
  const all = instances(cause)

  it('has a test instance of every class it lists', () => {
    expect(Object.keys(all).sort()).toEqual(
      Object.keys(errors)
        .filter((name) => name !== 'ResilienceError')
        .sort(),
    )
  })

  it.each(Object.entries(all))('%s: code derived from the class name', (name, error) => {
    expect(error.name).toBe(name)
    expect(error.code).toBe(codeOf(name))
    expect(error).toBeInstanceOf(errors[name as keyof typeof errors])
    expect(isResilienceError(error)).toBe(true)
  })

  it.each(Object.entries(all))('%s: keeps the cause', (_name, error) => {
    expect(error.cause).toBe(cause)
  })

  it.each(Object.entries(all))('%s: says whether a retry can help', (name, error) => {
    expect(error.retryable).toBe(RETRYABLE.has(name))
  })

  it('lets the caller who knows better override retryable', () => {
    expect(new errors.BreakerOpenError('psp', { retryable: false }).retryable).toBe(false)
    expect(new errors.IdempotencyMismatchError('k', { retryable: true }).retryable).toBe(true)
  })
})
