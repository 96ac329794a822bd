/**
 * Removes a shop namespace's Redis keys (standalone and every Cluster master) and its queues
 * and exchange, so test and benchmark shops leave nothing on the shared servers. The
 * databases are dropped by the supervisor's `stop({ dropData: true })`.
 */
import amqp from 'amqplib'
import { Cluster, Redis } from 'ioredis'
import type { ShopConfig } from '../config.js'
import { shopQueues, shopTopology } from '../platform/mq.js'

export async function dropKeysAndQueues(
  config: Pick<ShopConfig, 'ns' | 'redisClusterNodes' | 'redisClusterPrivate'>,
  redisUrl: string,
  /** The RabbitMQ cluster's nodes: the first that answers is used (one may be down). */
  amqpUrls: readonly string[],
): Promise<void> {
  const ns = config.ns
  const r = new Redis(redisUrl)
  const del = async (client: Redis) => {
    let cursor = '0'
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${ns}:*`, 'COUNT', 500)
      cursor = next
      if (keys.length) await client.del(...keys)
    } while (cursor !== '0')
  }
  await del(r).catch(() => {})
  r.disconnect()
  // The shop's own cluster went with the supervisor: nothing of it is left to clean.
  if (!config.redisClusterPrivate) {
    const cluster = new Cluster(config.redisClusterNodes)
    await Promise.all(
      cluster.nodes('master').map((n) => del(n as unknown as Redis).catch(() => {})),
    )
    await cluster.quit().catch(() => {})
  }
  const q = shopQueues(ns)
  let conn: amqp.ChannelModel | undefined
  let lastError: unknown
  for (const url of amqpUrls) {
    try {
      conn = await amqp.connect(url, { timeout: 5000 })
      break
    } catch (error) {
      lastError = error
    }
  }
  if (!conn) throw lastError
  conn.on('error', () => {})
  const ch = await conn.createChannel()
  ch.on('error', () => {})
  for (const def of shopTopology(ns).queues ?? []) {
    const delays = def.retry ? [...new Set((def.retry.delays ?? []) as number[])] : []
    for (const name of [
      def.name,
      `${def.name}.dlq`,
      ...delays.map((d) => `${def.name}.retry.${d}ms`),
    ]) {
      await ch.deleteQueue(name).catch(() => {})
    }
  }
  await ch.deleteExchange(q.exchange).catch(() => {})
  await conn.close().catch(() => {})
}
