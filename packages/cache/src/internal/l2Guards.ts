import calculateSlot from 'cluster-key-slot'
import type { Cluster, Redis } from 'ioredis'
import type { CircuitState } from '../cacheEvents.js'
import type { RedisClient } from './l2.js'
import { L2Guard, type L2GuardOptions } from './l2Guard.js'

/** What a guard set needs: the guard's settings, without a name and per-node state callback. */
export interface L2GuardsOptions extends Omit<L2GuardOptions, 'name' | 'onStateChange'> {
  /** The guards' name; on a Cluster each node's guard adds its address. */
  name: string
  onStateChange(state: CircuitState, node: string): void
}

/** A slot whose master the client does not know yet (before its first slots refresh). */
const UNKNOWN_NODE = 'unknown'

/** How bad a state is, to report the worst of several breakers. */
const SEVERITY: Record<CircuitState, number> = { closed: 0, halfOpen: 1, open: 2 }

/**
 * The L2 guards of a cache: one for a standalone Redis, one per master node on a Cluster, so
 * a dead master opens only its own breaker and the keys of the other masters' slots keep
 * using L2 (with one breaker for the whole cluster, one dead master sent every key to the
 * loader). A call is routed by a Redis key: its hash slot, then the node that serves that
 * slot in the client's slots table (the table ioredis itself routes by). After a failover the
 * slots move to the promoted replica, a node with a guard of its own; the guard of a node
 * that serves no slot any more is dropped.
 */
export class L2Guards {
  readonly #options: L2GuardsOptions
  readonly #cluster: Cluster | undefined
  /** The one guard of a standalone Redis. */
  readonly #single: L2Guard | undefined
  readonly #singleNode: string
  /** A Cluster's guards by node address, after the NAT map (one per node). */
  readonly #byNode = new Map<string, L2Guard>()
  /**
   * The same guards by the address the slots table holds: ioredis writes the address of a
   * MOVED reply there as Redis sent it, before its NAT map, while a refresh writes it mapped.
   * Both names of one node reach its one guard, in one lookup on the hot path.
   */
  readonly #byAddress = new Map<string, L2Guard>()

  constructor(client: RedisClient, isCluster: boolean, options: L2GuardsOptions) {
    this.#options = options
    if (isCluster) {
      this.#cluster = client as Cluster
      this.#single = undefined
      this.#singleNode = ''
      return
    }
    this.#cluster = undefined
    const node = standaloneAddress(client as Redis)
    this.#singleNode = node
    this.#single = this.#create(options.name, node)
  }

  /** The guard of the node that serves `route` (a Redis key). */
  for(route: string): L2Guard {
    if (this.#single !== undefined) return this.#single
    const address = (this.#cluster as Cluster).slots[calculateSlot(route)]?.[0] ?? UNKNOWN_NODE
    return this.#byAddress.get(address) ?? this.#add(address)
  }

  /** The worst state of the breakers (open if any is open, else half-open if any is). */
  get state(): CircuitState {
    if (this.#single !== undefined) return this.#single.state
    let worst: CircuitState = 'closed'
    for (const guard of this.#current().values())
      if (SEVERITY[guard.state] > SEVERITY[worst]) worst = guard.state
    return worst
  }

  /** Each breaker's state by node address (`host:port`); one entry for a standalone Redis. */
  states(): Record<string, CircuitState> {
    if (this.#single !== undefined) return { [this.#singleNode]: this.#single.state }
    const out: Record<string, CircuitState> = {}
    for (const [node, guard] of this.#current()) out[node] = guard.state
    return out
  }

  async close(): Promise<void> {
    const guards = this.#single !== undefined ? [this.#single] : [...this.#byNode.values()]
    this.#byNode.clear()
    this.#byAddress.clear()
    await Promise.all(guards.map((guard) => guard.close()))
  }

  #add(address: string): L2Guard {
    const node = this.#mapped(address)
    let guard = this.#byNode.get(node)
    if (guard === undefined) {
      guard = this.#create(`${this.#options.name} ${node}`, node)
      this.#byNode.set(node, guard)
    }
    this.#byAddress.set(address, guard)
    return guard
  }

  /** The address after the client's NAT map, as ioredis maps it before it connects. */
  #mapped(address: string): string {
    const natMap = (this.#cluster as Cluster).options.natMap
    const mapped =
      typeof natMap === 'function'
        ? natMap(address)
        : natMap === undefined
          ? undefined
          : natMap[address]
    return mapped ? `${mapped.host}:${mapped.port}` : address
  }

  #create(name: string, node: string): L2Guard {
    const options = this.#options
    return new L2Guard({
      name,
      timeout: options.timeout,
      windowSize: options.windowSize,
      errorThresholdPercentage: options.errorThresholdPercentage,
      volumeThreshold: options.volumeThreshold,
      resetTimeout: options.resetTimeout,
      telemetry: options.telemetry,
      onStateChange: (state) => options.onStateChange(state, node),
    })
  }

  /**
   * The guards of the nodes that serve slots now. The others (a master replaced by its
   * replica, a node removed) get no more calls: their breakers would stay open or half-open
   * forever and make the worst state a lie, so they are closed and forgotten. The slots
   * table, not the connection pool, says which nodes serve: ioredis drops a dead node's
   * connection from its pool before the slots move, and its open breaker must stay.
   */
  #current(): Map<string, L2Guard> {
    if (this.#byNode.size === 0) return this.#byNode
    const slots = (this.#cluster as Cluster).slots
    const serving = new Set<string>()
    let previous: string | undefined
    for (let slot = 0; slot < slots.length; slot++) {
      const address = slots[slot]?.[0]
      if (address === undefined || address === previous) continue
      previous = address
      serving.add(this.#mapped(address))
    }
    if (serving.size === 0) return this.#byNode // no slots table yet: nothing to compare with
    for (const [node, guard] of this.#byNode) {
      if (serving.has(node)) continue
      this.#byNode.delete(node)
      for (const [address, aliased] of this.#byAddress)
        if (aliased === guard) this.#byAddress.delete(address)
      void guard.close()
    }
    return this.#byNode
  }
}

function standaloneAddress(redis: Redis): string {
  const options = redis.options as { host?: string; port?: number; path?: string } | undefined
  if (options?.path !== undefined && options.path !== null && options.path !== '')
    return options.path
  return `${options?.host ?? 'localhost'}:${options?.port ?? 6379}`
}
