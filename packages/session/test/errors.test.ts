import { describe, expect, it } from 'vitest'
import { errors, InvalidArgumentError, isSessionError, SessionError } from '../src/index.js'

describe('SessionError', () => {
  it('carries a stable code, the cause and whether a retry can help', () => {
    const cause = new Error('socket closed')
    const error = new SessionError('E_SESSION_TEST', 'it failed', { cause, retryable: true })
    expect(error.code).toBe('E_SESSION_TEST')
    expect(error.cause).toBe(cause)
    expect(error.retryable).toBe(true)
    expect(error).toBeInstanceOf(Error)
  })

  it('is recognised by the guard across copies of the package, and nothing else is', () => {
    const error = new InvalidArgumentError('invalid option "x": expected a number, got "a"')
    expect(isSessionError(error)).toBe(true)
    expect(error.code).toBe('E_SESSION_INVALID_ARGUMENT')
    expect(errors.InvalidArgumentError).toBe(InvalidArgumentError)
    // A structurally identical error from another copy carries the same global brand.
    const foreign = Object.defineProperty(new Error('x'), Symbol.for('ballast.error'), {
      value: '@ballast/session',
    })
    expect(isSessionError(foreign)).toBe(true)
    expect(isSessionError(new Error('plain'))).toBe(false)
    expect(isSessionError(null)).toBe(false)
  })
})
