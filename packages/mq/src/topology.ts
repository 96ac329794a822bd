import { type Duration, merge } from '@ballast/shared'
import { check } from './internal/validate.js'

/** An exchange to declare. */
export interface ExchangeDefinition {
  /** Exchange name. */
  name: string
  /**
   * Exchange type.
   * @default 'topic'
   */
  type?: 'direct' | 'topic' | 'fanout' | 'headers' | (string & {})
  /**
   * Survives a broker restart.
   * @default true
   */
  durable?: boolean
  /**
   * Deleted when its last binding goes.
   * @default false
   */
  autoDelete?: boolean
  /**
   * Extra `x-` arguments.
   * @default {}
   */
  arguments?: Record<string, unknown>
}

/** Delayed retries of a queue's failed messages: TTL queues that dead-letter back into the queue. */
export interface RetryOptions {
  /**
   * How many deliveries a message gets, the first one included, before it is dead-lettered:
   * `maxAttempts - 1` retries (1: never retried).
   * @default 4
   */
  maxAttempts?: number
  /**
   * Delay before the first retry.
   * @default 1000
   */
  initialDelay?: Duration
  /**
   * Each further retry waits this many times longer.
   * @default 4
   */
  factor?: number
  /**
   * The longest delay.
   * @default 3_600_000 (1 h)
   */
  maxDelay?: Duration
  /**
   * Explicit delays, one per retry (so `delays.length + 1` attempts); overrides `maxAttempts`,
   * `initialDelay`, `factor` and `maxDelay`.
   * @default undefined
   */
  delays?: Duration[]
}

/** A binding of a queue to an exchange. */
export interface QueueBinding {
  /** Exchange the queue is bound to. */
  exchange: string
  /**
   * Binding key (`#` matches everything on a topic exchange).
   * @default '#'
   */
  routingKey?: string
  /**
   * Binding arguments (headers exchanges).
   * @default {}
   */
  arguments?: Record<string, unknown>
}

/** A queue to declare, with its bindings, retry queues and dead-letter queue. */
export interface QueueDefinition {
  /** Queue name. */
  name: string
  /**
   * `quorum` queues are replicated and count deliveries (`x-delivery-limit`); `classic` are not.
   * @default 'classic'
   */
  type?: 'classic' | 'quorum'
  /**
   * Survives a broker restart (quorum queues are always durable).
   * @default true
   */
  durable?: boolean
  /**
   * Bindings to exchanges.
   * @default []
   */
  bindings?: QueueBinding[]
  /**
   * Delayed retries of failed messages; `false` sends a failed message straight to the dead-letter queue.
   * @default {@link DEFAULT_RETRY_OPTIONS}: `{ maxAttempts: 4, initialDelay: 1000, factor: 4, maxDelay: 3_600_000 }`
   */
  retry?: RetryOptions | false
  /**
   * Declare `<name>.dlq` and dead-letter into it (rejected messages, spent retries, quorum delivery limit).
   * A string names the dead-letter queue instead. `false`: no dead-letter queue (failed messages are dropped after the retries).
   * @default true
   */
  deadLetter?: boolean | string
  /**
   * Quorum queues only: the broker dead-letters a message after this many failed deliveries
   * (`x-delivery-limit`), even if no consumer of ours counts them (a crashing consumer, a requeue loop).
   * @default undefined (the broker's default: none on 3.x, 20 on 4.x)
   */
  deliveryLimit?: number
  /**
   * Extra `x-` arguments, e.g. `x-max-length`.
   * @default {}
   */
  arguments?: Record<string, unknown>
}

/** Everything the broker declares on every (re)connect, from one definition. */
export interface Topology {
  /**
   * Exchanges.
   * @default []
   */
  exchanges?: ExchangeDefinition[]
  /**
   * Queues, with their bindings, retry queues and dead-letter queues.
   * @default []
   */
  queues?: QueueDefinition[]
}

