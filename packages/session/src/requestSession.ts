import { createHash, timingSafeEqual } from 'node:crypto'
import { isSessionError } from './errors.js'
import { serializeCookie } from './internal/cookies.js'
import type { Delta, Engine, Stored } from './internal/engine.js'
import { newId } from './internal/ids.js'
import { OUTCOME, SAVE_SPAN } from './internal/sessionTelemetry.js'
import type { SessionData } from './sessionStore.js'

type State = 'new' | 'live' | 'destroyed' | 'gone'

/** Set by the class's static block: the one way to construct it, kept out of the public API. */
let construct: (
  engine: Engine,
  stored: Stored | undefined,
  ip: string | undefined,
) => RequestSession<object>

/**
 * The session of one request, for `SessionStore.loadRequest`. Not exported by the package:
 * `RequestSession` has no public constructor.
 */
export function openRequestSession<T extends object>(
  engine: Engine,
  stored: Stored | undefined,
  ip: string | undefined,
): RequestSession<T> {
  return construct(engine, stored, ip) as RequestSession<T>
}

/**
 * The session of one request, as the middleware hands it to your handler (`req.session`, or
 * `expressGetSession(req)`). Change `data` freely: at the end of the request only the top-level
 * fields that changed are written, in one round trip, and only if the session still exists.
 */
export class RequestSession<T extends object = SessionData> {
  readonly #engine: Engine
  readonly #ip: string | undefined
  #state: State
  #id: string
  #data: Partial<T>
  #originals: Map<string, string>
  #userId: string | undefined
  #loginId: string | undefined
  #csrf: string | undefined
  #csrfDirty = false
  #expiresAt: number | undefined
  #absoluteExpiresAt: number | undefined
  #cookie: 'keep' | 'set' | 'clear' = 'keep'
  #failed = false

  static {
    construct = (engine, stored, ip) => new RequestSession(engine, stored, ip)
  }

  /** Sessions come from `SessionStore.loadRequest` (or an adapter), never from `new`. */
  private constructor(engine: Engine, stored: Stored | undefined, ip: string | undefined) {
    this.#engine = engine
    this.#ip = ip
    if (stored === undefined) {
      this.#state = 'new'
      this.#id = newId()
      this.#data = {}
      this.#originals = new Map()
    } else {
      this.#state = 'live'
      this.#id = stored.id
      this.#data = stored.data as Partial<T>
      this.#originals = stored.originals
      this.#userId = stored.userId
      this.#loginId = stored.loginId
      this.#csrf = stored.csrf
      this.#expiresAt = stored.expiresAt
      this.#absoluteExpiresAt = stored.absoluteExpiresAt
    }
  }

  /** The raw session id. Keep it on the server; log {@link RequestSession.idHash} instead. */
  get id(): string {
    return this.#id
  }

  /** A keyed hash of the id, safe for logs. */
  get idHash(): string {
    return this.#engine.hash(this.#id)
  }

  /** The signed id, as the cookie carries it; give it to API clients that use a bearer header. */
  get token(): string {
    return this.#engine.config.signer.sign(this.#id)
  }

  /** True until the session is first written to Redis. */
  get isNew(): boolean {
    return this.#state === 'new'
  }

  /** True once `destroy()` ran, or when the session was ended elsewhere while this request ran. */
  get isDestroyed(): boolean {
    return this.#state === 'destroyed' || this.#state === 'gone'
  }

  /** The session data; change it in place or replace it. Values must be JSON-serialisable. */
  get data(): Partial<T> {
    return this.#data
  }

  /** Replace the whole session data; fields missing from `value` are removed at commit. */
  set data(value: Partial<T>) {
    this.#data = value
  }

  /** The logged-in user, set by `regenerate({ userId })`. */
  get userId(): string | undefined {
    return this.#userId
  }

  /** Shared by every session of one login (SSO tickets included). */
  get loginId(): string | undefined {
    return this.#loginId
  }

  /** When the session ends unless used again (ms since epoch); `undefined` while new. */
  get expiresAt(): number | undefined {
    return this.#expiresAt
  }

