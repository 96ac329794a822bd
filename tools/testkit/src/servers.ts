import { type ServerSource, ServerUnavailableError } from './errors.js'
import { findContainerRuntime } from './internal/containerRuntime.js'
import { containerImage, hasContainer, startContainer } from './internal/containers.js'
import { pingAmqp, pingMysql, pingRedis } from './internal/ping.js'

/** The servers ballast's tests use: the three standard ones and the topologies of `scripts/topology.sh`. */
export type ServerName =
  | 'redis'
  | 'redis-cluster'
  | 'mysql'
  | 'mysql-primary'
  | 'mysql-replica'
  | 'amqp'
  | 'amqp-cluster'

/** A host and port. */
export interface HostPort {
  /** Host name or IP address. */
  host: string
  /** TCP port. */
  port: number
}

/** A server that answered. */
export interface ResolvedServer {
  /** Which server this is. */
  name: ServerName
  /** Its URL (`redis://`, `mysql://`, `amqp://`); for `redis-cluster`, the first node's. */
  url: string
  /** Host of {@link ResolvedServer.url}. */
  host: string
  /** Port of {@link ResolvedServer.url}. */
  port: number
  /** Where the address came from. */
  source: ServerSource
  /** Every node, for `redis-cluster` and `amqp-cluster`; the single host and port otherwise. */
  nodes: readonly HostPort[]
  /** Every node's URL, in the order of {@link ResolvedServer.nodes}. */
  urls: readonly string[]
}

/** What {@link resolveServer} may be given instead of the process's own environment and probes. */
export interface ResolveServerOptions {
  /**
   * The environment to read `REDIS_URL`, `MYSQL_URL`, ... from.
   * @default process.env
   */
  env?: Readonly<Record<string, string | undefined>>
  /**
   * Whether a container runtime answers. Asked only when the environment names no URL.
   * @default a `/_ping` to DOCKER_HOST or an existing docker/podman socket, 1 s bound
   */
  containerRuntimeAnswers?: () => boolean | Promise<boolean>
  /**
   * Starts a container for a standard server and returns its URL.
   * @default testcontainers (redis:7, mariadb:10.11, rabbitmq:3), once per process
   */
  startContainer?: (name: 'redis' | 'mysql' | 'amqp') => Promise<string>
  /**
   * Checks that a server answers; rejects when it does not.
   * @default Redis PING, MySQL `SELECT 1`, AMQP connect
   */
  ping?: (server: ResolvedServer, timeoutMs: number) => Promise<void>
  /**
   * Bound on one ping, in milliseconds.
   * @default 3000
   */
  timeoutMs?: number
  /**
   * How long a fresh container may take to answer its first ping, in milliseconds.
   * @default 60000
   */
  containerReadyTimeoutMs?: number
}

/** The defaults of {@link ResolveServerOptions} that are plain values. */
export const DEFAULT_RESOLVE_SERVER_OPTIONS = {
  timeoutMs: 3000,
  containerReadyTimeoutMs: 60_000,
} as const

interface ServerSpec {
  envVar: string
  local: string
  defaultPort: number
  start: string
}

const START_REDIS =
  'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no'
const START_MARIADB = 'start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd'
const START_RABBITMQ = 'rabbitmq-server -detached'
const START_TOPOLOGY = 'bash scripts/topology.sh start'
const START_RABBITMQ_CLUSTER = 'bash scripts/topology.sh start rabbitmq-cluster'

const CLUSTER_PORTS = [7000, 7001, 7002, 7003, 7004, 7005]
const AMQP_CLUSTER_PORTS = [5681, 5682, 5683]

/** How each server is found and started. */
const SPECS: Record<ServerName, ServerSpec> = {
  redis: {
    envVar: 'REDIS_URL',
    local: 'redis://127.0.0.1:6379',
    defaultPort: 6379,
    start: START_REDIS,
  },
  'redis-cluster': {
    envVar: 'REDIS_CLUSTER_NODES',
    local: CLUSTER_PORTS.map((port) => `127.0.0.1:${port}`).join(','),
    defaultPort: 6379,
    start: START_TOPOLOGY,
  },
  mysql: {
    envVar: 'MYSQL_URL',
    local: 'mysql://root@127.0.0.1:3306/test',
    defaultPort: 3306,
    start: START_MARIADB,
  },
  'mysql-primary': {
    envVar: 'MYSQL_PRIMARY_URL',
    local: 'mysql://root@127.0.0.1:3307/test',
    defaultPort: 3306,
    start: START_TOPOLOGY,
  },
  'mysql-replica': {
    envVar: 'MYSQL_REPLICA_URL',
    local: 'mysql://root@127.0.0.1:3308/test',
    defaultPort: 3306,
    start: START_TOPOLOGY,
  },
  amqp: {
    envVar: 'AMQP_URL',
    local: 'amqp://guest:guest@127.0.0.1:5672',
    defaultPort: 5672,
    start: START_RABBITMQ,
  },
  'amqp-cluster': {
    envVar: 'AMQP_CLUSTER_URLS',
    local: AMQP_CLUSTER_PORTS.map((port) => `amqp://guest:guest@127.0.0.1:${port}`).join(','),
    defaultPort: 5672,
    start: START_RABBITMQ_CLUSTER,
  },
}

