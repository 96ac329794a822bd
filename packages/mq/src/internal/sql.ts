import { check } from './validate.js'

/** The part of a mysql2 (promise) connection the outbox and inbox use. */
export interface SqlConnection {
  /** Runs a statement with `?` placeholders; resolves to `[rows or result, fields]`. */
  query(sql: string, values?: unknown[]): Promise<[unknown, unknown]>
}

/** A mysql2 (promise) connection taken from a pool, with transactions. */
export interface SqlPoolConnection extends SqlConnection {
  /** Starts a transaction. */
  beginTransaction(): Promise<void>
  /** Commits it. */
  commit(): Promise<void>
  /** Rolls it back. */
  rollback(): Promise<void>
  /** Hands the connection back to its pool. */
  release(): void
}

/** The part of a mysql2 (promise) pool the relay and inbox use. */
export interface SqlPool {
  /** Takes a connection from the pool. */
  getConnection(): Promise<SqlPoolConnection>
}

/** Checks a table name and quotes it. */
export function quoteTable(option: string, name: unknown): string {
  if (typeof name !== 'string' || !/^[A-Za-z_][\w$]{0,63}$/.test(name)) {
    check.invalid(option, 'a table name of letters, digits and "_" (at most 64)', name)
  }
  return `\`${name}\``
}
