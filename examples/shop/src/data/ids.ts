/**
 * User ids. Users (and their carts and orders) are placed on shards by `@ballast/sharding`'s
 * router from this id; order ids come from the router's id generator (`platform/sharding.ts`).
 */
import { randomBytes } from 'node:crypto'

export function newUserId(): string {
  return `u${randomBytes(9).toString('base64url').replace(/[-_]/g, 'x')}`
}
