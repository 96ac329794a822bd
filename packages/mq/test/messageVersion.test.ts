import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { z } from 'zod'
import { defineMessage, InvalidMessageError } from '../src/index.js'
import { messageVersion } from '../src/message.js'

function definition(upgrades: number[]) {
  return defineMessage({
    type: 'order.placed',
    version: 3,
    schema: z.object({ orderId: z.string() }),
    upgrade: (body, from) => {
      upgrades.push(from)
      return body
    },
  })
}

describe('MessageDefinition.parse', () => {
  it('refuses a version newer than the definition, fractional, zero or negative, without calling upgrade', async () => {
    const upgrades: number[] = []
    const d = definition(upgrades)
    for (const v of [4, 2.5, 0.5, 0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
      await expect(d.parse({ orderId: 'o-1' }, v)).rejects.toBeInstanceOf(InvalidMessageError)
    }
    expect(upgrades).toEqual([])
    await expect(d.parse({ orderId: 'o-1' }, 2)).resolves.toEqual({ orderId: 'o-1' })
    expect(upgrades).toEqual([2])
  })

  it('fuzz: any number is accepted only as an integer 1..version, and upgrade runs only for an older one', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.integer({ min: -2, max: 6 }), fc.double()), async (v) => {
        const upgrades: number[] = []
        const result = await definition(upgrades)
          .parse({ orderId: 'o-1' }, v)
          .then(
            () => 'ok',
            (e: unknown) => e,
          )
        if (Number.isInteger(v) && v >= 1 && v <= 3) {
          expect(result).toBe('ok')
          expect(upgrades).toEqual(v < 3 ? [v] : [])
        } else {
          expect(result).toBeInstanceOf(InvalidMessageError)
          expect(upgrades).toEqual([])
        }
      }),
      { numRuns: 300, seed: 1414 },
    )
  })
})

describe('messageVersion', () => {
  it('fuzz: reads any header value as an integer 1..known or refuses it with InvalidMessageError naming the version', () => {
    fc.assert(
      fc.property(fc.anything(), (value) => {
        let read: unknown
        try {
          read = messageVersion(value, 3)
        } catch (error) {
          expect(error).toBeInstanceOf(InvalidMessageError)
          expect((error as Error).message).toMatch(/version/)
          return
        }
        if (value === undefined) expect(read).toBe(3)
        else {
          expect(Number.isInteger(read)).toBe(true)
          expect(read as number).toBeGreaterThanOrEqual(1)
          expect(read as number).toBeLessThanOrEqual(3)
          expect(String(read)).toBe(String(value))
        }
      }),
      { numRuns: 1000, seed: 1414 },
    )
    expect(messageVersion(undefined, 3)).toBe(3)
    expect(messageVersion('2', 3)).toBe(2)
    for (const bad of [4, '4', 1.5, '1.0', ' 1', '01', 0, -1, true, null, [1], '', 2 ** 53]) {
      expect(() => messageVersion(bad, 3)).toThrow(InvalidMessageError)
    }
  })
})
