/**
 * @ballast/mq on the real three-node RabbitMQ cluster of `bash scripts/topology.sh start
 * rabbitmq-cluster` (issue 19): quorum queues on all three nodes, and 10,000 confirmed
 * publishes consumed while (a) the node holding the queue's leader is SIGKILLed and restarted,
 * (b) the node the client is connected to is stopped (`rabbitmqctl stop`) and restarted.
 *
 * Destructive for the shared cluster, so everything that needs the cluster whole runs in this
 * file, in order: the quorum-queue proof first (moved here from testkit's topology test, which
 * would otherwise run in parallel with the faults), then the faults. Each fault test restarts
 * the node it took down and waits for the three nodes to see each other before it ends.
 *
 * The example shop's chaos switch kills nodes of the same cluster (its tests run in parallel
 * with these): every test here, and each restart in the hooks, holds the cross-process lock
 * RABBITMQ_CLUSTER_LOCK that the shop also holds while one of its nodes is down.
 */
import { performance } from 'node:perf_hooks'
import { createIdempotency } from '@ballast/resilience'
import {
  type AmqpNames,
  amqpClusterUrls,
  amqpNames,
  redisKeyspace,
  redisUrl,
  uniqueName,
} from '@ballast/testkit'
import amqp from 'amqplib'
import { Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import {
  type Broker,
  type BrokerOptions,
  createBroker,
  idempotencyDeduplicator,
  isMqError,
} from '../src/index.js'
import {
  acquireTopologyLock,
  clusterStatus,
  killNode,
  NODES,
  type NodeNumber,
  nodeName,
  nodeNumber,
  nodeOfUrl,
  quorumQueue,
  RABBITMQ_CLUSTER_LOCK,
  startCluster,
  stopNode,
  type TopologyLock,
  withTopologyLock,
} from './clusterNodes.js'
import { closeAll, until, within } from './support/bounded.js'

let urls: string[]
let names: AmqpNames
let redis: Redis
let keyspace: ReturnType<typeof redisKeyspace>
const brokers: Broker[] = []
const cleanups: Array<() => Promise<unknown>> = []

const urlOf = (n: NodeNumber) => urls[n - 1] as string
const ALL_NODES = NODES.map(nodeName).sort()

const LOCK_OPTIONS = { holder: 'mq cluster test', timeout: 120_000 }

beforeAll(async () => {
  await withTopologyLock(
    RABBITMQ_CLUSTER_LOCK,
    async () => {
      const status = await clusterStatus()
      if (!status.whole && status.out.includes(' up (pid ')) {
        // some node left down (e.g. by an interrupted run of this file): start is idempotent,
        // and fails loudly if it cannot make the cluster whole
        await startCluster()
      }
    },
    LOCK_OPTIONS,
  )
  // no cluster at all: amqpClusterUrls() throws, naming the command that starts it
  urls = await amqpClusterUrls()
  expect(urls).toHaveLength(3)
  names = amqpNames('mqcluster', { url: urlOf(1) })
  redis = new Redis(await redisUrl())
  keyspace = redisKeyspace(redis, 'mqcluster')
}, 200_000)

afterAll(async () => {
  await closeAll(brokers.map((b) => () => b.close()))
  await closeAll(cleanups)
  // whatever failed above, leave the cluster whole for the next file and run
  await withTopologyLock(RABBITMQ_CLUSTER_LOCK, () => startCluster(), LOCK_OPTIONS)
  await closeAll([() => names.cleanup(), () => keyspace.cleanup()], 20_000)
  redis.disconnect()
}, 200_000)

describe('RabbitMQ cluster (three nodes)', () => {
  // Each test needs the three nodes (the faults take one down and bring it back): none runs
  // while another process (the shop's chaos switch) has a node down, and none starts a fault
  // while it does.
  let lock: TopologyLock | undefined
  beforeEach(async () => {
    lock = await acquireTopologyLock(RABBITMQ_CLUSTER_LOCK, LOCK_OPTIONS)
  }, 150_000)
  afterEach(async (context) => {
    try {
      // a failed fault test may have left its node down: bring it back before letting go
      if (context.task.result?.state === 'fail') await startCluster()
    } finally {
      lock?.release()
      lock = undefined
    }
  }, 200_000)

  it('a quorum queue declared on node 1 takes a confirmed publish on node 2 and delivers it on node 3, and is replicated on all three', async () => {
    const [one, two, three] = await Promise.all(
      urls.map(async (url) => {
        const connection = await amqp.connect(url)
        connection.on('error', () => {})
        cleanups.push(() => connection.close().catch(() => {}))
        return connection
      }),
    )
    const queue = names.queue('proof')
    const declaring = await one!.createChannel()
    const declared = await declaring.assertQueue(queue, {
      durable: true,
      arguments: { 'x-queue-type': 'quorum' },
    })
    expect(declared.queue).toBe(queue)
    expect(await quorumQueue(queue)).toMatchObject({ members: ALL_NODES })

    const publishing = await two!.createConfirmChannel()
    const body = uniqueName('body')
    publishing.sendToQueue(queue, Buffer.from(body), { persistent: true })
    await publishing.waitForConfirms()

    const consuming = await three!.createChannel()
    await consuming.prefetch(1)
    const received = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no delivery on node 3 within 10 s')), 10_000)
      void consuming.consume(queue, (message) => {
        if (message === null) return
        clearTimeout(timer)
        consuming.ack(message)
        resolve(message.content.toString())
      })
    })
    expect(received).toBe(body)
    const check = await two!.createChannel()
    expect((await check.checkQueue(queue)).messageCount).toBe(0)
  })

  it("the broker's topology (type: 'quorum') declares quorum queues with members on all three nodes", async () => {
    const queue = names.queue('topology')
    const b = track(
      createBroker({ urls: [...urls], topology: topologyOf(queue), shutdownTimeout: 2000 }),
    )
    await within(b.ready(), 20_000, 'ready()')
    const q = await quorumQueue(queue)
    expect(q.members).toEqual(ALL_NODES)
    expect(ALL_NODES).toContain(q.leader)
    await within(b.close(), 10_000, 'close()')
  })

  it("a quorum queue's retry queues are quorum queues on all three nodes (a classic one would strand retries on one node), and a failed message comes back through one", async () => {
    const queue = names.queue('retries')
    names.queue('retries.retry.200ms') // the retry queue the topology declares, for cleanup
    const b = track(
      createBroker({
        urls: [...urls],
        topology: {
          queues: [{ name: queue, type: 'quorum', retry: { delays: [200] }, deadLetter: false }],
        },
        shutdownTimeout: 2000,
      }),
    )
    const attempts: number[] = []
    await b.consume(queue, async () => {
      attempts.push(performance.now())
      if (attempts.length === 1) throw new Error('fails once')
    })
    await within(b.ready(), 20_000, 'ready()')
    expect((await quorumQueue(`${queue}.retry.200ms`)).members).toEqual(ALL_NODES)
    await within(b.publish('', queue, { n: 1 }), 10_000, 'publish')
    await until(
      () => attempts.length === 2,
      10_000,
      'the retry to come back',
      () => attempts,
    )
    await within(b.close(), 10_000, 'close()')
  })

  it('LONGEST (~15 s): 10,000 confirmed publishes while the queue leader node is SIGKILLed and restarted: lost 0, processed twice 0', async () => {
    const figures = await failover('leader-kill', 'kill-leader')
    expectClean(figures)
  }, 150_000)

  it('LONGEST (~15 s): 10,000 confirmed publishes while the node the client is connected to is stopped and restarted: lost 0, processed twice 0, the client moves to a live node', async () => {
    const figures = await failover('client-node-stop', 'stop-client-node')
    expectClean(figures)
    // both connections were on the stopped node: both moved to another one
    expect(figures.reconnects).toEqual({ publisher: 1, consumer: 1 })
    expect(figures.movedTo.every((n) => n !== figures.target)).toBe(true)
  }, 150_000)

  it('LONGEST (~15 s): 10,000 confirmed publishes while the node holding both the client and the queue leader is SIGKILLed and restarted: lost 0, processed twice 0, the client moves to a live node', async () => {
    const figures = await failover('client-leader-kill', 'kill-client-and-leader-node')
    expectClean(figures)
    expect(figures.reconnects).toEqual({ publisher: 1, consumer: 1 })
    expect(figures.movedTo.every((n) => n !== figures.target)).toBe(true)
    expect(figures.leaderAfter).not.toBe(figures.leaderBefore)
  }, 150_000)
})

