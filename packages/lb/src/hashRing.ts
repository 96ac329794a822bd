import { type Checks, checks, merge } from '@ballast/shared'
import {
  DuplicateEndpointError,
  EmptyRingError,
  InvalidArgumentError,
  InvalidWeightError,
  UnknownEndpointError,
} from './errors.js'
import { fmix32, type HashKey, murmur3 } from './hash.js'

/** Options of a {@link HashRing}. */
export interface HashRingOptions {
  /**
   * Virtual nodes (points on the ring) per unit of weight. More points spread keys more
   * evenly and cost memory (6 bytes a point) and rebuild time; lookups stay O(1) thanks to a
   * 65 536-bucket index. At the default, 16 equal nodes hold within about 5 % of the mean.
   * @default 4096
   */
  pointsPerWeight?: number
  /**
   * Seed of the key hash (and of the point positions). Rings with the same nodes, weights
   * and seed map every key alike, in any process.
   * @default 0
   */
  seed?: number
  /**
   * Hash of a key to an unsigned 32-bit integer.
   * @default murmur3 (UTF-8 for strings)
   */
  hash?: (key: HashKey, seed: number) => number
}

/** The defaults of {@link HashRingOptions}. */
export const DEFAULT_HASH_RING_OPTIONS: Readonly<Required<HashRingOptions>> = Object.freeze({
  pointsPerWeight: 4096,
  seed: 0,
  hash: murmur3,
})

const check: Checks = checks(InvalidArgumentError)
const argument: Checks = checks(InvalidArgumentError, 'argument')

/** A node given to a {@link HashRing}: its id and optional weight (default 1). */
export interface HashRingNode {
  /** Any string that names the node; it decides the node's points on the ring. */
  id: string
  /**
   * Relative share of keys; a node of weight 2 owns about twice the keys of a node of weight 1.
   * @default 1
   */
  weight?: number
}

/** The ring's lookup tables at one moment, for the hashing balancers' inlined lookup. */
export interface RingSnapshot {
  hashes: Uint32Array
  owners: Uint16Array
  buckets: Uint32Array
  ids: readonly string[]
  seed: number
  hash: (key: HashKey, seed: number) => number
}

interface NodeEntry {
  id: string
  weight: number
  points: Uint32Array
}

export const BUCKET_BITS = 16
const BUCKETS = 1 << BUCKET_BITS
const MAX_NODES = 0xffff

/** Internal access to the ring's point arrays for the hashing balancers. */
export let ringInternals: {
  /** The current point arrays (replaced, never mutated, on each change). */
  snapshot(ring: HashRing): RingSnapshot
  locate(ring: HashRing, hash: number): number
  pointCount(ring: HashRing): number
  ownerAt(ring: HashRing, point: number): number
  ids(ring: HashRing): readonly string[]
  version(ring: HashRing): number
}

function checkWeight(id: string, weight: unknown): number {
  if (typeof weight !== 'number' || !Number.isFinite(weight) || weight <= 0) {
    throw new InvalidWeightError(id, weight)
  }
  return weight
}

/**
 * A consistent-hash ring: maps any key to one of a set of weighted nodes, the same node every
 * time, such that adding a node moves only the keys the new node now owns (no key moves
 * between old nodes) and removing one moves only its own keys. Each node owns
 * `pointsPerWeight × weight` points placed by hashing its id, so a node's points do not depend
 * on the other nodes; a 65 536-bucket index over the sorted points makes `get` O(1).
 *
 * @example
 * ```ts
 * import { HashRing } from '@ballast/lb'
 *
 * const ring = new HashRing(['db-1', 'db-2', { id: 'db-3', weight: 2 }])
 * ring.get('user:42') // 'db-3' (always the same for this key and these nodes)
 * ring.add('db-4') // only keys that db-4 now owns move
 * ring.getN('user:42', 2) // two distinct nodes, e.g. for replicas
 * ```
 */
