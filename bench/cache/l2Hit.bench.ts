/**
 * An L2 hit (L1 off): our get against raw ioredis GET plus the same deserialization, and
 * the peers reading from Redis; then getMany of 100 keys against one raw MGET.
 * Run: pnpm exec tsx --conditions=@ballast/source bench/cache/l2Hit.bench.ts
 */
import { createCache, devalueSerializer } from '@ballast/cache'
import { fmt, fmtInt, isSmoke, report, sampleLatency } from '../harness.js'
import { bento, cacheManager, cleanup, RUN, redis } from './setup.js'

const N = isSmoke() ? 20 : 20_000
const KEYS = 100
const keys = Array.from({ length: KEYS }, (_, i) => `product:${i}`)
const value = { id: 1, name: 'Widget', price: 1999, at: new Date(0), tags: ['a', 'b'] }

const client = redis()
const ours = createCache({ redis: client, namespace: `${RUN}:ours`, ttl: '1h', l1: false })
await ours.ready()
const bc = bento(redis(), false)
const cm = cacheManager(false)
for (const key of keys) {
  await ours.set(key, value)
  await bc.set({ key, value, ttl: '1h' })
  await cm.cache.set(key, value, 3_600_000)
}
// the raw baseline reads our own entries: GET, then the same deserializer on the payload
const rawKeys = keys.map((key) => `ballast:cache:${RUN}:ours:0:e:${key}`)
const rawGet = async (i: number) => {
  const text = (await client.get(rawKeys[Math.abs(i) % KEYS] as string)) as string
  let at = -1
  for (let n = 0; n < 5; n++) at = text.indexOf('|', at + 1) // the payload follows the 5-field header (no tags)
  return devalueSerializer.deserialize(text.slice(at + 1))
}

const rows: (string | number)[][] = []
const data: Record<string, unknown> = {}
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
  let base = 0
  for (const [name, fn] of cases) {
    const s = await sampleLatency(fn, { iterations: N, concurrency })
    if (base === 0) base = s.p50
    data[`${name} c${concurrency}`] = s
    rows.push([
      name,
      concurrency,
      fmt(s.p50),
      fmt(s.p99),
      fmt(s.mean),
      fmtInt(s.opsPerSec),
      `${(s.p50 / base).toFixed(2)}x`,
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
rows.push([
  'raw ioredis MGET of 100',
  1,
  fmt(mget.p50),
  fmt(mget.p99),
  fmt(mget.mean),
  fmtInt(mget.opsPerSec),
  '',
])
rows.push([
  `@ballast/cache getMany of 100 (${commandsPerGetMany} command)`,
  1,
  fmt(many.p50),
  fmt(many.p99),
  fmt(many.mean),
  fmtInt(many.opsPerSec),
  `${(many.p50 / mget.p50).toFixed(2)}x of MGET`,
])

report({
  package: 'cache',
  name: 'l2-hit',
  title: 'L2 hit (L1 off), latency in µs',
  columns: ['case', 'concurrency', 'p50 µs', 'p99 µs', 'mean µs', 'ops/s', 'p50 / raw'],
  rows,
  data: { ...data, getMany: many, mget, commandsPerGetMany },
  notes: [
    'The raw baseline is ioredis GET of the same entry plus devalue.parse of its payload: the work any Redis cache must do.',
  ],
})

await cleanup(client)
await ours.close()
await bc.disconnectAll()
await cm.cache.disconnect()
client.disconnect()
