/** A key the ring and the hashing balancers accept: a string (hashed as UTF-8) or bytes. */
export type HashKey = string | Uint8Array

const C1 = 0xcc9e2d51
const C2 = 0x1b873593
const encoder = new TextEncoder()
let scratch = new Uint8Array(256)

function mixK(k: number): number {
  k = Math.imul(k, C1)
  k = (k << 15) | (k >>> 17)
  return Math.imul(k, C2)
}

function mixH(h: number, k: number): number {
  h ^= mixK(k)
  h = (h << 13) | (h >>> 19)
  return (Math.imul(h, 5) + 0xe6546b64) | 0
}

function finish(h: number, length: number): number {
  h ^= length
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** Continues a murmur3 state over bytes, from a 4-byte boundary. */
function bytesFrom(bytes: Uint8Array, end: number, h: number, before: number): number {
  const blocks = end & ~3
  let i = 0
  for (; i < blocks; i += 4) {
    h = mixH(h, bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24))
  }
  const rest = end & 3
  if (rest !== 0) {
    let k = bytes[i]!
    if (rest > 1) k ^= bytes[i + 1]! << 8
    if (rest > 2) k ^= bytes[i + 2]! << 16
    h ^= mixK(k)
  }
  return finish(h, before + end)
}

/**
 * MurmurHash3 (x86, 32-bit) of a key: strings are hashed as their UTF-8 bytes, so a string
 * and the `Buffer` holding its UTF-8 encoding hash alike. ASCII strings take a fast path that
 * reads char codes directly, with no encoding and no allocation.
 *
 * @param key - the string or bytes to hash.
 * @param seed - a 32-bit seed; different seeds give independent hash functions.
 * @returns an unsigned 32-bit integer.
 * @example
 * ```ts
 * import { murmur3 } from '@ballast/lb'
 * murmur3('user:42') === murmur3(Buffer.from('user:42')) // true
 * ```
 */
export function murmur3(key: HashKey, seed = 0): number {
  let h = seed | 0
  if (typeof key !== 'string') return bytesFrom(key, key.length, h, 0)
  const length = key.length
  const blocks = length & ~3
  let i = 0
  for (; i < blocks; i += 4) {
    const c0 = key.charCodeAt(i)
    const c1 = key.charCodeAt(i + 1)
    const c2 = key.charCodeAt(i + 2)
    const c3 = key.charCodeAt(i + 3)
    if ((c0 | c1 | c2 | c3) > 0x7f) return slowTail(key, i, h)
    h = mixH(h, c0 | (c1 << 8) | (c2 << 16) | (c3 << 24))
  }
  const rest = length & 3
  if (rest !== 0) {
    const c0 = key.charCodeAt(i)
    const c1 = rest > 1 ? key.charCodeAt(i + 1) : 0
    const c2 = rest > 2 ? key.charCodeAt(i + 2) : 0
    if ((c0 | c1 | c2) > 0x7f) return slowTail(key, i, h)
    h ^= mixK(c0 | (c1 << 8) | (c2 << 16))
  }
  return finish(h, length)
}

/** Encodes the non-ASCII rest of a string and continues hashing its bytes. */
function slowTail(key: string, from: number, h: number): number {
  const rest = key.length - from
  if (scratch.length < rest * 3) scratch = new Uint8Array(rest * 3)
  const { written } = encoder.encodeInto(from === 0 ? key : key.slice(from), scratch)
  return bytesFrom(scratch, written, h, from)
}

/** The murmur3 finaliser: a fast bijective mix of a 32-bit integer. */
export function fmix32(h: number): number {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}
