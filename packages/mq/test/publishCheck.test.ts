import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import type { Options } from 'amqplib'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { InvalidArgumentError, InvalidMessageError } from '../src/index.js'
import { checkPublish, MAX_HEADER_TABLE_BYTES } from '../src/internal/encode.js'

// amqplib's own encoder, read from its files (its exports map closes lib/): the judge of what
// channel.publish throws on, so these tests follow whatever amqplib version is installed
const require = createRequire(import.meta.url)
const lib = join(dirname(require.resolve('amqplib')), 'lib')
const defs = require(join(lib, 'defs.js')) as {
  BasicPublish: number
  BasicProperties: number
  encodeMethod(id: number, channel: number, fields: unknown): Buffer
  encodeProperties(id: number, channel: number, size: number, fields: unknown): Buffer
}
const Args = require(join(lib, 'api_args.js')) as {
  publish(exchange: string, routingKey: string, options: Options.Publish): Record<string, unknown>
}

/** What amqplib's channel.publish does before it writes a byte: encode the method and properties. */
function amqplibEncodes(exchange: string, routingKey: string, options: Options.Publish): boolean {
  try {
    const fields = Args.publish(exchange, routingKey, options)
    defs.encodeMethod(defs.BasicPublish, 1, fields)
    defs.encodeProperties(defs.BasicProperties, 1, 0, fields)
    return true
  } catch {
    return false
  }
}

function ourCheck(exchange: string, routingKey: string, options: Options.Publish): boolean {
  try {
    checkPublish(exchange, routingKey, options)
    return true
  } catch (error) {
    // only ever the package's typed errors
    expect(error instanceof InvalidMessageError || error instanceof InvalidArgumentError).toBe(true)
    return false
  }
}

/** Header values amqplib meets: JSON, and what its decoder hands back (Buffers, typed values). */
const awkwardNumber = fc.constantFrom(
  Number.NaN,
  Number.POSITIVE_INFINITY,
  Number.NEGATIVE_INFINITY,
  -0,
  2 ** 50 + 0.5,
  -(2 ** 50) - 0.5,
  2 ** 63,
  -(2 ** 63),
  -(2 ** 64),
  1e300,
  -1e300,
  2 ** 53,
)
const leaf = fc.oneof(
  { arbitrary: fc.string({ unit: 'binary', maxLength: 40 }), weight: 6 },
  { arbitrary: fc.double(), weight: 3 },
  { arbitrary: fc.integer(), weight: 3 },
  { arbitrary: fc.boolean(), weight: 2 },
  { arbitrary: fc.constant(null), weight: 2 },
  { arbitrary: fc.uint8Array({ maxLength: 8 }).map((bytes) => Buffer.from(bytes)), weight: 2 },
  awkwardNumber,
  fc.constant(undefined),
  fc.bigInt({ min: -10n, max: 10n }),
  fc.record({
    '!': fc.constantFrom(
      'timestamp',
      'decimal',
      'int8',
      'uint16',
      'float',
      'long',
      'bogus',
      'string',
    ),
    value: fc.oneof(
      fc.integer(),
      fc.double(),
      awkwardNumber,
      fc.string({ maxLength: 5 }),
      fc.record({ places: fc.integer({ min: -1, max: 300 }), digits: fc.integer() }),
    ),
  }),
)
const { tree } = fc.letrec((tie) => ({
  tree: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    leaf,
    fc.array(tie('tree'), { maxLength: 4 }),
    fc.dictionary(fc.string({ unit: 'binary', maxLength: 8 }), tie('tree'), { maxKeys: 4 }),
  ),
}))
const key = fc.oneof(
  { arbitrary: fc.string({ unit: 'binary', maxLength: 12 }), weight: 20 },
  fc.integer({ min: 250, max: 260 }).map((n) => 'k'.repeat(n)),
  fc.integer({ min: 60, max: 70 }).map((n) => 'ж'.repeat(n * 2)),
)
const shortstr = fc.oneof(
  { arbitrary: fc.string({ unit: 'binary', maxLength: 90 }), weight: 12 },
  fc.integer({ min: 250, max: 260 }).map((n) => 'x'.repeat(n)),
  fc.integer({ min: 80, max: 90 }).map((n) => '€'.repeat(n)),
  fc.integer({ min: 60, max: 68 }).map((n) => '😀'.repeat(n)),
)
const bigTable = fc
  .tuple(
    fc.integer({ min: 1, max: 3 }),
    fc.integer({ min: 10_000, max: 22_000 }),
    fc.constantFrom('', {}, [], null, 0, true, 'ab'),
  )
  .map(([keys, n, value]) =>
    Object.fromEntries(
      Array.from({ length: keys }, (_, k) => [`k${k}`, Array.from({ length: n }, () => value)]),
    ),
  )
