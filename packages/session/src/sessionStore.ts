import { EventEmitter } from 'node:events'
import type { Cluster, Redis } from 'ioredis'
import { InvalidArgumentError } from './errors.js'
import { FieldCipher } from './internal/cipher.js'
import { type CookieSpec, readCookie } from './internal/cookies.js'
import { type Duration, parseDuration } from './internal/duration.js'
import { Engine, normalizeOrigin, type Stored } from './internal/engine.js'
import { Signer } from './internal/signer.js'
import { RequestSession } from './requestSession.js'

/** Attributes of the session cookie. Defaults follow the OWASP session management cheat sheet. */
export interface SessionCookieOptions {
  /**
   * Cookie name before its prefix. With `secure` and `prefix`, `__Host-` is prepended when no
   * `domain` is set (and `path` is `/`), `__Secure-` otherwise.
   * @default 'sid'
   */
  name?: string
  /**
   * Parent domain for subdomain single sign-on (e.g. `'shop.example'`): every subdomain then
   * shares the session. Leave unset for a host-only `__Host-` cookie.
   * @default undefined
   */
  domain?: string | undefined
  /** @default '/' */
  path?: string
  /**
   * `Secure` attribute. Turn off only for plain-HTTP development: prefixes need it.
   * @default true
   */
  secure?: boolean
  /** `HttpOnly` attribute: scripts cannot read the id. @default true */
  httpOnly?: boolean
  /** `SameSite` attribute. @default 'lax' */
  sameSite?: 'lax' | 'strict' | 'none'
  /**
   * Send `Max-Age` (the time left before the absolute timeout). Off: a browser-session cookie,
   * which OWASP prefers.
   * @default false
   */
  persistent?: boolean
  /** Prepend `__Host-` / `__Secure-` to the name when `secure` is on. @default true */
  prefix?: boolean
}

/** Options of {@link createSessionStore}. */
export interface SessionStoreOptions {
  /** Your ioredis client: a standalone `Redis` or a `Cluster`. The store never closes it. */
  redis: Redis | Cluster
  /**
   * Secrets that sign the cookie (HMAC-SHA256), each at least 32 characters. The first signs,
   * any verifies: rotate by putting a new secret first, and drop the old one after
   * `absoluteTimeout`.
   */
  secrets: string | readonly string[]
  /**
   * Time without a request after which a session ends. Slides on every request.
   * @default '15m'
   */
  idleTimeout?: Duration
  /**
   * Time after creation (or login) after which a session ends however active it is. A
   * `regenerate` that is not a login keeps the deadline.
   * @default '12h'
   */
  absoluteTimeout?: Duration
  /** Prefix of every Redis key of this store. @default 'sess:' */
  prefix?: string
  /**
   * Most sessions one user may hold at once; logging in beyond it ends the oldest. `0`: no cap.
   * @default 0
   */
  maxSessionsPerUser?: number
  /** Origins (`https://other.example`) that SSO tickets may be issued for. @default [] */
  ticketOrigins?: readonly string[]
  /** Lifetime of an SSO ticket. @default '60s' */
  ticketTtl?: Duration
  /**
   * AES-256-GCM keys (32-byte `Buffer`s, or 64 hex / 43-44 base64 characters) to encrypt session
   * data at rest. The first encrypts, any decrypts. Empty: data is stored as JSON.
   * @default []
   */
  encryptionKeys?: readonly (string | Buffer)[]
  /** The session cookie. See {@link SessionCookieOptions}. @default {} */
  cookie?: SessionCookieOptions
  /**
   * Also accept the signed id from `Authorization: Bearer <token>` (for API clients). The
   * cookie wins when both are present.
   * @default false
   */
  bearer?: boolean
  /**
   * Store sessions nobody wrote to. Off: a visitor costs no Redis write until the app stores
   * something.
   * @default false
   */
  saveUninitialized?: boolean
  /**
   * Longest wait for one Redis call before it fails with `SessionUnavailableError`. `0`: wait
   * as long as the client does.
   * @default '2s'
   */
  timeout?: Duration | 0
}

/** Defaults of every optional {@link SessionStoreOptions} field. */
export const DEFAULT_SESSION_STORE_OPTIONS: {
  readonly [K in Exclude<keyof SessionStoreOptions, 'redis' | 'secrets'>]-?: Exclude<
    SessionStoreOptions[K],
    undefined
  >
} = {
  idleTimeout: '15m',
  absoluteTimeout: '12h',
  prefix: 'sess:',
  maxSessionsPerUser: 0,
  ticketOrigins: [],
  ticketTtl: '60s',
  encryptionKeys: [],
  cookie: {},
  bearer: false,
  saveUninitialized: false,
  timeout: '2s',
}

