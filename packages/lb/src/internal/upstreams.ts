import { Pool } from 'undici'
import type { Balancer } from '../balancer.js'
import type { Endpoint } from '../endpoint.js'

export interface PoolSettings {
  connections: number
  connectTimeoutMs: number
  keepAliveTimeoutMs: number
}

/** One undici Pool per endpoint origin, created on first use and closed when the endpoint goes. */
export class UpstreamPools {
  readonly #pools = new Map<string, Pool>()
  readonly #settings: PoolSettings
  readonly #unsubscribe: Array<() => void> = []

  constructor(settings: PoolSettings) {
    this.#settings = settings
  }

  watch(balancer: Balancer<string>): void {
    this.#unsubscribe.push(
      balancer.on('endpoint-removed', ({ endpoint }) => {
        const pool = this.#pools.get(endpoint.value)
        if (pool !== undefined) {
          this.#pools.delete(endpoint.value)
          void pool.close().catch(() => pool.destroy())
        }
      }),
    )
  }

  get(endpoint: Endpoint<string>): Pool {
    const origin = endpoint.value
    let pool = this.#pools.get(origin)
    if (pool === undefined) {
      pool = new Pool(origin, {
        connections: this.#settings.connections,
        connectTimeout: this.#settings.connectTimeoutMs,
        keepAliveTimeout: this.#settings.keepAliveTimeoutMs,
        pipelining: 1,
      })
      this.#pools.set(origin, pool)
    }
    return pool
  }

  async close(): Promise<void> {
    for (const off of this.#unsubscribe) off()
    const pools = [...this.#pools.values()]
    this.#pools.clear()
    await Promise.all(pools.map((p) => p.close().catch(() => p.destroy())))
  }
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE'])

/** Whether a method is idempotent (RFC 9110 §9.2.2), so a request may be sent twice. */
export function isIdempotent(method: string): boolean {
  return IDEMPOTENT.has(method)
}

const NOT_SENT = new Set([
  'ECONNREFUSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
])

/** Whether an error means the request never reached the upstream (safe to retry any method). */
export function neverSent(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' && NOT_SENT.has(code)
}

/** Whether an error is an upstream timeout (connect or headers). */
export function isTimeout(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code
  return (
    code === 'UND_ERR_HEADERS_TIMEOUT' ||
    code === 'UND_ERR_CONNECT_TIMEOUT' ||
    code === 'UND_ERR_BODY_TIMEOUT'
  )
}

/** Hop-by-hop headers (RFC 9110 §7.6.1) that a proxy must not forward. */
export const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'trailers',
  'transfer-encoding',
  'upgrade',
])
