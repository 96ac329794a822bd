import fc from 'fast-check'
import { Redis } from 'ioredis'
import { afterAll, describe, expect, it } from 'vitest'
import {
  createIdempotency,
  type Idempotency,
  IdempotencyKeyInvalidError,
  isResilienceError,
} from '../src/index.js'

/** Fixed seed: a failing run replays. */
const SEED = 0x1de3
const prefix = 'test:resilience:keys:'
// A real client that never connects: these properties are about names, not Redis.
const redis = new Redis({ lazyConnect: true })
const store: Idempotency = createIdempotency({ redis, prefix })
/** A store whose pattern accepts anything, so keys with `{`, `}`, `~` and controls get through. */
const lax: Idempotency = createIdempotency({ redis, prefix, keyPattern: /^[\s\S]{1,255}$/ })

afterAll(() => {
  redis.disconnect()
})

/** Anything a header (or a caller) might hand over as a key. */
const anyKey = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 300 }),
  fc.string({ unit: 'binary-ascii', maxLength: 300 }),
  fc.anything({ withNullPrototype: true, withBigInt: true, withMap: true, withSet: true }),
  // objects that cannot be turned into a string for the error message
  fc.constantFrom(Object.create(null), { toString: 1 }, { [Symbol.toPrimitive]: () => ({}) }),
)
const anyScope = fc.option(fc.string({ unit: 'binary', minLength: 1, maxLength: 40 }), {
  nil: undefined,
})

describe('idempotency keys (hostile input)', () => {
  it('fuzz: any key is accepted as a well-formed string or refused with IdempotencyKeyInvalidError', () => {
    fc.assert(
      fc.property(anyKey, (key) => {
        for (const s of [store, lax] as const) {
          const checker: Idempotency = s
          try {
            checker.validateKey(key)
            expect(typeof key).toBe('string')
            expect((key as string).length).toBeGreaterThan(0)
          } catch (error) {
            expect(error).toBeInstanceOf(IdempotencyKeyInvalidError)
            expect(isResilienceError(error)).toBe(true)
            expect((error as IdempotencyKeyInvalidError).message.length).toBeLessThan(400)
          }
        }
      }),
      { seed: SEED, numRuns: 500 },
    )
  })

  it('fuzz: every accepted key and scope is a Redis key under the prefix, in one hash tag', () => {
    fc.assert(
      fc.property(
        fc.string({ unit: 'binary', minLength: 1, maxLength: 255 }),
        anyScope,
        (key, scope) => {
          const name = lax.redisKey(key, scope)
          expect(name.startsWith(prefix)).toBe(true)
          const rest = name.slice(prefix.length)
          if (scope === undefined) expect(rest).toBe(`{${key}}`)
          else expect(rest).toMatch(/^~[\w-]{43}\{/)
          // Redis hashes the text between the first `{` and the next `}`: for every key that
          // is the key's own text (or its start), never a part of the prefix or the scope.
          const tagStart = name.indexOf('{')
          expect(name.slice(tagStart + 1)).toBe(`${key}}`)
        },
      ),
      { seed: SEED, numRuns: 500 },
    )
  })

  it('fuzz: distinct scope and key pairs never share a Redis key', () => {
    const pair = fc.tuple(fc.string({ unit: 'binary', minLength: 1, maxLength: 12 }), anyScope)
    // Pairs built to tempt an ambiguous encoding: the same characters split differently.
    const split = fc
      .tuple(
        fc.string({ maxLength: 6 }),
        fc.string({ maxLength: 6 }),
        fc.string({ minLength: 1, maxLength: 6 }),
      )
      .filter(([a]) => a.length > 0)
      .map(
        ([a, b, c]) =>
          [
            [c, `${a}:${b}`],
            [`${b}:${c}`, a],
          ] as [[string, string], [string, string]],
      )
    fc.assert(
      fc.property(fc.oneof(fc.tuple(pair, pair), split), ([[k1, s1], [k2, s2]]) => {
        const same = k1 === k2 && s1 === s2
        expect(lax.redisKey(k1, s1) === lax.redisKey(k2, s2)).toBe(same)
      }),
      { seed: SEED, numRuns: 1000 },
    )
    // Lone surrogates: UTF-8 would turn both into U+FFFD and merge the two scopes.
    expect(lax.redisKey('k', 'a\uD800')).not.toBe(lax.redisKey('k', 'a\uDBFF'))
  })
})