/** Defaults of the {@link SessionCookieOptions} fields (`domain` is unset by default). */
export const DEFAULT_SESSION_COOKIE_OPTIONS: {
  readonly [K in Exclude<keyof SessionCookieOptions, 'domain'>]-?: Exclude<
    SessionCookieOptions[K],
    undefined
  >
} = {
  name: 'sid',
  path: '/',
  secure: true,
  httpOnly: true,
  sameSite: 'lax',
  persistent: false,
  prefix: true,
}

/** Data of a session: any JSON-serialisable values by top-level key. */
export type SessionData = Record<string, unknown>

/** A session as the store returns it. */
export interface SessionRecord<T extends SessionData = SessionData> {
  /** The raw id. Keep it on the server: logs and events get {@link SessionRecord.idHash}. */
  id: string
  /** A keyed hash of the id, safe to log. */
  idHash: string
  /** The signed id, as it goes in the cookie or a bearer header. */
  token: string
  /** The session data. */
  data: Partial<T>
  /** The logged-in user, if any. */
  userId: string | undefined
  /** Shared by every session of one login, including sessions opened by SSO tickets. */
  loginId: string | undefined
  /** Creation (or last login) time, ms since epoch, by the Redis clock. */
  createdAt: number
  /** When the session ends unless a request slides it, ms since epoch. */
  expiresAt: number
  /** When the session ends whatever happens, ms since epoch. */
  absoluteExpiresAt: number
}

/** One live session in a user's list. */
export interface SessionInfo {
  /** The raw id (server side only); pass it to {@link SessionStore.destroy}. */
  id: string
  /** A keyed hash of the id, safe to log or show. */
  idHash: string
  /** The user it belongs to. */
  userId: string
  /** The login it belongs to. */
  loginId: string | undefined
  /** Creation (or login) time, ms since epoch. */
  createdAt: number
  /** Last request, ms since epoch. */
  lastSeenAt: number
  /** When it ends unless used, ms since epoch. */
  expiresAt: number
  /** When it ends whatever happens, ms since epoch. */
  absoluteExpiresAt: number
}

/** Fields to change in {@link SessionStore.save}. */
export interface SessionChanges<T extends SessionData = SessionData> {
  /** Fields to set (top-level keys; each replaces the stored value). */
  set?: Partial<T>
  /** Fields to remove. */
  unset?: readonly (keyof T & string)[]
}

/** Counters of a store since it was created. */
export interface SessionStats {
  /** Sessions looked up in Redis. */
  loads: number
  /** Lookups that found a live session. */
  hits: number
  /** Lookups of a well-signed id that found nothing (expired or destroyed). */
  misses: number
  /** Sessions written for the first time. */
  created: number
  /** Delta writes. */
  saves: number
  /** Requests that ended with nothing to write. */
  unchanged: number
  /** Writes refused because the session had ended meanwhile (it was not brought back). */
  lostWrites: number
  /** Ids renewed. */
  regenerated: number
  /** Sessions deleted (logout, eviction, logout everywhere). */
  destroyed: number
  /** `suspicious` events: forged, malformed, unknown or expired ids, bad tickets. */
  suspicious: number
  /** Redis calls that failed or timed out. */
  unavailable: number
  /** Redis round trips made. */
  redisCalls: number
  /** SSO tickets issued. */
  ticketsIssued: number
  /** SSO tickets redeemed. */
  ticketsRedeemed: number
  /** SSO tickets refused. */
  ticketsRejected: number
}

/** Payload of the `created` event. */
export interface SessionCreatedEvent {
  /** Keyed hash of the new id. */
  idHash: string
  /** The user, if it was created logged in. */
  userId: string | undefined
}

/** Payload of the `regenerated` event. */
export interface SessionRegeneratedEvent {
  /** Keyed hash of the id that died. */
  previousIdHash: string
  /** Keyed hash of the new id. */
  idHash: string
  /** The user after regeneration. */
  userId: string | undefined
}

/** Payload of the `destroyed` event. */
export interface SessionDestroyedEvent {
  /** Keyed hash of the id. */
  idHash: string
  /** The user it belonged to. */
  userId: string | undefined
  /** Why it ended. */
  reason: 'logout' | 'logout-everywhere' | 'linked' | 'evicted' | 'replaced'
}

/** Payload of the `expired` event: a well-signed id whose session no longer exists. */
export interface SessionExpiredEvent {
  /** Keyed hash of the id. */
  idHash: string
}

