/**
 * Ids and shard placement. Users are placed on the consistent-hash ring of `@ballast/lb` by
 * their id; an order id starts with its user's shard (`a-…`), so it can be found without a
 * directory lookup.
 */
import { randomBytes } from 'node:crypto'
import { HashRing } from '@ballast/lb'

export function shardRing(shardIds: readonly string[]): HashRing {
  return new HashRing([...shardIds])
}

export function newUserId(): string {
  return `u${randomBytes(9).toString('base64url').replace(/[-_]/g, 'x')}`
}

export function newOrderId(shardId: string): string {
  return `${shardId}-${Date.now().toString(36)}${randomBytes(5).toString('hex')}`
}

export function shardOfOrder(orderId: string): string {
  const i = orderId.indexOf('-')
  return i > 0 ? orderId.slice(0, i) : ''
}
