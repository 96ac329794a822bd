import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { createCache, InvalidArgumentError, parseDuration } from '../src/index.js'
import { parseBusMessage } from '../src/internal/bus.js'
import { decodeEnvelope, encodeEnvelope, envelopeToken } from '../src/internal/envelope.js'

// Every parser at a trust boundary of the cache, fuzzed with a fixed seed so a failure replays.
const SEED = 14

/** JSON-ish values a forger would try: right and wrong types in every field. */
const anyJson = fc.jsonValue({ maxDepth: 3 })
const field = fc.oneof(
  anyJson,
  fc.constantFrom(Number.POSITIVE_INFINITY, -1, 1.5, Number.MAX_SAFE_INTEGER + 2, '', 'k', null),
  fc.array(fc.oneof(fc.string(), fc.integer(), fc.constant(null)), { maxLength: 4 }),
)
const forged = fc.record(
  {
    o: field,
    s: field,
    t: fc.oneof(fc.constantFrom('k', 'g', 'c', 'h', 'f', 'x'), field),
    k: field,
    v: field,
    g: field,
    n: field,
  },
  { requiredKeys: [] },
)
const busText = fc.oneof(
  forged.map((m) => JSON.stringify(m)),
  fc.string(),
  fc.constantFrom('{"o":"x","s":1,"t":"c","n":1e999}', '{"o":"x","s":1,"t":"k","k":null}'),
)

describe('parseBusMessage', () => {
  it('never throws, and what it accepts has exactly the shape the handlers use', () => {
    fc.assert(
      fc.property(busText, (text) => {
        const message = parseBusMessage(text)
        if (typeof message === 'string') return
        expect(typeof message.o).toBe('string')
        expect(Number.isSafeInteger(message.s)).toBe(true)
        expect(['k', 'g', 'c', 'h', 'f']).toContain(message.t)
        const strings = (value: unknown) =>
          Array.isArray(value) && value.every((item) => typeof item === 'string')
        if (message.t === 'k' || message.t === 'f') expect(strings(message.k)).toBe(true)
        if (message.v !== undefined) expect(message.v).toHaveLength(message.k?.length ?? -1)
        if (message.t === 'g') expect(strings(message.g)).toBe(true)
        if (message.t === 'c') expect(Number.isSafeInteger(message.n)).toBe(true)
      }),
      { seed: SEED, numRuns: 2000 },
    )
  })

  it('rejects the forged messages of issue #14', () => {
    for (const text of [
      '{"o":"x","s":1,"t":"k","k":null}',
      '{"o":"x","s":1,"t":"g","g":null}',
      '{"o":"x","s":1,"t":"f","k":5}',
      '{"o":"x","s":1,"t":"c","n":1e999}',
    ]) {
      expect(typeof parseBusMessage(text)).toBe('string')
    }
    expect(parseBusMessage('{"o":"x","s":1,"t":"k","k":["a"],"v":[""]}')).toEqual({
      o: 'x',
      s: 1,
      t: 'k',
      k: ['a'],
      v: [''],
    })
  })
})

/** Bytes stored at a key: random strings, and envelopes with one part broken. */
const storedText = fc.oneof(
  fc.string(),
  fc.string({ unit: 'binary' }),
  fc
    .tuple(
      fc.constantFrom('v', 'n', 't', 'x'),
      fc.string(),
      fc.oneof(fc.nat().map(String), fc.string()),
      fc.oneof(fc.nat().map(String), fc.string()),
      fc.oneof(fc.constant('0'), fc.string()),
      fc.oneof(fc.nat({ max: 20 }).map(String), fc.string()),
      fc.string(),
    )
    .map((parts) => `${parts[0]}${parts.slice(1).join('|')}`),
)

describe('decodeEnvelope', () => {
  it('never throws; what it accepts has finite times and string tags', () => {
    fc.assert(
      fc.property(storedText, (text) => {
        const env = decodeEnvelope(text)
        expect(typeof envelopeToken(text)).toBe('string')
        if (env === undefined) return
        expect(Number.isFinite(env.freshUntil)).toBe(true)
        expect(Number.isFinite(env.staleUntil)).toBe(true)
        expect(env.tags === undefined || env.tags.every((tag) => typeof tag === 'string')).toBe(
          true,
        )
      }),
      { seed: SEED, numRuns: 2000 },
    )
  })

  it('reads back what it wrote, and the token as the compare-and-set script sees it', () => {
    const text = encodeEnvelope('v', 'abc.1~devalue', 10, 20, 0, ['a|b'], 'payload|x')
    expect(decodeEnvelope(text)).toMatchObject({
      kind: 'v',
      token: 'abc.1~devalue',
      serializer: 'devalue',
      tags: ['a|b'],
      payload: 'payload|x',
      refreshAt: Number.POSITIVE_INFINITY,
    })
    expect(envelopeToken(text)).toBe('vabc.1~devalue')
    expect(envelopeToken('no bar here')).toBe('no bar here') // what Lua's match returns
  })
})

describe('durations', () => {
  it('any string parses to a finite non-negative number of ms, or the option throws InvalidArgumentError', () => {
    const durationLike = fc.oneof(
      fc.string(),
      fc
        .tuple(
          fc.oneof(
            fc.stringMatching(/^\d{1,20}(\.\d{0,5})?$/),
            // long runs of digits: past ~309 of them Number() gives Infinity
            fc
              .tuple(fc.integer({ min: 300, max: 400 }), fc.constantFrom('1', '9'))
              .map(([n, digit]) => digit.repeat(n)),
          ),
          fc.constantFrom('ms', 's', 'm', 'h', 'd', 'y', '', ' ms'),
        )
        .map(([n, unit]) => `${n}${unit}`),
    )
    fc.assert(
      fc.property(durationLike, (text) => {
        const ms = parseDuration(text)
        if (ms !== undefined) expect(Number.isFinite(ms) && ms >= 0).toBe(true)
        try {
          void createCache({ grace: text as never, l1: false }).close()
          expect(ms).not.toBeUndefined()
        } catch (error) {
          expect(error).toBeInstanceOf(InvalidArgumentError)
          expect(ms).toBeUndefined()
        }
      }),
      { seed: SEED, numRuns: 500 },
    )
  })

  it('rejects a number of digits too large to be finite', () => {
    expect(parseDuration(`${'9'.repeat(400)}d`)).toBeUndefined()
    expect(() => createCache({ ttl: `${'9'.repeat(400)}ms` as never })).toThrow(
      'invalid option "ttl"',
    )
  })
})
