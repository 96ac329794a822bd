/** Where the sharding benchmarks find their servers (benches may read the environment). */
import mysql from 'mysql2/promise'

export const MYSQL_URL = process.env.MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test'
export const PRIMARY_URL = process.env.MYSQL_PRIMARY_URL ?? 'mysql://root@127.0.0.1:3307/test'
export const REPLICA_URL = process.env.MYSQL_REPLICA_URL ?? 'mysql://root@127.0.0.1:3308/test'

export function withDatabase(url: string, name: string): string {
  const u = new URL(url)
  u.pathname = `/${name}`
  return u.toString()
}

export async function run(url: string, sql: string, values: unknown[] = []): Promise<any> {
  const c = await mysql.createConnection({ uri: url })
  try {
    return (await c.query(sql, values))[0]
  } finally {
    await c.end()
  }
}

/** A database of the bench's own on a server; drop() removes it. */
export async function benchDatabase(
  serverUrl: string,
  label: string,
): Promise<{ url: string; name: string; drop(): Promise<void> }> {
  const name = `bench_${label}_${process.pid}_${Date.now().toString(36)}`
  await run(serverUrl, `CREATE DATABASE \`${name}\``)
  return {
    url: withDatabase(serverUrl, name),
    name,
    drop: () => run(serverUrl, `DROP DATABASE IF EXISTS \`${name}\``),
  }
}