  /**
   * Give the session a new id, keeping its data; the old id stops working at once. Call it at
   * login with the `userId` (session fixation defence) and on any privilege change.
   * @example
   * ```ts
   * if (await checkPassword(body)) {
   *   await session.regenerate({ userId: user.id })
   * }
   * ```
   */
  async regenerate(options: { userId?: string } = {}): Promise<void> {
    this.#engine.assertOpen('regenerate')
    this.#assertUsable()
    const engine = this.#engine
    let stored: Stored
    if (this.#state === 'new') {
      stored = await engine.create({
        data: this.#data as SessionData,
        userId: options.userId,
        csrf: undefined,
      })
      this.#csrfDirty = false
    } else {
      const delta = this.#delta()
      try {
        stored = await engine.regenerate(this.#id, {
          userId: options.userId,
          delta,
          fallback: options.userId === undefined ? undefined : this.#asStored(),
        })
      } catch (error) {
        // Ended elsewhere (logout everywhere) while this request ran: it stays ended.
        if (isSessionError(error) && error.code === 'E_SESSION_NOT_FOUND') this.#state = 'gone'
        throw error
      }
    }
    this.#adopt(stored)
  }

  /**
   * End the session: it is deleted in Redis and the cookie is expired. `everywhere` ends every
   * session of the user; `linked` ends those of the same login (other domains' SSO sessions).
   */
  async destroy(options: { everywhere?: boolean; linked?: boolean } = {}): Promise<void> {
    this.#engine.assertOpen('destroy')
    const engine = this.#engine
    if (this.#state === 'live' || this.#state === 'gone') {
      await engine.destroy(this.#id, 'logout', options.linked === true)
    }
    if (options.everywhere === true && this.#userId !== undefined) {
      await engine.destroyAll(this.#userId, undefined)
    }
    this.#state = 'destroyed'
    this.#cookie = 'clear'
  }

  /**
   * The synchronizer CSRF token of this session, created on first use and stored with it.
   * Put it in forms or a header and check it with {@link RequestSession.verifyCsrf}.
   */
  csrfToken(): string {
    if (this.#csrf === undefined) {
      this.#csrf = newId()
      this.#csrfDirty = true
    }
    return this.#csrf
  }

  /**
   * Whether `token` is this session's CSRF token (constant-time comparison). Any input gives a
   * boolean: a non-string, a token of another length or with non-ASCII characters is `false`.
   */
  verifyCsrf(token: unknown): boolean {
    const expected = this.#csrf
    // The length of a token is public (every token has 43 characters).
    if (expected === undefined || typeof token !== 'string' || token.length !== expected.length) {
      return false
    }
    // Compare digests: they have one byte length whatever the input, so timingSafeEqual cannot
    // throw on a token whose UTF-8 is longer than its 43 characters.
    return timingSafeEqual(sha256(token), sha256(expected))
  }

  /**
   * A one-time ticket for `targetOrigin` (one of the store's `ticketOrigins`): redirect the
   * user there with it, and that domain redeems it for its own session of the same login.
   * `carry` names data fields copied to it.
   */
  async issueTicket(
    targetOrigin: string,
    options: { carry?: readonly (keyof T & string)[] } = {},
  ): Promise<string> {
    this.#engine.assertOpen('issueTicket')
    this.#assertUsable()
    await this.save()
    return this.#engine.issueTicket(this.#id, targetOrigin, options.carry ?? [])
  }

  /**
   * Redeem a ticket issued for `origin` (this site's origin): this request's session is
   * replaced by a new one of the same login. Returns `false` for an unknown, used, expired or
   * foreign ticket, or when the login has ended.
   */
  async redeemTicket(ticket: string, origin: string): Promise<boolean> {
    this.#engine.assertOpen('redeemTicket')
    this.#assertUsable()
    const stored = await this.#engine.redeemTicket(ticket, origin, this.#ip)
    if (stored === undefined) return false
    if (this.#state === 'live') await this.#engine.destroy(this.#id, 'replaced')
    this.#adopt(stored)
    return true
  }

  /** Write pending changes now instead of at the end of the request. */
  async save(): Promise<void> {
    this.#engine.assertOpen('save')
    if (this.#state === 'destroyed' || this.#state === 'gone') return
    const engine = this.#engine
    if (this.#state === 'new') {
      if (!this.#wantsCreate()) return
      const stored = await engine.inSpan(SAVE_SPAN, async (span) => {
        const created = await engine.create({
          data: this.#data as SessionData,
          csrf: this.#csrf,
          id: this.#id,
        })
        span.setAttribute(OUTCOME, 'created')
        return created
      })
      this.#csrfDirty = false
      this.#adopt(stored)
      return
    }
    const delta = this.#delta()
    if (delta === undefined) {
      engine.counters.unchanged++
      return
    }
    const expiry = await engine.inSpan(SAVE_SPAN, async (span) => {
      const saved = await engine.save(this.#id, delta)
      span.setAttribute(OUTCOME, saved === undefined ? 'refused' : 'saved')
      return saved
    })
    if (expiry === undefined) {
      // Ended elsewhere (logout, expiry) while this request ran: it stays ended.
      this.#state = 'gone'
      return
    }
    this.#expiresAt = expiry
    for (const [key, json] of delta.set) this.#originals.set(key, json)
    for (const key of delta.unset) this.#originals.delete(key)
    if (delta.csrf !== undefined) this.#csrfDirty = false
  }

  /**
   * Write pending changes (the middleware calls this before the response goes out) and
   * return the `Set-Cookie` value to send, if any. A failure leaves no cookie to send.
   */
  async commit(): Promise<string | undefined> {
    try {
      this.#engine.assertOpen('commit')
      await this.save()
    } catch (error) {
      this.#failed = true
      throw error
    }
    return this.setCookieHeader()
  }

  /**
   * The `Set-Cookie` value this response needs now, or `undefined`: after a new session is
   * stored (or about to be), after `regenerate`, and to expire the cookie after `destroy`.
   * An unchanged session sends none.
   */
  setCookieHeader(): string | undefined {
    if (this.#failed) return undefined
    const spec = this.#engine.config.cookie
    if (this.#cookie === 'clear') return serializeCookie(spec, undefined)
    if (this.#cookie === 'set' || (this.#state === 'new' && this.#wantsCreate())) {
      const left =
        this.#absoluteExpiresAt === undefined
          ? this.#engine.config.absoluteMs
          : this.#absoluteExpiresAt - Date.now()
      return serializeCookie(spec, this.token, left)
    }
    return undefined
  }

  #wantsCreate(): boolean {
    if (this.#engine.config.saveUninitialized || this.#csrfDirty) return true
    for (const key in this.#data) if (this.#data[key] !== undefined) return true
    return false
  }

  #assertUsable(): void {
    if (this.#state === 'destroyed') {
      throw new TypeError('this session was destroyed; a new one starts with the next request')
    }
  }

  #adopt(stored: Stored): void {
    const changedId = stored.id !== this.#id || this.#state === 'new'
    this.#state = 'live'
    this.#id = stored.id
    this.#data = stored.data as Partial<T>
    this.#originals = stored.originals
    this.#userId = stored.userId
    this.#loginId = stored.loginId
    this.#csrf = stored.csrf
    this.#csrfDirty = false
    this.#expiresAt = stored.expiresAt
    this.#absoluteExpiresAt = stored.absoluteExpiresAt
    if (changedId) this.#cookie = 'set'
  }

  #asStored(): Stored {
    return {
      id: this.#id,
      data: { ...(this.#data as SessionData) },
      originals: new Map(),
      userId: undefined,
      loginId: undefined,
      csrf: this.#csrf,
      createdAt: 0,
      expiresAt: 0,
      absoluteExpiresAt: 0,
    }
  }

  #delta(): Delta | undefined {
    const data = this.#data as Record<string, unknown>
    const originals = this.#originals
    let set: Map<string, string> | undefined
    let unset: string[] | undefined
    for (const key in data) {
      const value = data[key]
      if (value === undefined) continue
      const json = JSON.stringify(value)
      if (originals.get(key) !== json) {
        set ??= new Map()
        set.set(key, json)
      }
    }
    for (const key of originals.keys()) {
      if (data[key] === undefined) {
        unset ??= []
        unset.push(key)
      }
    }
    const csrf = this.#csrfDirty ? this.#csrf : undefined
    if (set === undefined && unset === undefined && csrf === undefined) return undefined
    const delta: Delta = { set: set ?? new Map(), unset: unset ?? [] }
    if (csrf !== undefined) delta.csrf = csrf
    return delta
  }
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest()
}
