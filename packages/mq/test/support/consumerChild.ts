// A consumer process: handles each message slowly, records it in Redis (the processing
// side effect), and reports progress; the parent SIGKILLs it mid-batch.
import { createIdempotency } from '@ballast/resilience'
import { Redis } from 'ioredis'
import { createBroker, idempotencyDeduplicator } from '../../src/index.js'

const [amqpUrl, redisUrl, queue, prefix] = process.argv.slice(2) as [string, string, string, string]
const redis = new Redis(redisUrl)
const broker = createBroker({ urls: amqpUrl })
await broker.consume(
  queue,
  async (m) => {
    await new Promise((r) => setTimeout(r, 20))
    await redis.hincrby(`${prefix}processed`, String((m.body as { n: number }).n), 1)
    process.stdout.write('.')
  },
  {
    prefetch: 20,
    idempotency: idempotencyDeduplicator(createIdempotency({ redis, prefix, lease: 2000 })),
  },
)
