import { describe, expect, it } from 'vitest'
import { errors, InvalidArgumentError, isLbError, LbError } from '../src/index.js'

describe('LbError', () => {
  it('carries a stable code, the cause and whether a retry can help', () => {
    const cause = new Error('socket closed')
    const error = new LbError('E_LB_TEST', 'it failed', { cause, retryable: true })
    expect(error.code).toBe('E_LB_TEST')
    expect(error.cause).toBe(cause)
    expect(error.retryable).toBe(true)
    expect(error).toBeInstanceOf(Error)
  })

  it('is recognised by the guard across copies of the package, and nothing else is', () => {
    const error = new InvalidArgumentError('invalid option "x": expected a number, got "a"')
    expect(isLbError(error)).toBe(true)
    expect(error.code).toBe('E_LB_INVALID_ARGUMENT')
    expect(errors.InvalidArgumentError).toBe(InvalidArgumentError)
    // A structurally identical error from another copy carries the same global brand.
    const foreign = Object.defineProperty(new Error('x'), Symbol.for('ballast.error'), {
      value: '@ballast/lb',
    })
    expect(isLbError(foreign)).toBe(true)
    expect(isLbError(new Error('plain'))).toBe(false)
    expect(isLbError(null)).toBe(false)
  })
})

/** One instance of each class, built with a cause as its last argument. */
function everyError(cause: unknown): Array<[name: string, error: LbError]> {
  const options = { cause }
  return [
    ['LbError', new LbError('E_LB_TEST', 'x', options)],
    ['InvalidArgumentError', new errors.InvalidArgumentError('x', options)],
    ['InvalidWeightError', new errors.InvalidWeightError('a', -1, options)],
    ['DuplicateEndpointError', new errors.DuplicateEndpointError('a', options)],
    ['EmptyEndpointsError', new errors.EmptyEndpointsError('endpoints', options)],
    ['UnknownEndpointError', new errors.UnknownEndpointError('a', options)],
    ['EmptyRingError', new errors.EmptyRingError(options)],
    ['NoEndpointAvailableError', new errors.NoEndpointAvailableError(2, undefined, options)],
    ['UpstreamError', new errors.UpstreamError('a', 2, 'x', options)],
    ['UpstreamTimeoutError', new errors.UpstreamTimeoutError('a', 100, options)],
    ['InvalidRequestError', new errors.InvalidRequestError('target', 'x', options)],
    ['LbClosedError', new errors.LbClosedError('balancer', 'pick', options)],
  ]
}

describe('errors', () => {
  it('lists every class, each building an error of its own name', () => {
    const built = everyError(undefined)
    expect(built.map(([name]) => name).sort()).toEqual(Object.keys(errors).sort())
    for (const [name, error] of built) {
      expect(error).toBeInstanceOf(errors[name as keyof typeof errors])
      expect(error.name).toBe(name)
      expect(isLbError(error)).toBe(true)
    }
  })

  it('gives each class the code E_LB_<its name without Error, in SCREAMING_SNAKE>', () => {
    for (const [name, error] of everyError(undefined)) {
      if (name === 'LbError') continue
      const what = name
        .replace(/Error$/, '')
        .replace(/^Lb/, '')
        .replace(/([a-z])([A-Z])/g, '$1_$2')
        .toUpperCase()
      expect(error.code, name).toBe(`E_LB_${what}`)
    }
    expect(new errors.NoEndpointAvailableError(0).code).toBe('E_LB_NO_ENDPOINT_AVAILABLE')
  })

  it('takes a last { cause } in every class, and keeps it', () => {
    const cause = new Error('the driver said no')
    for (const [name, error] of everyError(cause)) expect(error.cause, name).toBe(cause)
  })

  it('shows a rejected weight as the shared show() does (strings quoted)', () => {
    expect(new errors.InvalidWeightError('a', '2').message).toBe(
      'invalid weight for "a": expected a positive finite number, got "2"',
    )
  })
})