function track(b: Broker): Broker {
  brokers.push(b)
  return b
}

function topologyOf(queue: string): NonNullable<BrokerOptions['topology']> {
  return { queues: [{ name: queue, type: 'quorum', retry: false, deadLetter: false }] }
}

const N = 10_000
const RATE = 2000 // publishes per second: the run lasts 5 s, the fault comes at 1 s
const FAULT_AT = 2000
const RESTART_AFTER_MS = 1000

interface Figures {
  scenario: string
  target: NodeNumber
  leaderBefore: string
  leaderAfter: string
  lost: number
  processedTwice: number
  failedPublishes: number
  /**
   * Publishes the broker nacked (PublishNackedError, retryable) and the test published again
   * with the same message id, as an application does: a quorum queue nacks while it has no
   * leader. The message id makes a copy that was in fact stored a duplicate the consumer drops.
   */
  nackedAndRetried: number
  confirmed: number
  /** ms from the fault to the `disconnected` and `connected` events, per connection that dropped. */
  disconnectMs: Partial<Record<'publisher' | 'consumer', number>>
  reconnectMs: Partial<Record<'publisher' | 'consumer', number>>
  /** ms from `disconnected` to `connected` (on another node), per connection that dropped. */
  outageMs: Partial<Record<'publisher' | 'consumer', number>>
  /** The nodes the dropped connections moved to. */
  movedTo: NodeNumber[]
  reconnects: { publisher: number; consumer: number }
  /** Publishes held up by the failover: issued before the longest wait for a confirm after the
   * fault ended, and confirmed after it. And the slowest publish (call to confirm). */
  publishesDelayed: number
  maxPublishMs: number
  p99BeforeFaultMs: number
  /** Longest time without a confirm, and without a delivery, after the fault. */
  confirmGapMs: number
  deliveryGapMs: number
  resent: number
  redelivered: number
  duplicatesDropped: number
  staleAcks: number
  cancellations: number
  /** ms from the fault to a whole cluster again (the restart included). */
  wholeAgainMs: number
}

