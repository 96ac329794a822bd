import { describe, expect, it } from 'vitest'
import { merge, show } from '../src/index.js'

describe('merge', () => {
  it('keeps the default of an option given as undefined', () => {
    expect(merge({ a: 1, b: 2 }, { a: undefined, b: 3 })).toEqual({ a: 1, b: 3 })
  })

  it('gives a copy of the defaults when the options are undefined or null', () => {
    const defaults = { a: 1 }
    const out = merge(defaults, undefined)
    expect(out).toEqual({ a: 1 })
    expect(out).not.toBe(defaults)
    expect(merge(defaults, null as unknown as object)).toEqual({ a: 1 })
  })

  it('keeps nested defaults of a plain object given with undefined fields', () => {
    const defaults = { cache: { max: 10, ttl: 5 }, n: 1 }
    expect(merge(defaults, { cache: { max: undefined, ttl: 7 } })).toEqual({
      cache: { max: 10, ttl: 7 },
      n: 1,
    })
    expect(defaults.cache).toEqual({ max: 10, ttl: 5 })
  })

  it('replaces arrays, functions, class instances and false as they are', () => {
    class Client {
      x = 1
    }
    const client = new Client()
    const fn = () => 2
    const out = merge(
      {
        list: [1, 2, 3],
        fn: () => 1,
        client: { x: 0 } as object,
        nested: { a: 1 } as object | false,
      },
      { list: [9], fn, client, nested: false },
    )
    expect(out.list).toEqual([9])
    expect(out.fn).toBe(fn)
    expect(out.client).toBe(client)
    expect(out.nested).toBe(false)
  })

  it('throws a TypeError for options that are not an object', () => {
    expect(() => merge({ a: 1 }, 5 as unknown as object)).toThrow(TypeError)
  })
})

describe('show', () => {
  it('quotes strings, names functions and writes the rest as given', () => {
    expect(show('2s')).toBe('"2s"')
    expect(show(() => 1)).toBe('a function')
    expect(show(3n)).toBe('3n')
    expect(show({ a: 1 })).toBe('{"a":1}')
    expect(show(-5)).toBe('-5')
    expect(show(undefined)).toBe('undefined')
  })
})
