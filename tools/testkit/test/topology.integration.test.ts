import { Redis } from 'ioredis'
import mysql from 'mysql2/promise'
import { afterAll, describe, expect, it } from 'vitest'
import {
  disposables,
  mysqlPrimaryUrl,
  mysqlReplicaUrl,
  redisClusterNodes,
  uniqueName,
} from '../src/index.js'
import { sleep } from './helpers.js'

// The topologies of `bash scripts/topology.sh start`: MariaDB primary 3307 -> replica 3308
// (GTID), Redis Cluster 7000-7005. These prove the foundation's "done when".
const bin = disposables()
afterAll(() => bin.cleanup())

describe('MariaDB replication', () => {
  it('a row written on the primary is read on the replica', async () => {
    const primary = await mysql.createConnection({ uri: await mysqlPrimaryUrl() })
    bin.defer(() => primary.end())
    const replica = await mysql.createConnection({ uri: await mysqlReplicaUrl() })
    bin.defer(() => replica.end())

    const table = uniqueName('replication')
    const value = uniqueName('row')
    await primary.query(`CREATE TABLE \`${table}\` (id INT PRIMARY KEY, v VARCHAR(64))`)
    bin.defer(() => primary.query(`DROP TABLE IF EXISTS \`${table}\``))
    await primary.query(`INSERT INTO \`${table}\` VALUES (1, ?)`, [value])

    const deadline = Date.now() + 10_000
    let rows: unknown[] = []
    while (Date.now() < deadline) {
      try {
        ;[rows] = (await replica.query(`SELECT v FROM \`${table}\` WHERE id = 1`)) as [
          unknown[],
          unknown,
        ]
        if (rows.length > 0) break
      } catch (error) {
        // the CREATE TABLE may not have been applied yet
        if ((error as { code?: string }).code !== 'ER_NO_SUCH_TABLE') throw error
      }
      await sleep(50)
    }
    expect(rows).toEqual([{ v: value }])
  })

  it('the replica is read-only and replicates by GTID', async () => {
    const replica = await mysql.createConnection({ uri: await mysqlReplicaUrl() })
    bin.defer(() => replica.end())
    const [[vars]] = (await replica.query(
      'SELECT @@read_only AS readOnly, @@gtid_strict_mode AS strict, @@gtid_slave_pos AS pos',
    )) as [Array<{ readOnly: number; strict: number; pos: string }>, unknown]
    expect(vars).toMatchObject({ readOnly: 1, strict: 1 })
    expect(vars?.pos).toMatch(/^\d+-\d+-\d+/)
  })
})

describe('Redis Cluster', () => {
  it('answers CLUSTER INFO with cluster_state:ok and every slot assigned', async () => {
    const nodes = await redisClusterNodes()
    expect(nodes).toHaveLength(6)
    for (const node of nodes) {
      const redis = bin.use(new Redis({ host: node.host, port: node.port, lazyConnect: true }))
      await redis.connect()
      const info = String(await redis.call('CLUSTER', 'INFO'))
      expect(info).toContain('cluster_state:ok')
      expect(info).toContain('cluster_slots_assigned:16384')
      expect(info).toContain('cluster_known_nodes:6')
      redis.disconnect()
    }
  })
})

// The RabbitMQ cluster's proof (a quorum queue declared on node 1, published to on node 2,
// consumed on node 3) runs in packages/mq/test/cluster.integration.test.ts, before that file's
// node kills: here, in parallel with them, it would meet a node that is down.
