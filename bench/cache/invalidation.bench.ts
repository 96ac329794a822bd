/**
 * How long an invalidation takes to reach another process: the parent sets a key, a child
 * process (its own cache and clients) records when its 'invalidated' event fires. In the
 * same run, interleaved message by message, the same trip with raw ioredis: a PUBLISH alone,
 * and a SET then a PUBLISH (the two round trips a set() makes), each seen by a raw
 * subscriber in the child. The raw figures are what the machine gives; the gap between
 * them and ours is our path.
 * Run: pnpm exec tsx --conditions=@ballast/source bench/cache/invalidation.bench.ts
 */
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { createCache } from '@ballast/cache'
import { fmt, isSmoke, report } from '../harness.js'
import { cleanup, RUN, redis } from './setup.js'

const N = isSmoke() ? 20 : 2000
const wallNow = () => performance.timeOrigin + performance.now()

if (process.argv[2] === 'child') {
  const namespace = process.argv[3] as string
  const client = redis()
  const cache = createCache({ redis: client, namespace })
  const raw = redis()
  await raw.subscribe(`${namespace}:raw`)
  raw.on('message', () => process.send?.(wallNow()))
  await cache.ready()
  cache.on('invalidated', () => process.send?.(wallNow()))
  process.on('message', async () => {
    await cache.close()
    client.disconnect()
    raw.disconnect()
    process.exit(0)
  })
  process.send?.('ready')
} else {
  const namespace = `${RUN}-inv` // no ":" in a cache namespace
  const child = fork(fileURLToPath(import.meta.url), ['child', namespace], {
    execArgv: ['--import', 'tsx', '--conditions=@ballast/source'],
  })
  const received: number[] = []
  let wake: (() => void) | undefined
  await new Promise<void>((resolve) =>
    child.on('message', (m) => {
      if (m === 'ready') resolve()
      else {
        received.push(m as number)
        wake?.()
      }
    }),
  )
  const client = redis()
  const cache = createCache({ redis: client, namespace })
  await cache.ready()
  const channel = `${namespace}:raw`
  const rawKey = `${namespace}:raw:price`
  const cases: [string, (i: number) => Promise<unknown>][] = [
    ['@ballast/cache set() to invalidation event', (i) => cache.set('price', i)],
    ['raw ioredis PUBLISH to message', (i) => client.publish(channel, String(i))],
    [
      'raw ioredis SET, then PUBLISH, to message',
      async (i) => {
        await client.set(rawKey, String(i), 'PX', 60_000)
        await client.publish(channel, String(i))
      },
    ],
  ]
  const latencies = cases.map((): number[] => [])
  for (let i = 0; i < N; i++) {
    // rotate the order so that no case always follows another
    for (let c = 0; c < cases.length; c++) {
      const j = (c + i) % cases.length
      const got = new Promise<void>((resolve) => {
        wake = resolve
      })
      const t0 = wallNow()
      await (cases[j] as [string, (i: number) => Promise<unknown>])[1](i)
      await got
      ;(latencies[j] as number[]).push((received.at(-1) as number) - t0)
    }
  }
  const rows = cases.map(([name], j) => {
    const sorted = (latencies[j] as number[]).sort((a, b) => a - b)
    const at = (q: number) =>
      sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number
    return [name, N, fmt(at(0.5)), fmt(at(0.99)), fmt(at(0.999)), fmt(at(1))]
  })
  report({
    package: 'cache',
    name: 'invalidation',
    title: 'From the writer to the event in another process (ms)',
    columns: ['case', 'messages', 'p50 ms', 'p99 ms', 'p99.9 ms', 'max ms'],
    rows,
    notes: [
      'Ours includes the L2 write and the PUBLISH: from the start of set() to the event in the other process. The three cases are interleaved message by message, in a rotating order.',
    ],
  })
  child.send('close')
  await cleanup(client)
  await cache.close()
  client.disconnect()
}
