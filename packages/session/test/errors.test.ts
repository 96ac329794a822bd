import { describe, expect, it } from 'vitest'
import {
  errors,
  InvalidArgumentError,
  isSessionError,
  SessionClosedError,
  SessionError,
  SessionNotFoundError,
  SessionNotLoggedInError,
  SessionUnavailableError,
} from '../src/index.js'

/** `E_SESSION_` and the class name without `Session` and `Error`, in SCREAMING_SNAKE. */
function codeOf(className: string): string {
  const what = className.replace(/^Session/, '').replace(/Error$/, '')
  return `E_SESSION${what.replace(/[A-Z]/g, (letter) => `_${letter}`).toUpperCase()}`
}

/** One instance of every class, built with its last `{ cause }` argument. */
function build(name: keyof typeof errors, cause: unknown): SessionError {
  switch (name) {
    case 'SessionError':
      return new SessionError('E_SESSION', 'it failed', { cause })
    case 'InvalidArgumentError':
      return new InvalidArgumentError('invalid option "x": expected a number, got "a"', { cause })
    case 'SessionUnavailableError':
      return new SessionUnavailableError('Redis did not answer within 2000 ms', { cause })
    case 'SessionNotFoundError':
      return new SessionNotFoundError(undefined, { cause })
    case 'SessionNotLoggedInError':
      return new SessionNotLoggedInError(undefined, { cause })
    case 'SessionClosedError':
      return new SessionClosedError('session store', 'load', { cause })
  }
}

const RETRYABLE: Record<keyof typeof errors, boolean> = {
  SessionError: false,
  InvalidArgumentError: false,
  SessionUnavailableError: true,
  SessionNotFoundError: false,
  SessionNotLoggedInError: false,
  SessionClosedError: false,
}

describe('errors', () => {
  const names = Object.keys(errors) as (keyof typeof errors)[]

  it('maps every class by its name', () => {
    expect([...names].sort()).toEqual(Object.keys(RETRYABLE).sort())
    for (const name of names) expect(errors[name].name).toBe(name)
  })

  it.each(names.filter((name) => name !== 'SessionError'))(
    '%s has the code derived from its class name, its name, the brand, its cause and retryable',
    (name) => {
      const cause = new Error('socket closed')
      const error = build(name, cause)
      expect(error).toBeInstanceOf(errors[name])
      expect(error).toBeInstanceOf(SessionError)
      expect(error).toBeInstanceOf(Error)
      expect(error.code).toBe(codeOf(name))
      expect(error.name).toBe(name)
      expect(error.cause).toBe(cause)
      expect(error.retryable).toBe(RETRYABLE[name])
      expect(isSessionError(error)).toBe(true)
      expect(error.message.length).toBeGreaterThan(0)
    },
  )

  it('derives the codes the README lists', () => {
    expect(names.filter((n) => n !== 'SessionError').map(codeOf)).toEqual([
      'E_SESSION_INVALID_ARGUMENT',
      'E_SESSION_UNAVAILABLE',
      'E_SESSION_NOT_FOUND',
      'E_SESSION_NOT_LOGGED_IN',
      'E_SESSION_CLOSED',
    ])
  })

  it('SessionNotFoundError and SessionNotLoggedInError have a default message', () => {
    expect(new SessionNotFoundError().message).toBe(
      'the session does not exist (expired, destroyed or never created)',
    )
    expect(new SessionNotLoggedInError().message).toBe(
      'the session has no user: log in (regenerate with a userId) first',
    )
    expect(new SessionNotFoundError('gone', { cause: 'x' }).message).toBe('gone')
  })
})

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
