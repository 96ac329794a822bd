/**
 * Express adapters of `@ballast/resilience`: idempotency keys on routes, and HTTP 429 with
 * `Retry-After` from a rate limiter.
 *
 * @packageDocumentation
 */
import { merge } from '@ballast/shared'
import type { NextFunction, Request, RequestHandler, Response } from 'express'
import type { HttpIdempotencyDefaults, HttpIdempotencyOptions } from './httpIdempotencyOptions.js'
import type { Idempotency } from './idempotency.js'
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

/** Options of the Express {@link expressIdempotency} middleware. */
export type ExpressIdempotencyOptions = HttpIdempotencyOptions<Request>

/** Defaults of {@link ExpressIdempotencyOptions} (frozen; `scope` has none and must be given). */
export const DEFAULT_EXPRESS_IDEMPOTENCY_OPTIONS: HttpIdempotencyDefaults<Request> =
  httpIdempotencyDefaults((req: Request): unknown => [req.method, req.originalUrl, req.body])

function sendProblem(res: Response, p: Problem): void {
  res.status(p.status)
  for (const [k, v] of Object.entries(p.headers)) res.setHeader(k, v)
  res.type('application/problem+json').send(JSON.stringify(p.body))
}

/**
 * Express middleware for the `Idempotency-Key` header, in the caller's `scope` (required: a
 * function, or `false` to share one key space): 400 for a missing or malformed key or scope,
 * 422 when the key is reused with a different request, 409 (with `Retry-After`) while the
 * first request is running, a replay of the stored status, headers and body (marked with
 * `Idempotent-Replayed: true`) once it completed, and 503 when Redis is unreachable (unless
 * the store fails open). The response is stored before it is sent; a 5xx releases the key.
 * Responses are buffered to be stored: do not use it on streaming routes.
 *
 * @example
 * ```ts
 * import express from 'express'
 * import { Redis } from 'ioredis'
 * import { createIdempotency } from '@ballast/resilience'
 * import { expressIdempotency } from '@ballast/resilience/express'
 *
 * const store = createIdempotency({ redis: new Redis() })
 * const app = express().use(express.json())
 * // scope: whose key it is, as your authentication middleware (run before) established it
 * const idempotent = expressIdempotency(store, { scope: (req) => req.user?.id })
 * app.post('/payments', authenticate, idempotent, async (req, res) => {
 *   res.status(201).json(await payments.charge(req.body))
 * })
 * ```
 */
export function expressIdempotency(
  store: Idempotency,
  options: ExpressIdempotencyOptions = {},
): RequestHandler {
  const { header, replayHeader, required, methods, fingerprint, isTransientStatus, scopeOf } =
    resolveHttpIdempotency(DEFAULT_EXPRESS_IDEMPOTENCY_OPTIONS, options)

  return (req: Request, res: Response, next: NextFunction): void => {
    if (!methods.has(req.method)) {
      next()
      return
    }
    const raw = req.headers[header]
    const key = Array.isArray(raw) ? raw[0] : raw
    gate(
      store,
      key,
      required,
      key === undefined ? undefined : fingerprint(req),
      key === undefined ? undefined : scopeOf(req),
    ).then(
      (g) => {
        switch (g.kind) {
          case 'pass':
            return next()
          case 'problem':
            return sendProblem(res, g.problem)
          case 'replay': {
            res.status(g.response.s)
            for (const [k, v] of Object.entries(g.response.h)) res.setHeader(k, v)
            res.setHeader(replayHeader, 'true')
            res.end(Buffer.from(g.response.b, 'base64'))
            return
          }
          case 'claimed': {
            const claim = g.claim
            const chunks: Buffer[] = []
            const write = res.write.bind(res)
            const end = res.end.bind(res)
            const collect = (chunk: unknown, encoding?: unknown) => {
              if (chunk === undefined || chunk === null || typeof chunk === 'function') return
              chunks.push(
                Buffer.isBuffer(chunk)
                  ? chunk
                  : typeof chunk === 'string'
                    ? Buffer.from(
                        chunk,
                        typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8',
                      )
                    : Buffer.from(chunk as Uint8Array),
              )
            }
            // Hold the response until its record is stored: a client that saw it can rely on
            // a retry replaying it.
            res.write = ((chunk: unknown, encoding?: unknown, cb?: unknown) => {
              collect(chunk, encoding)
              const done = typeof encoding === 'function' ? encoding : cb
              if (typeof done === 'function') queueMicrotask(() => (done as () => void)())
              return true
            }) as typeof res.write
            res.end = ((chunk?: unknown, encoding?: unknown, cb?: unknown) => {
              collect(chunk, encoding)
              const body = Buffer.concat(chunks)
              const stored = toStored(
                res.statusCode,
                res.getHeaders() as Record<string, string>,
                body,
              )
              void settleClaim(claim, stored, isTransientStatus).then(() => {
                res.write = write
                res.end = end
                res.setHeader('content-length', body.length)
                const done = typeof encoding === 'function' ? encoding : cb
                end(body, done as () => void)
              })
              return res
            }) as typeof res.end
            res.on('close', () => {
              // Neither stored nor released (the handler threw past Express, or the client left early).
              if (!claim.settled && !res.writableEnded) void claim.release().catch(() => {})
            })
            return next()
          }
        }
      },
      (error: unknown) => next(error),
    )
  }
}