const options = fc.record(
  {
    messageId: shortstr,
    type: shortstr,
    correlationId: shortstr,
    contentType: shortstr,
    appId: shortstr,
    priority: fc.oneof(
      { arbitrary: fc.integer({ min: 0, max: 255 }), weight: 6 },
      fc.integer({ min: -2, max: 300 }),
      awkwardNumber,
    ),
    timestamp: fc.oneof(
      { arbitrary: fc.integer({ min: 0, max: 2 ** 40 }), weight: 6 },
      fc.integer({ min: -2, max: 0 }),
      awkwardNumber,
    ),
    expiration: fc.oneof(fc.integer({ min: 0, max: 10_000 }), shortstr),
    headers: fc.oneof({ arbitrary: fc.dictionary(key, tree, { maxKeys: 4 }), weight: 6 }, bigTable),
  },
  { requiredKeys: [] },
)

describe('checkPublish', () => {
  it('accepts only what amqplib encodes: a message it lets through never throws in channel.publish', () => {
    fc.assert(
      fc.property(shortstr, shortstr, options, (exchange, routingKey, publishOptions) => {
        if (ourCheck(exchange, routingKey, publishOptions)) {
          expect(amqplibEncodes(exchange, routingKey, publishOptions)).toBe(true)
        }
      }),
      { numRuns: 400, seed: 1313 },
    )
  })

  it('refuses no JSON headers that amqplib encodes (nesting within 64 levels)', () => {
    fc.assert(
      fc.property(fc.dictionary(key, fc.jsonValue({ maxDepth: 5 }), { maxKeys: 6 }), (headers) => {
        const options = { headers }
        expect(ourCheck('', 'q', options)).toBe(amqplibEncodes('', 'q', options))
      }),
      { numRuns: 400, seed: 1314 },
    )
  })

  it('takes a header table of exactly 64 KiB and refuses one byte more', () => {
    // table length (4) + key "k" (1 + 1) + string tag and length (1 + 4) + the string
    const fits = { k: 's'.repeat(MAX_HEADER_TABLE_BYTES - 11) }
    const over = { k: 's'.repeat(MAX_HEADER_TABLE_BYTES - 10) }
    expect(amqplibEncodes('', 'q', { headers: fits })).toBe(true)
    expect(ourCheck('', 'q', { headers: fits })).toBe(true)
    expect(amqplibEncodes('', 'q', { headers: over })).toBe(false)
    expect(() => checkPublish('', 'q', { headers: over })).toThrow(InvalidMessageError)
  })

  it('refuses a cyclic or deeply nested header table with InvalidMessageError, not a stack overflow', () => {
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    expect(() => checkPublish('', 'q', { headers: cyclic })).toThrow(InvalidMessageError)
    let deep: unknown = 'leaf'
    for (let i = 0; i < 100_000; i++) deep = [deep]
    expect(() => checkPublish('', 'q', { headers: { deep } })).toThrow(InvalidMessageError)
  })
})
