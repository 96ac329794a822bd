/**
 * A cross-process lock on a shared topology, for whoever takes one of its servers down: the
 * mq cluster test and the shop's chaos switch both kill nodes of the same RabbitMQ cluster,
 * and in a parallel test run each must find the cluster whole when it starts its fault.
 *
 * The lock is a file, `<repo>/.topology/locks/<name>.lock`, created with `O_EXCL`; it holds the
 * holder's pid, the process's start time (from `/proc`, so a reused pid is not taken for the
 * holder), a label and the time it was taken. A lock whose process is gone is stale and is
 * taken over: a test killed while holding it does not block the next run.
 */
import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('../../../', import.meta.url))

/** Where the lock files live: `<repo>/.topology/locks` (git-ignored with the rest of `.topology/`). */
export const TOPOLOGY_LOCK_DIR = join(ROOT, '.topology', 'locks')

/** How {@link acquireTopologyLock} waits. */
export interface TopologyLockOptions {
  /**
   * Milliseconds to wait for a lock another process holds before failing.
   * @default 180000
   */
  timeout?: number
  /**
   * Milliseconds between two tries.
   * @default 100
   */
  pollInterval?: number
  /**
   * Who takes it, shown to a waiter that times out (e.g. `mq cluster test`).
   * @default `pid <pid>`
   */
  holder?: string
}

/** A held lock; {@link TopologyLock.release} is idempotent. */
export interface TopologyLock {
  readonly name: string
  readonly file: string
  /** Removes the lock file if it is still ours. */
  release(): void
}

interface LockRecord {
  pid: number
  start: string
  host: string
  holder: string
  token: string
  at: number
}

/** The start time of process `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat). */
function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // fields[0] is field 3 (state); field 22 is fields[19]
    if (fields[0] === 'Z') return undefined
    return fields[19]
  } catch {
    return undefined
  }
}

function holderAlive(record: LockRecord): boolean {
  if (record.host !== hostname()) return true // another machine's process: never judged stale
  const start = processStart(record.pid)
  return start !== undefined && (record.start === '' || start === record.start)
}

function readRecord(file: string): LockRecord | undefined {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as LockRecord
  } catch {
    return undefined
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * Takes the lock `name` (e.g. `rabbitmq-cluster`), waiting while another live process holds
 * it; a lock left by a dead process is taken over. Fails after `timeout` naming the holder.
 */
export async function acquireTopologyLock(
  name: string,
  options: TopologyLockOptions = {},
): Promise<TopologyLock> {
  if (!/^[A-Za-z0-9_.-]+$/.test(name))
    throw new TypeError(`invalid lock name ${JSON.stringify(name)}`)
  const timeout = options.timeout ?? 180_000
  const pollInterval = options.pollInterval ?? 100
  mkdirSync(TOPOLOGY_LOCK_DIR, { recursive: true })
  const file = join(TOPOLOGY_LOCK_DIR, `${name}.lock`)
  const record: LockRecord = {
    pid: process.pid,
    start: processStart(process.pid) ?? '',
    host: hostname(),
    holder: options.holder ?? `pid ${process.pid}`,
    token: randomBytes(12).toString('hex'),
    at: Date.now(),
  }
  const deadline = Date.now() + timeout
  let unreadableSince: number | undefined
  for (;;) {
    try {
      writeFileSync(file, JSON.stringify(record), { flag: 'wx' })
      let released = false
      return {
        name,
        file,
        release() {
          if (released) return
          released = true
          // only our own file: a lock taken over as stale (we were stopped too long) is not ours
          if (readRecord(file)?.token === record.token) unlinkSync(file)
        },
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
    }
    const current = readRecord(file)
    if (current === undefined) {
      // being written this instant, or left empty by a holder killed mid-write
      unreadableSince ??= Date.now()
      if (Date.now() - unreadableSince > 2000) {
        try {
          unlinkSync(file)
        } catch {}
        unreadableSince = undefined
      }
    } else {
      unreadableSince = undefined
      if (!holderAlive(current)) {
        // stale: remove it only if it is still the same record (a small window remains where two
        // waiters both judge it stale; the second then removes the first's fresh lock only if it
        // read that one, which it checks by token)
        if (readRecord(file)?.token === current.token) {
          try {
            unlinkSync(file)
          } catch {}
        }
        continue
      }
      if (Date.now() > deadline) {
        throw new Error(
          `topology lock ${name} still held after ${timeout} ms by ${current.holder} (pid ${current.pid}, for ${Math.round((Date.now() - current.at) / 1000)} s): ${file}`,
        )
      }
    }
    await sleep(pollInterval)
  }
}

/** Runs `fn` holding the lock `name`, and releases it however `fn` ends. */
export async function withTopologyLock<T>(
  name: string,
  fn: () => Promise<T>,
  options: TopologyLockOptions = {},
): Promise<T> {
  const lock = await acquireTopologyLock(name, options)
  try {
    return await fn()
  } finally {
    lock.release()
  }
}