/** Every server name {@link resolveServer} knows. */
export const SERVER_NAMES = Object.keys(SPECS) as readonly ServerName[]

/** The environment variable that overrides a server's address (e.g. `REDIS_URL`). */
export function serverEnvVar(name: ServerName): string {
  return spec(name).envVar
}

/** The shell command that starts a server on this machine. */
export function serverStartCommand(name: ServerName): string {
  return spec(name).start
}

function spec(name: ServerName): ServerSpec {
  if (!Object.hasOwn(SPECS, name)) {
    throw new TypeError(
      `unknown server ${JSON.stringify(name)}: expected one of ${Object.keys(SPECS).join(', ')}`,
    )
  }
  return SPECS[name]
}

function stripBrackets(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host
}

/** Parses `host:port,host:port` (entries may also be `redis://host:port`). */
export function parseNodeList(list: string, defaultPort = 6379): HostPort[] {
  const nodes = list
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry.length > 0)
    .map((entry) => {
      const url = new URL(entry.includes('://') ? entry : `redis://${entry}`)
      return { host: stripBrackets(url.hostname), port: Number(url.port || defaultPort) }
    })
  if (nodes.length === 0)
    throw new TypeError(`expected host:port[,host:port...], got ${JSON.stringify(list)}`)
  return nodes
}

function formatHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host
}

function describe(name: ServerName, address: string, source: ServerSource): ResolvedServer {
  const { defaultPort } = spec(name)
  if (name === 'redis-cluster') {
    const nodes = parseNodeList(address, defaultPort)
    const first = nodes[0]!
    const urls = nodes.map((node) => `redis://${formatHost(node.host)}:${node.port}`)
    return { name, url: urls[0]!, host: first.host, port: first.port, source, nodes, urls }
  }
  if (name === 'amqp-cluster') {
    const urls = address
      .split(',')
      .map((entry) => entry.trim())
      .filter((entry) => entry.length > 0)
    if (urls.length === 0)
      throw new TypeError(`expected amqp://...[,amqp://...], got ${JSON.stringify(address)}`)
    const nodes = urls.map((entry) => hostPort(entry, defaultPort))
    return { name, url: urls[0]!, ...nodes[0]!, source, nodes, urls }
  }
  return {
    name,
    url: address,
    ...hostPort(address, defaultPort),
    source,
    nodes: [hostPort(address, defaultPort)],
    urls: [address],
  }
}

function hostPort(address: string, defaultPort: number): HostPort {
  const url = new URL(address)
  const host = stripBrackets(url.hostname)
  return { host, port: Number(url.port || (url.protocol === 'amqps:' ? 5671 : defaultPort)) }
}

async function defaultPing(server: ResolvedServer, timeoutMs: number): Promise<void> {
  switch (server.name) {
    case 'redis':
      return pingRedis(server.url, timeoutMs)
    case 'redis-cluster':
      await Promise.all(
        server.nodes.map((node) =>
          pingRedis(`redis://${formatHost(node.host)}:${node.port}`, timeoutMs).catch(
            (error: unknown) => {
              throw new Error(
                `node ${node.host}:${node.port}: ${error instanceof Error ? error.message : String(error)}`,
                { cause: error },
              )
            },
          ),
        ),
      )
      return
    case 'amqp':
      return pingAmqp(server.url, timeoutMs)
    case 'amqp-cluster':
      await Promise.all(
        server.urls.map((url, i) =>
          pingAmqp(url, timeoutMs).catch((error: unknown) => {
            const node = server.nodes[i]!
            throw new Error(
              `node ${node.host}:${node.port}: ${error instanceof Error ? error.message : String(error)}`,
              { cause: error },
            )
          }),
        ),
      )
      return
    default:
      return pingMysql(server.url, timeoutMs)
  }
}

/** Whether a container runtime (Docker or Podman) answers here, so testcontainers can serve. */
export async function containerRuntimeAnswers(
  env: Readonly<Record<string, string | undefined>> = process.env,
): Promise<boolean> {
  if (env.BALLAST_TESTCONTAINERS === '0') return false
  return defaultContainerRuntimeAnswers(env)
}

async function defaultContainerRuntimeAnswers(env: Readonly<Record<string, string | undefined>>) {
  const endpoint = await findContainerRuntime(env)
  if (!endpoint) return false
  // testcontainers does not look for podman sockets by itself
  if (!endpoint.autodetected && !process.env.DOCKER_HOST)
    process.env.DOCKER_HOST = endpoint.dockerHost
  return true
}

