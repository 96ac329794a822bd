import {
  checkProviders,
  checks,
  type Duration,
  Emitter,
  type Listener,
  merge,
  show,
  type TelemetryOptions,
  type Unsubscribe,
} from '@ballast/shared'
import type { Cluster, Redis } from 'ioredis'
import { InvalidArgumentError } from './errors.js'
import { FieldCipher } from './internal/cipher.js'
import { type CookieSpec, readCookie } from './internal/cookies.js'
import { Engine, type EngineConfig, normalizeOrigin, type Stored } from './internal/engine.js'
import { OUTCOME, SAVE_SPAN } from './internal/sessionTelemetry.js'
import { Signer } from './internal/signer.js'
import { openRequestSession, type RequestSession } from './requestSession.js'

/** Attributes of the session cookie. Defaults follow the OWASP session management cheat sheet. */
export interface SessionCookieOptions {
  /**
   * Cookie name before its prefix (an RFC 6265 token). With `secure` and `prefix`, `__Host-` is
   * prepended when no `domain` is set (and `path` is `/`), `__Secure-` otherwise.
   * @default 'sid'
   */
  name?: string | undefined
  /**
   * Parent domain for subdomain single sign-on (e.g. `'shop.example'`): every subdomain then
   * shares the session. Leave unset for a host-only `__Host-` cookie.
   * @default undefined
   */
  domain?: string | undefined
  /**
   * `Path` attribute: starts with `/`.
   * @default '/'
   */
  path?: string | undefined
  /**
   * `Secure` attribute. Turn off only for plain-HTTP development: prefixes need it.
   * @default true
   */
  secure?: boolean | undefined
  /**
   * `HttpOnly` attribute: scripts cannot read the id.
   * @default true
   */
  httpOnly?: boolean | undefined
  /**
   * `SameSite` attribute; `'none'` needs `secure`.
   * @default 'lax'
   */
  sameSite?: 'lax' | 'strict' | 'none' | undefined
  /**
   * Send `Max-Age` (the time left before the absolute timeout). Off: a browser-session cookie,
   * which OWASP prefers.
   * @default false
   */
  persistent?: boolean | undefined
  /**
   * Prepend `__Host-` / `__Secure-` to the name when `secure` is on.
   * @default true
   */
  prefix?: boolean | undefined
}

/** Defaults of the {@link SessionCookieOptions} fields (`domain` is unset by default). */
export const DEFAULT_SESSION_COOKIE_OPTIONS: {
  readonly [K in Exclude<keyof SessionCookieOptions, 'domain'>]-?: Exclude<
    SessionCookieOptions[K],
    undefined
  >
} = Object.freeze({
  name: 'sid',
  path: '/',
  secure: true,
  httpOnly: true,
  sameSite: 'lax',
  persistent: false,
  prefix: true,
})

/**
 * Options of {@link createSessionStore}. `meterProvider` and `tracerProvider` (from
 * {@link TelemetryOptions}) default to the global OpenTelemetry providers.
 */
