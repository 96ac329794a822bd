import { existsSync } from 'node:fs'
import mysql from 'mysql2/promise'
import { afterAll, describe, expect, it } from 'vitest'
import { disposables, startPrivateMariadbPair, switchover } from '../src/index.js'

// Private pairs only: these tests kill and promote servers (never the shared 3307/3308 pair).
const bin = disposables()
afterAll(() => bin.cleanup())

async function query(url: string, sql: string, values: unknown[] = []): Promise<any> {
  const connection = await mysql.createConnection({ uri: url, connectTimeout: 3000 })
  try {
    const [rows] = await connection.query(sql, values)
    return rows
  } finally {
    await connection.end().catch(() => connection.destroy())
  }
}

describe('startPrivateMariadbPair', () => {
  it('starts a semi-synchronous primary and replica, and close() removes them', async () => {
    const pair = await startPrivateMariadbPair({ semiSync: true })
    bin.defer(() => pair.close())
    const [status] = await query(
      pair.primary.url,
      "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_status'",
    )
    expect(status.Value).toBe('ON')
    await query(pair.primary.appUrl, 'CREATE TABLE t (id INT PRIMARY KEY)')
    await query(pair.primary.appUrl, 'INSERT INTO t VALUES (1)')
    // Semi-sync: the replica had the insert when the primary acknowledged it.
    const [{ p }] = await query(pair.primary.url, 'SELECT @@GLOBAL.gtid_binlog_pos AS p')
    const [{ w }] = await query(pair.replica.url, 'SELECT MASTER_GTID_WAIT(?, 5) AS w', [p])
    expect(Number(w)).toBe(0)
    await pair.close()
    expect(pair.primary.alive()).toBe(false)
    expect(pair.replica.alive()).toBe(false)
    expect(existsSync(pair.dir)).toBe(false)
  }, 60_000)
})

describe('switchover', () => {
  it('planned: makes the old primary read-only for the application and promotes the replica with every write', async () => {
    const pair = await startPrivateMariadbPair({ semiSync: false })
    bin.defer(() => pair.close())
    await query(pair.primary.appUrl, 'CREATE TABLE t (id INT PRIMARY KEY)')
    await query(pair.primary.appUrl, 'INSERT INTO t VALUES (1), (2)')
    const result = await switchover({ primary: pair.primary.url, replica: pair.replica.url })
    expect(result.primary).toBe(pair.replica.url)
    await expect(query(pair.primary.appUrl, 'INSERT INTO t VALUES (3)')).rejects.toMatchObject({
      code: 'ER_OPTION_PREVENTS_STATEMENT',
    })
    await query(pair.replica.appUrl, 'INSERT INTO t VALUES (3)')
    expect(await query(pair.replica.appUrl, 'SELECT id FROM t ORDER BY id')).toEqual([
      { id: 1 },
      { id: 2 },
      { id: 3 },
    ])
    expect(await query(pair.replica.url, 'SHOW SLAVE STATUS')).toEqual([])
    // GTID continuity: the new primary's position covers the old one's in the same domain.
    expect(result.oldPrimaryPosition).toMatch(/^0-1-\d+$/)
    expect(result.position).toBe(result.oldPrimaryPosition)
  }, 60_000)

  it('unplanned: promotes the replica after the primary is SIGKILLed, applying what its relay log holds', async () => {
    const pair = await startPrivateMariadbPair({ semiSync: true })
    bin.defer(() => pair.close())
    await query(pair.primary.appUrl, 'CREATE TABLE t (id INT PRIMARY KEY)')
    // The replica's SQL thread is stopped: the inserts wait in its relay log.
    await query(pair.replica.url, 'STOP SLAVE SQL_THREAD')
    for (let i = 1; i <= 20; i++) await query(pair.primary.appUrl, 'INSERT INTO t VALUES (?)', [i])
    await pair.primary.kill()
    await switchover({ primary: pair.primary.url, replica: pair.replica.url, planned: false })
    const [{ n }] = await query(pair.replica.appUrl, 'SELECT COUNT(*) AS n FROM t')
    expect(Number(n)).toBe(20)
    await query(pair.replica.appUrl, 'INSERT INTO t VALUES (21)')
  }, 60_000)
})
