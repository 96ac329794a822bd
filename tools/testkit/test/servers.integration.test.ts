import { describe, expect, it } from 'vitest'
import {
  amqpClusterUrls,
  amqpUrl,
  exportServerUrls,
  mysqlPrimaryUrl,
  mysqlReplicaUrl,
  mysqlUrl,
  redisClusterNodes,
  redisUrl,
  resolveServer,
  SERVER_NAMES,
} from '../src/index.js'

// Topologies come from `bash scripts/topology.sh start`; a missing server fails here, loudly.
describe('resolveServer against the real servers', () => {
  for (const name of SERVER_NAMES) {
    it(`finds ${name} answering`, async () => {
      const server = name === 'amqp-cluster' ? await wholeCluster() : await resolveServer(name)
      expect(server.name).toBe(name)
      expect(['env', 'container', 'local']).toContain(server.source)
      expect(server.port).toBeGreaterThan(0)
      expect(server.nodes.length).toBe(
        name === 'redis-cluster' ? 6 : name === 'amqp-cluster' ? 3 : 1,
      )
      expect(server.urls).toHaveLength(name === 'redis-cluster' ? 6 : server.nodes.length)
    }, 90_000)
  }

  it('memoizes per process', async () => {
    const first = await resolveServer('redis')
    expect(await resolveServer('redis')).toBe(first)
  })

  it('has shorthands that agree with resolveServer', async () => {
    expect(await redisUrl()).toBe((await resolveServer('redis')).url)
    expect(await mysqlUrl()).toBe((await resolveServer('mysql')).url)
    expect(await mysqlPrimaryUrl()).toBe((await resolveServer('mysql-primary')).url)
    expect(await mysqlReplicaUrl()).toBe((await resolveServer('mysql-replica')).url)
    expect(await amqpClusterUrls()).toEqual([...(await resolveServer('amqp-cluster')).urls])
    expect(await amqpUrl()).toBe((await resolveServer('amqp')).url)
    expect(await redisClusterNodes()).toEqual((await resolveServer('redis-cluster')).nodes)
  })
})

describe('exportServerUrls', () => {
  it('writes the resolved addresses under their environment variables', async () => {
    const env: Record<string, string | undefined> = {}
    const exported = await exportServerUrls(['redis', 'amqp', 'redis-cluster'], env)
    expect(env).toEqual(exported)
    expect(env.REDIS_URL).toBe(await redisUrl())
    expect(env.AMQP_URL).toBe(await amqpUrl())
    const nodes = await redisClusterNodes()
    expect(env.REDIS_CLUSTER_NODES).toBe(nodes.map((n) => `${n.host}:${n.port}`).join(','))
    // and what it wrote resolves from the environment
    await expect(resolveServer('redis', { env })).resolves.toMatchObject({ source: 'env' })
  })
})

/**
 * The RabbitMQ cluster's nodes all answering. packages/mq's cluster test kills and restarts one
 * node at a time (each back within ~15 s) while other files run in parallel: wait for the three
 * rather than fail on a node it has down; a cluster that stays incomplete still fails, loudly.
 */
async function wholeCluster(): Promise<Awaited<ReturnType<typeof resolveServer>>> {
  const deadline = Date.now() + 60_000
  for (;;) {
    try {
      // with options: not memoized, so each attempt pings the three nodes again
      return await resolveServer('amqp-cluster', {})
    } catch (error) {
      if (Date.now() > deadline) throw error
      await new Promise((resolve) => setTimeout(resolve, 1000))
    }
  }
}
