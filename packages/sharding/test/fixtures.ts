import { mysqlPrimaryUrl, mysqlReplicaUrl, mysqlUrl, tempDatabase } from '@ballast/testkit'
import mysql from 'mysql2/promise'
import { type SlotMap, type SlotSpan, slotFor } from '../src/index.js'

/** Runs statements on a server URL with a short-lived connection. */
export async function sql(url: string, text: string, values: unknown[] = []): Promise<any> {
  const connection = await mysql.createConnection({ uri: url, connectTimeout: 5000 })
  try {
    const [rows] = await connection.query(text, values)
    return rows
  } finally {
    await connection.end().catch(() => connection.destroy())
  }
}

export const ORDERS_DDL =
  'CREATE TABLE orders (id BIGINT PRIMARY KEY, user_id VARCHAR(64) NOT NULL, total DECIMAL(10,2) NOT NULL, note VARCHAR(255) NULL, created_at BIGINT NOT NULL, KEY (user_id))'

/** Waits until the replica has applied everything the primary has now. */
export async function replicaCaughtUp(primaryUrl: string, replicaUrl: string): Promise<void> {
  const [{ p }] = await sql(primaryUrl, 'SELECT @@GLOBAL.gtid_binlog_pos AS p')
  const [{ w }] = await sql(replicaUrl, 'SELECT MASTER_GTID_WAIT(?, 10) AS w', [p])
  if (Number(w) !== 0) throw new Error(`replica did not catch up to ${p}`)
}

function withDatabase(url: string, name: string): string {
  const u = new URL(url)
  u.pathname = `/${name}`
  return u.toString()
}

export interface Topology {
  /** Databases on the primary/replica pair: [primaryUrl, replicaUrl] per database. */
  pair: Array<{ primary: string; replica: string }>
  /** Databases on the standard server. */
  standard: string[]
  primaryServer: string
  replicaServer: string
  cleanup(): Promise<void>
}

/**
 * Creates `pairDbs` databases on the primary (replicated to the replica) and `standardDbs` on
 * the standard server, each with an `orders` table, and waits for the replica to have them.
 */
export async function topology(
  label: string,
  pairDbs: number,
  standardDbs: number,
): Promise<Topology> {
  const primaryServer = await mysqlPrimaryUrl()
  const replicaServer = await mysqlReplicaUrl()
  const standardServer = await mysqlUrl()
  const dbs: Array<{ cleanup(): Promise<void> }> = []
  const pair: Topology['pair'] = []
  const standard: string[] = []
  for (let i = 0; i < pairDbs; i++) {
    const db = await tempDatabase(primaryServer, `${label}_p${i}`)
    dbs.push(db)
    await sql(db.url, ORDERS_DDL)
    pair.push({ primary: db.url, replica: withDatabase(replicaServer, db.name) })
  }
  for (let i = 0; i < standardDbs; i++) {
    const db = await tempDatabase(standardServer, `${label}_s${i}`)
    dbs.push(db)
    await sql(db.url, ORDERS_DDL)
    standard.push(db.url)
  }
  if (pairDbs > 0) await replicaCaughtUp(primaryServer, replicaServer)
  return {
    pair,
    standard,
    primaryServer,
    replicaServer,
    cleanup: async () => {
      await Promise.all(dbs.map((d) => d.cleanup()))
    },
  }
}

/**
 * Stops the replica's SQL thread (the shared replica: keep the window short) and returns a
 * function that starts it again; callers must call it in a finally.
 */
export async function stopSqlThread(replicaServer: string): Promise<() => Promise<void>> {
  await sql(replicaServer, 'STOP SLAVE SQL_THREAD')
  let started = false
  return async () => {
    if (started) return
    started = true
    await sql(replicaServer, 'START SLAVE SQL_THREAD')
  }
}

/**
 * Delays the shared replica's SQL thread by `seconds` (`MASTER_DELAY`; keep it short) and
 * returns a function that sets it back to 0; callers must call it in a finally.
 */
export async function setMasterDelay(
  replicaServer: string,
  seconds: number,
): Promise<() => Promise<void>> {
  const change = async (delay: number) => {
    // MariaDB changes MASTER_DELAY only with both replication threads stopped.
    await sql(replicaServer, 'STOP SLAVE')
    try {
      await sql(replicaServer, `CHANGE MASTER TO MASTER_DELAY = ${Number(delay)}`)
    } finally {
      await sql(replicaServer, 'START SLAVE')
    }
  }
  await change(seconds)
  let restored = false
  return async () => {
    if (restored) return
    restored = true
    await change(0)
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Polls `check` until it is true or `timeoutMs` passes. */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
  stepMs = 50,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await sleep(stepMs)
  }
}

/** The shard that owns `slot` in `map`. */
export function ownerIn(map: SlotMap, slot: number): string {
  return map.ranges.find((r) => slot >= r.start && slot < r.end)!.shard
}

/** Whether `slot` is in `span`. */
export const inSpan = (span: SlotSpan, slot: number): boolean =>
  slot >= span.start && slot < span.end

/** `count` user keys (`user-<salt>-<i>`) whose slots (of 4096) `accept` takes. */
export function keysWhere(
  count: number,
  salt: string,
  accept: (slot: number) => boolean,
): string[] {
  const keys: string[] = []
  for (let i = 0; keys.length < count; i++) {
    const key = `user-${salt}-${i}`
    if (accept(slotFor(key, 4096))) keys.push(key)
  }
  return keys
}

/**
 * Picks spans of up to `size` slots (at least `least`) that `shard` owns, not moving, each
 * given out once: the tests of a file each move slots of their own.
 */
export function spanPicker(
  shard: string,
): (map: SlotMap, size: number, least?: number) => SlotSpan {
  const taken = new Set<number>()
  return (map, size, least = 1) => {
    for (const range of map.ranges) {
      if (range.shard !== shard || range.moving !== undefined) continue
      for (let start = range.start; start < range.end; start++) {
        if (taken.has(start)) continue
        let end = start
        while (end < range.end && end - start < size && !taken.has(end)) end++
        if (end - start < least) continue
        for (let s = start; s < end; s++) taken.add(s)
        return { start, end }
      }
    }
    throw new Error(`no free span on ${shard}`)
  }
}
