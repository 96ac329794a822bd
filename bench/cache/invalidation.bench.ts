/**
 * How long an invalidation takes to reach another process: the parent sets a key, a child
 * process (its own cache and clients) records when its 'invalidation' event fires.
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
  const client = redis()
  const cache = createCache({ redis: client, namespace: process.argv[3] as string })
  await cache.ready()
  cache.on('invalidation', () => process.send?.(wallNow()))
  process.on('message', async () => {
    await cache.close()
    client.disconnect()
    process.exit(0)
  })
  process.send?.('ready')
} else {
  const namespace = `${RUN}:inv`
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
  const latencies: number[] = []
  for (let i = 0; i < N; i++) {
    const got = new Promise<void>((resolve) => {
      wake = resolve
    })
    const t0 = wallNow()
    await cache.set('price', i)
    await got
    latencies.push((received.at(-1) as number) - t0)
  }
  latencies.sort((a, b) => a - b)
  const at = (q: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] as number
  report({
    package: 'cache',
    name: 'invalidation',
    title: 'set() on one process until the invalidation fires in another (ms)',
    columns: ['messages', 'p50 ms', 'p99 ms', 'p99.9 ms', 'max ms'],
    rows: [[N, fmt(at(0.5)), fmt(at(0.99)), fmt(at(0.999)), fmt(at(1))]],
    notes: [
      'Includes the L2 write and the PUBLISH: from the start of set() to the event in the other process.',
    ],
  })
  child.send('close')
  await cleanup(client)
  await cache.close()
  client.disconnect()
}