/** Payload of the `suspicious` event. Never carries a raw id. */
export interface SessionSuspiciousEvent {
  /**
   * `malformed` (wrong shape or size), `bad-signature` (forged or signed by a retired
   * secret), `unknown` (well signed but no such session), or a `ticket-*` refusal.
   */
  reason: string
  /** Keyed hash of the id, when there was a well-formed one. */
  idHash: string | undefined
  /** Remote address of the request, when known. */
  ip: string | undefined
}

/** Events of a {@link SessionStore}, by name. */
export interface SessionEvents {
  /** A session was written for the first time. */
  created: [SessionCreatedEvent]
  /** A session got a new id. */
  regenerated: [SessionRegeneratedEvent]
  /** A session was deleted. */
  destroyed: [SessionDestroyedEvent]
  /** A request carried the id of a session that had expired. */
  expired: [SessionExpiredEvent]
  /** A request carried a forged, malformed or unknown id, or a bad ticket. */
  suspicious: [SessionSuspiciousEvent]
}

/** What {@link SessionStore.loadRequest} needs from a request. */
export interface RequestHeaders {
  /** The `Cookie` header. */
  cookie?: string | undefined
  /** The `Authorization` header (read only with the `bearer` option). */
  authorization?: string | undefined
  /** Remote address, for `suspicious` events. */
  ip?: string | undefined
}

/**
 * Sessions in Redis (standalone or Cluster) shared by every instance of every subsystem. Build
 * it with {@link createSessionStore}; mount it with `@ballast/session/express`, `/fastify` or
 * `/http`, or use its methods directly.
 */
export class SessionStore<T extends SessionData = SessionData> extends EventEmitter<SessionEvents> {
  readonly #engine: Engine

  /** Use {@link createSessionStore}. */
  constructor(options: SessionStoreOptions) {
    super()
    this.#engine = new Engine(resolve(options), this)
  }

  /** The resolved cookie name (with its `__Host-` / `__Secure-` prefix). */
  get cookieName(): string {
    return this.#engine.config.cookie.name
  }

  /**
   * Read a request's session: the id comes from the cookie (or a bearer header when enabled)
   * and is checked for shape and signature before any Redis call. A missing, forged, expired
   * or unknown id gives a fresh, unsaved session. Adapters call this; so can you.
   * @example
   * ```ts
   * const session = await store.loadRequest({ cookie: req.headers.cookie })
   * session.data.views = ((session.data.views as number) ?? 0) + 1
   * const setCookie = await session.commit()
   * ```
   */
  async loadRequest(headers: RequestHeaders): Promise<RequestSession<T>> {
    this.#engine.assertOpen('loadRequest')
    const engine = this.#engine
    const config = engine.config
    let value = readCookie(headers.cookie, config.cookie.name)
    if (value === undefined && config.bearer) {
      const auth = headers.authorization
      if (auth !== undefined && auth.length > 7 && auth.slice(0, 7).toLowerCase() === 'bearer ') {
        value = auth.slice(7).trim()
      }
    }
    if (value === undefined) return new RequestSession<T>(engine, undefined, headers.ip)
    const verdict = config.signer.unsign(value)
    if ('refused' in verdict) {
      engine.suspicious(verdict.refused, undefined, headers.ip)
      return new RequestSession<T>(engine, undefined, headers.ip)
    }
    const stored = await engine.load(verdict.id)
    if (stored === undefined) {
      engine.emit('expired', { idHash: engine.hash(verdict.id) })
      engine.suspicious('unknown', verdict.id, headers.ip)
      return new RequestSession<T>(engine, undefined, headers.ip)
    }
    return new RequestSession<T>(engine, stored, headers.ip)
  }

  /**
   * Create and store a session now.
   * @example
   * ```ts
   * const session = await store.create({ data: { cart: [] }, userId: 'u42' })
   * res.setHeader('authorization', `Bearer ${session.token}`)
   * ```
   */
  async create(init: { data?: Partial<T>; userId?: string } = {}): Promise<SessionRecord<T>> {
    this.#engine.assertOpen('create')
    const stored = await this.#engine.create({ data: { ...init.data }, userId: init.userId })
    return this.#record(stored)
  }

  /** Read a session by raw id and slide its idle deadline, in one round trip. */
  async load(id: string): Promise<SessionRecord<T> | undefined> {
    this.#engine.assertOpen('load')
    const stored = await this.#engine.load(id)
    return stored === undefined ? undefined : this.#record(stored)
  }

