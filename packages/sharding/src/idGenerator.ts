import { type Duration, merge } from '@ballast/shared'
import { ClockMovedBackwardsError, InvalidArgumentError, ShardKeyMissingError } from './errors.js'
import { argument, option } from './internal/check.js'
import { type ShardKey, type SlotKey, slotFor } from './shardKey.js'

/** The longest `next()` blocks waiting for the clock to reach a fresh millisecond, in ms. */
const MAX_SPIN_MS = 2
/**
 * A bound on that wait in clock reads, for when `Date.now` does not move either (fake timers):
 * far more reads than 2 ms take on a real clock, few enough to stop within tens of ms.
 */
const MAX_SPIN_READS = 1_000_000

/** Options of {@link createIdGenerator}. */
export interface IdGeneratorOptions {
  /**
   * This process's worker id, unique among every process that makes ids at the same time,
   * `0 <= workerId < 2 ** workerBits`. Two generators with the same worker id can make the same id.
   * @default 0
   */
  workerId?: number
  /**
   * The instant ids count from, in Unix milliseconds. Ids stay ordered and unique for
   * `2 ** timestampBits` ms after it (about 69 years with the default layout).
   * @default 1704067200000 (2024-01-01T00:00:00Z)
   */
  epoch?: number
  /**
   * Bits of the worker id.
   * @default 10
   */
  workerBits?: number
  /**
   * Bits of the per-millisecond sequence: `2 ** sequenceBits` ids per millisecond per worker.
   * @default 12
   */
  sequenceBits?: number
  /**
   * Bits of the owning key's slot embedded in each id; 0 embeds none. Set it to
   * `log2(slots)` of the router (e.g. 12 for 4 096 slots) so `router.query(ids.slotOf(id), …)`
   * reaches the owner's shard. The timestamp keeps `63 − slotBits − workerBits −
   * sequenceBits` bits, which must be at least 39 (about 17 years): with a slot, shrink the
   * worker and sequence bits (e.g. slotBits 12, workerBits 4, sequenceBits 6).
   * @default 0
   */
  slotBits?: number
  /**
   * How far the clock may step back (NTP) before `next()` throws (a {@link Duration}: zero
   * allowed). Within it, ids keep
   * counting from the last timestamp used, so they never go backwards; if that millisecond's
   * sequence runs out before the clock catches up, `next()` throws a retryable
   * {@link ClockMovedBackwardsError} rather than block the event loop.
   * @default 1000
   */
  maxClockBackwards?: Duration
  /**
   * The clock, in Unix milliseconds; fractions of a millisecond are dropped.
   * @default Date.now
   */
  now?: () => number
}

/** The defaults of {@link IdGeneratorOptions}, frozen; an option given as `undefined` keeps its default. */
export const DEFAULT_ID_GENERATOR_OPTIONS: Readonly<Required<IdGeneratorOptions>> = Object.freeze({
  workerId: 0,
  epoch: 1_704_067_200_000,
  workerBits: 10,
  sequenceBits: 12,
  slotBits: 0,
  maxClockBackwards: 1000,
  now: Date.now,
})

/** The fields of an id, as {@link IdGenerator.decode} reads them. */
export interface DecodedId {
  /** When the id was made, in Unix milliseconds. */
  timestamp: number
  /** The owning key's slot, or `undefined` when the layout embeds none. */
  slot: number | undefined
  /** The worker that made it. */
  workerId: number
  /** Its place among the ids the worker made in that millisecond. */
  sequence: number
}

/**
 * Makes 64-bit, time-ordered ids (snowflake-like): `timestamp | slot | worker | sequence`,
 * always positive as a signed BIGINT. Ids from one generator strictly increase; ids from
 * generators with distinct worker ids never collide. Synchronous: it never awaits.
 *
 * With `slotBits`, each id also carries the slot of its owning key (the user of an order),
 * so `ids.slotOf(orderId)` routes the order to its user's shard with no lookup table.
 */
export interface IdGenerator {
  /**
   * The next id. With `slotBits`, pass the owning key (e.g. the user id).
   * @throws ShardKeyMissingError if the layout embeds a slot and no key was given.
   * @throws InvalidArgumentError if the clock (`now`) reads NaN or a time before `epoch`.
   * @throws ClockMovedBackwardsError (retryable) if the clock stepped back further than
   * `maxClockBackwards`, or the millisecond's sequence ran out and the clock is not about to
   * pass it. A throw leaves the generator as it was: no id is ever issued twice.
   */
  next(ownerKey?: ShardKey): bigint
  /** The slot embedded in an id, as a {@link SlotKey} for the router. */
  slotOf(id: bigint | string | number): SlotKey
  /** The fields of an id. */
  decode(id: bigint | string | number): DecodedId
  /** The layout in use, with the timestamp's bits. */
  readonly layout: IdLayout
}

/** How the 63 value bits of an id are split, from the most significant: `timestamp | slot | worker | sequence`. */
export interface IdLayout {
  /** Bits of the millisecond timestamp (what is left of 63 after the other fields; at least 39). */
  timestampBits: number
  /** Bits of the embedded slot of the owning key; 0 when ids embed none. */
  slotBits: number
  /** Bits of the worker id. */
  workerBits: number
  /** Bits of the per-millisecond sequence. */
  sequenceBits: number
}

/**
 * Creates an {@link IdGenerator}.
 *
 * @example
 * ```ts
 * import { createIdGenerator, createShardRouter } from '@ballast/sharding'
 *
 * const ids = createIdGenerator({ workerId: 7, slotBits: 12, workerBits: 4, sequenceBits: 6 })
 * const orderId = ids.next(userId) // carries the user's slot
 * await router.query(userId, 'INSERT INTO orders (id, user_id) VALUES (?, ?)', [orderId, userId])
 * // later, with only the order id:
 * await router.query(ids.slotOf(orderId), 'SELECT * FROM orders WHERE id = ?', [orderId])
 * ```
 */
