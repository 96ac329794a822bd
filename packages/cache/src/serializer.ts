import { parse, stringify } from 'devalue'
import { SerializationError } from './errors.js'

/**
 * Turns values into strings for L2 (and for sizing L1 entries) and back. A serializer must
 * throw on a value it cannot represent faithfully; the cache then caches nothing and
 * rejects with a {@link SerializationError}.
 */
export interface Serializer {
  /**
   * A short name (letters, digits, `_`, `.`, `-`; at most 64), shown in errors and written
   * with every value, so that a reader with another serializer treats the value as a miss.
   */
  readonly name: string
  /** The value as a string. Throws when the value cannot be represented. */
  serialize(value: unknown): string
  /** The value back from {@link Serializer.serialize}'s output. */
  deserialize(text: string): unknown
}

/**
 * The default serializer, on devalue: round-trips `Date`, `BigInt`, `Map`, `Set`, `RegExp`,
 * `undefined` (distinct from `null`), `NaN`, `-0`, repeated and cyclic references; rejects
 * functions, symbols and class instances rather than flattening them.
 *
 * @example
 * ```ts
 * const text = devalueSerializer.serialize({ at: new Date(0), ids: new Set([1n]) })
 * devalueSerializer.deserialize(text) // { at: Date(0), ids: Set { 1n } }
 * ```
 */
export const devalueSerializer: Serializer = {
  name: 'devalue',
  serialize: (value) => stringify(value),
  deserialize: (text) => parse(text),
}

/**
 * Plain JSON: faster and readable by any other client, but lossy (`Date` becomes a string,
 * `undefined` disappears, `Map`/`Set` become `{}`) and it throws on `BigInt`. Choose it
 * only for values that are plain JSON already.
 *
 * @example
 * ```ts
 * createCache({ redis, namespace: 'prices', serializer: jsonSerializer })
 * ```
 */
export const jsonSerializer: Serializer = {
  name: 'json',
  serialize: (value) => {
    const text = JSON.stringify(value)
    if (text === undefined) throw new TypeError(`JSON cannot represent ${typeof value}`)
    return text
  },
  deserialize: (text) => JSON.parse(text),
}

/** Runs the serializer, turning its failure into a {@link SerializationError}. */
export function serializeOrThrow(serializer: Serializer, key: string, value: unknown): string {
  try {
    return serializer.serialize(value)
  } catch (cause) {
    const why = cause instanceof Error ? cause.message : String(cause)
    throw new SerializationError(
      `cannot serialize the value of key ${JSON.stringify(key)} with the ${serializer.name} serializer: ${why}`,
      { cause },
    )
  }
}
