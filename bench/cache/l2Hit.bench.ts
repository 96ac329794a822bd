/**
 * An L2 hit (L1 off): our get against raw ioredis GET plus the same deserialization, and
 * the peers reading from Redis; then getMany of 100 keys against one raw MGET.
 * Run: pnpm exec tsx --conditions=@ballast/source bench/cache/l2Hit.bench.ts
 */
import { createCache, devalueSerializer } from '@ballast/cache'
import { fmt, isSmoke, report, sampleLatency } from '../harness.js'
import { bento, cacheManager, cleanup, RUN, redis } from './setup.js'

const N = isSmoke() ? 20 : 4000
const ROUNDS = isSmoke() ? 1 : 7
const KEYS = 100
const keys = Array.from({ length: KEYS }, (_, i) => `product:${i}`)
const value = { id: 1, name: 'Widget', price: 1999, at: new Date(0), tags: ['a', 'b'] }

const client = redis()
const ours = createCache({ redis: client, namespace: `${RUN}-ours`, ttl: '1h', l1: false })
await ours.ready()
const bc = bento(redis(), false)
const cm = cacheManager(false)
for (const key of keys) {
  await ours.set(key, value)
  await bc.set({ key, value, ttl: '1h' })
  await cm.cache.set(key, value, 3_600_000)
}
// the raw baseline reads our own entries: GET, then the same deserializer on the payload
const rawKeys = keys.map((key) => `ballast:cache:${RUN}-ours:0:e:${key}`)
const rawGet = async (i: number) => {
  const text = (await client.get(rawKeys[Math.abs(i) % KEYS] as string)) as string
  let at = -1
  for (let n = 0; n < 5; n++) at = text.indexOf('|', at + 1) // the payload follows the 5-field header (no tags)
  return devalueSerializer.deserialize(text.slice(at + 1))
}

const rows: (string | number)[][] = []
const data: Record<string, unknown> = {}
const median = (a: readonly number[]) => [...a].sort((x, y) => x - y)[a.length >> 1] as number
for (const concurrency of [1, 16]) {
  const cases: [string, (i: number) => Promise<unknown>][] = [
    ['raw ioredis GET + devalue.parse', rawGet],
    ['@ballast/cache get (L1 off)', (i) => ours.get(keys[Math.abs(i) % KEYS] as string)],
    ['bentocache get (L1 off)', (i) => bc.get({ key: keys[Math.abs(i) % KEYS] as string })],
    [
      'cache-manager get (Redis store only)',
      (i) => cm.cache.get(keys[Math.abs(i) % KEYS] as string),
    ],
  ]
  // Rounds interleave the cases (in a rotating order) so that a burst of load from other
  // jobs on the machine hits every case alike; each figure is the median over the rounds,
  // and each ratio the median of the per-round ratios to the raw baseline of that round.
  const p50s = cases.map((): number[] => [])
  const ratios = cases.map((): number[] => [])
  const cpus = cases.map((): number[] => [])
  const cpuRatios = cases.map((): number[] => [])
  for (let round = 0; round < ROUNDS; round++) {
    const order = cases.map((_, j) => (j + round) % cases.length)
    const p50 = new Array<number>(cases.length)
    const cpu = new Array<number>(cases.length)
    for (const j of order) {
      const fn = (cases[j] as [string, (i: number) => Promise<unknown>])[1]
      const c0 = process.cpuUsage()
      const s = await sampleLatency(fn, { iterations: N, concurrency })
      const c = process.cpuUsage(c0)
      p50[j] = s.p50
      // CPU time of this process per call (µs), warm-up included: far less sensitive to
      // other jobs than latency is
      cpu[j] = (c.user + c.system) / (N + Math.floor(N / 10))
    }
    for (let j = 0; j < cases.length; j++) {
      ;(p50s[j] as number[]).push(p50[j] as number)
      ;(ratios[j] as number[]).push((p50[j] as number) / (p50[0] as number))
      ;(cpus[j] as number[]).push(cpu[j] as number)
      ;(cpuRatios[j] as number[]).push((cpu[j] as number) / (cpu[0] as number))
    }
  }
  for (let j = 0; j < cases.length; j++) {
    const name = (cases[j] as [string, unknown])[0]
    const row = {
      p50: median(p50s[j] as number[]),
      p50OverRaw: median(ratios[j] as number[]),
      cpuPerCall: median(cpus[j] as number[]),
      cpuOverRaw: median(cpuRatios[j] as number[]),
      rounds: { p50: p50s[j], cpu: cpus[j] },
    }
    data[`${name} c${concurrency}`] = row
    rows.push([
      name,
      concurrency,
      fmt(row.p50),
      `${row.p50OverRaw.toFixed(2)}x`,
      fmt(row.cpuPerCall),
      `${row.cpuOverRaw.toFixed(2)}x`,
    ])
  }
}

// getMany: count the commands ours sends, and time it against one raw MGET
let sent = 0
const sendCommand = client.sendCommand.bind(client)
client.sendCommand = ((command: Parameters<typeof sendCommand>[0]) => {
  sent++
  return sendCommand(command)
}) as typeof client.sendCommand
await ours.getMany(keys)
const commandsPerGetMany = sent
client.sendCommand = sendCommand
const many = await sampleLatency(() => ours.getMany(keys), { iterations: isSmoke() ? 5 : 2000 })
const mget = await sampleLatency(() => client.mget(rawKeys), { iterations: isSmoke() ? 5 : 2000 })
rows.push(['raw ioredis MGET of 100', 1, fmt(mget.p50), '', '', ''])
rows.push([
  `@ballast/cache getMany of 100 (${commandsPerGetMany} command)`,
  1,
  fmt(many.p50),
  `${(many.p50 / mget.p50).toFixed(2)}x of MGET`,
  '',
  '',
])

report({
  package: 'cache',
  name: 'l2-hit',
  title: 'L2 hit (L1 off), latency in µs',
  columns: ['case', 'concurrency', 'p50 µs', 'p50 / raw', 'CPU µs per call', 'CPU / raw'],
  rows,
  data: { ...data, getMany: many, mget, commandsPerGetMany },
  notes: [
    'The raw baseline is ioredis GET of the same entry plus devalue.parse of its payload: the work any Redis cache must do. It uses the very client our cache uses; bentocache gets its own client with the same options; cache-manager reads through @keyv/redis (node-redis).',
    `Medians over ${ROUNDS} rounds of ${N} calls per case, the cases interleaved in a rotating order; ratios are medians of per-round ratios. CPU: this process's user+system time per call.`,
  ],
})

await cleanup(client)
await ours.close()
await bc.disconnectAll()
await cm.cache.disconnect()
client.disconnect()
