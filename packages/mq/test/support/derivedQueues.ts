import type { AmqpNames } from '@ballast/testkit'
import type { Broker, Topology } from '../../src/index.js'

/**
 * Hands the retry and dead-letter queues the broker derived from `topology` to `names`, so its
 * `cleanup()` deletes them with the queues the test named itself.
 */
export function trackDerivedQueues(
  broker: Broker,
  topology: Topology | undefined,
  names: AmqpNames,
): void {
  for (const q of topology?.queues ?? []) {
    const resolved = broker.queue(q.name)
    for (const name of [
      resolved?.deadLetterQueue,
      ...(resolved?.retries ?? []).map((r) => r.queue),
    ]) {
      if (name?.startsWith(`${names.prefix}.`)) names.queue(name.slice(names.prefix.length + 1))
    }
  }
}
