import { describe, expect, it } from 'vitest'
import { CacheError, errors, InvalidArgumentError, isCacheError } from '../src/index.js'

describe('CacheError', () => {
  it('carries a stable code, the cause and whether a retry can help', () => {
    const cause = new Error('socket closed')
    const error = new CacheError('E_CACHE_TEST', 'it failed', { cause, retryable: true })
    expect(error.code).toBe('E_CACHE_TEST')
    expect(error.cause).toBe(cause)
    expect(error.retryable).toBe(true)
    expect(error).toBeInstanceOf(Error)
  })

  it('is recognised by the guard across copies of the package, and nothing else is', () => {
    const error = new InvalidArgumentError('invalid option "x": expected a number, got "a"')
    expect(isCacheError(error)).toBe(true)
    expect(error.code).toBe('E_CACHE_INVALID_ARGUMENT')
    expect(errors.InvalidArgumentError).toBe(InvalidArgumentError)
    // A structurally identical error from another copy carries the same global brand.
    const foreign = Object.defineProperty(new Error('x'), Symbol.for('ballast.error'), {
      value: '@ballast/cache',
    })
    expect(isCacheError(foreign)).toBe(true)
    expect(isCacheError(new Error('plain'))).toBe(false)
    expect(isCacheError(null)).toBe(false)
  })
})
