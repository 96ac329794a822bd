import { randomBytes } from 'node:crypto'

/** Length of a 256-bit id in base64url without padding. */
export const ID_LENGTH = 43
const ID_SHAPE = /^[A-Za-z0-9_-]{43}$/

/** A fresh 256-bit identifier from the CSPRNG, base64url. */
export function newId(): string {
  return randomBytes(32).toString('base64url')
}

/** Whether `value` has the exact shape of an id this package issues. */
export function isIdShape(value: string): boolean {
  return value.length === ID_LENGTH && ID_SHAPE.test(value)
}
