import { existsSync } from 'node:fs'
import { Cluster, Redis } from 'ioredis'
import { afterAll, describe, expect, it } from 'vitest'
import {
  disposables,
  type PrivateRedisCluster,
  redisKeySlot,
  startPrivateRedisCluster,
} from '../src/index.js'

const bin = disposables()
afterAll(() => bin.cleanup())

function alive(pid: number | undefined): boolean {
  if (pid === undefined) return false
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

describe('startPrivateRedisCluster', () => {
  let cluster: PrivateRedisCluster

  it('starts 3 masters with a replica each, every slot served', async () => {
    cluster = await startPrivateRedisCluster({ nodeTimeout: 1000 })
    bin.use(cluster)
    expect(cluster.nodes).toHaveLength(6)
    const roles = await cluster.roles()
    expect(roles.filter((r) => r.role === 'master')).toHaveLength(3)
    for (const master of roles.filter((r) => r.role === 'master'))
      expect(await cluster.replicasOf(master.node.port)).toHaveLength(1)
    const client = new Cluster(cluster.seeds)
    try {
      for (let i = 0; i < 50; i++) await client.set(`k:${i}`, String(i))
      expect(await client.get('k:7')).toBe('7')
      const master = await cluster.masterOf('k:7')
      await cluster.waitReplicated(master.port)
      const replica = new Redis((await cluster.replicaOf(master.port)).port)
      try {
        await replica.readonly()
        expect(await replica.get('k:7')).toBe('7') // applied on the replica
      } finally {
        replica.disconnect()
      }
    } finally {
      client.disconnect()
    }
  })

  it('promotes the replica of a SIGKILLed master and takes the old master back as a replica', async () => {
    const master = await cluster.masterOf('k:7')
    const replica = await cluster.replicaOf(master.port)
    await cluster.kill(master.port)
    expect(alive(master.pid)).toBe(false)
    await cluster.waitHealthy(15_000)
    expect((await cluster.masterOf('k:7')).port).toBe(replica.port)
    expect(await cluster.command(replica.port, 'GET', 'k:7')).toBe('7')

    await cluster.restart(master.port)
    await cluster.waitHealthy(15_000)
    expect((await cluster.replicasOf(replica.port)).map((n) => n.port)).toEqual([master.port])
  })

  it('computes the slot of a key as CLUSTER KEYSLOT does, and knows which master serves it', async () => {
    for (const key of ['foo', 'a{b}c', '{}x', 'idem:{k1}', 'x{{a}}', 'a{}{b}', 'ü{']) {
      const slot = redisKeySlot(key)
      expect(slot, key).toBe(
        Number(await cluster.command(cluster.nodes[0]!.port, 'CLUSTER', 'KEYSLOT', key)),
      )
      const master = await cluster.masterOf(key)
      const ranges = await cluster.slotsOf(master.port)
      expect(ranges.some(([from, to]) => slot >= from && slot <= to)).toBe(true)
    }
  })

  it('pauses and resumes a node (SIGSTOP/SIGCONT)', async () => {
    const master = await cluster.masterOf('k:1')
    const replica = await cluster.replicaOf(master.port)
    cluster.pause(replica.port)
    await expect(cluster.command(replica.port, 'PING')).rejects.toThrow()
    cluster.resume(replica.port)
    expect(await cluster.command(replica.port, 'PING')).toBe('PONG')
  })

  it('kills every process and removes its folder on close()', async () => {
    const pids = cluster.nodes.map((n) => n.pid)
    const dir = cluster.nodes[0]?.dir as string
    await cluster.close()
    expect(pids.filter(alive)).toEqual([])
    expect(existsSync(dir)).toBe(false)
    await cluster.close() // idempotent
  })

  it('fails loudly, with the log tail, when a node cannot start', async () => {
    await expect(
      startPrivateRedisCluster({ serverArgs: ['--no-such-option', 'x'], startTimeout: 5000 }),
    ).rejects.toThrow(/did not start[\s\S]*(no-such-option|Bad directive|exited at start)/)
  })
})
