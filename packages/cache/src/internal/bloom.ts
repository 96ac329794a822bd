/**
 * A Bloom filter's bit positions for a key: double hashing over two 32-bit FNV-1a variants
 * (Kirsch–Mitzenmacher). The bits live in Redis (BITFIELD), so every instance shares them.
 */
export interface BloomShape {
  bits: number
  hashes: number
}

export function bloomShape(expectedItems: number, falsePositiveRate: number): BloomShape {
  const bits = Math.max(
    64,
    Math.ceil((-expectedItems * Math.log(falsePositiveRate)) / Math.LN2 ** 2),
  )
  const hashes = Math.max(1, Math.round((bits / expectedItems) * Math.LN2))
  return { bits, hashes }
}

function fnv1a(text: string, seed: number): number {
  let hash = seed >>> 0
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193) >>> 0
  }
  // final avalanche (murmur3 fmix32) so close keys spread
  hash ^= hash >>> 16
  hash = Math.imul(hash, 0x85ebca6b) >>> 0
  hash ^= hash >>> 13
  hash = Math.imul(hash, 0xc2b2ae35) >>> 0
  hash ^= hash >>> 16
  return hash >>> 0
}

export function bloomOffsets(shape: BloomShape, key: string): number[] {
  const h1 = fnv1a(key, 0x811c9dc5)
  const h2 = fnv1a(key, 0x9747b28c) | 1
  const out = new Array<number>(shape.hashes)
  for (let i = 0; i < shape.hashes; i++) out[i] = ((h1 + Math.imul(i, h2)) >>> 0) % shape.bits
  return out
}
