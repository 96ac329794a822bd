/**
 * Options of the HTTP idempotency adapters (`@ballast/resilience/express` and
 * `@ballast/resilience/fastify`); `Req` is the framework's request type.
 */
export interface HttpIdempotencyOptions<Req> {
  /**
   * Whose key it is: returns the request's user, tenant or API key id, which becomes part of
   * the Redis key. Required, or `false` to opt out explicitly. Why: `Idempotency-Key` values
   * come from clients and are not secret; keyed by the header alone, a second user sending
   * the same key and body is handed the first user's stored response, and anyone can squat
   * a key to make its owner's request fail with 409 or 422. `false` is for routes whose
   * callers all may share one key space (a single trusted client).
   *
   * A request for which it returns `undefined`, `''` or anything but a string (turn a numeric
   * id into a string) is refused with 400 and code
   * `E_RESILIENCE_IDEMPOTENCY_SCOPE_MISSING` (the handler does not run): put the
   * authentication middleware first so anonymous requests get its 401 instead.
   * @default none: the adapter throws an `InvalidArgumentError` naming `scope`
   */
  scope?: ((req: Req) => string | undefined) | false
  /**
   * The request header holding the key.
   * @default 'idempotency-key'
   */
  header?: string
  /**
   * Whether a request without a key is refused with 400; otherwise it runs unprotected.
   * @default true
   */
  required?: boolean
  /**
   * Methods guarded; others pass through.
   * @default ['POST', 'PATCH']
   */
  methods?: readonly string[]
  /**
   * What the fingerprint covers. The same key with a different fingerprint gets 422.
   * @default req => [req.method, the request's URL, req.body]
   */
  fingerprint?: (req: Req) => unknown
  /**
   * Header set to `true` on replayed responses.
   * @default 'idempotent-replayed'
   */
  replayHeader?: string
  /**
   * Statuses that release the key instead of being stored (so a retry runs again).
   * @default status => status >= 500 || status === 429
   */
  isTransientStatus?: (status: number) => boolean
}

/**
 * Defaults of {@link HttpIdempotencyOptions}: every field but `scope`, which has no default
 * and must be given (a function, or `false`).
 */
export type HttpIdempotencyDefaults<Req> = Readonly<
  Required<Omit<HttpIdempotencyOptions<Req>, 'scope'>>
>
