import {
  durationHistogram,
  type Emitter,
  errorType,
  failSpan,
  inSpan,
  type TelemetryOptions,
  telemetry,
} from '@ballast/shared'
import {
  type Attributes,
  type Histogram,
  type Span,
  SpanKind,
  type SpanOptions,
  type Tracer,
} from '@opentelemetry/api'
import {
  InvalidArgumentError,
  SessionClosedError,
  SessionNotFoundError,
  SessionNotLoggedInError,
  SessionUnavailableError,
} from '../errors.js'
import type { SessionEvents, SuspicionReason } from '../sessionStore.js'
import type { FieldCipher } from './cipher.js'
import type { CookieSpec } from './cookies.js'
import { isIdShape, newId } from './ids.js'
import {
  batchWrites,
  CREATE,
  DESTROY,
  INDEX_ADD,
  INDEX_LIST,
  INFO,
  LOAD,
  type LuaScript,
  type RedisClient,
  SAVE,
  TAKE,
} from './scripts.js'
import {
  DURATION,
  LOAD_SPAN,
  OUTCOME,
  observeCounters,
  redisAttributes,
  SCOPE,
  SUSPICION_REASONS,
} from './sessionTelemetry.js'
import type { Signer } from './signer.js'

/** Settings the engine runs with, already validated and resolved. */
export interface EngineConfig {
  client: RedisClient
  prefix: string
  idleMs: number
  absoluteMs: number
  ticketTtlMs: number
  timeoutMs: number
  maxSessionsPerUser: number
  ticketOrigins: Set<string>
  saveUninitialized: boolean
  bearer: boolean
  cookie: CookieSpec
  signer: Signer
  cipher: FieldCipher | undefined
  telemetry: TelemetryOptions
}

/** A session as stored, decoded. */
export interface Stored {
  id: string
  data: Record<string, unknown>
  /** JSON of each data field as last read or written: the base that deltas are computed on. */
  originals: Map<string, string>
  userId: string | undefined
  loginId: string | undefined
  csrf: string | undefined
  createdAt: number
  expiresAt: number
  absoluteExpiresAt: number
}

/** Changed fields of one session. */
export interface Delta {
  set: Map<string, string>
  unset: string[]
  csrf?: string
}

/** Counters behind `stats()`. */
export interface Counters {
  loads: number
  hits: number
  misses: number
  loadsFailed: number
  created: number
  saves: number
  unchanged: number
  savesRefused: number
  regenerated: number
  destroyed: number
  destroyedByReason: Record<DestroyReason, number>
  suspicionsRaised: number
  suspicionsByReason: Record<SuspicionReason, number>
  redisCalls: number
  redisCallsFailed: number
  ticketsIssued: number
  ticketsRedeemed: number
  ticketsRejected: number
}

export type DestroyReason = 'logout' | 'logout-everywhere' | 'linked' | 'evicted' | 'replaced'

/** Metadata of one live session of a user. */
export interface Info {
  id: string
  idHash: string
  userId: string
  loginId: string | undefined
  createdAt: number
  lastSeenAt: number
  expiresAt: number
  absoluteExpiresAt: number
}

/** A ticket as stored in Redis (short keys: the stored format). */
interface Ticket {
  /** Id of the issuing session. */
  s: string
  /** User id. */
  u: string
  /** Login id. */
  l: string
  /** Origin it was issued for. */
  o: string
  /** Carried data fields, as JSON. */
  d: Record<string, string>
}

const DATA = 'd:'

const INTERNAL: SpanOptions = { kind: SpanKind.INTERNAL }