/** One step of a queue's delayed retries, as declared. */
export interface RetryStep {
  /** Delay of this step in milliseconds. */
  delay: number
  /** The TTL queue that holds messages for `delay` and dead-letters them back. */
  queue: string
}

/** A queue as declared, with its derived retry queues and dead-letter queue. */
export interface ResolvedQueue {
  /** Queue name. */
  name: string
  /** Queue type. */
  type: 'classic' | 'quorum'
  /** Retry steps, one per attempt (steps with the same delay share a queue). */
  retries: RetryStep[]
  /** Dead-letter queue name, if any. */
  deadLetterQueue: string | undefined
  /** `x-delivery-limit`, quorum only. */
  deliveryLimit: number | undefined
}

/** One declaration of a topology, run on every (re)connect. */
export interface Declaration {
  kind: 'exchange' | 'queue' | 'bind'
  name: string
  run: (channel: DeclareChannel) => Promise<unknown>
}

/** The part of an amqplib channel the declarations use. */
export interface DeclareChannel {
  assertExchange(name: string, type: string, options: object): Promise<unknown>
  assertQueue(name: string, options: object): Promise<unknown>
  bindQueue(queue: string, exchange: string, key: string, args?: object): Promise<unknown>
}

/** The defaults of {@link RetryOptions}: the retry policy of a queue that sets none. */
export const DEFAULT_RETRY_OPTIONS: Readonly<Required<Omit<RetryOptions, 'delays'>>> =
  Object.freeze({
    maxAttempts: 4,
    initialDelay: 1000,
    factor: 4,
    maxDelay: 3_600_000,
  })

/** A validated topology: what to declare, in order, and each queue's retry and dead-letter routes. */
export interface ResolvedTopology {
  exchanges: Set<string>
  queues: Map<string, ResolvedQueue>
  declarations: Declaration[]
}

const NAME = /^[\w.:\-/]{1,255}$/

function checkName(option: string, name: unknown): string {
  if (typeof name !== 'string' || !NAME.test(name)) {
    check.invalid(option, 'a name of 1-255 letters, digits, "_", "-", ".", ":" or "/"', name)
  }
  return name as string
}

/** Derives the delay of each retry: one per attempt after the first. */
export function retryDelays(retry: RetryOptions | false | undefined, option = 'retry'): number[] {
  if (retry === false) return []
  if (retry !== undefined) check.object(option, retry)
  if (retry?.delays !== undefined) {
    if (!Array.isArray(retry.delays)) {
      check.invalid(`${option}.delays`, 'an array of durations', retry.delays)
    }
    return retry.delays.map((d, i) =>
      check.duration(`${option}.delays[${i}]`, d, { positive: true }),
    )
  }
  const settings = merge(DEFAULT_RETRY_OPTIONS, retry)
  const maxAttempts = check.positiveInteger(`${option}.maxAttempts`, settings.maxAttempts)
  const initialDelay = check.duration(`${option}.initialDelay`, settings.initialDelay, {
    positive: true,
  })
  const factor = check.number(`${option}.factor`, settings.factor, { min: 1 })
  const maxDelay = check.duration(`${option}.maxDelay`, settings.maxDelay, { positive: true })
  const delays: number[] = []
  for (let i = 0; i < maxAttempts - 1; i++) {
    delays.push(Math.min(maxDelay, Math.round(initialDelay * factor ** i)))
  }
  return delays
}