  /**
   * Write changed fields only, and only if the session still exists: returns `false` when it
   * had ended (a request in flight never brings a logged-out session back).
   */
  async save(id: string, changes: SessionChanges<T>): Promise<boolean> {
    this.#engine.assertOpen('save')
    const set = new Map<string, string>()
    const unset: string[] = [...(changes.unset ?? [])]
    for (const [key, value] of Object.entries(changes.set ?? {})) {
      if (value === undefined) unset.push(key)
      else set.set(key, JSON.stringify(value))
    }
    return (await this.#engine.save(id, { set, unset })) !== undefined
  }

  /**
   * Give a session a new id, keeping its data; the old id dies at once. Pass `userId` at login:
   * it starts a new login (and a new absolute lifetime) and adds the session to the user's
   * index. Without a new `userId` the absolute deadline is kept.
   */
  async regenerate(id: string, options: { userId?: string } = {}): Promise<SessionRecord<T>> {
    this.#engine.assertOpen('regenerate')
    return this.#record(await this.#engine.regenerate(id, { userId: options.userId }))
  }

  /**
   * Delete a session. With `linked`, also every session of the same login (those opened with
   * its SSO tickets). Returns whether it existed.
   */
  async destroy(id: string, options: { linked?: boolean } = {}): Promise<boolean> {
    this.#engine.assertOpen('destroy')
    return this.#engine.destroy(id, 'logout', options.linked === true)
  }

  /** A user's live sessions, oldest first. Entries of ended sessions are pruned as it goes. */
  async listForUser(userId: string): Promise<SessionInfo[]> {
    this.#engine.assertOpen('listForUser')
    return this.#engine.list(userId)
  }

  /** End every session of a user (log out everywhere), but `except` one. Returns how many. */
  async destroyAllForUser(userId: string, options: { except?: string } = {}): Promise<number> {
    this.#engine.assertOpen('destroyAllForUser')
    return this.#engine.destroyAll(userId, options.except)
  }

  /**
   * A one-time ticket (60 s by default) that lets `targetOrigin`, one of `ticketOrigins`, open a
   * session of the same login. `carry` names data fields copied into it.
   */
  async issueTicket(
    id: string,
    options: { targetOrigin: string; carry?: readonly (keyof T & string)[] },
  ): Promise<string> {
    this.#engine.assertOpen('issueTicket')
    const ticket = await this.#engine.issueTicket(id, options.targetOrigin, options.carry ?? [])
    return ticket
  }

  /**
   * Redeem a ticket once, at the origin it was issued for: a new session of the same login, or
   * `undefined` (unknown, used, expired, wrong origin, or the login has ended).
   */
  async redeemTicket(
    ticket: string,
    options: { origin: string },
  ): Promise<SessionRecord<T> | undefined> {
    this.#engine.assertOpen('redeemTicket')
    const stored = await this.#engine.redeemTicket(ticket, options.origin)
    return stored === undefined ? undefined : this.#record(stored)
  }

  /** Counters since creation. */
  stats(): SessionStats {
    return { ...this.#engine.counters }
  }

  /**
   * Stop accepting calls: afterwards every operation of the store and of its request sessions
   * rejects with {@link SessionClosedError} (never retryable). The Redis client is yours and
   * stays open; the store holds no timer or subscription of its own.
   */
  async close(): Promise<void> {
    this.#engine.close()
  }

  #record(stored: Stored): SessionRecord<T> {
    return {
      id: stored.id,
      idHash: this.#engine.hash(stored.id),
      token: this.#engine.config.signer.sign(stored.id),
      data: stored.data as Partial<T>,
      userId: stored.userId,
      loginId: stored.loginId,
      createdAt: stored.createdAt,
      expiresAt: stored.expiresAt,
      absoluteExpiresAt: stored.absoluteExpiresAt,
    }
  }
}

/**
 * Create a session store.
 * @example
 * ```ts
 * import { Redis } from 'ioredis'
 * import { createSessionStore } from '@ballast/session'
 *
 * const store = createSessionStore({
 *   redis: new Redis(),
 *   secrets: [process.env.SESSION_SECRET!],
 *   idleTimeout: '15m',
 *   absoluteTimeout: '12h',
 * })
 * ```
 */
export function createSessionStore<T extends SessionData = SessionData>(
  options: SessionStoreOptions,
): SessionStore<T> {
  return new SessionStore<T>(options)
}

function resolve(options: SessionStoreOptions) {
  if (options === null || typeof options !== 'object') {
    throw new InvalidArgumentError(`invalid options: expected an object, got ${String(options)}`)
  }
  const o = { ...DEFAULT_SESSION_STORE_OPTIONS, ...defined(options) }
  const client = o.redis
  if (client === null || typeof client !== 'object' || typeof client.evalsha !== 'function') {
    throw new InvalidArgumentError(
      'invalid option "redis": expected an ioredis Redis or Cluster client',
    )
  }
  const secrets = typeof o.secrets === 'string' ? [o.secrets] : [...(o.secrets ?? [])]
  if (secrets.length === 0 || secrets.some((s) => typeof s !== 'string' || s.length < 32)) {
    throw new InvalidArgumentError(
      'invalid option "secrets": expected one or more strings of at least 32 characters',
    )
  }
  const idleMs = parseDuration('idleTimeout', o.idleTimeout)
  const absoluteMs = parseDuration('absoluteTimeout', o.absoluteTimeout)
  if (idleMs > absoluteMs) {
    throw new InvalidArgumentError(
      `invalid option "idleTimeout": expected at most "absoluteTimeout" (${absoluteMs} ms), got ${idleMs} ms`,
    )
  }
  const timeoutMs = o.timeout === 0 ? 0 : parseDuration('timeout', o.timeout)
  if (typeof o.prefix !== 'string' || /[{}]/.test(o.prefix)) {
    throw new InvalidArgumentError(
      `invalid option "prefix": expected a string without braces, got ${JSON.stringify(o.prefix)}`,
    )
  }
  if (!Number.isInteger(o.maxSessionsPerUser) || o.maxSessionsPerUser < 0) {
    throw new InvalidArgumentError(
      `invalid option "maxSessionsPerUser": expected a non-negative integer, got ${String(o.maxSessionsPerUser)}`,
    )
  }
  const ticketOrigins = new Set<string>()
  for (const origin of o.ticketOrigins) {
    const normal = normalizeOrigin(origin)
    if (normal === undefined) {
      throw new InvalidArgumentError(
        `invalid option "ticketOrigins": expected origins like 'https://shop.example', got ${JSON.stringify(origin)}`,
      )
    }
    ticketOrigins.add(normal)
  }
  const keys = o.encryptionKeys.map((k) => toKey(k))
  return {
    client,
    prefix: o.prefix,
    idleMs,
    absoluteMs,
    ticketTtlMs: parseDuration('ticketTtl', o.ticketTtl),
    timeoutMs,
    maxSessionsPerUser: o.maxSessionsPerUser,
    ticketOrigins,
    saveUninitialized: o.saveUninitialized === true,
    bearer: o.bearer === true,
    cookie: resolveCookie(o.cookie),
    signer: new Signer(secrets),
    cipher: keys.length === 0 ? undefined : new FieldCipher(keys),
  }
}

/** `options` without the fields set to `undefined`, so they take their default. */
function defined<O extends object>(options: O): O {
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(options)) if (value !== undefined) out[key] = value
  return out as O
}