function expectClean(f: Figures): void {
  console.info(`mq cluster failover figures (${f.scenario}):`, JSON.stringify(f))
  expect({
    lost: f.lost,
    processedTwice: f.processedTwice,
    failedPublishes: f.failedPublishes,
    confirmed: f.confirmed,
    reconnectedWithin5s: Object.values(f.outageMs).every((ms) => ms < 5000),
    figures: f,
  }).toEqual({
    lost: 0,
    processedTwice: 0,
    failedPublishes: 0,
    confirmed: N,
    reconnectedWithin5s: true,
    figures: f,
  })
}

type FaultKind = 'kill-leader' | 'stop-client-node' | 'kill-client-and-leader-node'

async function failover(label: string, kind: FaultKind): Promise<Figures> {
  const queue = names.queue(label)
  const topology = topologyOf(queue)
  // declare the queue through node 3 (its leader starts there), then connect the client elsewhere
  const declarer = createBroker({ urls: urlOf(3), topology, shutdownTimeout: 2000 })
  await within(declarer.ready(), 20_000, 'declaring the queue')
  await within(declarer.close(), 10_000, 'closing the declaring broker')
  const before = await quorumQueue(queue)
  expect(before.members).toEqual(ALL_NODES)
  const leader = nodeNumber(before.leader)
  const others = NODES.filter((n) => n !== leader)
  // (a) kills the leader's node alone, (b) stops the client's node alone, (c) kills the node
  // that holds both (what a client that declares its own queues usually gets)
  const clientNode = kind === 'kill-client-and-leader-node' ? leader : (others[0] as NodeNumber)
  const target = kind === 'kill-leader' ? leader : clientNode
  const order = [clientNode, ...NODES.filter((n) => n !== clientNode)]

  const b = track(
    createBroker({
      urls: order.map(urlOf),
      topology,
      maxBuffered: N,
      shutdownTimeout: 5000,
    }),
  )
  const events: Array<{ at: number; event: string; role: string; node?: NodeNumber }> = []
  b.on('connected', (e) =>
    events.push({
      at: performance.now(),
      event: 'connected',
      role: e.role,
      node: nodeOfUrl(e.url),
    }),
  )
  b.on('disconnected', (e) =>
    events.push({ at: performance.now(), event: 'disconnected', role: e.role }),
  )

  const processed = new Map<number, number>()
  const deliveredAt: number[] = []
  await b.consume(
    queue,
    async (m) => {
      const n = (m.body as { n: number }).n
      processed.set(n, (processed.get(n) ?? 0) + 1)
      deliveredAt.push(performance.now())
    },
    {
      prefetch: 100,
      idempotency: idempotencyDeduplicator(
        createIdempotency({ redis, prefix: `${keyspace.prefix}${label}:`, lease: 10_000 }),
      ),
    },
  )
  await within(b.ready(), 20_000, 'ready()')
  const connectedTo = events.filter((e) => e.event === 'connected').map((e) => e.node)
  expect(connectedTo).toEqual([clientNode, clientNode])

  const latency = new Array<number>(N).fill(Number.NaN)
  const issuedAt = new Array<number>(N).fill(Number.NaN)
  const confirmedAt: number[] = []
  const publishes: Array<Promise<unknown>> = []
  let faultAt = Number.NaN
  let fault: Promise<void> | undefined
  let nackedAndRetried = 0
  const progress = () => ({ ...b.stats(), processed: processed.size, nackedAndRetried, events })
  // What an application does with a retryable refusal: publish again, same message id, after a
  // short pause, for a bounded time. Anything else (or a refusal past the bound) fails the test.
  const publishUntilConfirmed = async (n: number): Promise<void> => {
    const deadline = performance.now() + 30_000
    for (;;) {
      try {
        await b.publish('', queue, { n }, { messageId: `${label}-${n}` })
        return
      } catch (error) {
        if (!isMqError(error) || error.code !== 'E_MQ_PUBLISH_NACKED') throw error
        if (performance.now() > deadline) throw error
        nackedAndRetried++
        await new Promise((r) => setTimeout(r, 100))
      }
    }
  }
  const started = performance.now()
  for (let n = 0; n < N; n++) {
    if (n % 20 === 0) {
      const wait = started + (n * 1000) / RATE - performance.now()
      if (wait > 0) await new Promise((r) => setTimeout(r, wait))
    }
    if (n === FAULT_AT) {
      faultAt = performance.now()
      fault = (async () => {
        if (kind === 'stop-client-node') await stopNode(target)
        else await killNode(target)
        await new Promise((r) => setTimeout(r, RESTART_AFTER_MS))
        await startCluster()
      })()
      // surfaced by the await below; never an unhandled rejection meanwhile
      fault.catch(() => {})
    }
    const t0 = performance.now()
    issuedAt[n] = t0
    const confirmed = publishUntilConfirmed(n).then(() => {
      const t = performance.now()
      latency[n] = t - t0
      confirmedAt.push(t)
    })
    confirmed.catch(() => {}) // counted from allSettled below; never an unhandled rejection
    publishes.push(confirmed)
  }
  const results = await within(
    Promise.allSettled(publishes),
    60_000,
    'the 10,000 confirmed publishes',
    progress,
  )
  const failed = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[]
  await until(() => processed.size === N, 60_000, 'every message consumed', progress)
  await within(fault as Promise<void>, 150_000, 'restarting the node')
  const wholeAgainMs = performance.now() - faultAt
  // late redeliveries of acked-but-unconfirmed deliveries would show up here
  await new Promise((r) => setTimeout(r, 1000))
  const after = await quorumQueue(queue)
  expect(after.members).toEqual(ALL_NODES)

  const stats = b.stats()
  const disconnectMs: Figures['disconnectMs'] = {}
  const reconnectMs: Figures['reconnectMs'] = {}
  const outageMs: Figures['outageMs'] = {}
  const movedTo: NodeNumber[] = []
  for (const role of ['publisher', 'consumer'] as const) {
    const down = events.find(
      (e) => e.role === role && e.event === 'disconnected' && e.at >= faultAt,
    )
    const up = events.find((e) => e.role === role && e.event === 'connected' && e.at >= faultAt)
    if (down) disconnectMs[role] = Math.round(down.at - faultAt)
    if (up) {
      reconnectMs[role] = Math.round(up.at - faultAt)
      movedTo.push(up.node as NodeNumber)
    }
    if (down && up) outageMs[role] = Math.round(up.at - down.at)
  }
  // the longest stretch without an event after the fault, and when it ended
  const gap = (times: number[]) => {
    const sorted = times.filter((t) => t >= faultAt).sort((x, y) => x - y)
    let longest = sorted.length > 0 ? (sorted[0] as number) - faultAt : 0
    let end = sorted[0] ?? faultAt
    for (let i = 1; i < sorted.length; i++) {
      const length = (sorted[i] as number) - (sorted[i - 1] as number)
      if (length > longest) {
        longest = length
        end = sorted[i] as number
      }
    }
    return { ms: Math.round(longest), end }
  }
  const confirmGap = gap(confirmedAt)
  const beforeFault = latency.slice(0, FAULT_AT).sort((x, y) => x - y)
  const twice = [...processed.values()].filter((c) => c > 1).length
  await within(b.close(), 10_000, 'close()')
  return {
    scenario: `${kind} (node ${target}; client on node ${clientNode})`,
    target,
    leaderBefore: before.leader,
    leaderAfter: after.leader,
    lost: N - processed.size,
    processedTwice: twice,
    failedPublishes: failed.length,
    nackedAndRetried,
    confirmed: stats.confirmed,
    disconnectMs,
    reconnectMs,
    outageMs,
    movedTo,
    reconnects: { ...stats.reconnects },
    publishesDelayed: latency.filter(
      (ms, n) =>
        (issuedAt[n] as number) < confirmGap.end && (issuedAt[n] as number) + ms >= confirmGap.end,
    ).length,
    maxPublishMs: Math.round(Math.max(...latency.filter((ms) => !Number.isNaN(ms)))),
    p99BeforeFaultMs: Math.round(beforeFault[Math.floor(beforeFault.length * 0.99)] ?? 0),
    confirmGapMs: confirmGap.ms,
    deliveryGapMs: gap(deliveredAt).ms,
    resent: stats.resent,
    redelivered: stats.redelivered,
    duplicatesDropped: stats.duplicates,
    staleAcks: stats.staleAcks,
    cancellations: stats.cancellations,
    wholeAgainMs: Math.round(wholeAgainMs),
  }
}