export function createIdGenerator(options: IdGeneratorOptions = {}): IdGenerator {
  if (typeof options !== 'object' || options === null)
    option.invalid('options', 'an object', options)
  const merged = merge(DEFAULT_ID_GENERATOR_OPTIONS, options)
  const workerBits = option.integer('workerBits', merged.workerBits, { min: 0, max: 22 })
  const sequenceBits = option.integer('sequenceBits', merged.sequenceBits, { min: 1, max: 22 })
  const slotBits = option.integer('slotBits', merged.slotBits, { min: 0, max: 22 })
  const timestampBits = 63 - workerBits - sequenceBits - slotBits
  if (timestampBits < 39) {
    option.invalid(
      'slotBits',
      `slotBits + workerBits + sequenceBits of at most 24, so the timestamp keeps 39 bits (${workerBits} + ${sequenceBits} are taken)`,
      slotBits,
    )
  }
  const workerId = option.integer('workerId', merged.workerId, { min: 0, max: 2 ** workerBits - 1 })
  const epoch = option.integer('epoch', merged.epoch, { min: 0 })
  const maxBackMs = option.duration('maxClockBackwards', merged.maxClockBackwards)
  const now = option.func<() => number>('now', merged.now)
  const seqMask = (1 << sequenceBits) - 1
  const slots = 2 ** slotBits
  const workerShift = BigInt(sequenceBits)
  const slotShift = BigInt(sequenceBits + workerBits)
  const tsShift = BigInt(sequenceBits + workerBits + slotBits)
  const workerPart = BigInt(workerId) << workerShift
  const maxTs = 2 ** timestampBits
  let last = -1
  let seq = 0

  // Waits (synchronously) for the clock to pass `used`, but only when that is about a
  // millisecond away: a clock stepped back, or one that does not move, throws instead of
  // blocking the event loop.
  const waitPast = (used: number): number => {
    const deadline = Date.now() + MAX_SPIN_MS
    for (let reads = 1; ; reads++) {
      const current = Math.floor(now()) - epoch
      if (current > used) return current
      if (used - current >= MAX_SPIN_MS) {
        throw new ClockMovedBackwardsError(
          used - current,
          `the ids of millisecond ${used + epoch} are used up and the clock is ${used - current} ms behind it (stepped back); refusing to block until it catches up`,
        )
      }
      if (reads >= MAX_SPIN_READS || Date.now() > deadline) {
        throw new ClockMovedBackwardsError(
          0,
          `the ids of millisecond ${used + epoch} are used up and the clock has not moved on for ${MAX_SPIN_MS} ms`,
        )
      }
    }
  }

  const toBig = (id: bigint | string | number): bigint => {
    // Strict: BigInt() reads '' as 0 and throws a SyntaxError or RangeError on other text.
    const v =
      typeof id === 'bigint'
        ? id
        : (typeof id === 'string' && /^\d{1,19}$/.test(id)) ||
            (typeof id === 'number' && Number.isSafeInteger(id))
          ? BigInt(id)
          : -1n
    if (v < 0n || v >= 1n << 63n) argument.invalid('id', 'a 63-bit positive integer', id)
    return v
  }

  return {
    layout: { timestampBits, slotBits, workerBits, sequenceBits },
    next(ownerKey?: ShardKey): bigint {
      let slot = 0
      if (slotBits > 0) {
        if (ownerKey === undefined) {
          throw new ShardKeyMissingError(
            'this id layout embeds a slot: pass the owning key to next(key)',
          )
        }
        slot = slotFor(ownerKey, slots)
      }
      // A clock with fractions of a millisecond (performance.timeOrigin + performance.now())
      // counts by whole milliseconds; one that reads NaN or before the epoch cannot make an id.
      const reading = Math.floor(now())
      if (!(reading >= epoch)) {
        throw new InvalidArgumentError(
          `invalid option "now": the clock reads ${String(reading)}, before "epoch" (${epoch}); ids need a clock at or after it`,
        )
      }
      let ts = reading - epoch
      if (ts < last) {
        if (last - ts > maxBackMs) throw new ClockMovedBackwardsError(last - ts)
        ts = last
      }
      let nextSeq = 0
      if (ts === last) {
        nextSeq = (seq + 1) & seqMask
        // This millisecond is used up: the id needs a later one.
        if (nextSeq === 0) ts = waitPast(last)
      }
      if (ts >= maxTs) {
        throw new InvalidArgumentError(
          `invalid option "epoch": the ${timestampBits}-bit timestamp ran out`,
        )
      }
      // State changes only once the id is certain: a throw above leaves the sequence where it
      // was, so the next call cannot hand out an id already issued.
      last = ts
      seq = nextSeq
      return (BigInt(ts) << tsShift) | (BigInt(slot) << slotShift) | workerPart | BigInt(seq)
    },
    slotOf(id) {
      if (slotBits === 0)
        throw new InvalidArgumentError('this id layout embeds no slot (slotBits is 0)')
      return { slot: Number((toBig(id) >> slotShift) & BigInt(slots - 1)) }
    },
    decode(id) {
      const v = toBig(id)
      return {
        timestamp: Number(v >> tsShift) + epoch,
        slot: slotBits === 0 ? undefined : Number((v >> slotShift) & BigInt(slots - 1)),
        workerId: Number((v >> workerShift) & BigInt(2 ** workerBits - 1)),
        sequence: Number(v & BigInt(seqMask)),
      }
    },
  }
}