function toKey(key: string | Buffer): Buffer {
  let buf: Buffer | undefined
  if (Buffer.isBuffer(key)) buf = key
  else if (typeof key === 'string' && /^[0-9a-fA-F]{64}$/.test(key)) buf = Buffer.from(key, 'hex')
  else if (typeof key === 'string') buf = Buffer.from(key, 'base64')
  if (buf === undefined || buf.length !== 32) {
    throw new InvalidArgumentError(
      'invalid option "encryptionKeys": expected 32-byte keys (Buffer, 64 hex or base64 characters)',
    )
  }
  return buf
}

function resolveCookie(options: SessionCookieOptions): CookieSpec {
  const c: typeof DEFAULT_SESSION_COOKIE_OPTIONS & { domain?: string | undefined } = {
    ...DEFAULT_SESSION_COOKIE_OPTIONS,
    ...defined(options),
  }
  if (typeof c.name !== 'string' || !/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(c.name)) {
    throw new InvalidArgumentError(
      `invalid option "cookie.name": expected a cookie token, got ${JSON.stringify(c.name)}`,
    )
  }
  if (!['lax', 'strict', 'none'].includes(c.sameSite)) {
    throw new InvalidArgumentError(
      `invalid option "cookie.sameSite": expected 'lax', 'strict' or 'none', got ${JSON.stringify(c.sameSite)}`,
    )
  }
  if (c.sameSite === 'none' && !c.secure) {
    throw new InvalidArgumentError(
      'invalid option "cookie.sameSite": \'none\' needs "cookie.secure" (browsers refuse it otherwise)',
    )
  }
  let name = c.name
  if (c.secure && c.prefix) {
    name = (c.domain === undefined && c.path === '/' ? '__Host-' : '__Secure-') + name
  }
  return {
    name,
    domain: c.domain,
    path: c.path,
    secure: c.secure,
    httpOnly: c.httpOnly,
    sameSite: c.sameSite,
    persistent: c.persistent,
  }
}