/** Everything that talks to Redis. Public classes wrap it; it is not exported. */
export class Engine {
  readonly config: EngineConfig
  readonly counters: Counters = {
    loads: 0,
    hits: 0,
    misses: 0,
    loadsFailed: 0,
    created: 0,
    saves: 0,
    unchanged: 0,
    savesRefused: 0,
    regenerated: 0,
    destroyed: 0,
    destroyedByReason: {
      logout: 0,
      'logout-everywhere': 0,
      linked: 0,
      evicted: 0,
      replaced: 0,
    },
    suspicionsRaised: 0,
    suspicionsByReason: Object.fromEntries(SUSPICION_REASONS.map((r) => [r, 0])) as Record<
      SuspicionReason,
      number
    >,
    redisCalls: 0,
    redisCallsFailed: 0,
    ticketsIssued: 0,
    ticketsRedeemed: 0,
    ticketsRejected: 0,
  }
  /** The store's events: emit only after `has(event)`, so nobody listening costs no payload. */
  readonly events: Emitter<SessionEvents>
  #closed = false
  readonly #tracer: Tracer
  /** `db.client.operation.duration`: every Redis round trip, in seconds. */
  readonly #duration: Histogram
  /** `db.system.name` and the server: what every round trip's attributes start from. */
  readonly #redis: Attributes
  /** Attributes of each kind of round trip, by `db.query.summary`, built once. */
  readonly #attributes = new Map<string, Attributes>()
  readonly #unobserve: () => void

