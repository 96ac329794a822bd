import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { acquireTopologyLock, TOPOLOGY_LOCK_DIR, withTopologyLock } from '../src/rabbitmqCluster.js'
import { uniqueName } from '../src/uniqueName.js'

describe('topology lock', () => {
  it('is held by one at a time: a second taker waits until the first releases', async () => {
    const name = uniqueName('lock')
    const first = await acquireTopologyLock(name, { holder: 'first' })
    expect(JSON.parse(readFileSync(first.file, 'utf8'))).toMatchObject({
      pid: process.pid,
      holder: 'first',
    })
    const order: string[] = []
    const second = withTopologyLock(name, async () => order.push('second'), { pollInterval: 10 })
    await new Promise((r) => setTimeout(r, 100))
    order.push('first released')
    first.release()
    await second
    expect(order).toEqual(['first released', 'second'])
    expect(existsSync(first.file)).toBe(false)
  })

  it('fails after its timeout, naming the holder', async () => {
    const name = uniqueName('lock')
    const held = await acquireTopologyLock(name, { holder: 'the mq cluster test' })
    try {
      await expect(acquireTopologyLock(name, { timeout: 200, pollInterval: 20 })).rejects.toThrow(
        /still held after 200 ms by the mq cluster test/,
      )
    } finally {
      held.release()
    }
  })

  it('takes over a lock whose holder is dead', async () => {
    const name = uniqueName('lock')
    // a process that ran and exited: its pid is free
    const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'])
    const file = join(TOPOLOGY_LOCK_DIR, `${name}.lock`)
    const first = await acquireTopologyLock(name)
    first.release()
    writeFileSync(
      file,
      JSON.stringify({
        pid: Number(gone.stdout.toString()),
        start: '1',
        host: hostname(),
        holder: 'a killed test',
        token: 'x',
        at: Date.now(),
      }),
    )
    const lock = await acquireTopologyLock(name, { timeout: 2000 })
    expect(JSON.parse(readFileSync(file, 'utf8')).pid).toBe(process.pid)
    lock.release()
  })

  it('release() leaves a lock that is no longer its own', async () => {
    const name = uniqueName('lock')
    const lock = await acquireTopologyLock(name)
    const other = { ...JSON.parse(readFileSync(lock.file, 'utf8')), token: 'someone else' }
    writeFileSync(lock.file, JSON.stringify(other))
    lock.release()
    expect(JSON.parse(readFileSync(lock.file, 'utf8')).token).toBe('someone else')
    unlinkSync(lock.file)
  })
})
