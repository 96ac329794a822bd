/**
 * Options of the HTTP idempotency adapters (`@ballast/resilience/express` and
 * `@ballast/resilience/fastify`); `Req` is the framework's request type.
 */
export interface HttpIdempotencyOptions<Req> {
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
