import { InvalidCausalTokenError } from './errors.js'

const SHARD_ID = /^[A-Za-z0-9_-]{1,64}$/
const GTID = /^(\d{1,10})-(\d{1,10})-(\d{1,20})$/

/** One MariaDB GTID, `domain-server-sequence`. */
interface Gtid {
  domain: number
  server: number
  seq: bigint
}

function parseGtidList(list: string, shard: string): Map<number, Gtid> {
  const out = new Map<number, Gtid>()
  for (const part of list.split(/[,+]/)) {
    const text = part.trim()
    if (text === '') continue
    const m = GTID.exec(text)
    if (m === null)
      throw new InvalidCausalTokenError(`invalid GTID "${text.slice(0, 40)}" for shard "${shard}"`)
    const gtid = { domain: Number(m[1]), server: Number(m[2]), seq: BigInt(m[3]!) }
    const had = out.get(gtid.domain)
    if (had === undefined || had.seq < gtid.seq) out.set(gtid.domain, gtid)
  }
  return out
}

function gtidListString(gtids: Map<number, Gtid>, separator: string): string {
  return [...gtids.values()]
    .sort((a, b) => a.domain - b.domain)
    .map((g) => `${g.domain}-${g.server}-${g.seq}`)
    .join(separator)
}

/**
 * A causal token: for each shard, the GTID position of the last write a user (a request, a
 * session) made there. A replica may serve that user's read only once it has applied that
 * position (`MASTER_GTID_WAIT`). Immutable; {@link CausalToken.merge} returns a new token
 * holding, per shard and replication domain, the later position.
 *
 * `toString()` gives a compact, cookie-safe string (`shard:0-1-42.other:0-2-7+1-2-3`) that
 * {@link CausalToken.parse} reads back, so a token can travel to the next request in a cookie
 * or header.
 *
 * @example
 * ```ts
 * const token = CausalToken.parse(req.cookies.ryw ?? '')
 * await router.run({ causalToken: token }, async () => {
 *   await router.query(userId, 'INSERT INTO orders (user_id, total) VALUES (?, ?)', [userId, 12])
 *   res.cookie('ryw', router.causalToken().toString())
 * })
 * ```
 */
export class CausalToken {
  readonly #shards: ReadonlyMap<string, ReadonlyMap<number, Gtid>>

  private constructor(shards: ReadonlyMap<string, ReadonlyMap<number, Gtid>>) {
    this.#shards = shards
  }

  /** The token that demands nothing: every replica may serve every read. */
  static readonly empty: CausalToken = new CausalToken(new Map())

  /**
   * Reads a token written by {@link CausalToken.toString}. The empty string gives
   * {@link CausalToken.empty}.
   * @throws InvalidCausalTokenError if the text is not a token (it never reaches SQL unchecked).
   */
  static parse(text: string): CausalToken {
    if (typeof text !== 'string')
      throw new InvalidCausalTokenError(`expected a string, got ${typeof text}`)
    if (text.length > 4096)
      throw new InvalidCausalTokenError('token is longer than 4096 characters')
    if (text === '') return CausalToken.empty
    const shards = new Map<string, Map<number, Gtid>>()
    for (const entry of text.split('.')) {
      const colon = entry.indexOf(':')
      if (colon <= 0)
        throw new InvalidCausalTokenError(`invalid token entry "${entry.slice(0, 40)}"`)
      const shard = entry.slice(0, colon)
      if (!SHARD_ID.test(shard))
        throw new InvalidCausalTokenError(`invalid shard id "${shard.slice(0, 40)}"`)
      const gtids = parseGtidList(entry.slice(colon + 1), shard)
      if (gtids.size > 0) shards.set(shard, new Map(mergeGtids(shards.get(shard), gtids)))
    }
    return new CausalToken(shards)
  }