export interface SessionStoreOptions extends TelemetryOptions {
  /** Your ioredis client: a standalone `Redis` or a `Cluster`. The store never closes it. */
  redis: Redis | Cluster
  /**
   * Secrets that sign the cookie (HMAC-SHA256), each at least 32 characters. The first signs,
   * any verifies: rotate by putting a new secret first, and drop the old one after
   * `absoluteTimeout`.
   */
  secrets: string | readonly string[]
  /**
   * Time without a request after which a session ends (positive, at most `absoluteTimeout`).
   * Slides on every request.
   * @default '15m'
   */
  idleTimeout?: Duration | undefined
  /**
   * Time after creation (or login) after which a session ends however active it is. A
   * `regenerate` that is not a login keeps the deadline.
   * @default '12h'
   */
  absoluteTimeout?: Duration | undefined
  /**
   * Prefix of every Redis key of this store (no braces: the keys carry hash tags).
   * @default 'sess:'
   */
  prefix?: string | undefined
  /**
   * Most sessions one user may hold at once; logging in beyond it ends the oldest. `0`: no cap.
   * @default 0
   */
  maxSessionsPerUser?: number | undefined
  /**
   * Origins (`https://other.example`) that SSO tickets may be issued for.
   * @default []
   */
  ticketOrigins?: readonly string[] | undefined
  /**
   * Lifetime of an SSO ticket.
   * @default '60s'
   */
  ticketTtl?: Duration | undefined
  /**
   * AES-256-GCM keys (32-byte `Buffer`s, or 64 hex / 43-44 base64 characters) to encrypt session
   * data at rest. The first encrypts, any decrypts. Empty: data is stored as JSON.
   * @default []
   */
  encryptionKeys?: readonly (string | Buffer)[] | undefined
  /**
   * The session cookie, merged field by field over {@link DEFAULT_SESSION_COOKIE_OPTIONS}. See
   * {@link SessionCookieOptions}.
   * @default DEFAULT_SESSION_COOKIE_OPTIONS
   */
  cookie?: SessionCookieOptions | undefined
  /**
   * Also accept the signed id from `Authorization: Bearer <token>` (for API clients). The
   * cookie wins when both are present.
   * @default false
   */
  bearer?: boolean | undefined
  /**
   * Store sessions nobody wrote to. Off: a visitor costs no Redis write until the app stores
   * something.
   * @default false
   */
  saveUninitialized?: boolean | undefined
  /**
   * Longest wait for one Redis call before it fails with `SessionUnavailableError`. `0`: wait
   * as long as the client does.
   * @default '2s'
   */
  timeout?: Duration | undefined
}

/**
 * Defaults of every optional {@link SessionStoreOptions} field. An option given as `undefined`
 * takes its default; `cookie` is merged field by field.
 */
export const DEFAULT_SESSION_STORE_OPTIONS: {
  readonly [K in Exclude<
    keyof SessionStoreOptions,
    'redis' | 'secrets' | keyof TelemetryOptions
  >]-?: Exclude<SessionStoreOptions[K], undefined>
} = Object.freeze({
  idleTimeout: '15m',
  absoluteTimeout: '12h',
  prefix: 'sess:',
  maxSessionsPerUser: 0,
  ticketOrigins: Object.freeze([]),
  ticketTtl: '60s',
  encryptionKeys: Object.freeze([]),
  cookie: DEFAULT_SESSION_COOKIE_OPTIONS,
  bearer: false,
  saveUninitialized: false,
  timeout: '2s',
})

/**
 * Data of a session when the store is not given a type: any JSON-serialisable values by
 * top-level key. Give your own type instead, an interface or a type alias
 * (`createSessionStore<{ cart: string[] }>(...)`): the store, its request sessions and the
 * adapters then read and write that type.
 */
export type SessionData = Record<string, unknown>

