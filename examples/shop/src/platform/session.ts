/**
 * Sessions through `@ballast/session`, on the Redis Cluster: every service and instance reads
 * the same session from the same cookie, so one login works across all subsystems (SSO).
 */
import { createSessionStore, type RequestSession, type SessionStore } from '@ballast/session'
import type { Cluster } from 'ioredis'
import { CLUSTER_CALL_TIMEOUT } from './redis.js'

export interface ShopSessionData {
  name: string
  email: string
  isAdmin: boolean
  /** The shard router's causal token of this user's writes (read-your-writes on any instance). */
  ryw: string
  flash: string
}

export type ShopSession = RequestSession<ShopSessionData>

export function createShopSessions(
  redis: Cluster,
  ns: string,
  secret: string,
): SessionStore<ShopSessionData> {
  return createSessionStore<ShopSessionData>({
    redis,
    secrets: [secret],
    idleTimeout: '15m',
    absoluteTimeout: '12h',
    prefix: `${ns}:sess:`,
    // above the Cluster client's failover retries, so a promotion delays requests instead of failing them
    timeout: CLUSTER_CALL_TIMEOUT,
    // Plain HTTP on 127.0.0.1 in the example; behind TLS keep the defaults (Secure, __Host-).
    cookie: { name: 'sid', secure: false, prefix: false },
  })
}
