/**
 * The shop's configuration: one JSON object computed by the supervisor and handed to every
 * child process in `SHOP_CONFIG`. Only the supervisor, the CLI and the tests read the
 * environment; services read this object.
 */
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const SHOP_DIR = join(dirname(fileURLToPath(import.meta.url)), '..')

export type ServiceName =
  | 'gateway'
  | 'account'
  | 'catalog'
  | 'cart'
  | 'order'
  | 'payment'
  | 'inventory'
  | 'delivery'
  | 'provider'

/** Services that answer HTTP behind the gateway. */
export const WEB_SERVICES = ['account', 'catalog', 'cart', 'order'] as const
export type WebService = (typeof WEB_SERVICES)[number]

export interface InstanceSpec {
  service: ServiceName
  /** e.g. `catalog-2` */
  name: string
  port: number
  /** Where the process's Prometheus exporter serves `/metrics` (127.0.0.1). */
  metricsPort: number
}

export interface MysqlTarget {
  host: string
  port: number
  user: string
  password: string
  database: string
}

export interface ShardSpec {
  id: string
  primary: MysqlTarget
  /** Reads go here unless read-your-writes asks for the primary. */
  replica?: MysqlTarget
}

export interface ShopConfig {
  ns: string
  gatewayPort: number
  controlPort: number
  /** The shop's Prometheus (127.0.0.1): it scrapes every process and evaluates the rules; the ops page queries it. */
  prometheusPort: number
  /** The supervisor's own metrics exporter (queue depths from the broker, process restarts). */
  supervisorMetricsPort: number
  instances: InstanceSpec[]
  /** The standalone Redis (through the chaos proxy): cache L2, invalidations, idempotency, rate limits. */
  redisUrl: string
  /** The Redis Cluster: sessions. */
  redisClusterNodes: { host: string; port: number }[]
  /** The cluster is the shop's own (started by the supervisor, gone when it stops). */
  redisClusterPrivate?: boolean
  /**
   * The RabbitMQ cluster's nodes, each through its chaos proxy, in node order: every broker
   * lists all three (quorum queues on all three nodes) and moves to a live node when its own dies.
   */
  amqpUrls: string[]
  catalogDb: MysqlTarget
  /**
   * The shards: every one a router may be sent to, shard c included from the start (it owns no
   * slot until the ops page reshards onto it).
   */
  shards: ShardSpec[]
  /** Where the shared slot map lives (the catalog database on the standard server): which shard owns each slot. */
  slotMapDb: MysqlTarget
  providerUrl: string
  runDir: string
  /** Honour `?cache=off` so the benchmark can compare the same page without caches. */
  bench: boolean
  /** Overload limits of the catalog's degrader (tests lower them to show shedding under a small load). */
  degrader?: { maxInFlight: number; maxEventLoopDelay: number; interval: number }
}

export interface Counts {
  catalog: number
  cart: number
  order: number
  account: number
}

export const DEFAULT_COUNTS: Counts = { catalog: 2, cart: 2, order: 2, account: 1 }

/**
 * How many order instances can run: each makes order ids with a worker id of its own, and
 * the order id generator has 4 worker bits (`createOrderIds` in platform/sharding.ts), so 16.
 */
export const MAX_ORDER_INSTANCES = 16

/**
 * The id generator's worker id of order instance `order-<n>`: `n - 1`, unique for every
 * instance the generator supports. Beyond that two instances would make the same ids, so it
 * throws.
 */
export function orderWorkerId(instance: string): number {
  const n = Number(/^order-(\d+)$/.exec(instance)?.[1] ?? Number.NaN)
  if (!Number.isSafeInteger(n) || n < 1 || n > MAX_ORDER_INSTANCES) {
    throw new Error(
      `order instance "${instance}" has no worker id: the order id generator supports order-1 to order-${MAX_ORDER_INSTANCES}`,
    )
  }
  return n - 1
}

/** The first metrics port: instance `i` of the layout (gateway included) serves `/metrics` on `base + METRICS_PORT_OFFSET + i`. */
export const METRICS_PORT_OFFSET = 50

/** Prometheus listens on `base + PROMETHEUS_PORT_OFFSET`. */
export const PROMETHEUS_PORT_OFFSET = 2

/** The supervisor's metrics exporter listens on `base + SUPERVISOR_METRICS_PORT_OFFSET`. */
export const SUPERVISOR_METRICS_PORT_OFFSET = 3

/**
 * Port layout: the gateway on `base`, the supervisor's control port on `base + 1`, Prometheus
 * on `base + 2`, the supervisor's metrics on `base + 3`, instances from `base + 10`, their
 * metrics exporters from `base + 50`.
 */
export function layoutInstances(base: number, counts: Counts = DEFAULT_COUNTS): InstanceSpec[] {
  if (
    !Number.isSafeInteger(counts.order) ||
    counts.order < 1 ||
    counts.order > MAX_ORDER_INSTANCES
  ) {
    throw new Error(
      `invalid order instance count ${counts.order}: between 1 and ${MAX_ORDER_INSTANCES} (each order instance needs a worker id of its own for order ids)`,
    )
  }
  const out: InstanceSpec[] = []
  let port = base + 10
  const add = (service: ServiceName, n: number) => {
    for (let i = 1; i <= n; i++)
      out.push({
        service,
        name: `${service}-${i}`,
        port: port++,
        metricsPort: base + METRICS_PORT_OFFSET + out.length,
      })
  }
  add('provider', 1)
  add('account', counts.account)
  add('catalog', counts.catalog)
  add('cart', counts.cart)
  add('order', counts.order)
  add('payment', 1)
  add('inventory', 1)
  add('delivery', 1)
  out.push({
    service: 'gateway',
    name: 'gateway',
    port: base,
    metricsPort: base + METRICS_PORT_OFFSET + out.length,
  })
  // Instances' ports run from base + 10 and must stay below the metrics ports (base + 50).
  if (out.length - 1 > METRICS_PORT_OFFSET - 10) {
    throw new Error(
      `too many instances (${out.length - 1}): at most ${METRICS_PORT_OFFSET - 10}, their ports run from ${base + 10} to below the metrics ports at ${base + METRICS_PORT_OFFSET}`,
    )
  }
  return out
}

export function instancesOf(config: ShopConfig, service: ServiceName): InstanceSpec[] {
  return config.instances.filter((i) => i.service === service)
}

export function loadConfig(): ShopConfig {
  const raw = process.env.SHOP_CONFIG
  if (!raw)
    throw new Error('SHOP_CONFIG is not set: start services through the supervisor (src/main.ts)')
  return JSON.parse(raw) as ShopConfig
}

export function mysqlUri(t: MysqlTarget): string {
  return `mysql://${encodeURIComponent(t.user)}:${encodeURIComponent(t.password)}@${t.host}:${t.port}/${t.database}`
}