/** A session as the store returns it. */
export interface SessionRecord<T extends object = SessionData> {
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
export interface SessionChanges<T extends object = SessionData> {
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
  /** Lookups that failed because Redis did not answer (each one a `SessionUnavailableError`). */
  loadsFailed: number
  /** Sessions written for the first time. */
  created: number
  /** Delta writes. */
  saves: number
  /** Requests that ended with nothing to write. */
  unchanged: number
  /** Delta writes refused because the session had ended meanwhile (it was not brought back). */
  savesRefused: number
  /** Ids renewed. */
  regenerated: number
  /** Sessions deleted (logout, eviction, logout everywhere). */
  destroyed: number
  /** {@link SessionStats.destroyed} by the reason of the `destroyed` event. */
  destroyedByReason: Record<SessionDestroyedEvent['reason'], number>
  /**
   * `suspicion-raised` events: forged, malformed, unknown or expired ids, bad tickets (counted
   * whether or not anyone listens).
   */
  suspicionsRaised: number
  /** {@link SessionStats.suspicionsRaised} by the reason of the `suspicion-raised` event. */
  suspicionsByReason: Record<SuspicionReason, number>
  /** Redis round trips made. */
  redisCalls: number
  /** Redis calls that failed or timed out (each one a `SessionUnavailableError`). */
  redisCallsFailed: number
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

/**
 * Why a request's id or a ticket was refused: `malformed` (wrong shape or size),
 * `bad-signature` (forged or signed by a retired secret), `unknown` (well signed but no such
 * session), or a ticket refusal: `ticket-malformed`, `ticket-unknown` (never issued, used or
 * expired), `ticket-unreadable`, `ticket-origin-mismatch`, `ticket-login-ended`.
 */
export type SuspicionReason =
  | 'malformed'
  | 'bad-signature'
  | 'unknown'
  | 'ticket-malformed'
  | 'ticket-unknown'
  | 'ticket-unreadable'
  | 'ticket-origin-mismatch'
  | 'ticket-login-ended'

/** Payload of the `suspicion-raised` event. Never carries a raw id. */
export interface SuspicionRaisedEvent {
  /** What was refused and why. */
  reason: SuspicionReason
  /** Keyed hash of the id, when there was a well-formed one. */
  idHash: string | undefined
  /** Remote address of the request, when known. */
  ip: string | undefined
}

/** Events of a {@link SessionStore}, by name: each listener gets one payload object. */
export interface SessionEvents {
  /** A session was written for the first time. */
  created: SessionCreatedEvent
  /** A session got a new id. */
  regenerated: SessionRegeneratedEvent
  /** A session was deleted. */
  destroyed: SessionDestroyedEvent
  /** A request carried the id of a session that had expired. */
  expired: SessionExpiredEvent
  /** A request carried a forged, malformed or unknown id, or a bad ticket was redeemed. */
  'suspicion-raised': SuspicionRaisedEvent
}

/** What {@link SessionStore.loadRequest} needs from a request. */
export interface RequestHeaders {
  /** The `Cookie` header. */
  cookie?: string | undefined
  /** The `Authorization` header (read only with the `bearer` option). */
  authorization?: string | undefined
  /** Remote address, for `suspicion-raised` events. */
  ip?: string | undefined
}

/**
 * Sessions in Redis (standalone or Cluster) shared by every instance of every subsystem. Build
 * it with {@link createSessionStore}; mount it with `@ballast/session/express`, `/fastify` or
 * `/http`, or use its methods directly. `T` types the session data (an interface or a type
 * alias of the top-level fields).
 */
export class SessionStore<T extends object = SessionData> {
  readonly #engine: Engine
  readonly #events = new Emitter<SessionEvents>()

  /** Use {@link createSessionStore}. */
  constructor(options: SessionStoreOptions) {
    this.#engine = new Engine(resolve(options), this.#events)
  }

  /**
   * Listen to an event; returns a function that removes the listener. A listener that throws
   * never breaks the operation that emitted: its error is rethrown in a microtask (an
   * `uncaughtException`, like any other bug in application code).
   * @example
   * ```ts
   * const off = store.on('suspicion-raised', ({ reason, ip }) => log.warn({ reason, ip }))
   * off()
   * ```
   */
  on<K extends keyof SessionEvents>(event: K, listener: Listener<SessionEvents[K]>): Unsubscribe {
    return this.#events.on(event, listener)
  }

  /** Listen to the next occurrence of an event only; returns a function that removes it. */
  once<K extends keyof SessionEvents>(event: K, listener: Listener<SessionEvents[K]>): Unsubscribe {
    return this.#events.once(event, listener)
  }

  /** Remove a listener added with {@link SessionStore.on} or {@link SessionStore.once}. */
  off<K extends keyof SessionEvents>(event: K, listener: Listener<SessionEvents[K]>): void {
    this.#events.off(event, listener)
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
   * session.data.views = (session.data.views ?? 0) + 1 // a SessionStore<{ views: number }>
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
    if (value === undefined) return openRequestSession<T>(engine, undefined, headers.ip)
    const verdict = config.signer.unsign(value)
    if ('refused' in verdict) {
      engine.raiseSuspicion(verdict.refused, undefined, headers.ip)
      return openRequestSession<T>(engine, undefined, headers.ip)
    }
    const stored = await engine.load(verdict.id)
    if (stored === undefined) {
      if (engine.events.has('expired')) {
        engine.events.emit('expired', { idHash: engine.hash(verdict.id) })
      }
      engine.raiseSuspicion('unknown', verdict.id, headers.ip)
      return openRequestSession<T>(engine, undefined, headers.ip)
    }
    return openRequestSession<T>(engine, stored, headers.ip)
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
    const stored = await this.#engine.inSpan(SAVE_SPAN, async (span) => {
      const created = await this.#engine.create({
        data: { ...init.data } as SessionData,
        userId: init.userId,
      })
      span.setAttribute(OUTCOME, 'created')
      return created
    })
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
    return this.#engine.inSpan(SAVE_SPAN, async (span) => {
      const saved = (await this.#engine.save(id, { set, unset })) !== undefined
      span.setAttribute(OUTCOME, saved ? 'saved' : 'refused')
      return saved
    })
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
    const counters = this.#engine.counters
    return {
      ...counters,
      destroyedByReason: { ...counters.destroyedByReason },
      suspicionsByReason: { ...counters.suspicionsByReason },
    }
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
export function createSessionStore<T extends object = SessionData>(
  options: SessionStoreOptions,
): SessionStore<T> {
  return new SessionStore<T>(options)
}

