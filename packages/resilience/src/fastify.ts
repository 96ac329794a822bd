/**
 * Fastify adapters of `@ballast/resilience`: idempotency keys on routes, and HTTP 429 with
 * `Retry-After` from a rate limiter.
 *
 * @packageDocumentation
 */
import { merge } from '@ballast/shared'
import type {
  FastifyInstance,
  FastifyReply,
  FastifyRequest,
  onRequestHookHandler,
  onResponseHookHandler,
  onSendHookHandler,
  preHandlerHookHandler,
} from 'fastify'
import type { HttpIdempotencyDefaults, HttpIdempotencyOptions } from './httpIdempotencyOptions.js'
import type { Idempotency, IdempotencyClaim } from './idempotency.js'
import {
  gate,
  httpIdempotencyDefaults,
  type Problem,
  problem,
  resolveHttpIdempotency,
  settleClaim,
  toStored,
} from './internal/http.js'
import { check } from './internal/validate.js'
import type { RateLimiter } from './rateLimiter.js'

/** Options of the Fastify idempotency hooks and plugin. */
export type FastifyIdempotencyOptions = HttpIdempotencyOptions<FastifyRequest>

/** Defaults of {@link FastifyIdempotencyOptions} (frozen; `scope` has none and must be given). */
export const DEFAULT_FASTIFY_IDEMPOTENCY_OPTIONS: HttpIdempotencyDefaults<FastifyRequest> =
  httpIdempotencyDefaults((req: FastifyRequest): unknown => [req.method, req.url, req.body])

/** The hooks that make routes idempotent; spread them into route options or use {@link fastifyIdempotency}. */
export interface FastifyIdempotencyHooks {
  /** Claims the key after the body is parsed; answers 400/409/422/503 or replays. */
  preHandler: preHandlerHookHandler
  /** Stores the response (or releases the key on a 5xx) before it is sent. */
  onSend: onSendHookHandler
  /** Releases a claim that was never settled (the response failed). */
  onResponse: onResponseHookHandler
}

function sendProblem(reply: FastifyReply, p: Problem): FastifyReply {
  return reply
    .code(p.status)
    .headers(p.headers)
    .type('application/problem+json')
    .send(JSON.stringify(p.body))
}

/**
 * Route hooks for the `Idempotency-Key` header, with the same rules as the Express adapter
 * (`scope` required: a function, or `false`): 400 missing or malformed key or scope, 422 different request, 409 in flight, replay with
 * `Idempotent-Replayed: true`, 503 when Redis is unreachable (unless failing open); the
 * response is stored before it is sent and a 5xx releases the key. Streamed payloads are not
 * stored: the key is released.
 *
 * @example
 * ```ts
 * import Fastify from 'fastify'
 * import { fastifyIdempotencyHooks } from '@ballast/resilience/fastify'
 *
 * const app = Fastify()
 * // scope: whose key it is, as your authentication hook (run before) established it
 * const hooks = fastifyIdempotencyHooks(store, { scope: (req) => req.user?.id })
 * app.post('/payments', { ...hooks }, async (req, reply) => {
 *   return reply.code(201).send(await payments.charge(req.body))
 * })
 * ```
 */
export function fastifyIdempotencyHooks(
  store: Idempotency,
  options: FastifyIdempotencyOptions = {},
): FastifyIdempotencyHooks {
  const { header, replayHeader, required, methods, fingerprint, isTransientStatus, scopeOf } =
    resolveHttpIdempotency(DEFAULT_FASTIFY_IDEMPOTENCY_OPTIONS, options)
  const claims = new WeakMap<FastifyRequest, IdempotencyClaim>()

  const preHandler: preHandlerHookHandler = async (req, reply) => {
    if (!methods.has(req.method)) return
    const raw = req.headers[header]
    const key = Array.isArray(raw) ? raw[0] : raw
    const g = await gate(
      store,
      key,
      required,
      key === undefined ? undefined : fingerprint(req),
      key === undefined ? undefined : scopeOf(req),
    )
    switch (g.kind) {
      case 'pass':
        return
      case 'problem':
        return sendProblem(reply, g.problem)
      case 'replay':
        return reply
          .code(g.response.s)
          .headers(g.response.h)
          .header(replayHeader, 'true')
          .send(Buffer.from(g.response.b, 'base64'))
      case 'claimed':
        claims.set(req, g.claim)
        return
    }
  }

  const onSend: onSendHookHandler = async (req, reply, payload) => {
    const claim = claims.get(req)
    if (claim === undefined) return payload
    claims.delete(req)
    let body: Buffer | undefined
    if (payload === null || payload === undefined) body = Buffer.alloc(0)
    else if (typeof payload === 'string') body = Buffer.from(payload)
    else if (Buffer.isBuffer(payload)) body = payload
    if (body === undefined) {
      await claim.release().catch(() => {})
      return payload
    }
    await settleClaim(
      claim,
      toStored(reply.statusCode, reply.getHeaders(), body),
      isTransientStatus,
    )
    return payload
  }

  const onResponse: onResponseHookHandler = async (req) => {
    const claim = claims.get(req)
    if (claim === undefined) return
    claims.delete(req)
    if (!claim.settled) await claim.release().catch(() => {})
  }

  return { preHandler, onSend, onResponse }
}

