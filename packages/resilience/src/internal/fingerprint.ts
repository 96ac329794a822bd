import { createHash } from 'node:crypto'
import { InvalidArgumentError } from '../errors.js'

/** Text to write as it is (a separator, a closing bracket, an object key). */
class Text {
  constructor(readonly text: string) {}
}

/** The end of an array or object (or of a `toJSON` result): it is no longer an ancestor. */
class Leave {
  constructor(readonly node: object) {}
}

const COMMA = new Text(',')
const CLOSE_ARRAY = new Text(']')
const CLOSE_OBJECT = new Text('}')
const HOLE = new Text('')

function primitive(value: unknown): string {
  if (value === undefined) return 'null'
  if (typeof value === 'bigint') return JSON.stringify(value.toString())
  return JSON.stringify(value) ?? 'null'
}

function enter(ancestors: Set<object>, node: object): void {
  if (ancestors.has(node)) {
    throw new InvalidArgumentError(
      'invalid argument "input": expected a value without cycles to fingerprint, got a cyclic one',
    )
  }
  ancestors.add(node)
}

/**
 * Canonical JSON: object keys sorted at every depth, so `{a:1,b:2}` and `{b:2,a:1}` hash the
 * same. Bytes (Buffer, Uint8Array) are hashed as they are; strings as UTF-8.
 *
 * Iterative, with an explicit stack: request bodies are hostile, and a 100 KB JSON body can
 * nest 50 000 deep, past the call stack of a recursive walk. A cycle (only a caller's own
 * value can have one; parsed JSON cannot) is an {@link InvalidArgumentError}.
 */
export function canonicalJson(value: unknown): string {
  let out = ''
  const ancestors = new Set<object>()
  // Work in reverse order of writing: pop the next thing to write.
  const stack: unknown[] = [value]
  while (stack.length > 0) {
    const item = stack.pop()
    if (item instanceof Text) {
      out += item.text
      continue
    }
    if (item instanceof Leave) {
      ancestors.delete(item.node)
      continue
    }
    if (item === null || typeof item !== 'object') {
      out += primitive(item)
      continue
    }
    if (Array.isArray(item)) {
      enter(ancestors, item)
      out += '['
      stack.push(new Leave(item), CLOSE_ARRAY)
      for (let i = item.length - 1; i >= 0; i--) {
        // A hole is written as nothing, as the shipped `map().join(',')` did: `[,1]`, not
        // `[null,1]` (fingerprints stored before must keep matching).
        stack.push(i in item ? item[i] : HOLE)
        if (i > 0) stack.push(COMMA)
      }
      continue
    }
    if (item instanceof Date) {
      out += JSON.stringify(item.toISOString())
      continue
    }
    if (ArrayBuffer.isView(item)) {
      out += JSON.stringify(
        Buffer.from(item.buffer, item.byteOffset, item.byteLength).toString('base64'),
      )
      continue
    }
    const toJSON = (item as { toJSON?: () => unknown }).toJSON
    if (typeof toJSON === 'function') {
      // An ancestor while its toJSON result is written: a toJSON returning itself is a cycle.
      enter(ancestors, item)
      stack.push(new Leave(item), toJSON.call(item))
      continue
    }
    enter(ancestors, item)
    out += '{'
    stack.push(new Leave(item), CLOSE_OBJECT)
    const keys = Object.keys(item).sort()
    const fields: [string, unknown][] = []
    for (const k of keys) {
      const v = (item as Record<string, unknown>)[k]
      if (v !== undefined && typeof v !== 'function') fields.push([k, v])
    }
    for (let i = fields.length - 1; i >= 0; i--) {
      const [k, v] = fields[i] as [string, unknown]
      stack.push(v, new Text(`${JSON.stringify(k)}:`))
      if (i > 0) stack.push(COMMA)
    }
  }
  return out
}

/** SHA-256 (base64url) of the canonical form of `input`. */
export function fingerprintOf(input: unknown): string {
  const hash = createHash('sha256')
  if (typeof input === 'string') hash.update(input, 'utf8')
  else if (ArrayBuffer.isView(input))
    hash.update(new Uint8Array(input.buffer, input.byteOffset, input.byteLength))
  else hash.update(canonicalJson(input), 'utf8')
  return hash.digest('base64url')
}
