import { uniqueName } from './uniqueName.js'

/** A database of one's own on a shared MySQL/MariaDB server. */
export interface TempDatabase {
  /** The database name, e.g. `orders_1k2x3f9c2a_1`. */
  readonly name: string
  /** The server URL with the database as its path. */
  readonly url: string
  /** Drops the database (idempotent). */
  cleanup(): Promise<void>
}

async function run(serverUrl: string, sql: string): Promise<void> {
  const mysql = (await import('mysql2/promise')).default
  const connection = await mysql.createConnection({ uri: serverUrl, connectTimeout: 5000 })
  try {
    await connection.query(sql)
  } finally {
    await connection.end().catch(() => connection.destroy())
  }
}

/**
 * Creates a database with a unique name on the server of `mysqlUrl` and returns its URL;
 * `cleanup()` drops it. On a replication topology, create it on the primary.
 *
 * @example
 * ```ts
 * const db = await tempDatabase(await mysqlUrl(), 'orders')
 * afterAll(() => db.cleanup())
 * const pool = mysql.createPool({ uri: db.url })
 * ```
 */
export async function tempDatabase(mysqlUrl: string, label = 'db'): Promise<TempDatabase> {
  const name = uniqueName(label)
  const server = new URL(mysqlUrl)
  server.pathname = ''
  const serverUrl = server.toString()
  await run(serverUrl, `CREATE DATABASE \`${name}\``)
  const url = new URL(mysqlUrl)
  url.pathname = `/${name}`
  return {
    name,
    url: url.toString(),
    cleanup: () => run(serverUrl, `DROP DATABASE IF EXISTS \`${name}\``),
  }
}