/** Options of the Express {@link expressRateLimit} middleware. */
export interface ExpressRateLimitOptions {
  /**
   * The key a request counts against.
   * @default req => req.ip
   */
  key?: (req: Request) => string
  /**
   * The cost of a request.
   * @default 1
   */
  cost?: number | ((req: Request) => number)
}

/** Defaults of {@link ExpressRateLimitOptions} (frozen). */
export const DEFAULT_EXPRESS_RATE_LIMIT_OPTIONS: Readonly<Required<ExpressRateLimitOptions>> =
  Object.freeze({
    key: (req: Request): string => req.ip ?? 'unknown',
    cost: 1 as number | ((req: Request) => number),
  })

/**
 * Express middleware answering HTTP 429 with `Retry-After` (seconds, rounded up) when the
 * limiter refuses a request; allowed requests get `RateLimit-Remaining`.
 *
 * @example
 * ```ts
 * import { createRateLimiter } from '@ballast/resilience'
 * import { expressRateLimit } from '@ballast/resilience/express'
 *
 * const logins = createRateLimiter({ redis, prefix: 'rl:login:', limit: 5, interval: '1m' })
 * app.post('/login', expressRateLimit(logins, { key: (req) => String(req.body.email) }), login)
 * ```
 */
export function expressRateLimit(
  limiter: RateLimiter,
  options: ExpressRateLimitOptions = {},
): RequestHandler {
  check.object('options', options)
  const o = merge(DEFAULT_EXPRESS_RATE_LIMIT_OPTIONS, options)
  const keyOf = check.func<(req: Request) => string>('key', o.key)
  const cost = o.cost
  if (typeof cost !== 'function' && (typeof cost !== 'number' || !(cost > 0)))
    check.invalid('cost', 'a positive number or a function', cost)
  return (req, res, next) => {
    limiter.take(keyOf(req), typeof cost === 'function' ? cost(req) : cost).then(
      (decision) => {
        if (decision.allowed) {
          res.setHeader('ratelimit-remaining', String(decision.remaining))
          return next()
        }
        const seconds = Math.max(1, Math.ceil(decision.retryAfterMs / 1000))
        sendProblem(
          res,
          problem(429, 'E_RESILIENCE_RATE_LIMITED', 'Too many requests', `Retry in ${seconds} s.`, {
            'retry-after': String(seconds),
          }),
        )
      },
      (error: unknown) => next(error),
    )
  }
}

export type { StoredResponse } from './internal/http.js'