/** Validates a topology and turns it into declarations. */
export function resolveTopology(topology: Topology | undefined): ResolvedTopology {
  const exchanges = new Set<string>()
  const queues = new Map<string, ResolvedQueue>()
  const declarations: Declaration[] = []
  if (topology === undefined) return { exchanges, queues, declarations }
  check.object('topology', topology)
  for (const [i, ex] of (topology.exchanges ?? []).entries()) {
    const name = checkName(`topology.exchanges[${i}].name`, ex?.name)
    if (exchanges.has(name)) {
      check.invalid(`topology.exchanges[${i}].name`, 'a name not declared before', name)
    }
    exchanges.add(name)
    const type = ex.type ?? 'topic'
    const options = {
      durable: ex.durable ?? true,
      autoDelete: ex.autoDelete ?? false,
      arguments: ex.arguments ?? {},
    }
    declarations.push({
      kind: 'exchange',
      name,
      run: (ch) => ch.assertExchange(name, type, options),
    })
  }
  const binds: Declaration[] = []
  for (const [i, q] of (topology.queues ?? []).entries()) {
    const name = checkName(`topology.queues[${i}].name`, q?.name)
    if (queues.has(name)) {
      check.invalid(`topology.queues[${i}].name`, 'a name not declared before', name)
    }
    const type = q.type ?? 'classic'
    check.oneOf(`topology.queues[${i}].type`, type, ['classic', 'quorum'] as const)
    if (q.deliveryLimit !== undefined) {
      check.positiveInteger(`topology.queues[${i}].deliveryLimit`, q.deliveryLimit)
      if (type !== 'quorum') {
        check.invalid(
          `topology.queues[${i}].deliveryLimit`,
          "no limit on a classic queue (only quorum queues count deliveries: set type: 'quorum')",
          q.deliveryLimit,
        )
      }
    }
    const durable = type === 'quorum' ? true : (q.durable ?? true)
    const dlq =
      q.deadLetter === false
        ? undefined
        : typeof q.deadLetter === 'string'
          ? checkName(`topology.queues[${i}].deadLetter`, q.deadLetter)
          : `${name}.dlq`
    const delays = retryDelays(q.retry, `topology.queues[${i}].retry`)
    const retries = delays.map((delay) => ({ delay, queue: `${name}.retry.${delay}ms` }))
    queues.set(name, { name, type, retries, deadLetterQueue: dlq, deliveryLimit: q.deliveryLimit })

    const typeArgs = type === 'quorum' ? { 'x-queue-type': 'quorum' } : {}
    if (dlq !== undefined) {
      declarations.push({
        kind: 'queue',
        name: dlq,
        run: (ch) => ch.assertQueue(dlq, { durable, arguments: { ...typeArgs } }),
      })
    }
    for (const delay of new Set(delays)) {
      const retryQueue = `${name}.retry.${delay}ms`
      declarations.push({
        kind: 'queue',
        name: retryQueue,
        run: (ch) =>
          ch.assertQueue(retryQueue, {
            durable,
            arguments: {
              // A quorum queue's retry queues are quorum queues too: a classic one lives on one
              // node, and while that node is down its declaration fails (404, "home node ... is
              // down") and republishes to it are returned, on every node of the cluster. Their
              // expired messages go back at least once (RabbitMQ 3.10+).
              ...(type === 'quorum'
                ? {
                    ...typeArgs,
                    'x-dead-letter-strategy': 'at-least-once',
                    'x-overflow': 'reject-publish',
                  }
                : {}),
              'x-message-ttl': delay,
              'x-dead-letter-exchange': '',
              'x-dead-letter-routing-key': name,
            },
          }),
      })
    }
    const args: Record<string, unknown> = { ...typeArgs, ...(q.arguments ?? {}) }
    if (dlq !== undefined) {
      args['x-dead-letter-exchange'] = ''
      args['x-dead-letter-routing-key'] = dlq
    }
    if (q.deliveryLimit !== undefined) args['x-delivery-limit'] = q.deliveryLimit
    declarations.push({
      kind: 'queue',
      name,
      run: (ch) => ch.assertQueue(name, { durable, arguments: args }),
    })
    for (const [j, b] of (q.bindings ?? []).entries()) {
      const exchange = checkName(`topology.queues[${i}].bindings[${j}].exchange`, b?.exchange)
      const key = b.routingKey ?? '#'
      binds.push({
        kind: 'bind',
        name: `${name} <- ${exchange} (${key})`,
        run: (ch) => ch.bindQueue(name, exchange, key, b.arguments ?? {}),
      })
    }
  }
  declarations.push(...binds)
  return { exchanges, queues, declarations }
}
