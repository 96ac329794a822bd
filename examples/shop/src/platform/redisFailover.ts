/**
 * The chaos switch's "redis-failover": a graceful manual failover of the Redis Cluster master
 * that holds the most of the shop's session keys (`CLUSTER FAILOVER` sent to its replica, which
 * takes over the master's slots once it has caught up), and the same in reverse to fail back.
 * Clients follow the new master through `MOVED` redirections.
 *
 * A manual failover, not a kill: the shop's sessions live on the shared Redis Cluster that
 * other test files use at the same time, and a graceful failover loses no write and never
 * leaves a slot unserved for longer than the switch itself.
 */
import { Redis } from 'ioredis'

export interface ClusterNode {
  host: string
  port: number
}

interface NodeLine {
  id: string
  host: string
  port: number
  flags: string[]
  masterId: string | undefined
  connected: boolean
}

/** What a failover did: `promoted` took over the slots of `demoted`. */
export interface RedisFailover {
  promoted: ClusterNode
  demoted: ClusterNode
  /** Session keys the demoted master held before. */
  sessionKeys: number
  /** Milliseconds from `CLUSTER FAILOVER` to the promoted node reporting itself master. */
  tookMs: number
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function withNode<T>(node: ClusterNode, fn: (r: Redis) => Promise<T>): Promise<T> {
  const r = new Redis({
    host: node.host,
    port: node.port,
    lazyConnect: true,
    connectTimeout: 2000,
    commandTimeout: 5000,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: true,
    retryStrategy: () => null,
  })
  r.on('error', () => {})
  try {
    await r.connect()
    return await fn(r)
  } finally {
    r.disconnect()
  }
}

/** `CLUSTER NODES` as one of `seeds` sees it (the first that answers). */
async function clusterNodes(seeds: readonly ClusterNode[]): Promise<NodeLine[]> {
  let lastError: unknown
  for (const seed of seeds) {
    try {
      const text = (await withNode(seed, (r) => r.call('CLUSTER', 'NODES'))) as string
      return text
        .trim()
        .split('\n')
        .map((line) => {
          const [id = '', address = '', flags = '', master = '-', , , , state = ''] =
            line.split(' ')
          const hostPort = address.split('@')[0] ?? ''
          const colon = hostPort.lastIndexOf(':')
          return {
            id,
            host: hostPort.slice(0, colon),
            port: Number(hostPort.slice(colon + 1)),
            flags: flags.split(','),
            masterId: master === '-' ? undefined : master,
            connected: state === 'connected',
          }
        })
    } catch (error) {
      lastError = error
    }
  }
  throw new Error(`no node of the Redis Cluster answered CLUSTER NODES: ${String(lastError)}`)
}

const isMaster = (n: NodeLine) => n.flags.includes('master') && !n.flags.includes('fail')

/** Keys matching `pattern` on one node (SCAN). */
export async function countKeys(node: ClusterNode, pattern: string): Promise<number> {
  return withNode(node, async (r) => {
    let n = 0
    let cursor = '0'
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
      cursor = next
      n += keys.length
    } while (cursor !== '0')
    return n
  })
}

/** Sends `CLUSTER FAILOVER` to `replica` and waits (bounded) until it reports itself master. */
async function promote(replica: ClusterNode, timeoutMs: number): Promise<number> {
  const started = Date.now()
  await withNode(replica, (r) => r.call('CLUSTER', 'FAILOVER'))
  const deadline = started + timeoutMs
  while (Date.now() < deadline) {
    const role = await withNode(replica, (r) => r.call('ROLE')).catch(() => undefined)
    if (Array.isArray(role) && role[0] === 'master') return Date.now() - started
    await sleep(50)
  }
  throw new Error(
    `${replica.host}:${replica.port} was not master ${timeoutMs} ms after CLUSTER FAILOVER`,
  )
}

/**
 * Fails over the master holding the most keys matching `pattern` (the shop's sessions) to its
 * replica, and resolves once the replica serves the slots as master.
 */
export async function failOverSessionMaster(
  seeds: readonly ClusterNode[],
  pattern: string,
  timeoutMs = 15_000,
): Promise<RedisFailover> {
  const nodes = await clusterNodes(seeds)
  const masters = nodes.filter(isMaster)
  let best: { master: NodeLine; keys: number } | undefined
  for (const master of masters) {
    const keys = await countKeys(master, pattern).catch(() => 0)
    if (!best || keys > best.keys) best = { master, keys }
  }
  if (!best) throw new Error('the Redis Cluster has no master')
  const { master, keys } = best
  const replica = nodes.find(
    (n) => n.masterId === master.id && n.connected && !n.flags.includes('fail'),
  )
  if (!replica) throw new Error(`master ${master.host}:${master.port} has no live replica`)
  const tookMs = await promote(replica, timeoutMs)
  return {
    promoted: { host: replica.host, port: replica.port },
    demoted: { host: master.host, port: master.port },
    sessionKeys: keys,
    tookMs,
  }
}

/** Gives the slots back to `failover.demoted` (now a replica of the promoted node): a failover the other way. */
export async function failBack(
  seeds: readonly ClusterNode[],
  failover: RedisFailover,
  timeoutMs = 15_000,
): Promise<number> {
  const nodes = await clusterNodes(seeds)
  const demoted = nodes.find(
    (n) => n.host === failover.demoted.host && n.port === failover.demoted.port,
  )
  if (!demoted)
    throw new Error(`${failover.demoted.host}:${failover.demoted.port} left the cluster`)
  if (isMaster(demoted)) return 0 // someone failed it back already
  return promote(failover.demoted, timeoutMs)
}
