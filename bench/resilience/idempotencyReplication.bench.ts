/**
 * The cost of the idempotency store's `replication` option (WAIT after the claim and after
 * complete) on the project's Redis Cluster (3 masters, one replica each, loopback): `run()`
 * of a fresh key (claim + work + store) without and with `replication: { replicas: 1 }`, in
 * one run, interleaved round by round (so a load change on the machine hits both alike), at
 * concurrency 1 and 16. Each figure is the median over the rounds.
 * Run: pnpm bench resilience   (cluster nodes: REDIS_CLUSTER_NODES, default 127.0.0.1:7000-7005)
 */
import { randomUUID } from 'node:crypto'
import os from 'node:os'
import {
  createIdempotency,
  type Idempotency,
  IdempotencyNotReplicatedError,
} from '@ballast/resilience'
import { Cluster } from 'ioredis'
import { fmt, fmtInt, isSmoke, report, sampleLatency } from '../harness.js'

const nodes = (process.env.REDIS_CLUSTER_NODES ?? '127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002')
  .split(',')
  .map((address) => {
    const [host, port] = address.split(':')
    return { host: host as string, port: Number(port) }
  })
const cluster = new Cluster(nodes)
cluster.on('error', () => undefined) // a missing cluster is reported below, once
await new Promise((resolve, reject) => {
  const timer = setTimeout(() => {
    cluster.disconnect()
    reject(
      new Error(
        `no Redis Cluster at ${nodes.map((n) => `${n.host}:${n.port}`).join(', ')} within 10 s: start it with \`bash scripts/topology.sh start redis-cluster\` or set REDIS_CLUSTER_NODES`,
      ),
    )
  }, 10_000)
  cluster.once('ready', () => {
    clearTimeout(timer)
    resolve(undefined)
  })
})
const prefix = `bench:idem-wait:${randomUUID().slice(0, 8)}:`
const ROUNDS = isSmoke() ? 1 : 7
const N = isSmoke() ? 20 : 2000
const REPLICATION = { replicas: 1, timeout: 100 } as const

const stores: Record<'without WAIT' | 'with WAIT', Idempotency> = {
  'without WAIT': createIdempotency({ redis: cluster, prefix: `${prefix}plain:` }),
  'with WAIT': createIdempotency({
    redis: cluster,
    prefix: `${prefix}wait:`,
    replication: REPLICATION,
  }),
}
const body = { amount: 1999, currency: 'EUR', items: [{ sku: 'A-1', qty: 2 }] }
for (const store of Object.values(stores))
  for (let i = 0; i < 200; i++) await store.run(`warm${i}`, body, () => i)

type Sample = { p50: number; p99: number; opsPerSec: number }
const samples = new Map<string, Sample[]>()
const refused = new Map<string, number>()
let seq = 0
for (let round = 0; round < ROUNDS; round++) {
  for (const concurrency of [1, 16]) {
    // alternate which goes first, round by round
    const order = Object.entries(stores)
    if (round % 2 === 1) order.reverse()
    for (const [mode, store] of order) {
      const key = `${mode}|${concurrency}`
      const stats = await sampleLatency(
        () =>
          store
            .run(`k${seq++}`, body, () => ({ receipt: seq }))
            .catch((error: unknown) => {
              // WAIT saw no replica within its timeout (a loaded machine): counted, not fatal
              if (!(error instanceof IdempotencyNotReplicatedError)) throw error
              refused.set(key, (refused.get(key) ?? 0) + 1)
            }),
        { iterations: N, concurrency, warmup: 0 },
      )
      samples.set(key, [...(samples.get(key) ?? []), stats])
    }
  }
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] ?? 0
}
const rows: (string | number)[][] = []
for (const concurrency of [1, 16]) {
  for (const mode of Object.keys(stores)) {
    const list = samples.get(`${mode}|${concurrency}`) ?? []
    rows.push([
      mode,
      concurrency,
      fmt(median(list.map((s) => s.p50))),
      fmt(median(list.map((s) => s.p99))),
      fmtInt(median(list.map((s) => s.opsPerSec))),
      `${refused.get(`${mode}|${concurrency}`) ?? 0} of ${fmtInt(N * ROUNDS)}`,
    ])
  }
}
report({
  package: 'resilience',
  name: 'idempotency-replication',
  title: 'Idempotency run() of a fresh key on the Redis Cluster, without and with WAIT 1',
  columns: ['mode', 'concurrency', 'p50 µs', 'p99 µs', 'runs/s', 'not replicated'],
  rows,
  notes: [
    `Cluster ${nodes.map((n) => `${n.host}:${n.port}`).join(', ')} (replicas on loopback); ${fmtInt(N)} runs per cell and round, ${ROUNDS} rounds interleaved, medians over the rounds.`,
    `replication: { replicas: ${REPLICATION.replicas}, timeout: ${REPLICATION.timeout} }; "not replicated": runs that failed closed with IdempotencyNotReplicatedError (WAIT saw no replica within the timeout); load average ${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(' / ')} at the end.`,
  ],
})

for (const node of cluster.nodes('master')) {
  let cursor = '0'
  do {
    const [next, keys] = await node.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
    cursor = next
    for (const key of keys) await cluster.del(key)
  } while (cursor !== '0')
}
for (const store of Object.values(stores)) await store.close()
await cluster.quit()