/**
 * A Fastify plugin adding the {@link fastifyIdempotencyHooks} to every route of the scope it is
 * registered in (it is not encapsulated, like a `fastify-plugin`).
 *
 * @example
 * ```ts
 * await app.register(async (payments) => {
 *   await payments.register(fastifyIdempotency(store, { scope: (req) => req.user?.id }))
 *   payments.post('/payments', async (req) => charge(req.body))
 * })
 * ```
 */
export function fastifyIdempotency(
  store: Idempotency,
  options: FastifyIdempotencyOptions = {},
): (instance: FastifyInstance) => Promise<void> {
  const hooks = fastifyIdempotencyHooks(store, options)
  const plugin = async (instance: FastifyInstance): Promise<void> => {
    instance.addHook('preHandler', hooks.preHandler)
    instance.addHook('onSend', hooks.onSend)
    instance.addHook('onResponse', hooks.onResponse)
  }
  // Not encapsulated: the hooks apply to the scope that registers the plugin.
  Object.assign(plugin, {
    [Symbol.for('skip-override')]: true,
    [Symbol.for('fastify.display-name')]: 'ballast-idempotency',
  })
  return plugin
}

/** Options of the Fastify {@link fastifyRateLimitHook}. */
export interface FastifyRateLimitHookOptions {
  /**
   * The key a request counts against.
   * @default req => req.ip
   */
  key?: (req: FastifyRequest) => string
  /**
   * The cost of a request.
   * @default 1
   */
  cost?: number | ((req: FastifyRequest) => number)
}

/** Defaults of {@link FastifyRateLimitHookOptions} (frozen). */
export const DEFAULT_FASTIFY_RATE_LIMIT_HOOK_OPTIONS: Readonly<
  Required<FastifyRateLimitHookOptions>
> = Object.freeze({
  key: (req: FastifyRequest): string => req.ip,
  cost: 1 as number | ((req: FastifyRequest) => number),
})

/**
 * An `onRequest` hook answering HTTP 429 with `Retry-After` (seconds, rounded up) when the
 * limiter refuses a request; allowed requests get `RateLimit-Remaining`.
 *
 * @example
 * ```ts
 * import { fastifyRateLimitHook } from '@ballast/resilience/fastify'
 *
 * app.post('/login', { onRequest: fastifyRateLimitHook(logins, { key: (req) => req.ip }) }, login)
 * ```
 */
export function fastifyRateLimitHook(
  limiter: RateLimiter,
  options: FastifyRateLimitHookOptions = {},
): onRequestHookHandler {
  check.object('options', options)
  const o = merge(DEFAULT_FASTIFY_RATE_LIMIT_HOOK_OPTIONS, options)
  const keyOf = check.func<(req: FastifyRequest) => string>('key', o.key)
  const cost = o.cost
  if (typeof cost !== 'function' && (typeof cost !== 'number' || !(cost > 0)))
    check.invalid('cost', 'a positive number or a function', cost)
  return async (req, reply) => {
    const decision = await limiter.take(keyOf(req), typeof cost === 'function' ? cost(req) : cost)
    if (decision.allowed) {
      reply.header('ratelimit-remaining', String(decision.remaining))
      return
    }
    const seconds = Math.max(1, Math.ceil(decision.retryAfterMs / 1000))
    return sendProblem(
      reply,
      problem(429, 'E_RESILIENCE_RATE_LIMITED', 'Too many requests', `Retry in ${seconds} s.`, {
        'retry-after': String(seconds),
      }),
    )
  }
}

export type { StoredResponse } from './internal/http.js'
