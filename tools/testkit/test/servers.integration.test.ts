import { describe, expect, it } from 'vitest'
import {
  amqpUrl,
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
      const server = await resolveServer(name)
      expect(server.name).toBe(name)
      expect(['env', 'container', 'local']).toContain(server.source)
      expect(server.port).toBeGreaterThan(0)
      expect(server.nodes.length).toBe(name === 'redis-cluster' ? 6 : 1)
    })
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
    expect(await amqpUrl()).toBe((await resolveServer('amqp')).url)
    expect(await redisClusterNodes()).toEqual((await resolveServer('redis-cluster')).nodes)
  })
})
