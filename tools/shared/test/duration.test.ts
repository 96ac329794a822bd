import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { checks, parseDuration } from '../src/index.js'

class InvalidArgumentError extends Error {}

describe('parseDuration', () => {
  it('reads numbers as milliseconds and strings with their unit', () => {
    expect(parseDuration(250)).toBe(250)
    expect(parseDuration(0)).toBe(0)
    expect(parseDuration('250ms')).toBe(250)
    expect(parseDuration('30s')).toBe(30_000)
    expect(parseDuration('15m')).toBe(900_000)
    expect(parseDuration('2h')).toBe(7_200_000)
    expect(parseDuration('1d')).toBe(86_400_000)
    expect(parseDuration('1.5s')).toBe(1500)
  })

  it('refuses a string with no unit, a negative, NaN or infinite value, and what is not a duration', () => {
    for (const bad of [
      '30',
      '',
      ' ',
      '-1s',
      'soon',
      '1 fortnight',
      Number.NaN,
      -1,
      Infinity,
      null,
      {},
      [],
      true,
    ]) {
      expect(parseDuration(bad), String(bad)).toBeUndefined()
    }
    expect(parseDuration(`${'9'.repeat(120)}s`)).toBeUndefined()
  })

  it('never throws and returns a finite non-negative number or undefined, whatever the string', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), (text) => {
        const ms = parseDuration(text)
        return ms === undefined || (Number.isFinite(ms) && ms >= 0)
      }),
      { seed: 16, numRuns: 3000 },
    )
  })
})

describe('checks', () => {
  const check = checks(InvalidArgumentError)

  it('returns what it accepted, durations as milliseconds', () => {
    expect(check.duration('interval', '2s', { positive: true })).toBe(2000)
    expect(check.duration('timeout', Infinity, { infinite: true })).toBe(Infinity)
    expect(check.integer('level', 9, { min: 1, max: 9 })).toBe(9)
    expect(check.ratio('jitter', 0.2)).toBe(0.2)
    expect(check.oneOf('mode', 'a', ['a', 'b'])).toBe('a')
    expect(check.string('name', 'x')).toBe('x')
  })

  it("throws the package's error with the one message shape", () => {
    expect(() => check.duration('healthCheck.interval', 0, { positive: true })).toThrow(
      new InvalidArgumentError(
        `invalid option "healthCheck.interval": expected a positive duration (milliseconds, or a string such as '250ms', '30s', '15m'), got 0`,
      ),
    )
    expect(() => check.integer('compression.level', 10, { min: 1, max: 9 })).toThrow(
      'invalid option "compression.level": expected an integer from 1 to 9, got 10',
    )
    expect(() => check.func('loader', 'x')).toThrow(
      'invalid option "loader": expected a function, got "x"',
    )
    expect(() => check.oneOf('mode', 'c', ['a', 'b'])).toThrow('expected one of "a", "b", got "c"')
    expect(() => check.string('name', 'A', { pattern: /^[a-z]+$/ })).toThrow(InvalidArgumentError)
    expect(() => check.object('breaker', [])).toThrow('expected an object, got []')
    expect(() => checks(InvalidArgumentError, 'argument').positiveInteger('count', 0)).toThrow(
      'invalid argument "count": expected an integer >= 1, got 0',
    )
  })
})