  /**
   * A token holding one shard's GTID position, as MariaDB reports it (`@@last_gtid`,
   * `@@gtid_binlog_pos`: comma-separated `domain-server-seq`).
   * @throws InvalidCausalTokenError if the shard id or the position is malformed.
   */
  static of(shard: string, gtidPosition: string): CausalToken {
    if (!SHARD_ID.test(shard))
      throw new InvalidCausalTokenError(`invalid shard id "${String(shard).slice(0, 40)}"`)
    const gtids = parseGtidList(gtidPosition, shard)
    return gtids.size === 0 ? CausalToken.empty : new CausalToken(new Map([[shard, gtids]]))
  }

  /** Whether the token demands nothing of any replica. */
  get isEmpty(): boolean {
    return this.#shards.size === 0
  }

  /** The shards the token names. */
  shards(): string[] {
    return [...this.#shards.keys()]
  }

  /**
   * The GTID position a replica of `shard` must reach, in MariaDB's format
   * (`0-1-42,1-2-3`), or `undefined` when the token demands nothing there.
   */
  positionFor(shard: string): string | undefined {
    const gtids = this.#shards.get(shard)
    return gtids === undefined ? undefined : gtidListString(gtids as Map<number, Gtid>, ',')
  }

  /**
   * Whether a server whose applied position is `position` (e.g. a replica's
   * `@@gtid_slave_pos`) has every write this token demands on `shard`.
   */
  isCoveredBy(shard: string, position: string): boolean {
    const need = this.#shards.get(shard)
    if (need === undefined) return true
    let have: Map<number, Gtid>
    try {
      have = parseGtidList(position, shard)
    } catch {
      return false
    }
    for (const [domain, gtid] of need) {
      const got = have.get(domain)
      if (got === undefined || got.seq < gtid.seq) return false
    }
    return true
  }

  /**
   * Whether this token already holds every position `other` demands (on `shard` only, when
   * given): a server known to have applied this token needs no wait for `other`.
   */
  covers(other: CausalToken, shard?: string): boolean {
    if (other === this || other.#shards.size === 0) return true
    const check = (id: string, need: ReadonlyMap<number, Gtid>): boolean => {
      const have = this.#shards.get(id)
      if (have === undefined) return false
      for (const [domain, gtid] of need) {
        const got = have.get(domain)
        if (got === undefined || got.seq < gtid.seq) return false
      }
      return true
    }
    if (shard !== undefined) {
      const need = other.#shards.get(shard)
      return need === undefined || check(shard, need)
    }
    for (const [id, need] of other.#shards) if (!check(id, need)) return false
    return true
  }

  /** Whether the token demands anything on `shard`. */
  has(shard: string): boolean {
    return this.#shards.has(shard)
  }

  /** A token that demands everything either token demands (the later position per domain). */
  merge(other: CausalToken): CausalToken {
    if (other.#shards.size === 0 || other === this) return this
    if (this.#shards.size === 0) return other
    const shards = new Map<string, ReadonlyMap<number, Gtid>>(this.#shards)
    let changed = false
    for (const [shard, gtids] of other.#shards) {
      const mine = shards.get(shard)
      const merged = mergeGtids(mine, gtids)
      if (merged !== mine) {
        shards.set(shard, merged)
        changed = true
      }
    }
    return changed ? new CausalToken(shards) : this
  }

  /** The cookie-safe text form, read back by {@link CausalToken.parse}. */
  toString(): string {
    return [...this.#shards.keys()]
      .sort()
      .map(
        (shard) => `${shard}:${gtidListString(this.#shards.get(shard) as Map<number, Gtid>, '+')}`,
      )
      .join('.')
  }

  /** The text form, so a token serialises as its string in JSON. */
  toJSON(): string {
    return this.toString()
  }
}

function mergeGtids(
  mine: ReadonlyMap<number, Gtid> | undefined,
  theirs: ReadonlyMap<number, Gtid>,
): ReadonlyMap<number, Gtid> {
  if (mine === undefined) return theirs
  let out: Map<number, Gtid> | undefined
  for (const [domain, gtid] of theirs) {
    const had = mine.get(domain)
    if (had === undefined || had.seq < gtid.seq) {
      out ??= new Map(mine)
      out.set(domain, gtid)
    }
  }
  return out ?? mine
}
