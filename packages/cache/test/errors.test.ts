import { describe, expect, it } from 'vitest'
import {
  CacheClosedError,
  CacheError,
  errors,
  InvalidArgumentError,
  isCacheError,
} from '../src/index.js'

/** The code the convention derives from a class name: `L2UnavailableError` is `E_CACHE_L2_UNAVAILABLE`. */
function codeOf(className: string): string {
  const what = className.replace(/Error$/, '').replace(/^Cache/, '')
  return `E_CACHE_${what.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()}`
}

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

  it('every class in the errors map has the code derived from its name, a retryable flag and keeps its cause', () => {
    const cause = new Error('ECONNRESET')
    const classes = Object.entries(errors).filter(([name]) => name !== 'CacheError')
    expect(classes.map(([name]) => name).sort()).toEqual([
      'CacheClosedError',
      'DecodeError',
      'InvalidArgumentError',
      'L2UnavailableError',
      'LoaderTimeoutError',
      'SerializationError',
    ])
    for (const [name, ErrorClass] of classes) {
      const error =
        ErrorClass === CacheClosedError
          ? new CacheClosedError('cache', 'get', { cause })
          : new (ErrorClass as new (message: string, options: { cause: unknown }) => CacheError)(
              'it failed',
              { cause },
            )
      expect(error.name).toBe(name)
      expect(error.code).toBe(codeOf(name))
      expect(typeof error.retryable).toBe('boolean')
      expect(error.cause).toBe(cause)
      expect(isCacheError(error)).toBe(true)
      expect(error).toBeInstanceOf(CacheError)
    }
    expect(codeOf('L2UnavailableError')).toBe('E_CACHE_L2_UNAVAILABLE')
    expect(new errors.CacheClosedError('cache', 'get').retryable).toBe(false)
    expect(new errors.LoaderTimeoutError('slow').retryable).toBe(true)
  })
})
