import { createHmac, timingSafeEqual } from 'node:crypto'
import { InvalidArgumentError, InvalidCausalTokenError } from './errors.js'

const SHARD_ID = /^[A-Za-z0-9_-]{1,64}$/
const MAX_TOKEN_LENGTH = 4096
/** Length of a base64url HMAC-SHA256. */
const SIG_LENGTH = 43
const SIG_SHAPE = /^[A-Za-z0-9_-]{43}$/
/** Keeps these signatures apart from anything else the same secret may sign. */
const SIG_CONTEXT = 'ballast.sharding.causal-token.v1\0'

/** Why a signed token string was refused. */
export type TokenRefusal = 'malformed' | 'bad-signature'

/**
 * Checks the `secrets` option: one or more strings of at least 32 characters.
 * @throws InvalidArgumentError naming the option.
 */
export function checkSecrets(secrets: unknown): string[] {
  // A secret is never shown in the message, only its size.
  const sized = (value: unknown) =>
    typeof value === 'string' ? `a string of ${value.length} characters` : typeof value
  if (typeof secrets === 'string') {
    if (secrets.length < 32) {
      throw new InvalidArgumentError(
        `invalid option "secrets": expected a string of at least 32 characters or an array of them, got ${sized(secrets)}`,
      )
    }
    return [secrets]
  }
  if (!Array.isArray(secrets) || secrets.length === 0) {
    throw new InvalidArgumentError(
      `invalid option "secrets": expected a string of at least 32 characters or a non-empty array of them, got ${Array.isArray(secrets) ? 'an empty array' : sized(secrets)}`,
    )
  }
  secrets.forEach((secret: unknown, i) => {
    if (typeof secret !== 'string' || secret.length < 32) {
      throw new InvalidArgumentError(
        `invalid option "secrets[${i}]": expected a string of at least 32 characters, got ${sized(secret)}`,
      )
    }
  })
  return [...secrets] as string[]
}

function mac(secret: string, payload: string): string {
  return createHmac('sha256', secret).update(SIG_CONTEXT).update(payload).digest('base64url')
}

/** Signs a token's text form with `secret` (already checked). */
export function signToken(token: CausalToken, secret: string): string {
  const payload = token.toString()
  return `${payload}~${mac(secret, payload)}`
}

/**
 * Reads a signed token string: the token, or why it is refused. Never throws: any string
 * gets an answer. The empty string is the empty token (no cookie yet), not a refusal.
 */
