/**
 * One cache instance in its own process, driven by the parent test over IPC. Not a test
 * file: `multiProcess.integration.test.ts` forks it.
 */
import { createCache } from '../src/index.js'
import { connect, type Topology } from './fixtures.js'

const [topology, namespace, prefix] = process.argv.slice(2) as [Topology, string, string]
const redis = await connect(topology)
// A generous L2 timeout: these tests are about the lock and invalidation, and a Redis call
// slowed past the default 250 ms by a loaded CI machine would (by design) load without the
// lock rather than wait, which is a different guarantee.
const cache = createCache<unknown>({ redis, namespace, prefix, l2Timeout: 5000 })
await cache.ready()

type Command =
  | { cmd: 'lock'; key: string; n: number; counter: string }
  | { cmd: 'watch'; key: string }
  | { cmd: 'close' }

process.on('message', async (message: Command) => {
  if (message.cmd === 'lock') {
    const loader = async () => {
      await redis.incr(message.counter)
      await new Promise((resolve) => setTimeout(resolve, 100))
      return `value of ${message.key}`
    }
    const values = await Promise.all(
      Array.from({ length: message.n }, () => cache.getOrSet(message.key, loader, { lock: true })),
    )
    process.send?.({ done: 'lock', values: [...new Set(values)] })
  } else if (message.cmd === 'watch') {
    cache.on('invalidated', async (event) => {
      if (!event.keys?.includes(message.key)) return
      process.send?.({ seen: await cache.get(message.key) })
    })
    process.send?.({ done: 'watch' })
  } else {
    await cache.close()
    redis.disconnect()
    process.exit(0)
  }
})
process.send?.({ ready: true })