export class HashRing {
  readonly #pointsPerWeight: number
  readonly #seed: number
  readonly #hash: (key: HashKey, seed: number) => number
  readonly #nodes = new Map<string, NodeEntry>()
  #ids: string[] = []
  #hashes = new Uint32Array(0)
  #owners = new Uint16Array(0)
  #buckets = new Uint32Array(BUCKETS + 1)
  #version = 0

  static {
    ringInternals = {
      snapshot: (ring) => ({
        hashes: ring.#hashes,
        owners: ring.#owners,
        buckets: ring.#buckets,
        ids: ring.#ids,
        seed: ring.#seed,
        hash: ring.#hash,
      }),
      locate: (ring, hash) => ring.#locate(hash),
      pointCount: (ring) => ring.#hashes.length,
      ownerAt: (ring, point) => ring.#owners[point]!,
      ids: (ring) => ring.#ids,
      version: (ring) => ring.#version,
    }
  }

  /**
   * @param nodes - initial nodes: ids, or `{ id, weight }`.
   * @param options - see {@link HashRingOptions}.
   */
  constructor(nodes: Iterable<string | HashRingNode> = [], options: HashRingOptions = {}) {
    const merged = merge(DEFAULT_HASH_RING_OPTIONS, options)
    check.positiveInteger('pointsPerWeight', merged.pointsPerWeight)
    check.integer('seed', merged.seed)
    check.func('hash', merged.hash)
    this.#pointsPerWeight = merged.pointsPerWeight
    this.#seed = merged.seed | 0
    this.#hash = merged.hash
    for (const node of nodes) {
      const id = typeof node === 'string' ? node : node.id
      if (this.#nodes.has(id)) throw new DuplicateEndpointError(id)
      this.#insert(id, typeof node === 'string' ? 1 : (node.weight ?? 1))
    }
    this.#rebuild()
  }

  /** How many nodes the ring holds. */
  get size(): number {
    return this.#nodes.size
  }

  /** The nodes with their weights, in id order. */
  nodes(): Array<Required<HashRingNode>> {
    return this.#ids.map((id) => ({ id, weight: this.#nodes.get(id)!.weight }))
  }

  /** Whether a node with this id is on the ring. */
  has(id: string): boolean {
    return this.#nodes.has(id)
  }

  /**
   * Adds a node. Only keys that the new node now owns move (to it).
   * @throws DuplicateEndpointError if the id is already on the ring.
   * @throws InvalidWeightError if the weight is not a positive finite number.
   */
  add(id: string, weight = 1): this {
    if (typeof id !== 'string') argument.invalid('id', 'a string', id)
    if (this.#nodes.has(id)) throw new DuplicateEndpointError(id)
    this.#insert(id, weight)
    this.#rebuild()
    return this
  }

  /** Removes a node; only its keys move (each to the next node on the ring). Returns whether it was there. */
  remove(id: string): boolean {
    if (!this.#nodes.delete(id)) return false
    this.#rebuild()
    return true
  }

  /**
   * Changes a node's weight. Raising it adds points (keys move only to this node); lowering it
   * removes points (keys move only away from this node).
   * @throws UnknownEndpointError if the id is not on the ring.
   */
  setWeight(id: string, weight: number): this {
    const entry = this.#nodes.get(id)
    if (entry === undefined) throw new UnknownEndpointError(id)
    const w = checkWeight(id, weight)
    if (w === entry.weight) return this
    this.#nodes.set(id, this.#entry(id, w))
    this.#rebuild()
    return this
  }

  /** The hash of a key as the ring sees it (an unsigned 32-bit integer). */
  hashKey(key: HashKey): number {
    return this.#hash(key, this.#seed) >>> 0
  }

  /**
   * The node that owns a key.
   * @throws EmptyRingError if the ring has no nodes.
   */
  get(key: HashKey): string {
    const hashes = this.#hashes
    if (hashes.length === 0) throw new EmptyRingError()
    return this.#ids[this.#owners[this.#locate(this.#hash(key, this.#seed) >>> 0)]!]!
  }

  /**
   * Up to `count` distinct nodes for a key, walking the ring clockwise from the key: the first
   * is {@link HashRing.get}'s answer, the next ones are where the key goes if those are removed.
   */
  getN(key: HashKey, count: number): string[] {
    const out: string[] = []
    const total = this.#hashes.length
    if (total === 0 || count <= 0) return out
    const want = Math.min(count, this.#ids.length)
    const seen = new Uint8Array(this.#ids.length)
    let p = this.#locate(this.#hash(key, this.#seed) >>> 0)
    for (let step = 0; step < total && out.length < want; step++) {
      const owner = this.#owners[p]!
      if (seen[owner] === 0) {
        seen[owner] = 1
        out.push(this.#ids[owner]!)
      }
      p = p + 1 === total ? 0 : p + 1
    }
    return out
  }

  /** Index of the first point at or after `hash` (wrapping to 0). */
  #locate(hash: number): number {
    const hashes = this.#hashes
    const bucket = hash >>> (32 - BUCKET_BITS)
    let lo = this.#buckets[bucket]!
    let hi = this.#buckets[bucket + 1]!
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (hashes[mid]! < hash) lo = mid + 1
      else hi = mid
    }
    return lo === hashes.length ? 0 : lo
  }

  #insert(id: string, weight: number): void {
    if (typeof id !== 'string') argument.invalid('id', 'a string', id)
    if (this.#nodes.size >= MAX_NODES) {
      throw new InvalidArgumentError(`too many nodes: a ring holds at most ${MAX_NODES}`)
    }
    this.#nodes.set(id, this.#entry(id, checkWeight(id, weight)))
  }

  #entry(id: string, weight: number): NodeEntry {
    const count = Math.max(1, Math.round(this.#pointsPerWeight * weight))
    const points = new Uint32Array(count)
    // Two independent hashes of the id seed the sequence, so a node's points depend only on
    // its id (and the seed): adding or reweighting one node never moves another's points.
    const a = murmur3(id, this.#seed ^ 0x5bd1e995)
    const b = murmur3(id, this.#seed ^ 0x27d4eb2f) | 1
    for (let i = 0; i < count; i++)
      points[i] = fmix32((a + Math.imul(i, b)) ^ Math.imul(i, 0x9e3779b9))
    return { id, weight, points }
  }

  #rebuild(): void {
    this.#version++
    const ids = [...this.#nodes.keys()].sort()
    let total = 0
    for (const id of ids) total += this.#nodes.get(id)!.points.length
    // Pack (hash, rank) into one float so a numeric sort orders by hash and breaks ties by id
    // order, independent of insertion order.
    const packed = new Float64Array(total)
    let n = 0
    for (let rank = 0; rank < ids.length; rank++) {
      const points = this.#nodes.get(ids[rank]!)!.points
      for (let i = 0; i < points.length; i++) packed[n++] = points[i]! * 65536 + rank
    }
    packed.sort()
    const hashes = new Uint32Array(total)
    const owners = new Uint16Array(total)
    for (let i = 0; i < total; i++) {
      const v = packed[i]!
      const h = Math.floor(v / 65536)
      hashes[i] = h
      owners[i] = v - h * 65536
    }
    const buckets = new Uint32Array(BUCKETS + 1)
    let p = 0
    for (let bkt = 0; bkt < BUCKETS; bkt++) {
      const start = bkt * 2 ** (32 - BUCKET_BITS)
      while (p < total && hashes[p]! < start) p++
      buckets[bkt] = p
    }
    buckets[BUCKETS] = total
    this.#ids = ids
    this.#hashes = hashes
    this.#owners = owners
    this.#buckets = buckets
  }
}