export function verifyToken(text: unknown, secrets: readonly string[]): CausalToken | TokenRefusal {
  if (typeof text !== 'string') return 'malformed'
  if (text === '') return CausalToken.empty
  const tilde = text.length - SIG_LENGTH - 1
  if (
    text.length > MAX_TOKEN_LENGTH + SIG_LENGTH + 1 ||
    tilde < 0 ||
    text.charCodeAt(tilde) !== 126
  )
    return 'malformed'
  const payload = text.slice(0, tilde)
  const sig = text.slice(tilde + 1)
  if (!SIG_SHAPE.test(sig)) return 'malformed'
  // Compare the text, not decoded bytes: base64url's last character carries spare bits, so
  // several spellings decode alike and a tampered one must still be refused.
  const given = Buffer.from(sig, 'latin1')
  let signed = false
  for (const secret of secrets) {
    if (timingSafeEqual(Buffer.from(mac(secret, payload), 'latin1'), given)) signed = true
  }
  if (!signed) return 'bad-signature'
  try {
    const token = CausalToken.parse(payload)
    // Only the canonical text is ever signed: anything else was not made by sign().
    return token.toString() === payload ? token : 'malformed'
  } catch {
    return 'malformed'
  }
}
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
 * A token that travels through a client (a cookie, a header) must be signed:
 * {@link CausalToken.sign} / {@link CausalToken.verify}, or the router's
 * {@link ShardRouter.signCausalToken} and `run({ causalToken: string })`, which verify with the
 * router's `secrets`. A forged token would make replica reads wait for positions that never
 * come. `toString()` / {@link CausalToken.parse} are the unsigned form, for storage the client
 * cannot write (a server-side session).
 *
 * @example
 * ```ts
 * await router.run({ causalToken: req.cookies.ryw ?? '' }, async () => {
 *   await router.query(userId, 'INSERT INTO orders (user_id, total) VALUES (?, ?)', [userId, 12])
 *   res.cookie('ryw', router.signCausalToken())
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
   * Reads a token written by {@link CausalToken.toString}: the unsigned form, for text the
   * client cannot have written (use {@link CausalToken.verify} for cookies). The empty string
   * gives {@link CausalToken.empty}.
   * @throws InvalidCausalTokenError if the text is not a token (it never reaches SQL unchecked).
   */
  static parse(text: string): CausalToken {
    if (typeof text !== 'string')
      throw new InvalidCausalTokenError(`expected a string, got ${typeof text}`)
    if (text.length > MAX_TOKEN_LENGTH)
      throw new InvalidCausalTokenError(`token is longer than ${MAX_TOKEN_LENGTH} characters`)
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
   * Reads a token signed by {@link CausalToken.sign} with one of `secrets` (the current one
   * first, then those being rotated out), or `undefined` when the text is not one: unsigned,
   * tampered, signed with another secret, or malformed. Never throws on any text, so a cookie
   * can go straight in. The empty string gives {@link CausalToken.empty}.
   * @throws InvalidArgumentError if `secrets` is not one or more strings of at least 32 characters.
   * @example
   * ```ts
   * const token = CausalToken.verify(req.cookies.ryw ?? '', secrets) ?? CausalToken.empty
   * ```
   */
  static verify(text: string, secrets: string | readonly string[]): CausalToken | undefined {
    const result = verifyToken(text, checkSecrets(secrets))
    return typeof result === 'string' ? undefined : result
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

  /**
   * This token without the positions on `shard` that `bound` does not reach (a later
   * sequence, or a replication domain `bound` lacks): what is left once positions the
   * primary never wrote are dropped. Returns this token when nothing is dropped.
   */
  dropAhead(shard: string, bound: CausalToken): CausalToken {
    const mine = this.#shards.get(shard)
    if (mine === undefined) return this
    const limit = bound.#shards.get(shard)
    const kept = new Map<number, Gtid>()
    for (const [domain, gtid] of mine) {
      const reach = limit?.get(domain)
      if (reach !== undefined && gtid.seq <= reach.seq) kept.set(domain, gtid)
    }
    if (kept.size === mine.size) return this
    const shards = new Map(this.#shards)
    if (kept.size === 0) shards.delete(shard)
    else shards.set(shard, kept)
    return shards.size === 0 ? CausalToken.empty : new CausalToken(shards)
  }

  /** How many positions (replication domains) the token demands on `shard`. */
  positionCount(shard: string): number {
    return this.#shards.get(shard)?.size ?? 0
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

  /**
   * The unsigned text form, read back by {@link CausalToken.parse}: for server-side storage
   * only. A token sent to a client goes signed ({@link CausalToken.sign}).
   */
  toString(): string {
    return [...this.#shards.keys()]
      .sort()
      .map(
        (shard) => `${shard}:${gtidListString(this.#shards.get(shard) as Map<number, Gtid>, '+')}`,
      )
      .join('.')
  }

  /**
   * The signed, cookie-safe text form (`<token>~<HMAC-SHA256>`), read back by
   * {@link CausalToken.verify}: a client cannot forge or alter it. Signs with the first of
   * `secrets`. Use it (or {@link ShardRouter.signCausalToken}) for any token that leaves the
   * server.
   * @throws InvalidArgumentError if `secrets` is not one or more strings of at least 32 characters.
   */
  sign(secrets: string | readonly string[]): string {
    return signToken(this, checkSecrets(secrets)[0]!)
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
