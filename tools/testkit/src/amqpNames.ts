import { amqpUrl } from './servers.js'
import { uniqueName } from './uniqueName.js'

/** Where {@link amqpNames} cleans up. */
export interface AmqpNamesOptions {
  /**
   * The broker to delete the queues and exchanges on.
   * @default the URL {@link amqpUrl} resolves
   */
  url?: string
}

/** Queue and exchange names of one's own on a shared RabbitMQ, and a way to delete them. */
export interface AmqpNames {
  /** The prefix every name starts with, e.g. `mq_1k2x3f9c2a_1`. */
  readonly prefix: string
  /** A queue name under the prefix (`prefix.name`); remembered for cleanup. */
  queue(name?: string): string
  /** An exchange name under the prefix (`prefix.name`); remembered for cleanup. */
  exchange(name?: string): string
  /** The queue names handed out so far. */
  readonly queues: readonly string[]
  /** The exchange names handed out so far. */
  readonly exchanges: readonly string[]
  /** Deletes every queue and exchange handed out (missing ones are fine). */
  cleanup(): Promise<void>
}

/**
 * Hands out queue and exchange names unique to the test file and deletes them on `cleanup()`.
 * Connects to the broker only to clean up, and only if a name was handed out.
 *
 * @example
 * ```ts
 * const names = amqpNames('orders')
 * afterAll(() => names.cleanup())
 * await channel.assertQueue(names.queue('work'))
 * ```
 */
export function amqpNames(label = 'amqp', options: AmqpNamesOptions = {}): AmqpNames {
  const prefix = uniqueName(label)
  const queues = new Set<string>()
  const exchanges = new Set<string>()
  const named = (set: Set<string>, name: string) => {
    const full = `${prefix}.${name}`
    set.add(full)
    return full
  }
  return {
    prefix,
    queue: (name = 'queue') => named(queues, name),
    exchange: (name = 'exchange') => named(exchanges, name),
    get queues() {
      return [...queues]
    },
    get exchanges() {
      return [...exchanges]
    },
    async cleanup() {
      if (queues.size === 0 && exchanges.size === 0) return
      const amqp = (await import('amqplib')).default
      const connection = await amqp.connect(options.url ?? (await amqpUrl()), { timeout: 5000 })
      connection.on('error', () => {})
      try {
        // a failed delete closes the channel: use one channel per delete
        const remove = async (del: (channel: import('amqplib').Channel) => Promise<unknown>) => {
          const channel = await connection.createChannel()
          channel.on('error', () => {})
          try {
            await del(channel)
            await channel.close()
          } catch {
            // already gone, or never declared
          }
        }
        for (const queue of queues) await remove((channel) => channel.deleteQueue(queue))
        for (const exchange of exchanges)
          await remove((channel) => channel.deleteExchange(exchange))
        queues.clear()
        exchanges.clear()
      } finally {
        await connection.close().catch(() => {})
      }
    },
  }
}