  constructor(config: EngineConfig, events: Emitter<SessionEvents>) {
    this.config = config
    this.events = events
    const { meter, tracer } = telemetry(SCOPE, config.telemetry)
    this.#tracer = tracer
    this.#duration = durationHistogram(
      meter,
      DURATION,
      'Duration of the Redis round trips of the session store',
    )
    this.#redis = redisAttributes(config.client)
    this.#unobserve = observeCounters(meter, this.counters)
  }

  // ---- keys: every key of one session shares the tag {id}; of one user, {u:userId} ----

  sessionKey(id: string): string {
    return `${this.config.prefix}{${id}}`
  }

  userKey(userId: string): string {
    return `${this.config.prefix}{u:${userId}}`
  }

  ticketKey(ticket: string): string {
    return `${this.config.prefix}{t:${ticket}}`
  }

  // ---- events ----

  hash(id: string): string {
    return this.config.signer.hash(id)
  }

  raiseSuspicion(reason: SuspicionReason, id: string | undefined, ip: string | undefined): void {
    this.counters.suspicionsRaised++
    this.counters.suspicionsByReason[reason]++
    if (this.events.has('suspicion-raised')) {
      this.events.emit('suspicion-raised', {
        reason,
        idHash: id === undefined ? undefined : this.hash(id),
        ip,
      })
    }
  }

  // ---- Redis calls: each one round trip, bounded by the timeout ----

  /** Throws {@link SessionClosedError} naming `operation` once the store is closed. */
  assertOpen(operation: string): void {
    if (this.#closed) throw new SessionClosedError('session store', operation)
  }

  async run(script: LuaScript, key: string, args: (string | number)[]): Promise<unknown> {
    return this.#roundTrip('EVALSHA', script.name, (client) => script.run(client, [key], args))
  }

  /** One plain Redis command (`operation` is its name, for telemetry). */
  async command<R>(
    operation: 'SET' | 'GETDEL' | 'ZREM',
    fn: (client: RedisClient) => Promise<R>,
  ): Promise<R> {
    return this.#roundTrip(operation, undefined, fn)
  }

  /**
   * One round trip: bounded by the timeout, timed into `db.client.operation.duration` and
   * traced as a CLIENT span (child of the active span). Its attributes name the command and
   * the script, never a key or an argument: keys carry session and user ids.
   */
  async #roundTrip<R>(
    operation: string,
    script: string | undefined,
    fn: (client: RedisClient) => Promise<R>,
  ): Promise<R> {
    // Public operations check first, with their own name; this catches a call in flight at close().
    this.assertOpen('command')
    this.counters.redisCalls++
    const summary = script === undefined ? operation : `${operation} ${script}`
    let attributes = this.#attributes.get(summary)
    if (attributes === undefined) {
      attributes = {
        ...this.#redis,
        'db.operation.name': operation,
        'db.query.summary': summary,
      }
      this.#attributes.set(summary, attributes)
    }
    const span = this.#tracer.startSpan(summary, { kind: SpanKind.CLIENT, attributes })
    const started = performance.now()
    try {
      batchWrites(this.config.client)
      const result = await this.#bounded(fn(this.config.client))
      this.#duration.record((performance.now() - started) / 1000, attributes)
      return result
    } catch (error) {
      this.#duration.record((performance.now() - started) / 1000, {
        ...attributes,
        'error.type': errorType(error),
      })
      failSpan(span, error)
      throw error
    } finally {
      span.end()
    }
  }

  /** Runs `fn` in an INTERNAL span of the package (`ballast.session.load`, `.save`). */
  inSpan<R>(name: string, fn: (span: Span) => Promise<R>): Promise<R> {
    return inSpan(this.#tracer, name, INTERNAL, fn)
  }

  async #bounded<R>(call: Promise<R>): Promise<R> {
    const ms = this.config.timeoutMs
    let timer: NodeJS.Timeout | undefined
    try {
      if (ms === 0) return await call
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new SessionUnavailableError(`Redis did not answer within ${ms} ms`)),
          ms,
        )
      })
      return await Promise.race([call, late])
    } catch (error) {
      this.counters.redisCallsFailed++
      if (error instanceof SessionUnavailableError) throw error
      throw new SessionUnavailableError(
        `Redis refused or failed the command: ${error instanceof Error ? error.message : String(error)}`,
        { cause: error },
      )
    } finally {
      if (timer !== undefined) clearTimeout(timer)
    }
  }

  close(): void {
    if (this.#closed) return
    this.#closed = true
    this.#unobserve()
  }

  // ---- encoding ----

  encode(id: string, key: string, json: string): string {
    const cipher = this.config.cipher
    return cipher === undefined ? json : cipher.encrypt(json, id, DATA + key)
  }

  #decodeField(id: string, field: string, stored: string): string | undefined {
    const cipher = this.config.cipher
    return cipher === undefined ? stored : cipher.decrypt(stored, id, field)
  }

  #decode(id: string, flat: string[], expiresAt: number): Stored {
    const data: Record<string, unknown> = {}
    const originals = new Map<string, string>()
    const out: Stored = {
      id,
      data,
      originals,
      userId: undefined,
      loginId: undefined,
      csrf: undefined,
      createdAt: 0,
      expiresAt,
      absoluteExpiresAt: 0,
    }
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const field = flat[i]!
      const value = flat[i + 1]!
      if (field.startsWith(DATA)) {
        const json = this.#decodeField(id, field, value)
        if (json === undefined) continue // a rotated-out key: the field is lost, not the session
        try {
          data[field.slice(DATA.length)] = JSON.parse(json)
          originals.set(field.slice(DATA.length), json)
        } catch {
          // not JSON: skip the field rather than fail the request
        }
        continue
      }
      switch (field) {
        case '_c':
          out.createdAt = Number(value)
          break
        case '_a':
          out.absoluteExpiresAt = Number(value)
          break
        case '_u':
          out.userId = value
          break
        case '_l':
          out.loginId = value
          break
        case '_x':
          out.csrf = this.#decodeField(id, field, value)
          break
      }
    }
    return out
  }

  /** Field/value pairs of a whole session's data, JSON and (when enabled) encrypted. */
  #pairs(id: string, data: Record<string, unknown>, originals: Map<string, string>): string[] {
    const pairs: string[] = []
    for (const key of Object.keys(data)) {
      const value = data[key]
      if (value === undefined) continue
      const json = JSON.stringify(value)
      originals.set(key, json)
      pairs.push(DATA + key, this.encode(id, key, json))
    }
    return pairs
  }

  // ---- operations ----

  /** Read and slide. `undefined` when the id is malformed or names no live session. */
  async load(id: string): Promise<Stored | undefined> {
    if (!isIdShape(id)) return undefined
    this.counters.loads++
    return this.inSpan(LOAD_SPAN, async (span) => {
      let reply: string[] | null
      try {
        reply = (await this.run(LOAD, this.sessionKey(id), [this.config.idleMs])) as string[] | null
      } catch (error) {
        this.counters.loadsFailed++
        throw error
      }
      if (reply === null) {
        this.counters.misses++
        span.setAttribute(OUTCOME, 'expired')
        return undefined
      }
      this.counters.hits++
      span.setAttribute(OUTCOME, 'found')
      const expiresAt = Number(reply[reply.length - 1])
      return this.#decode(id, reply.slice(0, -1), expiresAt)
    })
  }

  /** Persist a new session under a fresh id (retrying on the impossible collision). */
  async create(init: {
    data: Record<string, unknown>
    userId?: string | undefined
    loginId?: string | undefined
    csrf?: string | undefined
    id?: string | undefined
    replaces?: string | undefined
    /** Keep this absolute deadline (a regenerate that is not a login) instead of a new one. */
    keepAbsolute?: number | undefined
  }): Promise<Stored> {
    let id = init.id ?? newId()
    for (let attempt = 0; ; attempt++) {
      const originals = new Map<string, string>()
      const args: (string | number)[] = [
        this.config.idleMs,
        this.config.absoluteMs,
        init.keepAbsolute ?? 0,
      ]
      const loginId = init.userId === undefined ? undefined : (init.loginId ?? newId())
      if (init.userId !== undefined) args.push('_u', init.userId, '_l', loginId!)
      if (init.csrf !== undefined) args.push('_x', this.#encodeMeta(id, '_x', init.csrf))
      args.push(...this.#pairs(id, init.data, originals))
      const reply = (await this.run(CREATE, this.sessionKey(id), args)) as string[] | null
      if (reply === null) {
        if (attempt >= 2) throw new SessionUnavailableError('could not allocate a session id')
        id = newId()
        continue
      }
      const [created, absolute, expiry, micros] = reply.map(Number) as [
        number,
        number,
        number,
        number,
      ]
      if (expiry === 0) throw new SessionNotFoundError('the session reached its absolute timeout')
      this.counters.created++
      const stored: Stored = {
        id,
        data: init.data,
        originals,
        userId: init.userId,
        loginId,
        csrf: init.csrf,
        createdAt: created,
        expiresAt: expiry,
        absoluteExpiresAt: absolute,
      }
      if (init.userId !== undefined) {
        // Sub-millisecond part of the score: "oldest" stays exact for logins in the same ms.
        const score = absolute + (micros % 1000) / 1000
        await this.#index(init.userId, id, score, init.replaces)
      }
      if (this.events.has('created')) {
        this.events.emit('created', { idHash: this.hash(id), userId: init.userId })
      }
      return stored
    }
  }

  #encodeMeta(id: string, field: string, value: string): string {
    const cipher = this.config.cipher
    return cipher === undefined ? value : cipher.encrypt(value, id, field)
  }

  /** Apply a delta if the session is still alive. Returns the new expiry or `undefined`. */
  async save(id: string, delta: Delta): Promise<number | undefined> {
    const args: (string | number)[] = [this.config.idleMs, 0]
    let pairs = 0
    for (const [key, json] of delta.set) {
      args.push(DATA + key, this.encode(id, key, json))
      pairs++
    }
    if (delta.csrf !== undefined) {
      args.push('_x', this.#encodeMeta(id, '_x', delta.csrf))
      pairs++
    }
    args[1] = pairs
    for (const key of delta.unset) args.push(DATA + key)
    const expiry = Number(await this.run(SAVE, this.sessionKey(id), args))
    this.counters.saves++
    if (expiry === 0) {
      this.counters.savesRefused++
      return undefined
    }
    return expiry
  }

  /**
   * New id, same data (plus `delta`), old id deleted in the same script that read it. Logging
   * in (a new `userId`) starts a new login; otherwise user and login carry over.
   */
  async regenerate(
    oldId: string,
    options: {
      userId?: string | undefined
      delta?: Delta | undefined
      fallback?: Stored | undefined
    },
  ): Promise<Stored> {
    const reply = isIdShape(oldId)
      ? ((await this.run(TAKE, this.sessionKey(oldId), [])) as string[] | null)
      : null
    let base: Stored
    if (reply === null) {
      if (options.fallback === undefined) throw new SessionNotFoundError()
      base = options.fallback
    } else {
      base = this.#decode(oldId, reply, 0)
    }
    const data = { ...base.data }
    if (options.delta !== undefined) {
      for (const [key, json] of options.delta.set) data[key] = JSON.parse(json)
      for (const key of options.delta.unset) delete data[key]
    }
    const newLogin = options.userId !== undefined && options.userId !== base.userId
    const userId = options.userId ?? base.userId
    const stored = await this.create({
      data,
      userId,
      loginId: newLogin ? undefined : base.loginId,
      csrf: newLogin ? undefined : (options.delta?.csrf ?? base.csrf),
      replaces: newLogin ? undefined : oldId,
      // Only a login starts a new absolute lifetime; a privilege change keeps the old one.
      keepAbsolute: newLogin || reply === null ? undefined : base.absoluteExpiresAt,
    })
    if (reply !== null && base.userId !== undefined && newLogin) {
      // The old id belonged to another user's index: drop it there.
      await this.command('ZREM', (c) => c.zrem(this.userKey(base.userId!), oldId))
    }
    this.counters.regenerated++
    if (this.events.has('regenerated')) {
      this.events.emit('regenerated', {
        previousIdHash: this.hash(oldId),
        idHash: this.hash(stored.id),
        userId,
      })
    }
    return stored
  }

  async #index(userId: string, id: string, score: number, replaces: string | undefined) {
    const count = Number(
      await this.run(INDEX_ADD, this.userKey(userId), [id, score.toFixed(3), replaces ?? '']),
    )
    const max = this.config.maxSessionsPerUser
    if (max > 0 && count > max) {
      const live = (await this.list(userId)).filter((s) => s.id !== id)
      const over = live.length + 1 - max
      for (let i = 0; i < over; i++) await this.destroy(live[i]!.id, 'evicted')
    }
  }

  /** Delete one session. Returns whether it existed. */
  async destroy(id: string, reason: DestroyReason, linked = false): Promise<boolean> {
    if (!isIdShape(id)) return false
    const [deleted, userId, loginId] = (await this.run(DESTROY, this.sessionKey(id), [])) as [
      number,
      string,
      string,
    ]
    if (userId !== '') {
      await this.command('ZREM', (c) => c.zrem(this.userKey(userId), id))
    }
    if (deleted > 0) {
      this.counters.destroyed++
      this.counters.destroyedByReason[reason]++
      if (this.events.has('destroyed')) {
        this.events.emit('destroyed', {
          idHash: this.hash(id),
          userId: userId === '' ? undefined : userId,
          reason,
        })
      }
    }
    if (linked && userId !== '' && loginId !== '') {
      for (const other of await this.list(userId)) {
        if (other.loginId === loginId) await this.destroy(other.id, 'linked')
      }
    }
    return deleted > 0
  }

  /** Live sessions of a user, oldest first; dead index entries are pruned on the way. */
  async list(userId: string): Promise<Info[]> {
    const flat = (await this.run(INDEX_LIST, this.userKey(userId), [])) as string[]
    const ids: string[] = []
    for (let i = 0; i < flat.length; i += 2) ids.push(flat[i]!)
    const infos = await Promise.all(
      ids.map(async (id) => {
        const meta = (await this.run(INFO, this.sessionKey(id), [])) as
          | [string, string, string, string, number]
          | null
        return meta === null || meta[2] !== userId ? { id, info: undefined } : { id, info: meta }
      }),
    )
    const dead = infos.filter((x) => x.info === undefined).map((x) => x.id)
    if (dead.length > 0) await this.command('ZREM', (c) => c.zrem(this.userKey(userId), ...dead))
    const out: Info[] = []
    for (const { id, info } of infos) {
      if (info === undefined) continue
      const [created, absolute, , loginId, pttl] = info
      const expiresAt = Date.now() + Number(pttl)
      out.push({
        id,
        idHash: this.hash(id),
        userId,
        loginId: loginId === '' ? undefined : loginId,
        createdAt: Number(created),
        // Each request sets expiry to last request + idle timeout, so the expiry tells when
        // the last request was, without a write per request to record it.
        lastSeenAt: Math.max(Number(created), expiresAt - this.config.idleMs),
        expiresAt,
        absoluteExpiresAt: Number(absolute),
      })
    }
    return out // index order: by login time, oldest first
  }

  async destroyAll(userId: string, except: string | undefined): Promise<number> {
    const flat = (await this.run(INDEX_LIST, this.userKey(userId), [])) as string[]
    let destroyed = 0
    for (let i = 0; i < flat.length; i += 2) {
      const id = flat[i]!
      if (id === except) continue
      if (await this.destroy(id, 'logout-everywhere')) destroyed++
    }
    return destroyed
  }

  // ---- SSO tickets ----

  async issueTicket(id: string, targetOrigin: string, carry: readonly string[]): Promise<string> {
    const origin = normalizeOrigin(targetOrigin)
    if (origin === undefined || !this.config.ticketOrigins.has(origin)) {
      throw new InvalidArgumentError(
        `invalid argument "targetOrigin": expected one of the "ticketOrigins" option, got ${JSON.stringify(targetOrigin)}`,
      )
    }
    const stored = await this.load(id)
    if (stored === undefined) throw new SessionNotFoundError()
    if (stored.userId === undefined || stored.loginId === undefined) {
      throw new SessionNotLoggedInError()
    }
    const carried: Record<string, string> = {}
    for (const key of carry) {
      const json = stored.originals.get(key)
      if (json !== undefined) carried[key] = json
    }
    const ticket = newId()
    const body: Ticket = { s: id, u: stored.userId, l: stored.loginId, o: origin, d: carried }
    const payload = this.#encodeMeta(ticket, '_ticket', JSON.stringify(body))
    await this.command('SET', (c) =>
      c.set(this.ticketKey(ticket), payload, 'PX', this.config.ticketTtlMs),
    )
    this.counters.ticketsIssued++
    return ticket
  }

  /** Redeem once (GETDEL) for `origin`; a new session of the same login, or `undefined`. */
  async redeemTicket(ticket: string, origin: string, ip?: string): Promise<Stored | undefined> {
    const reject = (reason: SuspicionReason) => {
      this.counters.ticketsRejected++
      this.raiseSuspicion(reason, undefined, ip)
      return undefined
    }
    if (typeof ticket !== 'string' || !isIdShape(ticket)) return reject('ticket-malformed')
    const raw = await this.command('GETDEL', (c) => c.getdel(this.ticketKey(ticket)))
    if (raw === null) return reject('ticket-unknown')
    const cipher = this.config.cipher
    const json = cipher === undefined ? raw : cipher.decrypt(raw, ticket, '_ticket')
    let body: Ticket
    try {
      body = JSON.parse(json ?? '') as Ticket
    } catch {
      return reject('ticket-unreadable')
    }
    if (normalizeOrigin(origin) !== body.o) return reject('ticket-origin-mismatch')
    // The issuing session must still be alive: a logout after issuing voids the ticket.
    const source = (await this.run(INFO, this.sessionKey(body.s), [])) as string[] | null
    if (source === null || source[2] !== body.u || source[3] !== body.l) {
      return reject('ticket-login-ended')
    }
    const data: Record<string, unknown> = {}
    for (const [key, value] of Object.entries(body.d)) data[key] = JSON.parse(value)
    const stored = await this.create({ data, userId: body.u, loginId: body.l })
    this.counters.ticketsRedeemed++
    return stored
  }
}

/** `scheme://host[:port]` of a URL or origin string, or `undefined` when it is not one. */
export function normalizeOrigin(value: string): string | undefined {
  try {
    const origin = new URL(value).origin
    return origin === 'null' ? undefined : origin
  } catch {
    return undefined
  }
}
