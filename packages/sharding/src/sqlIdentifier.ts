import { UnsafeStatementError } from './errors.js'

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_$]{0,63}$/

/**
 * Validates a caller-supplied SQL identifier (a table or column name chosen at run time, such
 * as a per-tenant table) and returns it quoted with backticks. Only plain names pass: a letter
 * or `_`, then letters, digits, `_` or `$`, at most 64 characters; anything else throws, so an
 * identifier can never carry SQL. Values never need this: they go through `?` placeholders.
 *
 * @throws UnsafeStatementError if `name` is not a plain identifier.
 * @example
 * ```ts
 * const table = sqlIdentifier(`orders_${region}`) // '`orders_eu`'
 * await router.query(userId, `SELECT * FROM ${table} WHERE user_id = ?`, [userId])
 * ```
 */
export function sqlIdentifier(name: string): string {
  if (typeof name !== 'string' || !IDENTIFIER.test(name)) {
    throw new UnsafeStatementError(
      `invalid identifier ${JSON.stringify(String(name).slice(0, 80))}: expected a letter or "_" followed by letters, digits, "_" or "$" (at most 64)`,
    )
  }
  return `\`${name}\``
}