async function pingUntil(
  ping: NonNullable<ResolveServerOptions['ping']>,
  server: ResolvedServer,
  timeoutMs: number,
  deadlineMs: number,
): Promise<void> {
  const deadline = Date.now() + deadlineMs
  for (;;) {
    try {
      await ping(server, timeoutMs)
      return
    } catch (error) {
      if (Date.now() + 250 >= deadline) throw error
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
  }
}

async function resolveWith(
  name: ServerName,
  options: ResolveServerOptions,
): Promise<ResolvedServer> {
  const serverSpec = spec(name)
  const env = options.env ?? process.env
  const ping = options.ping ?? defaultPing
  const timeoutMs = options.timeoutMs ?? DEFAULT_RESOLVE_SERVER_OPTIONS.timeoutMs
  const readyMs =
    options.containerReadyTimeoutMs ?? DEFAULT_RESOLVE_SERVER_OPTIONS.containerReadyTimeoutMs

  const fail = (address: string, source: ServerSource, origin: string, cause: unknown): never => {
    throw new ServerUnavailableError({
      server: name,
      address,
      source,
      origin,
      startCommand: serverSpec.start,
      cause,
    })
  }

  const fromEnv = env[serverSpec.envVar]?.trim()
  if (fromEnv) {
    let server: ResolvedServer
    try {
      server = describe(name, fromEnv, 'env')
    } catch (error) {
      return fail(fromEnv, 'env', serverSpec.envVar, error)
    }
    try {
      await ping(server, timeoutMs)
    } catch (error) {
      return fail(fromEnv, 'env', serverSpec.envVar, error)
    }
    return server
  }

  let containerNote = ''
  if (hasContainer(name)) {
    const answers = options.containerRuntimeAnswers ?? (() => defaultContainerRuntimeAnswers(env))
    if (await answers()) {
      const image = containerImage(name)
      try {
        const url = await (options.startContainer ?? startContainer)(name)
        const server = describe(name, url, 'container')
        await pingUntil(ping, server, timeoutMs, readyMs)
        return server
      } catch (error) {
        // a runtime that answers but cannot start the image (offline, no disk) should not
        // hide a local server that works: fall through, and say so if that fails too
        containerNote = `; a testcontainers ${image} container failed first: ${
          error instanceof Error ? error.message : String(error)
        }`
      }
    }
  }

  const server = describe(name, serverSpec.local, 'local')
  try {
    await ping(server, timeoutMs)
  } catch (error) {
    return fail(
      serverSpec.local,
      'local',
      `the local default; set ${serverSpec.envVar} to use another${containerNote}`,
      error,
    )
  }
  return server
}

const memo = new Map<ServerName, Promise<ResolvedServer>>()

/**
 * Finds a server that answers: a URL in the environment (`REDIS_URL`, `REDIS_CLUSTER_NODES`,
 * `MYSQL_URL`, `MYSQL_PRIMARY_URL`, `MYSQL_REPLICA_URL`, `AMQP_URL`); else a testcontainers
 * container where a container runtime answers (standard servers only); else the local
 * default. Checks it with a real protocol ping and memoizes the answer per process (when
 * called without options). Throws {@link ServerUnavailableError} naming the server and the
 * command that starts it when it does not answer.
 *
 * @example
 * ```ts
 * const redis = await resolveServer('redis')
 * const client = new Redis(redis.url)
 * ```
 */
export function resolveServer(
  name: ServerName,
  options?: ResolveServerOptions,
): Promise<ResolvedServer> {
  if (options) return resolveWith(name, options)
  let resolved = memo.get(name)
  if (!resolved) {
    resolved = resolveWith(name, {})
    memo.set(name, resolved)
    // a failure is not cached: the server may be started before the next attempt
    resolved.catch(() => memo.delete(name))
  }
  return resolved
}

/** URL of the standard Redis server. */
export async function redisUrl(): Promise<string> {
  return (await resolveServer('redis')).url
}

/** Nodes of the Redis Cluster (127.0.0.1:7000-7005 unless `REDIS_CLUSTER_NODES` says otherwise). */
export async function redisClusterNodes(): Promise<HostPort[]> {
  return (await resolveServer('redis-cluster')).nodes.map((node) => ({ ...node }))
}

/** URL of the standard MariaDB server (database `test`). */
export async function mysqlUrl(): Promise<string> {
  return (await resolveServer('mysql')).url
}

/** URL of the MariaDB primary of the replication topology. */
export async function mysqlPrimaryUrl(): Promise<string> {
  return (await resolveServer('mysql-primary')).url
}

/** URL of the MariaDB replica of the replication topology (read-only). */
export async function mysqlReplicaUrl(): Promise<string> {
  return (await resolveServer('mysql-replica')).url
}

/** URL of the standard RabbitMQ server. */
export async function amqpUrl(): Promise<string> {
  return (await resolveServer('amqp')).url
}

/**
 * URLs of the three nodes of the RabbitMQ cluster (127.0.0.1:5681-5683, guest/guest, unless
 * `AMQP_CLUSTER_URLS` says otherwise), in node order.
 */
export async function amqpClusterUrls(): Promise<string[]> {
  return [...(await resolveServer('amqp-cluster')).urls]
}
