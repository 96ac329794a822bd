/**
 * The three-node RabbitMQ cluster of `bash scripts/topology.sh start rabbitmq-cluster`
 * (ballast1..3@localhost, AMQP 127.0.0.1:5681-5683): kill, stop and restart its nodes, ask it
 * where a quorum queue's leader is. The CLI runs with the node's own environment, as the
 * script's rmq_env does (/etc/rabbitmq's files name the standard node and must not apply).
 *
 * The cluster is shared by every test run on the machine: whoever takes a node down holds
 * {@link RABBITMQ_CLUSTER_LOCK} (see `topologyLock.ts`) from before the fault until the three
 * nodes run again, so two faults never overlap and a test that needs the whole cluster can wait.
 */
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

export type { TopologyLock, TopologyLockOptions } from './topologyLock.js'
export { acquireTopologyLock, TOPOLOGY_LOCK_DIR, withTopologyLock } from './topologyLock.js'

const ROOT = fileURLToPath(new URL('../../../', import.meta.url))

/** The {@link acquireTopologyLock} name held while a node of the cluster is down. */
export const RABBITMQ_CLUSTER_LOCK = 'rabbitmq-cluster'
const RMQ_DIR = join(ROOT, '.topology', 'rabbitmq-cluster')
const RMQ_BIN = '/usr/lib/rabbitmq/bin'

/** Cluster nodes are numbered 1..3. */
export type NodeNumber = 1 | 2 | 3
export const NODES: readonly NodeNumber[] = [1, 2, 3]

export const nodeName = (n: NodeNumber): string => `ballast${n}@localhost`
const pidFile = (n: NodeNumber) => join(RMQ_DIR, `n${n}`, 'node.pid')

/** The node number of an AMQP URL of the cluster (by its port, 5680 + n). */
export function nodeOfUrl(url: string): NodeNumber {
  const n = Number(new URL(url).port) - 5680
  if (n !== 1 && n !== 2 && n !== 3) throw new Error(`${url} is not a node of the cluster`)
  return n
}

function run(
  file: string,
  args: string[],
  timeoutMs: number,
  env?: NodeJS.ProcessEnv,
): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { cwd: ROOT, timeout: timeoutMs, env: env ?? process.env, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0
        resolve({ code, out: `${stdout}${stderr}` })
      },
    )
  })
}

/** `rabbitmqctl -n ballast<n>@localhost ...args` with that node's environment. */
export async function rabbitmqctl(
  n: NodeNumber,
  args: string[],
  timeoutMs = 20_000,
): Promise<string> {
  const d = join(RMQ_DIR, `n${n}`)
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOME: join(RMQ_DIR, 'home'),
    RABBITMQ_CONF_ENV_FILE: join(RMQ_DIR, 'rabbitmq-env.conf'),
    RABBITMQ_NODENAME: nodeName(n),
    RABBITMQ_CONFIG_FILE: join(d, 'rabbitmq.conf'),
    RABBITMQ_ADVANCED_CONFIG_FILE: join(d, 'advanced.config'),
    RABBITMQ_MNESIA_BASE: join(d, 'mnesia'),
    RABBITMQ_LOG_BASE: join(d, 'log'),
    RABBITMQ_ENABLED_PLUGINS_FILE: join(d, 'enabled_plugins'),
    RABBITMQ_PID_FILE: join(d, 'node.pid'),
    ERL_EPMD_ADDRESS: '127.0.0.1',
    ERL_FLAGS: '',
    PATH: `${RMQ_BIN}:${process.env.PATH ?? ''}`,
  }
  const { code, out } = await run(
    join(RMQ_BIN, 'rabbitmqctl'),
    ['-n', nodeName(n), ...args],
    timeoutMs,
    env,
  )
  if (code !== 0) throw new Error(`rabbitmqctl -n ${nodeName(n)} ${args.join(' ')}: ${out.trim()}`)
  return out
}

/** Whether all three nodes run and see each other (`topology.sh status rabbitmq-cluster`). */
export async function clusterStatus(): Promise<{ whole: boolean; out: string }> {
  const { code, out } = await run(
    'bash',
    ['scripts/topology.sh', 'status', 'rabbitmq-cluster'],
    60_000,
  )
  return { whole: code === 0, out }
}

/** Starts every node that is down and waits for the three to see each other (idempotent). */
export async function startCluster(): Promise<void> {
  const { code, out } = await run(
    'bash',
    ['scripts/topology.sh', 'start', 'rabbitmq-cluster'],
    180_000,
  )
  if (code !== 0) throw new Error(`topology.sh start rabbitmq-cluster failed:\n${out}`)
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    // a zombie (dead, not yet reaped) counts as gone
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}

/** The beam pid of node `n` (from its node.pid), or throws if it does not run. */
export function nodePid(n: NodeNumber): number {
  const pid = Number(readFileSync(pidFile(n), 'utf8').trim())
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid))
    throw new Error(`${nodeName(n)} is not running`)
  return pid
}

/** SIGKILLs node `n`'s beam process and resolves once it is gone. */
export async function killNode(n: NodeNumber): Promise<void> {
  const pid = nodePid(n)
  process.kill(pid, 'SIGKILL')
  const deadline = Date.now() + 10_000
  while (alive(pid)) {
    if (Date.now() > deadline) throw new Error(`${nodeName(n)} (pid ${pid}) survived SIGKILL`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

/** `rabbitmqctl stop <pidfile>`: a graceful stop that returns once the node's process is gone. */
export async function stopNode(n: NodeNumber): Promise<void> {
  await rabbitmqctl(n, ['stop', pidFile(n)], 60_000)
}

/** Leader and members of queue `queue`, asked of the first node that answers. */
export async function quorumQueue(
  queue: string,
  askFirst: readonly NodeNumber[] = NODES,
): Promise<{ leader: string; members: string[] }> {
  let lastError: unknown
  for (const n of askFirst) {
    try {
      const out = await rabbitmqctl(n, [
        '-q',
        'list_queues',
        'name',
        'type',
        'leader',
        'members',
        '--formatter',
        'json',
      ])
      const rows = JSON.parse(out.slice(out.indexOf('['))) as Array<{
        name: string
        type: string
        leader: string
        members: string[]
      }>
      const row = rows.find((r) => r.name === queue)
      if (!row) throw new Error(`queue ${queue} not listed by ${nodeName(n)}`)
      if (row.type !== 'quorum') throw new Error(`queue ${queue} is ${row.type}, not quorum`)
      return { leader: row.leader, members: [...row.members].sort() }
    } catch (error) {
      lastError = error
    }
  }
  throw lastError
}

/** The node number of a node name such as `ballast2@localhost`. */
export function nodeNumber(name: string): NodeNumber {
  const n = Number(/^ballast(\d)@/.exec(name)?.[1])
  if (n !== 1 && n !== 2 && n !== 3) throw new Error(`${name} is not a node of the cluster`)
  return n
}