const check = checks(InvalidArgumentError)

/** RFC 6265 `token`: what a cookie name may be. */
const COOKIE_NAME = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/
/** A host name such as `shop.example` (what a `Domain` attribute may carry). */
const COOKIE_DOMAIN = /^\.?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/
/** A `Path` attribute: starts with `/`, no `;`, no control characters or spaces. */
const COOKIE_PATH = /^\/[\x21-\x3A\x3C-\x7E]*$/

/** Milliseconds of a positive duration option, a whole number (Redis expiries take integers). */
function positiveMs(name: string, value: unknown): number {
  return Math.ceil(check.duration(name, value, { positive: true }))
}

/** What an error message may show of secrets or keys: their type and size, never their text. */
function sizeOf(value: unknown): string {
  if (typeof value === 'string') return `a string of ${value.length} characters`
  if (Buffer.isBuffer(value)) return `a Buffer of ${value.length} bytes`
  if (Array.isArray(value)) {
    return value.length === 0 ? 'an empty array' : `an array of ${value.length}`
  }
  if (typeof value === 'object' && value !== null) return 'an object'
  return show(value)
}

/** Checks every option and resolves it to what the engine runs with; throws before any I/O. */
function resolve(options: SessionStoreOptions): EngineConfig {
  if (options === null || typeof options !== 'object') {
    throw new InvalidArgumentError(`invalid options: expected an object, got ${show(options)}`)
  }
  const merged = merge(DEFAULT_SESSION_STORE_OPTIONS, options)
  const client = merged.redis as unknown
  if (
    client === null ||
    typeof client !== 'object' ||
    typeof (client as Partial<Redis>).evalsha !== 'function'
  ) {
    // Not show(): a connection-options object passed by mistake carries the password.
    const got =
      typeof client === 'object' && client !== null ? 'an object without evalsha()' : show(client)
    throw new InvalidArgumentError(
      `invalid option "redis": expected an ioredis Redis or Cluster client, got ${got}`,
    )
  }
  const idleMs = positiveMs('idleTimeout', merged.idleTimeout)
  const absoluteMs = positiveMs('absoluteTimeout', merged.absoluteTimeout)
  if (idleMs > absoluteMs) {
    check.invalid('idleTimeout', `at most "absoluteTimeout" (${absoluteMs} ms)`, merged.idleTimeout)
  }
  const prefix = merged.prefix as unknown
  if (typeof prefix !== 'string' || /[{}]/.test(prefix)) {
    check.invalid('prefix', 'a string without braces', prefix)
  }
  const ticketOrigins = new Set<string>()
  const origins = merged.ticketOrigins as unknown
  if (!Array.isArray(origins)) check.invalid('ticketOrigins', 'an array of origins', origins)
  for (const [i, origin] of (origins as unknown[]).entries()) {
    const normal = typeof origin === 'string' ? normalizeOrigin(origin) : undefined
    if (normal === undefined) {
      check.invalid(`ticketOrigins[${i}]`, "an origin such as 'https://shop.example'", origin)
    }
    ticketOrigins.add(normal as string)
  }
  const keys = merged.encryptionKeys as unknown
  if (!Array.isArray(keys)) {
    throw new InvalidArgumentError(
      `invalid option "encryptionKeys": expected an array of keys, got ${sizeOf(keys)}`,
    )
  }
  return {
    client: client as Redis | Cluster,
    prefix: prefix as string,
    idleMs,
    absoluteMs,
    ticketTtlMs: positiveMs('ticketTtl', merged.ticketTtl),
    timeoutMs: Math.ceil(check.duration('timeout', merged.timeout)),
    maxSessionsPerUser: check.nonNegativeInteger('maxSessionsPerUser', merged.maxSessionsPerUser),
    ticketOrigins,
    saveUninitialized: check.boolean('saveUninitialized', merged.saveUninitialized),
    bearer: check.boolean('bearer', merged.bearer),
    cookie: resolveCookie(merged.cookie),
    signer: new Signer(resolveSecrets(merged.secrets)),
    telemetry: checkProviders(check, options),
    cipher:
      (keys as unknown[]).length === 0
        ? undefined
        : new FieldCipher((keys as unknown[]).map((key, i) => toKey(`encryptionKeys[${i}]`, key))),
  }
}

