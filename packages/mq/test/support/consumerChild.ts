// A consumer process: handles each message slowly, records it in Redis (the processing
// side effect), and reports progress. After 60 messages, every further delivery is claimed
// and then hangs before its side effect, so the parent's SIGKILL lands mid-batch (prefetched
// and claimed messages unacked) but never between a side effect and its completion mark: that
// gap is the documented limit of the Redis deduplicator, not what this test is about.
import { createIdempotency } from '@ballast/resilience'
import { Redis } from 'ioredis'
import { createBroker, idempotencyDeduplicator } from '../../src/index.js'

const [amqpUrl, redisUrl, queue, prefix] = process.argv.slice(2) as [string, string, string, string]
const redis = new Redis(redisUrl)
const broker = createBroker({ urls: amqpUrl })
let started = 0
await broker.consume(
  queue,
  async (m) => {
    if (++started > 60) await new Promise(() => {})
    await new Promise((r) => setTimeout(r, 20))
    await redis.hincrby(`${prefix}processed`, String((m.body as { n: number }).n), 1)
    process.stdout.write('.')
  },
  {
    prefetch: 20,
    idempotency: idempotencyDeduplicator(createIdempotency({ redis, prefix, lease: 2000 })),
  },
)