function resolveSecrets(value: unknown): string[] {
  if (typeof value === 'string' ? value.length < 32 : !Array.isArray(value) || value.length === 0) {
    throw new InvalidArgumentError(
      `invalid option "secrets": expected one or more strings of at least 32 characters, got ${sizeOf(value)}`,
    )
  }
  if (typeof value === 'string') return [value]
  const secrets = value as unknown[]
  for (const [i, secret] of secrets.entries()) {
    if (typeof secret !== 'string' || secret.length < 32) {
      throw new InvalidArgumentError(
        `invalid option "secrets[${i}]": expected a string of at least 32 characters, got ${sizeOf(secret)}`,
      )
    }
  }
  return secrets as string[]
}

function toKey(name: string, key: unknown): Buffer {
  let buf: Buffer | undefined
  if (Buffer.isBuffer(key)) buf = key
  else if (typeof key === 'string' && /^[0-9a-fA-F]{64}$/.test(key)) buf = Buffer.from(key, 'hex')
  else if (typeof key === 'string') buf = Buffer.from(key, 'base64')
  if (buf === undefined || buf.length !== 32) {
    throw new InvalidArgumentError(
      `invalid option "${name}": expected a 32-byte key (a Buffer, 64 hex or 43-44 base64 characters), got ${sizeOf(key)}`,
    )
  }
  return buf
}

function resolveCookie(value: unknown): CookieSpec {
  const cookie = check.object('cookie', value)
  if (typeof cookie.name !== 'string' || !COOKIE_NAME.test(cookie.name)) {
    check.invalid('cookie.name', 'a cookie name (an RFC 6265 token)', cookie.name)
  }
  if (
    cookie.domain !== undefined &&
    (typeof cookie.domain !== 'string' || !COOKIE_DOMAIN.test(cookie.domain))
  ) {
    check.invalid('cookie.domain', "a domain such as 'shop.example'", cookie.domain)
  }
  if (typeof cookie.path !== 'string' || !COOKIE_PATH.test(cookie.path)) {
    check.invalid('cookie.path', "a path starting with '/'", cookie.path)
  }
  const secure = check.boolean('cookie.secure', cookie.secure)
  const sameSite = check.oneOf('cookie.sameSite', cookie.sameSite, ['lax', 'strict', 'none'])
  if (sameSite === 'none' && !secure) {
    check.invalid(
      'cookie.sameSite',
      `'lax' or 'strict' when "cookie.secure" is off (browsers refuse 'none' without it)`,
      sameSite,
    )
  }
  const domain = cookie.domain as string | undefined
  const path = cookie.path as string
  const prefix = check.boolean('cookie.prefix', cookie.prefix)
  let name = cookie.name as string
  if (secure && prefix) {
    name = (domain === undefined && path === '/' ? '__Host-' : '__Secure-') + name
  }
  return {
    name,
    domain,
    path,
    secure,
    httpOnly: check.boolean('cookie.httpOnly', cookie.httpOnly),
    sameSite,
    persistent: check.boolean('cookie.persistent', cookie.persistent),
  }
}
